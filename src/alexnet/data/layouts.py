"""Where the images of a split are and what their labels are, in the layouts ImageNet comes in.

- ImageFolder: ``SRC/<split>/<class>/*`` (ILSVRC's train/, and val/ once sorted into folders).
- A flat ``SRC/val/*.JPEG`` with its labels beside it: Kaggle's ``LOC_val_solution.csv``
  (``ImageId,PredictionString``, the wnid first in the string), or the devkit's
  ``ILSVRC2012_validation_ground_truth.txt`` (one ILSVRC2012_ID per image, in file-name order)
  with ``meta.mat`` to turn those IDs into wnids (read with scipy, an optional dependency).
- Flat ``SRC/<wnid>_*.JPEG`` files (the 1,000-image sample), one split.

Class order: ``imagenet_class_index.json`` (``{"0": [wnid, name], ...}``) or Kaggle's
``LOC_synset_mapping.txt`` (``wnid name`` per line) when found in SRC or a folder above it,
which is ImageNet's standard order; else the sorted class folders or wnids. These files are
looked for up to three folders up, where Kaggle's archive keeps them.
"""

from __future__ import annotations

import csv
import re
from pathlib import Path

from alexnet.data.cache import unpacked
from alexnet.data.images import class_files, class_folders, is_image_name
from alexnet.errors import UserError

CLASS_INDEX = "imagenet_class_index.json"
SYNSET_MAPPING = "LOC_synset_mapping.txt"
KAGGLE_VAL = "LOC_val_solution.csv"
DEVKIT_TRUTH = "ILSVRC2012_validation_ground_truth.txt"
SPLITS = ("train", "val", "test")


class LayoutError(UserError):
    """Images or labels that cannot be found or read; the message names the file."""


def find_upward(src: Path, name: str, levels: int = 3) -> Path | None:
    """``name`` in ``src`` or in one of the ``levels`` folders above it (or a devkit's data/)."""
    for where in (src, *list(src.parents)[:levels]):
        for candidate in (where / name, *where.glob(f"ILSVRC2012_devkit*/data/{name}")):
            if candidate.is_file():
                return candidate
    return None


def _read_json(path: Path) -> dict:
    import json

    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise LayoutError(f"{path}: cannot read ({exc})") from None


def class_map(src: Path) -> tuple[list[str], list[str]]:
    """(class ids, readable names) in label order."""
    index_file = find_upward(src, CLASS_INDEX)
    if index_file is not None:
        table = _read_json(index_file)
        shape = 'expected {"0": [wnid, name], ...} for every index from 0'
        try:
            rows = [table[str(i)] for i in range(len(table))]
        except (KeyError, TypeError):
            raise LayoutError(f"{index_file}: {shape}") from None
        if not all(isinstance(r, list) and len(r) >= 2 and all(isinstance(v, str) for v in r[:2])
                   for r in rows):  # fmt: skip
            raise LayoutError(f"{index_file}: {shape}")
        wnids = [r[0] for r in rows]
        if len(set(wnids)) != len(wnids):
            twice = next(w for w in wnids if wnids.count(w) > 1)
            raise LayoutError(f"{index_file}: class {twice} is listed more than once")
        return wnids, [r[1] for r in rows]
    mapping = find_upward(src, SYNSET_MAPPING)
    if mapping is not None:
        rows = [line.split(" ", 1) for line in mapping.read_text().splitlines() if line.strip()]
        return [r[0] for r in rows], [r[1].split(",")[0] if len(r) > 1 else r[0] for r in rows]
    for split in SPLITS:
        if (src / split).is_dir() and class_folders(src / split):
            names = class_folders(src / split)
            return names, names
    wnids = sorted({p.name.split("_")[0] for p in src.iterdir() if is_flat_name(p)})
    if not wnids:
        raise LayoutError(f"{src}: no images; expected train/<class>/* and val/<class>/*, or "
                          "files named <wnid>_*.JPEG")  # fmt: skip
    return wnids, wnids


def source_root(src: Path) -> Path:
    """Where the images of ``src`` are: the folder itself, the unpacked copy of a .tar(.gz)
    (made once, in the cache), or its only subfolder where that holds the splits."""
    root = unpacked(src, "expected train/<class>/* and val/<class>/*, or <wnid>_*.JPEG files")
    inner = [p for p in root.iterdir() if p.is_dir() and not p.name.startswith(".")]
    if is_flat(root) and not any(map(is_flat_name, root.iterdir())) and len(inner) == 1:
        return inner[0]
    return root


def is_flat_name(path: Path) -> bool:
    """An ILSVRC file name that says its class: ``n01440764_tench.JPEG``."""
    return is_image_name(path) and re.match(r"n\d+_", path.name) is not None


def is_flat(src: Path) -> bool:
    """Whether ``src`` is one flat folder of ``<wnid>_*`` files rather than split folders."""
    return not any((src / s).is_dir() for s in SPLITS)


def labelled_splits(src: Path) -> list[str]:
    """The splits of ``src`` whose labels are known (Kaggle's flat test/ has none)."""
    if is_flat(src):
        return ["train"]
    return [s for s in SPLITS if (src / s).is_dir()
            and (class_folders(src / s) or _flat_truth(src, src / s) is not None)]  # fmt: skip


def _flat_truth(src: Path, folder: Path) -> Path | None:
    if folder.name != "val":
        return None
    return find_upward(src, KAGGLE_VAL) or find_upward(src, DEVKIT_TRUTH)


def _kaggle_labels(path: Path) -> dict[str, str]:
    """Image id -> wnid, from ``LOC_val_solution.csv``."""
    try:
        with open(path, newline="", encoding="utf-8") as f:
            return {row["ImageId"]: row["PredictionString"].split()[0] for row in csv.DictReader(f)}
    except (OSError, KeyError, IndexError, csv.Error) as exc:
        raise LayoutError(f"{path}: expected ImageId,PredictionString rows ({exc})") from None


def _devkit_labels(path: Path, files: list[Path]) -> dict[str, str]:
    """Image id -> wnid from the devkit: ground-truth IDs in file-name order, meta.mat's
    synsets to turn each ILSVRC2012_ID into its wnid."""
    meta = path.with_name("meta.mat")
    try:
        from scipy.io import loadmat
    except ImportError:
        raise LayoutError(f"{meta}: reading the devkit's meta.mat needs scipy (pip install "
                          f"scipy), or put Kaggle's {KAGGLE_VAL} beside the images") from None  # fmt: skip
    try:
        synsets = loadmat(str(meta), squeeze_me=True)["synsets"]
        wnid = {int(s["ILSVRC2012_ID"]): str(s["WNID"]) for s in synsets}
        ids = [int(line) for line in path.read_text().split()]
    except (OSError, KeyError, ValueError) as exc:
        raise LayoutError(f"{meta}: cannot read the devkit's synsets ({exc})") from None
    images = sorted(files, key=lambda p: p.name)
    if len(ids) != len(images):
        raise LayoutError(f"{path}: {len(ids)} labels for {len(images)} images in "
                          f"{images[0].parent if images else path}")  # fmt: skip
    return {p.stem: wnid[i] for p, i in zip(images, ids, strict=True)}


def split_files(src: Path, split: str, classes: list[str]) -> tuple[list[tuple[str, int]], list]:
    """((file, label) pairs, skipped (file, why)) of ``split``, sorted by file."""
    label = {c: i for i, c in enumerate(classes)}
    folder = src / split
    if folder.is_dir() and class_folders(folder):
        found = [(p, name) for name in class_folders(folder)
                 for p in class_files(folder / name, folder)]  # fmt: skip
    elif folder.is_dir():
        files = sorted(p for p in folder.iterdir() if p.is_file() and not p.name.startswith("."))
        truth = _flat_truth(src, folder)
        if truth is None:
            raise LayoutError(f"{folder}: images without class folders and no labels for them "
                              f"({KAGGLE_VAL} or the devkit's {DEVKIT_TRUTH} beside them)")  # fmt: skip
        known = (_kaggle_labels(truth) if truth.name == KAGGLE_VAL
                 else _devkit_labels(truth, [p for p in files if is_image_name(p)]))  # fmt: skip
        found = [(p, known.get(p.stem, "")) for p in files]
    else:  # a flat folder of <wnid>_*.JPEG files
        found = [(p, p.name.split("_")[0]) for p in sorted(src.iterdir()) if p.is_file()
                 and not p.name.startswith(".") and p.name not in (CLASS_INDEX, SYNSET_MAPPING)]  # fmt: skip
    pairs: list[tuple[str, int]] = []
    skipped: list[tuple[str, str]] = []
    for path, name in found:
        if not is_image_name(path):
            skipped.append((str(path), f"not an image file name ({path.suffix or 'no suffix'})"))
        elif not name:
            skipped.append((str(path), "no label for it in the ground-truth file"))
        elif name not in label:
            skipped.append((str(path), f"class {name} is not in the class list"))
        else:
            pairs.append((str(path), label[name]))
    return sorted(pairs), skipped
