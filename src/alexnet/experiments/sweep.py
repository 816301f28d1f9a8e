"""Many training runs as one resumable job.

An experiment plans its runs (a name and a recipe each) and hands them here; each is trained
into ``OUT/<name>/`` as an ordinary run folder, so a killed experiment, started again with the
same command, skips the runs that finished, resumes the one that was interrupted from its last
checkpoint, and starts the others. The plan itself is saved (``plan.json``) when it depends on
measurements (chosen learning rates, epochs that fit a time budget), so the second start follows
the first one's plan rather than measuring again.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from alexnet.checkpoint import load_checkpoint
from alexnet.config import Recipe
from alexnet.runs import lock_run, open_run, remove_failed_start
from alexnet.train import TrainingError, fit


@dataclass
class Planned:
    """One run of an experiment."""

    name: str
    recipe: Recipe


def finished(run_dir: Path, epochs: int) -> list[dict] | None:
    """The metrics of a run that has trained all ``epochs``, else None."""
    if not (run_dir / "last.pt").is_file():
        return None
    state = load_checkpoint(run_dir / "last.pt")
    if state["epoch"] >= epochs and state["batch"] == 0:
        return list(state["history"])
    return None


def train_planned(run: Planned, out: Path, progress: bool) -> list[dict]:
    """Train, resume or skip ``run`` in ``out/<name>``; its metrics per epoch. A run that
    diverges (a learning rate too high for its network, in a sweep) leaves ``<name>.diverged``
    with the reason and gives no metrics, then and on every restart."""
    run_dir, diverged = out / run.name, out / f"{run.name}.diverged"
    done = finished(run_dir, run.recipe.epochs)
    if done is not None or diverged.is_file():
        return done or []
    run_dir.mkdir(parents=True, exist_ok=True)
    _lock = lock_run(run_dir)  # held while this run trains
    try:
        if (run_dir / "last.pt").is_file():
            resume = open_run(run_dir, [])
            fit(resume.recipe, run_dir, resume_from=resume.checkpoint, progress=progress,
                report=False)  # fmt: skip
        else:
            fit(run.recipe, run_dir, progress=progress, report=False)
    except TrainingError as exc:
        diverged.write_text(f"{exc}\n")
        return []
    finally:
        remove_failed_start(run_dir)
    return finished(run_dir, run.recipe.epochs) or []


def train_all(runs: list[Planned], out: Path, progress: bool,
              say: Callable[[str], None]) -> dict[str, list[dict]]:  # fmt: skip
    """Every run's metrics, training those not finished, in order."""
    results = {}
    for i, run in enumerate(runs, 1):
        state = "done" if finished(out / run.name, run.recipe.epochs) else "training"
        say(f"[{i}/{len(runs)}] {run.name}: {state}")
        tick = time.perf_counter()
        results[run.name] = train_planned(run, out, progress)
        if state == "training":
            say(f"[{i}/{len(runs)}] {run.name}: {time.perf_counter() - tick:.0f} s")
    return results


def saved_plan(out: Path, make: Callable[[], dict]) -> dict:
    """``out/plan.json``, made by ``make`` (and saved) the first time."""
    path = out / "plan.json"
    if path.is_file():
        return json.loads(path.read_text())
    plan = make()
    out.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(plan, indent=1))
    tmp.replace(path)
    return plan
