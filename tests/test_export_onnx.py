"""Tests of evaluation/export_onnx.py: ONNX Runtime reproduces torch on a shipped model."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from checkpoint import load_checkpoint
from data_processing.dataset import Normaliser
from data_processing.errors import UserError, run_cli
from evaluation import export_onnx

pytest.importorskip("onnxruntime")
pytest.importorskip("onnxscript")
onnx = pytest.importorskip("onnx")

MODELS_DIR = Path(__file__).resolve().parents[1] / "models"
SHIPPED = MODELS_DIR / "hel_3.pt"  # among the smallest shipped models: a quick export


@pytest.fixture(scope="module")
def exported(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict]:
    state = load_checkpoint(SHIPPED)
    out = tmp_path_factory.mktemp("onnx") / "hel_3.onnx"
    export_onnx.export_onnx(export_onnx.exportable_model(state), out, {"source": "hel_3.pt"})
    return out, state


def test_onnx_runtime_equals_torch_on_two_hit_counts(exported: tuple[Path, dict]) -> None:
    path, state = exported
    normaliser = Normaliser.from_dict(state["normaliser"])
    events = export_onnx.sample_events(normaliser, (23, 180), seed=5)
    for hits in events:
        got = export_onnx.onnx_params(path, hits)
        expected = export_onnx.reference_params(state, hits)
        assert got.shape == (len(hits), 3)
        np.testing.assert_allclose(got, expected, atol=1e-4, rtol=0)
        # The output is raw (de-normalised): helical d sits near +-1, not near 0 +- 1
        # in standard units, and a normalised output would miss it by far more than 1e-4.
        normalised = normaliser.normalise_targets(expected)
        assert np.abs(normalised - expected).max() > 1e-2
    assert export_onnx.max_difference(path, state, events) < 1e-4


def test_graph_takes_raw_hits_of_any_count_and_records_provenance(
    exported: tuple[Path, dict],
) -> None:
    path, _ = exported
    model = onnx.load(str(path))
    (graph_input,) = model.graph.input
    dims = graph_input.type.tensor_type.shape.dim
    assert graph_input.name == export_onnx.INPUT_NAME
    assert dims[0].dim_param == "n_hits" and dims[1].dim_value == 3
    assert model.graph.output[0].name == export_onnx.OUTPUT_NAME
    assert {p.key: p.value for p in model.metadata_props}["source"] == "hel_3.pt"


def test_wrapper_applies_the_checkpoints_normalisation() -> None:
    state = load_checkpoint(SHIPPED)
    wrapped = export_onnx.exportable_model(state)
    normaliser = Normaliser.from_dict(state["normaliser"])
    (hits,) = export_onnx.sample_events(normaliser, (50,), seed=1)
    with torch.no_grad():
        got = wrapped(torch.from_numpy(hits)).numpy()
    np.testing.assert_allclose(got, export_onnx.reference_params(state, hits), atol=1e-5)
    # The output for a hit depends on the other hits of its event (attention), so the
    # graph really runs the encoder over the whole event.
    with torch.no_grad():
        alone = wrapped(torch.from_numpy(hits[:1])).numpy()
    assert np.abs(alone[0] - got[0]).max() > 1e-4


def test_local_attention_is_refused() -> None:
    state = load_checkpoint(SHIPPED)
    local = {**state, "model_config": {**state["model_config"], "attention_window": 4}}
    with pytest.raises(UserError, match="attention_window"):
        export_onnx.exportable_model(local)


def test_cli_prints_config_and_difference(tmp_path: Path, capsys) -> None:
    out = tmp_path / "m.onnx"
    difference = export_onnx.main(
        ["--model_name", str(SHIPPED), "--out", str(out), "--check_hits", "7", "64"]
    )
    printed = capsys.readouterr().out
    assert printed.startswith("config: {'model_name':")
    assert "max |difference|" in printed and out.stat().st_size > 100_000
    assert 0 <= difference < 1e-4
    notes = tmp_path / "notes.pt"
    notes.write_text("not a model\n")
    with pytest.raises(SystemExit) as stop:
        run_cli(export_onnx.main, ["--model_name", str(notes), "--out", str(out)])
    assert stop.value.code == 2
    assert "notes.pt: not a PyTorch checkpoint" in capsys.readouterr().err
