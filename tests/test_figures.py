"""The paper's figures: in every run's report, from ``alexnet figures``, and in TensorBoard;
Figure 3's blocks per tower, Figure 4's neighbours truly the nearest, the confusion matrix
whole."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from alexnet.cli import main
from alexnet.data import ImageSet
from alexnet.inference.figure_data import (
    FILES,
    confusion_matrix,
    features,
    figures_of_checkpoint,
    first_layer,
    looker_for,
    nearest,
    predict,
    spaced,
)
from alexnet.inference.figures import confused_pairs, confusion_figure, curves_figure, kernel_grid
from alexnet.inference.trained import load_trained
from alexnet.models import build_model
from alexnet.training.state import EpochSums
from alexnet.training.train import fit

from .conftest import NATIVE_DIR, tiny_recipe

PNG = b"\x89PNG\r\n\x1a\n"


@pytest.fixture(scope="module")
def run_dir(tiny_folder, tmp_path_factory) -> Path:
    """One tiny run of two epochs, trained once for every test here."""
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("ALEXNET_CACHE", str(tmp_path_factory.mktemp("cache")))
        mp.setenv("ALEXNET_NATIVE_DIR", str(NATIVE_DIR))
        threads = torch.get_num_threads()
        run = tmp_path_factory.mktemp("figures") / "run"
        run.mkdir()
        fit(tiny_recipe(tiny_folder), run, progress=False)
        torch.set_num_threads(threads)
    return run


def tensorboard_images(folder: Path) -> set[str]:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(str(folder), size_guidance={"images": 0})
    events.Reload()
    return set(events.Tags()["images"])


def test_report_has_every_figure_and_tensorboard_too(run_dir):
    report = (run_dir / "report.md").read_text()
    for name in FILES.values():
        assert (run_dir / name).read_bytes()[:8] == PNG
        assert f"]({name})" in report
    assert "Figure 3" in report and "Figure 4, right" in report and "all 120 training" in report
    tags = tensorboard_images(run_dir / "tb")
    assert {f"figures/{name}" for name in FILES} <= tags and "conv1_kernels" in tags


def test_training_top5_error_is_tracked(run_dir):
    metrics = [json.loads(x) for x in (run_dir / "metrics.jsonl").read_text().splitlines()]
    assert all(m["train_top5_err"] == 0.0 for m in metrics)  # three classes: always in the top 5
    assert EpochSums(**{"loss": 1.0, "correct": 2.0, "seen": 3.0, "seconds": 4.0}).correct5 == 0
    old = [{k: v for k, v in m.items() if k != "train_top5_err"} for m in metrics]
    top5 = curves_figure(old).axes[2]
    assert [line.get_label() for line in top5.get_lines()] == ["held-out set"]


@pytest.mark.parametrize(("options", "blocks", "per_block"), [
    ({}, ["tower 1 (GPU 1)", "tower 2 (GPU 2)"], 4), ({"two_towers": False}, ["one tower"], 8),
])  # fmt: skip
def test_figure3_kernels_by_tower_at_a_legible_size(options, blocks, per_block):
    model = build_model("alexnet-small", widths=[8, 8, 16, 16, 8], hidden=32, **options)
    weight, towers = first_layer(model)
    image, layout = kernel_grid(weight, towers)
    assert [b.label for b in layout] == blocks and [b.count for b in layout] == [per_block] * len(
        blocks
    )
    assert all(b.kernel_pixels >= 40 and b.kernel_pixels % 5 == 0 for b in layout)  # 5x5, x10
    assert image.shape[0] == 3 and image.shape[1] >= sum(b.height for b in layout)
    b = layout[-1]
    kernel = image[:, b.top : b.top + b.kernel_pixels, : b.kernel_pixels]
    expected = weight[b.first] / (2 * weight[b.first].abs().max()) + 0.5
    assert torch.allclose(kernel[:, :: b.kernel_pixels // 5, :: b.kernel_pixels // 5], expected)


def test_figure3_of_the_paper_network_and_grey_kernels():
    weight, towers = first_layer(build_model("alexnet"))
    _, layout = kernel_grid(weight, towers)
    assert [b.count for b in layout] == [48, 48] and layout[0].kernel_pixels >= 44  # 11x11
    grey, _ = kernel_grid(torch.randn(6, 1, 5, 5))
    assert torch.equal(grey[0], grey[1]) and torch.equal(grey[1], grey[2])


@pytest.fixture(scope="module")
def look(run_dir):
    return looker_for(load_trained(run_dir))


def tiny_sets(tiny_folder, look) -> tuple[ImageSet, ImageSet]:
    from alexnet.inference.eval_checkpoints import split_images

    return split_images([look.net], tiny_folder, None, training=True)


def test_neighbours_are_the_nearest(tiny_folder, look):
    test, train = tiny_sets(tiny_folder, look)
    queries = torch.cat([f for _, f in features(look, test, torch.tensor([0, 13, 30]))])
    found, dist = nearest(look, queries, train, k=6)
    positions, every = (torch.cat(p) for p in zip(*features(look, train), strict=True))
    brute = torch.cdist(queries.double(), every.double())
    expected = brute.topk(6, dim=1, largest=False)
    assert torch.allclose(dist, expected.values)
    assert torch.allclose(brute.gather(1, found), expected.values)  # the same, ties aside
    chosen = spaced(len(train), 50)
    assert chosen is not None and len(chosen) == 50 and spaced(len(train), 0) is None
    limited = nearest(look, queries, train, chosen, k=6)[0]
    assert set(limited.flatten().tolist()) <= set(chosen.tolist())
    assert torch.equal(positions, torch.arange(len(train)))


def test_confusion_matrix_counts_every_test_image(tiny_folder, look):
    test, _ = tiny_sets(tiny_folder, look)
    pred = predict(look, test)
    matrix = pred.confusion()
    assert int(matrix.sum()) == len(test) == 36
    assert matrix.sum(1).tolist() == [12, 12, 12]  # rows: the true classes
    assert torch.equal(confusion_matrix(torch.tensor([0, 1, 1]), torch.tensor([1, 1, 0]), 2),
                       torch.tensor([[0, 1], [1, 1]]))  # fmt: skip
    many = torch.eye(40, dtype=torch.int64) * 5
    many[3, 7] = 4
    assert confused_pairs(many)[0] == (3, 7, 4)
    assert len(confusion_figure(many, [f"c{i}" for i in range(40)]).axes) == 3  # map, bar, list


def test_cli_writes_the_figures_and_logs_them(run_dir, tiny_folder, tmp_path, capsys):
    main(["figures", str(run_dir), "--data", str(tiny_folder), "--no-progress"])
    printed = capsys.readouterr().out
    for name in FILES.values():
        assert (run_dir / "figures" / name).read_bytes()[:8] == PNG
    assert "among 120 of 120 training images" in printed
    alone = tmp_path / "alone"  # a checkpoint outside its run folder: TensorBoard in OUT/tb
    alone.mkdir()
    (alone / "net.pt").write_bytes((run_dir / "last.pt").read_bytes())
    main(["figures", str(alone / "net.pt"), "--data", str(tiny_folder), "--out",
          str(tmp_path / "out"), "--neighbours-limit", "30", "--no-progress"])  # fmt: skip
    assert "among 30 of 120" in capsys.readouterr().out
    assert {f"figures/{name}" for name in FILES} <= tensorboard_images(tmp_path / "out" / "tb")
    assert not (alone / "figures").exists()


def test_store_networks_figures_from_the_store_and_from_the_folder(tiny_folder, tmp_path, cache,
                                                                    capsys):  # fmt: skip
    from alexnet.data.prepare import Plan, prepare

    prepare(tiny_folder, tmp_path / "store", plan=Plan(size=36), progress=False)
    recipe = tiny_recipe(tmp_path / "store", **{
        "epochs": 1, "data.source": "store", "data.image_size": 32, "data.batch_size": 8,
        "data.normalise": "mean-image", "data.workers": 0})  # fmt: skip
    run = tmp_path / "run"
    run.mkdir()
    fit(recipe, run, progress=False)  # the report of a store network: centre crops
    assert "all 120 training images" in (run / "report.md").read_text()
    assert (run / FILES["neighbours"]).read_bytes()[:8] == PNG
    # The folder lists its corrupt training file too (then skipped when it cannot be read).
    for data, out, listed in ((tmp_path / "store", "a", 120), (tiny_folder, "b", 121)):
        main(["figures", str(run), "--data", str(data), "--out", str(tmp_path / out),
              "--neighbours-limit", "40", "--no-progress"])  # fmt: skip
        assert f"among 40 of {listed} training images" in capsys.readouterr().out
        assert all((tmp_path / out / name).is_file() for name in FILES.values())


@pytest.mark.parametrize(
    ("extra", "said"),
    [
        (["--data", "/no/such/data"], "--data /no/such/data: no such file or folder"),
        (["--out", "FILE"], "a file, not a folder for the figures"),
    ],
)
def test_cli_mistakes_are_one_line(run_dir, tmp_path, capsys, extra, said):
    (tmp_path / "file").write_text("x")
    extra = [str(tmp_path / "file") if e == "FILE" else e for e in extra]
    with pytest.raises(SystemExit) as stop:
        main(["figures", str(run_dir), *extra])
    err = capsys.readouterr().err
    assert stop.value.code == 2 and said in err and len(err.strip().splitlines()) == 1


def test_cli_refuses_an_empty_folder_and_a_corrupt_checkpoint(tmp_path, capsys):
    (tmp_path / "empty").mkdir()
    (tmp_path / "bad.pt").write_bytes(b"not a checkpoint")
    for given, said in ((tmp_path / "empty", "a folder without best.pt or last.pt"),
                        (tmp_path / "bad.pt", "bad.pt: not a checkpoint")):  # fmt: skip
        with pytest.raises(SystemExit) as stop:
            main(["figures", str(given)])
        err = capsys.readouterr().err
        assert stop.value.code == 2 and said in err and len(err.strip().splitlines()) == 1


def test_figures_stopped_midway_leave_none_of_the_set(run_dir, tiny_folder, tmp_path, monkeypatch,
                                                      capsys):  # fmt: skip
    """SIGTERM to figures left three PNGs in --out and a new TensorBoard log in the run's
    tb/. A stop midway (here at the third figure) now leaves neither."""
    from alexnet.inference import figures

    events = set((run_dir / "tb").glob("events.*"))
    made, real_save = [], figures.save

    def stopped_at_the_third(*args, **kwargs):
        made.append(args[1])
        if len(made) == 3:
            raise KeyboardInterrupt  # as a signal arriving then would
        return real_save(*args, **kwargs)

    monkeypatch.setattr(figures, "save", stopped_at_the_third)
    out = tmp_path / "figs"
    with pytest.raises(SystemExit) as stop:
        main(["figures", str(run_dir), "--data", str(tiny_folder), "--out", str(out),
              "--no-progress"])  # fmt: skip
    assert stop.value.code == 130 and "interrupted" in capsys.readouterr().err
    assert len(made) == 3 and not out.exists()
    assert set((run_dir / "tb").glob("events.*")) == events


def test_a_read_only_run_folder_gets_its_figures_and_events_under_out(run_dir, tiny_folder,
                                                                        tmp_path):  # fmt: skip
    """``figures RUN --out ELSEWHERE`` on a run on a read-only disk failed writing the run's
    TensorBoard events, naming the file as Python bytes."""
    import shutil
    import subprocess

    from .test_full_disk import small_disk, unmount

    disk = small_disk(tmp_path, "64m")
    try:
        run = disk / "run"
        shutil.copytree(run_dir, run, ignore=shutil.ignore_patterns("figures"))
        subprocess.run(["mount", "-o", "remount,ro", str(disk)], check=True)
        written, _, tb = figures_of_checkpoint(str(run), tiny_folder, tmp_path / "out")
        assert tb == tmp_path / "out" / "tb" and list(tb.glob("events.out.tfevents.*"))
        assert all(p.parent == tmp_path / "out" for p in written.values())
    finally:
        unmount(disk)


@pytest.mark.parametrize("damage", [b"\xff\xfe" * 500, b'{"epoch": "x"}\n', b"null\n", b"[1, 2]\n"])
def test_a_damaged_metrics_file_draws_the_checkpoints_history(run_dir, tmp_path, damage, cache):
    """Random bytes in metrics.jsonl gave a UnicodeDecodeError traceback, JSON of another
    shape a ValueError or TypeError; the curves now come from the checkpoint, with a word."""
    import shutil

    from alexnet.inference.figure_data import run_metrics

    run = tmp_path / "run"
    shutil.copytree(run_dir, run, ignore=shutil.ignore_patterns("tb", "figures"))
    (run / "metrics.jsonl").write_bytes(damage)
    with pytest.warns(UserWarning, match="metrics.jsonl is damaged"):
        epochs = run_metrics(run / "last.pt")
    assert [m["epoch"] for m in epochs] == [1, 2] and all("val_top1_err" in m for m in epochs)
