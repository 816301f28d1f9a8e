"""The optimiser and the learning-rate schedules, and what changing a run's rate means.

``plateau`` is the paper's: divide by ``factor`` when the validation error stops improving,
at most ``max_reductions`` times (the paper: three). The paper tested that on ImageNet, an
epoch of 1.28 million images (10,000 steps); on a small set an epoch is a few dozen steps
and its validation error is noisy, and a patience of one epoch divided the rate three times
within a few flat epochs. So the error must also have failed to improve over
``patience_images`` training images (default: one ImageNet epoch, as the paper's test saw),
which leaves ImageNet's schedule as it was. ``onecycle`` warms up linearly to the
rate over ``warmup_fraction`` of all steps and decays linearly to 1/1000 of it; it is stepped
per batch, the others per epoch.
"""

from __future__ import annotations

import math
from collections import Counter

import torch
from torch import nn
from torch.optim.lr_scheduler import LambdaLR, MultiStepLR, OneCycleLR, ReduceLROnPlateau

Schedule = LambdaLR | MultiStepLR | OneCycleLR | ReduceLROnPlateau


class VelocitySGD(torch.optim.SGD):
    """SGD with the paper's update rule (section 5): v <- 0.9 v - 0.0005 eps w - eps grad,
    w <- w + v, so the velocity ``v`` is a distance and keeps the steps taken at the old rate
    when the rate ``eps`` changes.

    ``torch.optim.SGD`` keeps ``b = 0.9 b + grad + wd w`` and steps ``w -= eps b``: the same
    arithmetic while the rate is constant (``v = -eps b``), but a change of rate rescales all
    the stored momentum at once. After three steps at 0.1 on a unit gradient and a division
    to 0.01, the paper's rule moves 0.254 on the next step and torch's 0.034; from a steady
    velocity (1.0 at rate 0.1) 0.91 against 0.10. Here the buffer is multiplied by old / new
    whenever the rate has changed since the last step, which keeps ``v`` and lets the fused
    kernel do the update; with a per-step schedule (one-cycle) that is one more pass over the
    buffers a step, under plateau and step schedules one per division. With ``nesterov`` the
    look-ahead is taken on the velocity kept the same way (the paper has no Nesterov)."""

    def add_param_group(self, param_group: dict) -> None:
        """Every group (the constructor adds them here too) records the rate its buffers are
        in from the start, so every state dict holds it and loading checks it like the rate."""
        super().add_param_group(param_group)
        self.param_groups[-1]["velocity_lr"] = self.param_groups[-1]["lr"]

    def step(self, closure=None):
        for group in self.param_groups:
            last = group["velocity_lr"]  # the rate the buffers are in
            if group["lr"] != last:
                held = (self.state.get(p, {}).get("momentum_buffer") for p in group["params"])
                buffers = [b for b in held if b is not None]
                if buffers:
                    torch._foreach_mul_(buffers, last / group["lr"])
                group["velocity_lr"] = group["lr"]
        return super().step(closure)


def build_optimizer(model: nn.Module, optim) -> torch.optim.Optimizer:
    """The paper's SGD (``optim.rule``: "paper", or "torch" for ``torch.optim.SGD``'s own
    momentum). ``fused``: one kernel updates each parameter (weight decay, momentum and step
    in one pass over the weights, its gradient and its momentum) where the default makes
    separate passes over all 61 million weights.

    ``optim.decay_biases`` false decays the weights only, as cuda-convnet and Caffe's
    reference model do (Caffe: ``decay_mult: 0`` on biases); the paper's text decays every
    weight ``w``, and its default is that."""
    trained = [p for p in model.parameters() if p.requires_grad]  # frozen: no state, no work
    groups = [{"params": trained}]
    if not optim.decay_biases:
        groups = [{"params": [p for p in trained if p.dim() > 1]},
                  {"params": [p for p in trained if p.dim() <= 1], "weight_decay": 0.0}]  # fmt: skip
        groups = [g for g in groups if g["params"]]
    kind = VelocitySGD if optim.rule == "paper" else torch.optim.SGD
    return kind(
        groups,
        lr=optim.lr,
        momentum=optim.momentum,
        nesterov=optim.nesterov,
        weight_decay=optim.weight_decay,
        fused=True,
    )


def onecycle_warmup(fraction: float, total_steps: int) -> float:
    """The warm-up fraction, kept where OneCycleLR's two phases each span some steps: it
    divides by the length of each phase, so a very short run (a few steps) would divide by 0."""
    return min(max(fraction, 1.5 / total_steps), 1 - 0.5 / total_steps)


def build_schedule(opt: torch.optim.Optimizer, recipe, steps_per_epoch: int) -> Schedule:
    s, lr = recipe.schedule, recipe.optim.lr
    if s.name == "plateau":
        floor = lr * s.factor**s.max_reductions * (1 - 1e-6)
        epoch_images = max(1, steps_per_epoch * recipe.data.batch_size)
        # torch divides after patience + 1 epochs without improvement
        patience = max(s.patience, math.ceil(s.patience_images / epoch_images) - 1)
        return ReduceLROnPlateau(opt, mode="min", factor=s.factor, patience=patience, min_lr=floor)
    if s.name == "onecycle":
        total = max(1, recipe.epochs * steps_per_epoch) + 1  # the last step stays in range
        return OneCycleLR(
            opt, max_lr=lr, total_steps=total, pct_start=onecycle_warmup(s.warmup_fraction, total),
            anneal_strategy="linear", div_factor=10.0, final_div_factor=100.0, cycle_momentum=False,
        )  # fmt: skip
    if s.name == "step":
        return MultiStepLR(opt, milestones=list(s.milestones), gamma=s.factor)
    return LambdaLR(opt, lambda _: 1.0)  # constant


def per_step(schedule: Schedule) -> bool:
    return isinstance(schedule, OneCycleLR)


# What `--resume RUN --set optim.lr=X` does under each schedule (docs/training.md, "Changing a run"):
#   constant  the rate is X from now on.
#   step      X replaces the base rate; milestones already passed still divide it.
#   plateau   the rate is X now; the reductions left stay, counted down from X.
#   onecycle  the rest of the cycle is scaled so that its peak is X.
def change_learning_rate(opt: torch.optim.Optimizer, schedule: Schedule, new: float) -> None:
    for group in opt.param_groups:
        if isinstance(schedule, OneCycleLR):
            ratio = new / group["max_lr"]
            for key in ("initial_lr", "max_lr", "min_lr", "lr", "budget_lr"):
                if key in group:  # budget_lr: where a shortened cycle went on from
                    group[key] *= ratio
        elif isinstance(schedule, MultiStepLR):
            passed = sum(n for m, n in schedule.milestones.items() if m <= schedule.last_epoch)
            group["initial_lr"] = new
            group["lr"] = new * schedule.gamma**passed
        elif isinstance(schedule, ReduceLROnPlateau):
            floor = schedule.min_lrs[0]
            left = round(math.log(group["lr"] / floor) / math.log(1 / schedule.factor))
            group["lr"] = new
            schedule.min_lrs = [new * schedule.factor**left * (1 - 1e-6)] * len(opt.param_groups)
        else:
            group["initial_lr"] = new
            group["lr"] = new
    if isinstance(schedule, (MultiStepLR, LambdaLR)):
        schedule.base_lrs = [new] * len(opt.param_groups)
        schedule._last_lr = [g["lr"] for g in opt.param_groups]


# A time budget (budget.py) ends a run that falls behind sooner than laid out (and one that has
# caught up later again, up to its plan): the rest of the schedule, from where the run is, is
# fitted into the epochs left, without a jump in the rate.
#   onecycle  from the current rate (kept as the group's "budget_lr"), what is left of the
#             warm-up, then the linear decay, both squeezed in proportion to end at the new
#             last step (torch's OneCycleLR takes any number of linear phases; its state
#             dict keeps them, so a resumed run goes on alike).
#   step      the milestones still ahead are moved in proportion (compress).
#   constant  nothing to move.
def shorten(schedule: Schedule, epochs_done: int, old_epochs: int, new_epochs: int,
            steps_per_epoch: int) -> None:  # fmt: skip
    if isinstance(schedule, OneCycleLR):
        now, end = float(schedule.last_epoch), float(new_epochs * steps_per_epoch)
        old_end = float(schedule._schedule_phases[-1]["end_step"])
        peak = schedule._schedule_phases[0]["end_step"]  # the end of the warm-up
        for group in schedule.optimizer.param_groups:
            group["budget_lr"] = group["lr"]
        phases = [_phase(now, "initial_lr", "budget_lr")]  # the past: never read again
        if peak > now:
            peak = now + (peak - now) * (end - now) / max(old_end - now, 1.0)
            phases += [_phase(peak, "budget_lr", "max_lr"), _phase(end, "max_lr", "min_lr")]
        else:
            phases.append(_phase(end, "budget_lr", "min_lr"))
        schedule._schedule_phases = phases
        schedule.total_steps = int(end) + 1  # as build_schedule: the last step stays in range
    elif isinstance(schedule, MultiStepLR):
        ahead = sorted(schedule.milestones.elements())
        moved = compress(ahead, epochs_done, old_epochs, new_epochs)
        schedule.milestones = Counter(moved)
    elif isinstance(schedule, ReduceLROnPlateau):
        raise ValueError("a plateau schedule has no length to shorten")


def _phase(end_step: float, start: str, end: str) -> dict:
    """One linear phase of OneCycleLR, rates named by their param-group keys (momentum is
    not cycled here, but torch's phases name it)."""
    return {"end_step": end_step, "start_lr": start, "end_lr": end,
            "start_momentum": "max_momentum", "end_momentum": "base_momentum"}  # fmt: skip


def compress(points: list[int], done: int, total: int, new_total: int) -> list[int]:
    """Epoch numbers past ``done`` moved so that the stretch from ``done`` to ``total`` fits
    from ``done`` to ``new_total`` (a step schedule's milestones); those before stay."""
    scale = (new_total - done) / max(total - done, 1)
    return [p if p <= done else done + max(1, round((p - done) * scale)) for p in points]
