#!/usr/bin/env bash
# One GPU check in under 5 minutes, so that it can be run twice in one sitting: the versions
# found, the CUDA tests, then training images/s (bench/gpu.py). Installs nothing: it runs from
# the source tree with whatever Python and torch the machine has.
set -uo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
[ -x .venv/bin/python ] && PY=.venv/bin/python
export PYTHONPATH="$PWD/src:$PWD/bench:${PYTHONPATH:-}"
OUT=${OUT:-bench/results}
mkdir -p "$OUT"

echo "== versions"
$PY - <<'PYEOF'
import importlib, platform
print("python", platform.python_version())
import torch
print("torch", torch.__version__, "| CUDA", torch.version.cuda, "| cuDNN", torch.backends.cudnn.version())
print("GPU", torch.cuda.get_device_name() if torch.cuda.is_available() else "none",
      "| bf16", torch.cuda.is_available() and torch.cuda.is_bf16_supported())
for name in ("triton", "torchvision", "pytest"):
    try:
        print(name, importlib.import_module(name).__version__)
    except ImportError:
        print(name, "not installed")
PYEOF

echo "== CUDA tests"
if $PY -c "import pytest" 2>/dev/null; then
    timeout 120 $PY -m pytest -q -p no:cacheprovider --noconftest -o addopts="" tests/test_cuda.py \
        || echo "CUDA tests failed (exit $?)"
else
    echo "pytest is not installed here: CUDA tests not run"
fi

echo "== training images/s (synthetic data)"
timeout 200 $PY bench/gpu.py --seconds 6 --out "$OUT/gpu.json" || echo "bench/gpu.py stopped (exit $?)"
