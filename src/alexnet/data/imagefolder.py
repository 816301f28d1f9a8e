"""Any folder of images in ImageFolder layout: ``train/<class>/*`` beside ``val/<class>/*``
(or ``test/``), or a .tar(.gz) of it; decoded once at one size, cached, trained from memory."""

from __future__ import annotations

from pathlib import Path

import torch

from alexnet.data.cache import cached_pair, files_key, unpacked
from alexnet.data.images import (
    DECODER_VERSION,
    class_files,
    class_folders,
    decode_image,
    is_image_name,
    resize_image,
)
from alexnet.data.imageset import ImageSet
from alexnet.data.source import DataSource, Request
from alexnet.errors import UserError

LAYOUT_HELP = "expected train/<class>/* and val/<class>/* (or test/) inside"


def _split_folders(root: Path) -> tuple[Path, Path] | None:
    for train_name, test_name in (("train", "test"), ("train", "val")):
        if (root / train_name).is_dir() and (root / test_name).is_dir():
            return root / train_name, root / test_name
    return None


def find_splits(root: Path) -> tuple[Path, Path]:
    """The train and test folders of ``root`` (or of its only subfolder, or of an archive)."""
    root = unpacked(root, LAYOUT_HELP)
    split = _split_folders(root)
    if split is None and root.is_dir():
        inner = [p for p in root.iterdir() if p.is_dir() and not p.name.startswith(".")]
        split = _split_folders(inner[0]) if len(inner) == 1 else None
    if split is None:
        raise FileNotFoundError(f"{root}: {LAYOUT_HELP}")
    return split


Files = dict[str, list[Path]]  # class folder name -> every file under it


def scan(split: Path) -> Files:
    return {name: class_files(split / name, split) for name in class_folders(split)}


def load_image_folder(
    split: Path, files: Files, classes: list[str], size: int | None, channels: int, max_pixels: int
) -> ImageSet:
    """The images of ``files`` into memory; every file left out is listed with the reason.
    Without ``size`` every image must have the first one's shape (others are skipped)."""
    images: list[torch.Tensor] = []
    labels: list[int] = []
    skipped = [(str(path), f"its class {name} is not among the training classes")
               for name, paths in files.items() if name not in classes for path in paths]  # fmt: skip
    for index, name in enumerate(classes):
        for path in files.get(name, []):
            if not is_image_name(path):
                skipped.append(
                    (str(path), f"not an image file name ({path.suffix or 'no suffix'})")
                )
                continue
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
        example = (
            f"; {len(skipped)} skipped, e.g. {skipped[0][0]} ({skipped[0][1]})" if skipped else ""
        )
        raise FileNotFoundError(f"{split}: no readable images in its class folders{example}")
    return ImageSet(torch.stack(images), torch.tensor(labels), classes, str(split), skipped)


def load_folder_pair(
    root: Path, size: int | None, channels: int, max_pixels: int, tag: str = "imagefolder"
) -> tuple[ImageSet, ImageSet]:
    """The train and test sets of ``root``, decoded once and then read from the cache. The
    classes are the training folders that hold image files; empty folders are listed."""
    if (root / "store.json").is_file():  # store.STORE_FILE: a store is read by its own source
        raise UserError(f"{root}: a store (alexnet prepare), not a folder of images; train "
                        "from it with --set data.source=store")  # fmt: skip
    train_dir, test_dir = find_splits(root)
    train_files, test_files = scan(train_dir), scan(test_dir)
    classes = [c for c, paths in train_files.items() if any(map(is_image_name, paths))]
    if not classes:
        raise FileNotFoundError(f"{train_dir}: no class folders with images inside ({LAYOUT_HELP})")
    every = [p for files in (train_files, test_files) for paths in files.values() for p in paths]
    key = files_key(every, DECODER_VERSION, size, channels, max_pixels, classes)

    def build() -> tuple[ImageSet, ImageSet]:
        train = load_image_folder(train_dir, train_files, classes, size, channels, max_pixels)
        empty = [(str(train_dir / c), "holds no image files, so it is not a class")
                 for c in train_files if c not in classes]  # fmt: skip
        train.skipped = empty + train.skipped
        test = load_image_folder(test_dir, test_files, classes, size, channels, max_pixels)
        return train, test

    return cached_pair(f"{tag}-{size}-{channels}", root, key, build)


def _load(request: Request) -> tuple[ImageSet, ImageSet]:
    if not request.root:
        raise UserError(f"the imagefolder source needs --data DIR ({LAYOUT_HELP})")
    if not Path(request.root).exists():
        raise FileNotFoundError(f"--data {request.root}: no such file or folder")
    return load_folder_pair(Path(request.root), request.size, request.channels, request.max_pixels)


# Photos of any kind: normalised with ImageNet's statistics, as torchvision's models are.
SOURCE = DataSource("imagefolder", _load, 3, (0.485, 0.456, 0.406), (0.229, 0.224, 0.225))
