"""The golden run: the Fashion-MNIST recipe on a fixed subset must end with the same weights,
bit for bit, whatever the code around it is reshaped into.

The run happens in a child process with ATen, oneDNN and MKL held to their AVX2 code paths and
one thread, so that machines with AVX-512 or AMX take the same arithmetic as AVX2-only ones.
``tests/golden/fashion_mnist.json`` holds the sha256 of the final weights and, per tensor, the
float64 sum and sum of magnitudes. Where a deliberate change alters the numbers, record again
with ``ALEXNET_RECORD_GOLDEN=1 pytest tests/test_golden.py`` and say in the commit which change
and why.
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
from pathlib import Path

import pytest
import torch

from alexnet.train import load_checkpoint

from .conftest import ALEXNET, cli_env

GOLDEN = Path(__file__).parent / "golden" / "fashion_mnist.json"
FASHION_MNIST = Path("/usr/share/datasets/fashion-mnist")
OVERRIDES = [
    "data.limit_train=2048",
    "data.limit_test=500",
    "epochs=1",
    "train.deterministic=true",
    'train.precision="fp32"',
    "train.threads=1",
]
# The same kernels on every x86-64 machine: the vector width and the library code paths are
# what make float sums differ between CPUs.
PORTABLE_MATH = {
    "ATEN_CPU_CAPABILITY": "avx2",
    "ONEDNN_MAX_CPU_ISA": "AVX2",
    "MKL_CBWR": "AVX2",
    "OMP_NUM_THREADS": "1",
    "MKL_NUM_THREADS": "1",
}


def weights_digest(state: dict[str, torch.Tensor]) -> str:
    h = hashlib.sha256()
    for key in sorted(state):
        tensor = state[key].detach().contiguous().cpu()
        h.update(key.encode())
        h.update(str(tensor.dtype).encode())
        h.update(str(tuple(tensor.shape)).encode())
        h.update(tensor.numpy().tobytes())
    return h.hexdigest()


def tensor_sums(state: dict[str, torch.Tensor]) -> dict[str, list[float]]:
    return {
        k: [v.double().sum().item(), v.double().abs().sum().item()]
        for k, v in sorted(state.items())
    }


@pytest.mark.skipif(
    not FASHION_MNIST.is_dir(), reason="Debian's dataset-fashion-mnist is not installed"
)
def test_golden_fashion_mnist_run_is_bit_identical(tmp_path, cache):
    env = cli_env(cache) | PORTABLE_MATH
    args = ["train", "--recipe", "fashion-mnist", "--runs", str(tmp_path), "--name", "golden",
            "--no-progress"]  # fmt: skip
    for item in OVERRIDES:
        args += ["--set", item]
    proc = subprocess.run(ALEXNET + args, env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    state = load_checkpoint(tmp_path / "golden" / "last.pt")["model"]
    found = {"digest": weights_digest(state), "sums": tensor_sums(state)}
    if os.environ.get("ALEXNET_RECORD_GOLDEN"):
        GOLDEN.write_text(json.dumps({"overrides": OVERRIDES, **found}, indent=1) + "\n")
        pytest.skip(f"recorded {GOLDEN}")
    golden = json.loads(GOLDEN.read_text())
    assert golden["overrides"] == OVERRIDES
    # The sums say where a difference is before the digest says that there is one.
    assert found["sums"].keys() == golden["sums"].keys()
    for key, (total, magnitude) in golden["sums"].items():
        assert found["sums"][key] == pytest.approx([total, magnitude], rel=1e-6), key
    assert found["digest"] == golden["digest"]
