"""``alexnet lrn-divisor``: how much each LRN layer of a network divides its activations by.

Section 3.3's normalisation is b = a / d with the divisor d = (k + alpha * sum a^2)^beta over a
window of n = 5 channels, k = 2, alpha = 1e-4, beta = 0.75. Where the activations are small,
alpha times the sum of five squares is nothing beside k, and d is the constant 2^0.75 = 1.682:
LRN then only divides, and normalises nothing. Whether it does more depends on the scale of
the activations, and so on the scale of the input: the paper fed pixel values 0-255 minus the
mean image, sixty times the unit-scale inputs most code feeds.

This reports d's distribution at every LRN layer (percentiles over images, positions and
channels, from a uniform sample of a million values per layer; the least and greatest exact), for both conventions of alpha: the paper's as printed ("paper": alpha times the
sum) and cuda-convnet's, Caffe's and torch's ("torch": alpha / n times the sum), whichever
the network itself uses. A network is a trained one (any file ``alexnet predict`` reads), its
images prepared as it was trained, or a registered network at its initialisation, fed at the
paper's scale or at unit scale.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from alexnet.config import recipe_from_dict
from alexnet.errors import UserError
from alexnet.inference.predict import file_maker, read_image
from alexnet.inference.trained import Trained, load_trained
from alexnet.inference.views import views_of
from alexnet.models import NETWORKS, build_model, network
from alexnet.models.alexnet import IMAGENET_MEAN, IMAGENET_STD
from alexnet.models.weights import PUBLISHED
from alexnet.ops.lrn import FORMULAS, LocalResponseNorm

PERCENTILES = (0, 1, 5, 25, 50, 75, 95, 99, 100)
SCALES = ("paper", "unit")
STORED_SIDE = 256  # networks of the paper's size see a crop of images stored at 256 (prepare)


@dataclass
class LayerDivisors:
    """One LRN layer's divisor percentiles under each convention of alpha."""

    layer: str
    channels: int
    used: str  # the convention the network computes with
    percentiles: dict[str, list[float]]  # formula -> the values at PERCENTILES


def initialised(arch: str, scale: str, seed: int = 0) -> Trained:
    """Registered network ``arch`` at its initialisation (``seed``), with images prepared as
    the paper's (``scale="paper"``: ImageNet's per-channel mean subtracted from values 0-255,
    nothing divided; no training set, so no mean image) or at unit scale (that mean, then
    ImageNet's per-channel deviation divided)."""
    if scale not in SCALES:
        raise UserError(f"--scale {scale}: choose {' or '.join(SCALES)}")
    info = network(arch)
    stored = info.input_size >= 200  # the paper's size: a crop of a stored image, as trained
    std = [1 / 255] * 3 if scale == "paper" else list(IMAGENET_STD)
    table = {"name": f"{arch}-initialised", "seed": seed, "model": {"arch": arch},
             "data": {"source": "store" if stored else "imagefolder", "channels": 3,
                      "image_size": info.input_size, "mean": list(IMAGENET_MEAN), "std": std}}  # fmt: skip
    recipe = recipe_from_dict(table, f"{arch} at initialisation")
    torch.manual_seed(seed)
    model = build_model(arch).eval()
    classes = [str(i) for i in range(info.options().num_classes)]
    where = Path(f"{arch} at initialisation (seed {seed})")
    return Trained(where, model, recipe, classes, classes, None, STORED_SIDE if stored else None)


def open_network(name: str, scale: str | None, seed: int | None = None) -> Trained:
    """A trained network from a file, run folder or published name; else a registered
    network's name, at its initialisation (``scale`` and ``seed`` apply to those alone). A
    file or folder of a network's name in the current folder is taken as the file."""
    if name in NETWORKS and not Path(name).exists():
        return initialised(name, scale or "paper", 0 if seed is None else seed)
    path = Path(name)
    # (a broken link, or a path under a file, is said by load_trained)
    if name not in PUBLISHED and not os.path.lexists(path) and not path.parent.is_file():
        raise UserError(f"{name}: neither a run, checkpoint or weights file nor a network name "
                        f"({', '.join(NETWORKS)}) or published weights "
                        f"({', '.join(PUBLISHED)})")  # fmt: skip
    if scale is not None:
        raise UserError(f"--scale applies to a network at initialisation ({', '.join(NETWORKS)}); "
                         f"{name} is taken as a trained network, whose images are prepared as "
                         "it was trained")  # fmt: skip
    if seed is not None:
        raise UserError(f"--seed applies to a network at initialisation ({', '.join(NETWORKS)}); "
                        f"{name} is taken as a trained network, whose weights are its "
                        "training's")  # fmt: skip
    return load_trained(name)


def window_sums(a: torch.Tensor, size: int) -> torch.Tensor:
    """sum of a^2 over the ``size`` channels around each channel, as LRN computes it: the
    window of channel c runs from c - size // 2 to c + (size - 1) // 2, clipped at the ends."""
    sq = F.pad(a.square(), (0, 0, 0, 0, size // 2, (size - 1) // 2))
    return sq.unfold(1, size, 1).sum(-1)


def lrn_input(module: LocalResponseNorm, x: torch.Tensor) -> torch.Tensor:
    """The paper's a: ``x`` after the ReLU that a fused LRN applies itself (float64)."""
    return x.double().relu() if module.relu else x.double()


def divisor(module: LocalResponseNorm, sums: torch.Tensor | np.ndarray, formula: str):
    """d for window sums ``sums`` under ``formula``'s alpha (the paper's, or alpha / n)."""
    alpha = module.alpha / module.size if formula == "torch" else module.alpha
    return (module.k + alpha * sums) ** module.beta


def divisors(module: LocalResponseNorm, x: torch.Tensor, formula: str) -> torch.Tensor:
    """The divisor d at every activation of ``module``'s input ``x`` (float64)."""
    return divisor(module, window_sums(lrn_input(module, x), module.size), formula)


class Sample:
    """A uniform sample of at most ``size`` of the values it is shown, and their exact least
    and greatest: each value gets a random key and the ``size`` smallest keys are kept, so
    memory stays bounded however many images pass (a layer of the paper's network has 290,400
    values an image). With a million values a percentile is off by at most about 0.1 of a
    percentile point."""

    def __init__(self, size: int, seed: int = 0) -> None:
        self.size, self.rng = size, np.random.default_rng(seed)
        self.keys, self.values = np.empty(0), np.empty(0)
        self.low, self.high, self.seen = np.inf, -np.inf, 0

    def add(self, values: np.ndarray) -> None:
        values = values.ravel()
        self.low, self.high = min(self.low, values.min()), max(self.high, values.max())
        self.seen += values.size
        keys = np.concatenate([self.keys, self.rng.random(values.size)])
        values = np.concatenate([self.values, values])
        if keys.size > self.size:
            kept = np.argpartition(keys, self.size)[: self.size]
            keys, values = keys[kept], values[kept]
        self.keys, self.values = keys, values

    def percentiles(self, points: tuple[int, ...]) -> np.ndarray:
        found = np.percentile(self.values, points)
        found[[i for i, p in enumerate(points) if p == 0]] = self.low
        found[[i for i, p in enumerate(points) if p == 100]] = self.high
        return found


def measure(
    net: Trained, paths: list[Path], batch: int = 16, sample: int = 1_000_000
) -> tuple[list[LayerDivisors], list[str]]:
    """Divisor percentiles at every LRN layer over ``paths`` (centre views, ``batch`` at a
    time), and one line for each file that could not be read. d grows with the window sum
    under either alpha, so the sums' percentiles give d's under both."""
    layers = [(n, m) for n, m in net.model.named_modules() if isinstance(m, LocalResponseNorm)]
    if not layers:
        raise UserError(f"{net.path}: the network has no LRN layer (model.options.lrn is false)")
    sums = {n: Sample(sample) for n, _ in layers}
    channels: dict[str, int] = {}

    def keep(name: str):
        def hook(module: LocalResponseNorm, args: tuple) -> None:
            channels[name] = args[0].shape[1]
            sums[name].add(window_sums(lrn_input(module, args[0]), module.size).numpy())

        return hook

    hooks = [m.register_forward_pre_hook(keep(n)) for n, m in layers]
    try:
        skipped, read = run_images(net, paths, batch)
    finally:
        for h in hooks:
            h.remove()
    if not read:
        raise UserError("no image could be read: " + "; ".join(skipped))
    rows = []
    for i, (name, module) in enumerate(layers):
        points = sums[name].percentiles(PERCENTILES)
        found = {f: divisor(module, points, f).tolist() for f in FORMULAS}
        rows.append(LayerDivisors(f"lrn{i + 1} ({name})", channels[name], module.formula, found))
    return rows, skipped


def run_images(net: Trained, paths: list[Path], batch: int) -> tuple[list[str], int]:
    """Every readable image of ``paths`` through ``net`` (centre view, as it was trained to
    see them), ``batch`` at a time; the files that could not be read, and how many were."""
    maker, view = file_maker(net), views_of(net, 1)[0]
    skipped, read = [], 0
    for start in range(0, len(paths), batch):
        images = []
        for path in paths[start : start + batch]:
            try:
                images.append(read_image(net, path))
            except ValueError as exc:
                skipped.append(f"{path}: {exc}")
        if images:
            x = maker.view(torch.stack(images), view, torch.device("cpu"), False)
            with torch.no_grad():
                net.model.eval()(x)
            read += len(images)
    return skipped, read


def describe(net: Trained, images: int) -> str:
    raw = all(abs(s * 255 - 1) < 1e-6 for s in net.recipe.data.std)
    scale = ("the paper's scale (values 0-255 minus the mean)" if raw
             else "unit scale (minus the mean, divided by the deviation)")  # fmt: skip
    return f"{net.path}: {images} image(s), inputs at {scale}"


def format_table(rows: list[LayerDivisors], heading: str) -> str:
    """The percentiles as a table; the network's own convention is marked with *."""
    head = f"{'layer':24s} {'alpha':9s}" + "".join(f"{f'p{p}':>8s}" for p in PERCENTILES)
    lines = [heading, "divisor d = (k + alpha * sum of a^2 over 5 channels)^0.75; a constant "
             f"2^0.75 = {2**0.75:.4f} divides and normalises nothing", head, "-" * len(head)]  # fmt: skip
    for row in rows:
        for formula in FORMULAS[::-1]:  # the paper's first
            label = ("alpha" if formula == "paper" else "alpha/n") + (
                "*" if formula == row.used else ""
            )
            values = "".join(f"{v:8.4f}" for v in row.percentiles[formula])
            lines.append(f"{row.layer:24s} {label:9s}{values}")
    lines.append("* the convention the network computes with (model.options.lrn_formula)")
    return "\n".join(lines)
