"""A trained network from a checkpoint, with everything needed to use it as it was trained:
its recipe, its classes and their names, and its preprocessing (the training set's mean image
and colour statistics, and the side of the stored images it was cropped from)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from alexnet.checkpoint import CheckpointError, load_checkpoint
from alexnet.config import Recipe, recipe_from_dict
from alexnet.data.stats import PixelStats
from alexnet.models import build_model


@dataclass
class Trained:
    path: Path
    model: nn.Module
    recipe: Recipe
    classes: list[str]
    names: list[str]
    stats: PixelStats | None  # where the recipe used them
    stored_size: int | None  # networks trained from a store: the side of its images

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


def checkpoint_path(path: Path) -> Path:
    """A checkpoint file, or a run folder's best checkpoint (its last where it has no best)."""
    if path.is_dir():
        for name in ("best.pt", "last.pt"):
            if (path / name).is_file():
                return path / name
        raise FileNotFoundError(f"{path}: a folder without best.pt or last.pt (not a run folder)")
    return path


def load_trained(path: Path) -> Trained:
    """The network saved in ``path`` (a checkpoint or a run folder), on the CPU, in
    evaluation mode."""
    path = checkpoint_path(path)
    state = load_checkpoint(path)
    recipe = recipe_from_dict(state["recipe"], f"{path}: its recipe", saved=True)
    try:
        model = build_model(recipe.model.arch, **recipe.model.options)
        model.load_state_dict(state["model"])
    except (ValueError, RuntimeError) as exc:
        first = str(exc).replace("\n", " ")[:200]
        raise CheckpointError(f"{path}: its weights do not fit its recipe's network ({first})") \
            from None  # fmt: skip
    data = state.get("data") or {}
    count = recipe.model.options.get("num_classes", 0)
    classes = list(data.get("classes") or [str(i) for i in range(count)])
    saved = state.get("preprocessing") or {}
    stats = PixelStats.from_dict(saved) if saved else None
    stored = data.get("stored_size") or (int(stats.mean_image.shape[0]) if stats else None)
    return Trained(path, model.eval(), recipe, classes, list(data.get("names") or classes),
                   stats, stored)  # fmt: skip
