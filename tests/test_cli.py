"""Every error a user can make on the command line is one line that names the key or the file,
with exit status 2; nothing is left behind by a start that fails."""

from __future__ import annotations

import errno
import hashlib
import math
import os
import pickle
import shutil
import signal
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import torch

from alexnet.cli import main

from .conftest import ALEXNET, tiny_recipe
from .test_data import Boom, cifar_batches, write_cifar_archive


@dataclass
class Ctx:
    tmp: Path
    tiny: Path
    recipe: Path  # a tiny recipe file, 1 epoch
    runs: Path
    trained: Path  # finished runs, trained once per module and copied
    after: list = field(default_factory=list)  # checks of what the refused command left alone

    def train(self, *extra: str, name: str | None = "r") -> list[str]:
        named = ["--name", name] if name is not None else []
        return ["train", "--recipe", str(self.recipe), "--runs", str(self.runs), *named,
                "--no-progress", *extra]  # fmt: skip

    def finished_run(self, name: str = "done", *extra: str) -> Path:
        """A tiny run trained to its end with ``extra`` options, named ``name``: trained once
        a module, then copied (nearly a hundred cases start from one; a second each)."""
        run = self.runs / name
        key = hashlib.sha256("\0".join([self.recipe.read_text(), *extra]).encode())
        template = self.trained / key.hexdigest()[:16]
        if not template.is_dir():
            main(["train", "--recipe", str(self.recipe), "--runs", str(template.parent),
                  "--name", template.name, "--no-progress", *extra])  # fmt: skip
        shutil.copytree(template, run, symlinks=True)
        return run

    def run_with(self, state, name: str = "bad") -> Path:
        run = self.runs / name
        run.mkdir(parents=True)
        torch.save(state, run / "last.pt")
        return run


def _raw_pickle(c: Ctx) -> list[str]:
    """A plain pickle (protocol 4) where a checkpoint should be: torch warned twice about its
    protocol before our line."""
    import pickle

    run = c.runs / "raw"
    run.mkdir(parents=True)
    (run / "last.pt").write_bytes(pickle.dumps({"a": 1}, protocol=4))
    return ["train", "--resume", str(run)]


def _copied_checkpoint(c: Ctx) -> list[str]:
    a, b = c.finished_run("a"), c.finished_run("b")
    (b / "recipe.toml").write_text((b / "recipe.toml").read_text().replace("seed = 0", "seed = 7"))
    shutil.copy(a / "last.pt", b / "last.pt")
    return ["train", "--resume", str(b), "--set", "epochs=3"]


def _other_shape(c: Ctx) -> list[str]:
    run = c.finished_run("shape")
    state = torch.load(run / "last.pt", weights_only=True)
    state["model"]["classifier.6.weight"] = torch.zeros(5, 32)
    state["epoch"] = 0
    torch.save(state, run / "last.pt")
    return ["train", "--resume", str(run), "--checkpoint-recipe"]


def _no_recipe(c: Ctx) -> list[str]:
    state = torch.load(c.finished_run("nr") / "last.pt", weights_only=True)
    del state["recipe"]
    return ["train", "--resume", str(c.run_with(state))]


def _newer_format(c: Ctx) -> list[str]:
    state = torch.load(c.finished_run("nf") / "last.pt", weights_only=True)
    return ["train", "--resume", str(c.run_with({**state, "format": 9}))]


def _malicious_checkpoint(c: Ctx) -> list[str]:
    run = c.runs / "evil"
    run.mkdir(parents=True)
    (run / "last.pt").write_bytes(pickle.dumps(Boom()))
    return ["train", "--resume", str(run)]


def _malicious_cifar(c: Ctx) -> list[str]:
    batches = cifar_batches()
    batches["test_batch"] = pickle.dumps(Boom())
    write_cifar_archive(c.tmp / "evil.tar.gz", batches)
    return [
        "train",
        "--recipe",
        "cifar10",
        "--data",
        str(c.tmp / "evil.tar.gz"),
        "--runs",
        str(c.runs),
    ]


def _non_utf8_class(c: Ctx) -> list[str]:
    root = c.tmp / "photos"
    shutil.copytree(c.tiny, root)
    os.rename(root / "train" / "checks", os.fsencode(root / "train") + b"/caf\xe9")
    return c.train("--data", str(root))


def _read_only_runs(c: Ctx, monkeypatch) -> list[str]:
    real_mkdir = Path.mkdir

    def refuse(self, *args, **kwargs):
        if str(self).startswith(str(c.runs)):
            raise PermissionError(errno.EACCES, "Permission denied", str(self))
        return real_mkdir(self, *args, **kwargs)

    monkeypatch.setattr(Path, "mkdir", refuse)
    return c.train()


def _full_disk(c: Ctx, monkeypatch) -> list[str]:
    def full(fd):  # the checkpoint's bytes went to a temporary file; flushing them fails
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(os, "fsync", full)
    return c.train()


def _data_changed(c: Ctx) -> list[str]:
    root = c.tmp / "photos"
    shutil.copytree(c.tiny, root)
    main(c.train("--data", str(root), "--set", "schedule.name=constant", name="grow"))
    shutil.copy(root / "train" / "checks" / "000.png", root / "train" / "checks" / "new.png")
    return ["train", "--resume", str(c.runs / "grow"), "--set", "epochs=2"]


def _garbage_checkpoint(c: Ctx) -> list[str]:
    run = c.runs / "garbage"
    run.mkdir(parents=True)
    (run / "last.pt").write_text("garbage")
    return ["train", "--resume", str(run)]


def _truncated_checkpoint(c: Ctx) -> list[str]:
    run = c.finished_run("cut")
    data = (run / "last.pt").read_bytes()
    (run / "last.pt").write_bytes(data[: len(data) // 2])
    return ["train", "--resume", str(run)]


HELD = []


def _run_in_use(c: Ctx) -> list[str]:
    from alexnet.training.runs import hold_run

    run = c.finished_run("busy")
    lock = hold_run(run)
    lock.__enter__()  # as another process training into it would
    HELD.append(lock)
    return ["train", "--resume", str(run), "--set", "optim.lr=0.01"]


def _same_name(c: Ctx) -> list[str]:
    c.finished_run("r")
    return c.train()


def _mixed_channels(c: Ctx) -> list[str]:
    """An ensemble of a colour and a grey network died in conv1 with a traceback."""
    colour = c.finished_run("colour")
    main(c.train("--set", "data.channels=1", "--set", "data.mean=[0.5]", "--set", "data.std=[0.25]",
                 "--no-report", name="grey"))  # fmt: skip
    return ["eval", str(colour), str(c.runs / "grey")]


def _looped_store(c: Ctx) -> list[str]:
    loop = c.tmp / "loop"
    loop.symlink_to(loop)
    return ["prepare", str(c.tiny), str(loop), "--no-progress"]


def _experiment_too_small(c: Ctx) -> list[str]:
    """The first run of an experiment refused by its batch check left ``full-seed0/`` with
    its lock and plan behind."""
    return ["experiment", "ablations", "--data", str(c.tiny), "--out", str(c.runs / "exp"),
            "--seeds", "1", "--epochs", "1", "--variants", "full", "--no-progress"]  # fmt: skip


def _nan_weights(c: Ctx) -> list[str]:
    """A diverged network's weights loaded silently, and predict answered "nan%"."""
    run = c.finished_run("nan")
    state = torch.load(run / "best.pt", weights_only=True)
    state["model"]["features.0.weight"][0, 0, 0, 0] = float("nan")
    torch.save(state, run / "best.pt")
    return ["predict", str(run), str(next((c.tiny / "val" / "checks").iterdir()))]


def _fifo_recipe(c: Ctx) -> list[str]:
    os.mkfifo(c.tmp / "pipe.toml")  # never opened: reading it would wait for a writer
    return ["train", "--recipe", str(c.tmp / "pipe.toml")]


def _empty_recipe(c: Ctx) -> list[str]:
    """An empty file without .toml trained the paper's defaults without a word."""
    (c.tmp / "notes").write_text("")
    return ["train", "--recipe", str(c.tmp / "notes")]


def _cache_a_file(c: Ctx, monkeypatch) -> list[str]:
    (c.tmp / "cachefile").write_text("")
    monkeypatch.setenv("ALEXNET_CACHE", str(c.tmp / "cachefile"))
    return c.train()


def _killed_early(c: Ctx) -> Path:
    """A run killed before its first checkpoint: --resume and a new run of its name each
    pointed at the other."""
    run = c.runs / "r"
    run.mkdir(parents=True)
    (run / "recipe.toml").write_text(c.recipe.read_text())
    return run


def _short_classes(classes: list[str]) -> Callable[[Ctx], list[str]]:
    """A checkpoint whose class list is shorter than its output layer: predict met an
    IndexError, and export wrote the file without noticing; emptied, predict answered "0"."""

    def setup(c: Ctx) -> list[str]:
        run = c.finished_run("short")
        state = torch.load(run / "best.pt", weights_only=True)
        state["data"]["classes"] = state["data"]["names"] = classes
        torch.save(state, run / "best.pt")
        return ["predict", str(run), str(next((c.tiny / "val" / "checks").iterdir()))]

    return setup


def _too_long(c: Ctx, args: list[str]) -> list[str]:
    """A run's name too long for the disk left the --runs folder made for it, empty."""
    c.after.append(lambda: not c.runs.exists())
    return args


def _recipe_name_too_long(c: Ctx) -> list[str]:
    """The hint named --name where the name came from the recipe."""
    text = c.recipe.read_text()
    assert 'name = "tiny"' in text
    (c.tmp / "long.toml").write_text(text.replace('name = "tiny"', f'name = "{"x" * 300}"'))
    return _too_long(c, ["train", "--recipe", str(c.tmp / "long.toml"), "--runs", str(c.runs),
                         "--no-progress"])  # fmt: skip


def _best_alone(c: Ctx) -> list[str]:
    """A run whose last.pt is gone but best.pt is there was told it had stopped before its
    first checkpoint, and to rm -r it: its best network with it."""
    run = c.finished_run("alone")
    (run / "last.pt").unlink()
    c.after.append(lambda: (run / "best.pt").is_file())
    return ["train", "--resume", str(run)]


def _negative_epoch(c: Ctx) -> list[str]:
    run = c.finished_run("neg")
    state = torch.load(run / "last.pt", weights_only=True)
    state["epoch"] = -5
    torch.save(state, run / "last.pt")
    return ["train", "--resume", str(run)]


def _epochs_below_the_stop(c: Ctx) -> list[str]:
    """A run stopped in its second epoch, resumed with --set epochs=1: it said "resuming",
    wrote a report "after 1 epochs" and kept nothing of it; the next resume trained on."""
    run = c.finished_run("lowered", "--set", "schedule.name=constant", "--set", "epochs=2")
    state = torch.load(run / "last.pt", weights_only=True)
    state |= {"epoch": 1, "batch": 2, "history": state["history"][:1],
              "global_step": state["global_step"] // 2 + 2}  # fmt: skip
    state["scheduler"]["last_epoch"] = 1  # a schedule by epochs
    torch.save(state, run / "last.pt")
    (run / "report.md").unlink()
    c.after.append(lambda: torch.load(run / "last.pt", weights_only=True)["batch"] == 2)
    return ["train", "--resume", str(run), "--set", "epochs=1"]


def _plot_over_a_file(c: Ctx) -> list[str]:
    """lr-find's plot replaced a file of the user's of the same name without a word."""
    mine = c.tmp / "mine.png"
    mine.write_text("the user's own\n")
    c.after.append(lambda: mine.read_text() == "the user's own\n")
    return ["lr-find", "--recipe", str(c.recipe), "--steps", "5", "--plot", str(mine)]


def _experiment_into_another(c: Ctx) -> list[str]:
    """ablations given a relu-vs-tanh experiment's folder replaced its results.md and
    results.json (and the reverse): each continues only its own folder."""
    (c.runs / "exp").mkdir(parents=True)
    plan = c.runs / "exp" / "plan.json"
    plan.write_text('{"inputs": {}}\n')
    results = c.runs / "exp" / "results.md"
    results.write_text("# Figure 1: ReLU against tanh\n")
    c.after.append(lambda: results.read_text() == "# Figure 1: ReLU against tanh\n")
    return ["experiment", "ablations", "--recipe", str(c.recipe), "--out", str(c.runs / "exp"),
            "--seeds", "1", "--epochs", "1", "--variants", "full", "--no-progress"]  # fmt: skip


def DELETE(_old):  # as a value for _edited: the key is removed
    return None


def _edited(key: str, value, batch: int = 0, schedule: str = "") -> Callable[[Ctx], list[str]]:
    """A finished run whose last.pt has ``key`` replaced (a function of the old value), set
    back to its first epoch and resumed: edited counts, sums and states crashed the resumed run with
    tracebacks (KeyError, ZeroDivisionError, RuntimeError, TypeError). ``schedule``: trained
    under that schedule rather than the recipe's one-cycle."""

    def setup(c: Ctx) -> list[str]:
        extra = ("--set", f"schedule.name={schedule}") if schedule else ()
        run = c.finished_run(f"edited-{key}", *extra)
        state = torch.load(run / "last.pt", weights_only=True)
        history = state["history"]
        # Rewound to its first epoch's ``batch``, counts and (per-step) schedule together:
        # there is more to train.
        state |= {"epoch": 0, "batch": batch, "global_step": batch, "history": []}
        state["scheduler"]["last_epoch"] = batch
        if key == "history":
            state["history"] = history
        state[key] = value(state[key])
        if value is DELETE:
            del state[key]
        torch.save(state, run / "last.pt")
        return ["train", "--resume", str(run)]

    return setup


def _linked(name: str) -> Callable[[Ctx], list[str]]:
    """A run file linked to a file outside the run: a resume rewrote metrics.jsonl's target,
    appended to log.txt's and wrote report.md into it (as root, /etc/passwd). The target is
    left as it was."""

    def setup(c: Ctx) -> list[str]:
        run = c.finished_run(f"linked-{name}")
        outside = c.tmp / f"outside-{name}"
        outside.write_text("not the run's\n")
        (run / name).unlink(missing_ok=True)
        (run / name).symlink_to(outside)
        c.after.append(lambda: outside.read_text() == "not the run's\n")
        return ["train", "--resume", str(run), "--set", "epochs=3"]

    return setup


def _recipe_a_folder(c: Ctx) -> list[str]:
    """A resume trained its epoch, then failed writing recipe.toml: its log lacked the epoch."""
    run = c.finished_run("recipe-folder")
    (run / "recipe.toml").unlink()
    (run / "recipe.toml").mkdir()
    return ["train", "--resume", str(run), "--set", "epochs=3"]


def _input_size_edited(c: Ctx) -> list[str]:
    """An export printed a 168-line traceback; eval said nothing."""
    best = c.finished_run("sized") / "best.pt"
    state = torch.load(best, weights_only=True)
    state["recipe"]["data"]["image_size"] = 4096
    torch.save(state, best)
    return ["export", str(best), str(c.tmp / "sized.onnx")]


def _class_with_a_newline(c: Ctx) -> list[str]:
    """Trained, then refused by every command that read the network."""
    data = c.tmp / "newline"
    shutil.copytree(c.tiny, data)
    for split in ("train", "val"):
        (data / split / "checks").rename(data / split / "che\ncks")
    return c.train("--data", str(data))


def _log_a_pipe(c: Ctx) -> list[str]:
    """The resume waited for ever on a pipe named log.txt."""
    run = c.finished_run("piped")
    (run / "log.txt").unlink()
    os.mkfifo(run / "log.txt")
    return ["train", "--resume", str(run)]


def _recipe_a_link_to_itself(c: Ctx) -> list[str]:
    """Found only after a resume had trained an epoch, when recipe.toml was written."""
    run = c.finished_run("recipe-loop")
    (run / "recipe.toml").unlink()
    (run / "recipe.toml").symlink_to("recipe.toml")
    return ["train", "--resume", str(run), "--set", "epochs=3"]


def _first_buffer(optimizer: dict, value) -> dict:
    """``optimizer`` (a state dict) with its first parameter's first buffer set to ``value``."""
    state = {k: dict(v) for k, v in optimizer["state"].items()}
    first = next(iter(state))
    key = next(k for k, v in state[first].items() if isinstance(v, torch.Tensor) and v.dim())
    state[first][key] = value
    return optimizer | {"state": state}


def _first_group(optimizer: dict, key: str, value) -> dict:
    groups = [dict(g) for g in optimizer["param_groups"]]
    groups[0][key] = value
    return optimizer | {"param_groups": groups}


def _a_store_as_images(c: Ctx) -> list[str]:
    main(["prepare", str(c.tiny), str(c.tmp / "store"), "--workers", "0", "--no-progress"])
    return c.train("--data", str(c.tmp / "store"))


def _resume_a_link_loop(c: Ctx) -> list[str]:
    (c.tmp / "l1").symlink_to("l2")
    (c.tmp / "l2").symlink_to("l1")
    return ["train", "--resume", str(c.tmp / "l1")]


def _deep_recipe(c: Ctx) -> list[str]:
    (c.tmp / "deep.toml").write_text("a = " + "[" * 100_000 + "]" * 100_000 + "\n")
    return ["train", "--recipe", str(c.tmp / "deep.toml")]


def _huge_recipe(c: Ctx) -> list[str]:
    with open(c.tmp / "huge.toml", "wb") as f:
        f.truncate(3 << 20)  # sparse: a 3 GB one was read whole, 6.9 GB at its peak
    return ["train", "--recipe", str(c.tmp / "huge.toml")]


def _cache_loop(c: Ctx, monkeypatch) -> list[str]:
    (c.tmp / "cl1").symlink_to(c.tmp / "cl2")
    (c.tmp / "cl2").symlink_to(c.tmp / "cl1")
    monkeypatch.setenv("ALEXNET_CACHE", str(c.tmp / "cl1"))
    return ["cache", "info"]


def _export_to(c: Ctx, name: str, *extra: str) -> list[str]:
    return ["export", str(c.finished_run("x")), str(c.tmp / name), *extra]


def _export_over_fifo(c: Ctx) -> list[str]:
    os.mkfifo(c.tmp / "fifo.onnx")
    return _export_to(c, "fifo.onnx", "--overwrite")


def _store_into_images(c: Ctx) -> list[str]:
    """prepare wrote its chunks among the class folders of an image folder."""
    images = c.tmp / "images"
    shutil.copytree(c.tiny, images)
    return ["prepare", str(c.tiny), str(images), "--no-progress"]


def _experiment_into_run(c: Ctx) -> list[str]:
    return ["experiment", "ablations", "--out", str(c.finished_run("r1")), "--seeds", "1"]


def _bad_preprocessing(c: Ctx) -> list[str]:
    """Edited statistics gave a KeyError traceback in predict, eval and export."""
    run = c.finished_run("pre")
    state = torch.load(run / "best.pt", weights_only=True)
    state["preprocessing"] = {"mean": [0, 0, 0], "std": [0, 0, 0]}
    torch.save(state, run / "best.pt")
    return ["predict", str(run), str(next((c.tiny / "val" / "checks").iterdir()))]


def _edited_statistics(key: str, change, command: str) -> Callable[[Ctx], list[str]]:
    """A run that subtracts the mean image, its best.pt's statistic ``key`` changed: a mean
    image of another size gave a shape traceback in eval, predict and figures; a finite but
    absurd one predicted NaN without a word; a negative eigenvalue "diverged"."""

    def setup(c: Ctx) -> list[str]:
        run = c.finished_run(f"stats-{key}", "--set", "data.normalise=mean-image", "--set",
                             "augment.pca_std=0.1")  # fmt: skip
        state = torch.load(run / "best.pt", weights_only=True)
        state["preprocessing"][key] = change(state["preprocessing"][key])
        state["data"]["stored_size"] = 32  # as a store's run records it, the images' size
        torch.save(state, run / "best.pt")
        image = str(next((c.tiny / "val" / "checks").iterdir()))
        return {"predict": ["predict", str(run), image], "eval": ["eval", str(run)],
                "figures": ["figures", str(run)]}[command]  # fmt: skip

    return setup


def _run_file(name: str, content: str, command: str) -> Callable[[Ctx], list[str]]:
    """A finished run whose ``name`` is replaced by a file holding ``content``: an emptied
    recipe.toml was blamed on another recipe key by key, a file at tb/ or figures/ said only
    "File exists"."""

    def setup(c: Ctx) -> list[str]:
        run = c.finished_run(f"file-{name}")
        path = run / name
        shutil.rmtree(path) if path.is_dir() else path.unlink(missing_ok=True)
        path.write_text(content)
        if command == "figures":
            return ["figures", str(run), "--no-progress"]
        state = torch.load(run / "last.pt", weights_only=True)  # back to its start
        state |= {"epoch": 0, "batch": 0, "global_step": 0, "history": []}
        state["scheduler"]["last_epoch"] = 0
        torch.save(state, run / "last.pt")
        return ["train", "--resume", str(run), "--no-progress"]

    return setup


def _plot_a_fifo(c: Ctx) -> list[str]:
    os.mkfifo(c.tmp / "fifo.png")  # was replaced by a regular file
    return ["lr-find", "--recipe", str(c.recipe), "--steps", "5", "--plot", str(c.tmp / "fifo.png")]


def _runs_a_link_loop(c: Ctx) -> list[str]:
    (c.tmp / "loop").symlink_to("loop")  # mkdir said only "File exists"
    return ["train", "--recipe", str(c.recipe), "--runs", str(c.tmp / "loop")]


def _data_not_a_dict(c: Ctx) -> list[str]:
    """An edited data record gave an AttributeError traceback in eval, predict and export."""
    run = c.finished_run("dat")
    state = torch.load(run / "best.pt", weights_only=True)
    state["data"] = "garbage"
    torch.save(state, run / "best.pt")
    return ["export", str(run), str(c.tmp / "o.safetensors")]


def _name_in_use(c: Ctx) -> list[str]:
    """A run training now, before its first checkpoint: a second run of that name was told
    the folder "holds no checkpoint" and to remove it."""
    from alexnet.training.runs import hold_run

    (c.runs / "busy").mkdir(parents=True)
    lock = hold_run(c.runs / "busy")
    lock.__enter__()
    HELD.append(lock)
    return c.train(name="busy")


def _recipe_name_shadowed(c: Ctx, monkeypatch) -> list[str]:
    """A folder named like a shipped recipe in the working folder: `--recipe photos --data
    photos` said "recipe file photos is a folder"."""
    monkeypatch.chdir(c.tmp)
    (c.tmp / "cifar10").mkdir()
    return ["train", "--recipe", "cifar10", "--data", str(c.tmp / "cifar10"), "--runs",
            str(c.runs)]  # fmt: skip


Case = tuple[str, Callable[..., list[str]], str]
CASES: list[Case] = [
    ("missing data", lambda c: c.train("--data", str(c.tmp / "nowhere")), "nowhere: no such file"),
    ("not cifar", lambda c: ["train", "--recipe", "cifar10", "--data", str(c.tmp)], "neither CIFAR-10"),
    ("no fashion", lambda c: ["train", "--recipe", "fashion-mnist", "--data", str(c.tmp)],
     "apt-get install dataset-fashion-mnist"),
    ("unknown key", lambda c: c.train("--set", "optim.lrr=1"), "unknown key 'optim.lrr'"),
    ("unknown recipe", lambda c: ["train", "--recipe", "nope"], "unknown recipe 'nope'"),
    ("no run", lambda c: ["train", "--resume", str(c.tmp / "no-run")], "no-run/last.pt: no checkpoint"),
    ("no recipe given", lambda c: ["train"], "give --recipe"),
    ("checkpoint recipe alone", lambda c: c.train("--checkpoint-recipe"),
     "--checkpoint-recipe goes with --resume"),
    ("batch 0", lambda c: c.train("--set", "data.batch_size=0"), "data.batch_size must be >= 1, got 0"),
    ("batch -5", lambda c: c.train("--set", "data.batch_size=-5"), "data.batch_size must be >= 1, got -5"),
    ("epochs 0", lambda c: c.train("--set", "epochs=0"), "epochs must be >= 1, got 0"),
    ("epochs -2", lambda c: c.train("--set", "epochs=-2"), "epochs must be >= 1, got -2"),
    ("numeric root", lambda c: c.train("--set", "data.root=5"), "data.root must be a string, got 5"),
    ("zero width", lambda c: c.train("--set", "model.options.widths=[8, 0, 16, 16, 8]"),
     "model.options.widths must be >= 1"),
    ("unknown option", lambda c: c.train("--set", "model.options.bogus=1"),
     "unknown option(s) model.options.bogus for alexnet-small"),
    ("fixed size", lambda c: ["train", "--recipe", "fashion-mnist", "--set", "data.image_size=64",
                              "--runs", str(c.runs)], "data.image_size: fashion-mnist images are 28x28"),
    ("typo table", lambda c: ["train", "--recipe", str(c.tmp / "typo.toml")], "unknown key 'trian'"),
    ("other shape", _other_shape, "its weights do not fit the network"),
    ("no recipe inside", _no_recipe, "not an alexnet training checkpoint (no recipe)"),
    ("raw pickle", _raw_pickle, "last.pt: not a checkpoint (corrupt, or not written by torch.save)"),
    ("bare tensor", lambda c: ["train", "--resume", str(c.run_with(torch.zeros(3)))],
     "holds a Tensor, not an alexnet checkpoint"),
    ("newer format", _newer_format, "checkpoint format 9 is newer than this alexnet reads"),
    ("malicious checkpoint", _malicious_checkpoint, "which could run code, so it was not loaded"),
    ("malicious cifar", _malicious_cifar, "test_batch: not a CIFAR-10 batch and not loaded"),
    ("non-utf8 class", _non_utf8_class, "not valid UTF-8; rename it"),
    ("read-only runs", _read_only_runs, "Permission denied; choose another"),
    ("full disk", _full_disk, "last.pt: the disk holding"),
    ("same name", lambda c: _same_name(c), "r already exists; resume it with --resume"),
    ("finished", lambda c: ["train", "--resume", str(c.finished_run())], "has finished 1 epochs; its one-cycle schedule cannot be extended"),
    ("copied checkpoint", _copied_checkpoint,
     "recipe.toml (seed = 7 there, 0 in it; copied from another run?)"),
    ("onecycle longer", lambda c: ["train", "--resume", str(c.finished_run()), "--set", "epochs=2"],
     "follows a one-cycle schedule, whose length is fixed"),
    ("too few classes", lambda c: c.train("--set", "model.options.num_classes=2"),
     "model.options.num_classes is 2 but the data has 3 classes"),
    ("odd tower widths", lambda c: c.train("--set", "model.options.widths=[9, 8, 16, 16, 8]"),
     "two towers need even widths into and out of conv2"),
    ("format overridden", lambda c: c.train("--set", "format=4"),
     "--set format=4: format is the version alexnet writes into a recipe file, not a setting"),
    ("data changed", _data_changed, "its data changed since the run began (120 train / 36 test"),
    ("huge seed", lambda c: c.train("--set", "seed=99999999999999999999"),
     "seed must be an integer between -(2**63) and 2**63 - 1"),
    ("too many threads", lambda c: c.train("--set", "train.threads=100000"),
     "train.threads must be <= 256"),
    ("huge decay", lambda c: c.train("--set", "optim.weight_decay=1e300"),
     "optim.weight_decay must be a finite number within float32's range"),
    ("name escapes", lambda c: c.train(name="../elsewhere"), "--name '../elsewhere' cannot name a run folder"),
    ("recipe name escapes", lambda c: c.train("--set", "name=../../etc", name=None),
     "the recipe's name '../../etc' cannot name a run folder"),
    ("garbage checkpoint", _garbage_checkpoint, "last.pt: not a checkpoint (corrupt, or not written"),
    ("truncated checkpoint", _truncated_checkpoint, "last.pt: not a loadable checkpoint (truncated or corrupt"),
    ("run in use", _run_in_use, "is in use by another alexnet process"),
    ("cache info extra", lambda c: ["cache", "info", "extra"], "takes no parts (got extra)"),
    ("cache clear bogus", lambda c: ["cache", "clear", "decoded", "all"], "unknown cache part 'all'"),
    ("summary huge input", lambda c: ["summary", "--input", "3x100000x100000"], "at most 64 channels and 4096"),
    ("summary channels", lambda c: ["summary", "-o", "in_channels=1", "--input", "3x227x227"],
     "-o in_channels=1 but --input has 3 channels"),
    ("ensemble channels", _mixed_channels, "its input channels is 1, "),
    ("huge crop padding", lambda c: c.train("--set", "augment.crop_padding=100000"),
     "augment.crop_padding must be <= 512, got 100000"),
    ("store a symlink loop", _looped_store, "loop: a symbolic link that leads back to itself"),
    ("summary huge hidden", lambda c: ["summary", "--arch", "alexnet-small", "-o", "hidden=100000000000"],
     "hidden must be <= 65536"),
    ("prepare no such split", lambda c: ["prepare", str(c.tiny), str(c.runs / "store"), "--split",
                                         "nosuch", "--no-progress"], "nosuch: no such folder"),
    ("experiment batch check", _experiment_too_small, "make no full batch of"),
    ("nan weights", _nan_weights, "best.pt: features.0.weight holds NaN or infinite values"),
    ("fifo recipe", _fifo_recipe, "pipe.toml is not a regular file (a pipe, socket or device)"),
    ("empty recipe", _empty_recipe, "notes is empty; a recipe is a .toml file"),
    ("resume elsewhere", lambda c: ["train", "--resume", str(c.finished_run()), "--runs", "x"],
     "drop --recipe, --data, --name, --runs"),
    ("resume with a budget", lambda c: ["train", "--resume", str(c.finished_run()), "--budget", "5"],
     "a budget run with what is left of its budget"),
    ("onecycle shorter", lambda c: ["train", "--resume", str(c.finished_run()), "--set", "epochs=1"],
     "(1 epochs): it cannot be lengthened or shortened"),
    ("cache a file", _cache_a_file, "cachefile is a file, not a folder; point ALEXNET_CACHE"),
    ("resume killed early", lambda c: ["train", "--resume", str(_killed_early(c))],
     "stopped before its first checkpoint, so there is nothing to resume; remove it"),
    ("resume without last.pt", _best_alone,
     "last.pt: missing, and a run resumes only from it; its best.pt is there: evaluate it"),
    ("name killed early", lambda c: (_killed_early(c), c.train())[1],
     "already exists and holds no checkpoint (a run stopped before its first"),
    ("short class list", _short_classes(["checks"]), "records 1 classes and 1 names for an output layer of 3"),
    ("empty class list", _short_classes([]), "records 0 classes and 0 names for an output layer of 3"),
    ("negative epoch", _negative_epoch, "last.pt: its epoch -5 is not a count"),
    ("epochs below the stop", _epochs_below_the_stop,
     "lowered stopped in epoch 2, after batch 2, past it; give epochs=2 or more"),
    ("edited history", _edited("history", lambda h: [{"epoch": "x"}]),
     "last.pt: its history is not a list of epochs' figures"),
    ("edited rng", _edited("rng", lambda r: {"torch": torch.zeros(3, dtype=torch.uint8)}),
     "last.pt: its training state is not what alexnet writes"),
    ("edited batch", _edited("batch", lambda b: 10**9), "last.pt: its batch 1000000000 is past"),
    ("edited sums", _edited("epoch_sums", lambda e: {"loss": "a"}), "its epoch sums are not finite"),
    ("edited optimizer", _edited("optimizer", lambda o: {"state": {}, "param_groups": []}),
     "last.pt: its training state is not what alexnet writes"),
    ("edited scheduler", _edited("scheduler", lambda d: d | {"last_epoch": "x"}),
     "its scheduler state's last_epoch is 'x', not a number"),
    ("figures out a device", lambda c: ["figures", str(c.tmp), "--out", "/dev/null"],
     "/dev/null: a device, pipe or socket, not a folder for the figures"),
    ("lr-find plot a folder", lambda c: ["lr-find", "--recipe", str(c.recipe), "--plot", str(c.tmp)],
     "a folder; give the name of a file to write in it"),
    ("summary option without a key", lambda c: ["summary", "-o", "="], "'=' names no key"),
    ("widths of the wrong length", lambda c: c.train("--set", "model.options.widths=[8, 8]"),
     "error: widths: alexnet-small needs 5 conv widths, got [8, 8]"),
    ("momentum of another shape", _edited("optimizer", lambda o: _first_buffer(o, torch.zeros(3))),
     "last.pt: its training state is not what alexnet writes (its optimizer's"),
    ("momentum that is text", _edited("optimizer", lambda o: _first_buffer(o, "x")),
     "its optimizer's"),
    ("a weight without its momentum", _edited("optimizer", lambda o: o | {"state": {
        k: v for k, v in o["state"].items() if k != next(iter(o["state"]))}}),
     "its optimizer has buffers for some weights and none for others"),
    ("a history tripled", lambda c: _edited("history", lambda h: h * 3)(c),
     "its history holds 3 epochs in another order than its count of 0"),
    ("a group without its rate", _edited("optimizer", lambda o: o | {"param_groups": [
        {k: v for k, v in g.items() if k != "lr"} for g in o["param_groups"]]}),
     "its optimizer state lacks lr"),
    ("momentum of booleans", _edited("optimizer", lambda o: _first_buffer(o, torch.ones(1).bool())),
     "holds torch.bool values"),
    ("a rate that is text", _edited("optimizer", lambda o: _first_group(o, "lr", "x")),
     "its optimizer state's lr is 'x', not a number"),
    ("a rate of nan", _edited("optimizer", lambda o: _first_group(o, "lr", math.nan)),
     "its optimizer state's lr is nan"),
    ("a momentum of None", _edited("optimizer", lambda o: _first_group(o, "momentum", None)),
     "its optimizer state's momentum is None, not a number"),
    ("data that is text", _edited("data", lambda d: "x"), "last.pt: its data record is a str"),
    ("a data count that is text", _edited("data", lambda d: d | {"train": str(d["train"])}),
     "last.pt: its data record's train is '"),
    ("weights of nan", _edited("model", lambda m: {k: v.fill_(math.nan) for k, v in m.items()}),
     "holds NaN or infinite values"),
    ("sums of more images than its batches", _edited("epoch_sums", lambda e: e | {"seen": 1e30}, batch=2),
     "its epoch sums count 1e+30 images seen, 0 right, in 2 batches of 16"),
    ("a best error of 5", _edited("best_top1_err", lambda b: 5.0), "its best error is not an error rate"),
    ("negative sums", _edited("epoch_sums", lambda e: e | {"seen": -1.0}),
     "its epoch sums are not finite counts and totals"),
    ("random state deleted", _edited("rng", DELETE), "not an alexnet training checkpoint (no rng)"),
    ("random state emptied", _edited("rng", lambda r: {}), "its random state lacks torch's"),
    ("epoch sums deleted", _edited("epoch_sums", DELETE), "checkpoint (no epoch_sums)"),
    ("a velocity's rate of nan", _edited("optimizer", lambda o: _first_group(o, "velocity_lr", math.nan)),
     "its optimizer state's velocity_lr is nan"),
    ("a step count rewound", _edited("global_step", lambda g: 5),
     "its step count 5 is not epoch 0 of 7 steps and batch 0"),
    ("a schedule run ahead", _edited("scheduler", lambda d: d | {"last_epoch": 7}),
     "its schedule has stepped 7 times, its counts say 0"),
    ("a base rate of 1e9", _edited("scheduler", lambda d: d | {"base_lrs": [1e9]}),
     "its scheduler's base_lrs is 1000000000.0, above its recipe's rate 0.05 or not a rate"),
    ("a peak rate of 1e9", _edited("optimizer", lambda o: _first_group(o, "max_lr", 1e9)),
     "its optimizer's max_lr is 1000000000.0, above its recipe's rate 0.05"),
    ("base rates that are a number", _edited("scheduler", lambda d: d | {"base_lrs": 5}),
     "its scheduler's base_lrs is of type int, not list"),
    ("a cycle shorter than its steps", _edited("scheduler", lambda d: d | {"total_steps": 2}, batch=3),
     "its scheduler's total_steps is 2 where its recipe gives 8"),
    ("no phases", _edited("scheduler", lambda d: d | {"_schedule_phases": []}),
     "its one-cycle phases are not a schedule of 7 steps"),
    ("a phase of an unknown rate", _edited("scheduler", lambda d: d | {"_schedule_phases": [
        {"end_step": 7, "start_lr": "nope", "end_lr": "max_lr"}]}),
     "its one-cycle phases are not a schedule of 7 steps"),
    ("an unknown annealing", _edited("scheduler", lambda d: d | {"_anneal_func_type": "bogus"}),
     "its scheduler's _anneal_func_type is 'bogus' where its recipe gives 'linear'"),
    ("a key that is a method", _edited("scheduler", lambda d: d | {"step": None}),
     "its scheduler state has 'step', which its schedule does not"),
    ("milestones as a list", _edited("scheduler", lambda d: d | {"milestones": [1, 2]}, schedule="step"),
     "its scheduler's milestones is of type list, not Counter"),
    ("more milestones", _edited("scheduler", lambda d: d | {"milestones": Counter({2: 5})}, schedule="step"),
     "its scheduler's milestones {2: 5} are not its recipe's 3 epochs"),
    ("a gamma of nan", _edited("scheduler", lambda d: d | {"gamma": math.nan}, schedule="step"),
     "its scheduler's gamma is nan where its recipe gives 0.1"),
    ("a constant base rate of 1e9", _edited("scheduler", lambda d: d | {"base_lrs": [1e9]}, schedule="constant"),
     "its scheduler's base_lrs is 1000000000.0, above its recipe's rate"),
    ("a recipe's rate not trained at", lambda c: [*_edited("recipe", lambda r: r | {"optim": r["optim"] | {"lr": 1e9}})(c),
                                                  "--checkpoint-recipe"],
     "its optimizer's max_lr is 0.05 where its recipe's rate is 1e+09"),
    ("a plateau recipe's rate not trained at",
     lambda c: [*_edited("recipe", lambda r: r | {"optim": r["optim"] | {"lr": 0.5}}, schedule="plateau")(c),
                "--checkpoint-recipe"],
     "its scheduler's min_lrs 5e-05 is not its recipe's rate 0.5 reduced 3 times or fewer"),
    ("momentum emptied", _edited("optimizer", lambda o: o | {"state": {}}, batch=3),
     "its optimizer has no momentum after 3 steps"),
    ("nesterov turned off", _edited("optimizer", lambda o: _first_group(o, "nesterov", False)),
     "its optimizer's nesterov is False where its recipe gives True"),
    ("a momentum of 5", _edited("optimizer", lambda o: _first_group(o, "momentum", 5.0)),
     "its optimizer's momentum is 5.0 where its recipe gives 0.9"),
    ("an input size edited", _input_size_edited,
     "best.pt: its recipe's data.image_size is 4096, not the network's input size"),
    ("a class named with a newline", _class_with_a_newline, "has a name with control characters"),
    ("a log that is a pipe", _log_a_pipe, "log.txt: a folder, pipe or broken link, not the run's"),
    ("a recipe.toml that is a folder", _recipe_a_folder, "recipe.toml: a folder, device or"),
    ("an emptied recipe.toml", _run_file("recipe.toml", "", "train"),
     "recipe.toml: empty, not the run's recipe; --checkpoint-recipe writes it again"),
    ("a file at tb", _run_file("tb", "x", "train"),
     "tb: a file stands where this path needs a folder; move or remove it"),
    ("a file at figures", _run_file("figures", "x", "figures"),
     "figures: a file stands where this path needs a folder; move or remove it"),
    ("a name too long", lambda c: _too_long(c, c.train(name="x" * 300)),
     "File name too long; choose a shorter name: --name"),
    ("a recipe name too long", _recipe_name_too_long,
     "File name too long; choose a shorter name: a --name, or a shorter name in the recipe"),
    ("a metrics.jsonl linked outside", _linked("metrics.jsonl"),
     "metrics.jsonl: a symbolic link, not the run's own log; remove it"),
    ("a log.txt linked outside", _linked("log.txt"), "log.txt: a symbolic link, not the run's own"),
    ("a report.md linked outside", _linked("report.md"),
     "report.md: a symbolic link, not the run's own report; remove it"),
    ("a recipe.toml linked to itself", _recipe_a_link_to_itself,
     "recipe.toml: a folder, device or broken link"),
    ("changes that are a number", _edited("changes", lambda c: 5),
     "last.pt: its record of changes (5) is not a list of what each resume changed"),
    ("changes that are numbers", _edited("changes", lambda c: [5, None]),
     "its record of changes ([5, None]) is not a list"),
    ("changes that are a table", _edited("changes", lambda c: {"a": 1}),
     "its record of changes ({'a': 1}) is not a list"),
    ("a store as an image folder", _a_store_as_images,
     "store: a store (alexnet prepare), not a folder of images; train from it with --set "
     "data.source=store"),
    ("resume a link loop", _resume_a_link_loop, "l1 is a symbolic link to nothing, or to itself"),
    ("deep recipe", _deep_recipe, "deep.toml: invalid TOML: nested too deeply"),
    ("huge recipe", _huge_recipe, "too large for a recipe (at most 1024 kB)"),
    ("cache a loop", _cache_loop, "cl1 is a symbolic link to nothing, or to itself"),
    ("export non-utf8 name", lambda c: _export_to(c, os.fsdecode(b"n\xffame.onnx")),
     "a name that is not valid UTF-8"),
    ("export over a fifo", _export_over_fifo, "fifo.onnx: not a regular file"),
    ("non-utf8 run name", lambda c: c.train(name=os.fsdecode(b"x\xffy")), "cannot name a run folder"),
    ("store into images", _store_into_images, "a folder with other things in it, not a store"),
    ("experiment full and seeds", lambda c: ["experiment", "ablations", "--full", "--seeds", "1"],
     "--full sets the seeds and epochs itself: give it without --seeds and --epochs"),
    ("experiment into a run", _experiment_into_run, "a training run's folder; give the experiment"),
    ("experiment into another's", _experiment_into_another,
     "exp: holds a relu-vs-tanh experiment (plan.json); give ablations a folder of its own"),
    ("huge mean", lambda c: c.train("--set", "data.mean=[1e9, 1, 1]"), "data.mean must be <= 1"),
    ("huge lrn alpha", lambda c: c.train("--set", "model.options.lrn_alpha=1e30"),
     "lrn_alpha must be <= 1"),
    ("a mean image of another size", _edited_statistics("mean_image", lambda m: m[:5, :5], "eval"),
     "best.pt: its mean image is (5, 5, 3), its images (32, 32, 3)"),
    ("a mean image of another size, predicted", _edited_statistics("mean_image", lambda m: m[:5, :5], "predict"),
     "best.pt: its mean image is (5, 5, 3)"),
    ("a mean image of 1e30", _edited_statistics("mean_image", lambda m: m * 1e30, "predict"),
     "mean_image holds values outside 0 to 255, which no image gives"),
    ("a negative eigenvalue", _edited_statistics("eigval", lambda e: e * -1e6, "figures"),
     "eigval holds values outside 0 to 1, which no image gives"),
    ("damaged preprocessing", _bad_preprocessing,
     "its preprocessing statistics are damaged (no mean_image)"),
    ("lr-find plot a fifo", _plot_a_fifo, "fifo.png: not a regular file"),
    ("lr-find over a user's file", _plot_over_a_file,
     "mine.png: exists; add --overwrite to replace it, or give another name"),
    ("experiment out not utf8", lambda c: ["experiment", "ablations", "--out",
                                           str(c.tmp / os.fsdecode(b"e\xff"))],
     "a name that is not valid UTF-8"),
    ("data not a record", _data_not_a_dict, "best.pt: its data record is a str"),
    ("runs not utf8", lambda c: ["train", "--recipe", str(c.recipe), "--runs",
                                 str(c.tmp / os.fsdecode(b"r\xff"))],
     "a name that is not valid UTF-8, which TensorBoard cannot write to"),
    ("runs a link loop", _runs_a_link_loop, "loop: a symbolic link to nothing, or back to itself"),
    ("quality of raw", lambda c: ["prepare", str(c.tiny), str(c.runs / "s"), "--quality", "50"],
     "--quality 50: applies to --layout jpeg only"),
    ("name in use", _name_in_use, "busy is in use by a run training now"),
    ("recipe name shadowed", _recipe_name_shadowed, "neither CIFAR-10"),
    ("checkpoint a device", lambda c: ["predict", "/dev/zero", str(c.tmp / "x.png")],
     "/dev/zero: not a regular file (a device, pipe or socket)"),
    ("resume a checkpoint file", lambda c: ["train", "--resume", str(c.finished_run() / "last.pt")],
     "last.pt is a file, not a run folder; give the run folder"),
    ("figures out without its parent", lambda c: ["figures", str(c.tmp), "--out",
                                                  str(c.tmp / "no" / "deep" / "fig")],
     "does not exist; the figures' folder is made, not the folders above it"),
    ("an image size the network cannot take", lambda c: c.train("--set", "data.image_size=7"),
     "data.image_size must be >= 8, got 7 for alexnet-small, whose input side it sets"),
    ("resume other key", lambda c: ["train", "--resume", str(c.finished_run()), "--set", "data.batch_size=8"],
     "--resume can change only optim.lr, epochs, not data.batch_size"),
]  # fmt: skip


@pytest.fixture(scope="module")
def finished_runs(tmp_path_factory) -> Path:
    """Where the table's finished runs are trained once (Ctx.finished_run)."""
    return tmp_path_factory.mktemp("finished")


@pytest.mark.parametrize(("setup", "message"), [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_errors_are_one_line_naming_the_key_or_file(setup, message, tmp_path, tiny_folder, cache,
                                                    capsys, monkeypatch, finished_runs):  # fmt: skip
    recipe = tmp_path / "tiny.toml"
    recipe.write_text(tiny_recipe(tiny_folder, epochs=1).to_toml())
    (tmp_path / "typo.toml").write_text("[trian]\nthreads = 1\n")
    c = Ctx(tmp_path, tiny_folder, recipe, tmp_path / "runs", finished_runs)
    args = setup(c, monkeypatch) if setup.__code__.co_argcount == 2 else setup(c)
    capsys.readouterr()
    before = sorted(p.name for p in c.runs.iterdir()) if c.runs.is_dir() else []
    with pytest.raises(SystemExit) as exit_:
        main(args)
    err = capsys.readouterr().err.strip().splitlines()
    assert exit_.value.code == 2, err
    errors = [line for line in err if line.startswith(f"alexnet {args[0]}: error: ")]
    assert errors == err[-1:] and message in err[-1], err
    assert not any("Traceback" in line or "weights_only" in line for line in err)
    assert all(check() for check in c.after), "a file outside the run was written"
    after = sorted(p.name for p in c.runs.iterdir()) if c.runs.is_dir() else []
    assert after == before, "a failed start left a run folder behind"
    assert not list(c.tmp.rglob(".*.partial*")), "a temporary checkpoint was left behind"
    while HELD:
        HELD.pop().__exit__(None, None, None)
    assert not list(c.tmp.rglob(".lock")), "a lock file was left behind"


@pytest.mark.parametrize("args", [["eval", "m", "--bogus"], ["cache", "info", "--bogus", "1"]])
def test_an_unknown_flag_is_named_with_its_command(args, capsys):
    """argparse's top parser said "alexnet: error: unrecognized arguments", without the
    command, and printed the top-level usage instead of the command's."""
    with pytest.raises(SystemExit) as done:
        main(args)
    err = capsys.readouterr().err
    assert done.value.code == 2
    assert err == (
        f"alexnet {args[0]}: error: unrecognized arguments: {' '.join(args[2:])} "
        f"(see alexnet {args[0]} --help)\n"
    )  # one line, not argparse's usage block


def test_a_flag_before_the_command_is_the_top_parsers(capsys):
    with pytest.raises(SystemExit):
        main(["--bogus", "summary"])
    assert capsys.readouterr().err == ("alexnet: error: unrecognized arguments: --bogus (see "
                                       "alexnet --help)\n")  # fmt: skip


def test_a_closed_pipe_ends_the_command_quietly():
    """``alexnet summary --json | head -1``: output to a pipe whose reader is gone."""
    import subprocess
    import sys

    script = ("import os; r, w = os.pipe(); os.close(r); os.dup2(w, 1); "
              "from alexnet.cli import main; main(['summary', '--json'])")  # fmt: skip
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                          timeout=120)  # fmt: skip
    assert done.returncode == 0 and done.stderr == ""


def test_a_closed_output_is_one_line_and_a_closed_error_stream_is_no_failure():
    """``alexnet summary >&-`` ended in an AttributeError traceback (flush on None), and
    ``2>&-`` made commands that draw progress fail with nothing said."""
    import subprocess
    import sys

    run = [sys.executable, "-m", "alexnet", "summary"]
    closed_out = subprocess.run(["sh", "-c", '"$@" >&-', "sh", *run], capture_output=True,
                                text=True, timeout=120)  # fmt: skip
    assert closed_out.returncode == 2
    assert closed_out.stderr == ("alexnet summary: error: its standard output is closed; give "
                                 "it one (> FILE, or > /dev/null to discard it)\n")  # fmt: skip
    closed_err = subprocess.run(["sh", "-c", '"$@" 2>&-', "sh", *run], capture_output=True,
                                text=True, timeout=120)  # fmt: skip
    assert closed_err.returncode == 0 and "conv1" in closed_err.stdout


def test_no_report_leaves_the_figures_to_later(recipe_file, tmp_path, cache):
    from alexnet.cli import main

    runs = tmp_path / "runs"
    main(["train", "--recipe", str(recipe_file(epochs=1)), "--runs", str(runs), "--name", "quiet",
          "--no-progress", "--no-report"])  # fmt: skip
    run = runs / "quiet"
    assert (run / "metrics.jsonl").is_file() and (run / "best.pt").is_file()
    assert not (run / "report.md").exists() and not list(run.glob("*.png"))


@pytest.mark.parametrize(
    ("args", "flag"),
    [
        (["experiment", "ablations", "--seeds", "0"], "--seeds: 0 is out of range: 1 to 100"),
        (["experiment", "ablations", "--epochs", "0"], "--epochs: 0 is out of range"),
        (["experiment", "ablations", "--variants", ""], "--variants: '': a comma-separated"),
        (["experiment", "relu-vs-tanh", "--rates", ""], "--rates: needs one or more rates"),
        (["experiment", "relu-vs-tanh", "--rates", "0.1,abc"], "--rates: 'abc' is not a number"),
        (["experiment", "relu-vs-tanh", "--budget", "0"], "--budget: 0 is out of range"),
        (
            ["experiment", "relu-vs-tanh", "--budget", "0.01"],
            "--budget: 0.01 is out of range: 1 to",
        ),
        (["predict", "--max-megapixels", "0", "m", "x"], "--max-megapixels: 0 is out of range"),
        (["predict", "--max-megapixels", "-1", "m", "x"], "--max-megapixels: -1 is out of range"),
        (["predict", "--top", "0", "m", "x"], "--top: 0 is out of range"),
        (["prepare", "a", "b", "--max-megapixels", "-1"], "--max-megapixels: -1 is out of range"),
        (["prepare", "a", "b", "--size", "100000"], "--size: 100000 is out of range: 8 to 4096"),
        (["prepare", "a", "b", "--chunk", "0"], "--chunk: 0 is out of range"),
        (["prepare", "a", "b", "--split", ""], "--split: '': one folder name"),
        (["export", "m", "o.onnx", "--batch", "100000"], "--batch: 100000 is out of range"),
        (["eval", "m", "--batch", "0"], "--batch: 0 is out of range"),
        (["lr-find", "--recipe", "x", "--steps", "2"], "--steps: 2 is out of range: 3 to"),
        (["figures", "r", "--neighbours-limit", "-1"], "--neighbours-limit: -1 is out of range"),
        (["lrn-divisor", "alexnet", "x", "--seed", "-1"], "--seed: -1 is out of range"),
        (["train", "--recipe", "photos", "--budget", "0"], "--budget: 0 is out of range"),
        (["train", "--recipe", "photos", "--budget", "nan"], "--budget: nan is out of range"),
        (["train", "--recipe", "photos", "--budget", "abc"], "--budget: 'abc' is not a number"),
        (["train", "--recipe", "cifar10", "--runs", ""], "--runs: '': empty"),
        (["train", "--recipe", ""], "--recipe: '': empty"),
        (["figures", "r", "--out", ""], "--out: '': empty"),
        (["eval", "m", "--split", ""], "--split: '': one folder name"),
        (["eval", "m", "--data", " "], "--data: ' ': empty"),
        (["export", "m", ""], "OUT: '': empty"),
        (["predict", "m", ""], "IMAGE: '': empty"),
        (["eval", ""], "CHECKPOINT: '': empty"),
    ],
)
def test_the_parser_refuses_zero_negative_empty_and_absurd_numbers(args, flag, capsys):
    """Zero, negative and empty values used to become the defaults (a full sweep, the
    64-megapixel limit) or mean something else; now the parser names the flag."""
    with pytest.raises(SystemExit) as done:
        main(args)
    assert done.value.code == 2
    assert f"error: argument {flag}" in capsys.readouterr().err


@pytest.mark.slow  # over 15 s: make test-slow keeps make test within 10 minutes
def test_sizes_beyond_the_machine_are_refused_before_anything_is_allocated(tiny_folder, tmp_path,
                                                                          cache, capsys):  # fmt: skip
    """--set data.image_size=100000 asked for 38.9 GB and died with a traceback, summary of a
    64x4096x4096 input took 42 s and 9.5 GB: sizes have a range, training is measured on
    the meta device against the memory available, and summary computes on it. The refusal
    comes before the data is read: it once came after the folder was decoded into a 2 GB
    store at 2048 pixels, left in the cache by every refused run."""
    base = ["train", "--recipe", "photos", "--data", str(tiny_folder), "--runs", str(tmp_path),
            "--no-progress", "--set", "optim.lr_find=false"]  # fmt: skip
    for extra, said in ((["--set", "data.image_size=100000"], "data.image_size must be <= 4096"),
                        (["--set", "data.image_size=2048", "--set", "data.batch_size=256"],
                         "GB to train and this machine has")):  # fmt: skip
        with pytest.raises(SystemExit) as stop:
            main(base + extra)
        err = capsys.readouterr().err.strip().splitlines()
        assert stop.value.code == 2 and said in err[-1] and not any("Traceback" in e for e in err)
        assert not list(cache.rglob("*.pt")), "a store was decoded for a run refused for its size"
    main(["summary", "--arch", "alexnet-small", "--input", "64x4096x4096"])
    assert "total" in capsys.readouterr().out


def test_one_class_trains_with_a_warning(tiny_folder, tmp_path, capsys):
    """A one-class folder trained to loss 0 without a word; the photos recipe's divisor of the
    range test's rate was silently ignored once the range test was turned off."""
    import shutil

    root = tmp_path / "one"
    for split in ("train", "val"):
        shutil.copytree(tiny_folder / split / "checks", root / split / "checks")
    main(["train", "--recipe", "photos", "--data", str(root), "--runs", str(tmp_path / "runs"),
          "--no-progress", "--no-report", "--set", "epochs=1", "--set", "optim.lr_find=false",
          "--set", "data.batch_size=8"])  # fmt: skip
    err = capsys.readouterr().err
    assert "warning: the data has one class (checks)" in err
    assert "warning: optim.lr_find_divisor = 3 does nothing without optim.lr_find" in err


def test_a_name_that_is_not_utf8_is_spelled_one_way_everywhere(tiny_folder, tmp_path, cache):
    """A file name with the byte 0xff was "bad\\udcff.png" in the skip summary, a raw byte in
    predict's answer and "bad\\xff" in another error: now "\\xff" on the terminal, in
    log.txt and in skipped.txt alike."""
    import subprocess

    from .conftest import ALEXNET, cli_env

    root = tmp_path / "data"
    shutil.copytree(tiny_folder, root)
    bad = os.fsdecode(b"bad\xff.png")
    (root / "train" / "checks" / bad).write_bytes(b"not an image")
    (tmp_path / "r.toml").write_text(tiny_recipe(root, epochs=1).to_toml())

    def run(*args: str) -> subprocess.CompletedProcess:
        return subprocess.run([*ALEXNET, *args], env=cli_env(cache), capture_output=True,
                              timeout=300)  # fmt: skip

    trained = run("train", "--recipe", str(tmp_path / "r.toml"), "--runs", str(tmp_path / "runs"),
                  "--name", "n", "--no-progress", "--no-report")  # fmt: skip
    assert trained.returncode == 0, trained.stderr
    run_dir = tmp_path / "runs" / "n"
    for text in (trained.stderr, (run_dir / "log.txt").read_bytes(),
                 (run_dir / "skipped.txt").read_bytes()):  # fmt: skip
        assert b"bad\\xff.png" in text and b"\\udcff" not in text and b"\xff" not in text
    image = tmp_path / os.fsdecode(b"ok\xff.png")
    shutil.copy(root / "val" / "checks" / "000.png", image)
    answered = run("predict", str(run_dir), str(image))
    assert answered.stdout.splitlines()[0] == str(tmp_path).encode() + b"/ok\\xff.png"


def test_a_full_disk_in_a_writer_thread_is_said_once_without_a_traceback():
    """TensorBoard's writer thread printed "Exception in thread" and a traceback when the disk
    filled during a run's report; the command's own line says it. Other errors still reach
    the usual hook, which prints them."""
    import errno
    import threading

    from alexnet.cli import _quiet_disk_failures_in_threads

    def fail(exc: BaseException) -> None:
        def run() -> None:
            raise exc

        thread = threading.Thread(target=run)
        thread.start()
        thread.join()

    default, shown = threading.excepthook, []
    try:
        threading.excepthook = lambda args: shown.append(args.exc_type)  # the usual printer
        _quiet_disk_failures_in_threads()
        fail(OSError(errno.ENOSPC, "No space left on device"))
        fail(ValueError("a real bug"))
    finally:
        threading.excepthook = default
    assert shown == [ValueError]


def test_an_empty_cache_variable_is_refused_not_taken_for_the_default(monkeypatch, capsys):
    """`ALEXNET_CACHE= alexnet cache clear` cleared the user's own cache (41.6 GB here)."""
    monkeypatch.setenv("ALEXNET_CACHE", "")
    with pytest.raises(SystemExit) as done:
        main(["cache", "clear"])
    assert done.value.code == 2
    assert "ALEXNET_CACHE is set but empty" in capsys.readouterr().err


def test_clearing_a_large_cache_needs_yes(tmp_path, monkeypatch, capsys):
    """More than a gigabyte is cleared only with --yes where nobody can be asked."""
    monkeypatch.setenv("ALEXNET_CACHE", str(tmp_path))
    (tmp_path / "decoded").mkdir()
    big = tmp_path / "decoded" / f"imagefolder-224-3-{'0' * 8}-{'1' * 20}.pt"
    with open(big, "wb") as f:
        f.truncate(2 * 10**9)  # sparse: counted, not stored
    monkeypatch.setattr(sys.stdin, "isatty", lambda: False)
    with pytest.raises(SystemExit) as done:
        main(["cache", "clear"])
    assert done.value.code == 2 and "Not without --yes" in capsys.readouterr().err
    assert big.exists()
    main(["cache", "clear", "--yes"])
    assert not (tmp_path / "decoded").exists()


def test_cache_clear_names_what_it_kept_and_says_what_it_freed(cache, tmp_path, capsys):
    """`alexnet cache clear -y` deleted a decoded/thesis.pt of one's own without a word, emptied
    a folder of one's models linked in as extracted/, and said "0.0 MB freed" of what it did
    delete. Now the user's files and the link are kept and named, and the bytes are counted."""
    decoded, downloads = cache / "decoded", cache / "downloads"
    decoded.mkdir(parents=True)
    downloads.mkdir()
    store = decoded / f"imagefolder-32-3-{'0' * 8}-{'1' * 20}.pt"
    store.write_bytes(b"x" * 1234)
    (downloads / "cifar-10-python.tar.gz").write_bytes(b"x" * 4000)
    mine = [decoded / "thesis.pt", decoded / "thesis.txt", downloads / "mine.tar.gz"]
    for path in mine:
        path.write_text("keep\n")
    models = tmp_path / "models"
    (models / "photos-0123abcd-1-2").mkdir(parents=True)
    (models / "photos-0123abcd-1-2" / ".complete").touch()
    (models / "alexnet.pt").write_text("weights")
    (cache / "extracted").symlink_to(models)
    main(["cache", "clear", "decoded", "extracted", "downloads", "decoded", "-y"])
    out = capsys.readouterr().out
    assert f"cleared decoded, extracted, downloads in {cache}: 5 kB freed" in out  # 1234 + 4000
    assert (
        f"kept 3 file(s) or folder(s) alexnet did not write: {mine[0]}, {mine[1]}, {mine[2]}" in out
    )
    assert f"kept {cache / 'extracted'} as it is: a symbolic link (to {models})" in out
    assert all(path.read_text() == "keep\n" for path in mine)
    assert sorted(p.name for p in models.iterdir()) == ["alexnet.pt", "photos-0123abcd-1-2"]
    assert not store.exists() and not (downloads / "cifar-10-python.tar.gz").exists()


def test_a_full_standard_output_is_named():
    """`alexnet summary > /dev/full` said only "[Errno 28] No space left on device"."""
    with open("/dev/full", "w") as full:
        done = subprocess.run([*ALEXNET, "summary"], stdout=full, stderr=subprocess.PIPE,
                              text=True, timeout=120)  # fmt: skip
    assert done.returncode == 2
    assert done.stderr == "alexnet summary: error: standard output: No space left on device\n"


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT])
def test_a_signal_while_pytorch_loads_ends_the_command_in_one_line(signum):
    """A signal in the first second, while PyTorch and NumPy import, was sometimes swallowed
    inside a C extension's import (the command ran to the end) or left NumPy half-loaded
    (a traceback later). It now waits for the imports and ends the command in one line."""
    proc = subprocess.Popen([*ALEXNET, "summary"], stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE, text=True,
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))  # fmt: skip
    time.sleep(0.4)
    proc.send_signal(signum)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 128 + signum, err
    said = "stopped by signal 15" if signum == signal.SIGTERM else "interrupted"
    assert err == f"alexnet: {said}\n"


def test_a_stop_signal_lost_in_a_finaliser_still_ends_the_command(monkeypatch, capsys):
    """A SIGTERM whose Stopped was raised inside a __del__ (or a weakref callback) is ignored
    by Python, and the command ran on to exit 0: main ends it with the signal's status."""
    import alexnet.cli.summary

    class Finalised:
        def __del__(self):
            signal.raise_signal(signal.SIGTERM)
            sum(range(1000))  # the handler runs here, inside __del__, where it is ignored

    def run(args):
        Finalised()
        print("the work went on")

    monkeypatch.setattr(alexnet.cli.summary, "run", run)
    with pytest.raises(SystemExit) as stop:
        main(["summary"])
    out, err = capsys.readouterr()
    assert stop.value.code == 128 + signal.SIGTERM and "the work went on" in out
    assert "alexnet summary: stopped by signal 15 as it was finishing" in err


def test_a_file_name_given_as_bytes_is_said_as_a_name(capsys):
    """TensorBoard's writer reports a full disk with the file name as bytes, which the one
    line showed as b'runs/x/tb/events...'."""
    import argparse
    import errno

    from alexnet.cli import _run

    def full(_args):
        raise OSError(errno.ENOSPC, "No space left on device", b"runs/x/tb/events.out")

    with pytest.raises(SystemExit) as stop:
        _run(argparse.Namespace(command="train", func=full))
    err = capsys.readouterr().err
    assert stop.value.code == 2
    assert err == "alexnet train: error: runs/x/tb/events.out: No space left on device\n"


def test_cache_clear_takes_its_parts_before_or_after_yes(cache, capsys):
    """`cache clear --yes decoded` was refused: "unrecognized arguments: decoded"."""
    for args in (["--yes", "decoded"], ["-y", "decoded", "extracted"], ["decoded", "--yes"]):
        store = cache / "decoded" / f"imagefolder-32-3-{'0' * 8}-{'1' * 20}.pt"
        store.parent.mkdir(parents=True, exist_ok=True)
        store.write_bytes(b"x" * 100)
        main(["cache", "clear", *args])
        assert not store.exists() and "100 bytes freed" in capsys.readouterr().out
    with pytest.raises(SystemExit) as done:
        main(["cache", "clear", "--yes", "bogus"])
    assert done.value.code == 2 and "unknown cache part 'bogus'" in capsys.readouterr().err
