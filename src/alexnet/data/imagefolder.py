"""Any folder of images in ImageFolder layout: ``train/<class>/*`` beside ``val/<class>/*``
(or ``test/``), or a .tar(.gz) of it; decoded once at one size, cached, trained from memory."""

from __future__ import annotations

from pathlib import Path

import torch

from alexnet.data.cache import cached_pair, extract, files_key
from alexnet.data.images import (
    DECODER_VERSION,
    class_folders,
    decode_image,
    image_files,
    resize_image,
)
from alexnet.data.imageset import ImageSet
from alexnet.data.source import DataSource, Request

LAYOUT_HELP = "expected train/<class>/* and val/<class>/* (or test/) inside"


def _split_folders(root: Path) -> tuple[Path, Path] | None:
    for train_name, test_name in (("train", "test"), ("train", "val")):
        if (root / train_name).is_dir() and (root / test_name).is_dir():
            return root / train_name, root / test_name
    return None


def find_splits(root: Path) -> tuple[Path, Path]:
    """The train and test folders of ``root`` (or of its only subfolder, or of an archive)."""
    if root.is_file():
        if not root.name.endswith((".tar.gz", ".tgz", ".tar")):
            raise ValueError(f"{root}: not a folder or a .tar(.gz) archive; {LAYOUT_HELP}")
        root = extract(root)
    split = _split_folders(root)
    if split is None and root.is_dir():
        inner = [p for p in root.iterdir() if p.is_dir() and not p.name.startswith(".")]
        split = _split_folders(inner[0]) if len(inner) == 1 else None
    if split is None:
        raise FileNotFoundError(f"{root}: {LAYOUT_HELP}")
    return split


def load_image_folder(
    split: Path,
    classes: list[str] | None,
    size: int | None,
    channels: int,
    max_pixels: int,
) -> ImageSet:
    """``split/<class>/**/<image>`` into memory; unreadable files are skipped and listed.
    Without ``size`` every image must have the first one's shape (others are skipped)."""
    found = class_folders(split)
    classes = classes or found
    if not classes:
        raise FileNotFoundError(f"{split}: no class folders inside (expected {split}/<class>/*)")
    images: list[torch.Tensor] = []
    labels: list[int] = []
    skipped: list[tuple[str, str]] = []
    for index, name in enumerate(classes):
        if not (split / name).is_dir():
            continue
        for path in image_files(split / name):
            image, why = decode_image(path, channels, size, max_pixels)
            if image is not None and size:
                image = resize_image(image, size)
            elif image is not None and images and image.shape != images[0].shape:
                image, why = None, f"{tuple(image.shape)} differs from {tuple(images[0].shape)}"
            if image is None:
                skipped.append((str(path), why))
                continue
            images.append(image)
            labels.append(index)
    if not images:
        raise FileNotFoundError(f"{split}: no readable images in its class folders")
    return ImageSet(torch.stack(images), torch.tensor(labels), classes, str(split), skipped)


def load_folder_pair(
    root: Path, size: int | None, channels: int, max_pixels: int, tag: str = "imagefolder"
) -> tuple[ImageSet, ImageSet]:
    """The train and test sets of ``root``, decoded once and then read from the cache."""
    train_dir, test_dir = find_splits(root)
    train_classes = class_folders(train_dir)
    files = [f for split in (train_dir, test_dir) for c in class_folders(split)
             for f in image_files(split / c)]  # fmt: skip
    key = files_key(files, DECODER_VERSION, size, channels, max_pixels, train_classes)

    def build() -> tuple[ImageSet, ImageSet]:
        train = load_image_folder(train_dir, None, size, channels, max_pixels)
        test = load_image_folder(test_dir, train.classes, size, channels, max_pixels)
        return train, test

    return cached_pair(f"{tag}-{size}-{channels}", key, build)


def _load(request: Request) -> tuple[ImageSet, ImageSet]:
    if not request.root:
        raise ValueError(f"the imagefolder source needs --data DIR ({LAYOUT_HELP})")
    if not Path(request.root).exists():
        raise FileNotFoundError(f"--data {request.root}: no such file or folder")
    return load_folder_pair(Path(request.root), request.size, request.channels, request.max_pixels)


# Photos of any kind: normalised with ImageNet's statistics, as torchvision's models are.
SOURCE = DataSource("imagefolder", _load, 3, (0.485, 0.456, 0.406), (0.229, 0.224, 0.225))
