"""``alexnet lrn-divisor``: LRN's divisor measured at every LRN layer, under both conventions."""

from __future__ import annotations

import json
import subprocess

import numpy as np
import pytest
import torch
from PIL import Image

from alexnet.inference.lrn_divisor import divisors, initialised, measure, open_network
from alexnet.ops.lrn import LocalResponseNorm

from .conftest import ALEXNET, cli_env


@pytest.fixture(scope="module")
def photos(tmp_path_factory):
    """Four 300x260 images with a photograph's range of values: smooth colour fields and edges."""
    root = tmp_path_factory.mktemp("photos")
    rng = np.random.default_rng(0)
    paths = []
    for i in range(4):
        small = rng.integers(0, 256, (8, 9, 3), dtype=np.uint8)
        image = Image.fromarray(small).resize((300, 260), Image.Resampling.BILINEAR)
        paths.append(root / f"{i}.png")
        image.save(paths[-1])
    return paths


@pytest.mark.parametrize("formula", ["torch", "paper"])
def test_the_divisor_is_what_lrn_divides_by(formula):
    """a / d is the layer's own output, and torch.nn's for the alpha/n convention."""
    torch.manual_seed(0)
    a = torch.randn(2, 9, 5, 4) * 30
    module = LocalResponseNorm(5, 1e-4, 0.75, 2.0, formula=formula, relu=True)
    d = divisors(module, a, formula)
    expected = module(a.clone()).double()
    assert torch.allclose(a.double().relu() / d, expected, rtol=1e-4, atol=1e-6)
    if formula == "torch":
        reference = torch.nn.functional.local_response_norm(a.relu(), 5, 1e-4, 0.75, 2.0)
        assert torch.allclose(a.relu().double() / d, reference.double(), rtol=1e-4, atol=1e-6)


def test_unit_scale_leaves_conv1_a_constant_division_and_the_papers_scale_does_not(photos):
    """At initialisation, at unit scale, conv1's divisor is 2^0.75 everywhere to four places;
    fed the paper's 0-255 values it spreads above it."""
    unit, _ = measure(initialised("alexnet", "unit"), photos)
    paper, _ = measure(initialised("alexnet", "paper"), photos)
    assert len(unit) == len(paper) == 2  # after conv1 and conv2
    constant = 2**0.75
    assert unit[0].percentiles["paper"] == pytest.approx([constant] * 9, abs=1e-3)
    low, *_, high = paper[0].percentiles["paper"]
    assert low == pytest.approx(constant, abs=1e-4) and high > constant + 0.02
    # alpha/n divides the same sum by 5: closer to the constant everywhere
    assert paper[0].percentiles["torch"][-1] - constant < (high - constant) / 2
    assert unit[0].channels == 96 and paper[0].used == "paper"


@pytest.mark.slow  # over 20 s: make test-slow keeps make test within 10 minutes
def test_the_command_prints_both_conventions_and_names_bad_input(photos, tmp_path):
    env = cli_env(tmp_path / "cache")
    bad = tmp_path / "bad.jpg"
    bad.write_bytes(b"not an image")
    args = ["lrn-divisor", "alexnet-small", *map(str, photos[:2]), str(bad), "--json"]
    proc = subprocess.run([*ALEXNET, *args], env=env, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 1, proc.stderr  # the figures leave an image out: as predict's
    out = json.loads(proc.stdout)
    assert "alexnet-small at initialisation (seed 0): 2 image(s)" in out["network"]
    assert [set(row["percentiles"]) for row in out["layers"]] == [{"paper", "torch"}] * 2
    assert "skipped" in proc.stderr and "bad.jpg" in proc.stderr
    for args, message in (
        (["lrn-divisor", "alexnet-owt", str(photos[0])], "has no LRN layer"),
        (["lrn-divisor", str(tmp_path / "none.pt"), str(photos[0])], "none.pt"),
        (["lrn-divisor", "alexnet", str(bad)], "no image could be read"),
        (["lrn-divisor", str(tmp_path), str(photos[0]), "--seed", "3"], "--seed applies to a "),
        (["lrn-divisor", "bogusnet", str(photos[0])], "(alexnet, alexnet-owt, alexnet-small"),
    ):
        proc = subprocess.run(
            [*ALEXNET, *args], env=env, capture_output=True, text=True, timeout=120
        )
        assert proc.returncode == 2 and message in proc.stderr, proc.stderr
        assert len(proc.stderr.strip().splitlines()) == 1


AT_INIT = r"applies to a network at initialisation \(alexnet, alexnet-owt, .*convnet4\); "
UNKNOWN = r"neither a run, checkpoint or weights file nor a network name \(alexnet, .*convnet4\)"


@pytest.mark.parametrize(
    ("name", "scale", "seed", "message"),
    [
        ("{run}", "unit", None, rf"^--scale {AT_INIT}\S+ is taken as a trained network"),
        ("{run}", None, 3, rf"^--seed {AT_INIT}\S+ is taken as a trained network"),
        ("{run}", None, 0, rf"^--seed {AT_INIT}"),  # 0 given is given, too
        ("bogusnet", None, None, rf"^bogusnet: {UNKNOWN} or published weights \(torchvision\)$"),
        ("bogusnet", None, 3, rf"^bogusnet: {UNKNOWN}"),  # not "taken as a trained network"
        ("{run}/none.pt", None, None, rf"none\.pt: {UNKNOWN}"),
        ("{run}/empty", None, None, r"a folder without best\.pt or last\.pt"),  # as it was
    ],
    ids=["scale", "seed", "seed-0", "unknown", "unknown-and-seed", "missing-file", "empty-folder"],
)
def test_options_for_a_network_at_initialisation_and_unknown_names_are_refused(
    tmp_path, monkeypatch, name, scale, seed, message
):
    """--scale and --seed with a trained network, and a name that is neither a file nor a
    network (which named only a missing checkpoint), are one line naming what applies."""
    monkeypatch.chdir(tmp_path)  # bogusnet: no such file in the current folder
    (tmp_path / "empty").mkdir()
    with pytest.raises((ValueError, OSError), match=message):  # one line, exit status 2
        open_network(name.format(run=tmp_path), scale, seed)


def test_the_sample_is_bounded_and_uniform_with_exact_ends():
    from alexnet.inference.lrn_divisor import Sample

    sample = Sample(20_000, seed=1)
    values = np.random.default_rng(2).exponential(size=(50, 10_000))
    for row in values:
        sample.add(row)
    assert sample.values.size == 20_000 and sample.seen == values.size
    found = sample.percentiles((0, 5, 50, 95, 100))
    exact = np.percentile(values, (0, 5, 50, 95, 100))
    assert found[0] == exact[0] and found[-1] == exact[-1]
    assert found[1:-1] == pytest.approx(exact[1:-1], rel=0.03)
