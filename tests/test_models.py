"""The networks: shapes, parameter counts, initialisation, options, torchvision compatibility."""

import pytest
import torch
from torch import nn

from alexnet.models import NETWORKS, build_model, model_options
from alexnet.ops.lrn import LocalResponseNorm


def count(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def kinds(model: nn.Module) -> list[str]:
    return [type(m).__name__ for m in model.modules() if not list(m.children())]


def test_paper_alexnet_parameter_count_and_output_shape():
    model = build_model("alexnet").eval()
    assert count(model) == 60_965_224
    with torch.no_grad():
        out = model(torch.randn(2, 3, 227, 227))
    assert out.shape == (2, 1000)


def test_paper_alexnet_feature_map_sizes():
    model = build_model("alexnet").eval()
    x = torch.zeros(1, 3, 227, 227)
    sizes = []
    with torch.no_grad():
        for layer in model.features:
            x = layer(x)
            if isinstance(layer, nn.Conv2d):
                sizes.append(tuple(x.shape[1:]))
    assert sizes == [(96, 55, 55), (256, 27, 27), (384, 13, 13), (384, 13, 13), (256, 13, 13)]
    assert tuple(x.shape[1:]) == (256, 6, 6)


def test_paper_alexnet_rejects_224_with_an_explanation():
    model = build_model("alexnet").eval()
    with pytest.raises(ValueError, match=r"227x227.*224"):
        model(torch.zeros(1, 3, 224, 224))


def test_two_towers_group_conv2_conv4_conv5_only():
    convs = [m for m in build_model("alexnet").modules() if isinstance(m, nn.Conv2d)]
    assert [c.groups for c in convs] == [1, 2, 1, 2, 2]
    convs = [
        m for m in build_model("alexnet", two_towers=False).modules() if isinstance(m, nn.Conv2d)
    ]
    assert [c.groups for c in convs] == [1, 1, 1, 1, 1]
    # One tower doubles the connections of conv2, conv4 and conv5.
    assert count(build_model("alexnet", two_towers=False)) == 60_965_224 + (
        256 * 48 * 25 + 384 * 192 * 9 + 256 * 192 * 9
    )


def test_paper_initialisation_statistics():
    torch.manual_seed(0)
    model = build_model("alexnet", init="paper")
    convs = [m for m in model.modules() if isinstance(m, nn.Conv2d)]
    fcs = [m for m in model.modules() if isinstance(m, nn.Linear)]
    for layer in convs + fcs:
        w = layer.weight.detach()
        assert abs(w.mean().item()) < 2e-3
        assert w.std().item() == pytest.approx(0.01, rel=0.05)
    biases = [float(layer.bias.detach().unique().item()) for layer in convs + fcs]
    # conv1..conv5, fc6..fc8: ones in conv2, conv4, conv5, fc6, fc7.
    assert biases == [0.0, 1.0, 0.0, 1.0, 1.0, 1.0, 1.0, 0.0]


def test_kaiming_init_has_he_variance_and_zero_bias():
    torch.manual_seed(0)
    model = build_model("alexnet", init="kaiming")
    conv3 = [m for m in model.modules() if isinstance(m, nn.Conv2d)][2]
    fan_in = 256 * 9
    assert conv3.weight.std().item() == pytest.approx((2 / fan_in) ** 0.5, rel=0.05)
    assert torch.all(conv3.bias == 0)


def test_alexnet_owt_matches_torchvision_weights_exactly():
    torchvision = pytest.importorskip("torchvision")
    reference = torchvision.models.alexnet(weights=None).eval()
    ours = build_model("alexnet-owt").eval()
    assert count(ours) == count(reference) == 61_100_840
    ref_state = reference.state_dict()
    assert {k: v.shape for k, v in ours.state_dict().items()} == {
        k: v.shape for k, v in ref_state.items()
    }
    ours.load_state_dict(ref_state, strict=True)
    x = torch.randn(2, 3, 224, 224)
    with torch.no_grad():
        assert torch.equal(ours(x), reference(x))


@pytest.mark.parametrize(("size", "channels"), [(28, 1), (32, 3)])
def test_alexnet_small_shapes(size, channels):
    model = build_model("alexnet-small", in_channels=channels, input_size=size).eval()
    with torch.no_grad():
        assert model(torch.randn(3, channels, size, size)).shape == (3, 10)
    kind = kinds(model)
    assert kind.count("Conv2d") == 5 and kind.count("Linear") == 3
    assert kind.count("LocalResponseNorm") == 2 and kind.count("Dropout") == 2


def test_convnet4_is_three_conv_and_one_fc():
    model = build_model("convnet4").eval()
    kind = kinds(model)
    assert kind.count("Conv2d") == 3 and kind.count("Linear") == 1
    with torch.no_grad():
        assert model(torch.randn(2, 3, 32, 32)).shape == (2, 10)


@pytest.mark.parametrize("name", list(NETWORKS))
def test_every_option_changes_the_layer_list(name):
    base = build_model(name)
    input_size = {"alexnet": 227, "alexnet-owt": 224}.get(name, 32)

    tanh = kinds(build_model(name, activation="tanh"))
    assert "Tanh" in tanh and "ReLU" not in tanh
    assert "Sigmoid" in kinds(build_model(name, activation="sigmoid"))

    with_lrn = build_model(name, lrn=True)
    without = build_model(name, lrn=False)
    assert kinds(with_lrn).count("LocalResponseNorm") == 2
    assert "LocalResponseNorm" not in kinds(without)
    paper = next(m for m in with_lrn.modules() if isinstance(m, LocalResponseNorm))
    assert (paper.size, paper.alpha, paper.beta, paper.k) == (5, 1e-4, 0.75, 2.0)

    pools = [
        m
        for m in build_model(name, pooling="non-overlapping").modules()
        if isinstance(m, nn.MaxPool2d)
    ]
    assert pools and all(p.kernel_size == 2 and p.stride == 2 for p in pools)
    pools = [m for m in base.modules() if isinstance(m, nn.MaxPool2d)]
    assert all(p.kernel_size == 3 and p.stride == 2 for p in pools)

    drops = [m for m in build_model(name, dropout=0.3).modules() if isinstance(m, nn.Dropout)]
    assert drops and all(d.p == 0.3 for d in drops)

    towers = [
        m.groups for m in build_model(name, two_towers=True).modules() if isinstance(m, nn.Conv2d)
    ]
    assert towers.count(2) >= 2 and towers[0] == 1
    one = [
        m.groups for m in build_model(name, two_towers=False).modules() if isinstance(m, nn.Conv2d)
    ]
    assert set(one) == {1}

    model = build_model(name, num_classes=7, in_channels=1).eval()
    assert next(m for m in model.modules() if isinstance(m, nn.Conv2d)).in_channels == 1
    with torch.no_grad():
        x = torch.randn(1, 1, input_size, input_size)
        assert model(x).shape == (1, 7)


@pytest.mark.parametrize("name", list(NETWORKS))
def test_non_overlapping_pooling_keeps_the_output_size(name):
    size = {"alexnet": 227, "alexnet-owt": 224}.get(name, 32)
    model = build_model(name, pooling="non-overlapping").eval()
    with torch.no_grad():
        out = model(torch.randn(1, 3, size, size))
    assert out.shape == (1, 1000 if name in ("alexnet", "alexnet-owt") else 10)


def test_unknown_names_and_options_list_the_valid_ones():
    with pytest.raises(ValueError, match="unknown network 'vgg'; valid: alexnet, alexnet-owt"):
        build_model("vgg")
    with pytest.raises(ValueError, match=r"unknown option.*bogus.*valid: num_classes"):
        build_model("alexnet", bogus=1)
    with pytest.raises(
        ValueError, match='activation must be one of "relu", "tanh", "sigmoid"; got "gelu"'
    ):
        build_model("alexnet", activation="gelu")
    with pytest.raises(ValueError, match='pooling must be one of "overlapping", "non-overlapping"'):
        build_model("alexnet", pooling="avg")
    with pytest.raises(ValueError, match='init must be one of "paper", "kaiming", "torch"'):
        build_model("alexnet", init="xavier")
    with pytest.raises(ValueError, match=r"dropout must be < 1.0, got 1.5"):
        build_model("alexnet", dropout=1.5)
    assert "widths" in model_options("alexnet-small")


def test_dropout_is_active_in_training_only():
    torch.manual_seed(0)
    model = build_model("alexnet-small", input_size=32)
    x = torch.randn(4, 3, 32, 32)
    model.train()
    assert not torch.equal(model(x), model(x))
    model.eval()
    with torch.no_grad():
        assert torch.equal(model(x), model(x))


def _fc_inputs(model: nn.Module, x: torch.Tensor) -> list[torch.Tensor]:
    """What fc6, fc7 and fc8 receive in one forward pass."""
    seen: list[torch.Tensor] = []
    linears = [m for m in model.classifier if isinstance(m, nn.Linear)]
    hooks = [m.register_forward_pre_hook(lambda _m, a: seen.append(a[0].clone())) for m in linears]
    model(x)
    for h in hooks:
        h.remove()
    return seen


@pytest.mark.parametrize(
    ("name", "placement", "dropped"),
    [("alexnet-small", "paper", (False, True, True)), ("alexnet-small", "torchvision", (True, True, False)),
     ("alexnet", "paper", (False, True, True)), ("alexnet-owt", "torchvision", (True, True, False))],
)  # fmt: skip
def test_dropout_acts_where_its_placement_says(name, placement, dropped):
    """Section 4.2's "dropout in the first two fully-connected layers" zeroes the outputs of fc6
    and fc7, so fc7 and fc8 see dropped inputs and fc6 sees pool5 whole; torchvision's order
    drops what fc6 and fc7 receive instead. At a dropout rate of 0.99, a dropped input is
    nearly all zeros; an input not dropped has the ReLU's zeros only, and fc6's is exactly
    what evaluation mode gives it."""
    size = {"alexnet": 227, "alexnet-owt": 224}.get(name, 32)
    options = {"input_size": size} if name == "alexnet-small" else {}
    model = build_model(name, dropout_placement=placement, dropout=0.99, **options)
    assert model.classifier[3].__class__ is nn.Dropout  # fc6's outputs: slot 3 in both orders
    torch.manual_seed(0)
    x = torch.randn(2, 3, size, size)
    with torch.no_grad():
        fc6_evaluated = _fc_inputs(model.eval(), x)[0]
        trained = _fc_inputs(model.train(), x)
    zeroed = [(t == 0).float().mean().item() for t in trained]
    assert [z > 0.95 for z in zeroed] == list(dropped), zeroed
    assert torch.equal(trained[0], fc6_evaluated) == (not dropped[0])


def test_either_dropout_placement_loads_the_others_weights():
    """Dropout has no parameters and the fc layers keep torchvision's indices, so weights move
    between placements unchanged (old runs' weights, torchvision's, bare .pth files)."""
    paper = build_model("alexnet-small", dropout_placement="paper")
    old = build_model("alexnet-small", dropout_placement="torchvision")
    assert list(paper.state_dict()) == list(old.state_dict())
    old.load_state_dict(paper.state_dict())
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        assert torch.equal(paper.eval()(x), old.eval()(x))
    assert build_model("alexnet-owt").classifier[0].__class__ is nn.Dropout  # torchvision's


@pytest.mark.parametrize("name", list(NETWORKS))
def test_every_registered_network_meets_the_commands_contract(name):
    """--freeze-features needs `features`, fine-tuning replaces the last nn.Linear: stated by
    models.contract_problems, met by every network (built on the meta device: no memory)."""
    from alexnet.models import contract_problems
    from alexnet.models.memory import on_meta

    model = on_meta(name, {"num_classes": 7})
    assert contract_problems(model, 7) == []
    broken = nn.Sequential(nn.Linear(3, 7), nn.Linear(7, 2))
    assert len(contract_problems(broken, 7)) == 2
