"""The built wheel carries the recipes, the kernels' sources and the `alexnet` command; modules
that moved into a subpackage still import by their old names."""

import importlib
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

import alexnet

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
    assert {"alexnet/models/alexnet.py", "alexnet/data/imagefolder.py", "alexnet/training/train.py",
            "alexnet/ops/csrc/lrn_cpu.cpp", "alexnet/ops/csrc/winograd_cpu.cpp"} <= names  # fmt: skip
    assert "Requires-Python: >=3.11" in metadata and "Requires-Dist: tomli-w" in metadata


@pytest.mark.parametrize(("old", "new"), sorted(alexnet.MOVED.items()))
def test_a_moved_module_imports_by_its_old_name_as_itself_with_a_warning(old, new):
    """Code written against ``alexnet.lrn`` keeps working after the move to ``alexnet.ops``:
    the old name gives the very module (one set of ops registered, one set of globals)."""
    sys.modules.pop(old, None)
    with pytest.warns(DeprecationWarning, match=f"{old} is now {new}"):
        moved = importlib.import_module(old)
    assert moved is importlib.import_module(new)
    assert moved.__name__ == moved.__spec__.name == new
    assert not (ROOT / "src" / (old.replace(".", "/") + ".py")).exists()


def test_the_old_registry_name_still_works_and_says_it_is_old():
    import alexnet.models as models

    with pytest.warns(DeprecationWarning, match="MODELS is now NETWORKS"):
        assert models.MODELS is models.NETWORKS
    with pytest.warns(DeprecationWarning):
        assert alexnet.MODELS is models.NETWORKS


def test_the_experiment_command_offers_the_registry():
    """The EXPERIMENTS registry was ignored by the command line, which listed its own."""
    import argparse

    from alexnet.cli import build_parser
    from alexnet.experiments import EXPERIMENTS

    sub = next(a for a in build_parser()._actions if isinstance(a, argparse._SubParsersAction))
    experiment = sub.choices["experiment"]
    choices = next(a.choices for a in experiment._actions if a.dest == "experiment")
    assert tuple(choices) == tuple(EXPERIMENTS)
