"""A really full disk (a 64 KiB tmpfs): the run stops in one line and leaves nothing half
written; a full cache only costs the next run a decode. Needs root and permission to mount;
skips otherwise."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from .conftest import ALEXNET, cli_env


@pytest.fixture()
def tiny_disk(tmp_path):
    mount = tmp_path / "disk"
    mount.mkdir()
    made = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=64k", "tmpfs", str(mount)],
                          capture_output=True, text=True)  # fmt: skip
    if made.returncode != 0:
        pytest.skip(f"cannot mount a small tmpfs here: {made.stderr.strip()}")
    yield mount
    subprocess.run(["umount", str(mount)], check=False)


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
    assert "the disk is full" in lines[-1] or "No space left" in lines[-1], lines[-1]
    leftovers = [p for p in Path(tiny_disk).rglob("*") if p.suffix == ".tmp"]
    assert leftovers == [] and not (tiny_disk / "r").exists()
