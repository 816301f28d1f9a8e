"""Progress bars: drawn on a terminal, never into a redirected log, for every command that
has one (prepare and eval wrote hundreds of carriage-return redraws into redirected logs;
lr-find showed nothing even on a terminal)."""

from __future__ import annotations

import fcntl
import os
import pty
import struct
import subprocess
import termios
from pathlib import Path

import pytest

from alexnet.training.train import fit

from .conftest import ALEXNET, cli_env, tiny_recipe


def on_terminal(args: list[str], env: dict) -> tuple[int, str]:
    """Run ``alexnet args`` with standard error on a pseudo-terminal; its exit status and
    what it drew there."""
    master, slave = pty.openpty()
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 24, 100, 0, 0))  # 100 columns
    proc = subprocess.Popen([*ALEXNET, *args], env=env, stdout=subprocess.DEVNULL, stderr=slave)
    os.close(slave)
    drawn = b""
    while True:
        try:
            chunk = os.read(master, 65536)
        except OSError:  # the other end closed: the process is done
            break
        if not chunk:
            break
        drawn += chunk
    os.close(master)
    return proc.wait(timeout=300), drawn.decode(errors="replace")


@pytest.fixture(scope="module")
def run(tiny_folder, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("progress") / "run"
    fit(tiny_recipe(tiny_folder, epochs=1), out, progress=False)
    return out


@pytest.mark.parametrize("command", ["prepare", "eval", "lr-find"])
def test_bars_are_drawn_on_a_terminal_only(command, run, tiny_folder, tmp_path, cache):
    recipe = tmp_path / "tiny.toml"
    recipe.write_text(tiny_recipe(tiny_folder).to_toml())
    args = {"prepare": ["prepare", str(tiny_folder), str(tmp_path / "store"), "--chunk", "4",
                        "--workers", "0", "--size", "32"],
            "eval": ["eval", str(run), "--batch", "4"],
            "lr-find": ["lr-find", "--recipe", str(recipe), "--steps", "12", "--plot",
                        str(tmp_path / "lr.png"), "--overwrite"]}[command]  # fmt: skip
    env = cli_env(cache)
    redirected = subprocess.run([*ALEXNET, *args], env=env, capture_output=True, text=True,
                                timeout=300)  # fmt: skip
    assert redirected.returncode == 0, redirected.stderr
    assert "\r" not in redirected.stderr and "it/s" not in redirected.stderr
    if command == "prepare":  # a store already made is not made again: start afresh
        import shutil

        shutil.rmtree(tmp_path / "store")
    status, drawn = on_terminal(args, env)
    assert status == 0, drawn
    assert "\r" in drawn and {"prepare": "prepare train", "eval": "eval",
                              "lr-find": "lr-find"}[command] in drawn  # fmt: skip
