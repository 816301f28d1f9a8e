"""Run folders: created exclusively, opened for resuming only when they agree with themselves.

A run folder ``runs/<name>/`` holds ``recipe.toml`` (the resolved recipe), ``last.pt`` and
``best.pt``, ``metrics.jsonl``, ``log.txt``, ``tb/`` and, at the end, ``report.md``.
"""

from __future__ import annotations

import contextlib
import shutil
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

from alexnet.checkpoint import load_checkpoint
from alexnet.config import Recipe, apply_overrides, read_toml, recipe_from_dict
from alexnet.errors import UserError
from alexnet.files import (
    MARGIN,
    WriteError,
    free_bytes,
    missing_folders,
    read_only,
    remove_empty,
    shell_word,
    size,
    text_name,
)
from alexnet.locks import held, in_use

# The keys `--resume RUN --set` may change, and what each means (docs/training.md, "Changing a run").
RESUME_KEYS = ("optim.lr", "epochs")


def check_name(name: str, what: str) -> None:
    """A run folder's name is one plain folder name, so a run stays inside ``--runs``."""
    bad = (not name or name.startswith(".") or "/" in name or "\\" in name
           or any(ord(ch) < 32 or 0xD800 <= ord(ch) < 0xE000 for ch in name))  # fmt: skip
    if bad:
        raise UserError(f"{what} {name!r} cannot name a run folder: one folder's name, with "
                         "no '/', no leading '.', no control characters, valid UTF-8")  # fmt: skip


def hold_run(run_dir: Path) -> contextlib.AbstractContextManager:
    """``run_dir`` held by this process for the block (locks.py), so two processes never train
    into the same folder."""
    return held(run_dir, f"{run_dir} is in use by another alexnet process; wait for it to "
                         "finish or stop it first")  # fmt: skip


def create_run_dir(runs: Path, name: str | None, recipe_name: str) -> Path:
    """A new, empty run folder. An explicit ``name`` that exists is refused; a default name
    (recipe and time) that exists gets a numbered suffix."""
    if name is not None:
        check_name(name, "--name")
    check_name(recipe_name, "the recipe's name")
    text_name(runs, "TensorBoard")
    made = missing_folders(runs)
    try:
        runs.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        why = exc.strerror or str(exc)
        if runs.is_symlink() and not runs.exists():  # mkdir says only "File exists"
            why = "a symbolic link to nothing, or back to itself"
        elif runs.exists() and not runs.is_dir():
            why = "a file, not a folder"
        raise UserError(f"cannot create the runs folder {runs}: {why}; choose another with "
                         "--runs DIR") from None  # fmt: skip
    if read_only(runs):  # not blamed on the free space of a small read-only disk
        raise WriteError(f"cannot write a run into {runs}: it is on a disk mounted read-only; "
                         "choose another --runs")  # fmt: skip
    free = free_bytes(runs)
    if 0 <= free < MARGIN:  # TensorBoard's writer thread met the full disk with a traceback
        remove_empty(made)
        raise WriteError(f"cannot write a run into {runs}: the disk holding it has {size(free)} "
                         "free; make room, or choose another --runs")  # fmt: skip
    base = name or f"{recipe_name}-{datetime.now():%Y%m%d-%H%M%S}"
    for attempt in range(1, 1000):
        run_dir = runs / (base if attempt == 1 else f"{base}-{attempt}")
        try:
            run_dir.mkdir()
            return run_dir
        except FileExistsError:
            if name is not None:
                raise FileExistsError(_taken(run_dir)) from None
        except OSError as exc:
            import errno

            named = "--name" if name is not None else "a --name, or a shorter name in the recipe"
            fix = f"a shorter name: {named}" if exc.errno == errno.ENAMETOOLONG else \
                "another folder with --runs DIR"  # fmt: skip
            remove_empty(made)  # the --runs folder made for it
            raise UserError(f"cannot create {run_dir}: {exc.strerror or exc}; choose {fix}") \
                from None  # fmt: skip
    raise FileExistsError(f"{runs}: too many runs named {base}-N")


def _taken(run_dir: Path) -> str:
    if in_use(run_dir):
        return f"{run_dir} is in use by a run training now; choose another --name"
    if (run_dir / "last.pt").exists():
        return f"{run_dir} already exists; resume it with --resume {shell_word(run_dir)}, or choose another --name"
    return (
        f"{run_dir} already exists and holds no checkpoint (a run stopped before its first, "
        f"or another folder); remove it (rm -r {shell_word(run_dir)}) or choose another --name"
    )


def remove_failed_start(run_dir: Path) -> None:
    """A run that failed before its first checkpoint leaves no folder behind."""
    if run_dir.is_dir() and not (run_dir / "last.pt").exists():
        shutil.rmtree(run_dir, ignore_errors=True)


@dataclass
class Resume:
    """A run to continue: its folder, recipe (changes applied) and checkpoint."""

    run_dir: Path
    recipe: Recipe
    checkpoint: dict[str, Any]
    changes: dict[str, Any] = field(default_factory=dict)  # key -> (old, new)
    rewrite_recipe: bool = False  # --checkpoint-recipe: recipe.toml follows the next checkpoint


def open_run(run_dir: Path, overrides: list[str], accept_checkpoint_recipe: bool = False) -> Resume:
    """Load ``run_dir/last.pt`` for resuming, after the checks that keep a run consistent."""
    path = run_dir / "last.pt"
    if not path.exists() and (run_dir / "best.pt").is_file():  # not to be removed: it has a network
        raise FileNotFoundError(f"{path}: missing, and a run resumes only from it; its best.pt "
                                "is there: evaluate it as it is, or train on from it in a new "
                                f"run with --weights {shell_word(run_dir / 'best.pt')}")  # fmt: skip
    if not path.exists() and (run_dir / "recipe.toml").is_file():
        raise FileNotFoundError(f"{run_dir}: stopped before its first checkpoint, so there is "
                                f"nothing to resume; remove it (rm -r {shell_word(run_dir)}) and start the "
                                "run again")  # fmt: skip
    checkpoint = load_checkpoint(path)
    for key in ("epoch", "batch"):  # an edited count sent the schedule past its end
        count = checkpoint.get(key, 0)
        if not isinstance(count, int) or isinstance(count, bool) or count < 0:
            raise UserError(f"{path}: its {key} {count!r} is not a count; a damaged or edited "
                             "checkpoint (best.pt, if there, may still be sound)")  # fmt: skip
    changes = checkpoint.get("changes", [])
    if not isinstance(changes, list) or not all(isinstance(c, dict) for c in changes):
        raise UserError(f"{path}: its record of changes ({str(changes)[:40]}) is not a list of "
                        "what each resume changed; a damaged or edited checkpoint (best.pt, if "
                        "there, may still be sound)")  # fmt: skip
    recipe = recipe_from_dict(checkpoint["recipe"], f"{path} (its recipe)", saved=True)
    saved = run_dir / "recipe.toml"
    _check_run_files(run_dir)
    # With --checkpoint-recipe the folder says what its checkpoint says, from the resume's
    # first checkpoint on: written now, a resume refused below lost the user's edited file.
    if not accept_checkpoint_recipe and saved.is_file():
        table = read_toml(saved)
        if not table:  # its defaults were compared with the checkpoint's recipe, key by key
            raise UserError(f"{saved}: empty, not the run's recipe; --checkpoint-recipe writes "
                            "it again from the checkpoint")  # fmt: skip
        folder = recipe_from_dict(table, str(saved), saved=True)
        differ = _differences(folder.to_dict(), recipe.to_dict())
        # A kill between a resume's checkpoint and its recipe.toml leaves exactly the keys
        # that resume changed behind; those are the checkpoint's to tell.
        explained = {k for c in changes[-1:] for k in c} - {"epoch", "batch"}
        if not differ <= explained:
            shown = "; ".join(f"{k} = {_get(folder, k)!r} there, {_get(recipe, k)!r} in it"
                              for k in sorted(differ - explained)[:3])  # fmt: skip
            raise UserError(
                f"{path} was written under another recipe than {saved} ({shown}; copied from "
                "another run?); to resume under the checkpoint's recipe anyway, add "
                "--checkpoint-recipe"
            )
    changes = _check_changes(overrides, recipe, run_dir)
    new = apply_overrides(recipe, overrides) if overrides else recipe
    _check_epochs_left(run_dir, checkpoint, recipe, new)
    changes = {k: (_get(recipe, k), _get(new, k)) for k in changes}
    changes = {k: (old, value) for k, (old, value) in changes.items() if old != value}
    return Resume(run_dir, new, checkpoint, changes, accept_checkpoint_recipe)


def _check_run_files(run_dir: Path) -> None:
    """The files a resume writes are files of the run's own: found only when written (a
    folder, a link to itself) or hanging the run (a pipe)."""
    saved = run_dir / "recipe.toml"
    rebuilt = "the checkpoint's history writes the epochs' lines again"
    for file, kinds, what, again in (
        (saved, "folder, device", "recipe file",
         "the checkpoint holds the recipe: --checkpoint-recipe writes it again"),
        (run_dir / "log.txt", "folder, pipe", "log", rebuilt),
        (run_dir / "metrics.jsonl", "folder, pipe", "log", rebuilt),
        (run_dir / "report.md", "folder, pipe", "report", "the run writes it again at its end"),
    ):  # fmt: skip
        if (file.exists() or file.is_symlink()) and not file.is_file():
            raise UserError(f"{file}: a {kinds} or broken link, not the run's {what}; remove "
                            f"it ({again})")  # fmt: skip
        if file.is_symlink() and file is not saved:  # written through: outside the run
            raise UserError(f"{file}: a symbolic link, not the run's own {what}; remove it "
                            f"({again})")  # fmt: skip


def _check_epochs_left(run_dir: Path, checkpoint: dict, recipe: Recipe, new: Recipe) -> None:
    """A resume has epochs left to train under ``new``, or only a finished run's last writes
    (left_unfinished); an epoch count below where the run stopped is refused."""
    done, batch = checkpoint["epoch"], checkpoint.get("batch", 0)
    least = done + (1 if batch else 0)  # an epoch begun is finished, not dropped
    if new.epochs < min(recipe.epochs, least):  # was "resuming", a report, and nothing kept
        at = f"in epoch {done + 1}, after batch {batch}" if batch else f"after epoch {done}"
        raise UserError(f"--set epochs={new.epochs}: {run_dir} stopped {at}, past it; give "
                        f"epochs={least} or more")  # fmt: skip
    if done >= new.epochs and not left_unfinished(run_dir, checkpoint):
        onward = ("its one-cycle schedule cannot be extended; start a new run"
                  if recipe.schedule.name == "onecycle"
                  else f"to train on, resume with --set epochs=N (N > {done}), or start a new run")  # fmt: skip
        raise UserError(f"{run_dir} has finished {done} epochs; {onward}")


def left_unfinished(run_dir: Path, checkpoint: dict) -> bool:
    """A run that trained its last epoch but stopped before writing that epoch's best.pt or
    its report (a full disk: the error says to resume it). A resume writes them and trains
    nothing more; a checkpoint too damaged to tell is for the resume's checks to name."""
    try:
        last, best = checkpoint["history"][-1], run_dir / "best.pt"
        best_lost = last["val_top1_err"] <= checkpoint["best_top1_err"] and not (
            best.is_file() and best.stat().st_mtime >= (run_dir / "last.pt").stat().st_mtime
        )
    except (KeyError, IndexError, TypeError, OSError):
        return False
    return best_lost or not (run_dir / "report.md").is_file()


def _differences(a: dict[str, Any], b: dict[str, Any], prefix: str = "") -> set[str]:
    """The dotted keys whose values differ between two recipe tables."""
    keys = set(a) | set(b)
    found: set[str] = set()
    for k in keys:
        x, y = a.get(k), b.get(k)
        if isinstance(x, dict) and isinstance(y, dict) and k != "options":
            found |= _differences(x, y, f"{prefix}{k}.")
        elif x != y:
            found.add(f"{prefix}{k}")
    return found


def _get(recipe: Recipe, key: str) -> Any:
    node: Any = recipe
    for part in key.split("."):
        node = getattr(node, part)
    return node


def _check_changes(overrides: list[str], recipe: Recipe, run_dir: Path) -> list[str]:
    keys = [item.split("=", 1)[0].strip() for item in overrides]
    for key in keys:
        if key not in RESUME_KEYS:
            raise UserError(
                f"--resume can change only {', '.join(RESUME_KEYS)}, not {key}; start a new run "
                "for other changes"
            )
    if "epochs" in keys and recipe.schedule.name == "onecycle":
        raise UserError(
            f"{run_dir} follows a one-cycle schedule, whose length is fixed when it starts "
            f"({recipe.epochs} epochs): it cannot be lengthened or shortened; start a new run (or "
            "resume with --set optim.lr only)"
        )
    return keys
