"""Recipes and command-line overrides."""

import pytest

from alexnet.config import apply_overrides, load_recipe, parse_value, recipe_names, to_toml

try:
    import tomllib
except ImportError:  # pragma: no cover
    import tomli as tomllib


def test_shipped_recipes_and_the_papers_settings():
    assert {"fashion-mnist", "cifar10", "imagenet-paper"} <= set(recipe_names())
    paper = load_recipe("imagenet-paper")
    assert paper["data"]["batch_size"] == 128
    assert (paper["optim"]["momentum"], paper["optim"]["weight_decay"], paper["optim"]["lr"]) == (
        0.9,
        5e-4,
        0.01,
    )
    assert paper["schedule"]["name"] == "plateau" and paper["schedule"]["factor"] == 0.1
    assert paper["schedule"]["max_reductions"] == 3
    assert paper["epochs"] == 90 and paper["model"]["options"]["init"] == "paper"


@pytest.mark.parametrize("name", ["fashion-mnist", "cifar10", "imagenet-paper"])
def test_recipes_round_trip_through_toml(name):
    recipe = load_recipe(name)
    assert tomllib.loads(to_toml(recipe)) == recipe


def test_overrides_set_nested_keys_with_types():
    recipe = load_recipe("fashion-mnist")
    out = apply_overrides(
        recipe,
        [
            "optim.lr=0.02",
            "data.batch_size=256",
            "augment.flip=false",
            "model.options.widths=[8, 8, 8, 8, 8]",
            "optim.momentum=1",
        ],
    )
    assert out["optim"]["lr"] == 0.02 and out["data"]["batch_size"] == 256
    assert out["augment"]["flip"] is False and out["model"]["options"]["widths"] == [8] * 5
    assert out["optim"]["momentum"] == 1.0 and isinstance(out["optim"]["momentum"], float)
    assert recipe["optim"]["lr"] != 0.02  # the original is untouched


def test_override_errors_name_the_key_and_the_valid_ones():
    recipe = load_recipe("fashion-mnist")
    with pytest.raises(ValueError, match=r"unknown recipe key 'optim\.lrr'.*valid: .*lr"):
        apply_overrides(recipe, ["optim.lrr=1"])
    with pytest.raises(ValueError, match="key=value"):
        apply_overrides(recipe, ["optim.lr"])
    with pytest.raises(ValueError, match="expects int"):
        apply_overrides(recipe, ["data.batch_size=big"])


def test_parse_value():
    assert parse_value("0.5") == 0.5 and parse_value("true") is True
    assert parse_value("[1, 2]") == [1, 2] and parse_value("hello") == "hello"


def test_unknown_recipe_lists_the_shipped_ones(tmp_path):
    with pytest.raises(ValueError, match="valid: cifar10, fashion-mnist, imagenet-paper"):
        load_recipe("mnist")
    with pytest.raises(ValueError, match="does not exist"):
        load_recipe(str(tmp_path / "none.toml"))
