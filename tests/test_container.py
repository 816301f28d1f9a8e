"""The course's container, built and run (``make test-container``, which CI runs as root):
``docker/Dockerfile`` built with podman, unchanged but for its base, and the README's own
container commands run against it, checked from the host.

The stand-in base. No image registry is reachable from CI, so PyTorch's CUDA runtime image is
replaced by one made here that, like it, has Python in ``/opt/conda`` and torch installed:
Debian bookworm (``debootstrap --variant=minbase``, imported into podman), this machine's own
Python 3.11 (the one running these tests; bookworm's is 3.11.2, below the package's 3.11.4)
and the torch and torchvision these tests run with. It differs from the real base in: Debian
for Ubuntu, torch 2.14.1 (CUDA 13 wheels, no GPU used) for 2.7.1, pip pointed at a wheelhouse
made on the host, since no index is reachable from a build (``/etc/pip.conf``; PyPI is
reachable from the host alone), and torch not copied into a layer: its 6 GB, written once
in the layer and again while podman commits it, took 20 GB of disk, more than CI's machines
can be counted on to have free. The packages torch needs are instead hard-linked from this
environment into a folder that every container and build mounts at ``/opt/torch``
(``volumes`` in the tests' containers.conf), and a ``.pth`` file in the base's site-packages
puts it on Python's path: to Python and pip in the image, torch is installed in the base, as
in the real one. The GPU image shares every line of the Dockerfile with what is built here;
only BASE differs.

``ALEXNET_CONTAINER_KEEP=1`` keeps the images and builds only where none is there (while
working on the checks); ``ALEXNET_CONTAINER_CHECKOUT`` checks another checkout's files.

The README's ``docker`` commands are run as ``podman`` with ``--network host``: the ports
they publish and the GPUs they ask for cannot be tested so, and are checked in their text.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shlex
import shutil
import subprocess
import sys
import time
import urllib.error
import urllib.request
from importlib.metadata import Distribution, distribution
from pathlib import Path

import pytest
import yaml

pytestmark = pytest.mark.container

ROOT = Path(__file__).resolve().parents[1]
HOST_UID = HOST_GID = 4321  # a host user other than root and other than the usual 1000
STANDIN = "localhost/alexnet-test-base:bookworm"
IMAGE = "localhost/alexnet:test"
FASHION = Path("/usr/share/datasets/fashion-mnist")
# Peak disk use: the wheelhouse (torch's wheels are not in it) and the image's layers, each
# in storage and again as the blob podman writes to /var/tmp while committing it.
NEEDED = 6e9
TORCH_SITE = "/opt/torch"  # where the stand-in's torch is mounted
CHECKOUT = Path(os.environ.get("ALEXNET_CONTAINER_CHECKOUT", ROOT))  # another: a one-off run
WHEELS = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "alexnet-container"


def podman(
    *args: str, check: bool = True, timeout: float = 600, **kw
) -> subprocess.CompletedProcess:
    """podman with the settings that work on these machines: runc (crun refuses their hybrid
    cgroups), no default ulimits, the overlay driver (vfs copies every layer)."""
    env = {**os.environ, "CONTAINERS_CONF": str(WHEELS / "containers.conf")}
    done = subprocess.run(["podman", "--storage-driver", "overlay", *args], env=env, text=True,
                          capture_output=True, timeout=timeout, **kw)  # fmt: skip
    if check and done.returncode != 0:
        raise AssertionError(f"podman {' '.join(args[:3])}... failed: {done.stderr[-3000:]}")
    return done


def readme_commands() -> dict[str, str]:
    """The README's container commands, by what they do: build, lab, token, train."""
    text = (CHECKOUT / "README.md").read_text()
    section = text[text.index("## In a container") :].split("\n## ", 1)[0]
    lines = [line.strip() for line in section.splitlines() if line.startswith("    docker ")]
    found = {"build": [c for c in lines if c.startswith("docker build")],
             "lab": [c for c in lines if c.startswith("docker run -d")],
             "token": [c for c in lines if c.startswith("docker exec")],
             "train": [c for c in lines if c.startswith("docker run --rm") and "train" in c]}  # fmt: skip
    return {k: v[0] for k, v in found.items() if v}


def test_the_readme_has_a_command_for_each_use():
    """Build, JupyterLab, its token, a training run: each a ``docker`` line the checks run."""
    missing = {"build", "lab", "token", "train"} - set(readme_commands())
    assert not missing, f"the README's container section has no docker command for {missing}"


def as_podman(command: str, folder: Path, extra: list[str]) -> list[str]:
    """A README ``docker`` command as run here: the host's user and folder substituted, GPUs
    and published ports dropped for the host's network, ``extra`` before the image."""
    command = command.replace('"$(id -u)"', str(HOST_UID)).replace('"$(id -g)"', str(HOST_GID))
    words = shlex.split(command.replace("$PWD", str(folder)), comments=True)[1:]
    kept, skip = [], False
    for i, word in enumerate(words):
        if skip:
            skip = False
            continue
        if word in ("--gpus", "-p"):
            skip = True
            continue
        kept.append(word)
        if word in ("run", "build") and i == 0:
            kept += ["--network", "host"]
    if "alexnet" not in kept:  # docker exec: no image named
        return kept
    at = kept.index("alexnet")  # the image; after it, the command run in it
    return [*kept[:at], *extra, IMAGE, *kept[at + 1 :]]


def standin_base(work: Path) -> None:
    """The base stand-in (see the module's text), built from nothing but Debian's packages
    and this machine's Python and torch."""
    rootfs = work / "rootfs"
    subprocess.run(["debootstrap", "--variant=minbase", "bookworm", str(rootfs),
                    "http://deb.debian.org/debian"], check=True, capture_output=True,
                   timeout=900)  # fmt: skip
    tar = subprocess.Popen(["tar", "-C", str(rootfs), "-c", "."], stdout=subprocess.PIPE)
    podman("import", "-", "localhost/alexnet-test-debian:bookworm", stdin=tar.stdout)
    tar.wait()
    shutil.rmtree(rootfs)
    context = work / "base"
    shutil.copytree(sys.base_prefix, context / "conda", symlinks=True,
                    ignore=shutil.ignore_patterns("site-packages", "test", "__pycache__"))  # fmt: skip
    (context / "pip.conf").write_text("[global]\nno-index = true\nfind-links = /wheels\n")
    (context / "Dockerfile").write_text(
        "FROM localhost/alexnet-test-debian:bookworm\n"
        # What Python's own modules link to (sqlite3 for JupyterLab), as the real base has.
        "RUN apt-get update && apt-get install -y --no-install-recommends libsqlite3-0 "
        "libreadline8 libncursesw6 && rm -rf /var/lib/apt/lists/*\n"
        "COPY conda /opt/conda\n"
        "RUN echo /opt/conda/lib > /etc/ld.so.conf.d/conda.conf && ldconfig\n"
        "ENV PATH=/opt/conda/bin:$PATH\n"
        "COPY pip.conf /etc/pip.conf\n"
        "RUN python3 -m ensurepip && echo " + TORCH_SITE + " > \"$(python3 -c 'import site; "
        "print(site.getsitepackages()[0])')/standin-torch.pth\"\n"
        "RUN python3 -c 'import torch, torchvision'\n"  # the mount works: torch is there
    )  # fmt: skip
    podman("build", "--network", "host", "-v", f"{WHEELS / 'wheels'}:/wheels:ro", "-t", STANDIN,
           str(context), timeout=1800)  # fmt: skip


def torch_distributions() -> dict[str, Distribution]:
    """torch, torchvision and every package they need (with the extras asked for), as
    installed in the environment running these tests."""
    from packaging.requirements import Requirement
    from packaging.utils import canonicalize_name

    found: dict[str, Distribution] = {}
    done: set[tuple[str, str]] = set()
    todo = [("torch", ""), ("torchvision", "")]
    while todo:
        name, extra = todo.pop()
        key = canonicalize_name(name)
        if (key, extra) in done:
            continue
        done.add((key, extra))
        dist = found.setdefault(key, distribution(name))
        for line in dist.requires or []:
            wanted = Requirement(line)
            if wanted.marker is None or wanted.marker.evaluate({"extra": extra}):
                todo += [(wanted.name, e) for e in ("", *wanted.extras)]
    return found


def torch_site(folder: Path) -> set[str]:
    """The packages of :func:`torch_distributions`, hard-linked into ``folder`` (copied where
    it is on another disk); returns their names."""
    found = torch_distributions()
    for dist in found.values():
        for name in dist.files or []:
            source = Path(dist.locate_file(name))
            if ".." in name.parts or not source.is_file():  # scripts in bin/; stale .pyc
                continue
            target = folder / name
            target.parent.mkdir(parents=True, exist_ok=True)
            try:
                os.link(source, target)
            except OSError:
                shutil.copy2(source, target)
    return set(found)


def wheelhouse(provided: set[str]) -> None:
    """Every wheel the image's build installs, downloaded on the host (kept between runs):
    the package's requirements and JupyterLab's, but for what the base provides."""
    import tomllib

    from packaging.requirements import Requirement
    from packaging.utils import canonicalize_name

    project = tomllib.loads((CHECKOUT / "pyproject.toml").read_text())["project"]
    wanted = [*project["dependencies"], *project["optional-dependencies"]["export"],
              *project["optional-dependencies"]["course"], "jupyterlab==4.6.6",
              *tomllib.loads((CHECKOUT / "pyproject.toml").read_text())["build-system"]["requires"]]  # fmt: skip
    wanted = [w for w in wanted if canonicalize_name(Requirement(w).name) not in provided]
    folder = WHEELS / "wheels"
    folder.mkdir(parents=True, exist_ok=True)
    subprocess.run([sys.executable, "-m", "pip", "download", "-q", "-d", str(folder), *wanted],
                   check=True, capture_output=True, timeout=1800)  # fmt: skip
    heavy = sorted(w.name for w in folder.glob("*.whl") if w.name.startswith(("torch", "nvidia")))
    assert not heavy, f"the wheelhouse pulled in torch's wheels, which the base provides: {heavy}"


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    """The image, built by the README's command on the stand-in base; removed afterwards."""
    if os.geteuid() != 0 or not shutil.which("podman") or not shutil.which("debootstrap"):
        pytest.skip("needs root, podman and debootstrap (make test-container installs them)")
    WHEELS.mkdir(parents=True, exist_ok=True)
    free = shutil.disk_usage("/var/tmp").free
    assert free > NEEDED, (f"the container builds need about {NEEDED / 1e9:.0f} GB free on the "
                           f"disk holding /var/tmp and /var/lib/containers; it has {free / 1e9:.0f}")  # fmt: skip
    work = tmp_path_factory.mktemp("container")
    provided = torch_site(work / "torch")
    (WHEELS / "containers.conf").write_text(
        f'[containers]\ndefault_ulimits = []\nvolumes = ["{work / "torch"}:{TORCH_SITE}:ro"]\n\n'
        '[engine]\nruntime = "runc"\n')  # fmt: skip
    keep = os.environ.get("ALEXNET_CONTAINER_KEEP") == "1"  # while working on the checks
    try:
        if not (keep and podman("image", "exists", IMAGE, check=False).returncode == 0):
            wheelhouse(provided)
            standin_base(work)
            build = as_podman(readme_commands()["build"], CHECKOUT, [])
            build[1:1] = ["--build-arg", f"BASE={STANDIN}", "-v", f"{WHEELS / 'wheels'}:/wheels:ro"]
            podman(*build, cwd=CHECKOUT, timeout=1800)
        yield work
    finally:
        for container in podman(
            "ps", "-aq", "--filter", "label=alexnet-test", check=False
        ).stdout.split():
            podman("rm", "-f", container, check=False)
        for image in () if keep else (IMAGE, STANDIN, "localhost/alexnet-test-debian:bookworm"):
            podman("rmi", "-f", image, check=False)
        podman("image", "prune", "-f", check=False)
        podman("volume", "prune", "-f", check=False)


@pytest.fixture(scope="module")
def host_folder(built) -> Path:
    """The student's working folder on the host: runs/ and notebooks/, owned by their user."""
    folder = built / "student"
    (folder / "runs").mkdir(parents=True)
    shutil.copytree(CHECKOUT / "notebooks", folder / "notebooks",
                    ignore=shutil.ignore_patterns("runs", ".ipynb_checkpoints"))  # fmt: skip
    for path in (folder, *folder.rglob("*")):
        os.chown(path, HOST_UID, HOST_GID)
    folder.parent.chmod(0o755)
    return folder


def run(*args: str, timeout: float = 600) -> subprocess.CompletedProcess:
    return podman("run", "--rm", "--label", "alexnet-test", *args, timeout=timeout)


def test_the_containers_user_is_the_host_users_number_never_root(built):
    ids = run(IMAGE, "sh", "-c", "id -u; id -g").stdout.split()
    assert ids == [str(HOST_UID), str(HOST_GID)]


def test_its_folders_are_in_the_image_owned_by_its_user_and_writable(built):
    """Checked in the image itself (podman and Docker make new volumes differently): a volume
    path missing from the image is made owned by root."""
    mounted = Path(podman("image", "mount", IMAGE).stdout.strip())
    try:
        home = mounted / "home" / "alexnet"
        for folder in (home / "cache", home / "alexnet" / "runs", home / "alexnet" / "notebooks"):
            assert folder.is_dir(), f"{folder.relative_to(mounted)} is not in the image"
            assert (folder.stat().st_uid, folder.stat().st_gid) == (HOST_UID, HOST_GID), folder
        notebooks = sorted(p.name for p in (home / "alexnet" / "notebooks").glob("*.ipynb"))
        assert notebooks == sorted(p.name for p in (ROOT / "notebooks").glob("*.ipynb"))
    finally:
        podman("image", "unmount", IMAGE, check=False)
    run(IMAGE, "sh", "-c", "touch /home/alexnet/cache/w runs/w notebooks/w")  # fresh volumes


def test_a_training_run_lands_in_the_host_folder_owned_by_the_host_user(built, host_folder):
    if not FASHION.is_dir():
        pytest.skip(f"{FASHION}: apt-get install dataset-fashion-mnist (make does)")
    command = as_podman(readme_commands()["train"], host_folder,
                        ["-v", f"{FASHION}:{FASHION}:ro"])  # the README's offline way  # fmt: skip
    command += ["--name", "container", "--no-progress", "--set", "data.limit_train=2000",
                "--set", "data.limit_test=500", "--set", "epochs=1"]  # fmt: skip
    done = podman(*command[:1], "--label", "alexnet-test", *command[1:], timeout=900)
    run_dir = host_folder / "runs" / "container"
    assert (run_dir / "best.pt").is_file(), done.stderr[-2000:]
    owners = {(p.stat().st_uid, p.stat().st_gid) for p in run_dir.rglob("*")}
    assert owners == {(HOST_UID, HOST_GID)}


def test_notebook_01_runs_in_the_container(built, host_folder):
    if not FASHION.is_dir():
        pytest.skip(f"{FASHION}: apt-get install dataset-fashion-mnist (make does)")
    done = run("-e", "ALEXNET_NOTEBOOK_QUICK=1", "-v", f"{FASHION}:{FASHION}:ro",
               "-v", f"{host_folder / 'notebooks'}:/home/alexnet/alexnet/notebooks", IMAGE,
               "jupyter", "nbconvert", "--to", "notebook", "--execute", "--output-dir", "/tmp",
               "--ExecutePreprocessor.timeout=600", "notebooks/01_images_and_classification.ipynb",
               timeout=900)  # fmt: skip
    assert "Writing" in done.stderr, done.stderr[-2000:]


def http(url: str) -> tuple[int, str]:
    request = urllib.request.Request(url)
    opener = urllib.request.build_opener(NoRedirect)
    try:
        with opener.open(request, timeout=10) as answer:
            return answer.status, answer.read().decode(errors="replace")
    except urllib.error.HTTPError as exc:
        return exc.code, exc.headers.get("Location", "")


class NoRedirect(urllib.request.HTTPRedirectHandler):
    def redirect_request(self, *args, **kwargs):
        return None


def wait_for(url: str, seconds: float = 120) -> None:
    deadline = time.time() + seconds
    while time.time() < deadline:
        with contextlib.suppress(OSError):
            http(url)
            return
        time.sleep(1)
    raise AssertionError(f"{url}: nothing answered in {seconds:.0f} s")


def test_jupyterlab_answers_with_its_token_and_refuses_without(built, host_folder):
    commands = readme_commands()
    lab = commands["lab"]
    for needed in ("-p 8888:8888", "-p 6006:6006", "--gpus all", '"$PWD/runs:/home/alexnet/alexnet/runs"',
                   '"$PWD/notebooks:/home/alexnet/alexnet/notebooks"'):  # fmt: skip
        assert needed in lab, f"the README's JupyterLab command lacks {needed}"
    name = lab.split("--name ")[1].split()[0]
    start = as_podman(lab, host_folder, [])
    podman(*start[:1], "--label", "alexnet-test", *start[1:])
    try:
        wait_for("http://127.0.0.1:8888/api")
        listed = podman(*as_podman(commands["token"], host_folder, [])).stdout
        token = re.search(r"token=([0-9a-f]+)", listed)
        assert token, f"no token in {commands['token']!r}: {listed}"
        assert http(f"http://127.0.0.1:8888/lab?token={token.group(1)}")[0] == 200
        assert http("http://127.0.0.1:8888/api/contents")[0] == 403
        status, where = http("http://127.0.0.1:8888/lab")
        assert status == 302 and "login" in where
    finally:
        podman("rm", "-f", name, check=False)


def test_tensorboard_shows_the_runs_of_the_cli_and_the_notebooks(built, host_folder):
    compose = yaml.safe_load((CHECKOUT / "docker" / "compose.yaml").read_text())
    service = compose["services"]["tensorboard"]
    assert "6006:6006" in service["ports"]
    logdir = service["command"][service["command"].index("--logdir") + 1]
    for folder in ("runs", "notebooks/runs"):  # where the CLI and notebook 05 write
        inside = f"/home/alexnet/alexnet/{folder}"
        assert inside == logdir or inside.startswith(logdir.rstrip("/") + "/"), folder
    (host_folder / "notebooks" / "runs" / "05_seen" / "tb").mkdir(parents=True, exist_ok=True)
    shutil.copytree(next((host_folder / "runs").glob("*/tb")), host_folder / "notebooks" / "runs" / "05_seen" / "tb",
                    dirs_exist_ok=True)  # fmt: skip
    podman("run", "-d", "--name", "alexnet-test-tb", "--label", "alexnet-test", "--network", "host",
           "-v", f"{host_folder / 'runs'}:/home/alexnet/alexnet/runs",
           "-v", f"{host_folder / 'notebooks'}:/home/alexnet/alexnet/notebooks", IMAGE,
           *service["command"])  # fmt: skip
    try:
        deadline = time.time() + 120
        runs: list[str] = []
        while time.time() < deadline and len(runs) < 2:
            with contextlib.suppress(OSError, ValueError):
                runs = json.loads(http("http://127.0.0.1:6006/data/runs")[1])
            time.sleep(2)
        assert any(r.startswith("runs/") for r in runs) and any(
            r.startswith("notebooks/runs/") for r in runs
        ), runs
    finally:
        podman("rm", "-f", "alexnet-test-tb", check=False)


def test_the_development_mode_sees_edits_to_the_source_on_the_host(built):
    """The README's development mode: the checkout mounted and installed editable into the
    user's own environment; an edit made on the host afterwards is what Python imports."""
    checkout = built / "checkout"
    shutil.copytree(CHECKOUT / "src", checkout / "src",
                    ignore=shutil.ignore_patterns("*.egg-info", "__pycache__"))  # fmt: skip
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(CHECKOUT / name, checkout / name)
    for path in (checkout, *checkout.rglob("*")):
        os.chown(path, HOST_UID, HOST_GID)
    name = "alexnet-test-dev"
    podman("run", "-d", "--name", name, "--label", "alexnet-test", "-v",
           f"{checkout}:/home/alexnet/alexnet", IMAGE, "sleep", "900")  # fmt: skip
    try:
        podman("exec", name, "pip", "install", "-q", "--no-deps", "--no-build-isolation", "-e", ".")
        init = checkout / "src" / "alexnet" / "__init__.py"  # edited on the host, after
        init.write_text(init.read_text().replace('__version__ = "', '__version__ = "edited-'))
        shown = podman("exec", name, "python", "-c",
                       "import alexnet; print(alexnet.__version__, alexnet.__file__)").stdout  # fmt: skip
    finally:
        podman("rm", "-f", name, check=False)
    version, where = shown.split()
    assert version.startswith("edited-") and where.startswith("/home/alexnet/alexnet/src/")
