"""What every benchmark records beside its numbers: the machine, and where results go.

CPUs here differ (AMD with AVX2 only, AMD Zen 4 and Intel with AVX-512, Intel with AMX), and
the fast paths differ with them, so every result names the CPU and its kind, and each kind
writes its own file: ``bench/results/<benchmark>-<kind>.json``.
"""

from __future__ import annotations

import argparse
import importlib
import json
import multiprocessing as mp
import os
import platform
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

import torch

from alexnet.runtime import cpu_has_fast_bf16

RESULTS = Path(__file__).parent / "results"
FLAGS = ("avx2", "avx512f", "avx512_bf16", "amx_bf16", "amx_tile")


def cpu_info() -> dict[str, str]:
    info: dict[str, str] = {}
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            key, _, value = line.partition(":")
            info.setdefault(key.strip(), value.strip())
    except OSError:  # pragma: no cover - not Linux
        pass
    return info


# What --isa sets, to measure on this machine the code paths another kind of CPU takes: avx2,
# ATen, oneDNN, MKL and the compiled kernels held to AVX2 (an AVX2-only CPU); avx512, held to
# AVX-512 without its bfloat16 instructions (an Intel Xeon such as Skylake or Cascade Lake).
# bfloat16 is off under both (runtime.cpu_has_fast_bf16 reads the oneDNN cap). Memory, caches
# and vector units stay this machine's, so such figures are labelled as emulated ("as-...").
HELD_TO = {
    "avx2": {"ATEN_CPU_CAPABILITY": "avx2", "ONEDNN_MAX_CPU_ISA": "AVX2", "MKL_CBWR": "AVX2"},
    "avx512": {"ATEN_CPU_CAPABILITY": "avx512", "ONEDNN_MAX_CPU_ISA": "AVX512_CORE",
               "MKL_CBWR": "AVX512"},
}  # fmt: skip


def hold_to(isa: str) -> None:
    """Hold the libraries to ``isa`` (native: as they are); before the first kernel runs, since
    ATen and oneDNN read these variables then."""
    if isa == "native":
        return
    if isa == "avx512" and "avx512f" not in cpu_info().get("flags", "").split():
        print("--isa avx512: this CPU has no AVX-512 to hold the libraries to; use --isa avx2 "
              "or native", file=sys.stderr)  # fmt: skip
        raise SystemExit(2)
    os.environ.update(HELD_TO[isa])


def parse_held(parser) -> argparse.Namespace:
    """``parser``'s arguments with ``--isa`` added, the libraries held to it (:func:`hold_to`)
    before anything runs."""
    parser.add_argument("--isa", choices=("native", *HELD_TO), default="native",
                        help="avx2: hold every library to AVX2, as on an AVX2-only CPU; avx512: "
                             "to AVX-512 without bfloat16, as on a Xeon before Cooper Lake")  # fmt: skip
    args = parser.parse_args()
    hold_to(args.isa)
    return args


def speed_arguments(parser) -> dict:
    """The options every speed benchmark shares, parsed; ``--isa avx2`` applied, the machine
    printed. Returns the parsed arguments with the machine and the precisions worth trying."""
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--rounds", type=int, default=5)
    args = parse_held(parser)
    m = machine()
    print(describe(m))
    precisions = ["fp32", "bf16"] if m["fast_bf16"] else ["fp32"]
    return {"args": args, "machine": m, "precisions": precisions,
            "torchvision": [f"torchvision {p} {lay}" for p in precisions
                            for lay in ("nchw", "channels_last")]}  # fmt: skip


def cpu_kind() -> str:
    """A short name for the kind of CPU: vendor and the widest fast path it has, or
    ``-as-avx2`` / ``-as-avx512`` where :func:`hold_to` holds the libraries to less."""
    info = cpu_info()
    vendor = "amd" if "AMD" in info.get("vendor_id", "") else "intel"
    for isa, env in HELD_TO.items():
        if all(os.environ.get(k) == v for k, v in env.items()):
            return f"{vendor}-as-{isa}"
    flags = set(info.get("flags", "").split())
    if "amx_bf16" in flags:
        return f"{vendor}-amx"
    if "avx512_bf16" in flags:
        return f"{vendor}-avx512bf16"
    if "avx512f" in flags:
        return f"{vendor}-avx512"
    return f"{vendor}-avx2"


def machine() -> dict:
    info = cpu_info()
    flags = set(info.get("flags", "").split())
    return {
        "cpu": info.get("model name", platform.processor()),
        "kind": cpu_kind(),
        "family_model": f"{info.get('cpu family', '?')}/{info.get('model', '?')}",
        "flags": [f for f in FLAGS if f in flags],
        "fast_bf16": cpu_has_fast_bf16(),
        "threads": torch.get_num_threads(),
        "torch": torch.__version__,
    }


def describe(m: dict) -> str:
    return (f"{m['cpu']} ({m['kind']}, family/model {m['family_model']}, "
            f"{' '.join(m['flags'])}), {m['threads']} threads, torch {m['torch']}")  # fmt: skip


def write(name: str, result: dict) -> Path:
    """``result`` with the machine, as ``results/<name>-<kind>.json``."""
    m = machine()
    path = RESULTS / f"{name}-{m['kind']}.json"
    RESULTS.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")  # a killed run leaves the old file
    tmp.write_text(json.dumps({"machine": m, **result}, indent=2) + "\n")
    os.replace(tmp, path)
    print(f"wrote {path}")
    return path


def interleaved(cases: dict[str, Callable[[], None]], rounds: int, per_round: int = 1) -> dict:
    """Median seconds per call of each case, timed in rounds that visit every case in turn,
    so a slow spell of a shared machine falls on all of them alike. One untimed warm-up call
    each first (allocation, one-off kernel choice)."""
    for fn in cases.values():
        fn()
    times: dict[str, list[float]] = {name: [] for name in cases}
    for _ in range(rounds):
        for name, fn in cases.items():
            start = time.perf_counter()
            for _ in range(per_round):
                fn()
            times[name].append((time.perf_counter() - start) / per_round)
    return {name: statistics.median(t) for name, t in times.items()}


def _worker(module: str, name: str, options: dict, threads: int, conn) -> None:
    import torch

    torch.set_num_threads(threads)
    torch.manual_seed(0)
    run, setting = importlib.import_module(module).build_case(name, **options)
    run()  # warm-up: first-call allocation, kernel choice, the native kernel's build
    conn.send(setting)
    while (calls := conn.recv()) > 0:
        start = time.perf_counter()
        for _ in range(calls):
            run()
        conn.send(time.perf_counter() - start)


def in_processes(
    module: str, names: list[str], options: dict, rounds: int, calls: int, threads: int = 0
) -> dict:
    """Median seconds per call of each case, each case built by ``module.build_case(name,
    **options)`` in a process of its own (settings such as the allocator are per process),
    with ``threads`` threads (0: every core it may use). The processes take turns, one at a
    time, in rounds: a slow spell of a shared machine falls on all alike, and no two compete
    for the cores."""
    ctx = mp.get_context("spawn")
    threads = threads or len(os.sched_getaffinity(0))
    workers = {}
    for name in names:  # started one at a time, so that builds do not compete either
        parent, child = ctx.Pipe()
        proc = ctx.Process(target=_worker, args=(module, name, options, threads, child),
                           daemon=True)  # fmt: skip
        proc.start()
        workers[name] = (proc, parent, parent.recv())
        print(f"  ready: {name} ({workers[name][2]})", flush=True)
    seconds: dict[str, list[float]] = {name: [] for name in names}
    for r in range(rounds):
        for name, (_, conn, _) in workers.items():
            conn.send(calls)
            seconds[name].append(conn.recv() / calls)
        print(f"  round {r + 1}/{rounds}: "
              + ", ".join(f"{n} {1e3 * v[-1]:.0f} ms" for n, v in seconds.items()), flush=True)  # fmt: skip
    for proc, conn, _ in workers.values():
        conn.send(0)
        proc.join()
    return {n: {"setting": workers[n][2], "seconds": statistics.median(v), "rounds": v}
            for n, v in seconds.items()}  # fmt: skip
