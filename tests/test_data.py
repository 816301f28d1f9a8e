"""Data sources, batch augmentations and the loader."""

import gzip
import struct

import numpy as np
import pytest
import torch

from alexnet.data import BatchAugment, BatchLoader, load_source, random_crop, random_flip
from alexnet.data.sources import DEBIAN_FASHION_MNIST, load_fashion_mnist

from .conftest import SHARED_DATA


def write_idx(path, array: np.ndarray, gz: bool) -> None:
    header = bytes([0, 0, 8, array.ndim]) + struct.pack(f">{array.ndim}I", *array.shape)
    data = header + array.astype(np.uint8).tobytes()
    path.write_bytes(gzip.compress(data) if gz else data)


@pytest.fixture()
def fake_fashion(tmp_path):
    rng = np.random.default_rng(0)
    for prefix, n in (("train", 30), ("t10k", 10)):
        write_idx(
            tmp_path / f"{prefix}-images-idx3-ubyte.gz", rng.integers(0, 255, (n, 28, 28)), gz=True
        )
        write_idx(tmp_path / f"{prefix}-labels-idx1-ubyte", rng.integers(0, 10, (n,)), gz=False)
    return tmp_path


def test_idx_files_gz_or_raw(fake_fashion, cache):
    train, test = load_fashion_mnist(str(fake_fashion), verify=False)
    assert train.images.shape == (30, 1, 28, 28) and train.images.dtype == torch.uint8
    assert test.labels.shape == (10,) and len(train.classes) == 10


def test_checksums_refuse_a_different_copy(fake_fashion, cache):
    with pytest.raises(ValueError, match="sha256"):
        load_fashion_mnist(str(fake_fashion))


def test_truncated_idx_is_a_clear_error(fake_fashion, cache):
    raw = (fake_fashion / "train-labels-idx1-ubyte").read_bytes()
    (fake_fashion / "train-labels-idx1-ubyte").write_bytes(raw[:-5])
    with pytest.raises(ValueError, match="truncated"):
        load_fashion_mnist(str(fake_fashion), verify=False)


def test_missing_fashion_mnist_says_how_to_get_it(tmp_path, cache):
    with pytest.raises(FileNotFoundError, match="apt-get install dataset-fashion-mnist"):
        load_fashion_mnist(str(tmp_path))
    with pytest.raises(FileNotFoundError, match="no such folder"):
        load_fashion_mnist(str(tmp_path / "nope"))


@pytest.mark.skipif(
    not DEBIAN_FASHION_MNIST.is_dir(), reason="Debian's dataset-fashion-mnist is not installed"
)
def test_real_fashion_mnist_from_the_debian_package(cache):
    train, test = load_fashion_mnist(str(DEBIAN_FASHION_MNIST))
    assert train.images.shape == (60000, 1, 28, 28) and test.images.shape == (10000, 1, 28, 28)
    assert torch.bincount(train.labels).tolist() == [6000] * 10


def test_image_folder_skips_and_counts_corrupt_files(tiny_folder, cache):
    train, val = load_source("imagefolder", str(tiny_folder))
    assert train.classes == ["checks", "columns", "stripes"]
    assert len(train) == 120 and len(val) == 36 and train.skipped == 1
    assert any("skipped 1" in n for n in train.notes)
    # The second load comes from the decoded cache and is identical.
    again, _ = load_source("imagefolder", str(tiny_folder))
    assert torch.equal(again.images, train.images) and again.skipped == 1
    assert len(list((cache / "decoded").glob("*.pt"))) == 1


def test_image_folder_cache_notices_new_images(tmp_path, tiny_folder, cache):
    import shutil

    root = tmp_path / "copy"
    shutil.copytree(tiny_folder, root)
    before, _ = load_source("imagefolder", str(root))
    shutil.copy(root / "train" / "checks" / "000.png", root / "train" / "checks" / "extra.png")
    after, _ = load_source("imagefolder", str(root))
    assert len(after) == len(before) + 1


def test_bad_folders_are_one_line_errors(tmp_path, cache):
    with pytest.raises(FileNotFoundError, match="train/<class>"):
        load_source("imagefolder", str(tmp_path))
    with pytest.raises(FileNotFoundError, match="no such"):
        load_source("cifar10", str(tmp_path / "missing"))
    with pytest.raises(ValueError, match="unknown data source"):
        load_source("mnist", None)


@pytest.mark.skipif(
    not (SHARED_DATA / "cifar10-jpeg.tar.gz").is_file(),
    reason="../shared/data/cifar10-jpeg.tar.gz is not beside this checkout",
)
def test_real_cifar10_jpeg_archive(cache):
    train, test = load_source("cifar10", str(SHARED_DATA / "cifar10-jpeg.tar.gz"))
    assert train.images.shape == (50000, 3, 32, 32) and test.images.shape == (10000, 3, 32, 32)
    assert train.classes[:3] == ["airplane", "automobile", "bird"]
    assert torch.bincount(test.labels).tolist() == [1000] * 10


def test_random_crop_translates_and_zero_fills():
    g = torch.Generator().manual_seed(0)
    batch = torch.arange(2 * 1 * 6 * 6, dtype=torch.uint8).view(2, 1, 6, 6) + 1
    out = random_crop(batch, 2, g)
    assert out.shape == batch.shape and out.dtype == torch.uint8
    for a, b in zip(out, batch, strict=True):
        found = False
        for dy in range(-2, 3):
            for dx in range(-2, 3):
                shifted = torch.zeros_like(b)
                ys, yd = (
                    (slice(dy, None), slice(None, 6 - dy))
                    if dy >= 0
                    else (slice(None, 6 + dy), slice(-dy, None))
                )
                xs, xd = (
                    (slice(dx, None), slice(None, 6 - dx))
                    if dx >= 0
                    else (slice(None, 6 + dx), slice(-dx, None))
                )
                shifted[:, yd, xd] = b[:, ys, xs]
                found |= torch.equal(a, shifted)
        assert found


def test_random_flip_mirrors_about_half():
    g = torch.Generator().manual_seed(0)
    batch = torch.randint(0, 255, (400, 1, 4, 4), dtype=torch.uint8)
    out = random_flip(batch, g)
    flipped = (out == batch.flip(-1)).flatten(1).all(1) & ~(out == batch).flatten(1).all(1)
    kept = (out == batch).flatten(1).all(1)
    assert bool((flipped | kept).all()) and 150 < int(flipped.sum()) < 250


def test_loader_is_deterministic_and_shards_like_one_process(tiny_folder, cache):
    train, _ = load_source("imagefolder", str(tiny_folder))
    args = {"mean": torch.zeros(3), "std": torch.ones(3), "seed": 3}
    one = BatchLoader(train, 16, train=True, augment=None, **args)
    one.set_epoch(1)
    ranks = [
        BatchLoader(train, 16, train=True, augment=None, rank=r, world_size=2, **args)
        for r in range(2)
    ]
    for r in ranks:
        r.set_epoch(1)
    assert len(one) == len(ranks[0]) == 120 // 16
    for (x, y, _), (x0, y0, _), (x1, y1, _) in zip(one, *ranks, strict=True):
        assert sorted(y.tolist()) == sorted(y0.tolist() + y1.tolist())
        assert torch.allclose(x.sum(), x0.sum() + x1.sum())
    # Resuming at batch 3 yields exactly batches 3.. of a full pass, augmentation included.
    aug = BatchLoader(train, 16, train=True, augment=BatchAugment(2, True), **args)
    aug.set_epoch(0)
    full = list(aug.batches())
    resumed = list(aug.batches(3))
    assert all(torch.equal(a[0], b[0]) for a, b in zip(full[3:], resumed, strict=True))


def test_eval_loader_counts_every_image_once_across_ranks(tiny_folder, cache):
    _, val = load_source("imagefolder", str(tiny_folder))
    args = {"mean": torch.zeros(3), "std": torch.ones(3)}
    seen = 0
    for r in range(2):
        loader = BatchLoader(val.subset(35), 8, train=False, rank=r, world_size=2, **args)
        seen += sum(int(v.sum()) for _, _, v in loader)
    assert seen == 35
