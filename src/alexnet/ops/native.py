"""Compiled CPU kernels, built from ``csrc/`` with the machine's own compiler on first use.

A kernel is built once per machine kind and cached in the user cache (``native/``), so the
first use costs a compile (about 15 s on 2 cores) and every later process loads the library.
The build targets the CPU it runs on (``-march=native``), so the cache key holds the CPU's
model and flags: a home directory shared by different machines gets one build per kind.

``$ALEXNET_NATIVE_DIR`` puts the builds elsewhere (the tests share one across their caches).
Without a compiler, or with ``ALEXNET_NATIVE=0``, :func:`load` returns False after one warning
and callers use their PyTorch path, which is also the reference the kernels are tested against.
"""

from __future__ import annotations

import errno
import hashlib
import logging
import os
import platform
import shutil
import warnings
from functools import cache
from pathlib import Path

import torch

from alexnet.files import MARGIN, cache_dir, disk_failure, free_bytes, remove

SOURCES = Path(__file__).parent / "csrc"


def switched_on(variable: str) -> bool:
    """Whether the environment leaves a speed-up on: anything but 0, false, no or off (in any
    case) in ``variable``, or its absence."""
    return os.environ.get(variable, "1").lower() not in ("0", "false", "no", "off")


def enabled() -> bool:
    return switched_on("ALEXNET_NATIVE")


def cpu_signature() -> str:
    """What decides whether a -march=native build runs here: model name and feature flags."""
    text = ""
    try:
        cpuinfo = Path("/proc/cpuinfo").read_text()
        keep = ("model name", "flags", "Features", "CPU implementer", "CPU part")
        text = "\n".join(sorted({line for line in cpuinfo.splitlines() if line.startswith(keep)}))
    except OSError:  # pragma: no cover - not Linux
        text = platform.processor()
    return f"{platform.machine()}\n{text}"


def march_flags() -> list[str]:
    """The widest vectors this CPU has, unless ATen is held to narrower ones
    (``ATEN_CPU_CAPABILITY`` avx2, avx512 or default, as the golden test and the benchmarks'
    emulations of other CPUs do): then the kernels keep to the same instructions (for avx512,
    those of the first AVX-512 Xeons)."""
    capability = os.environ.get("ATEN_CPU_CAPABILITY", "").lower()
    if capability == "avx2":
        return ["-march=native", "-mno-avx512f"]
    if capability == "avx512":
        return ["-march=skylake-avx512", "-mtune=native"]
    if capability == "default":
        return ["-march=x86-64"] if platform.machine() == "x86_64" else []
    return ["-march=native"]


def compile_flags() -> list[str]:
    """-march: the vectors this CPU has (above). -fno-math-errno and -fno-trapping-math: no
    float status to keep, so the compiler may turn a ``v < 0 ? 0 : v`` into a vector select
    (without the second, GCC left the fused ReLU's loops scalar wherever AVX-512's masked
    stores are missing: on Zen 4 held to AVX2, LRN forward and backward at conv1's output for
    64 images took 51 and 62 ms, against 8 and 20 ms now). -fopenmp: at::parallel_for uses
    torch's OpenMP threads (the library it links, libgomp.so.1, is the one torch has already
    loaded)."""
    return ["-O3", *march_flags(), "-fno-math-errno", "-fno-trapping-math", "-fopenmp"]


def _load_built(library: Path, lock: Path) -> bool:
    """Load ``library`` if it was built before and no build of it is under way: directly,
    without cpp_extension's ninja up-to-date check (about 0.3 s per process), since the key
    in its name already covers the source, torch, the CPU and the flags. The lock is the one
    cpp_extension holds while it builds (an flock through the filelock package); taken
    without waiting, so a build in progress sends the caller the slow way, which waits."""
    if not library.is_file():
        return False
    from filelock import FileLock, Timeout

    try:
        with FileLock(str(lock), timeout=0):
            torch.ops.load_library(str(library))
    except Timeout:
        return False
    return True


@cache
def load(name: str) -> bool:
    """Build (once) and load ``csrc/<name>.cpp``, which registers its ops under
    ``torch.ops.alexnet_<name>``; False, after one warning, where that is not possible."""
    if not enabled():
        return False
    source = SOURCES / f"{name}.cpp"
    key = hashlib.sha256(
        f"{source.read_bytes()!r}{torch.__version__}{cpu_signature()}{compile_flags()}".encode()
    ).hexdigest()[:12]
    build = Path(os.environ.get("ALEXNET_NATIVE_DIR") or cache_dir() / "native") / f"{name}-{key}"
    library = build / f"alexnet_{name}_{key}.so"
    try:
        if _load_built(library, build / "lock"):
            return True
        # Its warning on import ("No CUDA runtime is found") is about CUDA builds, not this one.
        logging.getLogger("torch.utils.cpp_extension").setLevel(logging.ERROR)
        from torch.utils import cpp_extension

        build.mkdir(parents=True, exist_ok=True)
        cpp_extension.load(
            name=f"alexnet_{name}_{key}",
            sources=[str(source)],
            extra_cflags=compile_flags(),
            extra_ldflags=["-fopenmp"],
            build_directory=str(build),
            is_python_module=False,
            verbose=False,
        )
    except Exception as exc:  # any build or load failure falls back to the PyTorch path
        warnings.warn(_why_not_built(exc, name, build), RuntimeWarning, stacklevel=2)
        _remove_failed_build(build, library)
        return False
    return True


def _remove_failed_build(build: Path, library: Path) -> None:
    """A build that failed (a full disk) left its object files and ninja's state behind; they
    are removed unless another process is building there now or the library exists."""
    from filelock import FileLock, Timeout

    if library.is_file() or not build.is_dir():
        return
    try:
        with FileLock(str(build / "lock"), timeout=0):
            for entry in build.iterdir():
                if entry.name != "lock":
                    remove(entry)
    except (Timeout, OSError):
        return


def _why_not_built(exc: Exception, name: str, build: Path) -> str:
    """The build's failure, and the remedy for it: a full or unwritable disk was blamed on a
    missing compiler."""
    reason = str(exc).strip().splitlines()[-1] if str(exc).strip() else type(exc).__name__
    failure = disk_failure(exc)
    folder = build if build.is_dir() else build.parent
    if (failure is not None and failure.errno == errno.ENOSPC) or 0 <= free_bytes(folder) < MARGIN:
        remedy = f"the disk holding {folder} is full: make room, or point ALEXNET_NATIVE_DIR " \
                 "at another disk"  # fmt: skip
    elif failure is not None and failure.errno in (errno.EACCES, errno.EROFS, errno.ENOTDIR):
        remedy = f"{build} cannot be written: point ALEXNET_NATIVE_DIR at a writable folder"
    elif not build.is_dir() or (failure is not None and failure.errno == errno.ENOENT):
        remedy = f"run again: {build} was removed while it was built (alexnet cache clear?)"
    elif shutil.which(os.environ.get("CXX", "c++")) is None:
        remedy = "install a C++ compiler (apt-get install g++) and ninja to get it"
    else:  # a compiler is there: the build's own words say what failed
        remedy = "put right what the build says"
    return (f"could not build the native {name} kernel in {build} ({reason}); using the slower "
            f"PyTorch path. To use it, {remedy}; or set ALEXNET_NATIVE=0 to silence this.")  # fmt: skip
