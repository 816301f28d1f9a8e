"""What every network here is made of: the paper's switches as typed options, a feature stack
built from a table of conv layers, the classifier, and the initialisations.

A network is a table of :class:`Conv` rows (the paper's Figure 2 read left to right) plus
options; :func:`feature_stack` turns the table into layers in the order conv, activation, LRN,
max-pool, so the three AlexNets differ only in their tables.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

from torch import nn

from alexnet.errors import UserError
from alexnet.ops.lrn import FORMULAS, LocalResponseNorm, ReLUInLRN
from alexnet.settings import setting

ACTIVATIONS: dict[str, type[nn.Module]] = {"relu": nn.ReLU, "tanh": nn.Tanh, "sigmoid": nn.Sigmoid}
POOLINGS: dict[str, tuple[int, int]] = {"overlapping": (3, 2), "non-overlapping": (2, 2)}
INITS: tuple[str, ...] = ("paper", "kaiming", "torch")
DROPOUT_PLACEMENTS: tuple[str, ...] = ("paper", "torchvision")

# Section 3.3: k = 2, n = 5, alpha = 1e-4, beta = 0.75.
LRN_PAPER = {"size": 5, "alpha": 1e-4, "beta": 0.75, "k": 2.0}


@dataclass(frozen=True)
class NetworkOptions:
    """The switches every network takes, so each design choice of the paper can be ablated.
    Each network's own options class changes the defaults it needs."""

    # Every size has a range: beyond it a network is no AlexNet, and a typo like hidden=1e11
    # overflowed PyTorch's storage arithmetic instead of being named.
    num_classes: int = setting(1000, min=1, max=100_000)
    in_channels: int = setting(3, min=1, max=64)
    activation: str = setting("relu", choices=tuple(ACTIVATIONS))
    lrn: bool = setting(True)
    lrn_formula: str = setting("paper", choices=FORMULAS)
    # 0 leaves LRN's constant part alone, a division by k^beta = 2^0.75 (the ablation that
    # separates "no normalisation" from "no constant division").
    lrn_alpha: float = setting(LRN_PAPER["alpha"], min=0.0, max=1.0)  # the paper's: 1e-4
    pooling: str = setting("overlapping", choices=tuple(POOLINGS))
    dropout: float = setting(0.5, min=0.0, below=1.0)
    two_towers: bool = setting(True)
    init: str = setting("paper", choices=INITS)


@dataclass(frozen=True)
class Conv:
    """One row of a network's table: a conv layer and what follows its activation."""

    width: int
    kernel: int
    stride: int = 1
    padding: int = 0
    towers: bool = False  # split into the two towers (conv2, conv4, conv5 of the paper)
    norm: bool = False  # LRN after the activation (conv1, conv2)
    pool: int | None = None  # max-pool after, with this padding; None: no pool


class Blocks:
    """The layers every network repeats, configured once from its options."""

    def __init__(self, o: NetworkOptions) -> None:
        self.o = o

    def act(self) -> nn.Module:
        # In-place ReLU saves one activation-sized buffer per layer; tanh/sigmoid have no such form.
        if self.o.activation == "relu":
            return nn.ReLU(inplace=True)
        return ACTIVATIONS[self.o.activation]()

    def norm(self, relu: bool = False) -> list[nn.Module]:
        if not self.o.lrn:
            return []
        paper = {**LRN_PAPER, "alpha": self.o.lrn_alpha}
        return [LocalResponseNorm(**paper, formula=self.o.lrn_formula, relu=relu)]

    def act_before_norm(self) -> tuple[nn.Module, bool]:
        """The activation of a row whose LRN follows it directly, and whether the LRN applies
        it: ReLU goes into the LRN's pass (the same numbers, and one pass less over conv1's and
        conv2's maps forward, three backward), any other activation stays a layer of its own."""
        if self.o.lrn and self.o.activation == "relu":
            return ReLUInLRN(), True
        return self.act(), False

    def pool(self, padding: int = 0) -> nn.Module:
        kernel, stride = POOLINGS[self.o.pooling]
        return nn.MaxPool2d(kernel, stride, padding=padding if kernel > 2 else 0)

    def conv(self, in_channels: int, row: Conv) -> nn.Conv2d:
        groups = 2 if row.towers and self.o.two_towers else 1
        return nn.Conv2d(in_channels, row.width, row.kernel, row.stride, row.padding, groups=groups)

    def classifier(self, features: int, hidden: int, placement: str) -> nn.Sequential:
        """fc6, fc7 (each followed by the activation) and fc8, with dropout where ``placement``
        (one of DROPOUT_PLACEMENTS) puts it. fc6, fc7 and fc8 sit at indices 1, 4 and 6 in
        either placement, torchvision's layout, so the state-dict keys are the same and its
        weights load into alexnet-owt: the paper's order leaves slot 0 empty and gives slot 5
        fc7's activation and its dropout together. Dropout on fc6's outputs is slot 3 in both."""
        if placement == "paper":
            before_fc6, after_fc7 = nn.Identity(), nn.Sequential(self.act(), self.drop())
        else:
            before_fc6, after_fc7 = self.drop(), self.act()
        return nn.Sequential(
            before_fc6,
            nn.Linear(features, hidden),  # fc6
            self.act(),
            self.drop(),
            nn.Linear(hidden, hidden),  # fc7
            after_fc7,
            nn.Linear(hidden, self.o.num_classes),  # fc8
        )

    def drop(self) -> nn.Dropout:
        return nn.Dropout(self.o.dropout)


def feature_stack(rows: Sequence[Conv], blocks: Blocks, *, pool_before_norm: bool = False):
    """The layers of ``rows`` in order; ``pool_before_norm`` is cuda-convnet's CIFAR order."""
    layers: list[nn.Module] = []
    channels = blocks.o.in_channels
    if blocks.o.two_towers:  # a tower layer splits both its input and its output in halves
        ins = [blocks.o.in_channels, *(r.width for r in rows)]
        if any(r.towers and (r.width % 2 or ins[i] % 2) for i, r in enumerate(rows)):
            raise UserError(f"widths: two towers need even widths into and out of conv2, conv4 and conv5, "
                             f"got {[r.width for r in rows]}")  # fmt: skip
    for row in rows:
        if row.norm and not pool_before_norm:
            act, fused = blocks.act_before_norm()
        else:
            act, fused = blocks.act(), False
        layers += [blocks.conv(channels, row), act]
        after = [] if row.pool is None else [blocks.pool(row.pool)]
        norm = blocks.norm(relu=fused) if row.norm else []
        layers += after + norm if pool_before_norm else norm + after
        channels = row.width
    return nn.Sequential(*layers)


def map_size(rows: Sequence[Conv], size: int, pooling: str) -> int:
    """The side of the last feature map for a ``size`` x ``size`` input."""
    kernel, stride = POOLINGS[pooling]
    for row in rows:
        size = (size + 2 * row.padding - row.kernel) // row.stride + 1
        if row.pool is not None:
            padding = row.pool if kernel > 2 else 0
            size = (size + 2 * padding - kernel) // stride + 1
        if size < 1:
            return 0
    return size


def initialise(model: nn.Module, scheme: str, bias_one: Sequence[nn.Module] = ()) -> None:
    """Set weights and biases of every conv and linear layer.

    ``paper``: weights N(0, 0.01); biases 1 in ``bias_one`` (conv2, conv4, conv5 and the hidden
    fully connected layers: "this initialization accelerates the early stages of learning by
    providing the ReLUs with positive inputs"), 0 elsewhere (section 5).
    ``kaiming``: He-normal weights, zero biases, and N(0, 0.01) for the output layer so that the
    first logits are near zero: without that, a network without batch normalisation starts
    with logits in the tens and its first steps explode (measured: loss 7.4 at step 3 on a
    small synthetic set, NaN at lr 0.05). Trains small networks from scratch fastest.
    ``torch``: PyTorch's own defaults, left untouched.
    """
    if scheme == "torch":
        return
    ones = {id(m) for m in bias_one}
    layers = [m for m in model.modules() if isinstance(m, (nn.Conv2d, nn.Linear))]
    for module in layers:
        if scheme == "paper" or module is layers[-1]:
            nn.init.normal_(module.weight, mean=0.0, std=0.01)
        else:
            nn.init.kaiming_normal_(module.weight, nonlinearity="relu")
        if module.bias is not None:
            nn.init.constant_(module.bias, 1.0 if scheme == "paper" and id(module) in ones else 0.0)


@dataclass(frozen=True)
class Network:
    """A registered network and what it declares about itself, so no other module keeps a
    list about it: its options (and their defaults), its input, its normalisation, the notes
    ``alexnet summary`` prints under its table.

    What it builds must meet the contract the commands rely on (``models.contract_problems``
    states it; the model tests check every registered network): a ``features`` module, the
    convolutional part that ``--freeze-features`` freezes, and an output layer that is its last
    ``nn.Linear``, ``num_classes`` wide, which fine-tuning replaces."""

    name: str
    build: Callable[[NetworkOptions], nn.Module]
    options: type[NetworkOptions]
    input_size: int  # the default side of its square input
    description: str
    mean: tuple[float, ...] | None = None  # per-channel input normalisation, where it has one
    std: tuple[float, ...] | None = None
    notes: tuple[str, ...] = ()  # printed under its layer table

    @property
    def sized_by_option(self) -> bool:
        """Whether the input size is an option (the small networks) or fixed by the design."""
        return "input_size" in self.options.__dataclass_fields__
