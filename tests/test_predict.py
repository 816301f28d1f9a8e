"""``alexnet predict`` and published weights: names and probabilities for files of any kind,
one line for each file that fails, and torchvision's weights used exactly as torchvision
preprocesses for them."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from alexnet.inference.crops import centre
from alexnet.inference.eval_checkpoints import evaluate_checkpoints
from alexnet.inference.predict import _Stored, predict_files, read_image
from alexnet.inference.trained import load_trained
from alexnet.inference.views import batch_maker
from alexnet.models.weights import PUBLISHED, imagenet_classes
from alexnet.training.train import fit

from .conftest import SHARED_DATA, tiny_recipe
from .test_train import run_cli

SAMPLE = SHARED_DATA / "imagenet-sample"
needs_sample = pytest.mark.skipif(
    not SAMPLE.is_dir(), reason=f"{SAMPLE} (real ImageNet JPEGs) is not beside this checkout"
)


@pytest.fixture(scope="module")
def tiny_run(tiny_folder, tmp_path_factory) -> Path:
    run = tmp_path_factory.mktemp("predict") / "run"
    fit(tiny_recipe(tiny_folder, epochs=1), run, progress=False)
    return run


@pytest.fixture()
def odd_files(tmp_path) -> list[Path]:
    """A wide RGB PNG, a grey JPEG, a CMYK JPEG, a palette GIF, a 16-bit PNG, an RGB WebP;
    then a missing file, a corrupt one and an empty one."""
    rng = np.random.default_rng(0)
    rgb = rng.integers(0, 256, (41, 97, 3), dtype=np.uint8)
    names = ("wide.png", "grey.jpg", "cmyk.jpg", "palette.gif", "deep.png", "colour.webp")
    files = [tmp_path / n for n in names]
    Image.fromarray(rgb).save(files[0])
    Image.fromarray(rgb[..., 0]).save(files[1])
    Image.fromarray(rgb).convert("CMYK").save(files[2])
    Image.fromarray(rgb).convert("P").save(files[3])
    Image.fromarray(rgb[..., 0].astype(np.uint16) * 257).save(files[4])
    Image.fromarray(rgb).save(files[5])
    (tmp_path / "broken.jpg").write_bytes(b"\xff\xd8 not really a jpeg")
    (tmp_path / "empty.png").write_bytes(b"")
    return [*files, tmp_path / "missing.png", tmp_path / "broken.jpg", tmp_path / "empty.png"]


def test_predict_answers_every_readable_file_and_names_the_others(tiny_run, odd_files, cache):
    result = run_cli(["predict", str(tiny_run), *map(str, odd_files), "--top", "2", "--json"],
                     cache)  # fmt: skip
    assert result.returncode == 1, result.stderr  # some files failed
    answers = json.loads(result.stdout)
    assert [a["image"] for a in answers] == list(map(str, odd_files))
    classes = load_trained(tiny_run).classes
    for a in answers[:6]:
        assert a["error"] is None and len(a["predictions"]) == 2
        assert all(p["class"] in classes for p in a["predictions"])
        probs = [p["probability"] for p in a["predictions"]]
        assert probs == sorted(probs, reverse=True) and 0 < sum(probs) <= 1 + 1e-6
    for a, why in zip(answers[6:], ("cannot read", "not an image", "empty file"), strict=True):
        assert a["predictions"] == [] and why in a["error"]
        assert f"{a['image']}: {why}" in result.stderr
    text = run_cli(["predict", str(tiny_run), str(odd_files[0])], cache)
    assert text.returncode == 0 and str(odd_files[0]) in text.stdout and "%" in text.stdout


def test_probabilities_are_the_networks_softmax_on_the_trained_preprocessing(tiny_run, odd_files):
    net = load_trained(tiny_run)
    answer = predict_files(net, odd_files[:1], top=3, crops=1)[0]  # float32 by default
    assert sum(p for _, _, p in answer.top) == pytest.approx(1.0, abs=1e-5)
    d = net.recipe.data
    image = torch.from_numpy(np.asarray(Image.open(odd_files[0]))).permute(2, 0, 1)
    from torchvision.transforms.v2 import functional as TF

    image = TF.center_crop(TF.resize(image, d.image_size, antialias=True), d.image_size)
    x = (image.float() / 255 - torch.tensor(d.mean)[:, None, None]) / torch.tensor(d.std)[
        :, None, None
    ]
    with torch.no_grad():
        probs = net.model.float()(x[None]).softmax(1)[0]
    by_hand = {net.classes[i]: float(p) for i, p in enumerate(probs)}
    for cls, _name, p in answer.top:
        assert p == pytest.approx(by_hand[cls], abs=1e-5)


def test_crops_and_top_are_checked(tiny_run, odd_files):
    net = load_trained(tiny_run)
    with pytest.raises(ValueError, match=r"--crops 10: .* trained in memory on 32x32 images"):
        predict_files(net, odd_files[:1], crops=10)  # in memory at its own size: no ten crops
    with pytest.raises(ValueError, match="--top 0"):
        predict_files(net, odd_files[:1], top=0)


# --------------------------------------------------------------------------------------------
# torchvision's published weights (a file of the same format, made here: no download)


@pytest.fixture()
def torchvision_home(tmp_path, monkeypatch) -> Path:
    """$TORCH_HOME with alexnet-owt-7be5be79.pth where torch.hub keeps it: torchvision's
    AlexNet, randomly initialised, saved as its published file is (a bare state dict)."""
    import torchvision

    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    path = PUBLISHED["torchvision"].local_path()
    path.parent.mkdir(parents=True)
    torch.manual_seed(0)
    torch.save(torchvision.models.alexnet().state_dict(), path)
    return path


def test_torchvision_weights_give_torchvisions_outputs(torchvision_home):
    import torchvision

    net = load_trained("torchvision")
    assert net.recipe.model.arch == "alexnet-owt" and net.input_size == 224
    assert net.stored_size == 256 and len(net.classes) == 1000
    assert (net.classes[0], net.names[0]) == ("n01440764", "tench")
    reference = torchvision.models.alexnet()
    reference.load_state_dict(torch.load(torchvision_home, weights_only=True))
    x = torch.randn(2, 3, 224, 224)
    with torch.no_grad():
        assert torch.equal(net.model(x), reference.eval()(x))
    assert load_trained(torchvision_home).classes == net.classes  # the file by its path


def test_offline_the_message_says_where_to_put_the_file(tmp_path, monkeypatch):
    import dataclasses

    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "empty"))
    closed = dataclasses.replace(PUBLISHED["torchvision"], url="http://127.0.0.1:9/x.pth")
    monkeypatch.setitem(PUBLISHED, "torchvision", closed)
    with pytest.raises(FileNotFoundError) as info:
        load_trained("torchvision")
    message = str(info.value)
    assert "\n" not in message and "cannot download" in message
    assert (
        f"put alexnet-owt-7be5be79.pth in {tmp_path / 'empty' / 'hub' / 'checkpoints'}" in message
    )


@needs_sample
def test_torchvision_preprocessing_equals_torchvisions_transforms(torchvision_home):
    """On real JPEGs of every kind the sample has: landscape, portrait, grey, large."""
    import torchvision
    from torchvision.io import ImageReadMode, decode_image

    net = load_trained("torchvision")
    transform = torchvision.models.AlexNet_Weights.IMAGENET1K_V1.transforms()
    names = ["n01440764_tench.JPEG", "n04370456_sweatshirt.JPEG", "n01443537_goldfish.JPEG"]
    files = [SAMPLE / n for n in names if (SAMPLE / n).is_file()]
    grey = [p for p in sorted(SAMPLE.glob("*.JPEG")) if Image.open(p).mode == "L"][:2]
    large = sorted(SAMPLE.glob("*.JPEG"), key=lambda p: -min(Image.open(p).size))[:2]
    maker = batch_maker(net, _Stored(256, 3))
    for path in files + grey + large:
        ours = maker.view(read_image(net, path)[None], centre(256, 224)[0],
                           torch.device("cpu"), False)[0]  # fmt: skip
        theirs = transform(decode_image(str(path), mode=ImageReadMode.RGB))
        assert ours.shape == theirs.shape == (3, 224, 224)
        torch.testing.assert_close(ours, theirs, atol=2e-5, rtol=0, msg=str(path))


@needs_sample
def test_torchvision_weights_predict_and_eval_real_images(torchvision_home, tmp_path, cache):
    folder = tmp_path / "val"
    folder.mkdir()
    for path in sorted(SAMPLE.glob("*.JPEG"))[::100]:  # ten classes, <wnid>_<name>.JPEG
        shutil.copy(path, folder / path.name)
    net = load_trained("torchvision")
    answers = predict_files(net, sorted(folder.iterdir()), top=5, crops=10)
    wnids, names = imagenet_classes()
    for a in answers:
        assert a.error is None and len(a.top) == 5
        assert all(names[wnids.index(c)] == n for c, n, _ in a.top)
    scores = evaluate_checkpoints([net], folder, split="val", progress=False)
    assert scores["images"] == 10 and not scores["skipped"]


def test_exported_safetensors_predict_as_the_checkpoint_does(tiny_run, odd_files, tmp_path):
    pytest.importorskip("safetensors")
    from alexnet.inference.export import export

    export(load_trained(tiny_run), tmp_path / "tiny.safetensors", check=False)
    shared = predict_files(load_trained(tmp_path / "tiny.safetensors"), odd_files[:3], top=3)
    own = predict_files(load_trained(tiny_run), odd_files[:3], top=3)
    assert [a.top for a in shared] == [a.top for a in own]


def test_a_grey_network_reads_colour_webp_and_defaults_to_the_runs_views(tiny_folder, tmp_path):
    """WebP's decoder cannot make grey images itself; views default to the recipe's (two with
    eval.tta_flip); --max-megapixels moves the limit."""
    run = tmp_path / "grey"
    fit(tiny_recipe(tiny_folder, epochs=1, **{"data.channels": 1, "eval.tta_flip": True}), run,
        progress=False)  # fmt: skip
    net = load_trained(run)
    rgb = np.random.default_rng(1).integers(0, 256, (40, 60, 3), dtype=np.uint8)
    Image.fromarray(rgb).save(tmp_path / "a.webp")
    Image.fromarray(rgb).save(tmp_path / "b.png")
    flipped = predict_files(net, [tmp_path / "a.webp", tmp_path / "b.png"], top=3)
    assert all(a.error is None for a in flipped)
    assert read_image(net, tmp_path / "a.webp").shape == (1, 32, 32)
    single = predict_files(net, [tmp_path / "a.webp"], top=3, crops=1)[0]
    assert flipped[0].top != single.top  # the mirror image was averaged in by default
    small = predict_files(net, [tmp_path / "b.png"], max_megapixels=0.001)[0]
    assert "over the 0.001-megapixel limit" in small.error


def test_eval_defaults_to_the_data_the_run_was_trained_on(tiny_run):
    scores = evaluate_checkpoints([load_trained(tiny_run)], None, progress=False)
    assert scores["images"] == 36 and scores["crops"] == 2  # the cifar10 recipe flips in eval


def test_exported_programs_are_named_as_such(tiny_run, tmp_path):
    (tmp_path / "m.onnx").write_bytes(b"onnx")
    with pytest.raises(ValueError, match="an exported program, for other runtimes; alexnet reads"):
        load_trained(tmp_path / "m.onnx")


def test_only_regular_files_are_read(tiny_run, odd_files, tmp_path, cache):
    """/dev/zero was read without end and a pipe named .jpg hung predict; both are answered
    as not read, and the file after them still is."""
    import os

    pipe = tmp_path / "pipe.jpg"
    os.mkfifo(pipe)
    files = ["/dev/zero", str(pipe), str(tmp_path), str(odd_files[0])]
    result = run_cli(["predict", str(tiny_run), *files, "--json"], cache)  # run_cli times out
    answers = json.loads(result.stdout)
    assert result.returncode == 1, result.stderr
    assert [a["error"] is None for a in answers] == [False, False, False, True]
    assert all("not a regular file" in a["error"] for a in answers[:3])


def test_json_names_a_file_that_is_not_utf8_as_the_terminal_does(tiny_run, odd_files, cache):
    """`predict --json` wrote such a name as a lone surrogate, which strict JSON readers
    refuse; now it is `\\xNN`, as in every other line the commands print."""
    odd = odd_files[0].with_name(os.fsdecode(b"photo-\xff.png"))
    odd_files[0].rename(odd)
    result = run_cli(["predict", str(tiny_run), str(odd), "--json"], cache)
    assert result.returncode == 0, result.stderr
    result.stdout.encode("utf-8")  # strict: no lone surrogates
    assert json.loads(result.stdout)[0]["image"].endswith("photo-\\xff.png")
