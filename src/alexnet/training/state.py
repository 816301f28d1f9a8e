"""The state of a training run: what a checkpoint holds and how a run continues from one.

Resuming is exact: the state holds the model, optimiser and schedule, the position inside the
epoch, the partial epoch's running sums and every random state, and batch augmentations are
seeded per batch, so a run killed at any moment and resumed ends with the same weights as an
uninterrupted one (on the CPU, in deterministic mode).
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

import torch
from torch import nn

from alexnet.checkpoint import CHECKPOINT_FORMAT, CheckpointError, atomic_save
from alexnet.config import Recipe
from alexnet.training.schedules import Schedule


@dataclass
class EpochSums:
    """Running sums of the epoch in progress (checkpointed, so a resumed epoch reports right)."""

    loss: float = 0.0
    correct: float = 0.0
    seen: float = 0.0
    seconds: float = 0.0
    correct5: float = 0.0  # top-5 hits; checkpoints from before it was counted load with 0


@dataclass
class TrainingState:
    model: nn.Module
    optimizer: torch.optim.Optimizer
    schedule: Schedule
    recipe: Recipe  # the one recipe of the run, resolved: what it trains by and saves
    epoch: int = 0  # epochs finished
    batch: int = 0  # batches finished in the current epoch
    global_step: int = 0
    best_top1_err: float = math.inf
    sums: EpochSums = field(default_factory=EpochSums)
    history: list[dict[str, float]] = field(default_factory=list)  # one entry per epoch
    changes: list[dict[str, Any]] = field(default_factory=list)  # each resume with --set
    data: dict[str, Any] = field(default_factory=dict)  # image counts and classes it trains on
    # The training set's mean image and colour PCA where the recipe uses them (stats.py), so
    # evaluation and prediction preprocess exactly as training did.
    preprocessing: dict[str, Any] = field(default_factory=dict)
    # A run with a time budget (budget.py): its minutes, the seconds spent by its last
    # checkpoint (a resumed run's clock starts there) and the costs it measured.
    budget: dict[str, float] = field(default_factory=dict)

    def state_dict(self) -> dict[str, Any]:
        rng = {"torch": torch.get_rng_state()}
        if torch.cuda.is_available() and torch.cuda.is_initialized():
            rng["cuda"] = torch.cuda.get_rng_state()
        return {
            "format": CHECKPOINT_FORMAT,
            "model": self.model.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.schedule.state_dict(),
            "epoch": self.epoch,
            "batch": self.batch,
            "global_step": self.global_step,
            "best_top1_err": self.best_top1_err,
            "epoch_sums": asdict(self.sums),
            "history": self.history,
            "changes": self.changes,
            "data": self.data,
            "preprocessing": self.preprocessing,
            "budget": self.budget,
            "rng": rng,
            "recipe": self.recipe.to_dict(),
        }

    def load_state_dict(self, state: dict[str, Any], where: Path | str = "checkpoint") -> None:
        """Continue from ``state``; a part that is not what this package writes (an edited or
        damaged file) is one CheckpointError naming ``where``, not a traceback mid-run."""
        try:
            self.model.load_state_dict(state["model"])
        except RuntimeError as exc:
            first = str(exc).replace("\n", " ").replace("\t", "")[:200]
            raise CheckpointError(
                f"{where}: its weights do not fit the network its recipe describes ({first})"
            ) from None
        _check_counters(state, where, self.recipe.data.batch_size)
        broken = [k for k, t in self.model.state_dict().items()
                  if t.is_floating_point() and not t.isfinite().all()]  # fmt: skip
        if broken:  # the run would stop at its first step as diverged, blaming this very file
            raise CheckpointError(f"{where}: its weight {broken[0]} holds NaN or infinite values; "
                                  "a damaged or edited checkpoint (best.pt, if there, may still "
                                  "be sound)")  # fmt: skip
        try:
            _check_same_types(self.schedule.state_dict(), state["scheduler"], "scheduler")
            _check_schedule(self.schedule.state_dict(), state["scheduler"])
            for fresh, saved in zip(self.optimizer.param_groups,
                                    state["optimizer"]["param_groups"], strict=False):  # fmt: skip
                _check_same_types(fresh, saved, "optimizer", finite=True)
                missing = sorted(set(fresh) - set(saved))
                if missing:  # a rate deleted: a KeyError deep in the update
                    raise ValueError(f"its optimizer state lacks {missing[0]}")
                _check_recipes_settings(fresh, saved)
            _check_rates(state, self.recipe.schedule.max_reductions)
            _check_float_buffers(state["optimizer"]["state"])
            self.optimizer.load_state_dict(state["optimizer"])
            _check_buffers(self.optimizer, state["global_step"])
            self.schedule.load_state_dict(state["scheduler"])
            rng = state["rng"]
            if not isinstance(rng, dict) or "torch" not in rng:  # it would draw other crops
                raise ValueError("its random state lacks torch's generator")
            torch.set_rng_state(rng["torch"])
            if "cuda" in rng and torch.cuda.is_available():
                torch.cuda.set_rng_state(rng["cuda"])
        except (KeyError, TypeError, ValueError, RuntimeError, AttributeError) as exc:
            first = str(exc).replace("\n", " ")[:160]
            raise CheckpointError(f"{where}: its training state is not what alexnet writes "
                                  f"({first}); a damaged or edited checkpoint (best.pt, if "
                                  "there, may still be sound)") from None  # fmt: skip
        self.epoch, self.batch = state["epoch"], state["batch"]
        self.global_step = state["global_step"]
        self.best_top1_err = state.get("best_top1_err", math.inf)
        self.sums = EpochSums(**state.get("epoch_sums", {}))
        self.history = list(state.get("history", []))
        self.changes = list(state.get("changes", []))
        self.budget = dict(state.get("budget", {}))

    def save(self, path: Path) -> None:
        atomic_save(self.state_dict(), path)


# What every epoch's entry in a checkpoint's history holds (the log line and curves read them).
HISTORY_KEYS = ("epoch", "train_loss", "train_top1_err", "val_loss", "val_top1_err",
                "val_top5_err", "lr", "epoch_seconds", "images_per_s")  # fmt: skip


def _number(x: Any) -> bool:
    return isinstance(x, int | float) and not isinstance(x, bool)


def _check_counters(state: dict[str, Any], where: Path | str, batch_size: int) -> None:
    """The counts, sums and history are numbers of the right kind: edited ones crashed the run
    later (a division by zero, a KeyError in the log line, str + float in a step). The sums
    are what the epoch's batches could hold (1e30 images seen reported an error of 100% at
    1e29 images/s, into the run's history)."""
    problem = None
    counts = {k: state.get(k) for k in ("epoch", "batch", "global_step")}
    sums = state.get("epoch_sums", {})
    history = state.get("history", [])
    if not all(type(v) is int and v >= 0 for v in counts.values()):
        problem = f"its counts {counts} are not counts"
    elif not isinstance(sums, dict) or not set(sums) <= {f.name for f in fields(EpochSums)} \
            or not all(_number(v) and 0 <= v < math.inf for v in sums.values()):  # fmt: skip
        problem = "its epoch sums are not finite counts and totals"
    elif sums.get("seen", 0) > counts["batch"] * batch_size or not (
        sums.get("correct", 0) <= sums.get("seen", 0)
        and sums.get("correct5", 0) <= sums.get("seen", 0)
    ):
        problem = (f"its epoch sums count {sums.get('seen', 0):g} images seen, {sums.get('correct', 0):g} "
                   f"right, in {counts['batch']} batches of {batch_size}")  # fmt: skip
    elif not isinstance(history, list) or not all(
        isinstance(m, dict) and all(_number(m.get(k)) for k in HISTORY_KEYS) for m in history
    ):
        problem = "its history is not a list of epochs' figures"
    elif [m["epoch"] for m in history] != list(range(1, counts["epoch"] + 1)):
        problem = f"its history holds {len(history)} epochs in another order than its count of {counts['epoch']}"
    elif not (
        _number(best := state.get("best_top1_err", math.inf))
        and (0 <= best <= 1 or best == math.inf)
    ):
        problem = "its best error is not an error rate"
    elif not isinstance(changes := state.get("changes", []), list) or not all(
        isinstance(c, dict) for c in changes
    ):
        problem = "its record of changes is not a list of resumes' changes"
    elif not isinstance(budget := state.get("budget", {}), dict) or not all(
        _number(v) and 0 <= v < math.inf for v in budget.values()
    ):
        problem = "its time budget is not a record of finite seconds"
    if problem:
        raise CheckpointError(f"{where}: {problem}; a damaged or edited checkpoint (best.pt, if "
                              "there, may still be sound)")  # fmt: skip


def _check_same_types(fresh: dict[str, Any], saved: Any, what: str, finite: bool = False) -> None:
    """A saved state dict whose plain values differ in kind from a fresh one's (a rate factor
    that is text, a momentum of None) was loaded silently or failed deep in torch; with
    ``finite``, numbers must also be finite and not negative (a rate of NaN or -1). A
    ValueError says which key."""
    if not isinstance(saved, dict):
        raise ValueError(f"its {what} state is a {type(saved).__name__}")
    for key, value in fresh.items():
        if key in saved and _number(value) and not _number(saved[key]):
            raise ValueError(f"its {what} state's {key} is {saved[key]!r}, not a number")
        if key in saved and finite and _number(value) and not 0 <= saved[key] < math.inf:
            raise ValueError(f"its {what} state's {key} is {saved[key]!r}")


# The rates a checkpoint keeps, in its optimiser's groups and its schedule. No schedule here
# rises above the recipe's rate (one-cycle peaks at it, the others divide it, and a resume's
# new rate is written into the recipe), so an edited base rate of 1e9 is caught here rather
# than trained with. (``velocity_lr`` is the rate the momentum is in, which may be an older
# rate until the next step.)
RATE_KEYS = ("lr", "initial_lr", "max_lr", "min_lr", "budget_lr")
SCHEDULE_RATES = ("base_lrs", "_last_lr", "min_lrs")


def _check_rates(state: dict[str, Any], max_reductions: int) -> None:
    """No rate exceeds the recipe's: an edited base rate of 1e9 resumed without a word and
    trained at it from the schedule's next step. The recipe's rate is the schedule's peak,
    or (plateau) its floor times factor to the power of the reductions left."""
    sched = state["scheduler"]
    top = state["recipe"]["optim"]["lr"]
    if not _number(top) or not 0 < top < math.inf:
        raise ValueError(f"its recipe's optim.lr is {top!r}")
    rates = [(f"optimizer's {k}", g[k]) for g in state["optimizer"]["param_groups"]
             for k in RATE_KEYS if k in g]  # fmt: skip
    # (each a list, as _check_schedule has made sure)
    rates += [(f"scheduler's {k}", v) for k in SCHEDULE_RATES for v in sched.get(k, [])]
    for name, rate in rates:
        if not (_number(rate) and 0 <= rate <= top * (1 + 1e-6)):
            raise ValueError(f"its {name} is {rate!r}, above its recipe's rate {top:g} or "
                             "not a rate")  # fmt: skip
    # The schedule's peak is the recipe's rate itself: one-cycle's max_lr, else the base rate
    # (a recipe edited under --checkpoint-recipe had said a rate the run did not train at).
    groups = state["optimizer"]["param_groups"]
    peaks = [("optimizer's max_lr", g["max_lr"]) for g in groups if "max_lr" in g] or \
        [("scheduler's base_lrs", v) for v in sched.get("base_lrs", [])]  # fmt: skip
    for name, rate in peaks:
        if abs(rate - top) > 1e-6 * top:
            raise ValueError(f"its {name} is {rate!r} where its recipe's rate is {top:g}")
    if sched.get("min_lrs") and sched["min_lrs"][0] > 0:  # plateau: floor = top * factor^left
        left = math.log(sched["min_lrs"][0] / (top * (1 - 1e-6))) / math.log(sched["factor"])
        if abs(left - round(left)) > 1e-3 or not 0 <= round(left) <= max_reductions:
            raise ValueError(f"its scheduler's min_lrs {sched['min_lrs'][0]:.3g} is not its "
                             f"recipe's rate {top:g} reduced {max_reductions} times or fewer")  # fmt: skip


# What a schedule's recipe fixes: equal in a fresh schedule and a saved one (a gamma of nan or
# -1 trained on at a rate of nan or below zero, and wrote it into the next checkpoint).
SCHEDULE_SETTINGS = ("gamma", "factor", "_anneal_func_type", "cycle_momentum", "mode",
                     "threshold", "threshold_mode", "cooldown", "eps", "patience", "total_steps")  # fmt: skip
PHASE_RATES = {"initial_lr", "max_lr", "min_lr", "budget_lr"}


def _check_schedule(fresh: dict[str, Any], saved: dict[str, Any]) -> None:
    """A saved schedule holds what a fresh one of its recipe holds, of the same kinds: torch
    loads any key into the scheduler itself (a key "step" replaced its method), and a list
    of milestones, an empty or unknown phase or a phase past the schedule's end failed deep
    in torch mid-run. A ValueError says which key."""
    extra = sorted(set(saved) - set(fresh))
    if extra:
        raise ValueError(f"its scheduler state has {extra[0]!r}, which its schedule does not")
    for key, value in fresh.items():
        if key in saved and value is not None and not _number(value) \
                and type(saved[key]) is not type(value):  # fmt: skip
            raise ValueError(f"its scheduler's {key} is of type {type(saved[key]).__name__}, "
                             f"not {type(value).__name__}")  # fmt: skip
    for key in SCHEDULE_SETTINGS:
        if key in fresh and key in saved and saved[key] != fresh[key]:
            raise ValueError(f"its scheduler's {key} is {saved[key]!r} where its recipe gives "
                             f"{fresh[key]!r}")  # fmt: skip
    if "milestones" in saved:  # moved by a time budget, but never more nor fewer
        m = saved["milestones"]
        if not all(type(k) is int and k > 0 and type(n) is int and n > 0 for k, n in m.items()) \
                or sum(m.values()) != sum(fresh["milestones"].values()):  # fmt: skip
            raise ValueError(f"its scheduler's milestones {dict(m)} are not its recipe's "
                             f"{len(fresh['milestones'])} epochs")  # fmt: skip
    if "_schedule_phases" in saved:
        _check_phases(saved["_schedule_phases"], fresh["total_steps"])


def _check_phases(phases: list, total_steps: int) -> None:
    """One-cycle's phases: rates named by the groups' keys, ends in order, the last at the
    schedule's last step (a time budget squeezes them, never past it)."""
    ends = [p.get("end_step") if isinstance(p, dict) else None for p in phases]
    named = all(isinstance(p, dict) and {p.get("start_lr"), p.get("end_lr")} <= PHASE_RATES
                for p in phases)  # fmt: skip
    if not (phases and named and all(_number(e) and math.isfinite(e) for e in ends)
            and ends == sorted(ends) and ends[-1] == total_steps - 1):  # fmt: skip
        raise ValueError(f"its one-cycle phases are not a schedule of {total_steps - 1} steps")


# What the recipe fixes in each group of the optimiser, which a resume may not change: an
# edited momentum of 5 diverged as if the rate were too high; nesterov resumed silently.
RECIPE_SETTINGS = ("momentum", "nesterov", "weight_decay", "dampening", "maximize")


def _check_recipes_settings(fresh: dict, saved: dict) -> None:
    for key in RECIPE_SETTINGS:
        if key in fresh and saved.get(key) != fresh[key]:
            raise ValueError(f"its optimizer's {key} is {saved.get(key)!r} where its recipe "
                             f"gives {fresh[key]!r}")  # fmt: skip


def _check_buffers(optimizer: torch.optim.Optimizer, steps: int) -> None:
    """Each parameter's saved buffers (momentum) are tensors of its shape, finite: one of
    another shape corrupted the heap in torch's fused update, or was used silently; after
    ``steps`` steps with momentum, every weight has one (emptied, the run resumed without)."""
    params = [p for group in optimizer.param_groups for p in group["params"] if p.requires_grad]
    held = sum(bool(optimizer.state.get(p)) for p in params)
    if 0 < held < len(params):
        raise ValueError("its optimizer has buffers for some weights and none for others")
    momentum = any(group.get("momentum", 0) for group in optimizer.param_groups)
    if steps > 0 and momentum and params and not held:
        raise ValueError(f"its optimizer has no momentum after {steps} steps")
    for p in params:
        for key, value in optimizer.state.get(p, {}).items():
            if key == "step":
                continue
            if not isinstance(value, torch.Tensor) or value.shape != p.shape:
                raise ValueError(f"its optimizer's {key} for a {tuple(p.shape)} weight is "
                                 f"{type(value).__name__} {getattr(value, 'shape', '')}")  # fmt: skip
            if not value.isfinite().all():
                raise ValueError(f"its optimizer's {key} holds NaN or infinite values")


def _check_float_buffers(saved: dict) -> None:
    """Saved buffers hold floating-point values: torch casts whole numbers or booleans to the
    weights' type while loading them, silently truncating a momentum."""
    for entry in saved.values():
        for key, value in entry.items():
            if isinstance(value, torch.Tensor) and value.dim() and not value.is_floating_point():
                raise ValueError(f"its optimizer's {key} holds {value.dtype} values")
