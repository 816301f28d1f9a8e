"""ImageNet's layouts: split folders, a flat val/ with Kaggle's or the devkit's labels, flat
<wnid>_*.JPEG files; class order from the index file or Kaggle's synset mapping."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from alexnet.data.layouts import LayoutError, class_map, labelled_splits, split_files
from alexnet.data.prepare import Plan, prepare
from alexnet.data.store import open_store

WNIDS = ("n02", "n01", "n03")  # deliberately not sorted: the index files give the order


def image(path: Path, value: int) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.full((12, 16, 3), value, dtype=np.uint8)).save(path)


def kaggle_tree(root: Path) -> Path:
    """Kaggle's archive: ILSVRC/Data/CLS-LOC/{train/<wnid>, val flat, test flat}, with the
    synset mapping and the validation solution three folders up."""
    src = root / "ILSVRC" / "Data" / "CLS-LOC"
    for k, wnid in enumerate(WNIDS):
        image(src / "train" / wnid / f"{wnid}_1.JPEG", 10 * k)
    rows = ["ImageId,PredictionString"]
    for i, wnid in enumerate(("n03", "n02", "n01", "n03")):
        image(src / "val" / f"ILSVRC2012_val_{i + 1:08d}.JPEG", 100 + i)
        rows.append(f"ILSVRC2012_val_{i + 1:08d},{wnid} 1 2 3 4 {wnid} 5 6 7 8")
    image(src / "val" / "ILSVRC2012_val_00000099.JPEG", 7)  # not in the solution file
    image(src / "test" / "ILSVRC2012_test_00000001.JPEG", 9)  # no labels at all
    (root / "LOC_val_solution.csv").write_text("\n".join(rows) + "\n")
    (root / "LOC_synset_mapping.txt").write_text(
        "".join(f"{w} name of {w}, other words\n" for w in WNIDS)
    )
    return src


def test_kaggle_layout_labels_the_flat_val_folder(tmp_path):
    src = kaggle_tree(tmp_path)
    classes, names = class_map(src)
    assert classes == list(WNIDS) and names[0] == "name of n02"
    assert labelled_splits(src) == ["train", "val"]  # test/ has no labels
    pairs, skipped = split_files(src, "val", classes)
    assert [lab for _, lab in pairs] == [2, 0, 1, 2]
    assert [Path(p).name for p, _ in skipped] == ["ILSVRC2012_val_00000099.JPEG"]
    assert "no label" in skipped[0][1]
    with pytest.raises(LayoutError, match="no labels"):
        split_files(src, "test", classes)


def test_prepare_reads_the_kaggle_layout_into_a_store(tmp_path):
    src = kaggle_tree(tmp_path / "kaggle")
    prepare(src, tmp_path / "store", plan=Plan(size=8), progress=False)
    store = open_store(tmp_path / "store")
    assert store.splits == ["train", "val"] and store.names[1] == "name of n01"
    assert store.split("val").labels.tolist() == [2, 0, 1, 2]


def test_class_index_file_sets_the_order_and_the_names(tmp_path):
    for k, wnid in enumerate(WNIDS):
        image(tmp_path / f"{wnid}_thing.JPEG", k)
    index = {str(i): [w, f"readable {w}"] for i, w in enumerate(WNIDS)}
    (tmp_path / "imagenet_class_index.json").write_text(json.dumps(index))
    classes, names = class_map(tmp_path)
    assert classes == list(WNIDS) and names == [f"readable {w}" for w in WNIDS]
    pairs, skipped = split_files(tmp_path, "train", classes)
    assert sorted(lab for _, lab in pairs) == [0, 1, 2] and skipped == []


def test_devkit_labels_without_scipy_say_what_to_install(tmp_path, monkeypatch):
    import builtins

    src = tmp_path / "imagenet"
    image(src / "train" / "n01" / "a.JPEG", 1)
    image(src / "val" / "ILSVRC2012_val_00000001.JPEG", 2)
    devkit = tmp_path / "ILSVRC2012_devkit_t12" / "data"
    devkit.mkdir(parents=True)
    (devkit / "ILSVRC2012_validation_ground_truth.txt").write_text("1\n")
    real_import = builtins.__import__

    def no_scipy(name, *args, **kwargs):
        if name.startswith("scipy"):
            raise ImportError(name)
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_scipy)
    with pytest.raises(LayoutError, match="needs scipy"):
        split_files(src, "val", ["n01"])


def test_devkit_ground_truth_with_meta_mat(tmp_path):
    scipy_io = pytest.importorskip("scipy.io", reason="scipy reads the devkit's meta.mat")
    src = tmp_path / "imagenet"
    for k, wnid in enumerate(WNIDS):
        image(src / "train" / wnid / "a.JPEG", k)
    for i in range(4):
        image(src / "val" / f"ILSVRC2012_val_{i + 1:08d}.JPEG", 50 + i)
    devkit = tmp_path / "ILSVRC2012_devkit_t12" / "data"
    devkit.mkdir(parents=True)
    # The devkit numbers synsets in its own order (ILSVRC2012_ID), not by wnid.
    synsets = np.array([(3, "n01", "one"), (1, "n03", "three"), (2, "n02", "two")],
                       dtype=[("ILSVRC2012_ID", "O"), ("WNID", "O"), ("words", "O")])  # fmt: skip
    scipy_io.savemat(devkit / "meta.mat", {"synsets": synsets})
    (devkit / "ILSVRC2012_validation_ground_truth.txt").write_text("1\n3\n2\n1\n")
    classes = sorted(WNIDS)
    pairs, skipped = split_files(src, "val", classes)
    assert [classes[lab] for _, lab in pairs] == ["n03", "n01", "n02", "n03"] and skipped == []


def test_prepare_reads_a_tar_gz_with_one_folder_inside(tmp_path, cache):
    import tarfile

    tree = tmp_path / "photos"
    for k, wnid in enumerate(WNIDS):
        image(tree / "train" / wnid / "a.png", 10 * k)
        image(tree / "val" / wnid / "b.png", 10 * k + 5)
    with tarfile.open(tmp_path / "photos.tar.gz", "w:gz") as tar:
        tar.add(tree, arcname="photos")
    prepare(tmp_path / "photos.tar.gz", tmp_path / "store", plan=Plan(size=8), progress=False)
    store = open_store(tmp_path / "store")
    assert store.splits == ["train", "val"] and len(store.split("val")) == 3
