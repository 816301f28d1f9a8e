"""The paper's claims as experiments: each a list of training runs made, resumed or skipped in
one folder (sweep.py), then summarised as a table and a plot.

``relu-vs-tanh``  Figure 1: the four-layer network with ReLU, tanh and sigmoid units.
``ablations``     one paper feature removed at a time, over several seeds.
"""

from pathlib import Path

from alexnet.experiments.ablations import run_ablations
from alexnet.experiments.relu_vs_tanh import run_relu_vs_tanh

EXPERIMENTS = {"relu-vs-tanh": run_relu_vs_tanh, "ablations": run_ablations}

# What each experiment writes in its folder, by name: results.md and results.json are common
# to both, and one experiment continued in the other's folder replaced the other's.
WRITES = {"relu-vs-tanh": ("plan.json", "figure1*", "sweep-*"),
          "ablations": ("ablations.png", "*-seed[0-9]*")}  # fmt: skip


def other_experiment(out: Path, experiment: str) -> tuple[str, Path] | None:
    """The other experiment whose files ``out`` holds, and one of them; None if none."""
    for other, patterns in WRITES.items():
        for pattern in patterns if other != experiment else ():
            if found := next(out.glob(pattern), None):
                return other, found
    return None


__all__ = ["EXPERIMENTS", "WRITES", "other_experiment", "run_ablations", "run_relu_vs_tanh"]
