"""``alexnet export``: ONNX files that ONNX Runtime runs to PyTorch's outputs with ONNX's own
LRN operator, safetensors that read back bit for bit, torch.export programs that run without
this package, and one-line errors for what a user can fix."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from torch import nn

from alexnet.cli import main
from alexnet.config import load_recipe
from alexnet.inference.export import (
    INSTALL,
    ExportError,
    Probe,
    compare,
    export,
    input_shape,
    input_spread,
    read_safetensors,
)
from alexnet.inference.trained import Trained, load_trained
from alexnet.models import build_model
from alexnet.ops.lrn import LocalResponseNorm, ReLUInLRN, local_response_norm
from alexnet.ops.lrn_export import _onnx_translations, exportable
from alexnet.training.train import fit

from .conftest import ALEXNET, cli_env, tiny_recipe

PAPER_ONNX_ALPHA = 1e-4 * 5  # the paper's alpha multiplies the sum; ONNX's, the mean


def trained(arch: str, size: int, channels: int = 3, **options) -> Trained:
    """A network with random weights, described as a trained one."""
    if arch in ("alexnet-small", "convnet4"):
        options["input_size"] = size
    recipe = tiny_recipe(Path("/nowhere"), **{
        "model.arch": arch, "model.options": {"in_channels": channels, **options},
        "data.image_size": size, "data.channels": channels, "data.mean": [0.5] * channels,
        "data.std": [0.25] * channels})  # fmt: skip
    torch.manual_seed(0)
    model = build_model(arch, **recipe.model.options).eval()
    count = model.classifier[-1].out_features
    names = [f"class {i}" for i in range(count)]
    return Trained(Path("random.pt"), model, recipe, names, names, None, None)


def onnx_nodes(path: Path) -> tuple[list, dict]:
    """The graph's nodes, and which node makes each value."""
    onnx = pytest.importorskip("onnx")
    graph = onnx.load(str(path)).graph
    return list(graph.node), {out: node for node in graph.node for out in node.output}


def attributes(node) -> dict:
    import onnx

    return {a.name: onnx.helper.get_attribute_value(a) for a in node.attribute}


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory, tiny_folder) -> Path:
    """A tiny alexnet-small (with LRN) trained one epoch with the paper's mean image."""
    root = tmp_path_factory.mktemp("export")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("ALEXNET_CACHE", str(root / "cache"))
        recipe = tiny_recipe(tiny_folder, **{"epochs": 1, "data.normalise": "mean-image"})
        fit(recipe, root / "run", progress=False)
    return root / "run"


# --------------------------------------------------------------------------------------------
# ONNX


@pytest.mark.parametrize(("formula", "size", "relu"), [("paper", 5, True), ("torch", 5, False),
                                                       ("paper", 4, True)])  # fmt: skip
def test_onnx_lrn_is_onnx_lrn_with_the_same_values(tmp_path, formula, size, relu):
    """Large activations, where alpha matters: alpha * sum of squares is about 1 or more."""
    ort = pytest.importorskip("onnxruntime")
    pytest.importorskip("onnxscript")
    net = nn.Sequential(nn.Conv2d(3, 12, 3), ReLUInLRN() if relu else nn.Identity(),
                        LocalResponseNorm(size, 1e-4, 0.75, 2.0, formula=formula, relu=relu))  # fmt: skip
    net.eval()
    out = tmp_path / "lrn.onnx"
    with exportable(net, onnx=True) as model:
        program = torch.onnx.export(model, (torch.randn(2, 3, 9, 9),), dynamo=True, verbose=False,
                                    dynamic_shapes=({0: torch.export.Dim("batch", min=1)},),
                                    custom_translation_table=_onnx_translations())  # fmt: skip
    program.save(str(out))
    assert isinstance(net[2], LocalResponseNorm)  # put back
    nodes, made_by = onnx_nodes(out)
    lrns = [n for n in nodes if n.op_type == "LRN"]
    session = ort.InferenceSession(str(out), providers=["CPUExecutionProvider"])
    for batch in (1, 7):
        x = torch.randn(batch, 3, 9, 9) * 60
        with torch.no_grad():
            conv = net[0](x)
            expected = local_response_norm(conv, size, 1e-4, 0.75, 2.0, formula, relu=relu)
            assert (expected - (torch.relu(conv) if relu else conv) / 2**0.75).abs().max() > 0.1
        got = session.run(None, {session.get_inputs()[0].name: x.numpy()})[0]
        assert torch.allclose(torch.from_numpy(got), expected, rtol=1e-4, atol=1e-5)
    if size % 2 == 0:  # ONNX Runtime takes odd sizes only: plain arithmetic
        assert lrns == []
        return
    (lrn,) = lrns
    alpha = 1e-4 * size if formula == "paper" else 1e-4
    assert attributes(lrn) == pytest.approx({"size": size, "alpha": alpha, "beta": 0.75,
                                             "bias": 2.0}, rel=1e-6)  # fmt: skip
    assert (made_by[lrn.input[0]].op_type == "Relu") == relu


@pytest.mark.parametrize(("arch", "size", "channels", "lrns"), [
    ("alexnet", 227, 3, 2), ("alexnet-small", 32, 3, 2), ("alexnet-small", 28, 1, 2),
    ("alexnet-owt", 224, 3, 0), ("convnet4", 32, 3, 2)])  # fmt: skip
def test_onnx_runs_in_onnxruntime_as_in_pytorch(tmp_path, arch, size, channels, lrns):
    pytest.importorskip("onnxruntime")
    pytest.importorskip("onnxscript")
    net = trained(arch, size, channels, **({"lrn": True} if arch == "convnet4" else {}))
    result = export(net, tmp_path / "net.onnx", batch=7)
    assert result.check.batches == (1, 7)
    assert result.check.ok, result.check.line()
    assert result.check.relative < 1e-4
    nodes, made_by = onnx_nodes(tmp_path / "net.onnx")
    found = [n for n in nodes if n.op_type == "LRN"]
    assert len(found) == lrns
    # The networks' LRN is the paper's, its ReLU fused (convnet4's LRN follows a pool).
    for node in found:
        assert attributes(node)["alpha"] == pytest.approx(PAPER_ONNX_ALPHA, rel=1e-6)
        assert attributes(node)["size"] == 5
        assert made_by[node.input[0]].op_type == ("MaxPool" if arch == "convnet4" else "Relu")


def test_onnx_of_a_trained_run_has_its_preprocessing_and_a_dynamic_batch(run_dir, tmp_path):
    onnx = pytest.importorskip("onnx")
    pytest.importorskip("onnxruntime")
    net = load_trained(run_dir)
    result = export(net, tmp_path / "net.onnx")
    assert result.check.ok
    model = onnx.load(str(tmp_path / "net.onnx"))
    (image,) = model.graph.input
    assert image.name == "image"
    dims = image.type.tensor_type.shape.dim
    assert dims[0].dim_param and [d.dim_value for d in dims[1:]] == [3, 32, 32]
    meta = {p.key: p.value for p in model.metadata_props}
    assert json.loads(meta["classes"]) == net.classes == ["checks", "columns", "stripes"]
    assert meta["input_size"] == "32" and meta["channels"] == "3"
    assert meta["normalise"] == "mean-image" and "mean image" in meta["mean"]
    assert json.loads(meta["std"]) == pytest.approx(net.recipe.data.std)
    assert json.loads(meta["recipe"]) == net.recipe.to_dict()


# --------------------------------------------------------------------------------------------
# safetensors and pt2


def test_safetensors_round_trip(run_dir, tmp_path):
    pytest.importorskip("safetensors")
    net = load_trained(run_dir)
    out = tmp_path / "net.safetensors"
    assert export(net, out).check.max_diff == 0
    state = read_safetensors(out)
    weights = net.model.state_dict()
    assert state["model"].keys() == weights.keys()
    assert all(torch.equal(state["model"][k], v) for k, v in weights.items())
    assert state["recipe"] == net.recipe.to_dict()
    assert state["data"] == {"classes": net.classes, "names": net.names,
                             "stored_size": net.stored_size}  # fmt: skip
    from alexnet.data.stats import PixelStats

    assert net.stats is not None and PixelStats.from_dict(state["preprocessing"]).same_as(net.stats)
    fresh = build_model(net.recipe.model.arch, **net.recipe.model.options).eval()
    fresh.load_state_dict(state["model"])
    x = torch.randn(3, *input_shape(net))
    with torch.no_grad():
        assert torch.equal(fresh(x), net.model(x))
        assert torch.equal(load_trained(out).model(x), net.model(x))


def test_pt2_round_trip_runs_without_alexnet(tmp_path):
    net = trained("alexnet-small", 32, 3)
    out = tmp_path / "net.pt2"
    result = export(net, out)
    assert result.check.batches == (1, 7) and result.check.relative < 1e-5
    x = torch.randn(5, 3, 32, 32) * 30  # large: the LRN's alpha matters
    with torch.no_grad():
        torch.save((x, net.model(x)), tmp_path / "io.pt")
    code = ("import sys, torch; sys.modules['alexnet'] = None; "
            "program = torch.export.load(sys.argv[1]).module(); x, y = torch.load(sys.argv[2]); "
            "print(float((program(x) - y).abs().max() / y.abs().max()))")  # fmt: skip
    done = subprocess.run([sys.executable, "-c", code, str(out), str(tmp_path / "io.pt")],
                          capture_output=True, text=True, timeout=120)  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert float(done.stdout) < 1e-5


# --------------------------------------------------------------------------------------------
# The command


def test_cli_exports_a_run_folder(run_dir, tmp_path, cache):
    pytest.importorskip("onnxruntime")
    out = tmp_path / "tiny.onnx"
    done = subprocess.run([*ALEXNET, "export", str(run_dir), str(out), "--format", "onnx"],
                          capture_output=True, text=True, env=cli_env(cache), timeout=300)  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert out.is_file()
    wrote, check = done.stdout.splitlines()
    assert wrote.startswith(f"wrote {out} (onnx,") and "(batch, 3, 32, 32)" in wrote
    assert "onnxruntime" in check and "vs PyTorch, batch 1 and 7: max |difference|" in check
    assert float(check.split("max |difference| ")[1].split()[0]) < 1e-4


@pytest.mark.parametrize(("args", "says"), [
    (["x.tflite"], "give --format (onnx, safetensors, pt2)"),
    (["x.onnx", "--format", "tflite"], "unknown format 'tflite'"),
    (["m.onnx", "--format", "safetensors"],
     "the name says onnx but --format is safetensors; name the file m.safetensors"),
    (["m.safetensors.onnx", "--format", "safetensors"], "name the file m.safetensors\n"),
    (["missing/x.onnx"], "missing: no such folder"),
    (["ex dir/x.onnx"], "ex dir: no such folder; create it first (mkdir -p 'ex dir')"),
    (["."], "a folder; give the name of the file"),
    (["x.onnx", "--opset", "9"], "--opset 9: torch's ONNX exporter writes opsets 18 to"),
    (["x.pt2", "--opset", "18"], "--opset 18: applies to --format onnx only"),
])  # fmt: skip
def test_mistakes_are_one_line(run_dir, tmp_path, monkeypatch, capsys, args, says):
    pytest.importorskip("onnx")
    monkeypatch.chdir(tmp_path)
    with pytest.raises(SystemExit) as stop:
        main(["export", str(run_dir), *args])
    assert stop.value.code == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("alexnet export: error: ") and says in err
    assert list(tmp_path.iterdir()) == []  # nothing written


def test_an_existing_file_is_replaced_only_when_asked(run_dir, tmp_path, capsys):
    """``export RUN runs/other/best.pt --format safetensors`` replaced another run's checkpoint
    without a word; and the checkpoint being exported cannot be written over, even asked."""
    victim = tmp_path / "best.pt"
    victim.write_bytes(b"another run's checkpoint")
    for args, says in (([str(run_dir), str(victim), "--format", "safetensors"],
                        "best.pt: already exists; give --overwrite"),
                       ([str(run_dir / "best.pt"), str(run_dir / "best.pt"), "--format",
                         "safetensors", "--overwrite"], "the checkpoint being exported"),
                       ([str(run_dir), str(run_dir / "last.pt"), "--format", "pt2",
                         "--overwrite"], "last.pt: a checkpoint of the run being exported")):  # fmt: skip
        with pytest.raises(SystemExit) as stop:
            main(["export", *args])
        err = capsys.readouterr().err
        assert stop.value.code == 2 and err.count("\n") == 1 and says in err, err
    assert victim.read_bytes() == b"another run's checkpoint"
    main(["export", str(run_dir), str(victim), "--format", "safetensors", "--overwrite"])
    assert victim.read_bytes() != b"another run's checkpoint"


STOPPED_WHILE_WRITING = """
import os, signal, sys
import alexnet.inference.export as export
real = export.write_safetensors

def stopped_midway(tmp, *args, **kwargs):
    real(tmp, *args, **kwargs)
    os.kill(os.getpid(), signal.SIGTERM)  # the file half done, as a `kill` arriving then

export.write_safetensors = stopped_midway
from alexnet.cli import main
main(["export", *sys.argv[1:]])
"""


def test_sigterm_while_writing_says_so_and_leaves_nothing(run_dir, tmp_path, cache):
    """``kill`` during export ended it at once, silently, with status 143; now it unwinds as
    Ctrl-C does: one line, and no file, partial or final, is left."""
    out = tmp_path / "out" / "m.safetensors"
    out.parent.mkdir()
    done = subprocess.run([sys.executable, "-c", STOPPED_WHILE_WRITING, str(run_dir), str(out)],
                          capture_output=True, text=True, env=cli_env(cache), timeout=300)  # fmt: skip
    assert done.returncode == 143, done.stderr
    assert done.stderr == "alexnet export: stopped by signal 15\n"
    assert list(out.parent.iterdir()) == []


def test_a_missing_package_names_the_extra(run_dir, tmp_path, monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "safetensors", None)  # as if not installed
    with pytest.raises(SystemExit):
        main(["export", str(run_dir), str(tmp_path / "x.safetensors")])
    assert capsys.readouterr().err == (f"alexnet export: error: safetensors is not installed: "
                                       f"{INSTALL}\n")  # fmt: skip
    with pytest.raises(ExportError, match="pip install 'alexnet\\[export\\]'"):
        read_safetensors(tmp_path / "x.safetensors")


def test_safetensors_from_elsewhere_is_refused_in_one_line(tmp_path):
    st = pytest.importorskip("safetensors.torch")
    st.save_file({"w": torch.zeros(2)}, str(tmp_path / "other.safetensors"))
    with pytest.raises(ExportError, match=r"other\.safetensors: safetensors without alexnet's"):
        read_safetensors(tmp_path / "other.safetensors")
    (tmp_path / "bad.safetensors").write_bytes(b"\x10\x00\x00\x00\x00\x00\x00\x00{not json}")
    with pytest.raises(ExportError, match=r"bad\.safetensors: not a readable safetensors file"):
        read_safetensors(tmp_path / "bad.safetensors")


def test_the_check_feeds_inputs_at_the_networks_own_scale():
    """A network fed the paper's 0-255 values is checked at that scale, where LRN normalises:
    an export computing LRN with the other alpha passes at unit scale and fails at 64."""
    torch.manual_seed(0)
    paper = build_model("alexnet").eval()
    other = build_model("alexnet", lrn_formula="torch").eval()
    other.load_state_dict(paper.state_dict())
    shape = (3, 227, 227)
    assert compare(other, paper, Probe(shape, 1.0), (1,), "alpha/n").ok
    assert not compare(other, paper, Probe(shape, 64.0), (1,), "alpha/n").ok
    recipe = load_recipe("imagenet-paper")
    net = Trained(Path("x"), paper, recipe, [], [], None, 256)
    assert input_spread(net) == pytest.approx(0.25 * 255)


@pytest.mark.parametrize(
    ("key", "value", "said"),
    [
        ("recipe", "{not json", "its 'recipe' metadata is not valid JSON"),
        ("classes", "5", "its 'classes' metadata holds 5, not what alexnet writes there"),
        ("stored_size", "true", "its 'stored_size' metadata holds true, not"),
        ("format_version", "one", "its format_version metadata 'one' is not a whole number"),
        (
            "preprocessing",
            '{"images": -3}',
            """its 'preprocessing' metadata holds {"images": -3}""",
        ),
        ("preprocessing", '{"images": true}', "its 'preprocessing' metadata holds {\"images\": t"),
        ("preprocessing", '{"images": 9, "mean_image": 1}', "its 'preprocessing' metadata holds"),
    ],
)
def test_bad_metadata_in_an_alexnet_safetensors_file_is_named(run_dir, tmp_path, key, value, said,
                                                             capsys):  # fmt: skip
    """A file whose metadata was edited or damaged: one line naming the file and the key, for
    every command that reads one (predict here), not a bare JSON error."""
    st = pytest.importorskip("safetensors.torch")
    meta, tensors = exported_parts(run_dir, tmp_path)
    bad = tmp_path / "bad.safetensors"
    st.save_file(tensors, str(bad), metadata={**meta, key: value})
    with pytest.raises(ExportError, match=re.escape(f"{bad}: {said}")):
        read_safetensors(bad)
    with pytest.raises(SystemExit) as stop:
        main(["predict", str(bad), str(tmp_path / "x.png")])
    err = capsys.readouterr().err
    assert stop.value.code == 2 and said in err and len(err.strip().splitlines()) == 1


def exported_parts(run_dir: Path, tmp_path: Path) -> tuple[dict, dict]:
    """The metadata and tensors of ``run_dir``'s network exported as safetensors, to edit."""
    good = tmp_path / "good.safetensors"
    export(load_trained(run_dir), good)
    with safetensors_open(good) as f:
        return f.metadata(), {k: f.get_tensor(k) for k in f.keys()}  # noqa: SIM118


def safetensors_open(path: Path):
    from safetensors import safe_open

    return safe_open(str(path), framework="pt")


def _with_recipe(meta: dict, section: str, key: str, value) -> dict:
    recipe = json.loads(meta["recipe"])
    recipe[section][key] = value
    return {**meta, "recipe": json.dumps(recipe)}


def _names(meta: dict, first: str, second: str | None = None) -> dict:
    classes = json.loads(meta["classes"])
    classes[0] = first
    classes[1] = classes[1] if second is None else second
    return {**meta, "classes": json.dumps(classes), "names": json.dumps(classes)}


@pytest.mark.parametrize(
    ("edit", "said"),
    [
        (lambda m: _with_recipe(m, "data", "std", []), "are not one value per channel (3)"),
        (
            lambda m: _with_recipe(
                _with_recipe(m, "data", "normalise", "channel"), "data", "mean", []
            ),
            "are not one value per channel (3)",
        ),
        (lambda m: _with_recipe(m, "data", "image_size", 0), "data.image_size is 0"),
        (lambda m: _with_recipe(m, "data", "channels", 1), "data.channels = 1 for a first layer"),
        (lambda m: {**m, "stored_size": "0"}, "stored image size 0 is not between"),
        (lambda m: {**m, "stored_size": "100000000"}, "stored image size 100000000"),
        (lambda m: _names(m, "cat", "cat"), "its class list names a class twice"),
        (lambda m: _names(m, "\x1b[2Jcat"), "holds control characters"),
        (lambda m: _names(m, "c\nat"), "holds control characters"),
    ],
)
def test_a_safetensors_file_that_cannot_be_fed_is_refused_in_one_line(
    run_dir, tmp_path, capsys, edit, said
):
    """Metadata that reads as valid JSON but describes a network that cannot be fed (no mean
    per channel, no input size) crashed predict and eval with a shape error; names with
    escape sequences were printed raw to the terminal."""
    st = pytest.importorskip("safetensors.torch")
    meta, tensors = exported_parts(run_dir, tmp_path)
    bad = tmp_path / "bad.safetensors"
    st.save_file(tensors, str(bad), metadata=edit(meta))
    with pytest.raises(SystemExit) as stop:
        main(["predict", str(bad), str(tmp_path / "x.png")])
    err = capsys.readouterr().err
    assert stop.value.code == 2 and said in err and len(err.strip().splitlines()) == 1, err
    assert "\x1b" not in err


def test_weights_of_whole_numbers_are_refused(run_dir, tmp_path):
    st = pytest.importorskip("safetensors.torch")
    meta, tensors = exported_parts(run_dir, tmp_path)
    first = next(k for k in tensors if k.endswith("weight"))
    tensors[first] = tensors[first].to(torch.int32)
    st.save_file(tensors, str(tmp_path / "int.safetensors"), metadata=meta)
    with pytest.raises(ValueError, match=f"its weight {re.escape(first)} holds whole numbers"):
        load_trained(tmp_path / "int.safetensors")


def test_an_ensemble_of_one_network_with_itself_is_refused(run_dir, tmp_path, capsys):
    """`eval RUN RUN` and `eval RUN RUN.safetensors` averaged a network with itself."""
    pytest.importorskip("safetensors")
    copy = tmp_path / "same.safetensors"
    export(load_trained(run_dir), copy)
    for args in ([str(run_dir), str(run_dir)], [str(run_dir), str(copy)]):
        with pytest.raises(SystemExit) as stop:
            main(["eval", *args])
        err = capsys.readouterr().err
        assert stop.value.code == 2 and "holds the same network as" in err, err
