"""Export a checkpoint's regressor to ONNX, for reconstruction frameworks (ACTS, ...).

The exported graph holds the whole per-hit regression of one event, normalisation
included, so a framework needs nothing from this repository to run it:

    input  "hits":   [n_hits, in_dim] float32, raw hit coordinates (x, y, z in the units
                     of the training data: metres for REDVID, mm for TrackML); n_hits is
                     a dynamic axis
    output "params": [n_hits, out_dim] float32, raw (de-normalised) track parameters in
                     the training data's target order (README, "Data formats")

Inside: (hits - input_mean) / input_std, the TransformerRegressor with exact attention
(the written-out softmax of the ``math`` backend, plain ONNX ops), then
params * target_std + target_mean, with the checkpoint's fitted statistics. Clustering
(HDBSCAN) stays outside the graph. After writing, the file is checked with ONNX Runtime
against this repository's own inference on seeded sample events, and the largest
difference is printed.

Usage:
    python -m evaluation.export_onnx --model_name models/hel_10-50.pt --out hel_10-50.onnx

Needs ``onnx``, ``onnxscript`` (torch's exporter) and ``onnxruntime`` (the check):
``pip install -r requirements-dev.txt``.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib.util
import logging
import warnings
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from checkpoint import load_checkpoint, model_from_checkpoint
from custom_encoder import AttentionLayout
from data_processing.common import atomic_write
from data_processing.dataset import Normaliser
from data_processing.errors import DefaultsHelpFormatter, UserError, run_cli
from model import TransformerRegressor

INPUT_NAME = "hits"
OUTPUT_NAME = "params"
#: Packages the export and its check import, with the pip names.
EXPORT_PACKAGES = ("onnx", "onnxscript", "onnxruntime")


@dataclass
class ExportConfig:
    """Options of the export CLI.

    model_name: checkpoint to export; out: ONNX file to write; latest: export the latest
    weights instead of the best; check_hits: event sizes (hits) of the seeded sample
    events ONNX Runtime is checked on; tolerance: largest accepted absolute difference
    from torch in raw parameter units; seed: of the sample events.
    """

    model_name: str
    out: str
    latest: bool = False
    check_hits: tuple[int, ...] = (37, 211)
    tolerance: float = 1e-4
    seed: int = 0


class RawHitRegressor(nn.Module):
    """A regressor and its normaliser as one module: raw hits [n, F] -> raw params [n, K].

    One event per call (no padding, no batch axis), the layout a reconstruction framework
    hands over. Statistics are float32 buffers, so they travel inside the exported graph.
    """

    def __init__(self, model: TransformerRegressor, normaliser: Normaliser) -> None:
        super().__init__()
        self.model = model

        def buffer(values: np.ndarray) -> Tensor:
            return torch.as_tensor(np.asarray(values, dtype=np.float32))

        self.register_buffer("input_mean", buffer(normaliser.input_mean))
        self.register_buffer("input_std", buffer(normaliser.input_std))
        self.register_buffer("target_mean", buffer(normaliser.target_mean))
        self.register_buffer("target_std", buffer(normaliser.target_std))

    def forward(self, hits: Tensor) -> Tensor:
        """hits: [n_hits, in_dim] raw coordinates; returns [n_hits, out_dim] raw parameters."""
        x = ((hits - self.input_mean) / self.input_std).unsqueeze(0)
        no_padding = torch.zeros(x.shape[:2], dtype=torch.bool, device=x.device)
        normalised = self.model(x, AttentionLayout(pad_mask=no_padding))[0]
        return normalised * self.target_std + self.target_mean


def require_export_packages() -> None:
    """A UserError naming the missing packages and the install command, if any."""
    missing = [name for name in EXPORT_PACKAGES if importlib.util.find_spec(name) is None]
    if missing:
        raise UserError(
            f"ONNX export needs {', '.join(missing)}: pip install -r requirements-dev.txt"
        )


@contextlib.contextmanager
def _quiet_exporter() -> Iterator[None]:
    """Silence the exporter's notices that say nothing about this model (torchvision ops
    it skips registering, a deprecation inside torch)."""
    registration = logging.getLogger("torch.onnx._internal.exporter._registration")
    level = registration.level
    registration.setLevel(logging.ERROR)
    try:
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", category=FutureWarning, message=".*LeafSpec")
            yield
    finally:
        registration.setLevel(level)


def exportable_model(state: dict[str, Any], best: bool = True) -> RawHitRegressor:
    """The checkpoint's regressor with exact (math) attention, wrapped with its normaliser."""
    if state["model_config"].get("attention_window", 0) > 0:
        raise UserError(
            "local attention (attention_window > 0) cannot be exported to ONNX yet: "
            "torch's exporter fails on its neighbour mask"
        )
    model, normaliser = model_from_checkpoint(state, best=best, attention="math")
    return RawHitRegressor(model, normaliser).eval()


def export_onnx(
    wrapped: RawHitRegressor,
    out: str | Path,
    metadata: dict[str, str] | None = None,
    example_hits: int = 64,
) -> Path:
    """Write ``wrapped`` to ``out`` (atomically) as ONNX with a dynamic hit axis.

    ``metadata`` goes into the model's metadata_props (provenance: source checkpoint,
    data type). ``example_hits`` only sizes the tracing input; the graph accepts any
    n_hits >= 1.
    """
    require_export_packages()
    in_dim = wrapped.input_mean.shape[0]
    example = torch.zeros(example_hits, in_dim) + wrapped.input_mean
    n_hits = torch.export.Dim("n_hits", min=1)
    with atomic_write(out) as tmp, torch.no_grad(), _quiet_exporter():
        program = torch.onnx.export(
            wrapped,
            (example,),
            dynamo=True,
            input_names=[INPUT_NAME],
            output_names=[OUTPUT_NAME],
            dynamic_shapes=({0: n_hits},),
            optimize=True,
            verbose=False,
        )
        program.model.metadata_props.update(metadata or {})
        program.save(str(tmp))
    return Path(out)


def sample_events(normaliser: Normaliser, sizes: tuple[int, ...], seed: int) -> list[np.ndarray]:
    """Seeded events of ``sizes`` hits, [n, F] float32, spread like the training inputs."""
    rng = np.random.default_rng(seed)
    mean, std = normaliser.input_mean, normaliser.input_std
    return [rng.normal(mean, std, size=(n, len(mean))).astype(np.float32) for n in sizes]


def reference_params(state: dict[str, Any], hits: np.ndarray, best: bool = True) -> np.ndarray:
    """Raw parameters [n, K] of one event by this repository's own path: the Normaliser's
    float64 statistics around the model with its stored (or the exact) attention."""
    model, normaliser = model_from_checkpoint(state, best=best, attention="math")
    return _torch_params(model, normaliser, hits)


def _torch_params(
    model: TransformerRegressor, normaliser: Normaliser, hits: np.ndarray
) -> np.ndarray:
    """Raw parameters [n, K] of one event [n, F] by ``model`` around ``normaliser``."""
    with torch.no_grad():
        x = torch.from_numpy(normaliser.normalise_inputs(hits))[None]
        pad = torch.zeros(x.shape[:2], dtype=torch.bool)
        normalised = model(x, AttentionLayout(pad_mask=pad))[0].numpy()
    return normaliser.denormalise_targets(normalised)


def onnx_params(path: str | Path, hits: np.ndarray) -> np.ndarray:
    """Run the exported file with ONNX Runtime (CPU) on one event, [n, F] -> [n, K]."""
    return _session_params(_onnx_session(path), hits)


def _onnx_session(path: str | Path) -> Any:
    """An ONNX Runtime CPU session of the exported file."""
    import onnxruntime

    options = onnxruntime.SessionOptions()
    options.intra_op_num_threads = 1  # deterministic and polite on a shared machine
    return onnxruntime.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


def _session_params(session: Any, hits: np.ndarray) -> np.ndarray:
    """The session's raw parameters [n, K] of one event [n, F]."""
    return session.run([OUTPUT_NAME], {INPUT_NAME: np.ascontiguousarray(hits, np.float32)})[0]


def max_difference(
    path: str | Path, state: dict[str, Any], events: list[np.ndarray], best: bool = True
) -> float:
    """Largest |ONNX Runtime - torch| over all hits and parameters of ``events``."""
    # The model and the session are built once for all events.
    model, normaliser = model_from_checkpoint(state, best=best, attention="math")
    session = _onnx_session(path)
    worst = 0.0
    for hits in events:
        expected = _torch_params(model, normaliser, hits)
        got = _session_params(session, hits)
        if got.shape != expected.shape:
            raise RuntimeError(f"{path}: output shape {got.shape}, expected {expected.shape}")
        worst = max(worst, float(np.max(np.abs(got.astype(np.float64) - expected))))
    return worst


def parse_args(argv: list[str] | None) -> ExportConfig:
    parser = argparse.ArgumentParser(
        description="Export a checkpoint's regressor (with its normalisation) to ONNX.",
        formatter_class=DefaultsHelpFormatter,
    )
    parser.add_argument("--model_name", required=True, help="checkpoint to export")
    parser.add_argument("--out", required=True, help="ONNX file to write")
    parser.add_argument("--latest", action="store_true", help="latest weights, not the best")
    parser.add_argument(
        "--check_hits",
        type=int,
        nargs="+",
        default=list(ExportConfig.check_hits),
        help="hits of each seeded sample event checked with ONNX Runtime",
    )
    parser.add_argument(
        "--tolerance",
        type=float,
        default=ExportConfig.tolerance,
        help="largest |ONNX Runtime - torch| accepted, in the units of the track parameters",
    )
    parser.add_argument(
        "--seed", type=int, default=ExportConfig.seed, help="seed of the sample events checked"
    )
    args = parser.parse_args(argv)
    if min(args.check_hits) < 1:
        parser.error("--check_hits must be >= 1")
    return ExportConfig(**{**vars(args), "check_hits": tuple(args.check_hits)})


def main(argv: list[str] | None = None) -> float:
    """Export, check with ONNX Runtime, print the largest difference; returns it."""
    config = parse_args(argv)
    print(f"config: {asdict(config)}")
    require_export_packages()
    state = load_checkpoint(config.model_name)
    best = not config.latest
    metadata = {
        "source_checkpoint": Path(config.model_name).name,
        "weights": "latest" if config.latest else "best",
        "data_type": str(state["data"].get("data_type", "")),
        "inputs": "raw hit coordinates x, y, z (training data units), [n_hits, in_dim]",
        "outputs": "raw track parameters in the training targets' order, [n_hits, out_dim]",
    }
    out = export_onnx(exportable_model(state, best), config.out, metadata)
    normaliser = Normaliser.from_dict(state["normaliser"])
    events = sample_events(normaliser, config.check_hits, config.seed)
    difference = max_difference(out, state, events, best)
    sizes = ", ".join(str(n) for n in config.check_hits)
    print(
        f"wrote {out} ({out.stat().st_size:,} bytes): input '{INPUT_NAME}' [n_hits, "
        f"{normaliser.input_mean.shape[0]}] raw, output '{OUTPUT_NAME}' [n_hits, "
        f"{normaliser.target_mean.shape[0]}] raw"
    )
    print(
        f"ONNX Runtime vs torch on events of {sizes} hits: max |difference| "
        f"{difference:.3g} (tolerance {config.tolerance:g})"
    )
    if not difference <= config.tolerance:
        raise RuntimeError(
            f"{out}: ONNX Runtime differs from torch by {difference:.3g} > {config.tolerance:g}"
        )
    return difference


if __name__ == "__main__":
    run_cli(main)
