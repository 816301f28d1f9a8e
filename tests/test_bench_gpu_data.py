"""bench/gpu_data.py: the ImageNet sample made small enough to carry to a GPU machine, its
photographs still larger than the store's 256 and grey ones still grey."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "bench"))
import gpu_data


def test_the_sample_is_reencoded_to_its_short_side_and_keeps_its_index(tmp_path):
    sample = tmp_path / "sample"
    sample.mkdir()
    rng = np.random.default_rng(0)
    Image.fromarray(rng.integers(0, 256, (375, 500, 3), dtype=np.uint8)).save(
        sample / "n01440764_tench.JPEG", quality=95)  # fmt: skip
    Image.fromarray(rng.integers(0, 256, (600, 400), dtype=np.uint8)).save(
        sample / "n01443537_goldfish.JPEG", quality=95)  # fmt: skip
    Image.fromarray(rng.integers(0, 256, (200, 150, 3), dtype=np.uint8)).save(
        sample / "n01484850_great_white_shark.JPEG")  # fmt: skip
    (sample / "imagenet_class_index.json").write_text('{"0": ["n01440764", "tench"]}')
    written = gpu_data.reencode(sample, tmp_path / "out", side=288, quality=90)
    out = {p.name: Image.open(p) for p in (tmp_path / "out").glob("*.JPEG")}
    assert out["n01440764_tench.JPEG"].size == (384, 288)
    assert out["n01443537_goldfish.JPEG"].size == (288, 432)
    assert out["n01443537_goldfish.JPEG"].mode == "L"
    assert out["n01484850_great_white_shark.JPEG"].size == (150, 200)  # never enlarged
    assert (tmp_path / "out" / "imagenet_class_index.json").is_file()
    assert written == sum(p.stat().st_size for p in (tmp_path / "out").glob("*.JPEG"))
