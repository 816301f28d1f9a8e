"""Data sources: each turns files on disk into uint8 image tensors with labels, held in memory.

Small data sets (Fashion-MNIST, CIFAR-10, a small image folder) are decoded once, cached as one
uint8 tensor file beside the user cache, and then train from memory: no per-image Python work
in the training loop. Every source yields the same thing, an :class:`ImageSet`, so the loader and
the batch augmentations do not care where images came from.
"""

from __future__ import annotations

import gzip
import hashlib
import os
import pickle
import shutil
import struct
import tarfile
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import ClassVar

import numpy as np
import torch

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".ppm", ".webp", ".tif", ".tiff")


@dataclass
class ImageSet:
    """Images as uint8 (N, C, H, W), labels as int64 (N,), and the class names."""

    images: torch.Tensor
    labels: torch.Tensor
    classes: list[str]
    skipped: int = 0  # unreadable files left out, reported to the user
    source: str = ""
    notes: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        if self.images.dtype != torch.uint8 or self.images.dim() != 4:
            raise ValueError(
                f"images must be uint8 (N, C, H, W), got {self.images.dtype} {tuple(self.images.shape)}"
            )
        if len(self.images) != len(self.labels):
            raise ValueError(f"{len(self.images)} images but {len(self.labels)} labels")

    def __len__(self) -> int:
        return len(self.labels)

    def subset(self, count: int) -> ImageSet:
        """The first ``count`` images (for quick runs and tests)."""
        return ImageSet(
            self.images[:count], self.labels[:count], self.classes, self.skipped, self.source
        )


def cache_dir() -> Path:
    """``$ALEXNET_CACHE``, else ``$XDG_CACHE_HOME/alexnet``, else ``~/.cache/alexnet``."""
    if os.environ.get("ALEXNET_CACHE"):
        return Path(os.environ["ALEXNET_CACHE"])
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "alexnet"


def sha256_bytes(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def download(
    url: str, dest: Path, sha256: str | None = None, decompressed_sha256: str | None = None
) -> Path:
    """Fetch ``url`` to ``dest`` atomically, refusing a file whose checksum is wrong."""
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = dest.with_suffix(dest.suffix + ".part")
    with urllib.request.urlopen(url, timeout=60) as response, open(tmp, "wb") as out:
        shutil.copyfileobj(response, out)
    data = tmp.read_bytes()
    if sha256 and sha256_bytes(data) != sha256:
        tmp.unlink()
        raise ValueError(f"{url}: checksum mismatch (sha256), download refused; try again later")
    if decompressed_sha256 and sha256_bytes(gzip.decompress(data)) != decompressed_sha256:
        tmp.unlink()
        raise ValueError(f"{url}: checksum mismatch (sha256 of contents), download refused")
    os.replace(tmp, dest)
    return dest


# ---------------------------------------------------------------------------------------------
# Fashion-MNIST (Xiao, Rasul and Vollgraf 2017): four IDX files, 60,000 + 10,000 28x28 images.

FASHION_MNIST_CLASSES = [
    "T-shirt/top", "Trouser", "Pullover", "Dress", "Coat",
    "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot",
]  # fmt: skip
FASHION_MNIST_URL = "http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/"
# sha256 of the uncompressed IDX contents: the same for the official .gz files, Debian's
# re-compressed copies and unpacked files, so one table checks all three.
FASHION_MNIST_FILES = {
    "train-images-idx3-ubyte": "c59f468a2f672dc815687fe0f83887768d799fd8a3f3276145d20f83aa44d888",
    "train-labels-idx1-ubyte": "bad3541b69d912435c50bb6ba87bec294ff4f6a2e1246121d8633921760443d9",
    "t10k-images-idx3-ubyte": "5b4141f0afbad91edebe8549f8fcffe087ea10ca49f1dbef5c9a5cd8815ce37b",
    "t10k-labels-idx1-ubyte": "0402a96d92fd2663957122ceb108a494c5af83dab82d92729df917d7dec38c34",
}
DEBIAN_FASHION_MNIST = Path("/usr/share/datasets/fashion-mnist")
FASHION_MNIST_HELP = (
    "Fashion-MNIST not found: install it with `sudo apt-get install dataset-fashion-mnist` "
    "(Debian/Ubuntu), or put the four IDX files (train-images-idx3-ubyte[.gz], ...) in a folder "
    "and pass --data FOLDER"
)


def _read_idx(raw: bytes, path: Path) -> np.ndarray:
    if len(raw) < 8 or raw[0] != 0 or raw[1] != 0 or raw[2] != 8:
        raise ValueError(f"{path}: not an IDX file of unsigned bytes (bad magic number)")
    ndim = raw[3]
    dims = struct.unpack(f">{ndim}I", raw[4 : 4 + 4 * ndim])
    data = np.frombuffer(raw, dtype=np.uint8, offset=4 + 4 * ndim)
    if data.size != int(np.prod(dims)):
        raise ValueError(f"{path}: truncated IDX file ({data.size} of {int(np.prod(dims))} bytes)")
    return data.reshape(dims)


def _find_idx(folder: Path, stem: str) -> Path | None:
    for name in (
        stem,
        stem + ".gz",
        stem.replace("-idx", ".idx"),
        stem.replace("-idx", ".idx") + ".gz",
    ):
        if (folder / name).is_file():
            return folder / name
    return None


def fashion_mnist_folders(data: str | None) -> list[Path]:
    """Where to look, in order: --data, $ALEXNET_DATA, the user cache, Debian's package."""
    if data:
        return [Path(data)]
    folders = []
    if os.environ.get("ALEXNET_DATA"):
        env = Path(os.environ["ALEXNET_DATA"])
        folders += [env / "fashion-mnist", env]
    return [*folders, cache_dir() / "fashion-mnist", DEBIAN_FASHION_MNIST]


def load_fashion_mnist(
    data: str | None = None, download_missing: bool = True, verify: bool = True
) -> tuple[ImageSet, ImageSet]:
    """The four IDX files; ``verify`` checks their contents against the official sha256."""
    folders = fashion_mnist_folders(data)
    if data and not Path(data).is_dir():
        raise FileNotFoundError(f"--data {data}: no such folder; {FASHION_MNIST_HELP}")
    folder = next((f for f in folders if all(_find_idx(f, s) for s in FASHION_MNIST_FILES)), None)
    if folder is None:
        if data or not download_missing:
            where = data or ", ".join(str(f) for f in folders)
            raise FileNotFoundError(f"no Fashion-MNIST IDX files in {where}; {FASHION_MNIST_HELP}")
        folder = cache_dir() / "fashion-mnist"
        try:
            for stem, digest in FASHION_MNIST_FILES.items():
                download(
                    FASHION_MNIST_URL + stem + ".gz",
                    folder / (stem + ".gz"),
                    decompressed_sha256=digest,
                )
        except OSError as exc:
            raise FileNotFoundError(
                f"download from {FASHION_MNIST_URL} failed ({exc}); {FASHION_MNIST_HELP}"
            ) from None
    arrays = {}
    for stem, digest in FASHION_MNIST_FILES.items():
        path = _find_idx(folder, stem)
        assert path is not None
        raw = path.read_bytes()
        if path.suffix == ".gz":
            try:
                raw = gzip.decompress(raw)
            except (OSError, EOFError) as exc:
                raise ValueError(
                    f"{path}: corrupt gzip file ({exc}); delete it and fetch it again"
                ) from None
        if verify and sha256_bytes(raw) != digest:
            raise ValueError(
                f"{path}: contents differ from the official Fashion-MNIST file (sha256); replace it, "
                "or set data.verify=false to use a deliberately different copy"
            )
        arrays[stem] = _read_idx(raw, path)

    def split(prefix: str) -> ImageSet:
        images = torch.from_numpy(arrays[f"{prefix}-images-idx3-ubyte"].copy()).unsqueeze(1)
        labels = torch.from_numpy(arrays[f"{prefix}-labels-idx1-ubyte"].astype(np.int64))
        return ImageSet(images, labels, FASHION_MNIST_CLASSES, source=str(folder))

    return split("train"), split("t10k")


# ---------------------------------------------------------------------------------------------
# CIFAR-10: torchvision's python batches, or JPEG/PNG folders in ImageFolder layout.

CIFAR10_CLASSES = [
    "airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck",
]  # fmt: skip
CIFAR10_URL = "https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz"
CIFAR10_SHA256 = "6d958be074577803d12ecdefd02955f39262c83c16fe9348329d7fe0b5c001ce"
CIFAR10_HELP = (
    "pass --data with the CIFAR-10 python batches (cifar-10-batches-py/), a folder with "
    "train/<class>/*.jpg and test/<class>/*.jpg, or a .tar.gz of either"
)


def _load_cifar_batches(folder: Path) -> tuple[ImageSet, ImageSet]:
    def read(names: list[str]) -> ImageSet:
        images, labels = [], []
        for name in names:
            with open(folder / name, "rb") as f:
                # The official batches are pickles of plain arrays; refuse anything else.
                batch = _RestrictedUnpickler(f).load()
            images.append(np.asarray(batch[b"data"], dtype=np.uint8).reshape(-1, 3, 32, 32))
            labels += list(batch[b"labels"])
        return ImageSet(
            torch.from_numpy(np.concatenate(images)),
            torch.tensor(labels, dtype=torch.int64),
            CIFAR10_CLASSES,
            source=str(folder),
        )

    return read([f"data_batch_{i}" for i in range(1, 6)]), read(["test_batch"])


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
        raise pickle.UnpicklingError(f"refusing to load {module}.{name} from a data batch")


def decode_image(path: Path, channels: int) -> torch.Tensor | None:
    """One image file as uint8 (C, H, W), or None if it cannot be decoded."""
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as img:
            img = img.convert("L" if channels == 1 else "RGB")
            array = np.asarray(img, dtype=np.uint8)
    except (UnidentifiedImageError, OSError, ValueError, SyntaxError):
        return None
    if array.ndim == 2:
        array = array[:, :, None]
    return torch.from_numpy(array.copy()).permute(2, 0, 1)


def resize_image(image: torch.Tensor, size: int) -> torch.Tensor:
    """Rescale the short side to ``size`` and take the central size x size crop (uint8 in/out)."""
    from torchvision.transforms.v2 import functional as TF

    if image.shape[-2:] == (size, size):
        return image
    image = TF.resize(image, size, antialias=True)
    return TF.center_crop(image, [size, size])


def load_image_folder(
    folder: Path, classes: list[str] | None = None, size: int | None = None, channels: int = 3
) -> ImageSet:
    """``folder/<class>/<image>`` into memory; unreadable files are skipped and counted."""
    if not folder.is_dir():
        raise FileNotFoundError(f"{folder}: no such folder (expected {folder}/<class>/<images>)")
    found = sorted(p.name for p in folder.iterdir() if p.is_dir())
    classes = classes or found
    if not classes:
        raise FileNotFoundError(
            f"{folder}: no class folders inside (expected {folder}/<class>/<images>)"
        )
    images, labels, skipped = [], [], 0
    for index, name in enumerate(classes):
        class_dir = folder / name
        if not class_dir.is_dir():
            continue
        for path in sorted(class_dir.iterdir()):
            if path.suffix.lower() not in IMAGE_SUFFIXES:
                continue
            image = decode_image(path, channels)
            if image is None or (size is None and images and image.shape != images[0].shape):
                skipped += 1
                continue
            images.append(resize_image(image, size) if size else image)
            labels.append(index)
    if not images:
        raise FileNotFoundError(f"{folder}: no readable images in its class folders")
    notes = [f"{folder}: skipped {skipped} unreadable or odd-sized image(s)"] if skipped else []
    return ImageSet(torch.stack(images), torch.tensor(labels), classes, skipped, str(folder), notes)


def _extract(archive: Path) -> Path:
    """Unpack a .tar.gz once into the cache, safely (no paths outside the target)."""
    stat = archive.stat()
    key = sha256_bytes(f"{archive.resolve()}:{stat.st_size}:{stat.st_mtime_ns}".encode())[:16]
    target = cache_dir() / "extracted" / f"{archive.name.split('.')[0]}-{key}"
    if (target / ".complete").exists():
        return target
    tmp = target.with_name(target.name + ".part")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    try:
        with tarfile.open(archive) as tar:
            tar.extractall(tmp, filter="data")
    except (tarfile.TarError, OSError, EOFError) as exc:
        shutil.rmtree(tmp, ignore_errors=True)
        raise ValueError(
            f"{archive}: cannot unpack ({exc}); check the file or unpack it yourself"
        ) from None
    (tmp / ".complete").touch()
    shutil.rmtree(target, ignore_errors=True)
    os.replace(tmp, target)
    return target


def _cached(folders: tuple[Path, ...], tag: str, build) -> tuple[ImageSet, ImageSet]:
    """Decode once, then load the uint8 tensors from the cache (weights_only, so safe).

    The key covers the modification times of the split folders and of their class folders,
    which change whenever an image is added, removed or renamed.
    """
    parts = [tag]
    for folder in folders:
        for d in (folder, *sorted(p for p in folder.iterdir() if p.is_dir())):
            parts.append(f"{d.resolve()}:{d.stat().st_mtime_ns}")
    key = sha256_bytes("\n".join(parts).encode())[:16]
    path = cache_dir() / "decoded" / f"{tag}-{key}.pt"
    if path.is_file():
        try:
            blob = torch.load(path, weights_only=True)
            return tuple(  # type: ignore[return-value]
                ImageSet(
                    b["images"], b["labels"], b["classes"], b["skipped"], b["source"], b["notes"]
                )
                for b in (blob["train"], blob["test"])
            )
        except Exception:  # a damaged cache is rebuilt, never trusted
            path.unlink(missing_ok=True)
    train, test = build()
    path.parent.mkdir(parents=True, exist_ok=True)
    blob = {
        name: {
            "images": s.images, "labels": s.labels, "classes": s.classes,
            "skipped": s.skipped, "source": s.source, "notes": s.notes,
        }
        for name, s in (("train", train), ("test", test))
    }  # fmt: skip
    tmp = path.with_suffix(".tmp")
    torch.save(blob, tmp)
    os.replace(tmp, path)
    return train, test


def _split_folders(root: Path) -> tuple[Path, Path] | None:
    for train_name, test_name in (("train", "test"), ("train", "val")):
        if (root / train_name).is_dir() and (root / test_name).is_dir():
            return root / train_name, root / test_name
    return None


def load_folder_pair(
    root: Path, size: int | None, channels: int, tag: str
) -> tuple[ImageSet, ImageSet]:
    """``root/train/<class>`` and ``root/{val,test}/<class>``, decoded once and cached."""
    split = _split_folders(root)
    if split is None:
        inner = [p for p in root.iterdir() if p.is_dir()] if root.is_dir() else []
        split = _split_folders(inner[0]) if len(inner) == 1 else None
    if split is None:
        raise FileNotFoundError(
            f"{root}: expected train/<class>/* and val/<class>/* (or test/) inside"
        )
    train_dir, test_dir = split

    def build() -> tuple[ImageSet, ImageSet]:
        train = load_image_folder(train_dir, size=size, channels=channels)
        test = load_image_folder(test_dir, classes=train.classes, size=size, channels=channels)
        return train, test

    return _cached((train_dir, test_dir), f"{tag}-{size}-{channels}", build)


def load_cifar10(data: str | None, download_missing: bool = True) -> tuple[ImageSet, ImageSet]:
    root = Path(data) if data else cache_dir() / "cifar10"
    if data and not root.exists():
        raise FileNotFoundError(f"--data {data}: no such file or folder; {CIFAR10_HELP}")
    if not data and not root.exists():
        if not download_missing:
            raise FileNotFoundError(f"CIFAR-10 not found in {root}; {CIFAR10_HELP}")
        try:
            archive = download(
                CIFAR10_URL, cache_dir() / "cifar-10-python.tar.gz", sha256=CIFAR10_SHA256
            )
        except OSError as exc:
            raise FileNotFoundError(
                f"download of CIFAR-10 failed ({exc}); {CIFAR10_HELP}"
            ) from None
        root = _extract(archive)
    if root.is_file():
        if not root.name.endswith((".tar.gz", ".tgz", ".tar")):
            raise ValueError(f"--data {root}: not a folder or .tar.gz; {CIFAR10_HELP}")
        root = _extract(root)
    for candidate in (root, root / "cifar-10-batches-py"):
        if (candidate / "data_batch_1").is_file() and (candidate / "test_batch").is_file():
            return _load_cifar_batches(candidate)
    try:
        return load_folder_pair(root, size=32, channels=3, tag="cifar10")
    except FileNotFoundError:
        raise FileNotFoundError(
            f"{root}: neither CIFAR-10 python batches nor image folders; {CIFAR10_HELP}"
        ) from None
