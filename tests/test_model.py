"""Model shapes, padding invariance, set (permutation) equivariance, backend agreement."""

from __future__ import annotations

import pytest
import torch

from custom_encoder import ATTENTION_BACKEND_TABLE, AttentionLayout, attention_backend
from model import ModelConfig, TransformerRegressor
from network_options import ATTENTION_BACKENDS


def _model(**overrides) -> TransformerRegressor:
    torch.manual_seed(0)
    model = TransformerRegressor(ModelConfig(dropout=0.0, **overrides))
    return model.eval()


def _layout(sizes: list[int], n_max: int) -> AttentionLayout:
    slot = torch.arange(n_max)
    return AttentionLayout(pad_mask=slot[None, :] >= torch.tensor(sizes)[:, None])


def test_published_size_and_output_shape() -> None:
    model = _model()
    # The published REDVID configuration (in 3, d_model 32, 6 layers, feed-forward 128,
    # out 3): input_proj 3*32+32 = 128; per layer qkv 32*96+96 = 3168, out_proj
    # 32*32+32 = 1056, linear1 32*128+128 = 4224, linear2 128*32+32 = 4128, two
    # LayerNorm(32) 2*64 = 128: 12704; head 32*3+3 = 99. 128 + 6*12704 + 99 = 76451.
    assert model.n_parameters() == 76_451
    x = torch.randn(2, 9, 3)
    assert model(x, _layout([9, 5], 9)).shape == (2, 9, 3)
    # d_model 64 (8 heads, which add no parameters), out 4: input_proj 3*64+64 = 256;
    # per layer qkv 64*192+192 = 12480, out_proj 64*64+64 = 4160, linear1
    # 64*128+128 = 8320, linear2 128*64+64 = 8256, norms 2*128 = 256: 33472; head
    # 64*4+4 = 260. 256 + 6*33472 + 260 = 201348.
    assert _model(out_dim=4, d_model=64, n_heads=8).n_parameters() == 201_348


@pytest.mark.parametrize("backend", ATTENTION_BACKENDS)
@pytest.mark.parametrize("norm_first", [False, True])
def test_padding_invariance(backend: str, norm_first: bool) -> None:
    model = _model(attention=backend, norm_first=norm_first)
    event = torch.randn(1, 7, 3)
    alone = model(event, _layout([7], 7))
    padded = torch.cat([event, torch.full((1, 5, 3), -1.0)], dim=1)
    with_padding = model(padded, _layout([7], 12))
    torch.testing.assert_close(with_padding[:, :7], alone, atol=1e-5, rtol=1e-5)
    # Other padding values change nothing either.
    padded[:, 7:] = 1e3
    torch.testing.assert_close(model(padded, _layout([7], 12))[:, :7], alone, atol=1e-5, rtol=1e-5)


def test_events_in_a_batch_do_not_interact() -> None:
    model = _model()
    a, b = torch.randn(1, 6, 3), torch.randn(1, 6, 3)
    both = model(torch.cat([a, b]), _layout([6, 6], 6))
    torch.testing.assert_close(both[:1], model(a, _layout([6], 6)), atol=1e-5, rtol=1e-5)


def test_hit_order_does_not_matter() -> None:
    model = _model()
    x = torch.randn(1, 10, 3)
    perm = torch.randperm(10)
    out = model(x, _layout([10], 10))
    torch.testing.assert_close(
        model(x[:, perm], _layout([10], 10)), out[:, perm], atol=1e-5, rtol=1e-5
    )


def test_backends_agree_on_the_same_weights() -> None:
    reference = _model(attention="math")
    x = torch.randn(3, 8, 3)
    layout = _layout([8, 3, 5], 8)
    expected = reference(x, layout)
    for backend in ATTENTION_BACKENDS:
        other = _model(attention=backend)
        other.load_state_dict(reference.state_dict())
        real = ~layout.pad_mask
        torch.testing.assert_close(other(x, layout)[real], expected[real], atol=1e-5, rtol=1e-5)


def test_config_round_trip_rejects_unknown_keys() -> None:
    config = ModelConfig(d_model=64, n_heads=8)
    assert ModelConfig.from_dict(config.to_dict()) == config
    with pytest.raises(ValueError, match="unknown model config keys"):
        ModelConfig.from_dict({**config.to_dict(), "bogus": 1})


def test_attention_switches_on_a_live_model_without_touching_the_weights() -> None:
    model = _model(attention="math")
    weights = {name: value.clone() for name, value in model.state_dict().items()}
    x = torch.randn(3, 8, 3)
    layout = _layout([8, 3, 5], 8)
    real = ~layout.pad_mask
    with torch.no_grad():
        expected = model(x, layout)
        for backend in ("sdpa", "flash", "math"):
            model.set_attention(backend)
            assert model.config.attention == backend
            assert {layer.self_attn.backend for layer in model.encoder.layers} == {backend}
            torch.testing.assert_close(model(x, layout)[real], expected[real], atol=1e-5, rtol=1e-5)
        assert torch.equal(model(x, layout), expected)  # back on math: the very same numbers
    assert list(model.state_dict()) == list(weights)
    assert all(torch.equal(model.state_dict()[name], value) for name, value in weights.items())
    # The other run-time choices switch the same way; unnamed ones are kept.
    dropping = TransformerRegressor(ModelConfig(dropout=0.1))
    assert {layer.self_attn.dropout for layer in dropping.encoder.layers} == {0.0}
    dropping.set_attention("sdpa", flash_kernel="cudnn", attention_dropout=True)
    assert dropping.config.flash_kernel == "cudnn" and dropping.config.attention_dropout
    dropping.set_attention("math")
    assert dropping.config.flash_kernel == "cudnn" and dropping.config.attention_dropout
    assert {layer.self_attn.dropout for layer in dropping.encoder.layers} == {0.1}


def test_attention_capability_table_refuses_what_a_backend_cannot_do() -> None:
    with pytest.raises(ValueError, match="'flash' cannot drop attention weights"):
        ModelConfig(attention="flash", attention_dropout=True)
    with pytest.raises(ValueError, match="unknown attention backend 'fast'"):
        ModelConfig(attention="fast")
    model = TransformerRegressor(ModelConfig(attention="sdpa", attention_dropout=True))
    assert {layer.self_attn.dropout for layer in model.encoder.layers} == {0.1}
    before = model.config
    with pytest.raises(ValueError, match="turn attention_dropout off or use one of"):
        model.set_attention("flash")
    # Refused before anything changed.
    assert model.config == before
    assert {layer.self_attn.backend for layer in model.encoder.layers} == {"sdpa"}
    model.set_attention("flash", attention_dropout=False)
    assert {layer.self_attn.dropout for layer in model.encoder.layers} == {0.0}
    for name, row in ATTENTION_BACKEND_TABLE.items():
        assert row.name == name
        assert attention_backend(name, "auto", False) is row
        assert row.attention_dropout == (name != "flash")
        assert row.varlen_kernel == (name == "flash")
