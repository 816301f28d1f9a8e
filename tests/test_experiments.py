"""The experiments: a one-epoch smoke run of each gives its table and plot, and a sweep
started again continues with the runs it has not finished."""

from __future__ import annotations

import functools
import json
import re
import shutil

import pytest

from alexnet.experiments.ablations import BY_NAME, run_ablations, variant_recipe
from alexnet.experiments.relu_vs_tanh import crossing, results_table, run_relu_vs_tanh, summarise

from .conftest import tiny_recipe
from .test_train import run_cli


@pytest.mark.slow  # over 15 s: make test-slow keeps make test within 10 minutes
def test_relu_vs_tanh_smoke_gives_its_table_and_plot(tiny_folder, tmp_path, cache):
    out = tmp_path / "fig1"
    run = functools.partial(run_relu_vs_tanh, tiny_recipe(tiny_folder), out,
                            activations=("relu", "tanh"), rates=(0.01, 0.1), progress=False,
                            say=lambda _: None)  # fmt: skip
    # A budget the sweep spends is refused (it warned and went on), with the budget needed;
    # the sweep's runs are kept, so the next try does not repeat them.
    with pytest.raises(ValueError, match=r"--budget 0.01: the rate sweep took") as short:
        run(budget_minutes=0.01)
    sweep_runs = {p: p.stat().st_mtime_ns for p in out.glob("sweep-*/last.pt")}
    assert sweep_runs and not (out / "plan.json").exists()
    enough = int(re.search(r"give --budget (\d+) or more", str(short.value)).group(1))
    results = run(budget_minutes=enough)
    assert {p: p.stat().st_mtime_ns for p in out.glob("sweep-*/last.pt")} == sweep_runs
    assert results["epochs"] >= 1 and set(results["rows"]) == {"relu", "tanh"}
    assert "| relu |" in (out / "results.md").read_text() and (out / "figure1.png").stat().st_size
    plan = json.loads((out / "plan.json").read_text())
    errors = plan["sweep_errors"]
    for a in ("relu", "tanh"):  # the best of those tried, with a worse one each side
        tried = sorted(float(n.rsplit("lr", 1)[1]) for n in errors if n.startswith(f"sweep-{a}-"))
        assert set(tried) == {0.01, 0.1}  # exactly the rates given: never widened
        best = plan["rates"][a]
        assert errors[f"sweep-{a}-lr{best:.2g}"] == min(
            errors[f"sweep-{a}-lr{r:.2g}"] for r in tried
        )
        assert best not in (tried[0], tried[-1]) or a in plan["at_edge"]
    (tmp_path / "b.toml").write_text(tiny_recipe(tiny_folder).to_toml())
    again = run_cli(["experiment", "relu-vs-tanh", "--recipe", str(tmp_path / "b.toml"), "--out",
                     str(out), "--budget", str(enough + 1), "--rates", "0.01,0.1"], cache)  # fmt: skip
    assert (
        again.returncode == 2
        and f"{out}: planned with other activations, budget_minutes;" in again.stderr
    )


def test_the_factor_is_interpolated_and_a_bound_where_a_curve_does_not_cross():
    """Each epoch's running error stands at the epoch's middle; the untrained network at
    chance (90% for ten classes)."""

    def curve(*errors):
        return [{"epoch": i + 1, "train_top1_err": e, "train_seconds": 10.0 * (i + 1),
                 "epoch_seconds": 10.0} for i, e in enumerate(errors)]  # fmt: skip

    assert crossing(curve(0.5, 0.3, 0.2), 0.9) == pytest.approx(2.0)  # 1.5 + 0.5 * (0.05 / 0.1)
    assert crossing(curve(0.2), 0.9) == pytest.approx(0.5 * 0.65 / 0.7)  # within the first
    plan = {"rates": {"relu": 0.1, "tanh": 0.01, "sigmoid": 0.1}, "epochs": 4,
            "inputs": {"budget_minutes": 1}, "sweep_errors": {"sweep-relu-lr0.1": 0.5,
            "sweep-tanh-lr0.01": 0.6, "sweep-sigmoid-lr0.1": 0.9}}  # fmt: skip
    results = summarise({"relu": curve(0.5, 0.2, 0.1, 0.1), "tanh": curve(0.6, 0.5, 0.4, 0.2),
                         "sigmoid": curve(0.9, 0.9, 0.9, 0.9)}, plan, 0.9)  # fmt: skip
    rows = results["rows"]
    relu = 0.5 + (0.5 - 0.25) / 0.3
    assert rows["relu"]["epochs_to_25"] == pytest.approx(relu)
    assert rows["relu"]["seconds_to_25"] == pytest.approx(10 * relu)
    assert rows["tanh"]["factor"] == pytest.approx((2.5 + 0.15 / 0.2) / relu)
    assert rows["tanh"]["bound"] == "exact"
    assert rows["sigmoid"]["bound"] == "lower" and rows["sigmoid"]["factor"] == pytest.approx(
        3.5 / relu
    )
    assert results["no_learning_in_sweep"] == ["sigmoid"]


def test_a_diverged_run_is_said_and_keeps_no_factor():
    plan = {"rates": {"relu": 0.1, "tanh": 0.3}, "epochs": 2, "inputs": {"budget_minutes": 1},
            "sweep_errors": {"sweep-relu-lr0.1": 0.5, "sweep-tanh-lr0.3": 0.5}}  # fmt: skip
    relu = [{"epoch": 1, "train_top1_err": 0.2, "train_seconds": 1.0, "epoch_seconds": 1.0}]
    rows = summarise({"relu": relu, "tanh": []}, plan, 0.9, {"tanh"})["rows"]
    assert rows["tanh"]["diverged"] and rows["tanh"]["factor"] is None
    assert "not reached (diverged)" in results_table({"rows": rows})


@pytest.mark.slow  # over 15 s: make test-slow keeps make test within 10 minutes
def test_ablations_smoke_and_a_restarted_sweep_skips_what_finished(tiny_folder, tmp_path, cache):
    out = tmp_path / "abl"
    base = tiny_recipe(tiny_folder)
    results = run_ablations(base, out, seeds=1, epochs=1, progress=False, say=lambda _: None)
    assert list(results["rows"]) == list(BY_NAME)
    assert "| local response normalisation |" in (out / "results.md").read_text()
    assert (out / "ablations.png").stat().st_size
    kept = (out / "no-lrn-seed0" / "last.pt").stat().st_mtime_ns
    shutil.rmtree(out / "no-pca-seed0")  # as if killed before its first checkpoint
    (tmp_path / "base.toml").write_text(base.to_toml())
    again = run_cli(["experiment", "ablations", "--recipe", str(tmp_path / "base.toml"), "--out",
                     str(out), "--seeds", "1", "--epochs", "1", "--no-progress"], cache)  # fmt: skip
    assert again.returncode == 0, again.stderr
    assert (out / "no-lrn-seed0" / "last.pt").stat().st_mtime_ns == kept
    assert (out / "no-pca-seed0" / "last.pt").is_file()
    assert "[6/7] no-pca-seed0: training" in again.stdout + again.stderr
    # Checkpoints removed (an experiment carried to another machine without them): the
    # finished runs are known by their finished.json, and nothing is trained again.
    table = (out / "results.md").read_text()
    for checkpoint in out.glob("*/*.pt"):
        checkpoint.unlink()
    carried = run_cli(["experiment", "ablations", "--recipe", str(tmp_path / "base.toml"),
                       "--out", str(out), "--seeds", "1", "--epochs", "1", "--no-progress"],
                      cache)  # fmt: skip
    assert carried.returncode == 0, carried.stderr
    assert ": training" not in carried.stdout + carried.stderr
    assert (out / "results.md").read_text() == table
    longer = run_cli(["experiment", "ablations", "--recipe", str(tmp_path / "base.toml"), "--out",
                      str(out), "--seeds", "1", "--epochs", "2", "--no-progress"], cache)  # fmt: skip
    assert longer.returncode == 2 and "made by this experiment with other settings" in longer.stderr
    assert ": done" not in longer.stdout + longer.stderr  # not called done, then refused
    no_data = run_cli(["experiment", "ablations", "--data", str(tmp_path / "nope")], cache)
    assert no_data.returncode == 2 and "nope: no such file or folder" in no_data.stderr
    wrong = run_cli(["experiment", "ablations", "--budget", "5"], cache)
    assert wrong.returncode == 2 and "--budget: not for ablations" in wrong.stderr


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["relu-vs-tanh", "--rates", "0.1,0.1"], "argument --rates: 0.1 given more than once"),
        (["relu-vs-tanh", "--rates", "0.01,0.1,1e-1"], "argument --rates: 0.1 given more than"),
        (["ablations", "--variants", "full,full"], "argument --variants: full given more than"),
        (["ablations", "--variants", "no-lrn,full,no-lrn"], "--variants: no-lrn given more"),
    ],
)
def test_a_list_option_with_an_item_twice_is_refused_in_one_line(capsys, args, message):
    """--rates 0.1,0.1 and --variants no-lrn,no-lrn ran the same runs twice."""
    from alexnet.cli import build_parser

    with pytest.raises(SystemExit) as raised:
        build_parser().parse_args(["experiment", *args])
    err = capsys.readouterr().err
    assert raised.value.code == 2 and err.startswith("alexnet experiment: error: ")
    assert message in err and len(err.strip().splitlines()) == 1, err
    distinct = build_parser().parse_args(["experiment", "relu-vs-tanh", "--rates", "0.1,0.3"])
    assert distinct.rates == [0.1, 0.3]


def test_the_one_tower_variant_halves_conv1_to_conv4_as_the_paper_did(tiny_folder):
    base = tiny_recipe(tiny_folder)  # widths 8, 8, 16, 16, 8
    one = variant_recipe(base, BY_NAME["one-tower"], 0, 1).model.options
    assert one["widths"] == [4, 4, 8, 8, 8] and one["two_towers"] is False
    full = variant_recipe(base, BY_NAME["full"], 0, 1)
    assert full.augment.pca_std == 0.1 and full.model.options["widths"] == [8, 8, 16, 16, 8]


def test_figure1_keeps_the_base_recipes_own_limit_on_training_images():
    from alexnet.config import apply_overrides, load_recipe
    from alexnet.experiments.relu_vs_tanh import SWEEP_IMAGES, figure1_recipe

    whole = load_recipe("fashion-mnist")
    small = apply_overrides(whole, ["data.limit_train=1000"])
    assert figure1_recipe(whole, "relu", 0.01, 1, SWEEP_IMAGES).data.limit_train == SWEEP_IMAGES
    assert figure1_recipe(whole, "relu", 0.01, 3, 0).data.limit_train == 0
    assert figure1_recipe(small, "tanh", 0.01, 1, SWEEP_IMAGES).data.limit_train == 1000
    assert figure1_recipe(small, "tanh", 0.01, 3, 0).data.limit_train == 1000


def test_a_stopped_experiment_says_to_run_the_experiment_again(tiny_folder, tmp_path, cache):
    """SIGTERM during an experiment's run said "resume with: alexnet train --resume
    .../full-seed0", which continues one run and not the experiment."""
    import signal
    import subprocess
    import time

    from .conftest import ALEXNET, cli_env

    (tmp_path / "base.toml").write_text(tiny_recipe(tiny_folder).to_toml())
    out = tmp_path / "abl"
    proc = subprocess.Popen([*ALEXNET, "experiment", "ablations", "--recipe",
                             str(tmp_path / "base.toml"), "--out", str(out), "--seeds", "1",
                             "--epochs", "5000", "--variants", "full", "--no-progress"],
                            env=cli_env(cache), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                            text=True)  # fmt: skip
    deadline = time.time() + 120
    while not (out / "full-seed0" / "last.pt").exists() and proc.poll() is None:
        assert time.time() < deadline, "no checkpoint in 2 minutes"
        time.sleep(0.05)
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 128 + signal.SIGTERM, err
    last = err.strip().splitlines()[-1]
    assert "the same alexnet experiment command continues" in last and "--resume" not in last


def test_a_finished_run_stopped_before_its_log_lines_gets_them(tmp_path):
    """An experiment interrupted between a run's last checkpoint and its log lines left the
    run without metrics.jsonl, and the next start skipped it as finished: its lines are
    written from the checkpoint's history."""
    from alexnet.experiments.sweep import complete_logs
    from alexnet.training.logger import format_epoch

    keys = ("train_loss", "train_top1_err", "val_loss", "val_top1_err", "val_top5_err", "lr",
            "epoch_seconds", "images_per_s")  # fmt: skip
    done = [{"epoch": e, **dict.fromkeys(keys, 0.5)} for e in (1, 2)]
    (tmp_path / "log.txt").write_text(f"run header\n{format_epoch(done[0])}\n")
    complete_logs(tmp_path, done)
    lines = (tmp_path / "metrics.jsonl").read_text().splitlines()
    assert [json.loads(line)["epoch"] for line in lines] == [1, 2]
    log = (tmp_path / "log.txt").read_text()
    assert log.count(format_epoch(done[0])) == 1 and format_epoch(done[1]) in log


def test_a_finished_runs_record_is_read_as_figures_or_refused(tmp_path):
    """finished.json stands for a finished run whose checkpoints were removed: read as plain
    figures, and an edited one is one line naming it."""
    from alexnet.errors import UserError
    from alexnet.experiments.sweep import history, test_images
    from alexnet.training.state import HISTORY_KEYS

    done = [{k: (e if k == "epoch" else 0.5) for k in HISTORY_KEYS} for e in (1, 2)]
    record = tmp_path / "finished.json"
    record.write_text(json.dumps({"history": done, "data": {"train": 100, "test": 40}}))
    assert history(tmp_path) == done and test_images(tmp_path) == 40
    for bad in ("{", '{"history": 5, "data": {"test": 4}}', '{"history": [{"epoch": "x"}]}',
                json.dumps({"history": done, "data": {"test": "40"}})):  # fmt: skip
        record.write_text(bad)
        with pytest.raises(UserError, match=r"finished\.json: not a finished run's record"):
            history(tmp_path)
