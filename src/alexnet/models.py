"""The networks, each registered under a name that ``build_model`` and the command line accept.

``alexnet``        the paper's network (section 3.5, Figure 2), two towers, 60,965,224 parameters.
``alexnet-owt``    the one-tower variant with torchvision's layer layout, so its weights load.
``alexnet-small``  the same design scaled for 28x28 and 32x32 images (Fashion-MNIST, CIFAR-10).
``convnet4``       the four-layer CIFAR-10 network of Figure 1 (ReLU against tanh).

The input of ``alexnet`` is 3x227x227. The paper says 224x224, but 224 cannot give conv1's 55x55
output with an 11x11 kernel at stride 4: (227 - 11) / 4 + 1 = 55, while 224 gives 54 (and a 5x5
map after conv5, not 6x6). Every reproduction that keeps the paper's layer sizes feeds 227.

Every network takes the same switches, so each design choice of the paper can be ablated:
``activation`` (relu, tanh, sigmoid), ``lrn`` on/off (k=2, n=5, alpha=1e-4, beta=0.75),
``pooling`` overlapping (3x3, stride 2) or non-overlapping (2x2, stride 2), ``dropout``,
``two_towers`` (conv2, conv4 and conv5 see only their own half of the previous layer, as
when the network was split over two GPUs), ``num_classes``, ``in_channels`` and ``init``.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Sequence

import torch
from torch import nn

from alexnet.lrn import FORMULAS, LocalResponseNorm

ACTIVATIONS: dict[str, type[nn.Module]] = {"relu": nn.ReLU, "tanh": nn.Tanh, "sigmoid": nn.Sigmoid}
POOLINGS: dict[str, tuple[int, int]] = {"overlapping": (3, 2), "non-overlapping": (2, 2)}
INITS: tuple[str, ...] = ("paper", "kaiming", "torch")

# Section 3.3: k = 2, n = 5, alpha = 1e-4, beta = 0.75.
LRN_PAPER = {"size": 5, "alpha": 1e-4, "beta": 0.75, "k": 2.0}


def _check_choice(what: str, value: str, valid: Sequence[str]) -> None:
    if value not in valid:
        raise ValueError(f"unknown {what} {value!r}; valid: {', '.join(valid)}")


class Blocks:
    """Small factory for the layers every network repeats, configured once per network."""

    def __init__(self, activation: str, lrn: bool, lrn_formula: str, pooling: str) -> None:
        _check_choice("activation", activation, list(ACTIVATIONS))
        _check_choice("pooling", pooling, list(POOLINGS))
        _check_choice("LRN formula", lrn_formula, FORMULAS)
        self.activation, self.lrn, self.lrn_formula, self.pooling = (
            activation,
            lrn,
            lrn_formula,
            pooling,
        )

    def act(self) -> nn.Module:
        # In-place ReLU saves one activation-sized buffer per layer; tanh/sigmoid have no such form.
        return (
            nn.ReLU(inplace=True) if self.activation == "relu" else ACTIVATIONS[self.activation]()
        )

    def norm(self) -> list[nn.Module]:
        return [LocalResponseNorm(**LRN_PAPER, formula=self.lrn_formula)] if self.lrn else []

    def pool(self, padding: int = 0) -> nn.Module:
        kernel, stride = POOLINGS[self.pooling]
        return nn.MaxPool2d(kernel, stride, padding=padding if kernel > 2 else 0)

    def classifier(
        self, features: int, hidden: int, num_classes: int, dropout: float
    ) -> nn.Sequential:
        """fc6, fc7 (each after dropout, each followed by the activation) and fc8; the index
        layout is torchvision's, so its AlexNet weights load into alexnet-owt."""
        return nn.Sequential(
            nn.Dropout(dropout),
            nn.Linear(features, hidden),  # fc6
            self.act(),
            nn.Dropout(dropout),
            nn.Linear(hidden, hidden),  # fc7
            self.act(),
            nn.Linear(hidden, num_classes),  # fc8
        )


def initialise(model: nn.Module, scheme: str, bias_one: Sequence[nn.Module] = ()) -> None:
    """Set weights and biases of every conv and linear layer.

    ``paper``: weights N(0, 0.01); biases 1 in ``bias_one`` (conv2, conv4, conv5 and the hidden
    fully connected layers: "this initialization accelerates the early stages of learning by
    providing the ReLUs with positive inputs"), 0 elsewhere (section 5).
    ``kaiming``: He-normal weights, zero biases, and N(0, 0.01) for the output layer so that the
    first logits are near zero: without that, a network without batch normalisation starts
    with logits in the tens and its first steps explode (measured: loss 7.4 at step 3 on a
    small synthetic set, NaN at lr 0.05). Trains small networks from scratch fastest. ``torch``: PyTorch's own defaults, left untouched.
    """
    _check_choice("init", scheme, INITS)
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


def initialise_alexnet(model: nn.Module, scheme: str) -> None:
    """:func:`initialise` with the paper's unit biases: conv2, conv4, conv5, fc6 and fc7."""
    conv = [m for m in model.features if isinstance(m, nn.Conv2d)]
    fc = [m for m in model.classifier if isinstance(m, nn.Linear)]
    initialise(model, scheme, bias_one=[conv[1], conv[3], conv[4], fc[0], fc[1]])


class AlexNet(nn.Module):
    """The network of the paper: five conv layers, three fully connected, 227x227 input."""

    input_size = 227

    def __init__(
        self,
        num_classes: int = 1000,
        in_channels: int = 3,
        activation: str = "relu",
        lrn: bool = True,
        lrn_formula: str = "paper",
        pooling: str = "overlapping",
        dropout: float = 0.5,
        two_towers: bool = True,
        init: str = "paper",
    ) -> None:
        super().__init__()
        b = Blocks(activation, lrn, lrn_formula, pooling)
        towers = 2 if two_towers else 1
        self.features = nn.Sequential(
            nn.Conv2d(in_channels, 96, kernel_size=11, stride=4),  # conv1: 55x55x96
            b.act(),
            *b.norm(),
            b.pool(),  # 27x27
            nn.Conv2d(96, 256, kernel_size=5, padding=2, groups=towers),  # conv2: 27x27x256
            b.act(),
            *b.norm(),
            b.pool(),  # 13x13
            nn.Conv2d(256, 384, kernel_size=3, padding=1),  # conv3 sees both towers
            b.act(),
            nn.Conv2d(384, 384, kernel_size=3, padding=1, groups=towers),  # conv4
            b.act(),
            nn.Conv2d(384, 256, kernel_size=3, padding=1, groups=towers),  # conv5: 13x13x256
            b.act(),
            b.pool(),  # 6x6x256 = 9216
        )
        self.classifier = b.classifier(256 * 6 * 6, 4096, num_classes, dropout)
        initialise_alexnet(self, init)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.shape[-2:] != (self.input_size, self.input_size):
            raise ValueError(
                f"alexnet takes {self.input_size}x{self.input_size} inputs, got "
                f"{x.shape[-2]}x{x.shape[-1]}: the paper's '224' gives a 54x54 conv1 map, not 55x55;"
                " crop or resize to 227 (or use alexnet-owt, which pools adaptively)"
            )
        return self.classifier(torch.flatten(self.features(x), 1))


class AlexNetOWT(nn.Module):
    """One-tower AlexNet ("one weird trick", Krizhevsky 2014) in torchvision's exact layout.

    With the default options its state_dict keys and shapes equal torchvision's ``alexnet``,
    so torchvision's published weights load unchanged. Adding LRN or two towers changes the
    layer list, and then those weights no longer fit.
    """

    def __init__(
        self,
        num_classes: int = 1000,
        in_channels: int = 3,
        activation: str = "relu",
        lrn: bool = False,
        lrn_formula: str = "paper",
        pooling: str = "overlapping",
        dropout: float = 0.5,
        two_towers: bool = False,
        init: str = "torch",
    ) -> None:
        super().__init__()
        b = Blocks(activation, lrn, lrn_formula, pooling)
        towers = 2 if two_towers else 1
        self.features = nn.Sequential(
            nn.Conv2d(in_channels, 64, kernel_size=11, stride=4, padding=2),
            b.act(),
            *b.norm(),
            b.pool(),
            nn.Conv2d(64, 192, kernel_size=5, padding=2, groups=towers),
            b.act(),
            *b.norm(),
            b.pool(),
            nn.Conv2d(192, 384, kernel_size=3, padding=1),
            b.act(),
            nn.Conv2d(384, 256, kernel_size=3, padding=1, groups=towers),
            b.act(),
            nn.Conv2d(256, 256, kernel_size=3, padding=1, groups=towers),
            b.act(),
            b.pool(),
        )
        self.avgpool = nn.AdaptiveAvgPool2d((6, 6))
        self.classifier = b.classifier(256 * 6 * 6, 4096, num_classes, dropout)
        initialise_alexnet(self, init)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.avgpool(self.features(x))
        return self.classifier(torch.flatten(x, 1))


class AlexNetSmall(nn.Module):
    """AlexNet's design for 28x28 and 32x32 images: 5 conv + 3 fully connected layers.

    conv1 is 5x5 at stride 1 (an 11x11/4 kernel would leave nothing of a 28x28 image), the two
    normalised and pooled stages halve the map twice (28 -> 14 -> 7, 32 -> 16 -> 8), conv3-5
    are 3x3 as in the paper, and the last pool leaves 3x3. ``widths`` are the five conv widths,
    ``hidden`` the width of fc6 and fc7.
    """

    def __init__(
        self,
        num_classes: int = 10,
        in_channels: int = 3,
        activation: str = "relu",
        lrn: bool = True,
        lrn_formula: str = "paper",
        pooling: str = "overlapping",
        dropout: float = 0.5,
        two_towers: bool = True,
        init: str = "kaiming",
        widths: Sequence[int] = (64, 128, 192, 192, 128),
        hidden: int = 1024,
        input_size: int = 32,
    ) -> None:
        super().__init__()
        if len(widths) != 5:
            raise ValueError(f"alexnet-small needs 5 conv widths, got {list(widths)}")
        towers = 2 if two_towers else 1
        if two_towers and any(w % 2 for w in widths):
            raise ValueError(f"two towers need even conv widths, got {list(widths)}")
        b = Blocks(activation, lrn, lrn_formula, pooling)
        c1, c2, c3, c4, c5 = widths
        self.features = nn.Sequential(
            nn.Conv2d(in_channels, c1, kernel_size=5, padding=2),  # conv1
            b.act(),
            *b.norm(),
            b.pool(padding=1),  # 28 -> 14, 32 -> 16
            nn.Conv2d(c1, c2, kernel_size=5, padding=2, groups=towers),  # conv2
            b.act(),
            *b.norm(),
            b.pool(padding=1),  # 14 -> 7, 16 -> 8
            nn.Conv2d(c2, c3, kernel_size=3, padding=1),  # conv3 sees both towers
            b.act(),
            nn.Conv2d(c3, c4, kernel_size=3, padding=1, groups=towers),  # conv4
            b.act(),
            nn.Conv2d(c4, c5, kernel_size=3, padding=1, groups=towers),  # conv5
            b.act(),
            b.pool(),  # 7 -> 3, 8 -> 3
        )
        with torch.no_grad():
            flat = self.features(torch.zeros(1, in_channels, input_size, input_size)).numel()
        self.classifier = b.classifier(flat, hidden, num_classes, dropout)
        initialise_alexnet(self, init)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(torch.flatten(self.features(x), 1))


class ConvNet4(nn.Module):
    """The four-layer CIFAR-10 network of Figure 1: three conv layers with pooling, one FC.

    The paper gives no layer table for it; this follows cuda-convnet's CIFAR-10 network of the
    same depth (32, 32 and 64 5x5 filters, each followed by 3x3/2 pooling). Figure 1 trains it
    with ReLU and with tanh, without any regularisation, hence no LRN and no dropout here by
    default.
    """

    def __init__(
        self,
        num_classes: int = 10,
        in_channels: int = 3,
        activation: str = "relu",
        lrn: bool = False,
        lrn_formula: str = "paper",
        pooling: str = "overlapping",
        dropout: float = 0.0,
        two_towers: bool = False,
        init: str = "kaiming",
        input_size: int = 32,
    ) -> None:
        super().__init__()
        towers = 2 if two_towers else 1
        b = Blocks(activation, lrn, lrn_formula, pooling)
        self.features = nn.Sequential(
            nn.Conv2d(in_channels, 32, kernel_size=5, padding=2),
            b.act(),
            b.pool(padding=1),  # 32 -> 16
            *b.norm(),
            nn.Conv2d(32, 32, kernel_size=5, padding=2, groups=towers),
            b.act(),
            b.pool(padding=1),  # 16 -> 8
            *b.norm(),
            nn.Conv2d(32, 64, kernel_size=5, padding=2, groups=towers),
            b.act(),
            b.pool(padding=1),  # 8 -> 4
        )
        with torch.no_grad():
            flat = self.features(torch.zeros(1, in_channels, input_size, input_size)).numel()
        self.classifier = nn.Sequential(nn.Dropout(dropout), nn.Linear(flat, num_classes))
        initialise(self, init)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(torch.flatten(self.features(x), 1))


MODELS: dict[str, Callable[..., nn.Module]] = {
    "alexnet": AlexNet,
    "alexnet-owt": AlexNetOWT,
    "alexnet-small": AlexNetSmall,
    "convnet4": ConvNet4,
}


def model_options(name: str) -> list[str]:
    """The keyword options a registered network accepts."""
    return list(inspect.signature(MODELS[name]).parameters)


def build_model(name: str, **options) -> nn.Module:
    """Build a registered network; unknown names or options fail with the valid ones listed."""
    if name not in MODELS:
        raise ValueError(f"unknown network {name!r}; valid: {', '.join(MODELS)}")
    valid = model_options(name)
    unknown = sorted(set(options) - set(valid))
    if unknown:
        raise ValueError(
            f"unknown option(s) {', '.join(unknown)} for {name}; valid: {', '.join(valid)}"
        )
    if "dropout" in options and not 0.0 <= float(options["dropout"]) < 1.0:
        raise ValueError(f"dropout must be in [0, 1), got {options['dropout']}")
    return MODELS[name](**options)
