#!/usr/bin/env bash
# Example evaluation runs of a trained checkpoint (SLURM-ready; runs locally as well).
#
#   sbatch evaluation/script_test.sh                      # on a cluster
#   bash evaluation/script_test.sh                        # locally
#   MODEL=runs/my_model.pt OUT=runs/my_eval bash evaluation/script_test.sh
#
# Variables (all optional):
#   MODEL          checkpoint written by training.py   (default runs/transformer_regressor.pt)
#   OUT            folder for JSON, markdown and PNGs  (default runs/evaluation)
#   DEVICE         cpu or cuda                         (default: cuda if present, else cpu)
#   CLUSTER_JOBS   processes clustering events         (default -1 = all cores)
#   TRACKML_MODEL  a checkpoint trained on a TrackML hit table: adds the gnn_tracking runs
#   PYTHON         interpreter                         (default .venv/bin/python, else python3)
#
#SBATCH --job-name=trackformer-eval
#SBATCH --output=slurm-%x-%j.out
#SBATCH --time=01:00:00
#SBATCH --cpus-per-task=8
#SBATCH --mem=16G
#SBATCH --gres=gpu:1
#   (drop the --gres line on CPU-only partitions: everything runs on the CPU too)

set -euo pipefail

# Under SLURM the script is copied to a spool folder: use the submission folder instead.
cd "${SLURM_SUBMIT_DIR:-$(dirname "$0")/..}"

PYTHON=${PYTHON:-$([ -x .venv/bin/python ] && echo .venv/bin/python || echo python3)}
MODEL=${MODEL:-runs/transformer_regressor.pt}
OUT=${OUT:-runs/evaluation}
CLUSTER_JOBS=${CLUSTER_JOBS:-${SLURM_CPUS_PER_TASK:--1}}
DEVICE=${DEVICE:-$("$PYTHON" -c 'import torch; print("cuda" if torch.cuda.is_available() else "cpu")')}

if [ ! -f "$MODEL" ]; then
    echo "checkpoint $MODEL not found: train one first (python training.py) or set MODEL=" >&2
    exit 1
fi
echo "model $MODEL, device $DEVICE, clustering jobs $CLUSTER_JOBS, output $OUT"

# 1. Score, efficiencies ("trackformers"), heatmaps, residuals and an event display on
#    the checkpoint's held-out test split, with the HDBSCAN settings stored in it.
"$PYTHON" evaluation/test.py --model_name "$MODEL" --device "$DEVICE" \
    --cluster_jobs "$CLUSTER_JOBS" --output_dir "$OUT/test"

# 2. The same after choosing (min_cluster_size, min_samples) on the validation split.
"$PYTHON" evaluation/test.py --model_name "$MODEL" --device "$DEVICE" \
    --cluster_jobs "$CLUSTER_JOBS" --grid_search \
    --grid_min_cluster_size 2 3 4 5 6 --grid_min_samples 1 2 3 4 \
    --output_dir "$OUT/test_grid_search"

# 3. scikit-learn's HDBSCAN instead of the hdbscan package (same label semantics).
"$PYTHON" evaluation/test.py --model_name "$MODEL" --device "$DEVICE" \
    --cluster_jobs "$CLUSTER_JOBS" --cluster_implementation sklearn \
    --output "$OUT/test_sklearn/metrics.json"

# 4. MSE, per-event model time (CPU, and CUDA when present), clustering and scoring time,
#    efficiencies: performance.json and performance.md. One CPU thread makes the
#    per-event CPU latency reproducible on a shared node.
"$PYTHON" evaluation/performance_stats.py --model_name "$MODEL" --device "$DEVICE" \
    --cluster_jobs "$CLUSTER_JOBS" --cpu_threads 1 --timed_events 500 \
    --output_dir "$OUT/performance"

# 5. TrackML: the gnn_tracking definition at the headline pT >= 0.9 GeV (test.py also
#    reports it, with pT >= 0, 0.5, 1.5 GeV and efficiency vs pT/eta, for any TrackML run).
if [ -n "${TRACKML_MODEL:-}" ]; then
    "$PYTHON" evaluation/test.py --model_name "$TRACKML_MODEL" --device "$DEVICE" \
        --cluster_jobs "$CLUSTER_JOBS" --definition gnn_tracking --pt_min 0.9 \
        --output_dir "$OUT/trackml"
    "$PYTHON" evaluation/performance_stats.py --model_name "$TRACKML_MODEL" \
        --device "$DEVICE" --cluster_jobs "$CLUSTER_JOBS" --timed_events 200 \
        --output_dir "$OUT/trackml_performance"
fi

echo "done: see $OUT"
