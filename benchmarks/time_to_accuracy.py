"""Time to accuracy: the validation TrackML score against training wall-clock time.

Trains with the project's one training loop (every training option is accepted after
``--``) and, after every epoch (or every ``--probe_every_s`` seconds of training), scores
the current weights on (part of) the validation
split with the one inference path (predict, HDBSCAN, TrackML score). The scoring time is
not counted in the training clock. Writes ``<out>.csv`` and ``<out>.png``.

Usage (the published hel:10-50 model size, FlashAttention, bf16, on one GPU; the command
behind benchmarks/time_to_accuracy_h100.csv/.png, run on one H100 on 2026-11-23, where it
was stopped by the 10-minute limit of the GPU command after epoch 56):
    python benchmarks/time_to_accuracy.py --out benchmarks/time_to_accuracy_h100 \\
        --probe_every_s 20 -- --data_type helical --tracks 10-50 --n_events 100000 \\
        --embedding_size 64 --nr_heads 8 --hidden_dim 128 --max_nr_hits 500 \\
        --attention flash --precision bf16 --compile --norm hybrid --feedforward swiglu \\
        --hits_per_batch 138240 --warmup_epochs 1 --lr_schedule cosine --nr_epochs 70 \\
        --max_minutes 3.6 --early_stop 100 --no-evaluate --model_name runs/shipped/hel_10-50.pt
It also made the shipped models/hel_10-50.pt (packaged by evaluation/shipped_models.py).
"""

from __future__ import annotations

import argparse
import csv
from pathlib import Path

from matplotlib.figure import Figure

import training
import training_loop
from data_processing.dataset import Normaliser
from data_processing.errors import run_cli
from evaluation.inference import reconstruct, score_reconstruction
from evaluation.options import DefaultsHelpFormatter
from model import TransformerRegressor

FIELDS = ("epoch", "train_seconds", "val_loss", "val_trackml_score")


def main(argv: list[str] | None = None) -> list[dict[str, float]]:
    parser = argparse.ArgumentParser(
        description=__doc__.splitlines()[0], formatter_class=DefaultsHelpFormatter
    )
    parser.add_argument("--out", default="benchmarks/time_to_accuracy", help="file stem")
    parser.add_argument("--max_val_events", type=int, default=2000, help="events scored")
    parser.add_argument("--target", type=float, default=0.92, help="score line on the plot")
    parser.add_argument(
        "--probe_every_s",
        type=float,
        default=0.0,
        help="score after an epoch only when "
        "this much training time passed since the last score (0: every epoch)",
    )
    parser.add_argument("train_args", nargs=argparse.REMAINDER, help="-- training options")
    args = parser.parse_args(argv)
    train_args = [a for a in args.train_args if a != "--"]
    config = training.config_from_args(train_args)

    # The same data, split and normaliser as the training run (all seeded).
    _, events, (train_idx, val_idx, _) = training_loop.prepare_data(config)
    normaliser = Normaliser.fit(events.subset(train_idx))
    val_events = events.subset(val_idx[: args.max_val_events])
    clustering = config.clustering_config()
    device = training_loop.resolve_device(config.device)
    rows: list[dict[str, float]] = []
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)

    def probe(epoch: int, model: TransformerRegressor, seconds: float, val_loss: float) -> None:
        if rows and seconds - rows[-1]["train_seconds"] < args.probe_every_s:
            return
        result = reconstruct(model, val_events, normaliser, clustering, device=device)
        score = score_reconstruction(val_events, result.labels)["trackml_score"]
        rows.append(
            {
                "epoch": epoch,
                "train_seconds": seconds,
                "val_loss": val_loss,
                "val_trackml_score": score,
            }
        )
        print(f"time-to-accuracy: epoch {epoch} at {seconds:.1f} s: val score {score:.4f}")
        _write(rows, out, args.target, " ".join(train_args))

    training_loop.train(config, on_epoch=probe)
    return rows


def _write(rows: list[dict[str, float]], out: Path, target: float, command: str) -> None:
    with out.with_suffix(".csv").open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=FIELDS)
        writer.writeheader()
        writer.writerows(rows)
    fig = Figure(figsize=(6, 4))
    ax = fig.subplots()
    ax.plot([r["train_seconds"] for r in rows], [r["val_trackml_score"] for r in rows], "o-")
    ax.axhline(target, color="grey", linestyle="--", label=f"published {target}")
    ax.axvline(600, color="grey", linestyle=":", label="10 minutes")
    ax.set_xlabel("training wall-clock (s, scoring excluded)")
    ax.set_ylabel("validation TrackML score")
    ax.set_title(command[:90], fontsize=6)
    ax.legend()
    fig.tight_layout()
    fig.savefig(out.with_suffix(".png"), dpi=120)


if __name__ == "__main__":
    run_cli(main)
