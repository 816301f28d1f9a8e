"""A really full disk (a 64 KiB tmpfs): the run stops in one line and leaves nothing half
written; a full cache only costs the next run a decode. Needs root and permission to mount;
skips otherwise."""

from __future__ import annotations

import errno
import subprocess
from pathlib import Path

import pytest

from .conftest import ALEXNET, cli_env


def small_disk(tmp_path: Path, size: str, more: str = ""):
    """A tmpfs of ``size`` (and mount options ``more``, e.g. ",ro") under ``tmp_path``."""
    mount = tmp_path / f"disk-{size}"
    mount.mkdir()
    made = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}{more}", "tmpfs", str(mount)],
                          capture_output=True, text=True)  # fmt: skip
    if made.returncode != 0:
        pytest.skip(f"cannot mount a small tmpfs here: {made.stderr.strip()}")
    return mount


def unmount(mount: Path) -> None:
    """Unmount, waiting for the processes of a command that has just ended (its loader's
    workers end with it, a moment later) to let go of the disk."""
    import time

    for _ in range(50):
        if subprocess.run(["umount", str(mount)], capture_output=True).returncode == 0:
            return
        time.sleep(0.1)


@pytest.fixture()
def tiny_disk(tmp_path):
    mount = small_disk(tmp_path, "64k")
    yield mount
    unmount(mount)


def fill(disk: Path, leave: int = 0) -> None:
    """Take all of ``disk``'s room but ``leave`` bytes."""
    import shutil

    free = shutil.disk_usage(disk).free - leave
    with open(disk / "filler", "wb") as f:
        while free > 0:
            try:
                wrote = f.write(b"\0" * min(free, 1 << 20))
            except OSError as exc:  # a run writing beside it took the rest first: full anyway
                if exc.errno != errno.ENOSPC:
                    raise
                return
            free -= wrote


def one_line_error(proc: subprocess.CompletedProcess, command: str) -> str:
    lines = proc.stderr.strip().splitlines()
    assert proc.returncode == 2, proc.stderr
    assert "Traceback" not in proc.stderr and lines[-1].startswith(f"alexnet {command}: error: ")
    return lines[-1]


def leftovers(disk: Path) -> list[Path]:
    return [p for p in disk.rglob("*") if p.name.startswith(".") or p.stat().st_size == 0]


def test_a_full_disk_stops_the_run_in_one_line(tiny_disk, tmp_path, recipe_file):
    # The decode cache (about 0.5 MB) does not fit either: the run must go on without it.
    proc = subprocess.run(
        [*ALEXNET, "train", "--recipe", str(recipe_file(epochs=1)), "--runs", str(tiny_disk),
         "--name", "r", "--no-progress"],
        env=cli_env(tiny_disk / "cache"), capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    lines = proc.stderr.strip().splitlines()
    assert proc.returncode == 2, proc.stderr
    assert "Traceback" not in proc.stderr and lines[-1].startswith("alexnet train: error: ")
    assert "cannot write" in lines[-1] and "the disk holding" in lines[-1], lines[-1]
    leftovers = [p for p in Path(tiny_disk).rglob("*") if p.suffix == ".tmp"]
    assert leftovers == [] and not (tiny_disk / "r").exists()


def test_a_disk_that_fills_mid_run_stops_it_in_one_line(tmp_path, recipe_file, cache):
    """The disk fills after the run's first checkpoint: torch's writer failed with two
    chained tracebacks and left its temporary file behind. Now one line, and the last good
    checkpoint kept."""
    import time

    disk = small_disk(tmp_path, "8m")
    try:
        proc = subprocess.Popen(
            [*ALEXNET, "train", "--recipe", str(recipe_file(epochs=200)), "--runs", str(disk),
             "--name", "r", "--no-progress"],
            env=cli_env(cache), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
        )  # fmt: skip
        deadline = time.time() + 120
        while not (disk / "r" / "last.pt").exists() and proc.poll() is None:
            assert time.time() < deadline, "no checkpoint in 2 minutes"
            time.sleep(0.01)
        fill(disk)
        _, err = proc.communicate(timeout=300)
        done = subprocess.CompletedProcess(proc.args, proc.returncode, "", err)
        line = one_line_error(done, "train")
        assert "cannot write" in line and "the disk holding" in line, line
        assert f"then alexnet train --resume {disk / 'r'}" in line, line  # how to go on
        assert (disk / "r" / "last.pt").stat().st_size > 0  # the last good one is kept
        assert not [p for p in disk.rglob(".*partial*")]
    finally:
        unmount(disk)


def test_prepare_on_a_full_disk_keeps_its_chunks_and_continues(tmp_path, tiny_folder, cache):
    """prepare said a bare "[Errno 28] No space left on device", naming no file, and left
    its lock. Now one line naming the file and the disk, no temporary file, and the chunks
    finished are kept: with room made, the same command completes the store."""
    disk = small_disk(tmp_path, "2m")
    try:
        fill(disk, leave=1_200_000)  # room for a few chunks of 20 images at 32 px
        args = [*ALEXNET, "prepare", str(tiny_folder), str(disk / "store"), "--size", "32",
                "--chunk", "20", "--workers", "0", "--no-progress"]  # fmt: skip
        proc = subprocess.run(args, env=cli_env(cache), capture_output=True, text=True,
                              timeout=300)  # fmt: skip
        line = one_line_error(proc, "prepare")
        assert "cannot write" in line and str(disk) in line and "continues from them" in line
        assert [p for p in disk.rglob(".*")] == [], "a temporary or lock file was left"
        kept = sorted(p.name for p in (disk / "store" / "train").iterdir())
        assert "chunk-00000.json" in kept
        (disk / "filler").unlink()
        again = subprocess.run(args, env=cli_env(cache), capture_output=True, text=True,
                               timeout=300)  # fmt: skip
        assert again.returncode == 0, again.stderr
        assert "train 120 images" in again.stdout
    finally:
        unmount(disk)


@pytest.mark.slow  # a training run and a disk per case (75 s): make test-slow
@pytest.mark.parametrize("name", ["net.safetensors", "net.pt2", "net.onnx", "figures",
                                  "figures-midway"])  # fmt: skip
def test_export_and_figures_on_a_full_disk_say_so_and_leave_nothing(
    tmp_path, recipe_file, cache, name
):
    """export to a full disk: a SafetensorError traceback, a C++ abort (pt2, exit 134), an
    ONNX message without the path; figures left an empty PNG. Each is one line naming the
    file and the disk, exit 2, nothing left behind."""
    run = tmp_path / "runs"
    trained = subprocess.run([*ALEXNET, "train", "--recipe", str(recipe_file(epochs=1)), "--runs",
                              str(run), "--name", "r", "--no-progress"], env=cli_env(cache),
                             capture_output=True, text=True, timeout=300)  # fmt: skip
    assert trained.returncode == 0, trained.stderr
    disk = small_disk(tmp_path, "1m")
    try:
        fill(disk, leave=150_000 if name == "figures-midway" else 4096)  # midway: 3 fit
        out = disk / name
        figures = name.startswith("figures")
        args = ["figures", str(run / "r"), "--out", str(out)] if figures else [
            "export", str(run / "r"), str(out)]  # fmt: skip
        if figures:
            out.mkdir()
        proc = subprocess.run([*ALEXNET, *args, "--no-progress"] if figures else
                              [*ALEXNET, *args], env=cli_env(cache), capture_output=True,
                              text=True, timeout=300)  # fmt: skip
        line = one_line_error(proc, args[0])
        assert "cannot write" in line and str(disk) in line, line
        assert leftovers(disk) == [], leftovers(disk)
        if figures:  # all of the figures or none: none left from a set cut short
            assert list(out.iterdir()) == []
    finally:
        unmount(disk)


@pytest.mark.slow  # every command's first write on a full disk (28 s): make test-slow
def test_a_first_write_that_fails_leaves_no_folder(tmp_path, tiny_folder, recipe_file, cache):
    """On a full disk, prepare left an empty store folder (saying the chunks finished were
    kept, though none was), figures an empty --out, and an experiment a 0-byte planned.toml
    in two folders with a bare "[Errno 28]", and train a TensorBoard thread's traceback and an
    empty runs folder. Each now says which file or folder, and leaves nothing."""
    recipe = recipe_file(epochs=1)
    trained = subprocess.run([*ALEXNET, "train", "--recipe", str(recipe), "--runs",
                              str(tmp_path / "runs"), "--name", "r", "--no-progress",
                              "--no-report"], env=cli_env(cache), capture_output=True, text=True,
                             timeout=300)  # fmt: skip
    assert trained.returncode == 0, trained.stderr
    events = set((tmp_path / "runs" / "r" / "tb").glob("events.*"))
    disk = small_disk(tmp_path, "1m")
    try:
        fill(disk, leave=4096)
        for made, args in (
            ("store", ["prepare", str(tiny_folder), str(disk / "store"), "--no-progress",
                       "--workers", "0"]),
            ("figs", ["figures", str(tmp_path / "runs" / "r"), "--out", str(disk / "figs"),
                      "--no-progress"]),
            ("runs", ["train", "--recipe", str(recipe), "--runs", str(disk / "runs"), "--name",
                      "x", "--no-progress"]),
            ("exp", ["experiment", "ablations", "--recipe", str(recipe), "--out",
                     str(disk / "exp"), "--seeds", "1", "--epochs", "1", "--variants", "full",
                     "--no-progress"]),
        ):  # fmt: skip
            proc = subprocess.run([*ALEXNET, *args], env=cli_env(cache), capture_output=True,
                                  text=True, timeout=300)  # fmt: skip
            line = one_line_error(proc, args[0])
            assert "Exception in thread" not in proc.stderr, proc.stderr
            assert "cannot write" in line and str(disk) in line and "kept" not in line, line
            assert not (disk / made).exists(), f"{args[0]} left {made}/ behind"
        assert set((tmp_path / "runs" / "r" / "tb").glob("events.*")) == events, "a log was left"
    finally:
        unmount(disk)
