"""Starting a run from trained weights: the common way an ImageNet network is used on one's
own images (fine-tuning).

``model.weights`` names the start: an alexnet checkpoint or run folder, exported safetensors,
or published weights (a torchvision-layout file, or ``torchvision`` for its copy in torch.hub's
folder, downloaded and checked once). Every layer whose shape matches is copied; the output
layer (fc8), when the new data has another number of classes, keeps the new network's own
initialisation, so the run learns a new head on the old features. ``model.freeze_features``
trains the classifier alone: the convolutional layers keep the weights they were given, and no
gradient is computed below fc6, so each step costs about a third of a full one.

Only a new run loads the weights; a resumed run continues from its checkpoint.
"""

from __future__ import annotations

from pathlib import Path

from torch import nn

from alexnet.config import Recipe
from alexnet.errors import UserError
from alexnet.inference.trained import load_trained
from alexnet.models import output_layer
from alexnet.models.weights import PUBLISHED


def check_start_weights(source: str) -> None:
    """A one-line error for weights that are not there, before a run loads its data."""
    if not is_published(source) and not Path(source).exists():
        raise FileNotFoundError(f"model.weights {source}: no such file or folder (a checkpoint, "
                                "run folder, .safetensors or .pth file, or 'torchvision')")  # fmt: skip


def load_start_weights(model: nn.Module, recipe: Recipe) -> str:
    """Copy the weights of ``recipe.model.weights`` into ``model`` (the recipe's network);
    returns a line saying what was loaded and what was replaced, and, where the run's
    ``data.std`` differs from the one the weights were trained with (an ``imagenet-paper``
    network saw values 0-255, sixty times a unit-scale run's), that too. A layer that does not
    fit, other than the output layer, is a one-line error naming it, or naming the image size
    where that is what differs (a fixed-size network's first fully connected layer follows
    its input's side)."""
    arch, source, std = recipe.model.arch, recipe.model.weights, recipe.data.std
    start = load_trained(source)
    if start.recipe.model.arch != arch:
        raise UserError(f"model.weights {source}: weights of {start.recipe.model.arch}, but "
                         f"the recipe trains {arch}; set model.arch = "
                         f'"{start.recipe.model.arch}"')  # fmt: skip
    given, own = start.model.state_dict(), model.state_dict()
    head = output_layer(model)
    replaced = [k for k in own if k.startswith(f"{head}.") and given[k].shape != own[k].shape]
    for key, value in own.items():
        if key in replaced:
            continue
        if key not in given or given[key].shape != value.shape:
            have = "missing" if key not in given else "x".join(map(str, given[key].shape))
            if start.input_size != recipe.data.image_size and not start.published:
                raise UserError(f"model.weights {source}: trained on {start.input_size}-pixel "
                                 f"images, this run's are {recipe.data.image_size}, which "
                                 f"changes its {key} ({have}); set data.image_size = "
                                 f"{start.input_size}")  # fmt: skip
            raise UserError(f"model.weights {source}: its {key} is {have}, this run's network "
                             f"needs {'x'.join(map(str, value.shape))}; the model options "
                             "(channels, widths, towers) must match the weights'")  # fmt: skip
    model.load_state_dict({k: v for k, v in given.items() if k not in replaced}, strict=False)
    said = f"started from the weights of {start.path}"
    if replaced:
        old, new = given[f"{head}.weight"].shape[0], own[f"{head}.weight"].shape[0]
        said += f"; the output layer is new ({old} -> {new} classes)"
    if start.published:
        said += (f"; they expect inputs normalised by mean {list(start.published.mean)} and "
                 f"std {list(start.published.std)}")  # fmt: skip
    elif std and _differ(std, start.recipe.data.std):
        said += (f"; note: they were trained on inputs divided by data.std = "
                 f"{start.recipe.data.std}, this run divides by {std} (set data.std to "
                 "feed them at the scale they learned)")  # fmt: skip
    return said


def _differ(a: list[float], b: list[float]) -> bool:
    return len(a) != len(b) or any(abs(x - y) > 0.01 * abs(y) for x, y in zip(a, b, strict=True))


def freeze_features(model: nn.Module) -> int:
    """Stop training the convolutional layers; returns how many weights were frozen."""
    model.features.requires_grad_(False)
    return sum(p.numel() for p in model.features.parameters())


def is_published(source: str) -> bool:
    return source in PUBLISHED
