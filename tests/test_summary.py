"""`alexnet summary`: the paper's figures, JSON output, errors."""

import json

import pytest
import torch

from alexnet.cli import main
from alexnet.models.summary import parse_input, summarise

PAPER_NEURONS = [290_400, 186_624, 64_896, 64_896, 43_264, 4_096, 4_096, 1_000]


def test_alexnet_summary_has_the_papers_numbers():
    s = summarise("alexnet")
    assert s["total_params"] == 60_965_224
    assert [r["neurons"] for r in s["layers"] if r["neurons"]] == PAPER_NEURONS
    assert sum(r["params"] for r in s["layers"]) == 60_965_224
    names = [r["name"] for r in s["layers"] if r["neurons"]]
    assert names == ["conv1", "conv2", "conv3", "conv4", "conv5", "fc6", "fc7", "fc8"]
    assert any("253,440" in n for n in s["notes"])
    conv1 = s["layers"][0]
    assert conv1["output"] == [96, 55, 55]
    assert conv1["mult_adds"] == 55 * 55 * 96 * 3 * 11 * 11


def test_summary_cli_table_and_json(capsys):
    main(["summary"])
    table = capsys.readouterr().out
    assert "60,965,224" in table and "290,400" in table and "253,440" in table
    main(["summary", "--arch", "alexnet-owt", "--json"])
    data = json.loads(capsys.readouterr().out)
    assert data["total_params"] == 61_100_840


def test_summary_options_and_input(capsys):
    main(["summary", "--arch", "alexnet-small", "--input", "1x28x28", "-o", "lrn=false"])
    out = capsys.readouterr().out
    assert "1x28x28" in out and "LocalResponseNorm" not in out


def test_summary_errors_are_one_line(capsys):
    with pytest.raises(SystemExit) as exc:
        main(["summary", "--input", "3x227"])
    assert exc.value.code == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "3x227x227" in err
    with pytest.raises(SystemExit):
        main(["summary", "-o", "bogus=1"])
    assert "valid: num_classes" in capsys.readouterr().err


def test_parse_input():
    assert parse_input("3x227x227") == (3, 227, 227)
    with pytest.raises(ValueError):
        parse_input("a x b")


def test_layers_are_named_after_the_layer_whose_outputs_they_take():
    """Caffe's names: the paper's dropout is dropout6 and dropout7 (the outputs of fc6 and fc7);
    torchvision's order drops pool5's and fc6's outputs instead."""
    paper = [r["name"] for r in summarise("alexnet")["layers"]]
    assert paper[-7:] == ["fc6", "relu6", "dropout6", "fc7", "relu7", "dropout7", "fc8"]
    owt = [r["name"] for r in summarise("alexnet-owt")["layers"]]
    assert owt[-7:] == ["dropout5", "fc6", "relu6", "dropout6", "fc7", "relu7", "fc8"]


@pytest.mark.parametrize("name", ["alexnet", "vgg16", "googlenet", "resnet50", "mobilenet_v2",
                                  "shufflenet_v2_x1_0", "efficientnet_b0"])  # fmt: skip
def test_the_layer_table_counts_later_networks_as_torchvision_publishes(name):
    """Notebook 06 compares AlexNet with the networks after it by the layer table's counts,
    computed on the meta device: they are torchvision's own published parameters and
    multiply-adds (its `_ops`, in G)."""
    from torchvision.models import get_model, get_model_weights

    from alexnet.models.summary import layer_table

    with torch.device("meta"):
        model = get_model(
            name, weights=None, **({"init_weights": False} if name == "googlenet" else {})
        )
    rows = layer_table(model, (3, 224, 224))
    meta = get_model_weights(name).IMAGENET1K_V1.meta
    assert sum(r.params for r in rows) == meta["num_params"]
    assert sum(r.mult_adds for r in rows) / 1e9 == pytest.approx(meta["_ops"], abs=0.0015)
