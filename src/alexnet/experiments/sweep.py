"""Many training runs as one resumable job.

An experiment plans its runs (a name and a recipe each) and hands them here; each is trained
into ``OUT/<name>/`` as an ordinary run folder, so a killed experiment, started again with the
same command, skips the runs that finished, resumes the one that was interrupted from its last
checkpoint, and starts the others. The plan itself is saved (``plan.json``) when it depends on
measurements (chosen learning rates, epochs that fit a time budget), so the second start follows
the first one's plan rather than measuring again.

A folder is only ever continued by the experiment that made it: each run keeps the recipe it
was planned with (``planned.toml``) and the plan keeps the inputs it was made from, and a start
with other settings (another budget, recipe, data or number of epochs) is refused with a line
naming the folder, instead of reporting the old results as new ones.
"""

from __future__ import annotations

import json
import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from alexnet.checkpoint import load_checkpoint
from alexnet.config import Recipe
from alexnet.data.prepare import atomic_write
from alexnet.errors import UserError
from alexnet.files import append_text, missing_folders, remove_empty, write_text
from alexnet.runtime import StopFlag
from alexnet.training.logger import format_epoch
from alexnet.training.runs import hold_run, open_run, remove_failed_start
from alexnet.training.state import HISTORY_KEYS
from alexnet.training.train import TrainingError, fit


@dataclass
class Planned:
    """One run of an experiment."""

    name: str
    recipe: Recipe


def history(run_dir: Path) -> list[dict]:
    """The epochs a run has finished: from its last checkpoint, or from the record a
    finished run keeps (``finished.json``) where its checkpoints were removed; else none."""
    if (run_dir / "last.pt").is_file():
        return list(load_checkpoint(run_dir / "last.pt")["history"])
    return read_record(run_dir)["history"] if (run_dir / RECORD).is_file() else []


def test_images(run_dir: Path) -> int:
    """How many test images a finished run's figures were measured on."""
    if (run_dir / "last.pt").is_file():
        return int(load_checkpoint(run_dir / "last.pt")["data"]["test"])
    return read_record(run_dir)["data"]["test"]


# A finished run's epochs and data counts, by which the experiment still knows it finished
# once its checkpoints are removed: to save space, or to carry the experiment to another
# machine (21 ablation runs' checkpoints of 3 MB each outweigh their data).
RECORD = "finished.json"


def keep_record(run_dir: Path, done: list[dict]) -> None:
    if (run_dir / RECORD).is_file() or not (run_dir / "last.pt").is_file():
        return
    data = load_checkpoint(run_dir / "last.pt")["data"]
    counts = {"train": int(data["train"]), "test": int(data["test"])}
    write_text(run_dir / RECORD, json.dumps({"history": done, "data": counts}, indent=1) + "\n")


def read_record(run_dir: Path) -> dict:
    """``finished.json``, checked: plain JSON, read as figures and never run."""
    path = run_dir / RECORD
    try:
        record = json.loads(path.read_text())
        epochs, test = record["history"], record["data"]["test"]
        if not isinstance(epochs, list) or not all(map(_epoch_figures, epochs)):
            raise ValueError("its history is not a list of epochs' figures")
        if not isinstance(test, int) or test < 1:
            raise ValueError(f"its count of test images is {test!r}")
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise UserError(f"{path}: not a finished run's record ({exc}); remove the run's folder "
                        "to train it again") from None  # fmt: skip
    return record


def _epoch_figures(m) -> bool:
    return isinstance(m, dict) and all(isinstance(m.get(k), int | float) for k in HISTORY_KEYS)


def finished(run_dir: Path, epochs: int) -> list[dict] | None:
    """The metrics of a run that has trained all ``epochs``, else None."""
    done = history(run_dir)
    return done if len(done) >= epochs else None


AGAIN = "the same alexnet experiment command continues the experiment where it stopped"


def check_planned(run: Planned, run_dir: Path) -> None:
    """``run_dir`` holds this run as planned now, or nothing yet."""
    planned, wanted = run_dir / "planned.toml", run.recipe.to_toml()
    if planned.is_file() and planned.read_text() != wanted:
        raise UserError(f"{run_dir}: made by this experiment with other settings (recipe, data "
                         "or epochs); give another --out, or remove the folder to start it "
                         "again")  # fmt: skip
    made = missing_folders(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    try:
        atomic_write(planned, wanted.encode())  # a full disk: one line naming the file
    except BaseException:
        remove_empty(made)  # the folders this start made
        raise


def train_planned(run: Planned, out: Path, progress: bool) -> list[dict]:
    """Train, resume or skip ``run`` in ``out/<name>``; its metrics per epoch. A run that
    diverges (a learning rate too high for its network, in a sweep) leaves ``<name>.diverged``
    with the reason and keeps the epochs it finished, then and on every restart."""
    run_dir, diverged = out / run.name, out / f"{run.name}.diverged"  # checked by train_all
    done = finished(run_dir, run.recipe.epochs)
    if done is not None:
        complete_logs(run_dir, done)
        keep_record(run_dir, done)
    if done is not None or diverged.is_file():
        return done or history(run_dir)
    with hold_run(run_dir):
        try:
            _train_or_resume(run, run_dir, progress)
        except TrainingError as exc:
            diverged.write_text(f"{exc}\n")
        except BaseException:
            remove_failed_start(run_dir)  # a start refused (its batch check...) leaves nothing
            remove_empty([out])  # only where nothing else is in it: the experiment's first run
            raise
    done = history(run_dir)
    if len(done) >= run.recipe.epochs:
        keep_record(run_dir, done)
    return done


def complete_logs(run_dir: Path, done: list[dict]) -> None:
    """A run stopped between its last checkpoint and its log lines (a signal in that moment)
    is finished, and a finished run is not resumed: its metrics.jsonl is written again from
    the checkpoint's history, and the epoch lines log.txt lacks are added."""
    metrics = run_dir / "metrics.jsonl"
    if metrics.is_file() and len(metrics.read_text().splitlines()) >= len(done):
        return
    write_text(metrics, "".join(json.dumps(m) + "\n" for m in done))
    log = run_dir / "log.txt"
    said = log.read_text(errors="replace") if log.is_file() else ""
    lost = [format_epoch(m) for m in done if format_epoch(m) not in said]
    if lost:
        append_text(log, "".join(f"{line}\n" for line in lost))


def _train_or_resume(run: Planned, run_dir: Path, progress: bool) -> None:
    with StopFlag(again=AGAIN) as stop:  # a stopped run is continued by the experiment
        if (run_dir / "last.pt").is_file():
            resume = open_run(run_dir, [])
            fit(resume.recipe, run_dir, resume_from=resume.checkpoint, progress=progress,
                report=False, stop=stop)  # fmt: skip
            return
        for stale in ("log.txt", "metrics.jsonl"):  # a start killed before its checkpoint
            (run_dir / stale).unlink(missing_ok=True)
        shutil.rmtree(run_dir / "tb", ignore_errors=True)
        fit(run.recipe, run_dir, progress=progress, report=False, stop=stop)


def train_all(runs: list[Planned], out: Path, progress: bool,
              say: Callable[[str], None]) -> dict[str, list[dict]]:  # fmt: skip
    """Every run's metrics, training those not finished, in order."""
    results = {}
    for i, run in enumerate(runs, 1):
        check_planned(run, out / run.name)  # before it is called done: it may be refused
        state = "done" if finished(out / run.name, run.recipe.epochs) else "training"
        say(f"[{i}/{len(runs)}] {run.name}: {state}")
        tick = time.perf_counter()
        results[run.name] = train_planned(run, out, progress)
        if state == "training":
            say(f"[{i}/{len(runs)}] {run.name}: {time.perf_counter() - tick:.0f} s")
    return results


def saved_plan(out: Path, inputs: dict, make: Callable[[], dict]) -> dict:
    """``out/plan.json``, made by ``make`` (and saved with ``inputs``) the first time; a plan
    made from other inputs is refused."""
    path = out / "plan.json"
    if path.is_file():
        plan = json.loads(path.read_text())
        if "inputs" not in plan:  # planned before plans kept their inputs: taken as these
            plan = {"inputs": inputs, **plan}
            _write_json(path, plan)
        if plan["inputs"] != inputs:
            changed = sorted(k for k in inputs if plan["inputs"].get(k) != inputs[k])
            raise UserError(f"{out}: planned with other {', '.join(changed)}; give another "
                             "--out, or remove the folder to start again")  # fmt: skip
        return plan
    plan = {"inputs": inputs, **make()}
    out.mkdir(parents=True, exist_ok=True)
    _write_json(path, plan)
    return plan


def _write_json(path: Path, table: dict) -> None:
    atomic_write(path, json.dumps(table, indent=1).encode())
