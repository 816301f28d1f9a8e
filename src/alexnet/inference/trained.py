"""A trained network from a checkpoint, with everything needed to use it as it was trained:
its recipe, its classes and their names, and its preprocessing (the training set's mean image
and colour statistics, and the side of the stored images it was cropped from).

Three kinds of file hold one: alexnet's own checkpoints (a run's ``best.pt`` or ``last.pt``),
weights exported with ``alexnet export --format safetensors``, and published weights in
torchvision's layout (``alexnet-owt-7be5be79.pth``, or the name ``torchvision`` for the copy in
torch.hub's folder), which are used with the preprocessing and classes their authors give.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from alexnet.checkpoint import CheckpointError, load_file, migrate
from alexnet.config import Recipe, recipe_from_dict
from alexnet.data import DATA_SOURCES
from alexnet.data.stats import PixelStats
from alexnet.inference.safetensors_file import read_safetensors
from alexnet.models import build_model, output_layer
from alexnet.models.weights import PUBLISHED, PublishedWeights, imagenet_classes


@dataclass
class Trained:
    path: Path
    model: nn.Module
    recipe: Recipe
    classes: list[str]
    names: list[str]
    stats: PixelStats | None  # where the recipe used them
    stored_size: int | None  # networks trained from a store: the side of its images
    published: PublishedWeights | None = None  # weights from elsewhere, used as published

    @property
    def from_store(self) -> bool:
        return DATA_SOURCES[self.recipe.data.source].stored_larger

    @property
    def input_size(self) -> int:
        return self.recipe.data.image_size

    def mean(self) -> torch.Tensor:
        """What normalisation subtracts, in [0, 1] units: the mean image (H, W, C) or the
        per-channel mean (C,)."""
        if self.recipe.data.normalise == "mean-image":
            return self.stats.mean_image / 255
        return torch.tensor(self.recipe.data.mean)

    def std(self) -> torch.Tensor:
        return torch.tensor(self.recipe.data.std)


READABLE = "checkpoints (.pt), run folders, .safetensors exports and torchvision .pth weights"


def checkpoint_path(path: Path) -> Path:
    """A checkpoint file, or a run folder's best checkpoint (its last where it has no best)."""
    if path.is_dir():
        for name in ("best.pt", "last.pt"):
            if (path / name).is_file():
                return path / name
        raise FileNotFoundError(f"{path}: a folder without best.pt or last.pt (not a run folder)")
    return path


def published_file(weights: PublishedWeights) -> Path:
    """The published weights' file in torch.hub's folder, downloaded there (its sha256 checked
    against the prefix in its name) when it is missing."""
    import torch.hub

    path = weights.local_path()
    if path.is_file():
        return path
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        torch.hub.download_url_to_file(weights.url, str(path), weights.sha256_prefix)
    except (OSError, RuntimeError, ValueError) as exc:
        why = str(getattr(exc, "reason", "") or exc).replace("\n", " ")[:120]
        raise FileNotFoundError(
            f"{weights.name} weights: cannot download {weights.url} ({why}); put {weights.file} "
            f"in {path.parent}, or give the file's path instead of '{weights.name}'"
        ) from None
    return path


def is_state_dict(obj: Any) -> bool:
    """Bare weights (a state dict of tensors, torchvision's format), not a checkpoint."""
    return (
        isinstance(obj, dict)
        and bool(obj)
        and all(isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in obj.items())
    )


def read_weights(path: Path) -> dict[str, Any]:
    """``path`` as a checkpoint-shaped dict (``model``, and where the file has them ``recipe``,
    ``data`` and ``preprocessing``); bare weights give ``model`` alone."""
    if path.suffix == ".safetensors":
        return read_safetensors(path)
    if path.suffix.lower() in (".onnx", ".pt2"):
        raise CheckpointError(f"{path}: an exported program, for other runtimes; alexnet reads "
                              f"{READABLE} (export those with --format safetensors)")  # fmt: skip
    try:
        raw = load_file(path)
    except CheckpointError as exc:
        raise CheckpointError(f"{exc}; alexnet reads {READABLE}") from None
    if is_state_dict(raw):
        return {"model": raw}
    return migrate(raw, path)


def load_trained(path: Path | str) -> Trained:
    """The network saved in ``path`` (a checkpoint, a run folder, a weights file, or the name
    of published weights), on the CPU, in evaluation mode."""
    published = PUBLISHED.get(str(path))
    path = published_file(published) if published else checkpoint_path(Path(path))
    state = read_weights(path)
    if "recipe" not in state:
        return _from_published(path, state["model"], published or PUBLISHED["torchvision"])
    recipe = recipe_from_dict(state["recipe"], f"{path}: its recipe", saved=True)
    model = _built(path, recipe, state["model"])
    data = state.get("data") or {}
    if not isinstance(data, dict):
        raise CheckpointError(f"{path}: its data record is a {type(data).__name__}, not what "
                              "alexnet writes; a damaged or edited file")  # fmt: skip
    count = recipe.model.options.get("num_classes", 0)
    # None only in files that never named them; an emptied list answered class "0" or "1".
    given = data.get("classes")
    classes = list(given if given is not None else [str(i) for i in range(count)])
    saved = state.get("preprocessing") or {}
    try:
        stats = PixelStats.from_dict(saved) if saved else None
    except (ValueError, TypeError, AttributeError) as exc:
        raise CheckpointError(f"{path}: its preprocessing statistics are damaged ({exc}); "
                              "write the file again from its run") from None  # fmt: skip
    stored = data.get("stored_size")
    if stored is None and stats is not None:  # files from before stored_size was recorded
        stored = int(stats.mean_image.shape[0])
    names = list(data["names"] if data.get("names") is not None else classes)
    _check_names(path, model, classes, names)
    _check_input(path, recipe, model, stats, stored)
    return Trained(path, model, recipe, classes, names, stats, stored)


def _damaged(path: Path, what: str) -> CheckpointError:
    return CheckpointError(f"{path}: {what}; a damaged or edited file (write it again from its "
                           "run)")  # fmt: skip


def _check_names(path: Path, model: nn.Module, classes: list, names: list) -> None:
    """One distinct, printable name per output: predict met an index past the list, printed
    an escape sequence from a name to the terminal, and could not tell two classes apart."""
    if not all(isinstance(n, str) for n in (*classes, *names)):
        raise _damaged(path, "its class names are not all text")
    outputs = model.get_submodule(output_layer(model)).out_features
    if not len(classes) == len(names) == outputs:
        raise _damaged(path, f"records {len(classes)} classes and {len(names)} names for an "
                             f"output layer of {outputs}")  # fmt: skip
    if len(set(classes)) != len(classes):
        raise _damaged(path, "its class list names a class twice")
    unprintable = next((n for n in (*classes, *names) if not n.isprintable()), None)
    if unprintable is not None:
        raise _damaged(path, f"the class name {unprintable[:40]!r} holds control characters")


def _check_input(path: Path, recipe: Recipe, model: nn.Module, stats: PixelStats | None,
                 stored: int | None) -> None:  # fmt: skip
    """What preprocessing needs, as a trained network's recipe holds it (resolved when it was
    trained): predict and eval crashed on a shape error where a file said otherwise."""
    d = recipe.data
    first = next((m for m in model.modules() if isinstance(m, nn.Conv2d)), None)
    if first is not None and d.channels != first.in_channels:
        raise _damaged(path, f"its recipe says data.channels = {d.channels} for a first layer "
                             f"of {first.in_channels} channels")  # fmt: skip
    if d.image_size < 1 or not _takes(recipe, d.image_size):
        raise _damaged(path, f"its recipe's data.image_size is {d.image_size}, not the "
                             "network's input size")  # fmt: skip
    if len(d.std) != d.channels or (d.normalise == "channel" and len(d.mean) != d.channels):
        raise _damaged(path, f"its recipe's data.mean {d.mean} and data.std {d.std} are not one "
                             f"value per channel ({d.channels})")  # fmt: skip
    if d.normalise == "mean-image" and stats is None:
        raise _damaged(path, "its recipe subtracts the mean image, which the file lacks")
    if stored is not None and not (type(stored) is int and d.image_size <= stored <= 4096):
        raise _damaged(path, f"its stored image size {stored} is not between the input size "
                             f"({d.image_size}) and 4096")  # fmt: skip
    if d.normalise == "mean-image" and stored is not None and \
            tuple(stats.mean_image.shape) != (stored, stored, d.channels):  # fmt: skip
        raise _damaged(path, f"its mean image is {tuple(stats.mean_image.shape)}, its images "
                             f"{(stored, stored, d.channels)}")  # fmt: skip


def _takes(recipe: Recipe, size: int) -> bool:
    """Whether the recipe's network takes images of ``size``: shapes only, on the meta device
    (an edited size was an export's 168-line traceback, or evaluated without a word)."""
    from alexnet.models.memory import on_meta

    try:
        with torch.no_grad():
            on_meta(recipe.model.arch, recipe.model.options)(
                torch.zeros(1, recipe.data.channels, size, size, device="meta"))  # fmt: skip
    except (RuntimeError, ValueError):
        return False
    return True


def _built(path: Path, recipe: Recipe, weights: dict) -> nn.Module:
    try:
        model = build_model(recipe.model.arch, **recipe.model.options)
        model.load_state_dict(weights)
    except (ValueError, RuntimeError) as exc:
        first = str(exc).replace("\n", " ").replace("\t", "")[:200]
        raise CheckpointError(f"{path}: its weights do not fit {recipe.model.arch} ({first})") \
            from None  # fmt: skip
    parameters = dict(model.named_parameters())
    integral = [k for k, t in weights.items() if k in parameters and not t.is_floating_point()]
    if integral:  # loaded as they were, weights of whole numbers gave a network that answered
        raise CheckpointError(f"{path}: its weight {integral[0]} holds whole numbers "
                              f"({weights[integral[0]].dtype}), not a trained network's floating "
                              "point; a damaged or edited file")  # fmt: skip
    broken = [k for k, t in weights.items() if t.is_floating_point() and not t.isfinite().all()]
    if broken:  # a diverged run's weights answered every image with nan%
        raise CheckpointError(f"{path}: {broken[0]} holds NaN or infinite values (a run that "
                              "diverged, or a damaged file); use an earlier checkpoint")  # fmt: skip
    return model.eval()


def published_recipe(weights: PublishedWeights, num_classes: int) -> Recipe:
    """The recipe that describes published weights as alexnet's own runs are described: the
    network, and images stored at ``resize`` pixels whose central ``crop`` it sees."""
    table = {
        "name": f"{weights.name}-{weights.arch}",
        "model": {"arch": weights.arch, "options": {"num_classes": num_classes}},
        "data": {"source": "store", "image_size": weights.crop, "channels": 3,
                 "mean": list(weights.mean), "std": list(weights.std)},
    }  # fmt: skip
    return recipe_from_dict(table, f"{weights.name} weights")


def _from_published(path: Path, weights: dict, published: PublishedWeights) -> Trained:
    fc8 = weights.get("classifier.6.weight")
    if fc8 is None:
        raise CheckpointError(f"{path}: bare weights without classifier.6 (fc8): not an "
                              f"AlexNet in torchvision's layout ({published.arch})")  # fmt: skip
    count = int(fc8.shape[0])
    recipe = published_recipe(published, count)
    model = _built(path, recipe, weights)
    if count == published.num_classes:
        classes, names = (list(x) for x in imagenet_classes())
    else:  # fine-tuned elsewhere for other classes: their names are not in the file
        classes = names = [str(i) for i in range(count)]
    return Trained(path, model, recipe, classes, names, None, published.resize, published)
