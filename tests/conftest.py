"""Shared fixtures: a tiny synthetic image-folder data set and a recipe that trains on it."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import numpy as np
import pytest

from alexnet.config import Recipe, load_recipe, recipe_from_dict

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


# Where the compiled kernels of native.py are built: the user's own cache, as a real run
# would use, so the suite compiles them at most once per machine whatever cache a test uses.
NATIVE_DIR = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "alexnet" / "native"


@pytest.fixture(scope="session", autouse=True)
def _session_cache(tmp_path_factory):
    """A cache for the whole session, removed at its end, for every test and notebook that does
    not ask for its own (``cache``): the suite never reads or fills the user's cache. (Stores of
    the tests' temporary folders once piled up there, a new one per folder per run: 47 GB in a
    day, till the container tests found no room to build.) Compiled kernels stay shared."""
    import shutil

    path = tmp_path_factory.mktemp("session-cache")
    saved = {name: os.environ.get(name) for name in ("ALEXNET_CACHE", "ALEXNET_NATIVE_DIR")}
    os.environ["ALEXNET_CACHE"] = str(path)
    os.environ["ALEXNET_NATIVE_DIR"] = saved["ALEXNET_NATIVE_DIR"] or str(NATIVE_DIR)
    yield path
    for name, value in saved.items():
        if value is None:
            os.environ.pop(name, None)
        else:
            os.environ[name] = value
    shutil.rmtree(path, ignore_errors=True)


@pytest.fixture()
def cache(tmp_path, monkeypatch) -> Path:
    """A private cache folder, so tests never read or write the user's."""
    path = tmp_path / "cache"
    monkeypatch.setenv("ALEXNET_CACHE", str(path))
    monkeypatch.setenv("ALEXNET_NATIVE_DIR", os.environ.get("ALEXNET_NATIVE_DIR", str(NATIVE_DIR)))
    return path


def tiny_recipe(root: Path, **changes) -> Recipe:
    """The cifar10 recipe shrunk to the tiny folder: a small network, two epochs, float32 (so
    results do not depend on whether the CPU has fast bfloat16). ``changes``: dotted keys."""
    table = load_recipe("cifar10").to_dict()
    table.update(name="tiny", epochs=2)
    table["model"]["options"] = {"widths": [8, 8, 16, 16, 8], "hidden": 32, "dropout": 0.5,
                                 "init": "kaiming"}  # fmt: skip
    table["data"].update(source="imagefolder", root=str(root), batch_size=16, eval_batch_size=20)
    table["optim"]["lr"] = 0.05
    table["train"].update(threads=1, log_every=1, precision="fp32")
    for key, value in changes.items():
        node = table
        *parents, last = key.split(".")
        for p in parents:
            node = node[p]
        node[last] = value
    return recipe_from_dict(table, "tiny recipe")


@pytest.fixture()
def recipe_file(tmp_path, tiny_folder):
    def write(**changes) -> Path:
        path = tmp_path / "tiny.toml"
        path.write_text(tiny_recipe(tiny_folder, **changes).to_toml())
        return path

    return write


def cli_env(cache_dir: Path) -> dict:
    env = dict(os.environ)
    env["ALEXNET_CACHE"] = str(cache_dir)
    env.setdefault("ALEXNET_NATIVE_DIR", str(NATIVE_DIR))  # compiled kernels: built once
    env["PYTHONUNBUFFERED"] = "1"
    env.pop("ALEXNET_DEBUG", None)
    return env


ALEXNET = [sys.executable, "-m", "alexnet"]


@pytest.fixture(autouse=True)
def _restore_torch_globals():
    """Training sets threads and deterministic mode for the process; put them back."""
    import torch

    threads, deterministic = torch.get_num_threads(), torch.are_deterministic_algorithms_enabled()
    yield
    torch.set_num_threads(threads)
    torch.use_deterministic_algorithms(deterministic)
