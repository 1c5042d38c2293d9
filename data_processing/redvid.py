"""REDVID-style event simulator: straight and helical tracks in a 9-layer toy detector.

REDVID (the reduced detector simulator behind the published TrackFormers REDVID data sets)
is not public, so this module produces the same kind of data from scratch.

Units: all lengths in metres, all angles in radians. The parameter ``t`` of a track is a
length in metres too (``r = a * t``).

Coordinates and track models (every track starts at the origin):

- linear: direction with polar angle theta and azimuth phi0, written in the REDVID
  columns as the degenerate helix ``r = a*t, phi = phi0, z = b*t`` with
  ``radial_coeff a = sin(theta)``, ``pitch_coeff b = cos(theta)``, ``azimuthal_coeff d = 0``,
  ``azimuthal_const = phi0``, ``radial_const = pitch_const = 0``. phi0 is uniform in
  [-pi, pi) and cos(theta) is uniform over the acceptance (isotropic directions), i.e. in
  [-c, c] with c the cosine of the most forward direction that still reaches the
  outermost layer (``DetectorGeometry.acceptance_cos_theta``) unless overridden.
- helical ("helical expanding", cylindrical coordinates): ``r = a*t, phi = phi0 + d*t,
  z = b*t`` with ``a ~ U(radial_coeff_range)`` (default 0.25 to 2.0), ``b ~ U(-pitch_coeff_max,
  +pitch_coeff_max)`` (default 2.0) and ``d = +-1`` (the charge sign, equally likely).
  phi0 = 0 for every track (as in the published sets, all ``*_const`` columns 0) unless
  ``random_phi0`` is set. With the default geometry the azimuth turns by
  (0.50 - 0.05) / a = 0.23 to 1.8 rad between the innermost and the outermost barrel
  cylinder. Note that r-z projection of a helix is the straight line z/r = b/a, so the
  set of layers a helix crosses is the one of a straight track with cot(theta) = b/a.

Only tracks that reach the outermost layer (the outermost barrel cylinder or the
outermost disk) are kept; rejected tracks are replaced by oversampling, so every event
holds exactly the number of tracks drawn for it.

Output: one row per hit in the REDVID CSV layout (``REDVID_COLUMNS``, ``;``-separated).
``hit_theta`` is the hit's azimuth in cylindrical coordinates, wrapped to [-pi, pi).
``sub_detector_id`` is the layer index (0..4 barrel cylinders from inside out, 5..8
disks from the interaction point outwards; the +z and -z disk at the same |z| share an
id, the sign of ``hit_z`` tells them apart), ``sub_detector_type`` is "barrel" or "disk".
Real tracks have ``track_id`` 1..n within each event; noise hits have ``track_id`` 0,
all six coefficient columns 0 (so the CSV holds no NaN) and the data set's track type.

Randomness: events are simulated in seed blocks of ``EVENTS_PER_SEED_BLOCK`` (1000)
consecutive events; block k draws everything from ``np.random.default_rng`` seeded by
the k-th child of ``np.random.SeedSequence(seed)``. The output therefore depends only on
the seed and the event count, never on the chunk size used to write a file.
"""

from __future__ import annotations

import argparse
import contextlib
import os
from collections.abc import Iterator
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Literal

import numpy as np
import pandas as pd
from tqdm import tqdm

from data_processing.common import atomic_write, parse_count_range
from data_processing.errors import DefaultsHelpFormatter, UserError, run_cli
from data_processing.redvid_detector import (
    DetectorGeometry,
    default_geometry,
    layer_crossings,
    reaches_outermost,
    wrap_angle,
)
from data_processing.redvid_format import REDVID_COLUMNS, redvid_csv_bytes

TrackType = Literal["linear", "helical"]


# The published track-count configurations; any "N" or "MIN-MAX" string is accepted too.
TRACK_PRESETS: dict[str, tuple[int, int]] = {
    "3": (3, 3),
    "1-20": (1, 20),
    "10-50": (10, 50),
    "50-100": (50, 100),
}

TRACK_TYPES: tuple[str, ...] = ("linear", "helical")
EVENTS_PER_SEED_BLOCK = 1000
DEFAULT_CHUNK_EVENTS = 5000

_TWO_PI = 2.0 * np.pi
# Acceptance of the default configurations is ~100 %; this only guards against configs
# whose acceptance is (nearly) zero, which would otherwise loop for ever.
_MAX_REDRAW_ROUNDS = 1000


def parse_track_range(spec: str) -> tuple[int, int]:
    """Parse a track-count configuration.

    Args:
        spec: "N" (exactly N tracks per event) or "MIN-MAX" (uniform integer in
            [MIN, MAX] per event), e.g. one of ``TRACK_PRESETS``.

    Returns:
        (min, max) with 1 <= min <= max.
    """
    return parse_count_range(spec, "track count")


@dataclass(frozen=True)
class SimulationConfig:
    """Everything that determines a simulated data set.

    Attributes:
        n_events: number of events.
        tracks: track-count configuration, "N" or "MIN-MAX" (see ``parse_track_range``).
        track_type: "linear" or "helical".
        noise_sigma: standard deviation of the Gaussian hit smearing, m. Hits are moved
            along their surface only (barrel: along z and along the arc r*phi; disk:
            along r and along the arc r*phi), so r of a barrel hit and |z| of a disk hit
            stay exact; the moved coordinate is clipped to the layer's extent.
        noise_hits_per_event: random noise hits per event (track_id 0), uniform over the
            layer ids and uniform in area on the chosen surface. A value >= 1 is a count
            (rounded); a value in (0, 1) is a fraction of the event's real hits.
        seed: non-negative seed of the ``np.random.SeedSequence``.
        geometry: the detector.
        random_phi0: helical tracks only: draw phi0 uniform in [-pi, pi) instead of 0
            (then (sin phi0, cos phi0) must join the targets). Linear tracks always have
            a random phi0.
        first_event_id: event_id of the first event (labels only; the random stream
            does not depend on it).
        radial_coeff_range: helical a range, drawn uniformly (dimensionless).
        pitch_coeff_max: helical b drawn uniformly in [-max, +max] (dimensionless).
        linear_cos_theta_max: linear cos(theta) drawn uniformly in [-c, c]; None: the
            geometry's acceptance.
    """

    n_events: int = 1000
    tracks: str = "10-50"
    track_type: TrackType = "helical"
    noise_sigma: float = 0.0
    noise_hits_per_event: float = 0.0
    seed: int = 0
    geometry: DetectorGeometry = field(default_factory=default_geometry)
    random_phi0: bool = False
    first_event_id: int = 0
    radial_coeff_range: tuple[float, float] = (0.25, 2.0)
    pitch_coeff_max: float = 2.0
    linear_cos_theta_max: float | None = None

    def __post_init__(self) -> None:
        if self.track_type not in TRACK_TYPES:
            raise UserError(f"track_type must be one of {TRACK_TYPES}, got {self.track_type!r}")
        parse_track_range(self.tracks)  # fail early on a bad spec
        if self.n_events < 0:
            raise UserError(f"n_events must be >= 0, got {self.n_events}")
        if self.noise_sigma < 0 or self.noise_hits_per_event < 0:
            raise UserError("noise_sigma and noise_hits_per_event must be >= 0")
        if self.seed < 0:
            raise UserError(f"seed must be >= 0, got {self.seed}")
        low, high = self.radial_coeff_range
        if not 0 < low <= high:
            raise UserError(f"radial_coeff_range must satisfy 0 < low <= high, got {low, high}")
        if self.pitch_coeff_max < 0:
            raise UserError("pitch_coeff_max must be >= 0")
        c = self.linear_cos_theta_max
        if c is not None and not 0 <= c <= 1:
            raise UserError(f"linear_cos_theta_max must lie in [0, 1], got {c}")

    @property
    def track_range(self) -> tuple[int, int]:
        """(min, max) tracks per event."""
        return parse_track_range(self.tracks)


def _draw_candidates(
    config: SimulationConfig, rng: np.random.Generator, n: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Draw n candidate tracks: (a, b, d, phi0), each shape (n,)."""
    if config.track_type == "linear":
        c = config.linear_cos_theta_max
        if c is None:
            c = config.geometry.acceptance_cos_theta
        cos_theta = rng.uniform(-c, c, n)
        # Guard a = sin(theta) > 0 for the (measure-zero) c == 1 edge: t = r / a.
        sin_theta = np.maximum(np.sqrt(1.0 - cos_theta**2), 1e-12)
        phi0 = rng.uniform(-np.pi, np.pi, n)
        return sin_theta, cos_theta, np.zeros(n), phi0
    low, high = config.radial_coeff_range
    a = rng.uniform(low, high, n)
    b = rng.uniform(-config.pitch_coeff_max, config.pitch_coeff_max, n)
    d = rng.integers(0, 2, n) * 2.0 - 1.0
    phi0 = rng.uniform(-np.pi, np.pi, n) if config.random_phi0 else np.zeros(n)
    return a, b, d, phi0


def _draw_accepted(
    config: SimulationConfig, rng: np.random.Generator, n: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Draw exactly n tracks that reach the outermost layer: (a, b, d, phi0), (n,) each.

    Oversamples in rounds and keeps the first accepted candidates, so the accepted
    tracks are i.i.d. from the candidate distribution restricted to the acceptance.
    """
    kept: list[tuple[np.ndarray, ...]] = [tuple(np.zeros(0) for _ in range(4))]
    n_kept = 0
    rounds = 0
    while n_kept < n:
        rounds += 1
        if rounds > _MAX_REDRAW_ROUNDS:
            raise RuntimeError(
                "almost no simulated track reaches the outermost layer; check the geometry "
                "and the track parameter ranges"
            )
        missing = n - n_kept
        candidates = _draw_candidates(config, rng, int(missing * 1.1) + 16)
        _, _, _, hit = layer_crossings(config.geometry, candidates[0], candidates[1])
        ok = reaches_outermost(config.geometry, hit)
        kept.append(tuple(x[ok] for x in candidates))
        n_kept += int(ok.sum())
    a, b, d, phi0 = (np.concatenate([part[i] for part in kept])[:n] for i in range(4))
    return a, b, d, phi0


def _free_extent(geometry: DetectorGeometry) -> tuple[np.ndarray, np.ndarray]:
    """Per layer id, the free coordinate's allowed interval [low, high] (m): z in [-L, L]
    on a barrel cylinder, r in [inner, outer] on a disk. Two (n_layers,) arrays."""
    free_low = np.concatenate(
        [-np.asarray(geometry.barrel_half_lengths), np.asarray(geometry.disk_inner_radii)]
    )
    free_high = np.concatenate(
        [np.asarray(geometry.barrel_half_lengths), np.asarray(geometry.disk_outer_radii)]
    )
    return free_low, free_high


def _smear_along_surface(
    config: SimulationConfig,
    rng: np.random.Generator,
    layer: np.ndarray,
    r: np.ndarray,
    z: np.ndarray,
    phi: np.ndarray,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Gaussian smearing (``config.noise_sigma``, m) of hits (H,) on their layers.

    Along the surface only, so the hit stays on its layer (r of a barrel hit, |z| of a
    disk hit exact), clipped so it stays within the layer's extent. Returns (r, z, phi).
    """
    free_low, free_high = _free_extent(config.geometry)
    shift_free, shift_arc = rng.normal(0.0, config.noise_sigma, (2, len(r)))
    on_disk = layer >= config.geometry.n_barrels
    lo, hi = free_low[layer], free_high[layer]
    z = np.where(on_disk, z, np.clip(z + shift_free, lo, hi))
    r_smeared = np.where(on_disk, np.clip(r + shift_free, lo, hi), r)
    phi = phi + shift_arc / np.maximum(r, 1e-9)
    return r_smeared, z, phi


def _noise_hits(
    config: SimulationConfig, rng: np.random.Generator, real_hits_per_event: np.ndarray
) -> tuple[np.ndarray, ...]:
    """Random noise hits (``config.noise_hits_per_event``) of the block's events.

    Uniform over the layer ids and uniform in area on the chosen surface (z uniform on a
    cylinder, r^2 uniform on a disk). Returns (event, layer, r, phi, z), (N,) each.
    """
    geometry = config.geometry
    n_events = len(real_hits_per_event)
    rate = config.noise_hits_per_event
    if rate >= 1:
        noise_per_event = np.full(n_events, round(rate), dtype=np.int64)
    else:
        noise_per_event = np.rint(rate * real_hits_per_event).astype(np.int64)
    n_noise = int(noise_per_event.sum())
    noise_event = np.repeat(np.arange(n_events), noise_per_event)
    noise_layer = rng.integers(0, geometry.n_layers, n_noise)
    noise_phi = rng.uniform(-np.pi, np.pi, n_noise)
    free_low, free_high = _free_extent(geometry)
    lo, hi = free_low[noise_layer], free_high[noise_layer]
    free = rng.uniform(0.0, 1.0, n_noise)
    side = np.where(rng.random(n_noise) < 0.5, -1.0, 1.0)
    noise_on_disk = noise_layer >= geometry.n_barrels
    surface = np.concatenate([np.asarray(geometry.barrel_radii), np.asarray(geometry.disk_z)])[
        noise_layer
    ]
    noise_r = np.where(noise_on_disk, np.sqrt(lo**2 + free * (hi**2 - lo**2)), surface)
    noise_z = np.where(noise_on_disk, side * surface, lo + free * (hi - lo))
    return noise_event, noise_layer, noise_r, noise_phi, noise_z


def _simulate_block(config: SimulationConfig, first_event: int, n_events: int) -> pd.DataFrame:
    """Simulate events first_event .. first_event + n_events - 1 of one seed block.

    Returns a DataFrame with ``REDVID_COLUMNS``, hits shuffled within each event and
    events in increasing order.
    """
    geometry = config.geometry
    block = first_event // EVENTS_PER_SEED_BLOCK
    rng = np.random.default_rng(np.random.SeedSequence(config.seed, spawn_key=(block,)))

    # --- tracks: counts per event, then all tracks of all events at once ---------------
    low, high = config.track_range
    tracks_per_event = rng.integers(low, high + 1, n_events)
    n_tracks = int(tracks_per_event.sum())
    track_event = np.repeat(np.arange(n_events), tracks_per_event)
    track_first = np.cumsum(tracks_per_event) - tracks_per_event
    track_id = np.arange(n_tracks) - track_first[track_event] + 1
    a, b, d, phi0 = _draw_accepted(config, rng, n_tracks)

    # --- hits: every (track, layer) crossing --------------------------------------------
    t_all, r_all, z_all, hit = layer_crossings(geometry, a, b)
    hit_track, hit_layer = np.nonzero(hit)
    t = t_all[hit_track, hit_layer]
    r = r_all[hit_track, hit_layer].copy()
    z = z_all[hit_track, hit_layer].copy()
    phi = phi0[hit_track] + d[hit_track] * t

    if config.noise_sigma > 0:
        r, z, phi = _smear_along_surface(config, rng, hit_layer, r, z, phi)

    # --- noise hits (track_id 0), uniform over layer ids and in area on the surface ------
    real_hits_per_event = np.bincount(track_event[hit_track], minlength=n_events)
    noise_event, noise_layer, noise_r, noise_phi, noise_z = _noise_hits(
        config, rng, real_hits_per_event
    )
    n_noise = len(noise_event)

    # --- assemble, shuffle within events, number the hits --------------------------------
    zeros = np.zeros(n_noise)
    event = np.concatenate([track_event[hit_track], noise_event])
    layer = np.concatenate([hit_layer, noise_layer])
    tid = np.concatenate([track_id[hit_track], np.zeros(n_noise, dtype=np.int64)])
    coeff_a = np.concatenate([a[hit_track], zeros])
    coeff_b = np.concatenate([b[hit_track], zeros])
    coeff_d = np.concatenate([d[hit_track], zeros])
    const_phi = np.concatenate([phi0[hit_track], zeros])
    hit_r = np.concatenate([r, noise_r])
    hit_phi = wrap_angle(np.concatenate([phi, noise_phi]))
    hit_z = np.concatenate([z, noise_z])

    order = np.lexsort((rng.random(len(event)), event))
    event = event[order]
    hits_per_event = np.bincount(event, minlength=n_events)
    hit_id = np.arange(len(event)) - (np.cumsum(hits_per_event) - hits_per_event)[event]
    layer = layer[order]
    n_hits = len(event)
    return pd.DataFrame(
        {
            "event_id": event + config.first_event_id + first_event,
            "sub_detector_id": layer,
            "sub_detector_type": np.asarray(geometry.layer_types)[layer],
            "track_id": tid[order],
            "track_type": np.full(n_hits, config.track_type),
            "radial_const": np.zeros(n_hits),
            "azimuthal_const": const_phi[order],
            "pitch_const": np.zeros(n_hits),
            "radial_coeff": coeff_a[order],
            "azimuthal_coeff": coeff_d[order],
            "pitch_coeff": coeff_b[order],
            "hit_id": hit_id,
            "hit_r": hit_r[order],
            "hit_theta": hit_phi[order],
            "hit_z": hit_z[order],
        },
        columns=list(REDVID_COLUMNS),
    )


def iter_event_chunks(
    config: SimulationConfig, chunk_events: int = DEFAULT_CHUNK_EVENTS
) -> Iterator[pd.DataFrame]:
    """Yield the data set as DataFrames of about ``chunk_events`` events each.

    The chunk size is rounded up to whole seed blocks (``EVENTS_PER_SEED_BLOCK``), so
    the concatenated chunks equal ``simulate_events(config)`` for any chunk size.

    Args:
        config: the simulation configuration.
        chunk_events: target events per chunk (>= 1).

    Yields:
        DataFrames with ``REDVID_COLUMNS``, events in increasing order.
    """
    for start, end in _chunk_bounds(config.n_events, chunk_events):
        yield _simulate_range(config, start, end)


def simulate_events(config: SimulationConfig) -> pd.DataFrame:
    """Simulate the whole data set in memory (use ``generate_dataset`` for big ones).

    Returns:
        DataFrame with exactly ``REDVID_COLUMNS`` (one row per hit; lengths in m,
        hit_theta the azimuth in rad in [-pi, pi)), hits shuffled within each event.
    """
    return _simulate_range(config, 0, config.n_events)


@dataclass(frozen=True)
class _WriteSummary:
    path: Path
    n_events: int
    n_hits: int
    n_tracks: int
    n_noise_hits: int


def _chunk_bounds(n_events: int, chunk_events: int) -> list[tuple[int, int]]:
    """(start, end) event ranges of about ``chunk_events`` events covering 0..n_events-1.

    Every range but the last holds whole seed blocks (``EVENTS_PER_SEED_BLOCK``), so it
    starts on a block boundary and ``_simulate_range`` draws each block exactly as a
    single in-memory simulation does.
    """
    if chunk_events < 1:
        raise UserError(f"chunk_events must be >= 1, got {chunk_events}")
    step = -(-chunk_events // EVENTS_PER_SEED_BLOCK) * EVENTS_PER_SEED_BLOCK
    return [(start, min(start + step, n_events)) for start in range(0, n_events, step)]


def _simulate_range(config: SimulationConfig, start: int, end: int) -> pd.DataFrame:
    """Events ``start .. end - 1`` (``start`` on a seed-block boundary), block by block.

    The one place events are simulated for ``iter_event_chunks``, ``simulate_events`` and
    the file writer, so a written file equals ``simulate_events(config)``.
    """
    if start % EVENTS_PER_SEED_BLOCK:
        # _simulate_block restarts its block's random stream: a range must start with it.
        raise ValueError(f"event range must start on a seed block boundary, got {start}")
    if start >= end:
        return _simulate_block(config, start, 0)  # no rows, but the columns and dtypes
    blocks = [
        _simulate_block(config, block, min(EVENTS_PER_SEED_BLOCK, end - block))
        for block in range(start, end, EVENTS_PER_SEED_BLOCK)
    ]
    return pd.concat(blocks, ignore_index=True) if len(blocks) > 1 else blocks[0]


def _chunk_csv(config: SimulationConfig, chunk_start: int, chunk_end: int) -> tuple[bytes, ...]:
    """CSV bytes (no header) and counts of events chunk_start .. chunk_end - 1."""
    chunk = _simulate_range(config, chunk_start, chunk_end)
    is_noise = chunk["track_id"].to_numpy() == 0
    # Track ids run 1..n in each event, so the max per event counts tracks.
    n_tracks = int(chunk.groupby("event_id")["track_id"].max().sum())
    return redvid_csv_bytes(chunk, header=False), len(chunk), n_tracks, int(is_noise.sum())


def _write_dataset(
    config: SimulationConfig, path: str | Path, chunk_events: int, progress: bool, jobs: int = 1
) -> _WriteSummary:
    path = Path(path)
    bounds = _chunk_bounds(config.n_events, chunk_events)
    jobs = max(1, min(jobs if jobs > 0 else (os.cpu_count() or 1), len(bounds)))
    n_hits = n_tracks = n_noise = 0
    # A killed run leaves no half file under the final name (see atomic_write).
    with (
        atomic_write(path) as tmp,
        open(tmp, "wb") as handle,
        tqdm(total=config.n_events, unit="ev", disable=not progress) as bar,
        ProcessPoolExecutor(jobs) if jobs > 1 else contextlib.nullcontext() as pool,
    ):
        handle.write(redvid_csv_bytes(_simulate_block(config, 0, 0)))  # the header
        # map() keeps the chunk order, so the file does not depend on ``jobs``.
        parallel_map = pool.map if pool is not None else map
        chunks = parallel_map(_chunk_csv, *zip(*[(config, *b) for b in bounds], strict=True))
        for (start, end), (text, hits, tracks, noise) in zip(bounds, chunks, strict=True):
            handle.write(text)
            n_hits, n_tracks, n_noise = n_hits + hits, n_tracks + tracks, n_noise + noise
            bar.update(end - start)
    return _WriteSummary(path, config.n_events, n_hits, n_tracks, n_noise)


def generate_dataset(
    config: SimulationConfig,
    path: str | Path,
    *,
    chunk_events: int = DEFAULT_CHUNK_EVENTS,
    progress: bool = True,
    jobs: int = 1,
) -> Path:
    """Simulate ``config`` and write it as a REDVID CSV, chunk by chunk (bounded memory).

    The file appears atomically (temporary file + ``os.replace``); its content does not
    depend on ``chunk_events``.

    Args:
        config: the simulation configuration.
        path: output CSV path; parent folders are created.
        chunk_events: events simulated and appended per step.
        progress: show a tqdm progress bar.
        jobs: processes simulating chunks in parallel (0: one per CPU core); the file
            is the same for any number.

    Returns:
        The path written.
    """
    return _write_dataset(config, path, chunk_events, progress, jobs).path


def cached_dataset_path(config: SimulationConfig, folder: str | Path) -> Path:
    """Where ``ensure_dataset`` keeps the data set of ``config`` inside ``folder``.

    The name holds the track type, tracks, event count and seed; other settings
    (noise, geometry) must be left at their defaults for the name to identify the set.
    """
    name = f"redvid_{config.track_type}_{config.tracks}_{config.n_events}ev_seed{config.seed}.csv"
    return Path(folder) / name


def ensure_dataset(config: SimulationConfig, folder: str | Path, *, jobs: int = 0) -> Path:
    """The CSV of ``config`` in ``folder``, simulated (with ``jobs`` processes) if absent."""
    path = cached_dataset_path(config, folder)
    if not path.exists():
        print(f"generating {config.n_events} {config.track_type} events -> {path}")
        generate_dataset(config, path, jobs=jobs)
    return path


def _count_or_fraction(text: str) -> float:
    value = float(text)
    if value < 0:
        raise argparse.ArgumentTypeError("must be >= 0")
    return value


def _build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m data_processing.redvid",
        description="Simulate REDVID-style events and write them as a ';'-separated CSV.",
        formatter_class=DefaultsHelpFormatter,
    )
    # Underscore spellings like the training flags; the hyphenated ones stay as aliases.
    parser.add_argument(
        "--tracks",
        default="10-50",
        help=f"tracks per event: 'N' or 'MIN-MAX' (presets: {', '.join(TRACK_PRESETS)}; "
        "default: %(default)s)",
    )
    parser.add_argument(
        "--track_type", "--track-type", choices=TRACK_TYPES, default="helical", help="track model"
    )
    parser.add_argument("--events", type=int, default=1000, help="number of events")
    parser.add_argument(
        "--out", type=Path, default=None, help="output CSV (default: data/<lin|hel>_<tracks>.csv)"
    )
    parser.add_argument(
        "--noise_sigma",
        "--noise-sigma",
        type=float,
        default=0.0,
        help="Gaussian hit smearing, metres",
    )
    parser.add_argument(
        "--noise_hits",
        "--noise-hits",
        type=_count_or_fraction,
        default=0.0,
        help="noise hits per event: a count (>= 1) or a fraction of real hits (< 1)",
    )
    parser.add_argument("--seed", type=int, default=0, help="root random seed")
    parser.add_argument(
        "--random_phi0", "--random-phi0", action="store_true", help="helical: random start azimuth"
    )
    parser.add_argument(
        "--first_event_id", "--first-event-id", type=int, default=0, help="id of the first event"
    )
    parser.add_argument(
        "--chunk_events",
        "--chunk-events",
        type=int,
        default=DEFAULT_CHUNK_EVENTS,
        help="events simulated and written per block (memory bound; the file is the same)",
    )
    parser.add_argument(
        "--no_progress", "--no-progress", action="store_true", help="hide the progress bar"
    )
    parser.add_argument("--jobs", type=int, default=1, help="processes (0: one per CPU core)")
    return parser


def main(argv: list[str] | None = None) -> None:
    """Command-line entry point (see ``--help``)."""
    args = _build_parser().parse_args(argv)
    config = SimulationConfig(
        n_events=args.events,
        tracks=args.tracks,
        track_type=args.track_type,
        noise_sigma=args.noise_sigma,
        noise_hits_per_event=args.noise_hits,
        seed=args.seed,
        random_phi0=args.random_phi0,
        first_event_id=args.first_event_id,
    )
    out = args.out
    if out is None:
        out = Path("data") / f"{config.track_type[:3]}_{config.tracks}.csv"
    print("REDVID-style simulation")
    for f in fields(config):
        if f.name != "geometry":
            print(f"  {f.name}: {getattr(config, f.name)}")
    g = config.geometry
    print(f"  geometry: barrel radii {g.barrel_radii} m, half-lengths {g.barrel_half_lengths} m")
    print(
        f"            disks |z| {g.disk_z} m, inner {g.disk_inner_radii} m, "
        f"outer {g.disk_outer_radii} m"
    )
    print(f"  output: {out}")
    summary = _write_dataset(config, out, args.chunk_events, not args.no_progress, args.jobs)
    print(
        f"wrote {summary.n_events} events, {summary.n_hits} hits "
        f"({summary.n_noise_hits} noise), {summary.n_tracks} tracks to {summary.path}"
    )


if __name__ == "__main__":
    run_cli(main)
