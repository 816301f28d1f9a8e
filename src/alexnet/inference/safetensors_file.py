"""The safetensors file alexnet writes and reads: a trained network's weights, its training
set's pixel statistics (tensors named ``preprocessing.*``), and in the metadata (text only)
its recipe, classes, names and stored image size: everything ``load_trained`` needs, in a
format whose reading runs no code. ``alexnet export --format safetensors`` writes it;
``alexnet predict``, ``eval`` and ``train --weights`` read it.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch

from alexnet.data.stats import PixelStats
from alexnet.errors import UserError
from alexnet.processes import deferred_signals

INSTALL = "pip install 'alexnet[export]'"
SAFETENSORS_FORMAT = 1  # the version of the layout below; read_safetensors reads this or older
STATS_PREFIX = "preprocessing."


class ExportError(UserError):
    """A problem the user can fix (a missing package, an opset, a file): one line."""


def need(module: str) -> Any:
    """Import an optional package, or a one-line error that says how to install it."""
    import importlib

    try:
        with deferred_signals():  # an import cut by a signal would read as "not installed"
            return importlib.import_module(module)
    except ImportError:
        raise ExportError(f"{module.split('.')[0]} is not installed: {INSTALL}") from None


def write_safetensors(path: Path, weights: dict[str, torch.Tensor], stats: PixelStats | None,
                      recipe: dict, classes: list[str], names: list[str],
                      stored_size: int | None) -> None:  # fmt: skip
    """Write the file (``safetensors`` must be installed: see :func:`need`)."""
    st = need("safetensors.torch")
    tensors = {k: v.detach().contiguous() for k, v in weights.items()}
    other: dict[str, Any] = {}  # the statistics that are no tensors (the image count)
    for key, value in (stats.to_dict() if stats else {}).items():
        if isinstance(value, torch.Tensor):
            tensors[STATS_PREFIX + key] = value.detach().contiguous()
        else:
            other[key] = value
    meta = {"format": "alexnet", "format_version": str(SAFETENSORS_FORMAT),
            "recipe": json.dumps(recipe), "classes": json.dumps(classes),
            "names": json.dumps(names), "stored_size": json.dumps(stored_size),
            "preprocessing": json.dumps(other)}  # fmt: skip
    st.save_file(tensors, str(path), metadata=meta)


def read_safetensors(path: Path) -> dict[str, Any]:
    """A file of :func:`export_safetensors` as a checkpoint-shaped dict: ``model`` (the state
    dict), ``recipe``, ``data`` (classes, names, stored_size) and ``preprocessing``."""
    safetensors = need("safetensors")
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such file")
    try:
        with safetensors.safe_open(str(path), framework="pt") as f:
            meta = f.metadata() or {}
            tensors = {key: f.get_tensor(key) for key in f.keys()}  # noqa: SIM118
    except safetensors.SafetensorError as exc:
        raise ExportError(f"{path}: not a readable safetensors file ({exc})") from None
    if meta.get("format") != "alexnet" or "recipe" not in meta:
        raise ExportError(f"{path}: safetensors without alexnet's metadata (a recipe); write it "
                          "with alexnet export --format safetensors")  # fmt: skip
    version = meta.get("format_version", "0")
    if not version.isdigit():
        raise ExportError(f"{path}: its format_version metadata {version[:40]!r} is not a whole "
                          "number; write the file again with alexnet export")  # fmt: skip
    if int(version) > SAFETENSORS_FORMAT:
        raise ExportError(f"{path}: written by a newer alexnet (format "
                          f"{meta['format_version']}); upgrade alexnet to read it")  # fmt: skip
    stats = {k.removeprefix(STATS_PREFIX): v for k, v in tensors.items()
             if k.startswith(STATS_PREFIX)}  # fmt: skip
    if stats:
        counted = _metadata(meta, "preprocessing", dict, path, "{}")
        images = counted.get("images")  # the one statistic that is no tensor
        if set(counted) != {"images"} or type(images) is not int or images < 1:
            raise ExportError(f"{path}: its 'preprocessing' metadata holds "
                              f"{meta['preprocessing'][:40]}, not what alexnet writes there "
                              "(the count of images); write the file again with alexnet export")  # fmt: skip
        stats["images"] = images
    data = {"classes": _metadata(meta, "classes", list, path),
            "names": _metadata(meta, "names", list, path),
            "stored_size": _metadata(meta, "stored_size", (int, type(None)), path)}  # fmt: skip
    return {"model": {k: v for k, v in tensors.items() if not k.startswith(STATS_PREFIX)},
            "recipe": _metadata(meta, "recipe", dict, path), "data": data,
            "preprocessing": stats}  # fmt: skip


def _metadata(meta: dict[str, str], key: str, kind, path: Path, default: str | None = None):
    """The JSON value of metadata ``key``, of type ``kind``; a missing, malformed or mistyped
    one is a one-line error naming the file and the key."""
    text = meta.get(key, default)
    try:
        if text is None:
            raise UserError("missing")
        value = json.loads(text)
    except RecursionError:
        raise ExportError(f"{path}: its {key!r} metadata is nested too deeply to be alexnet's; "
                          "write the file again with alexnet export") from None  # fmt: skip
    except ValueError as exc:  # json.JSONDecodeError included
        raise ExportError(f"{path}: its {key!r} metadata is not valid JSON ({exc}); write the "
                          "file again with alexnet export --format safetensors") from None  # fmt: skip
    if not isinstance(value, kind) or isinstance(value, bool):
        raise ExportError(f"{path}: its {key!r} metadata holds {text[:40]}, not what alexnet "
                          "writes there; write the file again with alexnet export")  # fmt: skip
    return value
