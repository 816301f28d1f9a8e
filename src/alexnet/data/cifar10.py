"""CIFAR-10 (Krizhevsky 2009): the official python batches, or JPEG/PNG folders in ImageFolder
layout, or a .tar.gz of either; downloaded (checked against its sha256) when none is given."""

from __future__ import annotations

import pickle
from pathlib import Path
from typing import ClassVar

import numpy as np
import torch

from alexnet.data.cache import cache_dir, unpacked
from alexnet.data.download import download
from alexnet.data.imagefolder import load_folder_pair
from alexnet.data.images import MAX_PIXELS
from alexnet.data.imageset import ImageSet
from alexnet.data.source import DataSource, Request
from alexnet.errors import UserError

CLASSES = [
    "airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck",
]  # fmt: skip
URL = "https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz"
SHA256 = "6d958be074577803d12ecdefd02955f39262c83c16fe9348329d7fe0b5c001ce"
HELP = (
    "pass --data with the CIFAR-10 python batches (cifar-10-batches-py/), a folder with "
    "train/<class>/*.jpg and test/<class>/*.jpg, or a .tar.gz of either"
)


class _RestrictedUnpickler(pickle.Unpickler):
    """Unpickles only numpy arrays and builtins, so a crafted batch file cannot run code."""

    ALLOWED: ClassVar[set[tuple[str, str]]] = {
        ("numpy", "ndarray"), ("numpy", "dtype"), ("numpy.core.multiarray", "_reconstruct"),
        ("numpy._core.multiarray", "_reconstruct"), ("numpy.core.multiarray", "scalar"),
        ("numpy._core.multiarray", "scalar"),
    }  # fmt: skip

    def find_class(self, module: str, name: str):
        if (module, name) in self.ALLOWED:
            return super().find_class(module, name)
        raise pickle.UnpicklingError(f"it asks for {module}.{name}, which could run code")


def _read_batch(path: Path) -> tuple[np.ndarray, list[int]]:
    try:
        with open(path, "rb") as f:
            # The official batches are Python 2 pickles: latin1 is how numpy reads their arrays.
            batch = _RestrictedUnpickler(f, encoding="latin1").load()
        batch = {k.decode() if isinstance(k, bytes) else k: v for k, v in batch.items()}
        images = np.asarray(batch["data"], dtype=np.uint8).reshape(-1, 3, 32, 32)
        labels = [int(x) for x in batch["labels"]]
    except (pickle.UnpicklingError, EOFError, KeyError, TypeError, ValueError, AttributeError,
            IndexError) as exc:  # fmt: skip
        raise UserError(
            f"{path}: not a CIFAR-10 batch and not loaded ({exc}); use the official "
            "cifar-10-python.tar.gz"
        ) from None
    if len(labels) != len(images):
        raise UserError(f"{path}: {len(images)} images but {len(labels)} labels")
    return images, labels


def _load_batches(folder: Path) -> tuple[ImageSet, ImageSet]:
    def read(names: list[str]) -> ImageSet:
        parts = [_read_batch(folder / name) for name in names]
        images = torch.from_numpy(np.concatenate([p[0] for p in parts]))
        labels = torch.tensor([y for p in parts for y in p[1]], dtype=torch.int64)
        return ImageSet(images, labels, CLASSES, source=str(folder))

    return read([f"data_batch_{i}" for i in range(1, 6)]), read(["test_batch"])


def _official_archive(verify: bool) -> Path:
    """The official archive in the cache, downloaded once."""
    try:
        return download(URL, cache_dir() / "downloads" / "cifar-10-python.tar.gz",
                        sha256=SHA256 if verify else None)  # fmt: skip
    except OSError as exc:
        raise FileNotFoundError(f"download of CIFAR-10 failed ({exc}); {HELP}") from None


def load_cifar10(
    data: str | None, verify: bool = True, max_pixels: int = MAX_PIXELS
) -> tuple[ImageSet, ImageSet]:
    root = Path(data) if data else _official_archive(verify)
    if not root.exists():
        raise FileNotFoundError(f"--data {data}: no such file or folder; {HELP}")
    root = unpacked(root, HELP)
    for candidate in (root, root / "cifar-10-batches-py"):
        if (candidate / "data_batch_1").is_file() and (candidate / "test_batch").is_file():
            return _load_batches(candidate)
    try:
        return load_folder_pair(root, 32, 3, max_pixels, tag="cifar10")
    except FileNotFoundError:
        raise FileNotFoundError(
            f"{root}: neither CIFAR-10 python batches nor image folders; {HELP}"
        ) from None


def _load(request: Request) -> tuple[ImageSet, ImageSet]:
    return load_cifar10(request.root or None, request.verify, request.max_pixels)


SOURCE = DataSource(
    "cifar10", _load, 3, (0.4914, 0.4822, 0.4465), (0.2470, 0.2435, 0.2616), image_size=32
)
