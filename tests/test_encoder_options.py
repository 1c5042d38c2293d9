"""Encoder options (issue 8): shapes, padding/packing invariance, register tokens, the
phi sliding window, FlexAttention vs SDPA, and checkpoint round trips."""

from __future__ import annotations

import dataclasses
import math
import warnings
from pathlib import Path

import pytest
import torch

import training
import training_loop
from attention_ops import AttentionLayout, flex_attention, phi_window_mask
from checkpoint import load_checkpoint, model_from_checkpoint
from custom_encoder import EncoderLayer, EncoderOptions, _sdpa_attention, residual
from data_processing.dataset import load_events
from data_processing.redvid import SimulationConfig, generate_dataset
from model import CLI_NAMES, ModelConfig, TransformerRegressor

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


# Parameters of _model's configuration (in 3, d_model 16, 2 layers, 2 heads of 8, feed-
# forward 32, out 3). Default: input_proj 3*16+16 = 64, head 16*3+3 = 51, per layer
# qkv 16*48+48 = 816, out_proj 16*16+16 = 272, linear1 16*32+32 = 544, linear2
# 32*16+16 = 528, norm1 + norm2 2*32 = 64: 2224; 64 + 2*2224 + 51 = 4563.
PARAMETER_COUNTS = {
    "default": 4563,
    "pre": 4563 + 32,  # final LayerNorm(16) after the stack
    "hybrid": 4563,  # no norm1 (-32 per layer), QK-norm 2 LayerNorm(8) (+32 per layer)
    "layer_scale": 4563 + 2 * 2 * 16,  # scale1, scale2 [16] per layer
    "value_residual": 4563 + 1,  # one value_mix scalar, in the second layer only
    "qk_norm": 4563 + 2 * 32,  # q_norm, k_norm LayerNorm(8): 2 * 16 per layer
    "gelu": 4563,
    # hidden swiglu_hidden(32) = 24: linear1 16*48+48 = 816, linear2 24*16+16 = 400,
    # 1216 against 1072 per layer: +144 per layer.
    "swiglu": 4563 + 2 * 144,
    "registers": 4563 + 3 * 16,  # 3 register tokens of size 16
    "window": 4563,
    # hybrid 4563, LayerScale +64, value_mix +1, swiglu +288, 2 registers +32.
    "all": 4563 + 64 + 1 + 288 + 32,
}


@pytest.mark.parametrize("name", OPTIONS)
def test_parameter_count_of_each_option(name: str) -> None:
    assert _model(**OPTIONS[name]).n_parameters() == PARAMETER_COUNTS[name]


def _with_default_weights(**options) -> tuple[TransformerRegressor, TransformerRegressor]:
    """The (perturbed) default model and a model with ``options`` holding its weights
    wherever the two share a parameter; the option's own parameters stay as built."""
    default = _model()
    other = _model(**options)
    _, unexpected = other.load_state_dict(default.state_dict(), strict=False)
    assert not unexpected
    return default, other


def test_options_act_where_they_should_and_vanish_at_their_neutral_values() -> None:
    x = torch.randn(2, 7, 3)
    layout = _padded_layout([7, 5], 7)
    real = ~layout.pad_mask
    default, layer_scale = _with_default_weights(layer_scale_init=0.1)
    expected = default(x, layout)[real]
    # LayerScale multiplies each residual branch: with every vector at 1 it is the
    # default model exactly; at its init value 0.1 it is not.
    assert not torch.allclose(layer_scale(x, layout)[real], expected, atol=1e-3)
    with torch.no_grad():
        for layer in layer_scale.encoder.layers:
            layer.scale1.fill_(1.0)
            layer.scale2.fill_(1.0)
    assert torch.equal(layer_scale(x, layout)[real], expected)

    # Value residual: v <- lerp(v, v_first, lambda): lambda 0 is the default exactly,
    # lambda 1 (the first layer's values everywhere) is not.
    _, value_residual = _with_default_weights(value_residual=True)
    (mix,) = [p for n, p in value_residual.named_parameters() if n.endswith("value_mix")]
    with torch.no_grad():
        mix.fill_(0.0)
    assert torch.equal(value_residual(x, layout)[real], expected)
    with torch.no_grad():
        mix.fill_(1.0)
    assert not torch.allclose(value_residual(x, layout)[real], expected, atol=1e-3)

    # GELU and ReLU feed-forwards on the same weights differ.
    _, gelu = _with_default_weights(feedforward="gelu")
    assert {n for n, _ in gelu.named_parameters()} == {n for n, _ in default.named_parameters()}
    assert not torch.allclose(gelu(x, layout)[real], expected, atol=1e-3)


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
    assert config.attention_dropout is False  # a key added later takes its default
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
    result = training_loop.train(config)
    state = load_checkpoint(result.checkpoint)
    model, normaliser = model_from_checkpoint(state, best=False)
    assert model.config.encoder_options() == config.model_config(3, 3).encoder_options()
    # The model's (mean x, std x, mean y, std y) are the input normaliser's, and undo it:
    # hit_phi of the normalised hits is the raw hits' atan2(y, x).
    mean, std = normaliser.input_mean, normaliser.input_std
    expected = (mean[0], std[0], mean[1], std[1])
    assert model.config.xy_mean_std == tuple(map(float, expected))
    assert abs(std[0] - 1.0) > 0.5 and abs(std[1] - 1.0) > 0.5  # not the identity
    events = load_events(linear_file, "linear")
    assert events.input_names[:2] == ("x", "y")
    hits = events.inputs
    phi = model.hit_phi(torch.from_numpy(normaliser.normalise_inputs(hits)))
    torch.testing.assert_close(
        phi, torch.atan2(torch.from_numpy(hits[:, 1]), torch.from_numpy(hits[:, 0]))
    )
    assert result.model is not None
    x = torch.randn(2, 7, 3)
    layout = _padded_layout([7, 5], 7)
    real = ~layout.pad_mask
    torch.testing.assert_close(model(x, layout)[real], result.model.eval()(x, layout)[real])


def test_residual_wrapper_places_norm_and_layer_scale() -> None:
    """``residual`` against the three formulas written out, on fixed weights."""
    generator = torch.Generator().manual_seed(0)
    x = torch.randn(2, 5, 8, generator=generator)
    weight = torch.randn(8, 8, generator=generator)
    norm = torch.nn.LayerNorm(8)
    with torch.no_grad():
        norm.weight.copy_(torch.rand(8, generator=generator) + 0.5)
        norm.bias.copy_(torch.randn(8, generator=generator))
    scale = torch.rand(8, generator=generator)

    def sublayer(h: torch.Tensor) -> tuple[torch.Tensor, str]:
        return torch.tanh(h @ weight), "extra"

    def f(h: torch.Tensor) -> torch.Tensor:
        return torch.tanh(h @ weight)

    def ln(h: torch.Tensor) -> torch.Tensor:
        mean = h.mean(-1, keepdim=True)
        var = h.var(-1, unbiased=False, keepdim=True)
        return (h - mean) / torch.sqrt(var + norm.eps) * norm.weight + norm.bias

    expected = {
        "pre": x + scale * f(ln(x)),
        "post": ln(x + scale * f(x)),
        "none": x + scale * f(x),
    }
    with torch.no_grad():
        for position, want in expected.items():
            out, extra = residual(
                x, sublayer, norm if position != "none" else None, position, scale
            )
            assert extra == "extra"
            torch.testing.assert_close(out, want, atol=1e-6, rtol=1e-6)
        # No LayerScale: the branch enters with weight 1.
        out, _ = residual(x, sublayer, norm, "post", None)
        torch.testing.assert_close(out, ln(x + f(x)), atol=1e-6, rtol=1e-6)


def _hand_written_layer(layer: EncoderLayer, x: torch.Tensor, norm: str) -> torch.Tensor:
    """One encoder layer written out from its weights: x [N, D] (one event) -> [N, D]."""
    attn = layer.self_attn
    heads, head_dim = attn.n_heads, attn.head_dim

    def ln(module: torch.nn.LayerNorm, h: torch.Tensor) -> torch.Tensor:
        return torch.nn.functional.layer_norm(h, h.shape[-1:], module.weight, module.bias)

    def attention(h: torch.Tensor) -> torch.Tensor:
        q, k, v = (h @ attn.qkv.weight.T + attn.qkv.bias).chunk(3, dim=-1)
        q, k, v = (t.reshape(len(h), heads, head_dim).transpose(0, 1) for t in (q, k, v))
        if norm == "hybrid":  # QK-norm over the head dimension
            q, k = ln(attn.q_norm, q), ln(attn.k_norm, k)
        weights = torch.softmax(q @ k.transpose(1, 2) / head_dim**0.5, dim=-1)
        out = (weights @ v).transpose(0, 1).reshape(len(h), -1)
        return layer.scale1 * (out @ attn.out_proj.weight.T + attn.out_proj.bias)

    def feedforward(h: torch.Tensor) -> torch.Tensor:
        hidden = torch.relu(h @ layer.linear1.weight.T + layer.linear1.bias)
        return layer.scale2 * (hidden @ layer.linear2.weight.T + layer.linear2.bias)

    if norm == "post":
        h = ln(layer.norm1, x + attention(x))
        return ln(layer.norm2, h + feedforward(h))
    if norm == "pre":
        h = x + attention(ln(layer.norm1, x))
        return h + feedforward(ln(layer.norm2, h))
    h = x + attention(x)  # hybrid: no norm around attention
    return ln(layer.norm2, h + feedforward(h))


@pytest.mark.parametrize("norm", ["post", "pre", "hybrid"])
def test_encoder_layer_is_the_written_out_formula(norm: str) -> None:
    torch.manual_seed(0)
    options = EncoderOptions(norm=norm, layer_scale_init=0.3)
    layer = EncoderLayer(8, 2, 16, dropout=0.0, backend="math", options=options).eval()
    with torch.no_grad():
        for p in layer.parameters():  # LayerNorm and LayerScale away from 1 and 0
            p.add_(0.3 * torch.randn_like(p))
    x = torch.randn(6, 8)
    with torch.no_grad():
        out, _ = layer(x[None], _padded_layout([6], 6))
        torch.testing.assert_close(
            out[0], _hand_written_layer(layer, x, norm), atol=1e-5, rtol=1e-5
        )


def test_option_defaults_are_written_once() -> None:
    """The training CLI's defaults are the model's, under the reference's names."""
    model_fields = {f.name: f for f in dataclasses.fields(ModelConfig)}
    train_defaults = training.TrainConfig()
    shared = 0
    for f in dataclasses.fields(training.TrainConfig):
        name = CLI_NAMES.get(f.name, f.name)
        if name in model_fields:
            assert getattr(train_defaults, f.name) == model_fields[name].default, f.name
            shared += 1
    assert shared >= 4 + len(dataclasses.fields(EncoderOptions))
    assert set(CLI_NAMES.values()) <= set(model_fields)
    for option in dataclasses.fields(EncoderOptions):
        assert model_fields[option.name].default == option.default
    # One mapping from CLI names to the network's: from_settings builds what training does.
    settings = training.TrainConfig(nr_enc_layers=2, embedding_size=16, hidden_dim=24, nr_heads=2)
    built = ModelConfig.from_settings(settings, in_dim=3, out_dim=4)
    assert (built.n_layers, built.d_model, built.dim_feedforward, built.n_heads) == (2, 16, 24, 2)
    assert built == settings.model_config(3, 4)
