"""A trained network in files that other tools read: ONNX, safetensors, or a torch.export
program (``.pt2``). ``alexnet export CHECKPOINT OUT --format onnx|safetensors|pt2``.

* ``onnx``: the network as an ONNX graph (dynamic batch), for ONNX Runtime and the many tools
  that read ONNX. Its metadata says how to preprocess an image (classes, input size, mean and
  std). After writing, the file is run in ONNX Runtime and compared with PyTorch.
* ``safetensors``: the weights, the training set's pixel statistics and, in the metadata, the
  recipe, classes and names: everything :func:`alexnet.inference.trained.load_trained` needs, in a format
  that cannot run code when read (:func:`read_safetensors` reads it back).
* ``pt2``: the network as a ``torch.export`` program (dynamic batch), saved with
  ``torch.export.save``. It needs only PyTorch to run, not this package: every operation in it
  is one of PyTorch's own, so ``torch.export.load(path).module()(x)`` answers wherever a PyTorch
  that reads the saved program (the same version or a newer one) is installed.

The local response normalisation (section 3.3 of the paper) has its own fast kernels here
(:mod:`alexnet.ops.lrn`), which neither ONNX nor a saved program knows. While exporting, each
:class:`~alexnet.ops.lrn.LocalResponseNorm` is replaced by an export-time module that computes the
same values (:mod:`alexnet.ops.lrn_export`):

* for ONNX, a custom operator ``alexnet::lrn`` that the exporter translates into ONNX's own
  ``LRN`` (preceded by a ``Relu`` where the LRN applies the ReLU itself), so runtimes use their
  LRN kernel instead of a dozen unrolled operations;
* for ``pt2``, and for an even window size in ONNX, the formula in plain PyTorch arithmetic.

ONNX's LRN divides alpha by the window size: y = x / (bias + alpha / size * square_sum) ** beta,
as ``torch.nn.LocalResponseNorm`` and cuda-convnet do. The paper's formula (``formula="paper"``,
which the networks use) multiplies the plain sum by alpha, so the ONNX alpha is the paper's alpha
times n: 1e-4 * 5 = 5e-4 for the paper's layer; with ``formula="torch"`` it is the module's alpha
unchanged (``LocalResponseNorm.torch_alpha``). ONNX's window for an even size sits one channel to the other side of PyTorch's, and
ONNX Runtime refuses even sizes, which is why those are exported as plain arithmetic.
"""

from __future__ import annotations

import contextlib
import io
import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from alexnet.files import shell_word, text_name, written
from alexnet.inference.safetensors_file import (
    INSTALL,
    ExportError,
    need,
    read_safetensors,
    write_safetensors,
)
from alexnet.inference.trained import Trained
from alexnet.ops.lrn_export import _onnx_translations, exportable
from alexnet.processes import deferred_signals

FORMATS: dict[str, str] = {"onnx": ".onnx", "safetensors": ".safetensors", "pt2": ".pt2"}
MIN_OPSET = 18  # torch's exporter translates into opset 18 or newer (converting down can fail)
EXAMPLE_BATCH = 2  # traced at 2: torch.export would take a dimension of size 1 for a constant
TOLERANCE = 1e-4  # relative to the largest logit, float32


@dataclass
class Check:
    """How far the exported network's outputs are from PyTorch's, on random inputs."""

    against: str  # what ran the exported file
    batches: tuple[int, ...]
    max_diff: float  # the largest absolute difference of a logit
    scale: float  # the largest absolute logit PyTorch gave

    @property
    def relative(self) -> float:
        return self.max_diff / max(self.scale, 1e-30)

    @property
    def ok(self) -> bool:
        return self.relative <= TOLERANCE

    def line(self) -> str:
        sizes = " and ".join(str(b) for b in self.batches)
        return (f"{self.against} vs PyTorch, batch {sizes}: max |difference| "
                f"{self.max_diff:.3g} (largest |logit| {self.scale:.3g})")  # fmt: skip


@dataclass
class Exported:
    path: Path
    format: str
    input_shape: tuple[int, int, int]  # (C, H, W); the batch is dynamic
    check: Check | None  # None: nothing could check it (a package is missing)
    note: str = ""  # why there is no check


# --------------------------------------------------------------------------------------------
# Helpers


@dataclass(frozen=True)
class Probe:
    """The random inputs a written file is checked with: their shape and deviation."""

    shape: tuple[int, int, int]
    spread: float = 1.0


def input_shape(trained: Trained) -> tuple[int, int, int]:
    """(channels, height, width) of one input of ``trained``'s network."""
    conv = next(m for m in trained.model.modules() if isinstance(m, nn.Conv2d))
    size = trained.input_size or getattr(trained.model, "input_size", None)
    if not size:
        raise ExportError(f"{trained.path}: its recipe gives no input size (data.image_size)")
    return conv.in_channels, size, size


def inputs(shape: tuple[int, int, int], batch: int, spread: float = 1.0) -> torch.Tensor:
    """A normalised input of ``batch`` images, the same each time (a seeded generator), with
    the deviation ``spread``."""
    generator = torch.Generator().manual_seed(batch)
    return torch.randn(batch, *shape, generator=generator) * spread


def input_spread(trained: Trained) -> float:
    """How widely ``trained``'s inputs vary once normalised: a photograph's pixels vary by
    about a quarter of their range (ImageNet's deviations are 0.22-0.23), divided by the
    recipe's std: about 1 at unit scale, 64 at the paper's 0-255 scale, where LRN's
    normalisation acts and an export that computed it wrongly would show."""
    std = trained.recipe.data.std
    return 0.25 / (sum(std) / len(std)) if std else 1.0


def compare(run: Callable[[torch.Tensor], torch.Tensor], model: nn.Module,
            probe: Probe, batches: tuple[int, ...], against: str) -> Check:  # fmt: skip
    """``run``'s outputs against ``model``'s for random inputs of each batch size."""
    worst, scale = 0.0, 0.0
    with torch.inference_mode():
        for batch in batches:
            x = inputs(probe.shape, batch, probe.spread)
            expected = model(x).float()
            got = torch.as_tensor(run(x)).float()
            if got.shape != expected.shape:
                raise RuntimeError(f"{against} gave shape {tuple(got.shape)}, PyTorch "
                                   f"{tuple(expected.shape)}")  # fmt: skip
            worst = max(worst, float((got - expected).abs().max()))
            scale = max(scale, float(expected.abs().max()))
    return Check(against, batches, worst, scale)


def _written(out: Path, model: nn.Module,
             overwrite: bool) -> contextlib.AbstractContextManager[Path]:  # fmt: skip
    """files.written for a network's file: refused at once where the disk has not room for
    its weights and the program or graph beside them."""
    weights = sum(p.numel() * p.element_size() for p in model.parameters())
    # The graph or program beside the weights: a fifth of them, and at least 256 kB (a small
    # network's .pt2 is 135 kB over 38 kB of weights).
    return written(out, need=weights + max(weights // 5, 256 * 1024), replace=overwrite)


def metadata(trained: Trained) -> dict[str, str]:
    """What a user of an exported network needs to feed it: strings, for ONNX's metadata_props
    and the ``alexnet.json`` inside a ``.pt2``."""
    channels, size, _ = input_shape(trained)
    d = trained.recipe.data
    meta = {"arch": trained.recipe.model.arch, "classes": json.dumps(trained.classes),
            "names": json.dumps(trained.names), "input_size": str(size),
            "channels": str(channels), "normalise": d.normalise, "std": json.dumps(list(d.std)),
            "stored_size": json.dumps(trained.stored_size),
            "recipe": json.dumps(trained.recipe.to_dict())}  # fmt: skip
    scaled = "pixels / 255 (RGB)" if channels == 3 else "pixels / 255 (grey)"
    if d.normalise == "mean-image":
        meta["mean"] = ("the training set's mean image (stored_size x stored_size x channels, "
                        "in alexnet export --format safetensors as preprocessing.mean_image, "
                        "pixel units), cropped where the input is cropped")  # fmt: skip
        how = f"x = (pixels - mean image) / 255 / std per channel, {size}x{size}"
    else:
        meta["mean"] = json.dumps(list(d.mean))
        how = f"x = ({scaled} - mean) / std per channel, {size}x{size}"
    if trained.stored_size:
        how += (f", the centre of an image whose short side is scaled to {trained.stored_size} "
                f"and centre-cropped square")  # fmt: skip
    meta["preprocessing"] = f"input float32 (batch, {channels}, {size}, {size}) NCHW: {how}"
    return meta


# --------------------------------------------------------------------------------------------
# The formats


def _check_opset(opset: int | None) -> None:
    if opset is None:
        return
    newest = need("onnx").defs.onnx_opset_version()
    if not MIN_OPSET <= opset <= newest:
        raise ExportError(f"--opset {opset}: torch's ONNX exporter writes opsets {MIN_OPSET} to "
                          f"{newest} here; leave it out for the exporter's own")  # fmt: skip


def export_onnx(trained: Trained, out: Path, opset: int | None = None) -> None:
    """Write ``trained``'s network to ``out`` as ONNX: input ``image`` (batch, C, H, W) with a
    dynamic batch, output ``logits``, the preprocessing in the metadata."""
    _check_opset(opset)
    shape = input_shape(trained)
    batch = torch.export.Dim("batch", min=1)
    with exportable(trained.model, onnx=True) as model:
        program = torch.onnx.export(
            model, (inputs(shape, EXAMPLE_BATCH),), dynamo=True, external_data=False,
            opset_version=opset, input_names=["image"], output_names=["logits"],
            dynamic_shapes=({0: batch},), custom_translation_table=_onnx_translations(),
            verbose=False,
        )  # fmt: skip
    program.model.metadata_props.update(metadata(trained))
    program.model.doc_string = (f"alexnet {trained.recipe.model.arch} from {trained.path.name}; "
                                "metadata_props say how to preprocess an image")  # fmt: skip
    program.save(str(out), external_data=False)


def check_onnx(path: Path, model: nn.Module, probe: Probe,
               batches: tuple[int, ...]) -> Check:  # fmt: skip
    """Run the ONNX file in ONNX Runtime (on the CPU) and compare with ``model``."""
    ort = need("onnxruntime")
    try:
        session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    except Exception as exc:  # onnxruntime raises its own classes, none exported for catching
        first = str(exc).strip().splitlines()[0][:200]
        raise ExportError(f"onnxruntime {ort.__version__} cannot load the ONNX file written "
                          f"({first}); nothing was kept; try a lower --opset") from None  # fmt: skip

    def run(x: torch.Tensor) -> torch.Tensor:
        return torch.from_numpy(session.run(["logits"], {"image": x.numpy()})[0])

    return compare(run, model, probe, batches, f"onnxruntime {ort.__version__}")


def export_pt2(trained: Trained, out: Path) -> None:
    """Write ``trained``'s network to ``out`` as a ``torch.export`` program with a dynamic
    batch; :func:`metadata` goes in as the extra file ``alexnet.json``."""
    shape = input_shape(trained)
    batch = torch.export.Dim("batch", min=1)
    with exportable(trained.model, onnx=False) as model:
        program = torch.export.export(model, (inputs(shape, EXAMPLE_BATCH),),
                                      dynamic_shapes=({0: batch},))  # fmt: skip
    # Written to memory first, then to the file: torch's archive writer aborts the whole
    # process (exit 134, a C++ trace) when the disk fills or a signal's exception arrives
    # inside it, and through a file object the archive's inner folder is not named after the
    # temporary file. Signals wait for the archive, which takes about a second.
    archive = io.BytesIO()
    with deferred_signals():
        torch.export.save(program, archive,
                          extra_files={"alexnet.json": json.dumps(metadata(trained))})  # fmt: skip
    out.write_bytes(archive.getbuffer())


def check_pt2(path: Path, model: nn.Module, probe: Probe,
              batches: tuple[int, ...]) -> Check:  # fmt: skip
    loaded = torch.export.load(path).module()
    return compare(loaded, model, probe, batches, "torch.export.load")


def export_safetensors(trained: Trained, out: Path) -> None:
    """Write the weights, the pixel statistics and the recipe, classes, names and stored size
    (safetensors_file.py)."""
    need("safetensors")
    write_safetensors(out, trained.model.state_dict(), trained.stats, trained.recipe.to_dict(),
                      trained.classes, trained.names, trained.stored_size)  # fmt: skip


def check_safetensors(path: Path, model: nn.Module, probe: Probe,
                      batches: tuple[int, ...]) -> Check:  # fmt: skip
    """The weights read back into a network built afresh from the file's recipe, compared."""
    from alexnet.config import recipe_from_dict
    from alexnet.models import build_model

    state = read_safetensors(path)
    recipe = recipe_from_dict(state["recipe"], f"{path}: its recipe", saved=True)
    fresh = build_model(recipe.model.arch, **recipe.model.options)
    fresh.load_state_dict(state["model"])
    return compare(fresh.eval(), model, probe, batches, "the weights in a new network")


# --------------------------------------------------------------------------------------------
# The command


def format_of(out: Path, fmt: str | None) -> str:
    """The format asked for, or the one ``out``'s suffix names."""
    if fmt is None:
        fmt = next((f for f, suffix in FORMATS.items() if out.suffix.lower() == suffix), None)
        if fmt is None:
            raise ExportError(f"{out}: give --format ({', '.join(FORMATS)}), or a file name "
                              f"ending in {', '.join(FORMATS.values())}")  # fmt: skip
    if fmt not in FORMATS:
        raise ExportError(f"unknown format {fmt!r}; valid: {', '.join(FORMATS)}")
    named = next((f for f, suffix in FORMATS.items() if out.suffix.lower() == suffix), None)
    if named not in (None, fmt):  # m.onnx holding safetensors would mislead every reader
        base = out.with_suffix(
            ""
        )  # m.safetensors.onnx: m.safetensors, not m.safetensors.safetensors
        fits = base if base.suffix.lower() == FORMATS[fmt] else f"{base}{FORMATS[fmt]}"
        raise ExportError(f"{out}: the name says {named} but --format is {fmt}; name the file "
                          f"{fits}")  # fmt: skip
    return fmt


def check_request(out: Path, fmt: str | None, *, batch: int = 7, opset: int | None = None,
                  overwrite: bool = True) -> str:  # fmt: skip
    """The format of an export that can be done (checked before any work); one-line errors
    for what cannot: an unknown format, a missing folder, a missing package, a bad option,
    an existing file where ``overwrite`` is false (the command line's default: an export
    named after a run's ``best.pt`` replaced the checkpoint without a word)."""
    if out.is_dir():
        raise IsADirectoryError(f"{out}: a folder; give the name of the file to write")
    text_name(out, "the ONNX, safetensors and pt2 writers")
    if out.exists() and not out.is_file():  # --overwrite of /dev/null made it a regular file
        raise ExportError(f"{out}: not a regular file (a device, pipe or socket); write to a "
                          "file")  # fmt: skip
    if not overwrite and (out.exists() or out.is_symlink()):
        raise FileExistsError(f"{out}: already exists; give --overwrite to replace it, or "
                              "write to another name")  # fmt: skip
    if not out.parent.is_dir():
        raise FileNotFoundError(f"{out.parent}: no such folder; create it first (mkdir -p "
                                f"{shell_word(out.parent)}) or write elsewhere")  # fmt: skip
    fmt = format_of(out, fmt)
    if opset is not None and fmt != "onnx":
        raise ExportError(f"--opset {opset}: applies to --format onnx only")
    if batch < 1:
        raise ExportError(f"--batch {batch}: must be at least 1")
    if fmt == "onnx":
        if tuple(int(v) for v in torch.__version__.split(".")[:2]) < (2, 6):
            raise ExportError(f"ONNX export needs torch 2.6 or newer (this is {torch.__version__})")
        need("onnx")
        need("onnxscript")
        _check_opset(opset)
    elif fmt == "safetensors":
        need("safetensors")
    return fmt


WRITERS = {"onnx": export_onnx, "pt2": export_pt2, "safetensors": export_safetensors}
CHECKS = {"onnx": check_onnx, "pt2": check_pt2, "safetensors": check_safetensors}


def export(trained: Trained, out: Path, fmt: str | None = None, *, batch: int = 7,
           opset: int | None = None, check: bool = True, overwrite: bool = True) -> Exported:  # fmt: skip
    """Write ``trained`` to ``out`` in ``fmt`` (default: from ``out``'s suffix), then read the
    file back and compare its outputs with PyTorch's at batch 1 and ``batch`` (``check``).
    ``opset``: ONNX's (default: the exporter's own). A missing onnxruntime skips ONNX's check.
    ``overwrite`` false: an existing ``out`` is refused, also one that appears meanwhile."""
    fmt = check_request(out, fmt, batch=batch, opset=opset, overwrite=overwrite)
    shape = input_shape(trained)
    result = Exported(out, fmt, shape, None)
    if check and fmt == "onnx" and not _installed("onnxruntime"):
        result.note = f"onnxruntime is not installed, so the file was not run ({INSTALL})"
        check = False
    # Written under a temporary name and checked there: a failed check, a signal or a full
    # disk leaves nothing under OUT (an --overwrite'n file stays as it was).
    with _written(out, trained.model, overwrite) as tmp:
        WRITERS[fmt](trained, tmp, **({"opset": opset} if fmt == "onnx" else {}))
        if check:
            probe = Probe(shape, input_spread(trained))
            result.check = CHECKS[fmt](tmp, trained.model, probe, tuple(sorted({1, batch})))
    return result


def _installed(module: str) -> bool:
    import importlib.util

    return importlib.util.find_spec(module) is not None
