"""The networks, each registered under a name that ``build_model`` and the command line accept.

``alexnet``        the paper's network (section 3.5, Figure 2), two towers, 60,965,224 parameters.
``alexnet-owt``    the one-tower variant with torchvision's layer layout, so its weights load.
``alexnet-small``  the same design scaled for 28x28 and 32x32 images (Fashion-MNIST, CIFAR-10).
``convnet4``       the four-layer CIFAR-10 network of Figure 1 (ReLU against tanh).

Every network takes the same switches (:class:`NetworkOptions`), so each design choice of the
paper can be ablated: ``activation`` (relu, tanh, sigmoid), ``lrn`` on/off (k=2, n=5,
alpha=1e-4, beta=0.75), ``pooling`` overlapping (3x3, stride 2) or non-overlapping (2x2,
stride 2), ``dropout``, ``two_towers`` (conv2, conv4 and conv5 see only their own half of the
previous layer, as when the network was split over two GPUs), ``num_classes``, ``in_channels``
and ``init``.
"""

from __future__ import annotations

import dataclasses
from typing import Any

from torch import nn

from alexnet.errors import UserError
from alexnet.models import alexnet as _alexnet
from alexnet.models import convnet4 as _convnet4
from alexnet.models.alexnet import AlexNet
from alexnet.models.blocks import Network, NetworkOptions
from alexnet.models.convnet4 import ConvNet4
from alexnet.settings import build

NETWORKS: dict[str, Network] = {n.name: n for n in (*_alexnet.NETWORKS, _convnet4.NETWORK)}


def __getattr__(name: str):
    if name == "MODELS":  # the registry's older name, kept for code written against it
        import warnings

        warnings.warn("alexnet.models.MODELS is now NETWORKS", DeprecationWarning, stacklevel=2)
        return NETWORKS
    raise AttributeError(f"module 'alexnet.models' has no attribute {name!r}")


def network(name: str) -> Network:
    """The registered network ``name``; an unknown name lists the valid ones."""
    if name not in NETWORKS:
        raise UserError(f"unknown network {name!r}; valid: {', '.join(NETWORKS)}")
    return NETWORKS[name]


def model_options(name: str) -> list[str]:
    """The option names a registered network accepts."""
    return [f.name for f in dataclasses.fields(network(name).options)]


def check_options(name: str, options: dict[str, Any], where: str = "") -> NetworkOptions:
    """``options`` as the network's typed options; unknown names and bad values are one-line
    errors naming the option (``where`` prefixes it, e.g. ``model.options``)."""
    info = network(name)
    unknown = sorted(set(options) - set(model_options(name)))
    if unknown:
        raise UserError(
            f"unknown option(s) {', '.join(f'{where}.{u}' if where else u for u in unknown)} "
            f"for {name}; valid: {', '.join(model_options(name))}"
        )
    return build(info.options, options, where)


def output_layer(model: nn.Module) -> str:
    """The name of a network's output layer (fc8: its last linear layer), whose input is the
    last hidden layer's output and whose width is the class count."""
    return [name for name, m in model.named_modules() if isinstance(m, nn.Linear)][-1]


def contract_problems(model: nn.Module, num_classes: int) -> list[str]:
    """What ``model`` lacks of the contract every registered network meets (blocks.Network):
    a ``features`` module and an output layer that is its last ``nn.Linear``, ``num_classes``
    wide. Empty where it meets it."""
    problems = []
    if not isinstance(getattr(model, "features", None), nn.Module):
        problems.append("no features module (the convolutional part --freeze-features freezes)")
    linears = [m for m in model.modules() if isinstance(m, nn.Linear)]
    if not linears or linears[-1].out_features != num_classes:
        problems.append(f"its last nn.Linear is not the output layer of {num_classes} classes")
    return problems


def build_model(name: str, **options: Any) -> nn.Module:
    """Build a registered network; unknown names or options fail with the valid ones listed."""
    return network(name).build(check_options(name, options))


__all__ = [
    "MODELS",
    "NETWORKS",
    "AlexNet",
    "ConvNet4",
    "Network",
    "NetworkOptions",
    "build_model",
    "check_options",
    "contract_problems",
    "model_options",
    "network",
    "output_layer",
]
