"""The learning-rate range test (Smith, "Cyclical learning rates", 2017): train for a few
dozen steps while the rate grows geometrically, watch the loss, and take a rate well below the
one where it stops falling.

A recipe that does not know its data (a user's own photos) cannot know its rate: on folders
of real photos at 64 pixels the CIFAR-10 recipe's one-cycle peak of 0.08 made the validation
error rise while the rate climbed. ``optim.lr_find = true`` runs this test at the start of a
new run and trains at the rate it suggests; ``alexnet lr-find`` runs it alone, with a plot.

The suggestion is the rate at the smoothed loss's minimum divided by ten
(``optim.lr_find_divisor``): at the minimum the loss is already about to blow up, and a tenth
of it is the usual safe choice for the peak of a one-cycle schedule. The test starts from the recipe's initial weights and leaves the network
as it found them.
"""

from __future__ import annotations

import copy
import dataclasses
import math
from dataclasses import dataclass
from pathlib import Path

from torch import nn

from alexnet.errors import UserError
from alexnet.files import written
from alexnet.progress import bar
from alexnet.runtime import Runtime, autocast
from alexnet.training.schedules import build_optimizer

REPEATS = 4  # passes over the training set beyond which the test says its doubt


@dataclass
class RangeTest:
    rates: list[float]
    losses: list[float]  # smoothed
    suggestion: float
    minimum: float  # the rate at the smoothed loss's minimum
    at_edge: bool = False  # the minimum is the first or last rate tried: no real minimum found
    batches: int = 0  # the training set's batches per epoch, which the test cycles over

    def repeated(self) -> str | None:
        """A test that went over a small training set many times saw the loss fall partly
        because the network learns those few batches by heart, not the task, which can put
        the minimum at a higher rate than the full run can take; said, not refused. Twice over
        46 batches (6,000 photos) is no such case; more than four times is (3 batches: 33)."""
        if not self.batches or len(self.losses) <= REPEATS * self.batches:
            return None
        return (f"the training set is {self.batches} batches, so the test's {len(self.losses)} "
                f"steps went over it {len(self.losses) / self.batches:.1f} times and its loss fell "
                "partly from learning those batches by heart: the suggestion may be too high; "
                "more images give a sounder test")  # fmt: skip

    def plot(self, path: Path) -> None:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        fig, ax = plt.subplots(figsize=(6, 3.6))
        ax.plot(self.rates, self.losses)
        ax.axvline(self.suggestion, color="tab:green", ls="--",
                   label=f"suggested {self.suggestion:.3g}")  # fmt: skip
        ax.axvline(self.minimum, color="tab:red", ls=":", label=f"minimum {self.minimum:.3g}")
        ax.set(xscale="log", xlabel="learning rate", ylabel="training loss (smoothed)",
               title="learning-rate range test")  # fmt: skip
        ax.grid(alpha=0.3)
        ax.legend()
        fig.tight_layout()
        with written(path) as tmp:  # a full disk leaves no partial plot behind
            fig.savefig(tmp, dpi=110)
        plt.close(fig)


def range_test(
    model: nn.Module, loader, optim, rt: Runtime, criterion: nn.Module, *,
    start: float = 1e-4, end: float = 2.0, steps: int = 100, smoothing: float = 0.9,
    progress: bool = False,
) -> RangeTest:  # fmt: skip
    """Rates from ``start`` to ``end`` over at most ``steps`` batches of ``loader`` (its first
    epoch, repeated if short), stopping once the loss is four times its best; ``progress``:
    a bar on a terminal."""
    if steps < 3:
        raise UserError(f"--steps {steps}: the range test needs at least 3 (default 100)")
    saved = copy.deepcopy(model.state_dict())
    # torch's rule, whatever the run's: the rate rises 10% a step, and the paper's velocity
    # (optim.rule) would lag it, moving about half as far at a rate as training at that rate
    # moves; torch's momentum is in gradient units and takes each rate at once.
    opt = build_optimizer(model, dataclasses.replace(optim, rule="torch"))
    factor = (end / start) ** (1 / max(steps - 1, 1))
    rates, losses, average, best = [], [], 0.0, math.inf
    model.train()
    batches = _cycle(loader)
    for step in bar(range(steps), desc="lr-find", unit="step", asked=progress, leave=False):
        rate = start * factor**step
        for group in opt.param_groups:
            group["lr"] = rate
        x, y, _ = next(batches)
        with autocast(rt.device, rt.amp):
            loss = criterion(model(x).float(), y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        value = loss.item()
        if not math.isfinite(value):
            break
        average = smoothing * average + (1 - smoothing) * value
        smoothed = average / (1 - smoothing ** (step + 1))  # without the start's bias to 0
        rates.append(rate)
        losses.append(smoothed)
        best = min(best, smoothed)
        if smoothed > 4 * best:
            break
    model.load_state_dict(saved)
    if len(losses) < 3:
        raise UserError(f"the loss became {value} in the range test's first steps, at rate "
                         f"{rate:.3g}; check the data and the recipe's network")  # fmt: skip
    at = min(range(len(losses)), key=losses.__getitem__)
    # The first rate, or the last of a test that never saw the loss rise: no real minimum.
    edge = at == 0 or (at == len(losses) - 1 and len(losses) == steps)
    return RangeTest(rates, losses, rates[at] / optim.lr_find_divisor, rates[at], edge, len(loader))


def _cycle(loader):
    epoch = 0
    while True:
        loader.set_epoch(epoch)
        yield from loader
        epoch += 1
