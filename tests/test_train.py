"""The training loop end to end: outputs, resume after SIGKILL, SIGTERM, NaN, errors, DDP."""

from __future__ import annotations

import json
import math
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from alexnet.train import TrainingError, fit, load_checkpoint

from .conftest import ALEXNET, cli_env, tiny_recipe


def run_cli(args: list[str], cache: Path, **kw) -> subprocess.CompletedProcess:
    return subprocess.run(
        ALEXNET + args, env=cli_env(cache), capture_output=True, text=True, timeout=300, **kw
    )


def weights(run_dir: Path) -> dict[str, torch.Tensor]:
    return load_checkpoint(run_dir / "last.pt")["model"]


def test_fit_writes_every_output(tiny_folder, tmp_path, cache):
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    final = fit(tiny_recipe(tiny_folder, epochs=3), run_dir, progress=False)
    lines = [json.loads(x) for x in (run_dir / "metrics.jsonl").read_text().splitlines()]
    assert [m["epoch"] for m in lines] == [1, 2, 3]
    for key in ("train_loss", "val_loss", "val_top1_err", "val_top5_err", "lr", "images_per_s"):
        assert all(math.isfinite(m[key]) for m in lines)
    # Top-5 of 3 classes is always right; learning itself is checked on real data below.
    assert final["val_top5_err"] == 0.0 and 0.0 <= final["val_top1_err"] <= 1.0
    ckpt = load_checkpoint(run_dir / "last.pt")  # weights_only=True inside
    assert ckpt["epoch"] == 3 and ckpt["batch"] == 0 and ckpt["recipe"]["name"] == "tiny"
    assert load_checkpoint(run_dir / "best.pt")["best_top1_err"] <= final["val_top1_err"]
    assert list((run_dir / "tb").glob("events.out.tfevents.*"))
    report = (run_dir / "report.md").read_text()
    assert "Test accuracy" in report and "![curves](curves.png)" in report
    for png in ("curves.png", "conv1_kernels.png", "predictions.png"):
        assert (run_dir / png).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "[model.options]" in (run_dir / "recipe.toml").read_text()
    assert not list(run_dir.glob(".*.tmp"))  # atomic writes leave nothing behind


def test_tensorboard_has_scalars_and_kernels(tiny_folder, tmp_path, cache):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    run_dir = tmp_path / "run"
    run_dir.mkdir()
    fit(tiny_recipe(tiny_folder, epochs=1), run_dir, progress=False)
    events = EventAccumulator(str(run_dir / "tb"))
    events.Reload()
    tags = events.Tags()
    assert {"train/loss", "val/top1_err", "val/top5_err", "lr", "images_per_s"} <= set(
        tags["scalars"]
    )
    assert "conv1_kernels" in tags["images"]


@pytest.mark.skipif(
    not Path("/usr/share/datasets/fashion-mnist").is_dir(),
    reason="Debian's dataset-fashion-mnist is not installed",
)
def test_fit_on_real_fashion_mnist_subset(tmp_path, cache):
    from alexnet.config import load_recipe

    recipe = load_recipe("fashion-mnist")
    recipe["epochs"] = 2
    recipe["data"].update(limit_train=4096, limit_test=1000)
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    final = fit(recipe, run_dir, progress=False)
    assert final["val_top1_err"] < 0.6  # chance is 0.9


def test_nan_loss_stops_with_a_clear_message(tiny_folder, tmp_path, cache):
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    recipe = tiny_recipe(tiny_folder, epochs=2)
    recipe["optim"]["lr"] = 1e12
    recipe["schedule"]["name"] = "constant"
    with pytest.raises(TrainingError, match=r"loss became (nan|inf).*Lower the learning rate"):
        fit(recipe, run_dir, progress=False)


def test_cli_errors_are_one_line(tmp_path, cache, recipe_file):
    cases = [
        (
            ["train", "--recipe", "fashion-mnist", "--data", str(tmp_path / "nowhere")],
            "nowhere: no such",
        ),
        (["train", "--recipe", "cifar10", "--data", str(tmp_path)], "neither CIFAR-10"),
        (
            ["train", "--recipe", "fashion-mnist", "--data", str(tmp_path)],
            "apt-get install dataset-fashion-mnist",
        ),
        (["train", "--recipe", "fashion-mnist", "--set", "optim.lrr=1"], "unknown recipe key"),
        (["train", "--recipe", "nope"], "unknown recipe 'nope'"),
        (["train", "--resume", str(tmp_path / "no-run")], "no checkpoint there"),
        (["train"], "give --recipe"),
    ]
    for args, message in cases:
        proc = run_cli(args, cache)
        assert proc.returncode == 2, (args, proc.stderr)
        err = proc.stderr.strip().splitlines()
        assert len(err) == 1 and message in err[0], (args, proc.stderr)


def test_nan_via_cli_exits_3_and_keeps_the_checkpoint(tmp_path, cache, recipe_file):
    path = recipe_file(**{"epochs": 2, "train.checkpoint_every": 1})
    # A first good epoch, then a learning rate that explodes: the last good checkpoint stays.
    proc = run_cli(["train", "--recipe", str(path), "--runs", str(tmp_path), "--name", "r", "--no-progress",
                    "--set", "optim.lr=1e12", "--set", "schedule.name=\"constant\""], cache)  # fmt: skip
    assert proc.returncode == 3, proc.stderr
    assert "loss became" in proc.stderr and "Lower the learning rate" in proc.stderr


def deterministic_args(path: Path, runs: Path, name: str) -> list[str]:
    return ["train", "--recipe", str(path), "--runs", str(runs), "--name", name, "--no-progress",
            "--set", "train.deterministic=true", "--set", "train.checkpoint_every=1"]  # fmt: skip


def wait_for(predicate, timeout: float = 120.0) -> None:
    start = time.time()
    while not predicate():
        if time.time() - start > timeout:
            raise TimeoutError("condition not reached")
        time.sleep(0.05)


def test_resume_after_sigkill_reaches_the_same_weights(tmp_path, cache, recipe_file):
    path = recipe_file(epochs=12)
    reference = run_cli(deterministic_args(path, tmp_path, "straight"), cache)
    assert reference.returncode == 0, reference.stderr

    rng = random.Random()
    killed = tmp_path / "killed"
    proc = subprocess.Popen(ALEXNET + deterministic_args(path, tmp_path, "killed"), env=cli_env(cache),
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)  # fmt: skip
    wait_for(lambda: (killed / "last.pt").exists() or proc.poll() is not None)
    time.sleep(rng.uniform(0.0, 0.8))  # kill at an arbitrary moment, possibly mid-write
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert proc.returncode == -signal.SIGKILL
    before = load_checkpoint(killed / "last.pt")
    assert (before["epoch"], before["batch"]) < (12, 0)  # really interrupted before the end

    resumed = run_cli(["train", "--resume", str(killed), "--no-progress"], cache)
    assert resumed.returncode == 0, resumed.stderr
    a, b = weights(tmp_path / "straight"), weights(killed)
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    straight = (tmp_path / "straight" / "metrics.jsonl").read_text().splitlines()
    again = (killed / "metrics.jsonl").read_text().splitlines()
    keys = ("train_loss", "val_loss", "val_top1_err")
    # An epoch cut in the middle may be logged again on resume; the last lines must agree.
    assert [json.loads(x)[k] for x in straight[-1:] for k in keys] == [
        json.loads(x)[k] for x in again[-1:] for k in keys
    ]


def test_sigterm_saves_a_checkpoint_and_resume_finishes(tmp_path, cache, recipe_file):
    path = recipe_file(epochs=4)
    run_dir = tmp_path / "term"
    proc = subprocess.Popen(ALEXNET + deterministic_args(path, tmp_path, "term"), env=cli_env(cache),
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)  # fmt: skip
    wait_for(lambda: (run_dir / "last.pt").exists() or proc.poll() is not None)
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 128 + signal.SIGTERM, err
    assert f"alexnet train --resume {run_dir}" in err
    ckpt = load_checkpoint(run_dir / "last.pt")
    assert (ckpt["epoch"], ckpt["batch"]) < (4, 0)
    resumed = run_cli(["train", "--resume", str(run_dir), "--no-progress"], cache)
    assert resumed.returncode == 0, resumed.stderr
    assert load_checkpoint(run_dir / "last.pt")["epoch"] == 4


def test_ddp_two_processes_match_one_process(tmp_path, cache, recipe_file):
    # No dropout and no augmentation: then the only difference between one process with the
    # global batch and two with half each is the order of floating-point sums.
    path = recipe_file(**{"epochs": 2, "augment.crop_padding": 0, "augment.flip": False,
                          "model.options": {"widths": [8, 8, 16, 16, 8], "hidden": 32, "dropout": 0.0}})  # fmt: skip
    single = run_cli(
        ["train", "--recipe", str(path), "--runs", str(tmp_path), "--name", "one", "--no-progress"],
        cache,
    )
    assert single.returncode == 0, single.stderr
    env = cli_env(cache)
    ddp = subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", "2", "--master-port", str(29500 + os.getpid() % 1000),
         "-m", "alexnet", "train", "--recipe", str(path), "--runs", str(tmp_path), "--name", "two", "--no-progress"],
        env=env, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert ddp.returncode == 0, ddp.stderr[-3000:]
    assert "2 process(es)" in ddp.stderr
    one = [json.loads(x) for x in (tmp_path / "one" / "metrics.jsonl").read_text().splitlines()]
    two = [json.loads(x) for x in (tmp_path / "two" / "metrics.jsonl").read_text().splitlines()]
    assert len(one) == len(two) == 2
    for a, b in zip(one, two, strict=True):
        for key in ("train_loss", "val_loss"):
            assert a[key] == pytest.approx(b[key], rel=1e-3, abs=1e-4), key
        for key in ("train_top1_err", "val_top1_err"):
            assert a[key] == pytest.approx(b[key], abs=0.03), key
    wa, wb = weights(tmp_path / "one"), weights(tmp_path / "two")
    assert all(torch.allclose(wa[k], wb[k], rtol=1e-3, atol=1e-4) for k in wa)


def test_precision_and_layout_choices():
    from alexnet.train import cpu_has_fast_bf16, pick_channels_last, pick_precision

    cpu = torch.device("cpu")
    assert pick_precision("fp32", cpu) is None
    assert pick_precision("bf16", cpu) is torch.bfloat16
    assert pick_precision("auto", cpu) is (torch.bfloat16 if cpu_has_fast_bf16() else None)
    with pytest.raises(ValueError, match=r"train\.precision"):
        pick_precision("fp16", cpu)
    assert pick_channels_last("auto") is True and pick_channels_last(False) is False
    with pytest.raises(ValueError, match=r"train\.channels_last"):
        pick_channels_last("maybe")


def test_paper_schedule_divides_by_ten_at_most_three_times():
    from alexnet.config import load_recipe
    from alexnet.train import build_schedule

    recipe = load_recipe("imagenet-paper")
    opt = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=recipe["optim"]["lr"])
    sched = build_schedule(opt, recipe, steps_per_epoch=10)
    lrs = []
    for _ in range(20):  # validation error never improves after the first epoch
        sched.step(0.5)
        lrs.append(opt.param_groups[0]["lr"])
    distinct = sorted(set(lrs), reverse=True)
    assert distinct == pytest.approx([0.01, 0.001, 0.0001, 0.00001])
