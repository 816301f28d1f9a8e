"""``alexnet eval``: the paper's ten crops exactly, and single networks and ensembles scored as
a hand computation from the stored pixels scores them."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from alexnet.data.prepare import Plan, prepare
from alexnet.data.store import open_store
from alexnet.inference.crops import CROPS, centre, ten
from alexnet.inference.eval_checkpoints import evaluate_checkpoints
from alexnet.inference.trained import load_trained
from alexnet.training.train import fit

from .conftest import tiny_recipe
from .test_train import run_cli

WNIDS = ("n03", "n01", "n02")  # the index file's order, not the sorted one


def test_ten_crops_are_the_corners_and_centre_then_their_mirrors():
    five = [(0, 0), (0, 29), (29, 0), (29, 29), (14, 14)]
    assert ten(256, 227) == [(y, x, False) for y, x in five] + [(y, x, True) for y, x in five]
    assert centre(256, 227) == [(14, 14, False)]
    assert CROPS[2](36, 32) == [(2, 2, False), (2, 2, True)]


@pytest.fixture(scope="module")
def image_tree(tmp_path_factory) -> Path:
    """train/ and val/ folders of three wnids with readable names in an index file, and a
    corrupt file in val/ that evaluation from the folder must skip and list."""
    root = tmp_path_factory.mktemp("evaltree")
    rng = np.random.default_rng(1)
    for split, count in (("train", 16), ("val", 5)):
        for c, wnid in enumerate(WNIDS):
            folder = root / split / wnid
            folder.mkdir(parents=True)
            for i in range(count):
                mean = rng.uniform(40, 210, 3) if i % 2 else np.full(3, 60.0 + 60 * c)
                pixels = rng.normal(mean, 25, (44, 52, 3)).clip(0, 255).astype(np.uint8)
                Image.fromarray(pixels).save(folder / f"{i:02d}.png")
    (root / "val" / WNIDS[0] / "broken.png").write_bytes(b"not a picture")
    index = {str(i): [w, f"thing {w}"] for i, w in enumerate(WNIDS)}
    (root / "imagenet_class_index.json").write_text(json.dumps(index))
    return root


@pytest.fixture(scope="module")
def store_nets(image_tree, tmp_path_factory):
    """A store of the tree at 36 pixels and two networks trained from it (seeds 0 and 1)."""
    root = tmp_path_factory.mktemp("evalnets")
    prepare(image_tree, root / "store", plan=Plan(size=36), progress=False)
    nets = []
    for seed in (0, 1):
        recipe = tiny_recipe(root / "store", **{
            "seed": seed, "epochs": 1, "data.source": "store", "data.image_size": 32,
            "data.batch_size": 8, "data.normalise": "mean-image", "augment.pca_std": 0.1,
            "data.workers": 0})  # fmt: skip
        fit(recipe, root / f"run{seed}", progress=False)
        nets.append(root / f"run{seed}")
    return root / "store", nets


def by_hand(runs: list[Path], store: Path, crops: int) -> torch.Tensor:
    """Softmax outputs averaged over views and networks, from the stored pixels:
    ((image - mean image) / 255, cropped, mirrored) / std, one image at a time; each
    network's views at its own input size."""
    split = open_store(store).split("val")
    probs = torch.zeros(len(split), 3, dtype=torch.float64)
    for run in runs:
        net = load_trained(run)
        mean, std = net.stats.mean_image, torch.tensor(net.recipe.data.std)
        side = net.input_size
        for i in range(len(split)):
            centred = split.decode(i).double() - mean.double()
            for y, x, mirrored in CROPS[crops](36, side):
                crop = centred[y : y + side, x : x + side]
                crop = crop.flip(1) if mirrored else crop
                inputs = (crop / 255 / std).permute(2, 0, 1)[None].float()
                with torch.no_grad():
                    probs[i] += net.model(inputs).softmax(1)[0].double()
    return probs


def expected(probs: torch.Tensor, labels: torch.Tensor) -> dict:
    top1 = probs.argmax(1) == labels
    per_class = [1 - float(top1[labels == c].double().mean()) for c in range(3)]
    return {"top1_err": 1 - float(top1.double().mean()), "per_class": per_class}


@pytest.mark.parametrize("crops", [1, 10])
def test_one_network_and_an_ensemble_score_as_by_hand(store_nets, crops):
    store, runs = store_nets
    labels = open_store(store).split("val").labels
    for chosen in (runs[:1], runs):
        want = expected(by_hand(chosen, store, crops), labels)
        got = evaluate_checkpoints([load_trained(r) for r in chosen], store, crops=crops,
                                   batch=4, progress=False)  # fmt: skip
        assert got["images"] == 15 and got["crops"] == crops
        assert got["top1_err"] == pytest.approx(want["top1_err"])
        assert [c["top1_err"] for c in got["per_class"]] == pytest.approx(want["per_class"])
        assert got["top5_err"] == 0.0  # three classes: every label is in the top five
        assert [c["name"] for c in got["per_class"]] == [f"thing {w}" for w in WNIDS]


def test_an_ensemble_of_input_sizes_takes_each_networks_own_views(store_nets, tmp_path, cache):
    """A 32- and a 28-pixel network of one store: the views were the first network's, so
    one order failed with a shape traceback and the other cropped the second off-centre."""
    store, runs = store_nets
    recipe = tiny_recipe(store, **{"epochs": 1, "data.source": "store", "data.image_size": 28,
                                   "data.batch_size": 8, "data.normalise": "mean-image",
                                   "data.workers": 0})  # fmt: skip
    fit(recipe, tmp_path / "small", progress=False)
    labels = open_store(store).split("val").labels
    for chosen in ([runs[0], tmp_path / "small"], [tmp_path / "small", runs[0]]):
        got = evaluate_checkpoints([load_trained(r) for r in chosen], store, crops=10, batch=4,
                                   progress=False)  # fmt: skip
        want = expected(by_hand(chosen, store, 10), labels)
        assert got["top1_err"] == pytest.approx(want["top1_err"])
        assert [c["top1_err"] for c in got["per_class"]] == pytest.approx(want["per_class"])


def test_an_image_folder_scores_as_the_store_made_from_it(store_nets, image_tree):
    store, runs = store_nets
    nets = [load_trained(r) for r in runs]
    from_store = evaluate_checkpoints(nets, store, crops=10, progress=False)
    from_folder = evaluate_checkpoints(nets, image_tree, crops=10, workers=2, progress=False)
    for key in ("images", "top1_err", "top5_err", "per_class"):
        assert from_folder[key] == from_store[key]
    assert [Path(p).name for p, _ in from_folder["skipped"]] == ["broken.png"]


def test_a_network_trained_in_memory_scores_its_test_set_with_its_mirror(
    tiny_folder, cache, tmp_path
):
    fit(tiny_recipe(tiny_folder, epochs=1), tmp_path / "run", progress=False)
    net = load_trained(tmp_path / "run")
    got = evaluate_checkpoints([net], tiny_folder, crops=2, progress=False)
    from alexnet.data.imagefolder import load_folder_pair

    test = load_folder_pair(tiny_folder, 32, 3, 64_000_000)[1]
    x = test.images.double() / 255 - torch.tensor(net.recipe.data.mean).double()[:, None, None]
    x = (x / torch.tensor(net.recipe.data.std).double()[:, None, None]).float()
    with torch.no_grad():
        probs = net.model(x).softmax(1) + net.model(x.flip(-1)).softmax(1)
    assert got["images"] == len(test)
    assert got["top1_err"] == pytest.approx(expected(probs, test.labels)["top1_err"])


def test_eval_on_the_command_line(store_nets, tiny_folder, cache, tmp_path):
    store, runs = store_nets
    result = run_cli(["eval", *map(str, runs), "--data", str(store), "--crops", "10", "--json",
                      "--no-progress"], cache)  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)["checkpoints"] == [str(r / "best.pt") for r in runs]
    fit(tiny_recipe(tiny_folder, epochs=1), tmp_path / "mem", progress=False)
    wrong = run_cli(["eval", str(tmp_path / "mem"), "--data", str(tiny_folder), "--crops", "10"],
                    cache)  # fmt: skip
    assert wrong.returncode == 2 and len(wrong.stderr.strip().splitlines()) == 1
    assert "--crops 10" in wrong.stderr
    mixed = run_cli(["eval", str(runs[0]), str(tmp_path / "mem"), "--data", str(store)], cache)
    assert mixed.returncode == 2 and "must read their images alike" in mixed.stderr
    assert "evaluate these one at a time" in mixed.stderr


def test_eval_mistakes_name_the_option_or_the_kind_of_network(store_nets, tiny_folder, tmp_path):
    store, runs = store_nets
    net = load_trained(runs[0])
    for kwargs, words in (({"batch": 0}, "--batch 0"), ({"workers": -1}, "--workers -1"),
                          ({"split": "bogus"}, "no bogus/ folder")):  # fmt: skip
        with pytest.raises((ValueError, FileNotFoundError), match=words):
            evaluate_checkpoints([net], tiny_folder if "split" in kwargs else store, progress=False,
                                 **kwargs)  # fmt: skip
    fit(tiny_recipe(tiny_folder, epochs=1), tmp_path / "mem", progress=False)
    memory = load_trained(tmp_path / "mem")
    with pytest.raises(ValueError, match="is a store"):
        evaluate_checkpoints([memory], store, progress=False)
    with pytest.raises(ValueError, match="leave --split out"):
        evaluate_checkpoints([memory], tiny_folder, split="val", progress=False)
    with pytest.raises(ValueError, match="trained in memory"):
        evaluate_checkpoints([net, memory], store, progress=False)
