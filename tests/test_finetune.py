"""Fine-tuning: a new run starts from given weights, a new output layer where the class count
differs, the features frozen when asked; resuming never needs the start weights again."""

from __future__ import annotations

import copy
import shutil
from pathlib import Path

import pytest
import torch

from alexnet.checkpoint import load_checkpoint
from alexnet.models import build_model
from alexnet.training.train import fit

from .conftest import CLASSES, tiny_recipe
from .test_train import run_cli


@pytest.fixture(scope="module")
def start_run(tiny_folder, tmp_path_factory) -> Path:
    run = tmp_path_factory.mktemp("start") / "run"
    fit(tiny_recipe(tiny_folder, epochs=1), run, progress=False)
    return run


@pytest.fixture(scope="module")
def two_classes(tiny_folder, tmp_path_factory) -> Path:
    """The tiny set's first two classes: another class count than the start's three."""
    root = tmp_path_factory.mktemp("two")
    for split in ("train", "val"):
        for name in CLASSES[:2]:
            shutil.copytree(tiny_folder / split / name, root / split / name)
    return root


def weights(run: Path) -> dict[str, torch.Tensor]:
    return load_checkpoint(run / "last.pt")["model"]


def test_frozen_features_keep_the_start_and_the_head_is_new(start_run, two_classes, tmp_path):
    run = tmp_path / "tuned"
    fit(tiny_recipe(two_classes, epochs=1, **{"model.weights": str(start_run),
                                                "model.freeze_features": True}), run,
        progress=False)  # fmt: skip
    before, after = weights(start_run), weights(run)
    for key in (k for k in after if k.startswith("features.")):
        assert torch.equal(after[key], before[key]), key
    assert (
        after["classifier.6.weight"].shape[0] == 2 and before["classifier.6.weight"].shape[0] == 3
    )
    assert not torch.equal(after["classifier.1.weight"], before["classifier.1.weight"])  # trained
    log = (run / "log.txt").read_text()
    assert f"started from the weights of {start_run / 'best.pt'}" in log
    assert "the output layer is new (3 -> 2 classes)" in log


def test_unfrozen_training_starts_from_the_weights(start_run, two_classes, tmp_path):
    """At a learning rate of 1e-9 the weights barely move: they are the start's, not a new
    initialisation."""
    run = tmp_path / "tuned"
    fit(tiny_recipe(two_classes, epochs=1, **{"model.weights": str(start_run), "optim.lr": 1e-9,
                                                "optim.weight_decay": 0.0}), run,
        progress=False)  # fmt: skip
    before, after = weights(start_run), weights(run)
    torch.testing.assert_close(after["features.0.weight"], before["features.0.weight"])
    torch.testing.assert_close(after["classifier.4.weight"], before["classifier.4.weight"])


def test_resume_does_not_read_the_start_weights_again(start_run, two_classes, tmp_path, cache):
    start = tmp_path / "start"
    shutil.copytree(start_run, start)
    recipe = tiny_recipe(two_classes, epochs=1, **{"model.weights": str(start),
                                                   "schedule.name": "constant"})  # fmt: skip
    (tmp_path / "r.toml").write_text(recipe.to_toml())
    result = run_cli(["train", "--recipe", str(tmp_path / "r.toml"), "--runs", str(tmp_path),
                      "--name", "tuned", "--no-progress"], cache)  # fmt: skip
    assert result.returncode == 0, result.stderr
    shutil.rmtree(start)
    result = run_cli(["train", "--resume", str(tmp_path / "tuned"), "--set", "epochs=2",
                      "--no-progress"], cache)  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert load_checkpoint(tmp_path / "tuned" / "last.pt")["epoch"] == 2


def test_weights_that_do_not_fit_are_one_line(start_run, two_classes, tmp_path, cache):
    wider = tiny_recipe(two_classes, epochs=1, **{"model.weights": str(start_run)})
    wider.model.options["widths"] = [16, 8, 16, 16, 8]
    with pytest.raises(ValueError, match=r"its features\.0\.weight is 8x3x5x5, this run's "):
        fit(wider, tmp_path / "a", progress=False)
    other = tiny_recipe(two_classes, epochs=1, **{"model.weights": str(start_run),
                                                  "model.options": {}, "model.arch": "convnet4"})  # fmt: skip
    with pytest.raises(
        ValueError, match="weights of alexnet-small, but the recipe trains convnet4"
    ):
        fit(other, tmp_path / "b", progress=False)
    smaller = tiny_recipe(two_classes, epochs=1, **{"model.weights": str(start_run),
                                                    "data.image_size": 24})  # fmt: skip
    with pytest.raises(ValueError, match=r"trained on 32-pixel images, this run's are 24, "
                                         r"which changes its classifier\.1\.weight .*; set "
                                         r"data\.image_size = 32$"):  # fmt: skip
        fit(smaller, tmp_path / "c", progress=False)
    missing = run_cli(["train", "--recipe", "cifar10", "--data", str(two_classes), "--weights",
                       str(tmp_path / "nope.pt")], cache)  # fmt: skip
    assert missing.returncode == 2 and "nope.pt: no such file or folder" in missing.stderr
    assert "Traceback" not in missing.stderr and not (tmp_path / "runs").exists()
    result = run_cli(["train", "--resume", str(start_run), "--weights", str(start_run)], cache)
    assert (
        result.returncode == 2
        and "drop --recipe, --data, --name, --runs, --weights" in result.stderr
    )


def test_torchvision_layout_weights_fine_tune_alexnet_owt(two_classes, tmp_path, monkeypatch):
    """A file in the format of torchvision's published AlexNet weights (made here) starts an
    alexnet-owt run on 64-pixel images with its features frozen."""
    import torchvision

    torch.manual_seed(1)
    published = torchvision.models.alexnet().state_dict()
    path = tmp_path / "alexnet-owt-7be5be79.pth"
    torch.save(published, path)
    recipe = tiny_recipe(two_classes, epochs=1, **{
        "model.arch": "alexnet-owt", "model.weights": str(path), "model.freeze_features": True,
        "data.image_size": 64, "data.limit_train": 32, "data.batch_size": 16,
        "model.options": {}})  # fmt: skip
    fit(recipe, tmp_path / "run", progress=False)
    after = weights(tmp_path / "run")
    assert torch.equal(after["features.0.weight"], published["features.0.weight"])
    assert after["classifier.6.weight"].shape == (2, 4096)


def test_a_start_trained_at_another_input_scale_is_said(start_run):
    """Weights trained at unit scale, started in a run at the paper's 0-255 scale: the line
    that reports the start says so and names data.std; the same scale says nothing of it."""
    from alexnet.inference.trained import load_trained
    from alexnet.training.finetune import load_start_weights

    start = load_trained(start_run)
    model = build_model(start.recipe.model.arch, **start.recipe.model.options)
    recipe = copy.deepcopy(start.recipe)
    recipe.model.weights, recipe.data.std = str(start_run), [1 / 255] * 3
    said = load_start_weights(model, recipe)
    assert "data.std" in said and "note" in said
    recipe.data.std = list(start.recipe.data.std)
    assert "note" not in load_start_weights(model, recipe)


def test_frozen_features_without_start_weights_are_warned_of(tiny_folder, tmp_path, cache):
    """Only the classifier trains, on random convolutions: a baseline when meant, and a
    silent mistake when --weights was forgotten."""
    fit(tiny_recipe(tiny_folder, epochs=1, **{"model.freeze_features": True}), tmp_path / "r",
        progress=False)  # fmt: skip
    log = (tmp_path / "r" / "log.txt").read_text()
    assert "warning: model.freeze_features without model.weights: the convolutional" in log
