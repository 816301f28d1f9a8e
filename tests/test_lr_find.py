"""The learning-rate range test: a plot and a suggestion, alone and at the start of a run."""

from __future__ import annotations

import tomllib

from alexnet.training.lr_find import RangeTest
from alexnet.training.train import find_learning_rate, fit

from .conftest import tiny_recipe
from .test_train import run_cli


def test_the_range_test_suggests_a_tenth_of_the_rate_at_the_lowest_loss(
    tiny_folder, cache, tmp_path
):
    test = find_learning_rate(tiny_recipe(tiny_folder), 40, tmp_path / "lr.png")
    assert (tmp_path / "lr.png").stat().st_size > 10_000
    assert 1e-4 <= test.minimum <= 2.0 and test.suggestion == test.minimum / 10
    assert test.rates == sorted(test.rates) and len(test.rates) == len(test.losses) >= 3
    lowest = min(range(len(test.losses)), key=test.losses.__getitem__)
    assert test.rates[lowest] == test.minimum


def test_a_run_with_lr_find_trains_at_the_suggested_rate(tiny_folder, cache, tmp_path):
    recipe = tiny_recipe(tiny_folder, epochs=1, **{"optim.lr_find": True, "optim.lr": 123.0})
    fit(recipe, tmp_path / "run", progress=False)
    saved = tomllib.loads((tmp_path / "run" / "recipe.toml").read_text())
    assert saved["optim"]["lr_find"] is True and 1e-5 <= saved["optim"]["lr"] <= 0.2
    assert (tmp_path / "run" / "lr_find.png").is_file()
    assert "learning-rate range test" in (tmp_path / "run" / "log.txt").read_text()


def test_lr_find_on_the_command_line(tiny_folder, cache, tmp_path):
    recipe = tmp_path / "tiny.toml"
    recipe.write_text(tiny_recipe(tiny_folder).to_toml())
    result = run_cli(["lr-find", "--recipe", str(recipe), "--steps", "60", "--plot",
                      str(tmp_path / "p.png")], cache)  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert "suggested" in result.stdout and (tmp_path / "p.png").is_file()
    # 120 images in full batches of 16: 7 batches, which the steps go over more than 4 times.
    assert "warning: the training set is 7 batches, so the test's " in result.stderr


def test_a_test_over_few_batches_says_its_suggestion_may_be_too_high():
    losses = [2.0 - 0.05 * i for i in range(20)]
    rates = [1e-3 * 1.2**i for i in range(20)]
    test = RangeTest(rates, losses, 1e-2, 1e-1, batches=3)
    assert test.repeated() == (
        "the training set is 3 batches, so the test's 20 steps went over it 6.7 times and its "
        "loss fell partly from learning those batches by heart: the suggestion may be too high; "
        "more images give a sounder test"
    )
    assert RangeTest(rates, losses, 1e-2, 1e-1, batches=5).repeated() is None  # four times
    assert RangeTest(rates, losses, 1e-2, 1e-1, batches=10).repeated() is None  # twice


def test_lr_find_refuses_too_few_steps_and_a_plot_it_cannot_write(tiny_folder, cache, tmp_path):
    recipe = tmp_path / "tiny.toml"
    recipe.write_text(tiny_recipe(tiny_folder).to_toml())
    for extra, words in ((["--steps", "2"], "--steps: 2 is out of range"),
                         (["--plot", str(tmp_path / "no" / "p.png")], "--plot")):  # fmt: skip
        result = run_cli(["lr-find", "--recipe", str(recipe), *extra], cache)
        assert result.returncode == 2 and words in result.stderr


def test_the_range_test_steps_with_torchs_rule_whatever_the_runs(tiny_folder, tmp_path):
    """Its rate rises every step, which the paper's velocity would lag behind: both rules
    give the same losses, those of torch's momentum."""
    tests = [find_learning_rate(tiny_recipe(tiny_folder, **{"optim.rule": rule}), 12,
                                tmp_path / f"{rule}.png") for rule in ("paper", "torch")]  # fmt: skip
    assert tests[0].losses == tests[1].losses
