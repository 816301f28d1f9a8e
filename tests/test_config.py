"""Recipes: typed settings with the paper's defaults, shipped files, overrides, checks."""

import tomllib

import pytest
import torch

from alexnet.config import (
    RECIPE_FORMAT,
    Recipe,
    apply_overrides,
    load_recipe,
    parse_value,
    recipe_from_dict,
    recipe_names,
)
from alexnet.models import build_model


def test_the_defaults_are_the_papers_recipe():
    paper, defaults = load_recipe("imagenet-paper"), Recipe()
    assert paper.data.batch_size == 128 == defaults.data.batch_size
    assert (paper.optim.momentum, paper.optim.weight_decay, paper.optim.lr) == (0.9, 5e-4, 0.01)
    assert paper.schedule.name == "plateau" and paper.schedule.factor == 0.1
    assert paper.schedule.max_reductions == 3 and paper.epochs == 90
    assert paper.model.arch == "alexnet" and paper.model.options == {}  # the network's defaults
    assert paper.augment.flip and paper.optim.label_smoothing == 0.0
    # The file names the recipe, its data (a store, with the paper's mean image and colour
    # noise) and a checkpoint cadence; all else is the defaults.
    assert (paper.name, paper.train.checkpoint_every) == ("imagenet-paper", 1000)
    assert (paper.data.source, paper.data.normalise) == ("store", "mean-image")
    assert paper.augment.pca_std == 0.1 and defaults.augment.pca_std == 0.0


def _leaves(table: dict, prefix: str = "") -> dict:
    out = {}
    for key, value in table.items():
        if isinstance(value, dict) and key != "options":
            out |= _leaves(value, f"{prefix}{key}.")
        else:
            out[prefix + key] = value
    return out


@pytest.mark.parametrize("name", ["fashion-mnist", "cifar10", "imagenet-paper"])
def test_shipped_recipes_hold_only_what_differs_from_the_defaults(name):
    from importlib import resources

    text = resources.files("alexnet.recipes").joinpath(f"{name}.toml").read_text()
    written = _leaves(tomllib.loads(text))
    defaults = _leaves(Recipe().to_dict())
    same = [k for k, v in written.items() if k != "model.options" and defaults.get(k) == v]
    assert same == [], f"{name}.toml repeats defaults: {same}"


@pytest.mark.parametrize("name", ["fashion-mnist", "cifar10", "imagenet-paper"])
def test_recipes_round_trip_through_toml(name):
    recipe = load_recipe(name)
    again = recipe_from_dict(tomllib.loads(recipe.to_toml()), "again", saved=True)
    assert again == recipe and tomllib.loads(recipe.to_toml())["format"] == RECIPE_FORMAT


def test_overrides_set_nested_keys_with_types():
    recipe = load_recipe("fashion-mnist")
    out = apply_overrides(recipe, ["optim.lr=0.02", "data.batch_size=256", "augment.flip=false",
                                   "model.options.widths=[8, 8, 8, 8, 8]", "optim.momentum=0", "optim.nesterov=false"])  # fmt: skip
    assert out.optim.lr == 0.02 and out.data.batch_size == 256 and out.augment.flip is False
    assert out.model.options["widths"] == [8] * 5 and out.optim.momentum == 0.0
    assert isinstance(out.optim.momentum, float) and recipe.optim.lr != 0.02  # a copy


def test_network_options_are_checked_against_the_chosen_network():
    # imagenet-paper lists no options; switching the network on the command line can size it.
    out = apply_overrides(load_recipe("imagenet-paper"),
                          ["model.arch=alexnet-small", "model.options.widths=[8, 8, 8, 8, 8]"])  # fmt: skip
    assert out.model.options == {"widths": [8, 8, 8, 8, 8]}
    with pytest.raises(ValueError, match=r"model\.options\.widths.*for alexnet; valid:"):
        apply_overrides(load_recipe("imagenet-paper"), ["model.options.widths=[8, 8, 8, 8, 8]"])


@pytest.mark.parametrize(
    ("item", "message"),
    [
        ("data.batch_size=0", "data.batch_size must be >= 1, got 0"),
        ("data.batch_size=-5", "data.batch_size must be >= 1, got -5"),
        ("data.batch_size=big", "data.batch_size must be an integer, got 'big'"),
        ("epochs=0", "epochs must be >= 1, got 0"),
        ("epochs=-3", "epochs must be >= 1, got -3"),
        ("data.root=5", "data.root must be a string, got 5"),
        ("model.options.widths=[32, 0, 96, 96, 64]", "model.options.widths must be >= 1"),
        ("optim.lr=0", "optim.lr must be > 0.0"),
        ("optim.lr=nan", "optim.lr must be a finite number"),
        ("optim.momentum=1.5", "optim.momentum must be < 1.0"),
        (
            "train.precision=fp16",
            'train.precision must be one of "auto", "fp32", "bf16"; got "fp16"',
        ),
        ("optim.lrr=1", "unknown key 'optim.lrr'; valid: name, lr,"),
        ("optimizer.lr=1", "unknown key 'optimizer'; valid: format, name,"),
        ("optim.lr.x=1", "optim.lr is a setting, not a table"),
        ("optim.lr", "must look like key=value"),
        ("data.mean=[0.5, 0.5]", "data.mean and data.std differ in length"),
        ("format=1.5", "format is the version alexnet writes into a recipe file"),
        ("format=1", "format=1: format is the version alexnet writes"),  # was a silent no-op
        (
            'train.channels_last="true"',
            'train.channels_last must be one of "auto", true, false; got "true"',
        ),
        ("schedule.milestones=[5, 3]", "schedule.milestones must increase"),
    ],
)
def test_bad_values_are_refused_naming_the_key(item, message):
    with pytest.raises(ValueError, match=message.replace("[", r"\[").replace(".", r"\.")):
        apply_overrides(
            load_recipe("fashion-mnist"), [item, "data.std=[0.3]"] if "mean" in item else [item]
        )


def test_a_recipe_file_needs_only_what_it_changes(tmp_path):
    path = tmp_path / "mine.toml"
    path.write_text('name = "mine"\n[optim]\nlr = 0.05\n')  # no [train] table, no [data] table
    recipe = load_recipe(str(path))
    assert recipe.optim.lr == 0.05 and recipe.train == Recipe().train
    path.write_text('\ufeffname = "bom"\n', encoding="utf-8")  # an editor's byte-order mark
    assert load_recipe(str(path)).name == "bom"
    path.write_text("[trian]\nthreads = 1\n")
    with pytest.raises(ValueError, match=r"mine\.toml: unknown key 'trian'"):
        load_recipe(str(path))


def test_saved_recipes_carry_a_format_and_newer_ones_are_refused():
    table = load_recipe("fashion-mnist").to_dict()
    old = {k: v for k, v in table.items() if k != "format"}  # as alexnet 0.1.0 saved it
    assert recipe_from_dict(old, "old", saved=True).format == RECIPE_FORMAT
    with pytest.raises(ValueError, match="recipe format 99 is newer than this alexnet reads"):
        recipe_from_dict({**table, "format": 99}, "future", saved=True)
    with pytest.raises(ValueError, match="recipe format 99 is newer"):  # a recipe file too
        recipe_from_dict({**table, "format": 99}, "mine.toml")


def test_parse_value():
    assert parse_value("0.5") == 0.5 and parse_value("true") is True
    assert parse_value("[1, 2]") == [1, 2] and parse_value("hello") == "hello"


def test_unknown_recipe_lists_the_shipped_ones(tmp_path):
    assert {"fashion-mnist", "cifar10", "imagenet-paper"} <= set(recipe_names())
    with pytest.raises(
        ValueError, match="valid: cifar10, fashion-mnist, finetune, imagenet-paper, photos"
    ):
        load_recipe("mnist")
    with pytest.raises(ValueError, match="does not exist"):
        load_recipe(str(tmp_path / "none.toml"))


def test_recipes_saved_before_format_3_keep_their_dropout_and_update_rule():
    """Runs saved before the paper's dropout placement and update rule became the defaults
    resume with what they trained with; a new recipe gets the paper's."""
    table = load_recipe("fashion-mnist").to_dict()
    del table["optim"]["rule"]
    for version in (1, 2):
        old = {**table, "format": version}
        recipe = recipe_from_dict(old, "old", saved=True)
        assert recipe.optim.rule == "torch"
        assert recipe.model.options["dropout_placement"] == "torchvision"
    owt = {"format": 2, "model": {"arch": "alexnet-owt"}}
    assert recipe_from_dict(owt, "old", saved=True).model.options == {
        "dropout_placement": "torchvision"
    }
    new = load_recipe("imagenet-paper")
    assert new.optim.rule == "paper" and new.optim.decay_biases
    assert build_model("alexnet").classifier[0].__class__ is torch.nn.Identity
    with pytest.raises(ValueError, match="old: model must be a table, got 3"):  # still named
        recipe_from_dict({"format": 2, "model": 3}, "old", saved=True)
    with pytest.raises(ValueError, match=r"model\.arch must be a string"):
        recipe_from_dict({"format": 2, "model": {"arch": ["alexnet"]}}, "old", saved=True)
