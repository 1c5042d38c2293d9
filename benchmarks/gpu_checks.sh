#!/usr/bin/env bash
# Every GPU measurement of the fast-attention work in one call (about 8 minutes on one
# H100): the tests marked gpu, the attention-kernel table with training-step profiles,
# and the throughput table against the reference approach. Each step writes into OUT_DIR
# as it finishes, so a run cut short keeps what it measured.
#
# Usage: bash benchmarks/gpu_checks.sh OUT_DIR     (PYTHON=... to pick the interpreter)
# The interpreter needs the project's requirements (hdbscan too: the tests import it).
set -uo pipefail
cd "$(dirname "$0")/.."
OUT="${1:?usage: bash benchmarks/gpu_checks.sh OUT_DIR}"
PYTHON="${PYTHON:-python3}"
mkdir -p "$OUT"
status=0
"$PYTHON" -m pytest -m gpu -q -rs 2>&1 | tee "$OUT/pytest_gpu.log" || status=1
"$PYTHON" benchmarks/attention_kernels.py --device cuda --profile \
    --out "$OUT/results_attention_kernels_cuda.md" || status=1
"$PYTHON" benchmarks/attention.py --device cuda --repeats 3 \
    --out "$OUT/results_attention_cuda.md" || status=1
exit $status
