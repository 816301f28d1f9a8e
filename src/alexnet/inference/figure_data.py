"""What the paper's figures show, computed from a trained network, and the figures written.

The network sees its images exactly as ``alexnet eval`` shows them to it (eval_checkpoints.py:
the same reads, batch makers and views), whether it is a checkpoint (``alexnet figures``) or
the network a run has just trained (its ``report.md``); the latter is run in evaluation mode
without gradients and left as it was, weights, precision and layout included.

- predictions over the test set: softmax outputs averaged over the views (the centre, and its
  mirror image where the recipe evaluates with it), for Figure 4 left and the confusion matrix;
- the last hidden layer's features (fc7's output after its activation: what fc8 reads, taken
  by a hook on fc8), for Figure 4 right: the training images nearest to a test image by the
  Euclidean distance of their features, "If two images produce feature activation vectors
  with a small Euclidean separation, we can say that the higher levels of the neural network
  consider them to be similar" (section 6.1);
- conv1's kernels and how they split into the two towers, for Figure 3.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import textwrap
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from alexnet.data import ImageSet
from alexnet.data.store import StoreSplit
from alexnet.errors import UserError
from alexnet.files import missing_folders, remove_empty, text_name
from alexnet.inference import figures
from alexnet.inference.crops import View
from alexnet.inference.eval_checkpoints import split_images
from alexnet.inference.prepared import infer
from alexnet.inference.trained import Trained
from alexnet.inference.views import (
    BatchReads,
    batch_maker,
    chosen_crops,
    prepared,
    views_of,
)
from alexnet.models import output_layer
from alexnet.progress import bar

Images = StoreSplit | ImageSet
EXAMPLES = 8  # test images in Figure 4 left, as in the paper
QUERIES = 5  # test images in Figure 4 right, as in the paper
NEIGHBOURS = 6  # training images beside each, as in the paper
STORE_NEIGHBOURS = 10_000  # training images of a store searched by default (read from disk)
FILES = {"kernels": "conv1_kernels.png", "predictions": "predictions.png",
         "neighbours": "neighbours.png", "curves": "curves.png",
         "confusion": "confusion.png"}  # fmt: skip


@dataclass
class Looker:
    """A trained network ready to look at images as it was trained to see them: how its
    inputs are made (``net``), the module that computes, and where and in which precision."""

    net: Trained
    model: nn.Module
    device: torch.device
    amp: torch.dtype | None
    channels_last: bool
    views: list[View]
    batch: int = 100
    progress: bool = False


def views_for(net: Trained) -> list[View]:
    """The centre, and its mirror image where the recipe evaluates with it (eval.tta_flip), so
    the figures' predictions are those of the reported test accuracy."""
    return views_of(net, chosen_crops(net, None))


def looker_for(net: Trained, progress: bool = False) -> Looker:
    """A checkpoint's network prepared for inference on the fastest device here."""
    model, device, amp, layout = prepared(net)
    batch = min(net.recipe.data.eval_batch_size, 500)
    return Looker(net, model, device, amp, layout, views_for(net), batch, progress)


@contextlib.contextmanager
def evaluation(model: nn.Module) -> Iterator[nn.Module]:
    """``model`` in evaluation mode for the block, then in the mode it was in."""
    was = model.training
    model.eval()
    try:
        yield model
    finally:
        model.train(was)


def _passes(look: Looker, images: Images, indices: torch.Tensor | None = None, what: str = ""):
    """Batch by batch: positions in ``images``, labels, which could be read, and the network's
    inputs view by view (made as they are asked for)."""
    maker = batch_maker(look.net, images)
    reads = BatchReads(images, look.batch, indices)
    for b in bar(range(len(reads)), desc=what, unit="batch", asked=look.progress, leave=False):
        raw, labels, ok, _failed = reads[b]
        inputs = (maker.view(raw, v, look.device, look.channels_last)
                  for v in look.views)  # fmt: skip
        yield reads.chosen(b), labels, ok, inputs


@dataclass
class Predictions:
    """The network's softmax outputs for the images that could be read."""

    indices: torch.Tensor  # (N,) positions in the image set
    labels: torch.Tensor  # (N,)
    probs: torch.Tensor  # (N, classes), averaged over the views

    def confusion(self) -> torch.Tensor:
        return confusion_matrix(self.labels, self.probs.argmax(1), self.probs.shape[1])


def predict(look: Looker, images: Images) -> Predictions:
    """Softmax outputs of every image of ``images`` that can be read."""
    parts = []
    for chosen, labels, ok, inputs in _passes(look, images, what="test images"):
        probs = sum(infer(look.model, x, look.amp).softmax(1).cpu() for x in inputs)
        parts.append((chosen[ok], labels[ok], probs[ok] / len(look.views)))
    if not any(len(p[0]) for p in parts):
        raise UserError(f"{images.source}: none of its {len(images)} images could be read")
    indices, labels, probs = (torch.cat(p) for p in zip(*parts, strict=True))
    return Predictions(indices, labels, probs)


def confusion_matrix(labels: torch.Tensor, predicted: torch.Tensor, classes: int) -> torch.Tensor:
    """Counts (classes, classes): row the true class, column the predicted one."""
    flat = labels.long() * classes + predicted.long()
    return torch.bincount(flat, minlength=classes * classes).view(classes, classes)


def features(
    look: Looker, images: Images, indices: torch.Tensor | None = None
) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """(positions, features) batch by batch of the images that could be read: the last hidden
    layer's output (fc7 after its activation) for the unmirrored centre view, in float32."""
    got: list[torch.Tensor] = []
    fc8 = look.model.get_submodule(output_layer(look.model))
    hook = fc8.register_forward_pre_hook(lambda _m, args: got.append(args[0]))
    centre = dataclasses.replace(look, views=look.views[:1])
    try:
        for chosen, _labels, ok, inputs in _passes(centre, images, indices, "features"):
            got.clear()
            infer(look.model, next(inputs), look.amp)
            yield chosen[ok], got[0].float().flatten(1).cpu()[ok]
    finally:
        hook.remove()


def nearest(
    look: Looker,
    queries: torch.Tensor,
    images: Images,
    indices: torch.Tensor | None = None,
    k: int = NEIGHBOURS,
) -> tuple[torch.Tensor, torch.Tensor]:
    """The ``k`` images of ``images`` (of ``indices`` among them) nearest to each row of
    ``queries`` by the Euclidean distance of their features, nearest first: (positions,
    distances), each (queries, k). One pass keeping a running best k, so only one batch of
    features is held at a time."""
    q = queries.double()
    best_d = torch.empty(len(q), 0, dtype=torch.float64)
    best_i = torch.empty(len(q), 0, dtype=torch.int64)
    for chosen, f in features(look, images, indices):
        d = torch.cat([best_d, torch.cdist(q, f.double())], 1)
        i = torch.cat([best_i, chosen.expand(len(q), -1)], 1)
        top = d.topk(min(k, d.shape[1]), dim=1, largest=False)
        best_d, best_i = top.values, i.gather(1, top.indices)
    return best_i, best_d


def spaced(n: int, limit: int | None) -> torch.Tensor | None:
    """``limit`` evenly spaced positions of ``n``, or None (all) where the limit is none or
    not below ``n``."""
    if not limit or limit >= n:
        return None
    return torch.arange(limit) * n // limit


def pick_examples(labels: torch.Tensor, count: int, seed: int = 0) -> torch.Tensor:
    """``count`` positions in a random order that shows as many classes as it can: one image
    of each class before a second of any."""
    order = torch.randperm(len(labels), generator=torch.Generator().manual_seed(seed))
    seen: dict[int, int] = {}
    rank = []
    for label in labels[order].tolist():
        rank.append(seen.get(label, 0))
        seen[label] = rank[-1] + 1
    return order[torch.tensor(rank, dtype=torch.int64).argsort(stable=True)][:count]


def first_layer(model: nn.Module) -> tuple[torch.Tensor, int]:
    """conv1's weights and the number of towers they feed: conv2's groups (two where the
    network keeps the paper's split, so conv1's first half of kernels feeds tower 1)."""
    convs = [m for m in model.modules() if isinstance(m, nn.Conv2d)]
    towers = convs[1].groups if len(convs) > 1 else 1
    return convs[0].weight.detach().float().cpu(), towers


@dataclass
class FigureData:
    """Everything the figures draw, computed once."""

    names: list[str]
    kernels: torch.Tensor  # conv1's weights
    towers: int
    predictions: Predictions  # over the test set
    examples: torch.Tensor  # rows of ``predictions`` shown in Figure 4 left
    example_images: torch.Tensor  # uint8 (n, C, H, W), as the network sees them
    queries: torch.Tensor  # rows of ``predictions`` shown in Figure 4 right
    query_images: torch.Tensor
    neighbours: torch.Tensor | None = None  # (queries, k) positions in the training set
    neighbour_images: torch.Tensor | None = None  # uint8 (queries, k, C, H, W)
    neighbour_labels: torch.Tensor | None = None  # (queries, k)
    searched: int = 0  # training images searched for neighbours
    training: int = 0  # training images there are
    hidden: int = 0  # features per image in the last hidden layer


def collect(look: Looker, test: Images, train: Images | None,
            limit: int | None = None) -> FigureData:  # fmt: skip
    """The figures' data: predictions over ``test``; Figure 4's test images; the nearest of
    ``train`` (``limit`` evenly spaced images of it at most) to each query."""
    kernels, towers = first_layer(look.model)
    pred = predict(look, test)
    shown = pick_examples(pred.labels, max(EXAMPLES, QUERIES))
    test_maker = batch_maker(look.net, test)
    data = FigureData(look.net.names, kernels, towers, pred, shown[:EXAMPLES],
                      test_maker.display(pred.indices[shown[:EXAMPLES]]), shown[:QUERIES],
                      test_maker.display(pred.indices[shown[:QUERIES]]))  # fmt: skip
    if train is None or len(train) == 0:
        return data
    chosen = spaced(len(train), limit)
    query_features = torch.cat([f for _, f in features(look, test, pred.indices[data.queries])])
    found, _ = nearest(look, query_features, train, chosen)
    shape = found.shape
    images = batch_maker(look.net, train).display(found.flatten())
    data.neighbours, data.neighbour_images = found, images.reshape(*shape, *images.shape[1:])
    data.neighbour_labels = train.labels[found]
    data.searched = len(train) if chosen is None else len(chosen)
    data.training, data.hidden = len(train), query_features.shape[1]
    return data


def neighbours_caption(data: FigureData) -> str:
    """What Figure 4 right shows, and among how many training images it searched."""
    k = data.neighbours.shape[1]
    among = f"all {data.training:,} training images"
    if data.searched != data.training:
        among = f"{data.searched:,} evenly spaced of the {data.training:,} training images"
    return (f"Test images (left) and the {k} training images nearest to each by the Euclidean "
            f"distance of their last hidden layer's {data.hidden} features, nearest first, "
            f"among {among}")  # fmt: skip


def write_figures(data: FigureData, metrics: Sequence[dict], out: Path, writer=None,
                  step: int = 0) -> dict[str, Path]:  # fmt: skip
    """Each figure as a PNG in ``out`` (names in ``FILES``) and, given a ``SummaryWriter``,
    in TensorBoard as figures/<name>; the curves where there are ``metrics``, the
    neighbours where there was a training set."""
    made = missing_folders(out)
    out.mkdir(parents=True, exist_ok=True)
    p = data.predictions
    draw = {
        "kernels": lambda: figures.kernels_figure(data.kernels, data.towers),
        "predictions": lambda: figures.predictions_figure(
            data.example_images, p.probs[data.examples], p.labels[data.examples], data.names),
        "confusion": lambda: figures.confusion_figure(p.confusion(), data.names),
    }  # fmt: skip
    if data.neighbours is not None:
        title = textwrap.fill(f"{neighbours_caption(data)} (cf. the paper's Figure 4, right)", 100)
        draw["neighbours"] = lambda: figures.neighbours_figure(
            data.query_images, data.neighbour_images, p.labels[data.queries],
            data.neighbour_labels, data.names, title)  # fmt: skip
    if metrics:
        draw["curves"] = lambda: figures.curves_figure(metrics)
    written: dict[str, Path] = {}
    new = [out / FILES[name] for name in draw if not (out / FILES[name]).exists()]
    try:
        for name, make in draw.items():
            written[name] = figures.save(make(), out / FILES[name], writer, f"figures/{name}",
                                         step)  # fmt: skip
    except BaseException:  # a full disk or a signal midway: all of the set or none of it
        for path in new:
            path.unlink(missing_ok=True)
        remove_empty(made)  # and the folders made for them
        raise
    if writer is not None:
        writer.flush()
    return written


def run_metrics(checkpoint: Path) -> list[dict]:
    """The epochs of the run a checkpoint belongs to: its folder's ``metrics.jsonl`` (every
    epoch, also after the best), else the history the checkpoint holds."""
    log = checkpoint.parent / "metrics.jsonl"
    if log.is_file():
        try:
            epochs = [json.loads(line) for line in log.read_text().splitlines() if line.strip()]
        except (UnicodeDecodeError, ValueError) as exc:
            epochs = [f"{type(exc).__name__}: {str(exc)[:60]}"]
        if all(_epoch_figures(m) for m in epochs):
            return epochs
        import warnings  # damaged: the checkpoint's own record is drawn, and said so

        warnings.warn(f"{log} is damaged (not one JSON record of figures per line); the "
                      "curves are drawn from the checkpoint's history", stacklevel=2)  # fmt: skip
    if checkpoint.suffix != ".pt":
        return []
    from alexnet.inference.trained import read_weights

    return [m for m in read_weights(checkpoint).get("history") or [] if _epoch_figures(m)]


def _epoch_figures(entry) -> bool:
    """An epoch's record as training writes it: numbers by name, its epoch among them."""
    return (
        isinstance(entry, dict)
        and "epoch" in entry
        and all(isinstance(v, int | float) and not isinstance(v, bool) for v in entry.values())
    )


def _writable(folder: Path) -> bool:
    return os.access(folder if folder.exists() else folder.parent, os.W_OK)


def figures_of_checkpoint(
    given: str,
    data: Path,
    out: Path | None = None,
    split: str | None = None,
    limit: int | None = None,
    progress: bool = False,
) -> tuple[dict[str, Path], FigureData, Path]:
    """``alexnet figures``: the figures of a run folder's best network (or a checkpoint's) on
    ``data``, in ``out`` (default: figures/ in the checkpoint's folder) and in TensorBoard (the
    run's tb/ where the checkpoint is in a run folder that can be written, else ``out``/tb).
    ``limit``: training images searched for neighbours (default: all of an in-memory set,
    ``STORE_NEIGHBOURS`` evenly spaced of a store's or folder's; 0: all). Returns the files, the data and the
    TensorBoard folder."""
    from torch.utils.tensorboard import SummaryWriter

    from alexnet.inference.trained import load_trained

    net = load_trained(given)
    test, train = split_images([net], data, split, training=True)
    folder = net.path.parent if Path(given).exists() else Path.cwd()
    out = out or folder / "figures"
    is_run = (folder / "metrics.jsonl").is_file() or (folder / "tb").is_dir()
    # A run folder that cannot be written (a read-only disk) keeps nothing; --out does.
    tb = folder / "tb" if is_run and _writable(folder / "tb") else out / "tb"
    text_name(tb, "TensorBoard")
    if limit is None:
        limit = STORE_NEIGHBOURS if train.streamed else 0
    look = looker_for(net, progress)
    figure_data = collect(look, test, train, limit)
    metrics = run_metrics(net.path)
    before = set(tb.glob("events.out.tfevents.*"))
    writer = SummaryWriter(str(tb))
    try:
        step = int(metrics[-1]["epoch"]) if metrics else 0
        written = write_figures(figure_data, metrics, out, writer, step)
    except BaseException:  # no figures: their TensorBoard log goes too
        writer.close()
        for events in set(tb.glob("events.out.tfevents.*")) - before:
            events.unlink(missing_ok=True)
        raise
    writer.close()
    return written, figure_data, tb
