"""Settings of the tracker family (one dataclass, its command line) and the three presets.

``TrackerConfig`` holds every setting of ``python -m tracker.train`` and
``python -m tracker.evaluate``; each field's help text is its ``--help`` line (built by
the project's ``evaluation.options.add_dataclass_arguments``). ``--preset`` picks the
defaults of every other option from ``PRESETS``:

* ``cpu``: pixel barrel (volume 8) only, pT >= 1 GeV, events of 1,500 particles drawn
  from the shipped Kaggle particle table (about 1/8 of a full event: about 3,800 hits,
  about 100 target particles), small networks; sized to train on a 2-core CPU in about
  an hour;
* ``cpu_full``: the same networks (the filter with window 256, started from the cpu
  preset's filter with ``--filter_init``) on full simulated events cut into 8 phi sectors
  (``--phi_sectors``, 0.05 rad overlap), each one event for both networks: the cpu
  events' size at full-event density, for full-event tracking on a CPU;
* ``published``: hepattn's TrackML configuration (arXiv:2411.07149): pixel volumes 7, 8,
  9, pT >= 0.9 GeV, full events; hit filter 8 layers, dim 256, window 1,024; tracker 12
  encoder layers (window 512) + 8 decoder layers, dim 256, 2,100 queries; bf16, compiled.
"""

from __future__ import annotations

import argparse
from dataclasses import dataclass, replace

from data_processing.errors import UserError
from evaluation.options import add_dataclass_arguments, config_from_namespace, new_parser, option
from tracker.data import TargetCuts
from tracker.matching import LossWeights
from tracker.model import EncoderSettings
from training_config import LR_SCALINGS
from training_steps import LR_SCHEDULES, PRECISIONS

STAGES = ("filter", "tracker", "both")
PT_CUTS = (0.6, 0.9, 1.0)
ETA_CUTS = (2.5, 4.0)


@dataclass
class TrackerConfig:
    """Every setting of a tracker-family run (printed at start, stored in checkpoints).

    The names of the loop's settings (nr_epochs, batch_size, hits_per_batch, lr, seed,
    early_stop, precision, compile, lr_scaling, warmup_epochs, lr_schedule, max_minutes,
    threads, progress) are those of ``training_config.TrainConfig``: the same loop reads
    them.
    """

    preset: str = option("cpu", "cpu | cpu_full | published: the defaults of every other option")
    stage: str = option("both", "filter | tracker | both (filter, then tracker)", choices=STAGES)
    data_dir: str = option("data/tracker_cpu", "TrackML events (eventNNNNNNNNN-*.csv.gz)")
    simulate_events: int = option(
        200, "if data_dir holds no events, simulate this many (trackml_sim, seeded)"
    )
    n_particles: int | None = option(
        1500, "particles per simulated event (none: the whole table, a full event)"
    )
    max_events: int | None = option(None, "use only the first N events of data_dir")
    volumes: tuple[int, ...] = option((8,), "detector volumes whose hits are used")
    pt_min: float = option(1.0, "target particles: pT >= this (GeV)", choices=PT_CUTS)
    eta_max: float = option(2.5, "target particles: |eta| < this", choices=ETA_CUTS)
    min_hits: int = option(3, "target particles: at least this many hits")
    filter_model: str = option("runs/tracker_cpu_filter.pt", "hit filter checkpoint")
    tracker_model: str = option("runs/tracker_cpu_maskformer.pt", "tracker checkpoint")
    # 0.3: the CPU run's best chain (benchmarks/results_tracker.md); hepattn keeps >= 0.1.
    filter_threshold: float = option(0.3, "hits with filter probability >= this are kept")
    ideal_filter: bool = option(
        False, "train the tracker on the true target hits (no filter model needed)"
    )
    train_on_true_hits: bool = option(
        True,
        "train the tracker on the true target hits (evaluation still uses the filter's)",
    )
    tracker_init: str | None = option(
        None,
        "start the tracker stage from this checkpoint's best weights and sizes (fine-tuning,"
        " e.g. on the filter's output after training on the true hits); fresh optimiser",
    )
    filter_init: str | None = option(
        None,
        "start the filter stage from this checkpoint's best weights, sizes and statistics, "
        "with --filter_window (e.g. a filter trained on sparser events); fresh optimiser",
    )
    filter_dim: int = option(32, "hit filter width")
    filter_layers: int = option(3, "hit filter encoder layers")
    filter_heads: int = option(4, "hit filter attention heads")
    filter_window: int = option(64, "hit filter azimuth window (hits per side; 0: full)")
    positional_frequencies: int = option(
        8, "Fourier features of phi and eta per hit, both networks (0: none)"
    )
    filter_frequencies: int | None = option(
        None, "Fourier frequencies of the hit filter alone (none: --positional_frequencies)"
    )
    tracker_dim: int = option(64, "tracker width")
    tracker_layers: int = option(3, "tracker encoder layers")
    tracker_heads: int = option(4, "tracker attention heads")
    tracker_window: int = option(128, "tracker encoder azimuth window (hits per side; 0: full)")
    decoder_layers: int = option(3, "tracker decoder layers")
    n_queries: int = option(160, "object queries (>= target particles of any event)")
    phi_sectors: int = option(
        1,
        "cut every event into this many phi sectors: the networks train on and run over "
        "sector events (full events at the density of the sectors they were trained on)",
    )
    sector_overlap: float = option(0.05, "phi margin added to each sector on both sides (rad)")
    weight_object: float = option(LossWeights.object_bce, "object BCE weight (cost and loss)")
    weight_focal: float = option(LossWeights.mask_focal, "mask focal weight (cost and loss)")
    weight_dice: float = option(LossWeights.mask_dice, "mask dice weight (cost and loss)")
    nr_epochs: int = option(60, "epochs per stage")
    batch_size: int = option(2, "events per step (--lr is meant for this size)")
    hits_per_batch: int = option(0, "hit budget per step; 0: --batch_size events per step")
    lr: float = option(3e-3, "Adam learning rate at --batch_size events per step")
    early_stop: int = option(10, "epochs without validation improvement before stopping")
    seed: int = option(0, "seed of the split, the simulation and the weights")
    device: str = option("auto", "auto (CUDA if present) | cpu | cuda")
    resume: bool = option(False, "continue the stage's checkpoint")
    precision: str = option("fp32", "fp32 | bf16 | fp16 autocast (CUDA)", choices=tuple(PRECISIONS))
    compile: bool = option(False, "torch.compile the hit filter (eager if it fails)")
    lr_scaling: str = option("sqrt", "lr rule for bigger steps", choices=LR_SCALINGS)
    warmup_epochs: float = option(0.0, "linear learning-rate warm-up, in epochs")
    lr_schedule: str = option("cosine", "constant | cosine", choices=LR_SCHEDULES)
    max_minutes: float = option(
        25.0, "per stage: stop after the epoch crossing this many minutes; 0: no limit"
    )
    threads: int = option(0, "torch CPU threads; 0: 1 unless OMP_NUM_THREADS")
    progress: bool = option(True, "progress bar inside an epoch")
    split: str = option(
        "test", "evaluate: test | val | train | all events", choices=("test", "val", "train", "all")
    )
    output: str | None = option(None, "evaluate: write the metrics as JSON here")

    def __post_init__(self) -> None:
        if self.preset not in PRESETS_DEFAULTS:
            raise UserError(
                f"unknown --preset {self.preset!r}; use one of {tuple(PRESETS_DEFAULTS)}"
            )
        if min(self.n_queries, self.min_hits, self.phi_sectors) < 1:
            raise UserError("--n_queries, --min_hits and --phi_sectors must be >= 1")
        if not 0 < self.filter_threshold < 1:
            raise UserError("--filter_threshold must be in (0, 1)")

    @property
    def cuts(self) -> TargetCuts:
        return TargetCuts(tuple(self.volumes), self.pt_min, self.eta_max, self.min_hits)

    @property
    def loss_weights(self) -> LossWeights:
        return LossWeights(self.weight_object, self.weight_focal, self.weight_dice)

    def filter_encoder(self) -> EncoderSettings:
        return EncoderSettings(
            self.filter_dim,
            self.filter_layers,
            self.filter_heads,
            3 * self.filter_dim,
            self.filter_window,
            positional_frequencies=(
                self.positional_frequencies
                if self.filter_frequencies is None
                else self.filter_frequencies
            ),
        )

    def tracker_encoder(self) -> EncoderSettings:
        return EncoderSettings(
            self.tracker_dim,
            self.tracker_layers,
            self.tracker_heads,
            3 * self.tracker_dim,
            self.tracker_window,
            positional_frequencies=self.positional_frequencies,
        )


# Field values of each preset that differ from the dataclass defaults (= the cpu preset).
PRESETS_DEFAULTS: dict[str, dict] = {
    "cpu": {},
    # The cpu networks on full events, cut into 8 phi sectors of about the cpu events'
    # size (3,700 pixel-barrel hits, 100 targets) but at full-event hit density: a model
    # trained on 1,500-particle events does not carry over to full events (its filter
    # keeps 18 % pure hits there; benchmarks/results_tracker.md).
    "cpu_full": {
        "data_dir": "data/tracker_cpu_full",
        "simulate_events": 30,
        "n_particles": None,
        "phi_sectors": 8,
        "filter_model": "runs/tracker_cpu_full_filter.pt",
        "tracker_model": "runs/tracker_cpu_full_maskformer.pt",
        # At 8x the cpu events' hit density, 88 % of a target's hit pairs lie within 128
        # phi-ordered neighbours (99.5 % within 64 in the cpu events): 256 restores most.
        # The filter starts from the cpu preset's (--filter_init): trained from scratch at
        # this density it stayed near a constant's loss for 11 epochs (38 minutes).
        "filter_window": 256,
        "n_queries": 200,  # up to about 150 targets in a widened sector
    },
    "published": {
        "data_dir": "data/tracker_full",
        "simulate_events": 100,
        "n_particles": None,
        "volumes": (7, 8, 9),
        "pt_min": 0.9,
        "filter_model": "runs/tracker_published_filter.pt",
        "tracker_model": "runs/tracker_published_maskformer.pt",
        "train_on_true_hits": False,
        "filter_threshold": 0.1,
        "filter_dim": 256,
        "filter_layers": 8,
        "filter_heads": 8,
        "filter_window": 1024,
        "tracker_dim": 256,
        "tracker_layers": 12,
        "tracker_heads": 8,
        "tracker_window": 512,
        "decoder_layers": 8,
        "n_queries": 2100,
        "batch_size": 1,
        "lr": 1e-4,
        "nr_epochs": 30,
        "precision": "bf16",
        "compile": True,
        "warmup_epochs": 1.0,
        "max_minutes": 0.0,
    },
}


def preset(name: str) -> TrackerConfig:
    """The TrackerConfig of preset ``name`` (``PRESETS_DEFAULTS``); an unknown name is
    refused by ``TrackerConfig.__post_init__``."""
    return replace(TrackerConfig(), preset=name, **PRESETS_DEFAULTS.get(name, {}))


def build_parser(defaults: TrackerConfig, description: str) -> argparse.ArgumentParser:
    parser = new_parser(description)
    return add_dataclass_arguments(parser, TrackerConfig, defaults=defaults)


def config_from_args(argv: list[str] | None, description: str) -> TrackerConfig:
    """Parse ``argv``: ``--preset`` first (it sets the defaults), then every option."""
    first = argparse.ArgumentParser(add_help=False)
    first.add_argument("--preset", default="cpu")
    known, _ = first.parse_known_args(argv)
    args = build_parser(preset(known.preset), description).parse_args(argv)
    return config_from_namespace(TrackerConfig, args)
