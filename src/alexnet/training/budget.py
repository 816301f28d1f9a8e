"""A time budget: the whole ``alexnet train`` command ends within ``train.budget_minutes``.

A user with their own photos knows how long they can wait, not how many epochs fit in that
time. With a budget the run measures this machine first (a few training steps and an
evaluation, on a copy of the network, after the data is decoded and the rate is found),
lays its schedule out for the number of epochs that fits what is left (at most the recipe's
``epochs``), and saves that choice in its recipe, so a resumed run keeps it. After every
epoch it compares the time left with what its remaining epochs cost on the clock (training,
evaluation and checkpoint together); a run that falls behind (a slower or busier machine
than measured) shortens the rest of its schedule rather than overrunning (``shorten``).

The clock counts from the command's start (``started``, taken before PyTorch is imported)
and, on resuming, adds what the run's earlier processes had spent by their last checkpoint
(``TrainingState.budget``).
"""

from __future__ import annotations

import contextlib
import copy
import math
import statistics
import time
from dataclasses import dataclass, field
from itertools import islice

import torch
import torch.distributed as dist
from torch import nn

from alexnet.config import Recipe
from alexnet.runtime import Runtime, autocast
from alexnet.training.evaluate import predict_logits
from alexnet.training.schedules import compress, shorten
from alexnet.training.state import TrainingState

# What the end of a run costs besides its epochs: report.md's figures evaluate the test set
# again and look up neighbours in the training set; about twice one evaluation, plus the
# figures themselves (12 s on Caltech-101 at 64 pixels, 2-core Xeon, of which 4 s drawing).
END_EVALUATIONS, END_SECONDS = 2.0, 6.0
# The plan is made for this fraction of what is left: the measured steps are the fastest
# the run will see (no checkpoint, no logging, a warm cache). On Caltech-101 at 96 pixels
# (2-core Xeon) the epochs ran 5-9% slower than measured; with 0.95 the run was shortened by
# one epoch three times in its first ten.
MARGIN = 0.92


@dataclass
class Clock:
    """Seconds of the budget: ``seconds`` in all, ``spent`` by the run's earlier processes."""

    seconds: float
    spent: float = 0.0
    started: float | None = None  # time.monotonic() at the command's start

    def __post_init__(self) -> None:
        self.started = time.monotonic() if self.started is None else self.started

    def used(self) -> float:
        return self.spent + time.monotonic() - self.started

    def left(self) -> float:
        return self.seconds - self.used()


@dataclass
class Costs:
    """Seconds one training step and one whole evaluation take on this machine."""

    step: float
    evaluation: float

    def epoch(self, steps: int) -> float:
        return steps * self.step + self.evaluation


def measure(model: nn.Module, train_loader, test_loader, criterion: nn.Module, rt: Runtime,
            tta_flip: bool, probe_seconds: float = 3.0) -> Costs:  # fmt: skip
    """Time real steps of the run's own batches on a copy of the network (its weights, the
    random state and the optimiser stay as they were): the first step and the first
    evaluation batch are left out (they build the kernels), then steps until
    ``probe_seconds`` have passed or ten were timed; their median."""
    rng = torch.get_rng_state()
    probe = copy.deepcopy(model).train()
    sgd = torch.optim.SGD([p for p in probe.parameters() if p.requires_grad], lr=0.0)
    times: list[float] = []
    with contextlib.closing(train_loader.batches(0)) as batches:
        for i, (x, y, _valid) in enumerate(islice(batches, 11)):
            tick = time.perf_counter()
            with autocast(rt.device, rt.amp):
                loss = criterion(probe(x).float(), y)
            sgd.zero_grad(set_to_none=True)
            loss.backward()
            sgd.step()
            float(loss.detach())  # waits for the step (CUDA)
            if i or len(train_loader) == 1:  # an epoch of one batch: that step, kernels and all
                times.append(time.perf_counter() - tick)
            if sum(times) > probe_seconds:
                break
    evaluation = _evaluation_seconds(probe.eval(), test_loader, rt, tta_flip)
    torch.set_rng_state(rng)
    return Costs(statistics.median(times), evaluation)


@torch.no_grad()
def _evaluation_seconds(model: nn.Module, loader, rt: Runtime, tta_flip: bool) -> float:
    """One evaluation of the test set: its second and third batches timed (the first builds
    the kernels), times the number of batches."""
    times = []
    with contextlib.closing(loader.batches(0)) as batches:
        for i, (x, _y, _valid) in enumerate(islice(batches, 3)):
            tick = time.perf_counter()
            float(predict_logits(model, x, rt.amp, tta_flip).sum())
            if i or len(loader) == 1:
                times.append(time.perf_counter() - tick)
    return sum(times) / max(len(times), 1) * len(loader)


def _end_seconds(evaluation: float, report: bool) -> float:
    """What the run keeps aside for its end: the report's evaluations and figures."""
    return END_EVALUATIONS * evaluation + END_SECONDS if report else 0.0


def epochs_that_fit(costs: Costs, left: float, steps: int, cap: int, report: bool) -> int:
    """How many epochs of ``steps`` steps fit in ``left`` seconds, the end of the run (its
    report) kept aside; at least one, at most ``cap``."""
    end = _end_seconds(costs.evaluation, report)
    fits = math.floor(MARGIN * (left - end) / max(costs.epoch(steps), 1e-9))
    return max(1, min(cap, fits))


def epochs_left(clock: Clock, epoch_seconds: float, evaluation: float, report: bool) -> int:
    """Whole epochs that still fit on the clock, each costing ``epoch_seconds`` as measured
    by the run's own epochs."""
    end = _end_seconds(evaluation, report)
    return max(0, math.floor((clock.left() - end) / max(epoch_seconds, 1e-9)))


def plan(recipe: Recipe, model: nn.Module, train_loader, test_loader, rt: Runtime, clock: Clock,
         report: bool) -> tuple[dict[str, float], str]:  # fmt: skip
    """A new run's epochs chosen for the clock and set in ``recipe`` (at most its own
    ``epochs``; a step schedule's milestones moved in proportion): the record its
    checkpoints keep, and the line that says it."""
    criterion = nn.CrossEntropyLoss(label_smoothing=recipe.optim.label_smoothing)
    costs = measure(model, train_loader, test_loader, criterion, rt, recipe.eval.tta_flip)
    steps, cap, left = len(train_loader), recipe.epochs, clock.left()
    epochs = _rank0(rt, epochs_that_fit(costs, left, steps, cap, report))
    recipe.epochs = epochs
    if recipe.schedule.name == "step":
        recipe.schedule.milestones = compress(list(recipe.schedule.milestones), 0, cap, epochs)
    # "began": the Unix time the clock began, which bounds what a resume may say was spent.
    record = {"minutes": clock.seconds / 60, "planned_epochs": epochs, "step_seconds": costs.step,
              "evaluation_seconds": costs.evaluation, "epoch_seconds": costs.epoch(steps),
              "most_epochs": cap, "spent_seconds": clock.used(),
              "began": time.time() - clock.used()}  # fmt: skip
    most = (f" (the recipe's most, epochs = {cap}: --set epochs=N allows more)"
            if epochs == cap else "")  # fmt: skip
    if costs.epoch(steps) > MARGIN * left:  # one epoch is the least a run trains
        most = ("; warning: that one epoch does not fit the time left, so the run will overrun "
                "its budget: give a longer --budget, or a smaller data.image_size")  # fmt: skip
    said = (f"time budget {clock.seconds / 60:g} min, {left:.0f} s left after loading: an epoch "
            f"takes about {costs.epoch(steps):.2g} s here ({steps} steps of "
            f"{1000 * costs.step:.0f} ms, an evaluation of {costs.evaluation:.2g} s); training "
            f"{epochs} epochs{most}")  # fmt: skip
    return record, said


@dataclass
class Pacer:
    """After each epoch: whether the epochs left still fit on the clock, as the run's own
    epochs have cost it: the median of the last three, the plan's estimate standing in for
    those not yet run (unless every epoch run was faster), so one slow epoch is not a trend
    (an epoch slowed by other work on the machine cut a 48-epoch plan to 32 after one epoch),
    while two are."""

    clock: Clock
    report: bool
    planned: float  # seconds an epoch was expected to take
    costs: list[float] = field(default_factory=list)
    tick: float = field(default_factory=time.monotonic)

    def after_epoch(self, state: TrainingState, steps: int, rt: Runtime) -> str | None:
        """Shorten the rest of the run when it falls behind, lengthen it (up to the recipe's
        ``epochs``) when it runs ahead; returns what to say, or None."""
        now = time.monotonic()
        self.costs.append(now - self.tick)
        self.tick = now
        recipe, done = state.recipe, state.epoch
        if done >= recipe.epochs:
            return None
        # The plan's estimate stands in only where no epoch of this process was slower: a
        # plan measured on a busy machine (1.6 s a step for 22 ms), or edited, stopped a run
        # whose epochs took 2 s because one was expected to take 120.
        stand_in = min(self.planned, max(self.costs))
        each = statistics.median(([stand_in] * 2 + self.costs)[-3:])
        evaluation = state.budget.get("evaluation_seconds", 0.0)
        fits = done + _rank0(rt, epochs_left(self.clock, each, evaluation, self.report))
        old, most = recipe.epochs, int(state.budget.get("most_epochs", recipe.epochs))
        # Behind: end sooner. Ahead (the plan was measured while other work slowed the
        # machine, or the machine was busy for a while): take the time, up to the recipe's
        # most, when two epochs or more are free, leaving one of them spare: stretched to all
        # that fitted, a run on Caltech-101 was squeezed by one the next epoch, by turns.
        # Runs of hundreds of short epochs wobble by more than one: a twentieth of the run.
        spare = max(1, old // 20)
        new = fits if fits < old else min(fits - spare, most) if fits > old + spare else old
        if new == old:
            return None
        if new > done:
            shorten(state.schedule, done, old, new, steps)
        change: dict[str, list] = {"epochs": [old, new]}
        if recipe.schedule.name == "step":
            moved = compress(list(recipe.schedule.milestones), done, old, new)
            change["schedule.milestones"] = [list(recipe.schedule.milestones), moved]
            recipe.schedule.milestones = moved
        recipe.epochs = new
        state.changes.append({"epoch": done, "batch": 0, **change})
        left = max(self.clock.left(), 0.0)
        if new == done:
            return (f"time budget: {left:.0f} s left, less than an epoch ({each:.1f} s) and the "
                    f"end of the run; stopping after epoch {done} of {old}")  # fmt: skip
        how = "shortened to fit" if new < old else "stretched: the epochs run faster than planned"
        return (f"time budget: {left:.0f} s left at {each:.1f} s an epoch; the run now ends "
                f"after epoch {new} (was {old}), its schedule {how}")  # fmt: skip


def _rank0(rt: Runtime, count: int) -> int:
    """Rank 0's count on every rank: the ranks' clocks differ a little, their plans may not."""
    if rt.world_size == 1:
        return count
    shared = [count]
    dist.broadcast_object_list(shared, src=0)
    return int(shared[0])
