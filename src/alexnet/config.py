"""Recipes: everything a run depends on, as typed settings with the paper's values as defaults.

A recipe is a :class:`Recipe`; its defaults are the paper's training recipe (section 5), so a
recipe file holds only what differs from the paper (``recipes/*.toml``, or any TOML file by
path). ``--set section.key=value`` overrides any key; every value is checked when it is read,
against its type and range (``alexnet.settings``), and network options against the chosen
network's own options, so a wrong value is one line naming the key, before anything runs.

Saved recipes (``recipe.toml`` in a run folder, and the copy in every checkpoint) carry a
``format`` number; older formats are migrated when read, newer ones are refused.
"""

from __future__ import annotations

import copy
import tomllib
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any

import tomli_w

from alexnet.data import SOURCES
from alexnet.errors import UserError
from alexnet.models import NETWORKS, check_options, model_options
from alexnet.settings import SettingError, build, format_version, setting, to_table

RECIPE_PACKAGE = "alexnet.recipes"
# 1: alexnet 0.1.0 (no format key); 2: typed recipes; 3: the paper's dropout placement and
# update rule became the defaults (older runs keep what they trained with: _migrate).
RECIPE_FORMAT = 3
SCHEDULES = ("plateau", "onecycle", "step", "constant")


@dataclass
class ModelSettings:
    arch: str = setting("alexnet", choices=tuple(NETWORKS))
    options: dict[str, Any] = setting({})  # checked against the network's own options
    # Fine-tuning: a new run starts from these weights (a checkpoint, run folder, weights file,
    # or "torchvision"); a classifier head of another class count is replaced (finetune.py).
    weights: str = setting("")
    freeze_features: bool = setting(False)  # train only the classifier (fc6-fc8)


@dataclass
class DataSettings:
    source: str = setting("imagefolder", choices=SOURCES)
    root: str = setting("")  # stored absolute, so a run resumes from any folder
    image_size: int = setting(0, min=0, max=4096)  # 0: the source's own, or the network's input
    channels: int = setting(0, choices=(0, 1, 3))  # 0: the source's own
    batch_size: int = setting(128, min=1)
    eval_batch_size: int = setting(256, min=1)
    # "channel": (x - mean) / std per channel. "mean-image": the paper's, (x - the training
    # set's mean image) / std, the mean image computed once (stored by alexnet prepare).
    normalise: str = setting("channel", choices=("channel", "mean-image"))
    mean: list[float] = setting([], min=0.0, max=1.0)  # per channel, [0, 1] units; []: the source's
    # At least 1e-4: the paper's own scale is 1/255 (imagenet-paper); 1e-45 gave inputs of
    # 1e45 and a "lower the learning rate" when the loss became NaN.
    std: list[float] = setting([], min=1e-4, max=100.0)
    limit_train: int = setting(0, min=0)  # 0: every image
    limit_test: int = setting(0, min=0)
    workers: int = setting(-1, min=-1, max=64)  # loader processes; -1: 0 in memory, else some
    verify: bool = setting(True)  # check downloaded and packaged files against their sha256
    max_megapixels: float = setting(64.0, min=1e-6, max=10_000.0)  # larger: skipped, listed


@dataclass
class AugmentSettings:
    """In-memory sources translate by up to ``crop_padding`` pixels; a store is cropped at
    random to the network's size (227 of 256). ``pca_std``: the colour augmentation's
    alpha deviation (the paper's 0.1; 0 turns it off)."""

    crop_padding: int = setting(0, min=0, max=512)  # pixels each side, at most twice 256
    flip: bool = setting(True)
    pca_std: float = setting(0.0, min=0.0, max=10.0)


@dataclass
class OptimSettings:
    name: str = setting("sgd", choices=("sgd",))
    lr: float = setting(0.01, above=0.0)
    momentum: float = setting(0.9, min=0.0, below=1.0)
    nesterov: bool = setting(False)
    weight_decay: float = setting(5e-4, min=0.0, max=1.0)
    # "paper": the velocity keeps its size when the rate changes (section 5); "torch":
    # torch.optim.SGD's momentum, which a change of rate rescales (schedules.VelocitySGD).
    rule: str = setting("paper", choices=("paper", "torch"))
    decay_biases: bool = setting(True)  # false: cuda-convnet's and Caffe's, not the paper's text
    label_smoothing: float = setting(0.0, min=0.0, below=1.0)
    lr_find: bool = setting(False)  # a new run first finds its rate (lr_find.py), replacing lr
    lr_find_divisor: float = setting(10.0, min=1.0, max=1000.0)  # trains at its minimum / this


@dataclass
class ScheduleSettings:
    """``plateau`` (the paper's: divide by ``factor`` when the validation error stops
    improving, at most ``max_reductions`` times; "stops improving" is ``patience`` epochs and
    at least ``patience_images`` training images without a better error), ``onecycle``
    (linear warm-up over ``warmup_fraction`` of the steps, then linear decay), ``step``
    (divide by ``factor`` at each of ``milestones``), ``constant``."""

    name: str = setting("plateau", choices=SCHEDULES)
    warmup_fraction: float = setting(0.0, min=0.0, below=1.0)
    factor: float = setting(0.1, above=0.0, below=1.0)
    patience: int = setting(1, min=0)
    patience_images: int = setting(1_281_167, min=0, max=10**12)  # one ImageNet epoch
    max_reductions: int = setting(3, min=0, max=100)
    milestones: list[int] = setting([30, 60, 80], min=1, max=1_000_000)


@dataclass
class EvalSettings:
    tta_flip: bool = setting(False)


@dataclass
class TrainSettings:
    precision: str = setting("auto", choices=("auto", "fp32", "bf16"))
    channels_last: bool | str = setting("auto", choices=("auto", True, False))
    compile: bool = setting(False)
    allocator: str = setting("auto", choices=("auto", "system"))  # see runtime.keep_freed_memory
    grad_compression: str = setting("none", choices=("none", "bf16"))  # DDP: see train.wrap
    threads: int = setting(0, min=0, max=256)  # 0: the cores it may use, shared among ranks
    deterministic: bool = setting(False)
    checkpoint_every: int = setting(0, min=0)  # steps; 0: at the end of each epoch only
    # Minutes for the whole command; 0: none. The epochs that fit (at most `epochs`) are
    # chosen from this machine's measured speed, and a run that falls behind is shortened
    # (training/budget.py). Needs a schedule with a length: onecycle, step or constant.
    budget_minutes: float = setting(0.0, min=0.0, max=7 * 24 * 60)
    log_every: int = setting(20, min=1)


@dataclass
class Recipe:
    format: int = setting(RECIPE_FORMAT, min=1)
    name: str = setting("alexnet")
    seed: int = setting(0, min=0)
    epochs: int = setting(90, min=1)
    model: ModelSettings = setting(ModelSettings())
    data: DataSettings = setting(DataSettings())
    augment: AugmentSettings = setting(AugmentSettings())
    optim: OptimSettings = setting(OptimSettings())
    schedule: ScheduleSettings = setting(ScheduleSettings())
    eval: EvalSettings = setting(EvalSettings())
    train: TrainSettings = setting(TrainSettings())

    def to_dict(self) -> dict[str, Any]:
        return to_table(self)

    def to_toml(self) -> str:
        return tomli_w.dumps(self.to_dict())


def _migrate(table: dict[str, Any], where: str) -> dict[str, Any]:
    """Bring a saved recipe to the current format, meaning what it meant when it was saved.
    Format 1 (alexnet 0.1.0) holds every key of format 2 with the same meaning. Before format
    3 every network dropped the inputs of fc6 and fc7 and SGD kept torch's momentum, so a run
    from then resumes, and its weights rebuild, with exactly those."""
    version = format_version(table, RECIPE_FORMAT, "recipe", where)
    table = copy.deepcopy(table)
    if version < 3:  # a table of the wrong shape is left for build() to name
        model, optim = table.setdefault("model", {}), table.setdefault("optim", {})
        if isinstance(model, dict) and isinstance(model.setdefault("options", {}), dict):
            arch = model.get("arch", ModelSettings.arch)
            if (
                isinstance(arch, str)
                and arch in NETWORKS
                and "dropout_placement" in model_options(arch)
            ):
                model["options"].setdefault("dropout_placement", "torchvision")
        if isinstance(optim, dict):
            optim.setdefault("rule", "torch")
    return {**table, "format": RECIPE_FORMAT}


def recipe_from_dict(table: dict[str, Any], where: str, saved: bool = False) -> Recipe:
    """A checked :class:`Recipe` from a table. A table with a format number is migrated from
    it (newer ones refused); without one, ``saved`` tables (run folders, checkpoints) are
    alexnet 0.1.0's and other tables (recipe files, overrides) the current format."""
    if not isinstance(table, dict):
        raise UserError(
            f"{where}: a recipe must be a table of settings, got {type(table).__name__}"
        )
    current = not saved and "format" not in table
    table = {**table, "format": RECIPE_FORMAT} if current else _migrate(table, where)
    try:
        recipe = build(Recipe, table)
        checked = check_options(recipe.model.arch, recipe.model.options, "model.options")
        recipe.model.options = {k: getattr(checked, k) for k in recipe.model.options}
        _check_together(recipe)
    except ValueError as exc:  # SettingError included
        raise UserError(f"{where}: {exc}") from None
    return recipe


def _check_together(r: Recipe) -> None:
    """Rules that involve two keys."""
    if r.optim.nesterov and r.optim.momentum == 0:
        raise SettingError("optim.nesterov needs optim.momentum > 0")
    if r.schedule.milestones != sorted(set(r.schedule.milestones)):
        raise SettingError(f"schedule.milestones must increase, got {r.schedule.milestones}")
    d = r.data  # one value per channel is checked once the source's channels are known
    if d.mean and d.std and len(d.mean) != len(d.std):
        raise SettingError(f"data.mean and data.std differ in length: {d.mean} and {d.std}")


def recipe_names() -> list[str]:
    return sorted(
        p.name.removesuffix(".toml")
        for p in resources.files(RECIPE_PACKAGE).iterdir()
        if p.name.endswith(".toml")
    )


RECIPE_BYTES = 1 << 20  # a recipe is a page of settings: a 3 GB file was read whole first


def read_toml(path: Path | str, text: str | None = None) -> dict[str, Any]:
    try:  # utf-8-sig: a file saved by an editor that starts it with a byte-order mark
        if text is None and Path(path).stat().st_size > RECIPE_BYTES:
            raise UserError(f"{path}: {Path(path).stat().st_size / 1e6:.0f} MB, too large for "
                             f"a recipe (at most {RECIPE_BYTES // 1024} kB)")  # fmt: skip
        return tomllib.loads(Path(path).read_text(encoding="utf-8-sig") if text is None else text)
    except tomllib.TOMLDecodeError as exc:
        raise UserError(f"{path}: invalid TOML: {exc}") from None
    except RecursionError:
        raise UserError(f"{path}: invalid TOML: nested too deeply") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise UserError(f"{path}: cannot read ({exc})") from None


def _not_a_file(path: Path) -> str:
    """Why ``path`` cannot be read as a file, in words (never opened: a pipe would hang)."""
    if path.is_dir():
        return "is a folder, not a file"
    if path.is_symlink() and not path.exists():
        return "is a symbolic link to nothing, or to itself"
    if path.exists():
        return "is not a regular file (a pipe, socket or device)"
    return "does not exist"


def load_recipe(name_or_path: str) -> Recipe:
    """A shipped recipe by name (``fashion-mnist``) or a TOML file by path."""
    path = Path(name_or_path)
    # A shipped name is the shipped recipe, whatever the working folder holds: `--recipe photos
    # --data photos` met the folder photos/ ("recipe file photos is a folder"). ./photos is
    # the file.
    shipped = name_or_path in recipe_names()
    if not shipped and (path.suffix == ".toml" or path.exists() or path.is_symlink()):
        if not path.is_file():
            raise UserError(f"recipe file {path} {_not_a_file(path)}")
        table = read_toml(path)
        if not table and path.suffix != ".toml":  # an empty file was the paper's every default
            raise UserError(f"recipe file {path} is empty; a recipe is a .toml file of the "
                             f"keys that differ from the paper's (or one of: "
                             f"{', '.join(recipe_names())})")  # fmt: skip
        return recipe_from_dict(table, str(path))
    names = recipe_names()
    if name_or_path not in names:
        raise UserError(
            f"unknown recipe {name_or_path!r}; valid: {', '.join(names)} (or a path to a .toml file)"
        )
    text = resources.files(RECIPE_PACKAGE).joinpath(f"{name_or_path}.toml").read_text()
    return recipe_from_dict(read_toml(f"recipe {name_or_path}", text), f"recipe {name_or_path}")


def parse_value(text: str) -> Any:
    """A TOML literal (``0.02``, ``true``, ``[1, 2]``, ``"x"``); anything else is a plain string."""
    try:
        return tomllib.loads(f"v = {text}")["v"]
    except tomllib.TOMLDecodeError:
        return text


def split_assignment(item: str) -> tuple[str, Any]:
    if "=" not in item:
        raise UserError(f"override {item!r} must look like key=value, e.g. optim.lr=0.02")
    key, value = item.split("=", 1)
    if not key.strip():
        raise UserError(f"override {item!r} names no key; write key=value, e.g. optim.lr=0.02")
    return key.strip(), parse_value(value.strip())


def apply_overrides(recipe: Recipe, items: list[str]) -> Recipe:
    """A new recipe with each ``a.b.c=value`` set and everything checked again."""
    table = copy.deepcopy(recipe.to_dict())
    for item in items:
        key, value = split_assignment(item)
        if key == "format":  # migrate() would read the recipe as that old format's, then drop it
            raise UserError(f"--set {item}: format is the version alexnet writes into a recipe "
                            "file, not a setting; leave it out")  # fmt: skip
        node = table
        *parents, last = key.split(".")
        for depth, part in enumerate(parents):
            node = node.setdefault(part, {})  # an unknown table is refused by the check below
            if not isinstance(node, dict):
                where = ".".join(parents[: depth + 1])
                raise UserError(f"--set {item}: {where} is a setting, not a table")
        node[last] = value
    return recipe_from_dict(table, "--set")
