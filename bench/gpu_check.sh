#!/usr/bin/env bash
# One command on a machine with a GPU and this working tree (CuPy, PyTorch, numpy,
# onnx, onnxruntime and pytest installed; no package index needed):
#     bash bench/gpu_check.sh              # GPU suite, compute-sanitizer, benchmark, report
#     bash bench/gpu_check.sh --dry-run    # the same steps without a GPU (emulated device)
# Writes bench/results/gpu-<device>-<date>.md; at most 8 minutes. bench/gpu_check.py
# says what each step runs.
set -euo pipefail
cd "$(dirname "$0")/.."
export PYTHONPATH=".${PYTHONPATH:+:$PYTHONPATH}"
exec "${PYTHON:-python3}" bench/gpu_check.py "$@"
