#!/usr/bin/env bash
# One GPU check in about 5 minutes: the versions found, the CUDA tests, then training images/s
# (bench/gpu.py) on synthetic data and, given a folder of ImageNet-style <wnid>_*.JPEG files
# (SAMPLE=DIR), from a raw store made of them, through the package's own loader and training
# loop. Installs nothing: it runs from the source tree with whatever Python and torch the
# machine has (the package's own requirements, tomli-w among them, must be importable).
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
    timeout 150 $PY -m pytest -q -p no:cacheprovider -o addopts="" tests/test_cuda.py \
        || echo "CUDA tests failed (exit $?)"
else
    echo "pytest is not installed here: CUDA tests not run"
fi

echo "== training images/s"
SAMPLE=${SAMPLE:-}
store=()
[ -n "$SAMPLE" ] && store=(--sample "$SAMPLE" --copies "${COPIES:-32}" --store-batches 512)
# GPU_ARGS: more options for bench/gpu.py, e.g. "--batches 512 --compile-batches 512".
# shellcheck disable=SC2086
timeout "${BENCH_SECONDS:-360}" $PY bench/gpu.py --seconds 5 "${store[@]}" ${GPU_ARGS:-} \
    --out "$OUT/gpu.json" \
    || echo "bench/gpu.py stopped (exit $?)"
