#!/usr/bin/env bash
# Example training runs: CPU main job, one GPU with FlashAttention, several GPUs, SLURM.
#
# Locally:   bash script_train.sh [cpu|gpu|multigpu|big]    (default: cpu)
# On SLURM:  sbatch script_train.sh multigpu
# The #SBATCH lines below are read by sbatch and are plain comments for bash. Adjust the
# partition, the account and the number of GPUs (--gres and NPROC must agree).
#
#SBATCH --job-name=trackformer
#SBATCH --nodes=1
#SBATCH --ntasks-per-node=1
#SBATCH --gres=gpu:4
#SBATCH --cpus-per-task=16
#SBATCH --mem=64G
#SBATCH --time=04:00:00

set -euo pipefail
cd "${SLURM_SUBMIT_DIR:-$(dirname "$0")}"
PYTHON="${PYTHON:-.venv/bin/python}"
DATA="${DATA:-data/hel_10-50_100000.csv}"
MODE="${1:-cpu}"
mkdir -p runs

case "$MODE" in
cpu)
    # The main job: simulated 3-track linear events, exact attention, evaluated at the end.
    "$PYTHON" training.py --model_name runs/transformer_regressor.pt
    ;;
gpu)
    # One GPU: FlashAttention on packed hits, bf16 autocast, the published hel:10-50 size.
    [ -f "$DATA" ] || "$PYTHON" -m data_processing.redvid --tracks 10-50 --track-type helical \
        --events 100000 --out "$DATA"
    "$PYTHON" training_flash.py --data_path "$DATA" --data_type helical --tracks 10-50 \
        --embedding_size 64 --nr_heads 8 --hidden_dim 128 --max_nr_hits 500 \
        --model_name runs/hel_10-50_flash.pt
    ;;
big)
    # One GPU, large steps: ~1,024 events of ~180 hits per step (a hit budget), compiled.
    # lr is scaled by sqrt(1024 / 64) = 4 (--lr_scaling sqrt) after a one-epoch warm-up.
    "$PYTHON" training_flash.py --data_path "$DATA" --data_type helical --tracks 10-50 \
        --embedding_size 64 --nr_heads 8 --hidden_dim 128 --max_nr_hits 500 \
        --hits_per_batch 184000 --warmup_epochs 1 --compile \
        --model_name runs/hel_10-50_flash_big.pt
    ;;
multigpu)
    # Data-parallel on every GPU of the node with torchrun (DistributedDataParallel);
    # "python -m torch.distributed.run" is torchrun, taken from the same environment:
    #   torchrun --standalone --nproc_per_node=4 training_flash.py ...
    # Each rank takes its own shard of every epoch's batches; rank 0 writes and evaluates.
    # A step then holds NPROC times the events of one rank: lr is scaled accordingly.
    NPROC="${NPROC:-$(nvidia-smi -L 2>/dev/null | wc -l)}"
    "$PYTHON" -m torch.distributed.run --standalone --nproc_per_node="$NPROC" \
        training_flash.py --data_path "$DATA" --data_type helical --tracks 10-50 \
        --embedding_size 64 --nr_heads 8 --hidden_dim 128 --max_nr_hits 500 \
        --hits_per_batch 46000 --warmup_epochs 1 \
        --model_name runs/hel_10-50_flash_ddp.pt
    ;;
*)
    echo "usage: $0 [cpu|gpu|big|multigpu]" >&2
    exit 2
    ;;
esac
