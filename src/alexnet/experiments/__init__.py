"""The paper's claims as experiments: each a list of training runs made, resumed or skipped in
one folder (sweep.py), then summarised as a table and a plot.

``relu-vs-tanh``  Figure 1: the four-layer network with ReLU, tanh and sigmoid units.
``ablations``     one paper feature removed at a time, over several seeds.
"""

from alexnet.experiments.ablations import run_ablations
from alexnet.experiments.relu_vs_tanh import run_relu_vs_tanh

EXPERIMENTS = {"relu-vs-tanh": run_relu_vs_tanh, "ablations": run_ablations}

__all__ = ["EXPERIMENTS", "run_ablations", "run_relu_vs_tanh"]
