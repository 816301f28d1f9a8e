#!/usr/bin/env bash
# The paper's claims at their own length on one GPU, as far as the time given allows:
# Figure 1 (alexnet experiment relu-vs-tanh) with a budget long enough for the tanh network to
# reach 25% training error if it ever does, then the ablations with --full (3 seeds of the
# recipe's 8 epochs), both on CIFAR-10's JPEGs from DATA (bench/gpu_data.py).
#
# Resumable across machines: the experiments' folders live in KEEP. Each command stops on its
# own timeout with SIGTERM, which checkpoints the run in progress; then KEEP is copied to
# $OUT/gpu-experiments without the checkpoints of finished runs (finished.json stands for
# them), about 1 MB rather than 60. Carried back as KEEP to the next machine, the same
# commands skip what finished and resume the run that was stopped.
#
#   DATA=build/gpu-data KEEP=build/gpu-experiments OUT=... bash bench/gpu_experiments.sh
set -uo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
[ -x .venv/bin/python ] && PY=.venv/bin/python
DATA=${DATA:-build/gpu-data}
KEEP=${KEEP:-build/gpu-experiments}
OUT=${OUT:-bench/results}
wheels=$(find "$DATA/wheels" -name '*.whl' 2>/dev/null | tr '\n' ':')
export PYTHONPATH="$PWD/src:${wheels}${PYTHONPATH:-}"
CIFAR="$DATA/cifar10-jpeg.tar.gz"
[ -f "$CIFAR" ] || { echo "no $CIFAR: run bench/gpu_data.py first"; exit 2; }
mkdir -p "$KEEP" "$OUT"

echo "== Figure 1: relu-vs-tanh, ${FIG1_MINUTES:=4} minutes"
timeout -s TERM $((FIG1_MINUTES * 60 + 90)) $PY -m alexnet experiment relu-vs-tanh \
    --data "$CIFAR" --budget "$FIG1_MINUTES" --out "$KEEP/relu-vs-tanh-cifar10" --no-progress \
    || echo "relu-vs-tanh stopped (exit $?)"

echo "== ablations --full, at most ${ABLATION_SECONDS:=240} s this time"
timeout -s TERM "$ABLATION_SECONDS" $PY -m alexnet experiment ablations --full \
    --data "$CIFAR" --out "$KEEP/ablations-cifar10" --no-progress \
    || echo "ablations stopped (exit $?): the same command continues them"

echo "== carried back: $OUT/gpu-experiments"
rm -rf "$OUT/gpu-experiments"
mkdir -p "$OUT/gpu-experiments"
dest=$(cd "$OUT/gpu-experiments" && pwd)
(cd "$KEEP" && find . -type f | while read -r f; do
    run=$(dirname "$f")
    case "$f" in
        */best.pt) continue ;;  # a resume needs last.pt only
        *.pt) [ -f "$run/finished.json" ] && continue ;;  # finished.json stands for them
    esac
    cp --parents "$f" "$dest"
done)
du -sh "$dest"
