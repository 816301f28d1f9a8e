"""What a GPU machine that reaches no network needs beside the source tree, made here and
carried there (at most 64 MiB in all): the ImageNet sample re-encoded smaller, CIFAR-10's
JPEGs, and the wheel of tomli-w, the one requirement a bare PyTorch machine lacks.

    python bench/gpu_data.py [--sample ../shared/data/imagenet-sample]
                             [--cifar ../shared/data/cifar10-jpeg.tar.gz] [--out build/gpu-data]

The sample's 1,000 photographs (107 MB, most 500x375) are scaled to a short side of 288 and
saved as JPEG at quality 90: about a third of the bytes, still larger than the store's 256 so
that its rescale and the random 227 crops work as on ImageNet. bench/gpu.sh and
bench/gpu_experiments.sh read this folder (DATA=build/gpu-data).
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
from pathlib import Path

from PIL import Image

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared" / "data"
LIMIT = 64 * 2**20  # what the device machine takes beside the source tree


def reencode(sample: Path, out: Path, side: int, quality: int) -> int:
    """Each ``<wnid>_*.JPEG`` of ``sample`` with its short side at most ``side``; bytes written."""
    out.mkdir(parents=True, exist_ok=True)
    for extra in sample.glob("*.json"):  # the class index
        shutil.copy(extra, out / extra.name)
    total = 0
    for f in sorted(sample.glob("*.JPEG")):
        with Image.open(f) as image:
            image.load()
            scale = side / min(image.size)
            if scale < 1:
                size = (round(image.width * scale), round(image.height * scale))
                image = image.resize(size, Image.Resampling.LANCZOS)
            image.save(out / f.name, "JPEG", quality=quality)  # grey stays grey, as in ImageNet
        total += (out / f.name).stat().st_size
    return total


def wheel(package: str, out: Path) -> Path:
    """``package``'s wheel (from the package index, or pip's cache)."""
    out.mkdir(parents=True, exist_ok=True)
    subprocess.run([sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:",
                    "--dest", str(out), package], check=True, capture_output=True)  # fmt: skip
    return next(out.glob(f"{package.replace('-', '_')}-*.whl"))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sample", type=Path, default=SHARED / "imagenet-sample")
    parser.add_argument("--cifar", type=Path, default=SHARED / "cifar10-jpeg.tar.gz")
    parser.add_argument("--out", type=Path, default=ROOT / "build" / "gpu-data")
    parser.add_argument("--side", type=int, default=288)
    parser.add_argument("--quality", type=int, default=90)
    args = parser.parse_args()
    for given in (args.sample, args.cifar):
        if not given.exists():
            raise SystemExit(f"bench/gpu_data.py: {given} does not exist")
    shutil.rmtree(args.out, ignore_errors=True)
    sample = reencode(args.sample, args.out / "imagenet-sample", args.side, args.quality)
    shutil.copy(args.cifar, args.out / "cifar10-jpeg.tar.gz")
    whl = wheel("tomli-w", args.out / "wheels")
    total = sum(f.stat().st_size for f in args.out.rglob("*") if f.is_file())
    print(f"{args.out}: ImageNet sample {sample / 2**20:.1f} MiB at a short side of {args.side}, "
          f"CIFAR-10 {args.cifar.stat().st_size / 2**20:.1f} MiB, {whl.name}; "
          f"{total / 2**20:.1f} MiB in all (limit {LIMIT / 2**20:.0f})")  # fmt: skip
    if total > LIMIT:
        raise SystemExit(f"bench/gpu_data.py: {total / 2**20:.1f} MiB is more than the device "
                         "machine takes; lower --side or --quality")  # fmt: skip


if __name__ == "__main__":
    main()
