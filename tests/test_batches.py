"""The paper's batch preprocessing from a store (random crops, flips, the mean image, PCA colour
noise), in-memory batches with a mean image, and the loader's guarantees with workers."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from alexnet.checkpoint import load_checkpoint
from alexnet.data import BatchAugment, BatchLoader, ImageSet
from alexnet.data.augment import crop_offsets, flip_draws, pca_shift
from alexnet.data.batches import PCA, MemoryBatches, StoreBatches
from alexnet.data.prepare import Plan, prepare
from alexnet.data.store import open_store

from .conftest import ALEXNET, cli_env, tiny_recipe
from .test_train import deterministic_args, run_cli, wait_for, weights

CPU = torch.device("cpu")
SIDE, CROP = 32, 27  # stored side and crop: 6 x 6 positions
PER_CLASS = 12


@pytest.fixture(scope="module")
def coords(tmp_path_factory):
    """A raw store of 3 x 12 images of SIDE x SIDE whose pixels say where they are:
    R = row, G = column, B = the image's index in the store."""
    root = tmp_path_factory.mktemp("coords")
    rows, cols = np.mgrid[0:SIDE, 0:SIDE]
    for c, name in enumerate(("a", "b", "c")):
        folder = root / "src" / "train" / name
        folder.mkdir(parents=True)
        for i in range(PER_CLASS):
            number = np.full((SIDE, SIDE), c * PER_CLASS + i)
            image = np.stack([rows, cols, number], -1).astype(np.uint8)
            Image.fromarray(image).save(folder / f"{i:03d}.png")
    prepare(root / "src", root / "store", plan=Plan(size=SIDE), chunk=8, progress=False)
    return open_store(root / "store").split("train")


def pca_of(seed: int = 0, eigval=(0.2, 0.05, 0.01)) -> tuple[torch.Tensor, torch.Tensor]:
    """Known eigenvalues and a random orthonormal basis."""
    g = torch.Generator().manual_seed(seed)
    q, _ = torch.linalg.qr(torch.randn(3, 3, generator=g, dtype=torch.float64))
    return torch.tensor(eigval), q.float()


def generator(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


CHOSEN = torch.tensor([5, 0, 17, 35, 5, 12, 30, 1, 8, 23, 29, 3, 14, 33, 20, 9])


# --------------------------------------------------------------------------------------------
# Crop geometry


def test_crop_offsets_cover_every_position_and_only_those():
    ys, xs = crop_offsets(20_000, 256, 227, generator(0))
    assert ys.dtype == xs.dtype == torch.int64
    assert int(ys.min()) == int(xs.min()) == 0 and int(ys.max()) == int(xs.max()) == 29
    assert len(set(zip(ys.tolist(), xs.tolist(), strict=True))) == 30 * 30
    cy, cx = crop_offsets(4, 256, 227, None)
    assert cy.tolist() == cx.tolist() == [14] * 4  # (256 - 227) // 2
    assert crop_offsets(2, SIDE, CROP, None)[0].tolist() == [2, 2]
    assert not flip_draws(5, None).any()


def test_store_crops_are_the_stored_window_mirrored_when_drawn(coords):
    unit = StoreBatches(coords, CROP, torch.zeros(3), torch.full((3,), 1 / 255))  # x = pixel
    crops, labels, ys, xs, flips, shift = raw = unit.read(CHOSEN, generator(7))
    # The draws are the generator's, in a fixed order: crop corners, then flips.
    again = generator(7)
    eys, exs = crop_offsets(len(CHOSEN), SIDE, CROP, again)
    assert torch.equal(ys, eys) and torch.equal(xs, exs)
    assert torch.equal(flips, flip_draws(len(CHOSEN), again))
    assert flips.any() and not flips.all() and len(set(ys.tolist())) > 1
    assert shift.numel() == 0 and torch.equal(labels, CHOSEN // PER_CLASS)
    x, y = unit.finish(raw, CPU, channels_last=False)
    assert x.shape == (len(CHOSEN), 3, CROP, CROP) and x.dtype == torch.float32
    assert torch.equal(y, labels)
    assert (x - x.round()).abs().max() < 1e-3
    x = x.round().long()
    steps = torch.arange(CROP)
    for k, i in enumerate(CHOSEN.tolist()):
        cols = xs[k] + (steps.flip(0) if flips[k] else steps)
        assert torch.equal(x[k, 0], (ys[k] + steps)[:, None].expand(CROP, CROP)), k
        assert torch.equal(x[k, 1], cols[None, :].expand(CROP, CROP)), k
        assert bool((x[k, 2] == i).all()), k
        window = coords.decode(i)[ys[k] : ys[k] + CROP, xs[k] : xs[k] + CROP]
        window = window.flip(1) if flips[k] else window
        assert torch.equal(crops[k], window), k
    # Evaluation: the centre crop, never mirrored.
    x, _ = unit.finish(unit.read(CHOSEN, None), CPU, channels_last=False)
    assert torch.equal(x[:, 0].round().long(), (2 + steps)[:, None].expand(len(CHOSEN), -1, CROP))
    assert torch.equal(x[:, 1].round().long(), (2 + steps)[None, :].expand(len(CHOSEN), CROP, -1))


# --------------------------------------------------------------------------------------------
# The mean image and the colour noise


def by_hand(split, raw, mean: torch.Tensor, std: torch.Tensor, chosen) -> torch.Tensor:
    """((image / 255 - mean) at the crop, mirrored if drawn, + shift) / std, in float64."""
    _, _, ys, xs, flips, shift = raw
    out = []
    for k, i in enumerate(chosen.tolist()):
        centred = split.decode(i).double() / 255 - mean.double()
        window = centred[ys[k] : ys[k] + CROP, xs[k] : xs[k] + CROP]
        window = window.flip(1) if flips[k] else window
        if shift.numel():
            window = window + shift[k].double()
        out.append((window / std.double()).permute(2, 0, 1))
    return torch.stack(out)


def test_mean_image_is_subtracted_at_the_crop_and_the_cpu_path_equals_the_gather(coords):
    mean = torch.rand(SIDE, SIDE, 3, generator=generator(1))
    std = torch.tensor([0.2, 0.3, 0.25])
    pca = PCA(*pca_of(), alpha_std=0.5)
    maker = StoreBatches(coords, CROP, mean, std, flip=True, pca=pca)
    raw = maker.read(CHOSEN, generator(3))
    crops, _, ys, xs, flips, shift = raw
    assert shift.shape == (len(CHOSEN), 3) and flips.any() and not flips.all()
    x, _ = maker.finish(raw, CPU, channels_last=False)
    assert torch.allclose(x.double(), by_hand(coords, raw, mean, std, CHOSEN), rtol=0, atol=1e-5)
    # What finish does on other devices (CUDA): one gather of the scaled mean at every crop.
    gathered = crops.float() * maker._scale(CPU) + maker._offsets(ys, xs, flips, CPU)
    gathered = gathered + (shift / std)[:, None, None, :]
    assert torch.allclose(gathered.permute(0, 3, 1, 2), x, rtol=0, atol=1e-5)
    # Channels-last output holds the same values.
    last, _ = maker.finish(raw, CPU, channels_last=True)
    assert last.is_contiguous(memory_format=torch.channels_last) and torch.equal(last, x)
    # A per-channel mean is the mean image that is that colour everywhere.
    flat = torch.tensor([0.4, 0.5, 0.6])
    per_channel = StoreBatches(coords, CROP, flat, std, pca=pca).finish(raw, CPU, False)[0]
    everywhere = StoreBatches(coords, CROP, flat.expand(SIDE, SIDE, 3).clone(), std, pca=pca)
    assert torch.allclose(per_channel, everywhere.finish(raw, CPU, False)[0], atol=1e-6)


def test_pca_noise_has_the_configured_covariance_and_a_draw_per_image():
    eigval, eigvec = pca_of(seed=2)
    shifts = pca_shift(20_000, eigval, eigvec, 0.1, generator(0))
    assert shifts.shape == (20_000, 3)
    assert shifts.mean(0).abs().max() < 1e-3  # each component's deviation is at most 0.02
    expected = eigvec @ torch.diag((0.1 * eigval) ** 2) @ eigvec.T
    measured = torch.cov(shifts.T.double()).float()
    assert torch.allclose(measured, expected, rtol=0, atol=0.05 * float(expected.abs().max()))
    # Along each eigenvector the deviation is alpha_std * its eigenvalue.
    along = (shifts @ eigvec).std(0)
    assert torch.allclose(along, 0.1 * eigval, rtol=0.05)
    assert len({tuple(r) for r in shifts[:100].tolist()}) == 100  # every image its own draw
    assert torch.equal(shifts, pca_shift(20_000, eigval, eigvec, 0.1, generator(0)))
    assert not torch.equal(shifts, pca_shift(20_000, eigval, eigvec, 0.1, generator(1)))


def test_store_pca_shifts_every_pixel_of_an_image_by_its_own_vector(coords):
    mean = torch.rand(SIDE, SIDE, 3, generator=generator(4))
    std = torch.tensor([0.2, 0.3, 0.25])
    noisy = StoreBatches(coords, CROP, mean, std, pca=PCA(*pca_of(), alpha_std=0.5))
    plain = StoreBatches(coords, CROP, mean, std)
    raw = noisy.read(CHOSEN, generator(5))
    plain_raw = plain.read(CHOSEN, generator(5))  # the colour noise is drawn last
    assert all(torch.equal(a, b) for a, b in zip(raw[:5], plain_raw[:5], strict=True))
    shift = raw[5]
    diff = noisy.finish(raw, CPU, False)[0] - plain.finish(plain_raw, CPU, False)[0]
    per_image = (shift / std)[:, :, None, None].expand_as(diff)
    assert torch.allclose(diff, per_image, rtol=0, atol=1e-5)
    assert len({tuple(r) for r in shift.tolist()}) == len(CHOSEN)
    # Evaluation draws no noise.
    assert noisy.read(CHOSEN, None)[5].numel() == 0


@pytest.fixture(scope="module")
def memory_set() -> ImageSet:
    g = generator(6)
    images = torch.randint(0, 256, (24, 3, 8, 8), generator=g, dtype=torch.uint8)
    return ImageSet(images, torch.arange(24) % 3, ["a", "b", "c"])


def test_memory_pca_shifts_every_pixel_of_an_image_by_its_own_vector(memory_set):
    mean = torch.rand(3, 8, 8, generator=generator(7))
    std = torch.tensor([0.2, 0.3, 0.25])
    augment = BatchAugment(crop_padding=2, flip=True)
    noisy = MemoryBatches(memory_set, mean, std, augment, PCA(*pca_of(), alpha_std=0.5))
    plain = MemoryBatches(memory_set, mean, std, augment)
    chosen = torch.arange(16)
    raw, plain_raw = noisy.read(chosen, generator(8)), plain.read(chosen, generator(8))
    assert torch.equal(raw[0], plain_raw[0])  # the same crops and flips
    assert not torch.equal(raw[0], memory_set.images[chosen])  # ... which did something
    diff = noisy.finish(raw, CPU, False)[0] - plain.finish(plain_raw, CPU, False)[0]
    per_image = (raw[2] / std)[:, :, None, None].expand_as(diff)
    assert torch.allclose(diff, per_image, rtol=0, atol=1e-5)
    assert len({tuple(r) for r in raw[2].tolist()}) == 16


def test_memory_batches_subtract_a_mean_image_per_pixel(memory_set):
    mean = torch.rand(3, 8, 8, generator=generator(9))
    std = torch.tensor([0.2, 0.3, 0.25])
    maker = MemoryBatches(memory_set, mean, std)
    chosen = torch.tensor([3, 0, 7, 21])
    x, y = maker.finish(maker.read(chosen, None), CPU, channels_last=False)
    expected = (memory_set.images[chosen].double() / 255 - mean.double()) / std.view(3, 1, 1)
    assert torch.allclose(x.double(), expected, rtol=0, atol=1e-5)
    assert torch.equal(y, memory_set.labels[chosen])
    # Not a per-channel mean in disguise: the image's pixels are centred by different values.
    per_channel = MemoryBatches(memory_set, mean.mean((1, 2)), std)
    assert not torch.allclose(per_channel.finish(per_channel.read(chosen, None), CPU, False)[0], x)


# --------------------------------------------------------------------------------------------
# The loader: workers, resuming, ranks


def train_maker(split) -> StoreBatches:
    mean = open_store(split.root).stats().mean_image / 255
    return StoreBatches(
        split,
        CROP,
        mean,
        torch.tensor([0.2, 0.3, 0.25]),
        flip=True,
        pca=PCA(*pca_of(), alpha_std=0.1),
    )


def loader(split, workers: int, **kw) -> BatchLoader:
    made = BatchLoader(split, 8, train_maker(split), train=True, seed=3, workers=workers, **kw)
    made.set_epoch(1)
    return made


def same_batches(a, b) -> bool:
    return len(a) == len(b) and all(
        torch.equal(x, x2) and torch.equal(y, y2) and torch.equal(v, v2)
        for (x, y, v), (x2, y2, v2) in zip(a, b, strict=True)
    )


def test_loader_workers_resume_and_ranks_see_the_same_batches(coords):
    serial = list(loader(coords, 0).batches())
    assert len(serial) == len(coords) // 8 == 4
    parallel = loader(coords, 2)
    assert same_batches(serial, list(parallel.batches()))
    assert same_batches(serial[2:], list(parallel.batches(start=2)))
    assert list(parallel.batches(start=4)) == []
    # Another epoch is another order and other draws.
    other = loader(coords, 0)
    other.set_epoch(2)
    assert not torch.equal(next(iter(other))[0], serial[0][0])
    # Two ranks with half the batch each see the one process's images, batch by batch.
    ranks = [loader(coords, 2, rank=r, world_size=2) for r in range(2)]
    for (_, y, _), (_, y0, _), (_, y1, _) in zip(serial, *ranks, strict=True):
        assert len(y0) == len(y1) == 4
        assert sorted(y.tolist()) == sorted(y0.tolist() + y1.tolist())
    # Evaluation with workers: the centre crops, in order, each image once.
    test = BatchLoader(coords, 10, train_maker(coords), train=False, workers=2)
    seen = list(test)
    assert [len(y) for _, y, _ in seen] == [10, 10, 10, 6] and all(bool(v.all()) for *_, v in seen)
    assert torch.equal(torch.cat([y for _, y, _ in seen]), coords.labels)
    assert same_batches(seen, list(BatchLoader(coords, 10, train_maker(coords), train=False)))


def test_the_workers_ring_of_buffers_is_reused_without_mixing_batches(coords):
    """One worker, a ring of four slots, 18 batches an epoch: every slot is refilled several
    times, an epoch abandoned part-way leaves no stale batch behind, and each batch equals the
    one a single process makes."""

    def epochs(workers: int, abandon: bool) -> list:
        made = BatchLoader(coords, 2, train_maker(coords), train=True, seed=5, workers=workers)
        seen = []
        for epoch in (1, 2, 3):
            made.set_epoch(epoch)
            for b, batch in enumerate(made.batches()):
                if abandon and epoch == 2 and b == 3:
                    break
                seen.append(batch)
        if workers:
            assert made._slots is not None and made._slots.count == 4
            assert made._slots.next > 3 * made._slots.count
        return seen

    assert same_batches(epochs(0, abandon=True), epochs(1, abandon=True))
    assert len(epochs(0, abandon=False)) == 3 * (len(coords) // 2)


def test_loader_workers_leave_the_global_random_state_alone(coords):
    for workers in (0, 2):
        torch.manual_seed(0)
        before = torch.get_rng_state()
        list(loader(coords, workers).batches(start=3))
        assert torch.equal(torch.get_rng_state(), before), f"workers={workers}"


# --------------------------------------------------------------------------------------------
# End to end: a run on a store, stopped mid-epoch and resumed, with loader workers


@pytest.fixture(scope="module")
def tiny_store(tmp_path_factory) -> Path:
    """3 classes x 24 training and x 6 validation images, stored at 40 pixels."""
    root = tmp_path_factory.mktemp("tinystore")
    rng = np.random.default_rng(0)
    for split, count in (("train", 24), ("val", 6)):
        for c, name in enumerate(("dark", "mid", "light")):
            folder = root / "src" / split / name
            folder.mkdir(parents=True)
            for i in range(count):
                h, w = (48, 64) if i % 2 else (60, 45)
                image = rng.normal(60 + 60 * c, 30, (h, w, 3)).clip(0, 255).astype(np.uint8)
                Image.fromarray(image).save(folder / f"{i:03d}.png")
    prepare(root / "src", root / "store", plan=Plan(size=40), chunk=20, progress=False)
    return root / "store"


@pytest.mark.slow  # over 15 s: make test-slow keeps make test within 10 minutes
@pytest.mark.parametrize("dropout", [0.0, 0.5], ids=["no-dropout", "dropout"])
def test_a_store_run_stopped_mid_epoch_resumes_exactly_with_workers(
    tmp_path, cache, tiny_store, dropout
):
    options = {"widths": [8, 8, 16, 16, 8], "hidden": 32, "dropout": dropout, "init": "kaiming"}
    recipe = tiny_recipe(
        tiny_store,
        **{
            "epochs": 2,
            "data.source": "store",
            "data.image_size": 32,
            "data.batch_size": 8,
            "data.eval_batch_size": 9,
            "data.workers": 2,
            "data.normalise": "mean-image",
            "augment.pca_std": 0.1,
            "model.options": options,
        },
    )
    path = tmp_path / "tiny.toml"
    path.write_text(recipe.to_toml())
    straight = run_cli(deterministic_args(path, tmp_path, "straight"), cache)
    assert straight.returncode == 0, straight.stderr

    run_dir = tmp_path / "stopped"
    proc = subprocess.Popen(
        ALEXNET + deterministic_args(path, tmp_path, "stopped"),
        env=cli_env(cache),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    wait_for(lambda: (run_dir / "last.pt").exists() or proc.poll() is not None)
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 128 + signal.SIGTERM, err
    ckpt = load_checkpoint(run_dir / "last.pt")
    assert (ckpt["epoch"], ckpt["batch"]) < (2, 0) and ckpt["batch"] > 0  # mid-epoch
    assert ckpt["preprocessing"]["mean_image"].shape == (40, 40, 3)
    resumed = run_cli(["train", "--resume", str(run_dir), "--no-progress"], cache)
    assert resumed.returncode == 0, resumed.stderr
    where = f"at epoch {ckpt['epoch'] + 1}, batch {ckpt['batch'] + 1}"
    assert where in resumed.stderr  # it really resumed mid-epoch

    a, b = weights(tmp_path / "straight"), weights(run_dir)
    assert a.keys() == b.keys()
    assert all(torch.equal(a[k], b[k]) for k in a)
    saved = (tmp_path / "straight" / "recipe.toml").read_text()
    assert "workers = 2" in saved and 'normalise = "mean-image"' in saved
    assert 'source = "store"' in saved and "pca_std = 0.1" in saved


def test_a_ring_larger_than_the_shared_memory_left_is_refused_in_one_line(tmp_path):
    from alexnet.data.loader import check_shared_memory

    check_shared_memory(1024, str(tmp_path))  # fits
    with pytest.raises(OSError, match=r"needs 1024\.0 GiB of shared memory .* --shm-size"):
        check_shared_memory(2**40, str(tmp_path))


def test_the_paper_recipe_feeds_pixel_values_minus_the_mean_image(coords):
    """imagenet-paper's inputs are at the paper's scale: values 0-255 minus the training set's
    mean image, nothing divided (within float32 rounding), so LRN sees activations of the
    size its k and alpha were chosen for."""
    from alexnet.config import apply_overrides, load_recipe
    from alexnet.training.train import batch_makers

    recipe = apply_overrides(load_recipe("imagenet-paper"), [f"data.image_size={CROP}"])
    stats = open_store(coords.root).stats()
    maker = batch_makers(recipe, coords, coords, stats)[1]
    raw = maker.read(CHOSEN, None)  # as evaluation reads: the centre crop
    crops, _, ys, xs, _, _ = raw
    x, _ = maker.finish(raw, CPU, channels_last=False)
    y0, x0 = int(ys[0]), int(xs[0])
    mean = stats.mean_image[y0 : y0 + CROP, x0 : x0 + CROP].permute(2, 0, 1)
    expected = crops.permute(0, 3, 1, 2).double() - mean.double()
    assert torch.allclose(x.double(), expected, rtol=0, atol=1e-4)
    # The store numbers its images 0-35 in blue: 17.5 from their mean at the paper's scale.
    assert x.abs().max() == 17.5


@pytest.mark.slow  # several runs stopped by signal: make test-slow
def test_kill_term_to_the_process_group_stops_a_store_run_with_workers_in_one_line(tmp_path, cache):
    """``kill -TERM -PGID`` reaches the loader's workers too, and they end at once: the run,
    waiting for their next batch, found them gone 5 s later and printed a DataLoader traceback
    with exit status 1 (10 tries in 16). A signal while a batch is awaited now stops the run
    at once, at the step before, and it resumes from there."""
    rng = np.random.default_rng(0)
    for split, count in (("train", 120), ("val", 240)):
        for c in "abc":
            folder = tmp_path / "src" / split / c
            folder.mkdir(parents=True)
            for i in range(count):
                image = rng.integers(0, 256, (96, 96, 3), dtype=np.uint8)
                Image.fromarray(image).save(folder / f"{i:03d}.png")
    prepare(tmp_path / "src", tmp_path / "store", plan=Plan(size=64), chunk=60, progress=False)
    recipe = tiny_recipe(tmp_path / "store", **{"epochs": 40, "data.source": "store",
                         "data.image_size": 56, "data.batch_size": 16, "data.workers": 2,
                         "model.options.widths": [8] * 5, "model.options.hidden": 16,
                         "schedule.name": "constant"})  # fmt: skip
    path = tmp_path / "tiny.toml"
    path.write_text(recipe.to_toml())
    for delay in (1.0, 2.0, 3.0, 4.5):  # after the first checkpoint: within training
        run_dir = tmp_path / f"run-{delay}"
        proc = subprocess.Popen([*ALEXNET, "train", "--recipe", str(path), "--runs", str(tmp_path),
                                 "--name", run_dir.name, "--no-progress"], env=cli_env(cache),
                                stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
                                start_new_session=True)  # fmt: skip
        wait_for(lambda d=run_dir, p=proc: (d / "last.pt").exists() or p.poll() is not None)
        time.sleep(delay)
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGTERM)
        _, err = proc.communicate(timeout=120)
        assert "Traceback" not in err and proc.returncode == 128 + signal.SIGTERM, err
        assert err.strip().splitlines()[-1].startswith("stopped by signal 15; resume with"), err
        resumed = run_cli(["train", "--resume", str(run_dir), "--no-progress",
                           "--set", f"epochs={load_checkpoint(run_dir / 'last.pt')['epoch'] + 1}"],
                          cache)  # fmt: skip
        assert resumed.returncode == 0, resumed.stderr
