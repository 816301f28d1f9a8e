"""Data sources, decoding, the decode cache, batch augmentations and the loader."""

import gzip
import io
import os
import pickle
import shutil
import struct
import tarfile
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from alexnet.data import BatchAugment, BatchLoader, Request, load_source, random_crop, random_flip
from alexnet.data.batches import MemoryBatches
from alexnet.data.cache import cache_usage, clear_cache
from alexnet.data.fashion_mnist import DEBIAN, load_fashion_mnist
from alexnet.data.images import decode_image

from .conftest import SHARED_DATA


def folder(root, size=0, channels=3, max_pixels=64_000_000):
    return load_source("imagefolder", Request(str(root), size, channels, max_pixels=max_pixels))


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


@pytest.fixture()
def copy_of(tmp_path, tiny_folder):
    root = tmp_path / "copy"
    shutil.copytree(tiny_folder, root)
    return root


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


@pytest.mark.skipif(not DEBIAN.is_dir(), reason="Debian's dataset-fashion-mnist is not installed")
def test_real_fashion_mnist_from_the_debian_package(cache):
    train, test = load_fashion_mnist(str(DEBIAN))
    assert train.images.shape == (60000, 1, 28, 28) and test.images.shape == (10000, 1, 28, 28)
    assert torch.bincount(train.labels).tolist() == [6000] * 10


def test_image_folder_skips_and_names_corrupt_files(tiny_folder, cache):
    train, val = folder(tiny_folder)
    assert train.classes == ["checks", "columns", "stripes"]
    assert len(train) == 120 and len(val) == 36
    assert [(os.path.basename(p), why) for p, why in train.skipped] == [
        ("broken.png", "not an image")
    ]
    assert "stripes/broken.png (not an image)" in train.skip_summary()
    # The second load comes from the decoded cache and is identical, skip list included.
    again, _ = folder(tiny_folder)
    assert torch.equal(again.images, train.images) and again.skipped == train.skipped
    assert len(list((cache / "decoded").glob("*.pt"))) == 1
    # A subset (data.limit_train) keeps the list of what was skipped.
    assert train.subset(10).skipped == train.skipped


def test_hidden_folders_and_link_loops_are_not_classes(copy_of, cache):
    hidden = copy_of / "train" / ".ipynb_checkpoints"
    hidden.mkdir()
    shutil.copy(copy_of / "train" / "checks" / "000.png", hidden / "000.png")
    shutil.copy(
        copy_of / "train" / "checks" / "000.png", copy_of / "train" / "checks" / ".hidden.png"
    )
    (copy_of / "train" / "loop").symlink_to(copy_of / "train")  # a class that is the split
    (copy_of / "train" / "checks" / "again").symlink_to(copy_of / "train" / "checks")
    nested = copy_of / "train" / "columns" / "more"
    nested.mkdir()
    shutil.copy(copy_of / "train" / "columns" / "000.png", nested / "x.png")
    train, _ = folder(copy_of)
    assert train.classes == ["checks", "columns", "stripes"]
    assert len(train) == 121  # the nested image counts once; the hidden and looped ones not


def test_a_link_up_the_tree_inside_a_class_brings_nothing_in(copy_of, cache):
    (copy_of / "train" / "checks" / "up").symlink_to(copy_of / "train")
    (copy_of / "train" / "checks" / "root").symlink_to(copy_of)
    train, _ = folder(copy_of)
    assert len(train) == 120 and torch.bincount(train.labels).tolist() == [40, 40, 40]


def test_empty_folders_are_not_classes_and_other_files_are_listed(copy_of, cache):
    (copy_of / "train" / "empty").mkdir()
    (copy_of / "train" / "notes").mkdir()
    (copy_of / "train" / "notes" / "readme.txt").write_text("not a class")
    (copy_of / "train" / "checks" / "labels.csv").write_text("a,b")
    train, _ = folder(copy_of)
    assert train.classes == ["checks", "columns", "stripes"]
    why = {os.path.basename(p): w for p, w in train.skipped}
    assert why["empty"] == why["notes"] == "holds no image files, so it is not a class"
    assert why["labels.csv"] == "not an image file name (.csv)"


def test_test_images_of_a_class_not_in_training_are_listed(copy_of, cache):
    extra = copy_of / "val" / "dots"
    extra.mkdir()
    shutil.copy(copy_of / "val" / "checks" / "000.png", extra / "000.png")
    train, val = folder(copy_of)
    assert val.classes == train.classes and len(val) == 36
    assert [why for _, why in val.skipped] == ["its class dots is not among the training classes"]


def test_cache_sees_images_edited_in_place(copy_of, cache):
    before, _ = folder(copy_of)
    target = copy_of / "train" / "checks" / "000.png"
    Image.fromarray(np.zeros((32, 32, 3), np.uint8)).save(target)  # same name, new pixels
    os.utime(target, ns=(1, 1))  # even with an old modification time the size changed
    after, _ = folder(copy_of)
    assert len(after) == len(before) and not torch.equal(after.images, before.images)
    assert int(after.images[0].sum()) == 0
    broken = copy_of / "train" / "stripes" / "broken.png"  # repaired in place: now it counts
    shutil.copy(copy_of / "train" / "stripes" / "000.png", broken)
    repaired, _ = folder(copy_of)
    assert len(repaired) == len(before) + 1 and repaired.skipped == []


def test_a_folders_new_store_replaces_its_old_one(copy_of, tiny_folder, cache):
    """Each edit of a folder left its old store in the cache beside the new one, for good:
    ten edits of an ImageNet folder, ten copies of 40 GB. The new store replaces the old;
    another folder's, and the same folder's at another size, stay."""
    folder(tiny_folder)
    folder(copy_of)
    folder(copy_of, size=16)  # the same folder at another size
    (copy_of / "train" / "checks" / "000.png").unlink()
    after, _ = folder(copy_of)
    stores = sorted((cache / "decoded").glob("*.pt"))
    assert len(stores) == 3 and len(after) == 119
    assert [len(folder(f)[0]) for f in (tiny_folder, copy_of)] == [120, 119]
    assert sorted((cache / "decoded").glob("*.pt")) == stores  # all three read, none rebuilt


def test_cache_clear_frees_the_decoded_sets(tiny_folder, cache):
    folder(tiny_folder)
    assert cache_usage()["decoded"] > 0
    assert clear_cache(["decoded"]) > 0 and cache_usage()["decoded"] == 0
    folder(tiny_folder)
    with pytest.raises(ValueError, match="unknown cache part 'everything'"):
        clear_cache(["decoded", "everything"])
    assert cache_usage()["decoded"] > 0  # a bad part name deletes nothing


def test_a_clear_cut_short_leaves_an_unpacked_folder_the_next_clear_removes(cache, monkeypatch):
    """A signal midway through removing an unpacked archive's folder left it without its
    .complete (913 of 1,022 files), and every later clear kept it as not alexnet's."""
    import alexnet.data.cache as cache_module

    unpacked = cache / "extracted" / "photos-0123abcd-1-2"
    (unpacked / "train" / "a").mkdir(parents=True)
    (unpacked / "train" / "a" / "1.png").write_bytes(b"x" * 100)
    (unpacked / ".complete").touch()

    def cut_short(path: Path) -> None:
        (path / ".complete").unlink()  # what rmtree may take first
        raise KeyboardInterrupt

    with monkeypatch.context() as patched, pytest.raises(KeyboardInterrupt):
        patched.setattr(cache_module, "remove", cut_short)
        clear_cache(["extracted"])
    assert not unpacked.exists()  # never to be taken as a whole unpacking
    assert cache_module.clearing(["extracted"]).kept == []
    assert clear_cache(["extracted"]) == 100 and not (cache / "extracted").exists()


def png_bytes(array: np.ndarray) -> bytes:
    out = io.BytesIO()
    Image.fromarray(array).save(out, format="PNG")
    return out.getvalue()


def test_sixteen_bit_png_is_scaled_not_saturated(tmp_path):
    ramp = (np.arange(64 * 64, dtype=np.uint32).reshape(64, 64) * 16).astype(np.uint16)
    (tmp_path / "ramp.png").write_bytes(png_bytes(ramp))
    for channels in (1, 3):
        image, why = decode_image(tmp_path / "ramp.png", channels)
        assert why == "" and image.dtype == torch.uint8 and image.shape == (channels, 64, 64)
        expected = torch.from_numpy((ramp.astype(np.int64) * 255 // 65535).astype(np.uint8))
        assert (image[0].int() - expected.int()).abs().max() <= 1
        assert 100 < float(image.float().mean()) < 155  # white everywhere would be 255


def test_every_odd_file_becomes_rgb_or_a_listed_skip(tmp_path):
    grey = np.full((40, 30), 77, np.uint8)
    Image.fromarray(grey).save(tmp_path / "grey.jpg")
    Image.new("CMYK", (30, 20), (0, 255, 0, 0)).save(tmp_path / "cmyk.jpg")
    Image.new("RGB", (30, 20), (0, 200, 0)).save(tmp_path / "png-named.jpg", format="PNG")
    Image.new("RGB", (30, 20), (0, 200, 0)).save(tmp_path / "x.bmp")
    Image.new("RGBA", (30, 20), (0, 200, 0, 9)).save(tmp_path / "rgba.png")
    for name in ("grey.jpg", "cmyk.jpg", "png-named.jpg", "x.bmp", "rgba.png"):
        image, why = decode_image(tmp_path / name, 3)
        assert why == "" and image.shape[0] == 3 and image.dtype == torch.uint8, name
    good = (tmp_path / "grey.jpg").read_bytes()
    (tmp_path / "truncated.jpg").write_bytes(good[: len(good) // 2])
    (tmp_path / "empty.jpg").write_bytes(b"")
    (tmp_path / "text.jpg").write_text("hello")
    for name, reason in (("truncated.jpg", "cannot decode"), ("empty.jpg", "empty file"),
                         ("text.jpg", "not an image")):  # fmt: skip
        image, why = decode_image(tmp_path / name, 3)
        assert image is None and why.startswith(reason), (name, why)


def test_images_over_the_pixel_limit_are_skipped_before_decoding(copy_of, cache):
    big = copy_of / "train" / "checks" / "huge.png"
    Image.new("L", (5000, 4000)).save(big)  # 20 megapixels of one colour: a tiny file
    train, _ = folder(copy_of, max_pixels=10_000_000)
    skipped = dict((os.path.basename(p), why) for p, why in train.skipped)
    assert skipped["huge.png"] == "5000x4000 is over the 10-megapixel limit"
    # Over PIL's own decompression-bomb limit (about 179 megapixels): skipped, not an error.
    Image.new("1", (15000, 13000)).save(big)
    train, _ = folder(copy_of, max_pixels=64_000_000)
    assert (
        "over the 64-megapixel limit"
        in dict((os.path.basename(p), w) for p, w in train.skipped)["huge.png"]
    )


def test_large_jpegs_are_decoded_at_a_reduced_scale(tmp_path):
    rng = np.random.default_rng(0)
    Image.fromarray(rng.integers(0, 255, (2000, 3000, 3), dtype=np.uint8)).save(
        tmp_path / "big.jpg"
    )
    image, why = decode_image(tmp_path / "big.jpg", 3, size=227)
    assert why == "" and min(image.shape[1:]) == 250  # 1/8 scale: still at least 227


def test_non_utf8_class_folder_is_a_clear_error(copy_of, cache):
    os.rename(copy_of / "train" / "checks", os.fsencode(copy_of / "train") + b"/caf\xe9")
    with pytest.raises(ValueError, match="not valid UTF-8; rename it"):
        folder(copy_of)


def test_bad_folders_are_one_line_errors(tmp_path, cache):
    with pytest.raises(FileNotFoundError, match="train/<class>"):
        folder(tmp_path)
    with pytest.raises(FileNotFoundError, match="no such"):
        load_source("cifar10", Request(str(tmp_path / "missing"), 32, 3))
    with pytest.raises(ValueError, match="unknown data source"):
        load_source("mnist", Request("", 0, 3))


def write_cifar_archive(path, batches: dict[str, bytes]) -> None:
    with tarfile.open(path, "w:gz") as tar:
        for name, data in batches.items():
            info = tarfile.TarInfo(f"cifar-10-batches-py/{name}")
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))


def cifar_batches(n: int = 4) -> dict[str, bytes]:
    rng = np.random.default_rng(0)
    batch = {"data": rng.integers(0, 255, (n, 3072), dtype=np.uint8), "labels": [1] * n}
    names = [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]
    return {name: pickle.dumps(batch) for name in names}


def test_cifar10_is_downloaded_once(tmp_path, cache, monkeypatch):
    import hashlib
    import urllib.request

    from alexnet.data import cifar10

    archive = tmp_path / "cifar.tar.gz"
    write_cifar_archive(archive, cifar_batches())
    monkeypatch.setattr(cifar10, "SHA256", hashlib.sha256(archive.read_bytes()).hexdigest())
    calls = []

    def fake_urlopen(url, timeout=None):
        calls.append(url)
        return open(archive, "rb")

    monkeypatch.setattr(urllib.request, "urlopen", fake_urlopen)
    for _ in range(2):
        train, test = load_source("cifar10", Request("", 32, 3))
        assert train.images.shape == (20, 3, 32, 32) and len(test) == 4
    assert len(calls) == 1


class Boom:
    def __reduce__(self):
        return (os.system, ("echo pwned",))


def test_malicious_cifar_batch_is_refused_in_one_line(tmp_path, cache):
    batches = cifar_batches()
    batches["data_batch_3"] = pickle.dumps({"data": Boom(), "labels": []})
    write_cifar_archive(tmp_path / "evil.tar.gz", batches)
    with pytest.raises(
        ValueError,
        match=r"data_batch_3: not a CIFAR-10 batch and not loaded.*os\.system|posix\.system",
    ):
        load_source("cifar10", Request(str(tmp_path / "evil.tar.gz"), 32, 3))


@pytest.mark.slow
@pytest.mark.skipif(
    not (SHARED_DATA / "cifar10-jpeg.tar.gz").is_file(),
    reason="../shared/data/cifar10-jpeg.tar.gz is not beside this checkout",
)
def test_real_cifar10_jpeg_archive(cache):
    train, test = load_source("cifar10", Request(str(SHARED_DATA / "cifar10-jpeg.tar.gz"), 32, 3))
    assert train.images.shape == (50000, 3, 32, 32) and test.images.shape == (10000, 3, 32, 32)
    assert train.classes[:3] == ["airplane", "automobile", "bird"]
    assert torch.bincount(test.labels).tolist() == [1000] * 10


def test_random_crop_translates_and_zero_fills():
    g = torch.Generator().manual_seed(0)
    batch = torch.arange(2 * 1 * 6 * 6, dtype=torch.uint8).view(2, 1, 6, 6) + 1
    out = random_crop(batch, 2, g)
    assert out.shape == batch.shape and out.dtype == torch.uint8
    padded = torch.nn.functional.pad(batch, (2, 2, 2, 2))
    for a, p in zip(out, padded, strict=True):
        windows = [p[:, dy : dy + 6, dx : dx + 6] for dy in range(5) for dx in range(5)]
        assert any(torch.equal(a, w) for w in windows)


def test_random_flip_mirrors_about_half():
    g = torch.Generator().manual_seed(0)
    batch = torch.randint(0, 255, (400, 1, 4, 4), dtype=torch.uint8)
    out = random_flip(batch, g)
    flipped = (out == batch.flip(-1)).flatten(1).all(1) & ~(out == batch).flatten(1).all(1)
    kept = (out == batch).flatten(1).all(1)
    assert bool((flipped | kept).all()) and 150 < int(flipped.sum()) < 250


def test_loader_is_deterministic_and_shards_like_one_process(tiny_folder, cache):
    train, _ = folder(tiny_folder)
    plain = MemoryBatches(train, torch.zeros(3), torch.ones(3))
    one = BatchLoader(train, 16, plain, train=True, seed=3)
    one.set_epoch(1)
    ranks = [BatchLoader(train, 16, plain, train=True, seed=3, rank=r, world_size=2)
             for r in range(2)]  # fmt: skip
    for r in ranks:
        r.set_epoch(1)
    assert len(one) == len(ranks[0]) == 120 // 16
    for (x, y, _), (x0, y0, _), (x1, y1, _) in zip(one, *ranks, strict=True):
        assert sorted(y.tolist()) == sorted(y0.tolist() + y1.tolist())
        assert torch.allclose(x.sum(), x0.sum() + x1.sum())
    # Resuming at batch 3 yields exactly batches 3.. of a full pass, augmentation included.
    augmented = MemoryBatches(train, torch.zeros(3), torch.ones(3), BatchAugment(2, True))
    aug = BatchLoader(train, 16, augmented, train=True, seed=3)
    aug.set_epoch(0)
    full = list(aug.batches())
    resumed = list(aug.batches(3))
    assert all(torch.equal(a[0], b[0]) for a, b in zip(full[3:], resumed, strict=True))


def test_eval_loader_counts_every_image_once_across_ranks(tiny_folder, cache):
    _, val = folder(tiny_folder)
    seen = 0
    for r in range(2):
        plain = MemoryBatches(val.subset(35), torch.zeros(3), torch.ones(3))
        loader = BatchLoader(val.subset(35), 8, plain, train=False, rank=r, world_size=2)
        seen += sum(int(v.sum()) for _, _, v in loader)
    assert seen == 35


def test_a_limited_set_stored_class_by_class_keeps_every_class():
    from alexnet.data.imageset import ImageSet

    sorted_labels = torch.arange(4).repeat_interleave(25)
    images = torch.arange(100, dtype=torch.uint8).view(100, 1, 1, 1)
    grouped = ImageSet(images, sorted_labels, list("abcd"), "grouped").subset(8)
    assert grouped.labels.tolist() == [0, 0, 1, 1, 2, 2, 3, 3]
    assert grouped.images.flatten().tolist() == [0, 14, 28, 42, 57, 71, 85, 99]
    mixed = ImageSet(images, sorted_labels.flip(0).roll(3), list("abcd"), "mixed").subset(8)
    assert mixed.images.flatten().tolist() == list(range(8))  # the first ones, as before


def test_decode_image_takes_a_string_path_and_says_why_it_cannot(tmp_path):
    from alexnet.data.images import decode_image

    path = tmp_path / "x.png"
    Image.fromarray(np.zeros((4, 6, 3), np.uint8)).save(path)
    image, why = decode_image(str(path), 3)
    assert image.shape == (3, 4, 6) and why == ""
    assert decode_image(str(tmp_path / "missing.png"), 3) == (
        None,
        "cannot read: No such file or directory",
    )


def test_an_image_too_long_once_rescaled_is_skipped(copy_of, cache, tmp_path):
    """A 60000x1 PNG is 0.06 megapixels, but rescaled to a short side of 32 it would be
    32x1.92 million: over a 10-megapixel limit, so it is skipped and listed, not decoded."""
    long = copy_of / "train" / "checks" / "long.png"
    Image.new("L", (60_000, 1)).save(long)
    train, _ = folder(copy_of, size=32, max_pixels=10_000_000)
    skipped = dict((os.path.basename(p), why) for p, why in train.skipped)
    assert skipped["long.png"] == ("60000x1 rescaled to 32 on its short side would be "
                                   "32x1920000, over the 10-megapixel limit")  # fmt: skip
    image, why = decode_image(long, 3, None, 10_000_000, rescaled=256)
    assert image is None and "256x15360000" in why
    assert decode_image(long, 3, None, 10_000_000)[1] == ""  # kept at its size where not rescaled


def test_a_symlink_loop_or_a_dangling_link_in_a_folder_is_skipped(copy_of, cache):
    """A link that leads back to itself aborted train, eval --data and figures --data ("Too
    many levels of symbolic links") while prepare skipped it: it is skipped and listed."""
    checks = copy_of / "train" / "checks"
    (checks / "loop.png").symlink_to("loop.png")
    (checks / "gone.png").symlink_to("nowhere.png")
    train, _ = folder(copy_of)
    skipped = {os.path.basename(p): why for p, why in train.skipped}
    assert skipped["loop.png"] == "cannot read: Too many levels of symbolic links"
    assert skipped["gone.png"] == "cannot read: No such file or directory"
    assert len(train) == 120


def test_clearing_a_cache_part_linked_elsewhere_deletes_nothing_behind_the_link(cache, tmp_path):
    """``decoded`` linked to a folder of the user's models: clear deleted every .pt in it (and
    said "0.0 MB freed"). The link and all behind it are left: what it points to, another
    disk or one's own folder, is not alexnet's to empty (the command names it, test_cli)."""
    models = tmp_path / "models"
    (models / "runs").mkdir(parents=True)
    mine = {"alexnet.pt": b"weights", "runs/best.pt": b"best", ".alexnet.pt.1.tmp": b"t",
            f"imagefolder-32-3-{'0' * 8}-{'1' * 20}.pt": b"named like a decoded set"}  # fmt: skip
    for name, data in mine.items():
        (models / name).write_bytes(data)
    cache.mkdir()
    (cache / "decoded").symlink_to(models)
    assert clear_cache(["decoded"]) == 0
    assert (cache / "decoded").is_symlink()
    assert {n: (models / n).read_bytes() for n in mine} == mine


def test_labels_outside_the_classes_are_refused_naming_the_data():
    """A CIFAR-10 batch with labels of 99 or -1 trained into an IndexError deep in the loss."""
    from alexnet.data.imageset import ImageSet
    from alexnet.errors import UserError

    images = torch.zeros(3, 3, 4, 4, dtype=torch.uint8)
    for labels, said in (([0, 99, 1], "label 99 of 1 image"), ([-1, -1, 0], "label -1 of 2")):
        with pytest.raises(UserError, match=rf"cifar-10-batches-py: {said}.*not one of the 2"):
            ImageSet(images, torch.tensor(labels), ["a", "b"], source="cifar-10-batches-py")
    assert len(ImageSet(images, torch.tensor([0, 1, 1]), ["a", "b"])) == 3


def test_a_float_image_is_scaled_or_skipped_with_its_range(tmp_path):
    """A float TIFF of values 0-1 decoded as an all-black image, without a word."""
    values = np.random.default_rng(0).random((20, 30)).astype(np.float32)
    Image.fromarray(values).save(tmp_path / "unit.tiff")
    image, why = decode_image(tmp_path / "unit.tiff", 1)
    assert why == "" and torch.equal(
        image[0], torch.from_numpy(np.rint(values * 255).astype(np.uint8))
    )
    assert decode_image(tmp_path / "unit.tiff", 3)[0].shape == (3, 20, 30)
    Image.fromarray(values * 1000).save(tmp_path / "wide.tiff")
    image, why = decode_image(tmp_path / "wide.tiff", 3)
    assert image is None and "floating-point image of values" in why and "not 0-1 or 0-255" in why


def test_clearing_removes_only_what_alexnet_wrote(cache):
    """ALEXNET_CACHE pointed at a folder of one's own, with decoded/, extracted/ and native/
    folders in it: cache clear deleted those folders with the user's files inside."""
    written = {"decoded": f"imagefolder-32-3-{'ab' * 4}-{'cd' * 10}.pt",
               "extracted": "photos-0123abcd-1-2",
               "native": "lrn_cpu-abcdef012345", "downloads": "cifar-10-python.tar.gz"}  # fmt: skip
    for part, name in written.items():
        (cache / part).mkdir(parents=True)
        (cache / part / "thesis.txt").write_text("mine")
        if part in ("extracted", "native"):
            (cache / part / name).mkdir()
            (cache / part / name / (".complete" if part == "extracted" else "lock")).touch()
            (cache / part / "notes").mkdir()  # a folder of one's own
        else:
            (cache / part / name).write_bytes(b"x" * 10)
    clear_cache(list(written))
    for part, name in written.items():
        assert (cache / part / "thesis.txt").read_text() == "mine"
        assert not (cache / part / name).exists()
    assert (cache / "native" / "notes").is_dir() and (cache / "extracted" / "notes").is_dir()


def test_clearing_keeps_a_users_files_named_like_alexnets_kinds(tiny_folder, cache, monkeypatch):
    """A thesis.pt of one's own in decoded/ was deleted without a word (any name ending in .pt
    was taken for a decoded set), and so was any .tar.gz in downloads/. Only the names
    alexnet makes go: here made by the code that makes them (a decode, a CIFAR-10 download)."""
    from alexnet.data import cifar10

    folder(tiny_folder)
    (store,) = (cache / "decoded").glob("*.pt")
    monkeypatch.setattr("urllib.request.urlopen", lambda url, timeout: io.BytesIO(b"x" * 300))
    download = cifar10._official_archive(verify=False)
    assert download.parent == cache / "downloads" and download.read_bytes() == b"x" * 300
    abandoned = download.with_name(download.name + ".part")  # download.download's, killed
    abandoned.write_bytes(b"x" * 20)
    mine = [cache / "decoded" / "thesis.pt", cache / "decoded" / f".{store.name}.notes",
            cache / "downloads" / "mine.tar.gz", cache / "downloads" / "cifar-10-python.tgz"]  # fmt: skip
    for path in mine:
        path.write_text("mine")
    freed = store.stat().st_size + 320
    assert clear_cache(["decoded", "downloads"]) == freed
    assert not store.exists() and not download.exists() and not abandoned.exists()
    assert all(path.read_text() == "mine" for path in mine)


def test_clearing_counts_the_bytes_of_the_files_it_removed(cache, tmp_path):
    """A link in the cache counted its target's size as freed, though only the link went (and
    the target stays, as everything behind a link does)."""
    big = tmp_path / "big.bin"
    big.write_bytes(b"x" * 5000)
    (cache / "decoded").mkdir(parents=True)
    store = cache / "decoded" / f"cifar10-32-3-{'a' * 8}-{'b' * 20}.pt"
    store.write_bytes(b"x" * 1000)
    store.with_name(f".{store.name}.4242.tmp").write_bytes(b"x" * 10)
    store.with_name(f"imagefolder-None-1-{'c' * 8}-{'d' * 20}.pt").symlink_to(big)
    unpacked = cache / "extracted" / "photos-0123abcd-100-200"
    (unpacked / "a").mkdir(parents=True)
    (unpacked / ".complete").touch()
    (unpacked / "a" / "b.bin").write_bytes(b"x" * 300)
    (unpacked / "a" / "big").symlink_to(big)
    (unpacked / "a" / "up").symlink_to(tmp_path, target_is_directory=True)
    killed = cache / "extracted" / "photos-0123abcd-100-200.999.part"
    killed.mkdir()
    (killed / "c.bin").write_bytes(b"x" * 7)
    assert clear_cache(["decoded", "extracted"]) == 1317
    assert big.read_bytes() == b"x" * 5000 and not (cache / "decoded").exists()
    assert not (cache / "extracted").exists()


def test_a_native_build_folder_is_one_clear_removes(cache, monkeypatch):
    """The build folders ops/native.py makes (named there) are ones clear knows: a failed build
    leaves its folder and lock, as a killed one does."""
    from torch.utils import cpp_extension

    from alexnet.ops import native

    def fail(**kwargs):
        (Path(kwargs["build_directory"]) / "lock").touch()
        raise RuntimeError("no compiler here")

    monkeypatch.delenv("ALEXNET_NATIVE_DIR")
    monkeypatch.delenv("ALEXNET_NATIVE", raising=False)
    monkeypatch.setattr(cpp_extension, "load", fail)
    native.load.cache_clear()
    try:
        with pytest.warns(RuntimeWarning, match="could not build"):
            assert native.load("lrn_cpu") is False
    finally:
        native.load.cache_clear()
    (build,) = (cache / "native").iterdir()
    assert build.name.startswith("lrn_cpu-") and (build / "lock").exists()
    clear_cache(["native"])
    assert not (cache / "native").exists()
