"""Every command the README shows still works: each ``alexnet`` line parses with the command
line's own parser and its command's ``--help`` runs (``alexnet summary`` runs for real),
``torchrun`` lines parse with torchrun's parser, every ``make`` target exists, the container
lines name files and services that exist, and the command table and docs/cli.md match the
parser."""

from __future__ import annotations

import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

from alexnet import cli_reference
from alexnet.cli import build_parser

ROOT = Path(__file__).resolve().parents[1]
README = (ROOT / "README.md").read_text()


def shown_commands(text: str = README) -> list[str]:
    """A page's indented code lines (the README's by default), continuations joined, comments
    dropped."""
    lines, joined = [], ""
    for raw in text.splitlines():
        if not raw.startswith("    ") or raw.lstrip().startswith("- "):
            continue
        line = raw.strip()
        if joined:
            line = f"{joined} {line}"
        if line.endswith("\\"):
            joined = line[:-1].strip()
            continue
        joined = ""
        lines.append(re.sub(r"\s+#\s.*$", "", line))
    return [c for c in lines if c]


COMMANDS = shown_commands()


def by_program(program: str) -> list[str]:
    return [c for c in COMMANDS if c.split()[0] == program]


def test_the_readme_shows_each_kind_of_command():
    programs = {c.split()[0] for c in COMMANDS}
    assert {"make", "alexnet", "torchrun", "docker", ".venv/bin/pip", "bash"} <= programs
    assert len(by_program("alexnet")) >= 8


@pytest.mark.parametrize("line", by_program("alexnet"))
def test_every_alexnet_line_parses(line):
    args = shlex.split(line)[1:]
    assert build_parser().parse_args(args).command == args[0]  # its options and their values


@pytest.mark.parametrize("command", sorted({shlex.split(c)[1] for c in by_program("alexnet")}))
def test_the_help_of_every_command_shown_runs(command, capsys):
    from alexnet.cli import main

    with pytest.raises(SystemExit) as done:
        main([command, "--help"])
    assert done.value.code == 0 and capsys.readouterr().out.startswith(f"usage: alexnet {command}")


def test_alexnet_summary_runs_as_shown():
    assert "alexnet summary" in COMMANDS
    run = subprocess.run([sys.executable, "-m", "alexnet", "summary"], capture_output=True,
                         text=True, timeout=120)  # fmt: skip
    assert run.returncode == 0 and "60,965,224" in run.stdout


@pytest.mark.parametrize("line", by_program("torchrun"))
def test_every_torchrun_line_parses(line):
    from torch.distributed.run import get_args_parser

    args = shlex.split(line)[1:]
    launched = get_args_parser().parse_args(args)
    assert launched.module and launched.training_script == "alexnet"
    assert build_parser().parse_args(launched.training_script_args).command == "train"


@pytest.mark.parametrize("line", by_program("make"))
def test_every_make_target_exists(line):
    target = shlex.split(line)[1]
    makefile = (ROOT / "Makefile").read_text()
    assert re.search(rf"^{re.escape(target)}:", makefile, re.M), f"no make target {target!r}"
    if "BENCH=" in line:
        for name in re.search(r'BENCH="([^"]+)"', line).group(1).split():
            assert (ROOT / "bench" / f"{name}.py").is_file()


def test_the_container_lines_name_what_exists():
    import yaml

    services = yaml.safe_load((ROOT / "docker" / "compose.yaml").read_text())["services"]
    for line in COMMANDS:
        words = shlex.split(line)
        if "-f" in words:
            named = ROOT / words[words.index("-f") + 1]
            assert named.is_file(), line
            for i, word in enumerate(words):
                if word == "--build-arg":
                    arg = words[i + 1].split("=")[0]
                    assert f"ARG {arg}" in named.read_text(), f"{named.name} takes no {arg}"
        if "ALEXNET_DOCKERFILE=" in line:
            assert (ROOT / "docker" / line.split("=", 1)[1].split()[0]).is_file(), line
        if "compose" in words and "run" in words:
            assert words[words.index("run") + 2] in services, line  # after --rm
        if words[0] == "cd":
            assert (ROOT / words[1]).is_dir(), line


def test_the_other_tools_shown_are_there():
    assert (ROOT / "notebooks").is_dir() and any((ROOT / "notebooks").glob("*.ipynb"))
    tensorboard = Path(sys.executable).parent / "tensorboard"
    assert ".venv/bin/tensorboard --logdir runs" in COMMANDS
    assert tensorboard.exists(), "tensorboard is a dependency: it belongs beside python"
    assert "bash bench/gpu.sh" in COMMANDS
    assert subprocess.run(["bash", "-n", str(ROOT / "bench" / "gpu.sh")]).returncode == 0


def test_the_command_table_and_docs_cli_match_the_parser():
    with pytest.raises(SystemExit) as done:
        cli_reference.main(["--check"])
    assert done.value.code == 0, "run: python -m alexnet.cli_reference"
    names = [name for name, _, _ in cli_reference.commands()]
    assert all(f"`alexnet {name}`" in README for name in names)


def test_the_code_map_names_every_module_and_only_modules_that_exist():
    """The README's "The code" table against the tree: each name in it is a file or folder
    of ``src/alexnet`` (under the folder it follows, where it is inside one), and every
    module and subpackage there is named."""
    section = README[README.index("## The code") :].split("\n## ", 1)[0]
    package = ROOT / "src" / "alexnet"
    named = set()
    for row in (line for line in section.splitlines() if line.startswith("| ") and "`" in line):
        folder = package
        for name in re.findall(r"`([^`]+)`", row.split("|")[2]):
            found = [base / name.rstrip("/") for base in (folder, package)]
            path = next((p for p in found if p.exists()), None)
            assert path, f"the README's code map names {name}, which is not in {package}"
            named.add(path.relative_to(package).parts[0])
            folder = path if path.is_dir() else folder
    present = {
        p.name for p in package.iterdir() if p.suffix == ".py" or (p / "__init__.py").exists()
    }
    missing = present - named - {"__init__.py", "__main__.py"}
    assert not missing, f"the README's code map leaves out {sorted(missing)}"


def test_the_adding_section_names_paths_and_names_that_exist():
    """ "Adding a network, a recipe, a data source or a command": every file or folder it
    names exists, and every name it gives is defined in the package."""
    section = README[README.index("## Adding a network") :].split("\n## ", 1)[0]
    package = ROOT / "src" / "alexnet"
    source = "\n".join(p.read_text() for p in package.rglob("*.py"))
    for name in re.findall(r"`([^` ]+)`", section):  # a command line has spaces: not a name
        if name.endswith((".py", "/", ".toml")):
            found = [ROOT / name, package / name, *(p / name for p in package.iterdir())]
            assert any(p.exists() for p in found), f"the README names {name}, which is not here"
        elif re.fullmatch(r"[A-Z][A-Za-z_]+|[a-z]+\.[a-z_]+|[a-z]+_[a-z_]+", name):
            last = name.rsplit(".", 1)[-1]  # NETWORKS, Split, models.contract_problems, ...
            defined = rf"^\s*(class |def )?{last}\b"
            assert re.search(defined, source, re.M), f"the README names {name}, defined nowhere"
