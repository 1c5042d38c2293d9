"""Ablation of the encoder options (issue 8): TrackML score and seconds per epoch.

Trains the default (published) encoder, each option alone and a combination on one
fixed simulated data set, several seeds each, and writes a markdown table with mean and
spread. All runs share one process, one CPU thread, the data file and the budget; seed
s gives the same split, initialisation and batch order to every option, so options are
compared on paired runs.

    OMP_NUM_THREADS=1 python -m benchmarks.ablation_encoder --seeds 0 1 2

Results accumulate in a JSON file (a run already there is not repeated), so an
interrupted ablation resumes; ``--table_only`` re-renders the table from it.
"""

from __future__ import annotations

import argparse
import json
import platform
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

import training
import training_loop
from data_processing.errors import run_cli
from data_processing.redvid import SimulationConfig, generate_dataset
from evaluation.options import DefaultsHelpFormatter

REPO_ROOT = Path(__file__).resolve().parent.parent

# Each option alone (the TrainConfig fields it sets); "default" is the published encoder.
VARIANTS: dict[str, dict[str, Any]] = {
    "default": {},
    "pre-norm": {"norm": "pre"},
    "hybrid-norm": {"norm": "hybrid"},
    "layer-scale 0.1": {"layer_scale_init": 0.1},
    "value-residual": {"value_residual": True},
    "qk-norm": {"qk_norm": True},
    "gelu": {"feedforward": "gelu"},
    "swiglu": {"feedforward": "swiglu"},
    "registers 4": {"n_registers": 4},
    "window 32": {"attention_window": 32},
}


@dataclass
class AblationConfig:
    """The shared data set and training budget of every run."""

    n_events: int = 1500
    tracks: str = "10-50"
    data_seed: int = 0
    nr_epochs: int = 4
    batch_size: int = 32
    lr: float = 1e-3
    embedding_size: int = 32
    nr_enc_layers: int = 4
    nr_heads: int = 4
    hidden_dim: int = 128
    dropout: float = 0.1


def data_file(config: AblationConfig, data_dir: Path) -> Path:
    """The helical data set of the ablation, generated once with ``data_seed``."""
    name = f"ablation_helical_{config.tracks}_{config.n_events}ev_seed{config.data_seed}.csv"
    path = data_dir / name
    if not path.exists():
        sim = SimulationConfig(
            n_events=config.n_events,
            tracks=config.tracks,
            track_type="helical",
            seed=config.data_seed,
        )
        generate_dataset(sim, path, progress=False)
    return path


def run_one(
    config: AblationConfig, data: Path, options: dict[str, Any], seed: int, work: Path
) -> dict[str, Any]:
    """Train one variant with one seed; its TrackML score and seconds per epoch."""
    epoch_clock: list[float] = []

    def on_epoch(epoch: int, model: Any, seconds: float, val_loss: float) -> None:
        epoch_clock.append(seconds)

    train_config = training.TrainConfig(
        data_path=str(data),
        data_type="helical",
        tracks=config.tracks,
        model_name=str(work / "ablation.pt"),
        nr_epochs=config.nr_epochs,
        early_stop=config.nr_epochs,  # a fixed budget: every run trains every epoch
        batch_size=config.batch_size,
        lr=config.lr,
        seed=seed,
        device="cpu",
        nr_enc_layers=config.nr_enc_layers,
        embedding_size=config.embedding_size,
        hidden_dim=config.hidden_dim,
        nr_heads=config.nr_heads,
        dropout=config.dropout,
        cluster_jobs=1,
        **options,
    )
    Path(train_config.model_name).unlink(missing_ok=True)
    result = training_loop.train(train_config, on_epoch=on_epoch)
    assert result.metrics is not None and result.model is not None
    # Epoch 0 also pays first-call warm-up; the clock starts with the data on the
    # device, and an epoch's time includes its validation pass and checkpoint save.
    per_epoch = float(np.diff(epoch_clock).mean()) if len(epoch_clock) > 1 else epoch_clock[0]
    return {
        "score": float(result.metrics["trackml_score"]),
        "val_loss": float(min(result.val_losses)),
        "seconds_per_epoch": per_epoch,
        "parameters": result.model.n_parameters(),
    }


def summarise(
    results: dict[str, dict[str, dict[str, Any]]], untimed: set[str] | None = None
) -> list[dict[str, Any]]:
    """Mean and sample standard deviation per variant, plus the paired gain over default.

    ``untimed``: "variant:seed" runs left out of the seconds per epoch (runs known to
    have shared the CPU with other work); their scores still count.
    """
    rows = []
    default = results.get("default", {})
    for name, runs in results.items():
        seeds = sorted(runs)
        scores = np.array([runs[s]["score"] for s in seeds])
        timed = [s for s in seeds if f"{name}:{s}" not in (untimed or set())] or seeds
        epoch = np.array([runs[s]["seconds_per_epoch"] for s in timed])
        paired = [runs[s]["score"] - default[s]["score"] for s in seeds if s in default]
        rows.append(
            {
                "name": name,
                "n": len(seeds),
                "score": scores.mean(),
                "score_std": scores.std(ddof=1) if len(scores) > 1 else float("nan"),
                "gain": np.mean(paired) if paired else float("nan"),
                "gain_std": np.std(paired, ddof=1) if len(paired) > 1 else float("nan"),
                "epoch": epoch.mean(),
                "epoch_std": epoch.std(ddof=1) if len(epoch) > 1 else float("nan"),
                "parameters": runs[seeds[0]]["parameters"],
            }
        )
    return rows


def render_table(rows: list[dict[str, Any]], variants: dict[str, dict[str, Any]]) -> str:
    lines = [
        "| variant | options | params | seeds | TrackML score (mean +- std) "
        "| gain vs default (paired, mean +- std) | s / epoch (mean +- std) |",
        "|---|---|---:|---:|---|---|---|",
    ]
    for row in rows:
        options = variants.get(row["name"], {})
        flags = " ".join(f"--{k}" if v is True else f"--{k} {v}" for k, v in options.items())
        lines.append(
            f"| {row['name']} | `{flags or '(published)'}` | {row['parameters']} | {row['n']} "
            f"| {row['score']:.4f} +- {row['score_std']:.4f} "
            f"| {row['gain']:+.4f} +- {row['gain_std']:.4f} "
            f"| {row['epoch']:.1f} +- {row['epoch_std']:.1f} |"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        description=__doc__.splitlines()[0], formatter_class=DefaultsHelpFormatter
    )
    parser.add_argument(
        "--seeds", type=int, nargs="+", default=[0, 1, 2], help="training seeds (paired runs)"
    )
    parser.add_argument("--variants", nargs="+", default=list(VARIANTS), help="names to run")
    parser.add_argument(
        "--combination",
        nargs="*",
        default=[],
        help="variant names to combine into one extra run ('best combination')",
    )
    parser.add_argument(
        "--n_events", type=int, default=AblationConfig.n_events, help="events simulated"
    )
    parser.add_argument(
        "--nr_epochs", type=int, default=AblationConfig.nr_epochs, help="epochs per run"
    )
    parser.add_argument(
        "--data_seed", type=int, default=AblationConfig.data_seed, help="simulation seed"
    )
    parser.add_argument(
        "--data_dir", type=Path, default=REPO_ROOT / "data", help="simulated data cache"
    )
    parser.add_argument(
        "--work_dir",
        type=Path,
        default=REPO_ROOT / "runs" / "ablation",
        help="checkpoints of the runs",
    )
    parser.add_argument(
        "--results",
        type=Path,
        default=REPO_ROOT / "runs" / "ablation.json",
        help="JSON of every run (read back by --table_only)",
    )
    parser.add_argument(
        "--table_only", action="store_true", help="only rebuild the table from --results"
    )
    parser.add_argument(
        "--untimed",
        nargs="*",
        default=[],
        help="VARIANT:SEED runs to leave out of the s/epoch column (CPU shared with other work)",
    )
    args = parser.parse_args(argv)
    torch.set_num_threads(1)

    config = AblationConfig(
        n_events=args.n_events, nr_epochs=args.nr_epochs, data_seed=args.data_seed
    )
    variants = {name: VARIANTS[name] for name in args.variants}
    if args.combination:
        combined: dict[str, Any] = {}
        for name in args.combination:
            combined.update(VARIANTS[name])
        variants[" + ".join(args.combination)] = combined
    store: dict[str, Any] = {"config": asdict(config), "variants": {}, "results": {}}
    if args.results.exists():
        store = json.loads(args.results.read_text())
        if store["config"] != asdict(config):
            raise SystemExit(f"{args.results} holds another budget; pass another --results")
    store["variants"].update(variants)
    if not args.table_only:
        data = data_file(config, args.data_dir)
        args.work_dir.mkdir(parents=True, exist_ok=True)
        for seed in args.seeds:  # seed-major: every variant gets seed 0 before seed 1
            for name, options in variants.items():
                runs = store["results"].setdefault(name, {})
                if str(seed) in runs:
                    continue
                tick = time.perf_counter()
                runs[str(seed)] = run_one(config, data, options, seed, args.work_dir)
                print(
                    f"[ablation] {name} seed {seed}: {runs[str(seed)]} "
                    f"({time.perf_counter() - tick:.0f} s)",
                    flush=True,
                )
                args.results.parent.mkdir(parents=True, exist_ok=True)
                args.results.write_text(json.dumps(store, indent=1))
    print(f"machine: {platform.processor() or platform.machine()}, torch {torch.__version__}")
    print(render_table(summarise(store["results"], set(args.untimed)), store["variants"]))


if __name__ == "__main__":
    run_cli(main)
