#!/usr/bin/env bash
# Every GPU measurement of the fast-attention work: the tests marked gpu, the
# attention-kernel table with training-step profiles, and the throughput table against
# the reference approach. Each step writes into OUT_DIR as it goes (the throughput table
# after every case), so a run cut short keeps what it measured.
#
# Usage: bash benchmarks/gpu_checks.sh OUT_DIR [all|tests|kernels|throughput]
#   (PYTHON=... picks the interpreter; it needs the project's requirements, hdbscan too:
#   the tests import it.) Not yet timed on a GPU; expected on one H100: tests and
#   kernels a few minutes together, throughput 5-8 minutes (compiled paths compile for
#   training and for inference). Where one command may run 10 minutes at most, run
#   "tests" + "kernels" in one command and "throughput" in another.
set -uo pipefail
cd "$(dirname "$0")/.."
OUT="${1:?usage: bash benchmarks/gpu_checks.sh OUT_DIR [all|tests|kernels|throughput]}"
STEPS="${2:-all}"
PYTHON="${PYTHON:-python3}"
mkdir -p "$OUT"
status=0
want() { [ "$STEPS" = all ] || [ "$STEPS" = "$1" ]; }
if want tests; then
    "$PYTHON" -m pytest -m gpu -q -rs 2>&1 | tee "$OUT/pytest_gpu.log" || status=1
fi
if want kernels; then
    "$PYTHON" benchmarks/attention_kernels.py --device cuda --profile \
        --out "$OUT/results_attention_kernels_cuda.md" || status=1
fi
if want throughput; then
    "$PYTHON" benchmarks/attention.py --device cuda --repeats 3 \
        --out "$OUT/results_attention_cuda.md" || status=1
fi
exit $status
