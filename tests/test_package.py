"""The built wheel carries the recipes and installs the `alexnet` command."""

import subprocess
import sys
import zipfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_wheel_holds_the_recipes_and_the_console_script(tmp_path):
    proc = subprocess.run(
        [sys.executable, "-m", "build", "--wheel", "--no-isolation", "--outdir", str(tmp_path), str(ROOT)],
        capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-2000:]
    (wheel,) = tmp_path.glob("alexnet-*.whl")
    with zipfile.ZipFile(wheel) as z:
        names = set(z.namelist())
        entry_points = next(n for n in names if n.endswith(".dist-info/entry_points.txt"))
        scripts = z.read(entry_points).decode()
        metadata = z.read(next(n for n in names if n.endswith(".dist-info/METADATA"))).decode()
    recipes = {Path(n).name for n in names if n.startswith("alexnet/recipes/")}
    assert {"fashion-mnist.toml", "cifar10.toml", "imagenet-paper.toml"} <= recipes
    assert "alexnet = alexnet.cli:main" in scripts
    assert {"alexnet/models/alexnet.py", "alexnet/data/imagefolder.py", "alexnet/train.py"} <= names
    assert "Requires-Python: >=3.11" in metadata and "Requires-Dist: tomli-w" in metadata
