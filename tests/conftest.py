"""Shared fixtures: a tiny synthetic image-folder data set and a recipe that trains on it."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import numpy as np
import pytest

from alexnet.config import load_recipe, to_toml

SHARED_DATA = Path(__file__).resolve().parents[2] / "shared" / "data"
CLASSES = ("stripes", "columns", "checks")


def _pattern(kind: str, rng: np.random.Generator, size: int = 32) -> np.ndarray:
    y, x = np.mgrid[0:size, 0:size]
    period = rng.integers(3, 6)
    if kind == "stripes":
        base = (y // period) % 2
    elif kind == "columns":
        base = (x // period) % 2
    else:
        base = ((x // period) + (y // period)) % 2
    img = base[..., None] * rng.uniform(120, 255, 3) + rng.normal(0, 20, (size, size, 3))
    return np.clip(img, 0, 255).astype(np.uint8)


@pytest.fixture(scope="session")
def tiny_folder(tmp_path_factory) -> Path:
    """train/<class>/*.png (40 per class) and val/<class>/*.png (12 per class), plus one
    corrupt file in train that loaders must skip and count."""
    from PIL import Image

    root = tmp_path_factory.mktemp("tiny")
    rng = np.random.default_rng(0)
    for split, count in (("train", 40), ("val", 12)):
        for kind in CLASSES:
            folder = root / split / kind
            folder.mkdir(parents=True)
            for i in range(count):
                Image.fromarray(_pattern(kind, rng)).save(folder / f"{i:03d}.png")
    (root / "train" / "stripes" / "broken.png").write_bytes(b"not an image at all")
    return root


@pytest.fixture()
def cache(tmp_path, monkeypatch) -> Path:
    """A private cache folder, so tests never read or write the user's."""
    path = tmp_path / "cache"
    monkeypatch.setenv("ALEXNET_CACHE", str(path))
    return path


def tiny_recipe(root: Path, **changes) -> dict:
    recipe = load_recipe("cifar10")
    recipe["name"] = "tiny"
    recipe["epochs"] = 2
    recipe["model"]["options"] = {
        "widths": [8, 8, 16, 16, 8],
        "hidden": 32,
        "dropout": 0.5,
        "init": "kaiming",
    }
    recipe["data"].update(source="imagefolder", root=str(root), batch_size=16, eval_batch_size=20)
    recipe["optim"]["lr"] = 0.05
    recipe["train"].update(threads=1, log_every=1)
    for key, value in changes.items():
        node = recipe
        *parents, last = key.split(".")
        for p in parents:
            node = node[p]
        node[last] = value
    return recipe


@pytest.fixture()
def recipe_file(tmp_path, tiny_folder):
    def write(**changes) -> Path:
        path = tmp_path / "tiny.toml"
        path.write_text(to_toml(tiny_recipe(tiny_folder, **changes)))
        return path

    return write


def cli_env(cache_dir: Path) -> dict:
    env = dict(os.environ)
    env["ALEXNET_CACHE"] = str(cache_dir)
    env["PYTHONUNBUFFERED"] = "1"
    env.pop("ALEXNET_DEBUG", None)
    return env


ALEXNET = [sys.executable, "-m", "alexnet"]
