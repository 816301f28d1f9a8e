#!/usr/bin/env bash
# One GPU check in about 6 minutes: the versions found, the CUDA tests, then training images/s
# (bench/gpu.py) on synthetic data and, given a folder of ImageNet-style <wnid>_*.JPEG files
# (SAMPLE=DIR), from a raw store made of them, through the package's own loader and training
# loop, with batches finished beside the step and between steps; then a profile of a few
# steps of each (in $OUT/profile). Installs nothing: it runs from the source tree with
# whatever Python and torch the machine has. What a machine without a network lacks comes
# from DATA (bench/gpu_data.py makes it: the sample re-encoded, and tomli-w's wheel, which is
# imported from the wheel itself).
set -uo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
[ -x .venv/bin/python ] && PY=.venv/bin/python
DATA=${DATA:-build/gpu-data}
wheels=$(find "$DATA/wheels" -name '*.whl' 2>/dev/null | tr '\n' ':')
export PYTHONPATH="$PWD/src:$PWD/bench:${wheels}${PYTHONPATH:-}"
OUT=${OUT:-bench/results}
mkdir -p "$OUT"
[ -z "${SAMPLE:-}" ] && [ -d "$DATA/imagenet-sample" ] && SAMPLE="$DATA/imagenet-sample"

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
timeout "${BENCH_SECONDS:-420}" $PY bench/gpu.py --seconds 5 "${store[@]}" ${GPU_ARGS:-} \
    --out "$OUT/gpu.json" --profile "$OUT/profile" \
    || echo "bench/gpu.py stopped (exit $?)"
