"""The image store of ``alexnet prepare``: bad files, resuming, workers, checksums, layouts,
flat ILSVRC folders, settings, the training statistics, and real ImageNet JPEGs end to end."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from alexnet.data.prepare import Plan, prepare, verify_store
from alexnet.data.store import StoreError, chunk_name, open_store
from alexnet.errors import UserError
from alexnet.training.train import fit

from .conftest import ALEXNET, SHARED_DATA, cli_env, tiny_recipe
from .test_train import wait_for


def run_cli(args: list[str], cache: Path, timeout: float = 300) -> subprocess.CompletedProcess:
    return subprocess.run(
        ALEXNET + args, env=cli_env(cache), capture_output=True, text=True, timeout=timeout
    )


def smooth(h: int, w: int, seed: int) -> np.ndarray:
    """A smooth RGB picture (ramps and a wave), so JPEG keeps it to a few grey levels."""
    rng = np.random.default_rng(seed)
    y, x = (np.mgrid[0:h, 0:w] / max(h, w))[..., None]
    a, b, c, phase = rng.uniform(0, 1, (4, 3))
    img = 40 + 80 * a * y + 80 * b * x + 40 * c * np.sin(6 * y + 4 * x + 6 * phase)
    return np.clip(img, 0, 255).astype(np.uint8)


SIZES = ((40, 30), (64, 48), (48, 64), (50, 40), (30, 40))  # (width, height), varied


def make_tree(
    root: Path, classes=("a", "b", "c"), per_class: int = 4, split: str = "train", seed: int = 0
) -> Path:
    """``root/split/<class>/NNN.{jpg,png}``: small smooth images of varied sizes."""
    for c, name in enumerate(classes):
        folder = root / split / name
        folder.mkdir(parents=True, exist_ok=True)
        for i in range(per_class):
            w, h = SIZES[(i + c) % len(SIZES)]
            suffix = "png" if i % 2 else "jpg"
            Image.fromarray(smooth(h, w, seed + 100 * c + i)).save(folder / f"{i:03d}.{suffix}")
    return root


def store_files(root: Path) -> dict[str, bytes]:
    """Every file of a store by relative path, hidden (temporary) files left out."""
    return {
        str(p.relative_to(root)): p.read_bytes()
        for p in sorted(root.rglob("*"))
        if p.is_file() and not any(part.startswith(".") for part in p.relative_to(root).parts)
    }


def assert_same_store(a: Path, b: Path) -> None:
    """Identical stores: the same files, byte for byte."""
    fa, fb = store_files(a), store_files(b)
    assert sorted(fa) == sorted(fb)
    assert [name for name in fa if fa[name] != fb[name]] == []


def kept_files(store: Path, split: str = "train") -> list[str]:
    """The file each stored image came from, in store order (from the chunk records)."""
    meta = json.loads((store / "store.json").read_text())
    chunks = meta["splits"][split]["chunks"]
    records = [
        json.loads((store / split / f"{chunk_name(i)}.json").read_text()) for i in range(chunks)
    ]
    return [row[0] for r in records for row in r["kept"]]


# --------------------------------------------------------------------------------------------
# Bad and odd files


def test_bad_files_are_skipped_counted_and_listed_and_odd_ones_become_rgb(tmp_path, monkeypatch):
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", Image.MAX_IMAGE_PIXELS)  # prepare sets it
    src, out = tmp_path / "src", tmp_path / "store"
    folder = src / "train" / "a"
    folder.mkdir(parents=True)
    good = smooth(27, 36, 1)  # 972 pixels: under the limit of 1,000
    Image.fromarray(good).save(folder / "good.jpg")
    Image.fromarray(good[:, :, 1]).save(folder / "grey.jpg")
    Image.fromarray(good).convert("CMYK").save(folder / "cmyk.jpg", format="JPEG")
    Image.fromarray(good).save(folder / "png-named.jpg", format="PNG")
    Image.fromarray(smooth(30, 40, 2)).save(folder / "big.png")  # 1,200 pixels
    Image.fromarray(smooth(48, 64, 3)).save(folder / "huge.png")  # over twice the limit
    (folder / "empty.jpg").write_bytes(b"")
    jpeg = (folder / "good.jpg").read_bytes()
    (folder / "truncated.jpg").write_bytes(jpeg[: len(jpeg) // 2])
    (folder / "text.jpg").write_text("hello, not a picture")
    (folder / "notes.txt").write_text("some notes")

    meta = prepare(src, out, plan=Plan(size=32, max_pixels=1000), chunk=3, progress=False)

    info = meta["splits"]["train"]
    reasons = {Path(p).name: why for p, why in info["skipped"]}
    bad = ["big.png", "empty.jpg", "huge.png", "notes.txt", "text.jpg", "truncated.jpg"]
    assert sorted(reasons) == bad
    assert reasons["empty.jpg"] == "empty file"
    assert reasons["truncated.jpg"].startswith("cannot decode")
    assert reasons["text.jpg"] == "not an image"
    assert reasons["notes.txt"] == "not an image file name (.txt)"
    assert reasons["big.png"] == "40x30 is over the 0.001-megapixel limit"
    # Over twice the limit PIL itself refuses the file, before its size is known.
    assert reasons["huge.png"].endswith("over the 0.001-megapixel limit")
    assert info["images"] == 4
    # The same list, with the full paths, in the split's skipped.txt.
    lines = (out / "train" / "skipped.txt").read_text().splitlines()
    assert lines[0] == "file\treason"
    assert sorted(lines[1:]) == sorted(f"{p}\t{why}" for p, why in info["skipped"])
    assert all(Path(line.split("\t")[0]).is_absolute() for line in lines[1:])

    split = open_store(out).split("train")
    assert len(split) == 4 and open_store(out).stats().images == 4
    names = [Path(p).name for p in kept_files(out)]
    assert names == ["cmyk.jpg", "good.jpg", "grey.jpg", "png-named.jpg"]
    images = {name: split.decode(i) for i, name in enumerate(names)}
    for name, image in images.items():
        assert image.shape == (32, 32, 3) and image.dtype == torch.uint8, name
    grey = images["grey.jpg"]
    assert torch.equal(grey[..., 0], grey[..., 1]) and torch.equal(grey[..., 1], grey[..., 2])
    # CMYK and PNG-in-disguise keep their colours: close to the ordinary JPEG of the same picture.
    for name in ("cmyk.jpg", "png-named.jpg"):
        diff = (images[name].float() - images["good.jpg"].float()).abs().mean()
        assert diff < 4, (name, float(diff))


# --------------------------------------------------------------------------------------------
# Resuming and workers: the same store whatever happened on the way


def test_a_killed_prepare_resumes_to_the_same_store(tmp_path, cache):
    src = make_tree(tmp_path / "src", per_class=20)  # 60 images: 12 chunks of 5
    killed, straight = tmp_path / "killed", tmp_path / "straight"
    options = ["--chunk", "5", "--workers", "0", "--no-progress", "--size", "32"]
    args = ["prepare", str(src), str(killed), *options]
    proc = subprocess.Popen(
        ALEXNET + args, env=cli_env(cache), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE
    )
    deadline = time.time() + 120
    while not list((killed / "train").glob("chunk-*.json")) and proc.poll() is None:
        assert time.time() < deadline, "prepare wrote no chunk in 2 minutes"
        time.sleep(0.002)
    proc.send_signal(signal.SIGKILL)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == -signal.SIGKILL, err  # killed, not finished
    # At the kill the split was not complete: some chunks done, store.json not naming it.
    done = list((killed / "train").glob("chunk-*.json"))
    assert 1 <= len(done) < 12
    assert "train" not in json.loads((killed / "store.json").read_text())["splits"]
    assert not (killed / "train" / "index.pt").exists()

    resumed = run_cli(args, cache)
    assert resumed.returncode == 0, resumed.stderr
    assert "train 60 images, 0 skipped" in resumed.stdout
    prepare(src, straight, plan=Plan(size=32), chunk=5, progress=False)
    assert_same_store(killed, straight)


@pytest.fixture(scope="module")
def by_workers(tmp_path_factory) -> tuple[Path, Path]:
    """One small source (four chunks, one bad file) prepared with 0 and with 2 workers."""
    root = tmp_path_factory.mktemp("workers")
    src = make_tree(root / "src", per_class=5)
    (src / "train" / "b" / "broken.jpg").write_bytes(b"no")
    stores = root / "zero", root / "two"
    for out, workers in zip(stores, (0, 2), strict=True):
        prepare(src, out, plan=Plan(size=32), workers=workers, chunk=4, progress=False)
    return stores


def test_workers_make_the_same_store(by_workers):
    zero, two = by_workers
    assert json.loads((zero / "store.json").read_text())["splits"]["train"]["chunks"] == 4
    assert_same_store(zero, two)


# --------------------------------------------------------------------------------------------
# Checksums


def test_verify_finds_a_changed_byte_and_a_missing_chunk(tmp_path, cache):
    src, out = make_tree(tmp_path / "src"), tmp_path / "store"
    prepare(src, out, plan=Plan(size=32), chunk=4, progress=False)
    assert verify_store(out) == []
    data = out / "train" / "chunk-00001.data"
    blob = bytearray(data.read_bytes())
    blob[len(blob) // 2] ^= 0x01
    data.write_bytes(bytes(blob))
    problems = verify_store(out)
    assert len(problems) == 1 and problems[0].startswith(str(data))
    assert "sha256 differs" in problems[0]
    proc = run_cli(["prepare", "--verify", str(out)], cache)
    assert proc.returncode == 1, proc.stderr
    assert str(data) in proc.stdout and "damaged: 1 problem(s)" in proc.stdout
    (out / "train" / "chunk-00002.data").unlink()
    assert verify_store(out)[1].startswith(f"{out / 'train' / 'chunk-00002.data'}: missing")
    assert "run alexnet prepare again" in verify_store(out)[1]


def test_verify_finds_a_store_that_training_cannot_read(tmp_path):
    """Verified as sound, and refused by train: a store whose prepare was stopped before its
    first split was done, one whose statistics were deleted, one whose index is not a
    tensor file."""
    src, out = make_tree(tmp_path / "src"), tmp_path / "store"
    prepare(src, out, plan=Plan(size=32), chunk=4, progress=False)
    (out / "stats.pt").unlink()
    assert any("no training statistics" in p for p in verify_store(out))
    (out / "train" / "index.pt").write_bytes(b"not a tensor file")
    assert any(
        p.startswith(f"{out / 'train' / 'index.pt'}: cannot read") for p in verify_store(out)
    )
    meta = json.loads((out / "store.json").read_text())
    (out / "store.json").write_text(json.dumps(meta | {"splits": {}}))
    assert verify_store(out) == [f"{out}: no split is finished (its prepare was stopped or "
                                 "failed); run alexnet prepare again"]  # fmt: skip


@pytest.mark.parametrize("layout", ["raw", "jpeg"])
def test_verify_finds_a_store_json_that_disagrees_with_its_images(tmp_path, layout):
    """An edited size (36 for 40) or count in store.json passed --verify, and training read
    every image askew without a word."""
    src, out = make_tree(tmp_path / "src"), tmp_path / "store"
    prepare(src, out, plan=Plan(size=40, layout=layout), chunk=4, progress=False)
    meta = json.loads((out / "store.json").read_text())
    (out / "store.json").write_text(json.dumps(meta | {"size": 36}))
    assert any("says images of (36, 36, 3), but its mean image is (40, 40, 3)" in p
               for p in verify_store(out))  # fmt: skip
    with pytest.raises(StoreError, match="a damaged or edited store"):
        open_store(out).stats()
    counted = meta["splits"] | {"train": meta["splits"]["train"] | {"images": 9999}}
    (out / "store.json").write_text(json.dumps(meta | {"splits": counted}))
    assert any("says 9999 images where its train index holds" in p for p in verify_store(out))


@pytest.mark.parametrize(
    ("edit", "words"),
    [({"classes": ["a"], "names": ["a"]}, "names 1 classes, but its train index has labels up to 2"),
     ({"names": ["x"]}, "its names is ['x'], not one name per class"),
     ({"classes": ["a", "a", "c"]}, "its classes is ['a', 'a', 'c'], not a list of distinct names"),
     ({"size": "abc"}, "its size is abc, not a whole number of pixels"),
     ({"channels": 2}, "its channels is 2, not 1 or 3"),
     ({"splits": {"train": {"images": "12", "chunks": 3}}}, "its train split is {'images': '12'")],
    ids=["fewer classes", "fewer names", "a class twice", "size as text", "two channels",
         "a count as text"],
)  # fmt: skip
def test_a_store_json_edited_is_refused_by_every_reader_and_verify(tmp_path, edit, words):
    """A class list shorter than the labels crashed training with an IndexError; names
    shorter than the classes trained, then crashed drawing the report; a size that is text
    was a ValueError traceback, and --verify blamed the index files."""
    src, out = make_tree(tmp_path / "src"), tmp_path / "store"
    prepare(src, out, plan=Plan(size=32), chunk=4, progress=False)
    meta = json.loads((out / "store.json").read_text())
    (out / "store.json").write_text(json.dumps(meta | edit))
    with pytest.raises(StoreError, match="a damaged or edited store: prepare it again") as error:
        open_store(out).split("train")
    assert words in str(error.value)
    try:  # a record it cannot read at all is its one error; others are among its problems
        problems = verify_store(out)
    except StoreError as exc:
        problems = [str(exc)]
    assert any(words in p for p in problems), problems


@pytest.mark.parametrize("existed", [False, True], ids=["new folder", "empty folder"])
def test_a_prepare_that_keeps_no_image_leaves_no_store(tmp_path, existed):
    """Every image over the pixel limit: the one-line error left store.json and train/."""
    src, out = make_tree(tmp_path / "src"), tmp_path / "out"
    if existed:
        out.mkdir()
    with pytest.raises(StoreError, match=r"train: no readable images; e\.g\. .*limit"):
        prepare(src, out, plan=Plan(size=16, max_pixels=1), chunk=4, progress=False)
    assert out.is_dir() == existed and not (existed and any(out.iterdir()))
    with pytest.raises(UserError, match=r"--max-megapixels 1e-07: must be from 0\.000001"):
        Plan(max_pixels=0.1).check()


def test_a_chunk_cut_short_is_refused_when_the_store_is_opened(tmp_path):
    """Found only when the report read its last images, after a whole epoch of training."""
    src, out = make_tree(tmp_path / "src"), tmp_path / "store"
    prepare(src, out, plan=Plan(size=32), chunk=4, progress=False)
    data = out / "train" / "chunk-00001.data"
    size = data.stat().st_size
    os.truncate(data, size - 100)
    with pytest.raises(StoreError, match=f"{size - 100} bytes where its index needs {size}; "):
        open_store(out).split("train")
    assert any("sha256 differs" in p for p in verify_store(out))


# --------------------------------------------------------------------------------------------
# Layouts, class lists, settings


def test_the_three_layouts_hold_the_same_images(tmp_path):
    src = make_tree(tmp_path / "src")
    splits = {}
    for layout in ("raw", "jpeg", "files"):
        prepare(src, tmp_path / layout, plan=Plan(layout=layout, size=32), chunk=5, progress=False)
        splits[layout] = open_store(tmp_path / layout).split("train")
    raw, jpeg, files = splits["raw"], splits["jpeg"], splits["files"]
    assert len(raw) == 12 and raw.labels.tolist() == [0] * 4 + [1] * 4 + [2] * 4
    assert torch.equal(raw.labels, jpeg.labels) and torch.equal(raw.labels, files.labels)
    assert not list((tmp_path / "files" / "train").glob("*.data"))  # no copies
    for i in range(len(raw)):
        pixels = raw.decode(i)
        assert torch.equal(files.decode(i), pixels), i
        assert (jpeg.decode(i).float() - pixels.float()).abs().mean() < 3, i
        # A band of rows reads the same rows in every layout.
        assert torch.equal(files.read_band(i, 5, 20), pixels[5:25])
    # Every layout has the same statistics (they are taken before encoding).
    stats = [open_store(tmp_path / name).stats() for name in ("raw", "jpeg", "files")]
    assert stats[0].same_as(stats[1]) and stats[0].same_as(stats[2])


def test_flat_folder_follows_the_class_index_and_skips_unknown_wnids(tmp_path):
    src = tmp_path / "flat"
    src.mkdir()
    index = {"0": ["n02000002", "second"], "1": ["n01000001", "first"]}  # not sorted order
    (src / "imagenet_class_index.json").write_text(json.dumps(index))
    for i, name in enumerate(
        ("n01000001_a.JPEG", "n02000002_b.JPEG", "n01000001_c.JPEG", "n03000003_stray.JPEG")
    ):
        Image.fromarray(smooth(30, 40, i)).save(src / name, format="JPEG")
    meta = prepare(src, tmp_path / "store", plan=Plan(size=32), progress=False)
    assert meta["classes"] == ["n02000002", "n01000001"] and meta["names"] == ["second", "first"]
    split = open_store(tmp_path / "store").split("train")
    files = [Path(p).name for p in kept_files(tmp_path / "store")]
    assert files == ["n01000001_a.JPEG", "n01000001_c.JPEG", "n02000002_b.JPEG"]
    assert split.labels.tolist() == [1, 1, 0]
    assert [(Path(p).name, why) for p, why in split.skipped] == [
        ("n03000003_stray.JPEG", "class n03000003 is not in the class list")
    ]


def test_resuming_with_other_settings_is_a_one_line_error(tmp_path, cache):
    src, out = make_tree(tmp_path / "src"), tmp_path / "store"
    prepare(src, out, plan=Plan(size=32), chunk=6, progress=False)
    before = store_files(out)
    common = ["prepare", str(src), str(out), "--workers", "0", "--no-progress", "--chunk", "6"]
    for option, expected in (
        (["--size", "40"], "size 32, not 40"),
        (["--size", "32", "--layout", "jpeg"], "layout 'raw', not 'jpeg'"),
    ):
        proc = run_cli(common + option, cache)
        assert proc.returncode == 2, proc.stderr
        lines = proc.stderr.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("alexnet prepare: error:"), proc.stderr
        assert expected in lines[0] and "other settings" in lines[0]
    assert store_files(out) == before  # nothing was touched
    prepare(src, out, plan=Plan(size=32), chunk=6, progress=False)  # the same: a no-op resume
    assert store_files(out) == before


# --------------------------------------------------------------------------------------------
# Statistics


def test_stats_are_the_mean_image_and_pca_of_the_stored_pixels(tmp_path):
    src, out = make_tree(tmp_path / "src", per_class=5), tmp_path / "store"
    prepare(src, out, plan=Plan(size=32), chunk=4, progress=False)  # merged over four chunks
    store = open_store(out)
    split, stats = store.split("train"), store.stats()
    images = torch.stack([split.decode(i) for i in range(len(split))]).double()  # N, H, W, C
    assert stats.images == len(split) == 15
    assert stats.mean_image.shape == (32, 32, 3)
    assert torch.allclose(stats.mean_image.double(), images.mean(0), rtol=0, atol=1e-4)
    pixels = images.reshape(-1, 3) / 255
    cov = torch.from_numpy(np.cov(pixels.numpy().T, bias=True))
    val, vec = stats.eigval.double(), stats.eigvec.double()
    assert val.shape == (3,) and vec.shape == (3, 3)
    assert bool((val[:-1] >= val[1:]).all()) and bool((val >= 0).all())
    assert torch.allclose(vec @ torch.diag(val) @ vec.T, cov, rtol=1e-4, atol=1e-7)
    assert torch.allclose(vec.T @ vec, torch.eye(3, dtype=torch.float64), atol=1e-5)
    assert torch.allclose(stats.channel_mean.double(), pixels.mean(0), atol=1e-6)
    assert torch.allclose(stats.channel_std.double(), cov.diagonal().sqrt(), atol=1e-6)


# --------------------------------------------------------------------------------------------
# Real ILSVRC images, the full network


@pytest.mark.slow  # real data: make test-slow (CI runs it after make test)
@pytest.mark.skipif(
    not (SHARED_DATA / "imagenet-sample").is_dir(),
    reason="../shared/data/imagenet-sample (1,000 real ILSVRC JPEGs) is not beside this checkout",
)
def test_real_imagenet_sample_prepares_and_trains_the_paper_network(tmp_path, cache):
    sample, store, runs = SHARED_DATA / "imagenet-sample", tmp_path / "store", tmp_path / "runs"
    for split in ("train", "val"):
        options = f"--split {split} --layout raw --workers 2 --chunk 250 --no-progress".split()
        proc = run_cli(["prepare", str(sample), str(store), *options], cache)
        assert proc.returncode == 0, proc.stderr
        assert f"{split} 1000 images, 0 skipped" in proc.stdout
    meta = json.loads((store / "store.json").read_text())
    assert meta["size"] == 256 and len(meta["classes"]) == 1000
    assert meta["names"][0] == "tench" and meta["splits"]["train"]["chunks"] == 4

    small = ["epochs=1", "data.limit_train=32", "data.limit_test=16", "data.batch_size=16"]
    small += ["data.eval_batch_size=16"]
    args = ["train", "--recipe", "imagenet-paper", "--data", str(store), "--runs", str(runs)]
    args += ["--name", "paper", "--no-progress", *(f"--set={kv}" for kv in small)]
    proc = run_cli(args, cache, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    run = runs / "paper"
    recipe = (run / "recipe.toml").read_text()
    for line in (
        'normalise = "mean-image"',
        "pca_std = 0.1",
        "flip = true",
        'arch = "alexnet"',
        "image_size = 227",
    ):
        assert line in recipe, line
    state = torch.load(run / "last.pt", weights_only=True)
    assert state["epoch"] == 1
    pre = state["preprocessing"]
    assert pre["mean_image"].shape == (256, 256, 3) and pre["eigval"].shape == (3,)
    assert pre["images"] == 1000  # the whole prepared train split, not the 32 trained on
    assert torch.allclose(pre["mean_image"], open_store(store).stats().mean_image)
    assert 0 < float(pre["eigval"][0]) < 1 and bool((pre["eigval"][:-1] >= pre["eigval"][1:]).all())


# --------------------------------------------------------------------------------------------
# Resuming safely, damage, locking and bad options


def test_a_resume_redoes_chunks_of_other_files_and_damaged_ones(tmp_path):
    src, out = make_tree(tmp_path / "src", per_class=4), tmp_path / "store"
    prepare(src, out, plan=Plan(size=16, chunk=4), progress=False)
    assert open_store(out).meta["splits"]["train"]["images"] == 12
    make_tree(src, classes=("a",), per_class=5)  # one more file: every later chunk shifts
    (out / "train" / "chunk-00002.data").write_bytes(b"")  # and one chunk's data lost
    prepare(src, out, plan=Plan(size=16, chunk=4), progress=False)
    assert open_store(out).meta["splits"]["train"]["images"] == 13
    assert verify_store(out) == []
    fresh = tmp_path / "fresh"
    prepare(src, fresh, plan=Plan(size=16, chunk=4), progress=False)
    assert store_files(out) == store_files(fresh)


def test_another_chunk_size_bad_options_and_a_busy_store_are_one_line_errors(tmp_path):
    import fcntl

    src, out = make_tree(tmp_path / "src"), tmp_path / "store"
    prepare(src, out, plan=Plan(size=16, chunk=4), progress=False)
    with pytest.raises(ValueError, match="chunk 4, not 5"):
        prepare(src, out, plan=Plan(size=16, chunk=5), progress=False)
    for plan, option in ((Plan(size=0), "--size"), (Plan(quality=200), "--quality"),
                         (Plan(chunk=0), "--chunk")):  # fmt: skip
        with pytest.raises(ValueError, match=option):
            prepare(src, tmp_path / "never", plan=plan, progress=False)
    assert not (tmp_path / "never").exists()
    with open(out / ".lock", "a+b") as held:
        fcntl.flock(held, fcntl.LOCK_EX | fcntl.LOCK_NB)
        with pytest.raises(ValueError, match="another alexnet prepare"):
            prepare(src, out, plan=Plan(size=16, chunk=4), progress=False)


def test_a_damaged_chunk_read_by_a_worker_is_one_clear_error(tmp_path):
    from alexnet.data.batches import StoreBatches
    from alexnet.data.loader import BatchLoader
    from alexnet.data.store import StoreError

    src, out = make_tree(tmp_path / "src"), tmp_path / "store"
    prepare(src, out, plan=Plan(size=16, chunk=4), progress=False)
    split = open_store(out).split("train")
    data = out / "train" / "chunk-00001.data"  # cut short while the store is being read
    data.write_bytes(data.read_bytes()[:100])
    loader = BatchLoader(split, 12, StoreBatches(split, 12, torch.zeros(3), torch.ones(3)),
                         train=True, workers=2)  # fmt: skip
    with pytest.raises(StoreError, match=r"chunk-00001\.data: image .* cut short") as caught:
        list(loader)
    assert "Traceback" not in str(caught.value)


def test_evaluating_a_damaged_chunk_is_the_stores_error_not_an_index_error(tmp_path):
    """eval and figures on a raw store with a cut-short chunk ended in an IndexError (the
    handler looked up the image's original file, which only a files store lists)."""
    from alexnet.data.store import StoreError
    from alexnet.inference.views import BatchReads

    src, out = make_tree(tmp_path / "src"), tmp_path / "store"
    prepare(src, out, plan=Plan(size=16, chunk=4), progress=False)
    reads = BatchReads(open_store(out).split("train"), 4)
    data = out / "train" / "chunk-00000.data"  # cut short while the store is being read
    data.write_bytes(data.read_bytes()[:100])
    with pytest.raises(StoreError, match=r"chunk-00000\.data: image .* cut short"):
        reads[0]


def test_a_process_keeps_few_chunk_files_open(tmp_path, monkeypatch):
    from alexnet.data import store

    src, out = make_tree(tmp_path / "src"), tmp_path / "store"
    prepare(src, out, plan=Plan(size=16, chunk=2), progress=False)
    monkeypatch.setattr(store, "OPEN_CHUNKS", 2)
    split = open_store(out).split("train")
    for i in range(len(split)):
        split.read_band(i, 0, 16)
        assert len(split._files) <= 2


@pytest.mark.parametrize("table, why", [
    ({"0": "tench", "1": "goldfish"}, "expected"),
    ({"0": ["n01", "a"], "1": ["n01", "b"]}, "more than once"),
])  # fmt: skip
def test_a_malformed_class_index_is_refused_before_decoding(tmp_path, table, why):
    from alexnet.data.layouts import LayoutError, class_map

    (tmp_path / "imagenet_class_index.json").write_text(json.dumps(table))
    with pytest.raises(LayoutError, match=why):
        class_map(tmp_path)


def test_prepare_skips_and_lists_what_is_not_a_regular_file(tmp_path):
    """A pipe named .jpg in a class folder hung prepare; it is skipped and listed."""
    import os

    src, out = tmp_path / "src", tmp_path / "out"
    folder = src / "train" / "a"
    folder.mkdir(parents=True)
    Image.fromarray(smooth(40, 40, 1)).save(folder / "good.png")
    os.mkfifo(folder / "pipe.jpg")
    meta = prepare(src, out, plan=Plan(size=32), chunk=3, progress=False)
    reasons = {Path(p).name: why for p, why in meta["splits"]["train"]["skipped"]}
    assert reasons == {
        "pipe.jpg": "not a regular file (a folder, device, pipe or socket): not read"
    }
    assert meta["splits"]["train"]["images"] == 1


def _children(pid: int) -> list[int]:
    """The processes whose parent is ``pid`` (read from /proc)."""
    found = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[1]) == pid:
            found.append(int(stat.parent.name))
    return found


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


@pytest.mark.parametrize("sig", [signal.SIGKILL, signal.SIGTERM])
def test_a_stopped_prepare_leaves_no_worker_behind(tmp_path, cache, sig):
    """Killed with SIGKILL, prepare's spawn workers were left running (about 740 MB each)
    under PID 1; with SIGTERM too, and it said nothing. Now no worker outlives it by 5 s,
    and SIGTERM ends it with one line, as Ctrl-C does."""
    # 900 images, 180 chunks of 5: still preparing when the signal comes, however fast the
    # machine (with 120 a fast run could end first, and die of the signal after its handler)
    src = make_tree(tmp_path / "src", per_class=300)
    out = tmp_path / "out"
    args = ["prepare", str(src), str(out), "--chunk", "5", "--workers", "2", "--no-progress",
            "--size", "32"]  # fmt: skip
    proc = subprocess.Popen(ALEXNET + args, env=cli_env(cache), stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE, text=True)  # fmt: skip
    deadline = time.time() + 120
    while not list((out / "train").glob("chunk-*.json")) and proc.poll() is None:
        assert time.time() < deadline, "prepare wrote no chunk in 2 minutes"
        time.sleep(0.01)
    workers = _children(proc.pid)
    assert workers, "no worker processes found"
    proc.send_signal(sig)
    _, err = proc.communicate(timeout=60)
    deadline = time.time() + 5
    while any(map(_alive, workers)) and time.time() < deadline:
        time.sleep(0.1)
    left = [w for w in workers if _alive(w)]
    for pid in left:  # not to leave them running when the test fails
        with contextlib.suppress(OSError):
            os.kill(pid, signal.SIGKILL)
    assert not left, f"workers still running 5 s after the parent: {left}"
    if sig == signal.SIGTERM:
        assert proc.returncode == 128 + signal.SIGTERM, err
        assert err.strip().splitlines()[-1].startswith("alexnet prepare: interrupted by signal 15")
        assert not [p for p in out.rglob(".*") if p.is_file()], "a half-written chunk was left"


def test_a_prepare_stopped_mid_write_leaves_no_half_written_file(tmp_path, monkeypatch):
    """SIGTERM to prepare left ``train/.chunk-NNNNN.data.<pid>.tmp`` (3.6 MB) until the next
    run: a stop while a chunk is being written now removes the half-written file."""
    import alexnet.data.prepare as prepare_module

    src = make_tree(tmp_path / "src", per_class=4)

    def stopped(_fd):
        raise KeyboardInterrupt  # as a signal arriving during the write would

    monkeypatch.setattr(prepare_module.os, "fsync", stopped)
    with pytest.raises(KeyboardInterrupt):
        prepare(src, tmp_path / "out", plan=Plan(size=32), chunk=5, progress=False)
    monkeypatch.undo()
    assert not [p for p in (tmp_path / "out").rglob(".*") if p.is_file()]


def test_verify_of_a_files_store_finds_originals_changed_since(tmp_path):
    """A ``files`` store reads its originals at each use; --verify said nothing when they had
    changed. Their size and modification time are recorded and compared."""
    src, out = make_tree(tmp_path / "src"), tmp_path / "store"
    prepare(src, out, plan=Plan(layout="files", size=16, chunk=4), progress=False)
    assert verify_store(out) == []
    changed = sorted((src / "train" / "b").iterdir())[0]
    changed.write_bytes(changed.read_bytes() + b"\0")
    (src / "train" / "c" / "000.jpg").unlink()
    problems = verify_store(out)
    assert len(problems) == 2 and all("original files changed or are gone" in p for p in problems)
    assert any(str(changed) in p for p in problems)
    prepare(src, out, plan=Plan(layout="files", size=16, chunk=4), progress=False)
    assert verify_store(out) == []  # the chunks made anew record the files as they are now


def test_training_on_a_files_store_says_which_originals_changed_since(tmp_path, cache):
    """Training read changed originals as they are now, with the mean image and PCA of the
    files as they were, and said nothing; ``prepare --verify`` alone would have told."""
    src, out = make_tree(tmp_path / "src", per_class=6), tmp_path / "store"
    make_tree(src, per_class=2, split="val", seed=7)
    prepare(src, out, plan=Plan(layout="files", size=40, chunk=4), progress=False)
    assert open_store(out).split("train").staleness() is None
    changed = src / "train" / "b" / "001.png"
    changed.write_bytes(changed.read_bytes() + b"\0")
    line = open_store(out).split("train").staleness()
    assert line.startswith(f"warning: {out}/train: 1 of its original files changed since")
    assert str(changed) in line and "run alexnet prepare again" in line
    recipe = tiny_recipe(out, epochs=1, **{"data.source": "store", "data.image_size": 32})
    fit(recipe, tmp_path / "run", progress=False)
    assert line in (tmp_path / "run" / "log.txt").read_text()


def noise_folder(root: Path) -> None:
    """train/a and train/b, 300 images of noise each: enough for prepare's workers to be
    caught at work by a signal."""
    rng = np.random.default_rng(0)
    for c in "ab":
        (root / "train" / c).mkdir(parents=True)
        for i in range(300):
            image = rng.integers(0, 256, (64, 64, 3), dtype=np.uint8)
            Image.fromarray(image).save(root / "train" / c / f"{i}.png")


@pytest.mark.slow  # several starts of prepare's workers: make test-slow
def test_ctrl_c_while_workers_start_or_work_is_one_line_and_leaves_no_half_chunk(tmp_path, cache):
    """Ctrl-C to the terminal's process group while the spawned workers started printed their
    tracebacks; stopped mid-chunk, a chunk's 40 MB of data stayed without its record."""
    noise_folder(tmp_path / "src")
    for delay in (2.5, 3.0, 3.5, 4.0, 6.0):
        out = tmp_path / f"out-{delay}"
        proc = subprocess.Popen([*ALEXNET, "prepare", str(tmp_path / "src"), str(out), "--chunk",
                                 "20", "--workers", "2", "--no-progress"], env=cli_env(cache),
                                stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
                                start_new_session=True)  # fmt: skip
        time.sleep(delay)
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGINT)
        _, err = proc.communicate(timeout=120)
        assert "Traceback" not in err and len(err.strip().splitlines()) <= 1, err
        for data in out.glob("train/*.data"):
            assert data.with_suffix(".json").is_file(), f"{data} left without its record"
        assert not list(out.rglob(".*partial*"))


@pytest.mark.slow  # a prepare with workers, killed: make test-slow
def test_a_prepare_killed_with_sigkill_prints_nothing_after_it(tmp_path, cache):
    """multiprocessing's resource tracker outlived the killed prepare and warned of "leaked
    semaphore objects" under the shell's prompt (4 kills in 4); freeing them is its work."""
    noise_folder(tmp_path / "src")
    with (tmp_path / "err").open("w") as err:  # the tracker writes to it after the kill
        proc = subprocess.Popen([*ALEXNET, "prepare", str(tmp_path / "src"), str(tmp_path / "out"),
                                 "--chunk", "20", "--workers", "2", "--no-progress"],
                                env=cli_env(cache), stdout=subprocess.DEVNULL, stderr=err,
                                start_new_session=True)  # fmt: skip
        wait_for(lambda: any((tmp_path / "out").glob("train/*.json")) or proc.poll() is not None)
        proc.kill()
        proc.wait(timeout=60)
        time.sleep(3)  # the tracker's warning came about a second after the kill
    assert "leaked" not in (tmp_path / "err").read_text()
