"""Fashion-MNIST (Xiao, Rasul and Vollgraf 2017): four IDX files, 60,000 + 10,000 28x28 images.

Looked for in ``--data``, ``$ALEXNET_DATA``, the user cache and Debian's package
(``/usr/share/datasets/fashion-mnist``), else downloaded; every copy is checked against the
sha256 of the official contents.
"""

from __future__ import annotations

import gzip
import os
import struct
from pathlib import Path

import numpy as np
import torch

from alexnet.data.cache import cache_dir, sha256_bytes
from alexnet.data.download import download
from alexnet.data.imageset import ImageSet
from alexnet.data.source import DataSource, Request
from alexnet.errors import UserError

CLASSES = [
    "T-shirt/top", "Trouser", "Pullover", "Dress", "Coat",
    "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot",
]  # fmt: skip
URL = "http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/"
# sha256 of the uncompressed IDX contents: the same for the official .gz files, Debian's
# re-compressed copies and unpacked files, so one table checks all three.
FILES = {
    "train-images-idx3-ubyte": "c59f468a2f672dc815687fe0f83887768d799fd8a3f3276145d20f83aa44d888",
    "train-labels-idx1-ubyte": "bad3541b69d912435c50bb6ba87bec294ff4f6a2e1246121d8633921760443d9",
    "t10k-images-idx3-ubyte": "5b4141f0afbad91edebe8549f8fcffe087ea10ca49f1dbef5c9a5cd8815ce37b",
    "t10k-labels-idx1-ubyte": "0402a96d92fd2663957122ceb108a494c5af83dab82d92729df917d7dec38c34",
}
DEBIAN = Path("/usr/share/datasets/fashion-mnist")
HELP = (
    "Fashion-MNIST not found: install it with `sudo apt-get install dataset-fashion-mnist` "
    "(Debian/Ubuntu), or put the four IDX files (train-images-idx3-ubyte[.gz], ...) in a folder "
    "and pass --data FOLDER"
)


def read_idx(raw: bytes, path: Path) -> np.ndarray:
    if len(raw) < 8 or raw[0] != 0 or raw[1] != 0 or raw[2] != 8:
        raise UserError(f"{path}: not an IDX file of unsigned bytes (bad magic number)")
    ndim = raw[3]
    dims = struct.unpack(f">{ndim}I", raw[4 : 4 + 4 * ndim])
    data = np.frombuffer(raw, dtype=np.uint8, offset=4 + 4 * ndim)
    if data.size != int(np.prod(dims)):
        raise UserError(f"{path}: truncated IDX file ({data.size} of {int(np.prod(dims))} bytes)")
    return data.reshape(dims)


def find_idx(folder: Path, stem: str) -> Path | None:
    dotted = stem.replace("-idx", ".idx")
    for name in (stem, stem + ".gz", dotted, dotted + ".gz"):
        if (folder / name).is_file():
            return folder / name
    return None


def search_folders(data: str | None) -> list[Path]:
    """Where to look, in order: --data, $ALEXNET_DATA, the user cache, Debian's package."""
    if data:
        return [Path(data)]
    env = [Path(os.environ["ALEXNET_DATA"])] if os.environ.get("ALEXNET_DATA") else []
    return [*(p for e in env for p in (e / "fashion-mnist", e)), cache_dir() / "fashion-mnist",
            DEBIAN]  # fmt: skip


def _fetch(folder: Path) -> None:
    try:
        for stem, digest in FILES.items():
            download(URL + stem + ".gz", folder / (stem + ".gz"), decompressed_sha256=digest)
    except OSError as exc:
        raise FileNotFoundError(f"download from {URL} failed ({exc}); {HELP}") from None


def _read(path: Path, digest: str, verify: bool) -> np.ndarray:
    raw = path.read_bytes()
    if path.suffix == ".gz":
        try:
            raw = gzip.decompress(raw)
        except (OSError, EOFError) as exc:
            raise UserError(
                f"{path}: corrupt gzip file ({exc}); delete it and fetch it again"
            ) from None
    if verify and sha256_bytes(raw) != digest:
        raise UserError(
            f"{path}: contents differ from the official Fashion-MNIST file (sha256); replace it, "
            "or set data.verify=false to use a deliberately different copy"
        )
    return read_idx(raw, path)


def load_fashion_mnist(
    data: str | None = None, download_missing: bool = True, verify: bool = True
) -> tuple[ImageSet, ImageSet]:
    """The training and test sets, from the first folder that has all four files."""
    folders = search_folders(data)
    if data and not Path(data).is_dir():
        raise FileNotFoundError(f"--data {data}: no such folder; {HELP}")
    folder = next((f for f in folders if all(find_idx(f, s) for s in FILES)), None)
    if folder is None:
        if data or not download_missing:
            where = data or ", ".join(str(f) for f in folders)
            raise FileNotFoundError(f"no Fashion-MNIST IDX files in {where}; {HELP}")
        folder = cache_dir() / "fashion-mnist"
        _fetch(folder)
    arrays = {stem: _read(find_idx(folder, stem), digest, verify) for stem, digest in FILES.items()}  # type: ignore[arg-type]

    def split(prefix: str) -> ImageSet:
        images = torch.from_numpy(arrays[f"{prefix}-images-idx3-ubyte"].copy()).unsqueeze(1)
        labels = torch.from_numpy(arrays[f"{prefix}-labels-idx1-ubyte"].astype(np.int64))
        return ImageSet(images, labels, CLASSES, source=str(folder))

    return split("train"), split("t10k")


def _load(request: Request) -> tuple[ImageSet, ImageSet]:
    return load_fashion_mnist(request.root or None, verify=request.verify)


SOURCE = DataSource("fashion-mnist", _load, 1, (0.2860,), (0.3530,), image_size=28)
