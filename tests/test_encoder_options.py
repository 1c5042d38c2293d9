"""Encoder options (issue 8): shapes, padding/packing invariance, register tokens, the
phi sliding window, FlexAttention vs SDPA, and checkpoint round trips."""

from __future__ import annotations

import math
import warnings
from pathlib import Path

import pytest
import torch

import training
from checkpoint import load_checkpoint, model_from_checkpoint
from custom_encoder import AttentionLayout, _sdpa_attention, flex_attention, phi_window_mask
from data_processing.redvid import SimulationConfig, generate_dataset
from model import ModelConfig, TransformerRegressor

# Each option alone, and all of them together.
OPTIONS: dict[str, dict] = {
    "default": {},
    "pre": {"norm": "pre"},
    "hybrid": {"norm": "hybrid"},
    "layer_scale": {"layer_scale_init": 0.1},
    "value_residual": {"value_residual": True},
    "qk_norm": {"qk_norm": True},
    "gelu": {"feedforward": "gelu"},
    "swiglu": {"feedforward": "swiglu"},
    "registers": {"n_registers": 3},
    "window": {"attention_window": 2},
    "all": {
        "norm": "hybrid",
        "layer_scale_init": 0.5,
        "value_residual": True,
        "feedforward": "swiglu",
        "n_registers": 2,
        "attention_window": 2,
    },
}


def _model(**overrides) -> TransformerRegressor:
    torch.manual_seed(0)
    config = ModelConfig(dropout=0.0, d_model=16, n_layers=2, n_heads=2, dim_feedforward=32)
    config = ModelConfig.from_dict({**config.to_dict(), **overrides})
    model = TransformerRegressor(config)
    # LayerScale / registers start small; perturb every parameter so a leak would show.
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.1 * torch.randn_like(p))
    return model.eval()


def _padded_layout(sizes: list[int], n_max: int) -> AttentionLayout:
    slot = torch.arange(n_max)
    return AttentionLayout(pad_mask=slot[None, :] >= torch.tensor(sizes)[:, None])


def _packed_layout(sizes: list[int]) -> AttentionLayout:
    sizes_t = torch.tensor(sizes)
    return AttentionLayout.packed(sizes_t, max(sizes), sum(sizes))


@pytest.mark.parametrize("name", OPTIONS)
@pytest.mark.parametrize("backend", ["math", "sdpa", "flash"])
def test_shapes_and_padding_and_packing_invariance(name: str, backend: str) -> None:
    model = _model(attention=backend, **OPTIONS[name])
    sizes = [7, 4, 6]
    events = [torch.randn(n, 3) for n in sizes]
    alone = [model(e[None], _padded_layout([len(e)], len(e)))[0] for e in events]
    for out, event in zip(alone, events, strict=True):
        assert out.shape == (len(event), 3)
    # Padded batch with padding at junk values.
    n_max = 9
    x = torch.full((3, n_max, 3), 1e3)
    for b, e in enumerate(events):
        x[b, : len(e)] = e
    padded = model(x, _padded_layout(sizes, n_max))
    assert padded.shape == (3, n_max, 3)
    # Packed batch.
    packed = model(torch.cat(events), _packed_layout(sizes))
    assert packed.shape == (sum(sizes), 3)
    offsets = [0, 7, 11]
    for b, out in enumerate(alone):
        torch.testing.assert_close(padded[b, : sizes[b]], out, atol=1e-5, rtol=1e-5)
        torch.testing.assert_close(
            packed[offsets[b] : offsets[b] + sizes[b]], out, atol=1e-5, rtol=1e-5
        )


def test_options_train_backward() -> None:
    model = _model(**OPTIONS["all"]).train()
    out = model(torch.randn(2, 5, 3), _padded_layout([5, 3], 5))
    out.sum().backward()
    unused = [n for n, p in model.named_parameters() if p.grad is None]
    assert not unused, f"parameters without gradient (DDP would fail): {unused}"


def test_registers_never_leak_into_per_hit_outputs() -> None:
    model = _model(n_registers=4)
    assert model.encoder.registers is not None and model.encoder.registers.shape == (4, 16)
    x = torch.randn(2, 6, 3)
    out = model(x, _padded_layout([6, 4], 6))
    assert out.shape == (2, 6, 3)
    # The registers act through attention: changing them changes the hits' outputs ...
    with torch.no_grad():
        model.encoder.registers.add_(1.0)
    assert not torch.allclose(model(x, _padded_layout([6, 4], 6)), out)
    # ... but their own rows are dropped: the output rows are the hits, in order.
    perm = torch.randperm(6)
    torch.testing.assert_close(
        model(x[:1, perm], _padded_layout([6], 6)),
        model(x[:1], _padded_layout([6], 6))[:, perm],
        atol=1e-5,
        rtol=1e-5,
    )


def _phi_event(phis: list[float]) -> torch.Tensor:
    """[1, n, 3] inputs (x, y, z) with hits at the given azimuths (identity normaliser)."""
    phi = torch.tensor(phis)
    radius = torch.linspace(1.0, 2.0, len(phis))
    return torch.stack([radius * phi.cos(), radius * phi.sin(), torch.randn(len(phis))], -1)[None]


@pytest.mark.parametrize("n_registers", [0, 2])
def test_window_covering_the_event_equals_full_attention(n_registers: int) -> None:
    x = torch.randn(2, 11, 3)
    layout = _padded_layout([11, 8], 11)
    full = _model(n_registers=n_registers)
    local = _model(n_registers=n_registers, attention_window=5)  # 2 * 5 + 1 >= 11
    local.load_state_dict(full.state_dict())
    real = ~layout.pad_mask
    torch.testing.assert_close(local(x, layout)[real], full(x, layout)[real])
    # A narrow window does change the result.
    narrow = _model(n_registers=n_registers, attention_window=1)
    narrow.load_state_dict(full.state_dict())
    assert not torch.allclose(narrow(x, layout)[real], full(x, layout)[real], atol=1e-4)


def test_window_wraps_around_at_pi() -> None:
    eps = 1e-3
    # Sorted by phi: index 0 (-pi + eps) ... index 4 (pi - eps).
    phis = [-math.pi + eps, -1.0, 0.0, 1.0, math.pi - eps]
    model = _model(attention_window=1)
    phi = model.hit_phi(_phi_event(phis))
    mask = phi_window_mask(phi, _padded_layout([5], 5), window=1)[0]
    assert mask[0, 4] and mask[4, 0]  # neighbours across +-pi
    assert mask[0, 1] and not mask[0, 2] and not mask[4, 2]
    assert mask.sum(dim=1).tolist() == [3, 3, 3, 3, 3]


def test_window_phi_undoes_the_input_normalisation() -> None:
    phis = [0.3, -2.0, 2.9, 1.4]
    raw = _phi_event(phis)
    mean, std = torch.tensor([5.0, -3.0, 0.0]), torch.tensor([2.0, 0.5, 1.0])
    model = _model(attention_window=1, xy_mean_std=(5.0, 2.0, -3.0, 0.5))
    torch.testing.assert_close(model.hit_phi((raw - mean) / std)[0], torch.tensor(phis))


def test_window_mask_same_in_padded_and_packed_layouts() -> None:
    phi = torch.rand(2, 6) * 6 - 3
    padded = phi_window_mask(phi, _padded_layout([6, 4], 6), 1)
    packed = phi_window_mask(torch.cat([phi[0], phi[1, :4]]), _packed_layout([6, 4]), 1)
    torch.testing.assert_close(packed, padded)


def test_flex_attention_matches_masked_sdpa_on_cpu() -> None:
    torch.manual_seed(0)
    q, k, v = (torch.randn(2, 2, 13, 8) for _ in range(3))
    mask = phi_window_mask(torch.randn(2, 13), _padded_layout([13, 9], 13), 2)
    expected = _sdpa_attention(q, k, v, mask[:, None], 0.0)
    with torch.no_grad(), warnings.catch_warnings():
        # Eager FlexAttention warns that it is the unfused reference; expected on a CPU.
        warnings.simplefilter("ignore", UserWarning)
        got = flex_attention(q, k, v, mask)
    real = ~_padded_layout([13, 9], 13).pad_mask
    torch.testing.assert_close(got.transpose(1, 2)[real], expected.transpose(1, 2)[real])


def test_old_checkpoint_config_loads_with_defaults() -> None:
    old = {
        "in_dim": 3,
        "out_dim": 3,
        "d_model": 32,
        "n_layers": 6,
        "n_heads": 4,
        "dim_feedforward": 128,
        "dropout": 0.1,
        "norm_first": True,
        "attention": "sdpa",
    }
    config = ModelConfig.from_dict(old)
    assert config.norm == "pre" and config.n_registers == 0 and config.attention_window == 0
    assert ModelConfig.from_dict(config.to_dict()) == config
    with pytest.raises(ValueError, match="norm"):
        ModelConfig(norm="sideways")


def test_cli_exposes_every_option() -> None:
    config = training.config_from_args(
        [
            "--norm",
            "hybrid",
            "--layer_scale_init",
            "0.1",
            "--value_residual",
            "--qk_norm",
            "--feedforward",
            "swiglu",
            "--n_registers",
            "4",
            "--attention_window",
            "8",
        ]
    )
    model_config = config.model_config(3, 3)
    assert model_config.encoder_options() == model_config.encoder_options().__class__(
        norm="hybrid",
        layer_scale_init=0.1,
        value_residual=True,
        qk_norm=True,
        feedforward="swiglu",
        n_registers=4,
        attention_window=8,
    )
    defaults = training.TrainConfig().model_config(3, 3)
    assert defaults == ModelConfig(in_dim=3, out_dim=3)  # the published model stays default


@pytest.fixture(scope="module")
def linear_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("data") / "lin3.csv"
    config = SimulationConfig(n_events=150, tracks="3", track_type="linear", seed=5)
    return generate_dataset(config, path, progress=False)


def test_checkpoint_with_options_reloads_identically(linear_file: Path, tmp_path: Path) -> None:
    config = training.TrainConfig(
        data_path=str(linear_file),
        data_type="linear",
        device="cpu",
        model_name=str(tmp_path / "options.pt"),
        nr_epochs=1,
        nr_enc_layers=2,
        embedding_size=16,
        hidden_dim=32,
        nr_heads=2,
        batch_size=16,
        evaluate=False,
        cluster_jobs=1,
        **OPTIONS["all"],
    )
    result = training.train(config)
    state = load_checkpoint(result.checkpoint)
    model, normaliser = model_from_checkpoint(state, best=False)
    assert model.config.encoder_options() == config.model_config(3, 3).encoder_options()
    assert model.config.xy_mean_std[1] == pytest.approx(float(normaliser.input_std[0]))
    assert result.model is not None
    x = torch.randn(2, 7, 3)
    layout = _padded_layout([7, 5], 7)
    real = ~layout.pad_mask
    torch.testing.assert_close(model(x, layout)[real], result.model.eval()(x, layout)[real])
