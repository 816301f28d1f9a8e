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
        return self.recipe.data.source == "store"

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
    classes = list(data.get("classes") or [str(i) for i in range(count)])
    saved = state.get("preprocessing") or {}
    try:
        stats = PixelStats.from_dict(saved) if saved else None
    except (ValueError, TypeError, AttributeError) as exc:
        raise CheckpointError(f"{path}: its preprocessing statistics are damaged ({exc}); "
                              "write the file again from its run") from None  # fmt: skip
    stored = data.get("stored_size") or (int(stats.mean_image.shape[0]) if stats else None)
    names = list(data.get("names") or classes)
    if not all(isinstance(n, str) for n in (*classes, *names)):
        raise CheckpointError(f"{path}: its class names are not all text; a damaged or edited "
                              "file")  # fmt: skip
    outputs = model.get_submodule(output_layer(model)).out_features
    if not len(classes) == len(names) == outputs:  # predict met an index past the list
        raise CheckpointError(f"{path}: records {len(classes)} classes and {len(names)} names "
                              f"for an output layer of {outputs}; a damaged or edited file")  # fmt: skip
    return Trained(path, model, recipe, classes, names, stats, stored)


def _built(path: Path, recipe: Recipe, weights: dict) -> nn.Module:
    try:
        model = build_model(recipe.model.arch, **recipe.model.options)
        model.load_state_dict(weights)
    except (ValueError, RuntimeError) as exc:
        first = str(exc).replace("\n", " ").replace("\t", "")[:200]
        raise CheckpointError(f"{path}: its weights do not fit {recipe.model.arch} ({first})") \
            from None  # fmt: skip
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
