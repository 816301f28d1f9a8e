"""``alexnet eval``: the top-1 and top-5 error of a trained network or of an ensemble, as the
paper reports them (section 6, Table 2), overall and per class.

Images are read once and shown to every network of an ensemble in each of the chosen views
(crops.py: the centre, or the paper's ten crops); each network's softmax outputs are averaged
over the views, then over the networks ("averaging the predictions of five similar CNNs").
Networks trained from a store see the stored 256x256 image of a store's split, or of an
image folder read the same way (rescaled and centre-cropped as ``alexnet prepare`` does);
networks trained in memory see their own data source's test images.
"""

from __future__ import annotations

import functools
import os
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch.utils.data import DataLoader

from alexnet.data import ImageSet, Request, load_source
from alexnet.data.layouts import is_flat, source_root, split_files
from alexnet.data.store import StoreSplit, is_store, open_store
from alexnet.errors import UserError
from alexnet.inference.prepared import infer
from alexnet.inference.trained import Trained
from alexnet.inference.views import (
    BatchReads,
    batch_maker,
    chosen_crops,
    prepared,
    views_of,
)
from alexnet.processes import worker_start
from alexnet.progress import bar


@dataclass
class Scores:
    """Per-class counts of images and of top-1 and top-5 hits."""

    classes: list[str]
    names: list[str]
    images: torch.Tensor = field(init=False)
    top1: torch.Tensor = field(init=False)
    top5: torch.Tensor = field(init=False)

    def __post_init__(self) -> None:
        n = len(self.classes)
        self.images, self.top1, self.top5 = (torch.zeros(n, dtype=torch.int64) for _ in range(3))

    def add(self, probs: torch.Tensor, labels: torch.Tensor) -> None:
        top = probs.topk(min(5, probs.shape[1]), dim=1).indices
        hits = top == labels[:, None]
        for counts, hit in ((self.images, torch.ones_like(labels)), (self.top1, hits[:, 0]),
                            (self.top5, hits.any(1))):  # fmt: skip
            counts.index_add_(0, labels, hit.long())

    def summary(self) -> dict:
        n = int(self.images.sum())
        seen = self.images > 0
        per_class = [{"class": c, "name": nm, "images": int(k), "top1_err": 1 - int(a) / int(k),
                      "top5_err": 1 - int(b) / int(k)}
                     for c, nm, k, a, b in zip(self.classes, self.names, self.images, self.top1,
                                               self.top5, strict=True) if k]  # fmt: skip
        return {"images": n, "top1_err": 1 - int(self.top1.sum()) / max(n, 1),
                "top5_err": 1 - int(self.top5.sum()) / max(n, 1),
                "mean_class_top1_acc": float((self.top1[seen] / self.images[seen]).mean())
                if seen.any() else 0.0, "per_class": per_class}  # fmt: skip


# --------------------------------------------------------------------------------------------
# The images


def _kind(net: Trained) -> str:
    return (
        "trained from a store"
        if net.from_store
        else f"trained in memory ({net.recipe.data.source})"
    )


def _same(nets: list[Trained], what: str, value) -> None:
    differing = [n for n in nets if value(n) != value(nets[0])]
    if not differing:
        return
    other = differing[0]
    if what == "kind":  # the same images, read two ways: stored at 256, or resized in memory
        raise UserError(f"{other.path}: {_kind(other)}, {nets[0].path} {_kind(nets[0])}; an "
                         "ensemble's networks must read their images alike (all from stores, "
                         "or all in memory from one source): evaluate these one at a time")  # fmt: skip
    mine, first = (str(value(n))[:60] for n in (other, nets[0]))
    raise UserError(f"{other.path}: its {what} is {mine}, {nets[0].path}'s is {first}; an "
                     "ensemble needs networks trained on the same classes and images")  # fmt: skip


def trained_data(net: Trained, data: Path | None) -> Path | None:
    """``--data``, else the data the network was trained on (its recipe's ``data.root``; None
    for a source that finds its own files, as Fashion-MNIST's finds Debian's package)."""
    if data is not None:
        return data
    root = net.recipe.data.root
    if root and not Path(root).exists():
        raise FileNotFoundError(f"{net.path}: was trained on {root}, which is not here; give "
                                "--data")  # fmt: skip
    if not root and net.from_store:
        raise UserError(f"{net.path}: records no data it was trained on; give --data (a store "
                         "or an image folder)")  # fmt: skip
    return Path(root) if root else None


def eval_images(nets: list[Trained], data: Path | None, split: str | None) -> StoreSplit | ImageSet:
    """What the networks are evaluated on: a store's split, an image folder read as a store
    would hold it, or (networks trained in memory) their data source's test set."""
    return split_images(nets, data, split)[0]


def split_images(
    nets: list[Trained], data: Path | None, split: str | None, *, training: bool = False
) -> tuple[StoreSplit | ImageSet, StoreSplit | ImageSet | None]:
    """The evaluation images of ``eval_images`` and, with ``training``, the training images
    read the same way (the recipe's ``data.limit_train`` of an in-memory source; a store's or
    folder's train split), or None where the data has no other training split."""
    first = nets[0]
    for what, value in (("kind", _kind), ("classes", lambda n: n.classes),
                        ("stored image size", lambda n: n.stored_size),
                        ("input channels", lambda n: n.recipe.data.channels)):  # fmt: skip
        _same(nets, what, value)
    data = trained_data(first, data)
    if not first.from_store:
        return _source_images(first, data, split)
    if is_store(data):
        store = open_store(data)
        chosen = split or ("val" if "val" in store.splits else "test")
        images = store.split(chosen)
        if images.size != first.stored_size or images.classes != first.classes:
            raise UserError(f"{data}: holds {images.size}-pixel images of {len(images.classes)} "
                             f"classes; {first.path} was trained on {first.stored_size}-pixel "
                             f"images of {len(first.classes)} classes")  # fmt: skip
        other = training and chosen != "train" and "train" in store.splits
        return images, store.split("train") if other else None
    images = folder_split(data, split, first)
    other = training and images.name != "train" and (images.root / "train").is_dir()
    return images, folder_split(data, "train", first) if other else None


def _source_images(net: Trained, data: Path | None, split: str | None) -> tuple[ImageSet, ImageSet]:
    """A network trained in memory: its data source's test and training sets."""
    if split is not None:
        raise UserError(f"--split {split}: {net.path} was {_kind(net)} and is scored on "
                         "the test split its data source gives (test/, else val/), as in "
                         "training; leave --split out")  # fmt: skip
    if data is not None and is_store(data):
        raise UserError(f"--data {data} is a store (alexnet prepare), but {net.path} was "
                         f"{_kind(net)}: give the data it was trained on")  # fmt: skip
    d = net.recipe.data
    request = Request(
        str(data or ""), d.image_size, d.channels, d.verify, int(d.max_megapixels * 1e6)
    )
    train, test = load_source(d.source, request)
    if test.classes != net.classes:
        raise UserError(f"{data or d.source}: its classes ({', '.join(test.classes[:4])}...) "
                         f"differ from those {net.path} was trained on "
                         f"({', '.join(net.classes[:4])}...)")  # fmt: skip
    return test, train.subset(d.limit_train) if d.limit_train else train


def folder_split(src: Path, split: str | None, net: Trained) -> StoreSplit:
    """An image folder's split as a store of the ``files`` layout, labelled by the network's
    classes (ImageFolder, ILSVRC's flat val/ with its labels, or <wnid>_*.JPEG files)."""
    if not src.is_dir() and not src.name.endswith((".tar.gz", ".tgz", ".tar")):
        raise FileNotFoundError(
            f"--data {src}: not a store (no store.json), a folder or an archive"
        )
    src = source_root(src)
    split = split or ("val" if (src / "val").is_dir() else "test")
    if not is_flat(src) and not (src / split).is_dir():
        have = ", ".join(sorted(p.name for p in src.iterdir() if p.is_dir())) or "none"
        raise FileNotFoundError(f"{src}: no {split}/ folder (it has {have}); choose with --split")
    pairs, skipped = split_files(src, split, net.classes)
    if not pairs:
        named = f"class folders named as {', '.join(net.classes[:2])}..."
        found, expected = (
            (f"its {split} split", f"{src}/{split}/<class>/<images>, with {named}")
            if (src / split).is_dir()  # a flat folder: neither val/ nor test/ is there
            else ("it, which has no val/ or test/ folder", f"val/ or test/ with {named}, or "
                  f"<class>_*.JPEG files in {src}"))  # fmt: skip
        raise UserError(f"{src}: no images of {net.path}'s classes in {found}; expected "
                         f"{expected}")  # fmt: skip
    n = len(pairs)
    return StoreSplit(src, split, "files", int(net.stored_size), 3, net.classes,
                      torch.zeros(n, dtype=torch.int32), torch.arange(n), torch.zeros(n, dtype=torch.int64),
                      torch.tensor([lab for _, lab in pairs]), [p for p, _ in pairs], skipped)  # fmt: skip


def evaluate_checkpoints(
    nets: list[Trained], data: Path | None, *, split: str | None = None,
    crops: int | None = None, batch: int = 50, workers: int = 0, progress: bool = True,
    precision: str | None = None,
) -> dict:  # fmt: skip
    """Top-1 and top-5 error of the networks' averaged softmax outputs over ``crops`` views."""
    for option, value in (("--batch", batch), ("--workers", workers + 1)):
        if value < 1:
            raise UserError(f"{option} {value if option == '--batch' else workers}: must be "
                             f"{'1 or more' if option == '--batch' else '0 or more'}")  # fmt: skip
    first = nets[0]
    crops = chosen_crops(first, crops)
    images = eval_images(nets, data, split)
    # Each network's own views: networks of other input sizes take their crops at their own
    # places (the first's places cropped a 32-pixel network off-centre, or failed).
    views = [views_of(n, crops) for n in nets]
    models, devices, amps, layouts = zip(*(prepared(n, precision) for n in nets), strict=True)
    device, layout = devices[0], layouts[0]
    makers = [batch_maker(n, images) for n in nets]
    scores = Scores(first.classes, first.names)
    reads = DataLoader(BatchReads(images, batch), batch_size=None, num_workers=workers,
                       worker_init_fn=functools.partial(worker_start, os.getpid()))  # fmt: skip
    skipped = list(images.skipped)
    for batch_images, labels, ok, failed in bar(reads, desc="eval", unit="batch", asked=progress):
        skipped += failed
        probs = torch.zeros(len(labels), len(first.classes))
        for maker, model, amp, own in zip(makers, models, amps, views, strict=True):
            for view in own:
                x = maker.view(batch_images, view, device, layout)
                probs += infer(model, x, amp).softmax(1).cpu()
        scores.add(probs[ok], labels[ok])
    return {"checkpoints": [str(n.path) for n in nets], "data": str(images.source),
            "crops": crops, **scores.summary(), "skipped": [list(s) for s in skipped]}  # fmt: skip
