"""A time budget (``train.budget_minutes``, ``alexnet train --budget``): the epochs chosen from
measured speed, the schedule laid out for them and shortened without a jump when the run falls
behind, the choice kept by a resumed run, and the wall time kept."""

from __future__ import annotations

import itertools
import json
import signal
import subprocess
import time
from pathlib import Path

import numpy as np
import pytest
from torch import nn

from alexnet.checkpoint import CheckpointError, load_checkpoint
from alexnet.config import load_recipe
from alexnet.errors import UserError
from alexnet.training.budget import Clock, Costs, Pacer, epochs_that_fit
from alexnet.training.schedules import build_optimizer, build_schedule, compress, shorten
from alexnet.training.state import TrainingState
from alexnet.training.train import budget_clock, fit
from tests.conftest import ALEXNET, cli_env, tiny_recipe


def _schedule(name: str, epochs: int, steps: int, **schedule):
    recipe = load_recipe("cifar10")
    recipe.epochs, recipe.schedule.name = epochs, name
    for key, value in schedule.items():
        setattr(recipe.schedule, key, value)
    model = nn.Linear(2, 2)
    opt = build_optimizer(model, recipe.optim)
    return recipe, opt, build_schedule(opt, recipe, steps)


def _rates(opt, schedule, count: int) -> list[float]:
    out = []
    for _ in range(count):
        opt.step()
        schedule.step()
        out.append(opt.param_groups[0]["lr"])
    return out


@pytest.mark.parametrize("done", [1, 6])  # in the warm-up (to step 19.2 of 101), in the decay
def test_a_shortened_one_cycle_goes_on_from_its_rate_to_its_floor(done):
    _, opt, schedule = _schedule("onecycle", epochs=10, steps=10, warmup_fraction=0.2)
    _, ref_opt, unchanged = _schedule("onecycle", epochs=10, steps=10, warmup_fraction=0.2)
    laid_out = [ref_opt.param_groups[0]["lr"], *_rates(ref_opt, unchanged, 100)]  # by step
    _rates(opt, schedule, done * 10)
    now, floor = opt.param_groups[0]["lr"], opt.param_groups[0]["min_lr"]
    shorten(schedule, done, 10, 8, 10)
    assert opt.param_groups[0]["lr"] == now
    rest = _rates(opt, schedule, 80 - done * 10)
    assert rest[-1] == pytest.approx(floor)  # the end of the cycle, at the new last step
    steepest = max(abs(b - a) for a, b in itertools.pairwise(rest))
    assert abs(rest[0] - now) <= 1.01 * steepest  # no jump: the first step is like the others
    top = rest.index(max(rest))
    if done == 1:  # what is left of the warm-up, squeezed: the peak at step 17, not 19
        assert top == 17 - 11 and max(rest) == pytest.approx(laid_out[18], rel=0.05)
    assert all(b > a for a, b in itertools.pairwise(rest[: top + 1]))
    assert all(b < a for a, b in itertools.pairwise(rest[top:]))
    # What a resumed run rebuilds (its recipe now says 8 epochs), then loads, goes on alike.
    _, opt2, fresh = _schedule("onecycle", epochs=8, steps=10, warmup_fraction=0.2)
    _, opt3, again = _schedule("onecycle", epochs=10, steps=10, warmup_fraction=0.2)
    _rates(opt3, again, done * 10)
    shorten(again, done, 10, 8, 10)
    fresh.load_state_dict(again.state_dict())
    opt2.load_state_dict(opt3.state_dict())
    assert _rates(opt2, fresh, 80 - done * 10) == pytest.approx(rest)


def test_cut_early_a_cycle_still_reaches_its_peak_then_its_floor():
    _, opt, schedule = _schedule("onecycle", epochs=100, steps=10, warmup_fraction=0.2)
    _rates(opt, schedule, 10)  # one epoch of a 20-epoch warm-up
    now = opt.param_groups[0]["lr"]
    shorten(schedule, 1, 100, 10, 10)  # the warm-up's 19 epochs left become about 1.7
    rest = _rates(opt, schedule, 90)
    top = rest.index(max(rest))
    assert max(rest) == pytest.approx(opt.param_groups[0]["max_lr"], rel=0.05)
    assert (
        14 <= top <= 17
        and rest[0] > now
        and rest[-1] == pytest.approx(opt.param_groups[0]["min_lr"])
    )
    assert all(b > a for a, b in itertools.pairwise(rest[: top + 1]))
    assert all(b < a for a, b in itertools.pairwise(rest[top:]))


def test_a_step_schedule_moves_its_milestones_ahead_in_proportion():
    assert compress([30, 60, 80], 0, 90, 9) == [3, 6, 8]
    assert compress([3, 6, 8], 4, 9, 6) == [3, 5, 6]  # passed ones stay
    _, opt, schedule = _schedule("step", epochs=90, steps=1, milestones=[30, 60, 80])
    _rates(opt, schedule, 40)
    shorten(schedule, 40, 90, 50, 1)
    assert sorted(schedule.milestones) == [30, 44, 48]


def test_the_epochs_that_fit_leave_the_report_its_time():
    costs = Costs(step=0.1, evaluation=2.0)  # an epoch of 10 steps: 3 s
    assert epochs_that_fit(costs, 100.0, 10, cap=1000, report=False) == 30  # 92% of 100 s
    assert epochs_that_fit(costs, 100.0, 10, cap=1000, report=True) == 27  # 10 s for the end
    assert epochs_that_fit(costs, 100.0, 10, cap=20, report=True) == 20  # the recipe's most
    assert epochs_that_fit(costs, 1.0, 10, cap=20, report=True) == 1  # at least one


def _state(epochs: int, done: int, minutes: float) -> TrainingState:
    recipe, opt, schedule = _schedule("onecycle", epochs=epochs, steps=10)
    recipe.train.budget_minutes = minutes
    state = TrainingState(nn.Linear(2, 2), opt, schedule, recipe, epoch=done)
    for _ in range(done * 10):
        opt.step()
        schedule.step()
    state.budget = {"evaluation_seconds": 0.0}
    return state


class _Runtime:
    world_size = 1


def test_a_run_that_falls_behind_ends_sooner_and_records_it():
    state = _state(epochs=20, done=5, minutes=1.0)
    clock = Clock(60.0, spent=0.0, started=time.monotonic() - 28.0)  # 32 s left
    pacer = Pacer(clock, report=False, planned=5.0, tick=time.monotonic() - 5.0)  # 6 more fit
    said = pacer.after_epoch(state, 10, _Runtime())
    assert state.recipe.epochs == 11 and "ends after epoch 11 (was 20)" in said
    assert state.changes == [{"epoch": 5, "batch": 0, "epochs": [20, 11]}]
    assert state.schedule.total_steps == 111
    # On time: nothing changes.
    pacer = Pacer(Clock(600.0), report=False, planned=5.0, tick=time.monotonic() - 5.0)
    assert pacer.after_epoch(state, 10, _Runtime()) is None and state.recipe.epochs == 11


def test_one_slow_epoch_is_not_a_trend_but_two_are():
    state = _state(epochs=20, done=5, minutes=1.0)
    clock = Clock(60.0, spent=0.0, started=time.monotonic() - 10.0)  # 50 s: 16 epochs of 3 s
    pacer = Pacer(clock, report=False, planned=3.0, tick=time.monotonic() - 9.0)  # one of 9 s
    assert pacer.after_epoch(state, 10, _Runtime()) is None and state.recipe.epochs == 20
    pacer.tick = time.monotonic() - 9.0  # and another
    assert "ends after epoch" in pacer.after_epoch(state, 10, _Runtime())
    assert state.recipe.epochs == 5 + 5  # 50 s at 9 s an epoch


def test_an_epoch_faster_than_a_stale_plan_is_believed():
    """A plan measured on a busy machine (or edited) expected 120 s an epoch; the epoch took
    3 s, and the run stopped with 50 s left as if the plan were right."""
    state = _state(epochs=20, done=5, minutes=1.0)
    clock = Clock(60.0, spent=0.0, started=time.monotonic() - 10.0)  # 50 s: 16 epochs of 3 s
    pacer = Pacer(clock, report=False, planned=120.0, tick=time.monotonic() - 3.0)
    pacer.after_epoch(state, 10, _Runtime())
    assert state.recipe.epochs >= 15


def test_a_run_ahead_of_its_plan_takes_the_time_up_to_the_recipes_most():
    state = _state(epochs=12, done=5, minutes=2.0)
    state.budget["most_epochs"] = 20  # planned (or cut) to 12 while the machine was busy
    pacer = Pacer(Clock(120.0), report=False, planned=3.0, costs=[3.0, 3.0],
                  tick=time.monotonic() - 3.0)  # fmt: skip
    said = pacer.after_epoch(state, 10, _Runtime())  # ~119 s left at 3 s: 39 more would fit
    assert state.recipe.epochs == 20 and "stretched" in said  # but no more than the most
    assert state.schedule.total_steps == 201
    rest = _rates(state.optimizer, state.schedule, 150)
    assert rest[-1] == pytest.approx(state.optimizer.param_groups[0]["min_lr"])
    pacer = Pacer(Clock(34.5), report=False, planned=3.0, tick=time.monotonic() - 3.0)
    state.recipe.epochs = 15  # 34.5 s fit 11 more: one epoch more than now, kept as it is
    state.budget["most_epochs"] = 30
    assert pacer.after_epoch(state, 10, _Runtime()) is None
    pacer = Pacer(Clock(40.5), report=False, planned=3.0, tick=time.monotonic() - 3.0)
    said = pacer.after_epoch(state, 10, _Runtime())  # 13 more fit, 18: one of them kept spare
    assert state.recipe.epochs == 17 and "stretched" in said


def test_with_no_time_left_the_run_stops_after_this_epoch():
    state = _state(epochs=20, done=5, minutes=1.0)
    pacer = Pacer(Clock(60.0, spent=70.0), report=True, planned=5.0, tick=time.monotonic() - 5.0)
    said = pacer.after_epoch(state, 10, _Runtime())
    assert state.recipe.epochs == 5 and "stopping after epoch 5 of 20" in said


def test_a_resumed_budget_run_needs_its_record_of_the_time_spent(tiny_folder):
    """A record deleted restarted the clock with the whole budget; one of another type was a
    traceback; an absurd 1e12 s was reported as "17 epochs in 16666666666.8 min"; an edit to 0
    restarted the clock."""
    recipe = tiny_recipe(tiny_folder, **{"train.budget_minutes": 1.0})
    where = Path("run/last.pt")
    now = time.time()
    epochs = [{"epoch": 1, "epoch_seconds": 10.0}, {"epoch": 2, "epoch_seconds": 10.0}]
    bad = (
        "abc",
        [1, 2],
        5,
        {},
        {"spent_seconds": "5", "began": now - 30},
        {"spent_seconds": -1.0, "began": now - 30},
        {"spent_seconds": 25.0},
        {"spent_seconds": 25.0, "began": "yesterday"},
        {"spent_seconds": 1e12, "began": now - 30},  # more than has passed since
        {"spent_seconds": 0.0, "began": now - 30},
    )  # less than its two epochs took
    for record in bad:
        with pytest.raises(CheckpointError, match=r"run/last\.pt: its time budget's record"):
            budget_clock(recipe, {"budget": record, "history": epochs}, None, where)
    with pytest.raises(CheckpointError, match="is missing"):
        budget_clock(recipe, {}, None, where)
    sound = {"budget": {"spent_seconds": 25.0, "began": now - 30}, "history": epochs}
    assert budget_clock(recipe, sound, None, where).spent == 25.0


def test_a_budget_needs_a_schedule_with_a_length(tmp_path, tiny_folder, cache):
    recipe = tiny_recipe(tiny_folder, **{"train.budget_minutes": 1.0, "schedule.name": "plateau"})
    with pytest.raises(UserError, match="needs a schedule with a length"):
        fit(recipe, tmp_path / "run", progress=False)


def test_a_budget_run_chooses_its_epochs_saves_them_and_reports_them(tmp_path, tiny_folder, cache):
    seconds = 12.0
    recipe = tiny_recipe(tiny_folder, epochs=500,
                         **{"train.budget_minutes": seconds / 60, "train.log_every": 50})  # fmt: skip
    run = tmp_path / "run"
    run.mkdir()
    start = time.monotonic()
    fit(recipe, run, progress=False, started=start)
    wall = time.monotonic() - start
    checkpoint = load_checkpoint(run / "last.pt")
    budget, epochs = checkpoint["budget"], checkpoint["recipe"]["epochs"]
    assert 1 < epochs < 500 and len(checkpoint["history"]) == epochs
    assert budget["minutes"] == pytest.approx(seconds / 60) and budget["step_seconds"] > 0
    assert f"epochs = {epochs}\n" in (run / "recipe.toml").read_text()  # the choice, saved
    assert "Time budget: 0.2 min bought" in (run / "report.md").read_text()
    assert "time budget 0.2 min" in (run / "log.txt").read_text()
    assert wall < 2 * seconds  # loosely: the wall-time test is the slow one below


def _folder(root: Path, per_class: int, classes: int = 10, size: int = 40) -> Path:
    """A generated photo folder: ``classes`` classes of coloured noise around a class colour."""
    from PIL import Image

    rng = np.random.default_rng(1)
    for split, count in (("train", per_class), ("val", max(2, per_class // 6))):
        for c in range(classes):
            folder = root / split / f"class{c}"
            folder.mkdir(parents=True)
            colour = rng.uniform(0, 255, 3)
            for i in range(count):
                pixels = colour + rng.normal(0, 60, (size, size, 3))
                Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8)).save(folder / f"{i}.png")
    return root


@pytest.mark.slow
@pytest.mark.parametrize("per_class", [60, 600])  # one folder ten times the other
def test_the_photos_recipe_keeps_its_budget_whatever_the_folder_size(tmp_path, cache, per_class):
    data = _folder(tmp_path / "photos", per_class)
    start = time.monotonic()
    done = subprocess.run([*ALEXNET, "train", "--recipe", "photos", "--data", str(data),
                           "--budget", "2", "--runs", str(tmp_path), "--name", "run",
                           "--no-progress", "--set", "epochs=1000"],
                          env=cli_env(cache), capture_output=True, text=True)  # fmt: skip
    wall = time.monotonic() - start
    assert done.returncode == 0, done.stderr
    assert wall <= 120 * 1.1, done.stderr  # the budget, kept within 10%
    history = [json.loads(x) for x in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert history and "time budget 2 min:" in done.stderr


@pytest.mark.slow
def test_a_stopped_budget_run_resumes_with_its_epochs_and_what_is_left(
    tmp_path, cache, recipe_file
):
    path = recipe_file(epochs=2000, **{"train.log_every": 50})
    args = ["train", "--recipe", str(path), "--budget", "1", "--runs", str(tmp_path), "--name",
            "run", "--no-progress"]  # fmt: skip
    proc = subprocess.Popen([*ALEXNET, *args], env=cli_env(cache), stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE, text=True)  # fmt: skip
    log = tmp_path / "run" / "log.txt"
    deadline = time.monotonic() + 50
    while time.monotonic() < deadline and "epoch   3" not in (
        log.read_text() if log.exists() else ""
    ):
        time.sleep(0.2)
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(30) == 128 + signal.SIGTERM, proc.stderr.read()
    before = load_checkpoint(tmp_path / "run" / "last.pt")
    planned, spent = before["recipe"]["epochs"], before["budget"]["spent_seconds"]
    assert 3 <= before["epoch"] < planned < 2000 and spent > 0
    start = time.monotonic()
    resumed = subprocess.run([*ALEXNET, "train", "--resume", str(tmp_path / "run"), "--no-progress"],
                             env=cli_env(cache), capture_output=True, text=True)  # fmt: skip
    assert resumed.returncode == 0, resumed.stderr
    assert "s of it left" in resumed.stderr
    after = load_checkpoint(tmp_path / "run" / "last.pt")
    cuts = [c["epochs"][1] for c in after["changes"] if "epochs" in c]
    assert after["epoch"] == after["recipe"]["epochs"] == (cuts[-1] if cuts else planned)
    assert time.monotonic() - start <= (60 - spent) * 1.1 + 10  # what was left, and a start
