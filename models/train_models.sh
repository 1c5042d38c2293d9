#!/usr/bin/env bash
# Retrain the shipped models (models/README.md) on one CUDA GPU and package them.
#
#   bash models/train_models.sh                 # all seven, one after the other
#   bash models/train_models.sh hel_10-50       # some of them
#
# Each run simulates its training set from seed 0 into ./data (unless it is already
# there), trains into runs/shipped/<name>.pt and packages the best weights as
# models/<name>.pt with its held-out test set (seed 1, models/manifest.json).
# The shipped runs also had --max_minutes (see models/README.md); without it every run
# goes through all its epochs and the cosine schedule to its end.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}

# Shared by every shipped model: FlashAttention on packed hits in bf16, compiled,
# the recommended encoder preset, 1 warm-up epoch then a cosine decay, best-val weights.
COMMON=(--attention flash --precision bf16 --compile --norm hybrid --feedforward swiglu
  --warmup_epochs 1 --lr_schedule cosine --early_stop 100 --seed 0 --no-evaluate)
D32=(--embedding_size 32 --nr_heads 4 --hidden_dim 128)   # 78k parameters
D64=(--embedding_size 64 --nr_heads 8 --hidden_dim 128)   # 204k
D64W=(--embedding_size 64 --nr_heads 8 --hidden_dim 256)  # 297k

declare -A RUN=(
  [lin_3]="--data_type linear --tracks 3 --n_events 50000 --nr_epochs 40 --hits_per_batch 138240 ${D32[*]}"
  [lin_1-20]="--data_type linear --tracks 1-20 --n_events 50000 --nr_epochs 40 --hits_per_batch 14848 ${D32[*]}"
  [lin_10-50]="--data_type linear --tracks 10-50 --n_events 50000 --nr_epochs 40 --hits_per_batch 138240 ${D32[*]}"
  [hel_3]="--data_type helical --tracks 3 --n_events 50000 --nr_epochs 40 --hits_per_batch 4352 ${D32[*]}"
  [hel_1-20]="--data_type helical --tracks 1-20 --n_events 50000 --nr_epochs 40 --hits_per_batch 14848 ${D32[*]}"
  [hel_10-50]="--data_type helical --tracks 10-50 --n_events 100000 --nr_epochs 70 --hits_per_batch 138240 --max_nr_hits 500 ${D64[*]}"
  [hel_50-100]="--data_type helical --tracks 50-100 --n_events 100000 --nr_epochs 30 --hits_per_batch 138240 --max_nr_hits 1000 ${D64W[*]}"
)
NAMES=("$@")
[ ${#NAMES[@]} -eq 0 ] && NAMES=(lin_3 lin_1-20 lin_10-50 hel_3 hel_1-20 hel_10-50 hel_50-100)
for name in "${NAMES[@]}"; do
  [ -n "${RUN[$name]:-}" ] || { echo "unknown model $name; one of ${!RUN[*]}" >&2; exit 2; }
  # shellcheck disable=SC2086  # the table's options are meant to split into words
  $PY training.py ${RUN[$name]} "${COMMON[@]}" --model_name "runs/shipped/$name.pt"
  $PY -m evaluation.shipped_models --package "runs/shipped/$name.pt" --name "$name"
done
