"""Attention backends and batch layouts: equivalence, isolation, padding, gradients, batching.

CPU tests check the exact paths (math, sdpa, the packed fallback of flash); the tests
marked ``gpu`` check the varlen FlashAttention kernel, bf16 autocast and torch.compile.
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pytest
import torch

import training
import training_loop
import training_steps
from attention_ops import AttentionLayout, flash_kernel_available, nested_sdpa
from checkpoint import load_checkpoint, model_from_checkpoint
from data_processing.batching import (
    BatchPlan,
    DeviceEvents,
    batch_event_indices,
    packed_batch,
    padded_batch,
)
from data_processing.redvid import SimulationConfig, generate_dataset
from evaluation.inference import predict_track_params
from model import ModelConfig, TransformerRegressor
from network_options import ATTENTION_BACKENDS

SIZES = [5, 9, 1, 7, 4]  # includes a one-hit event
TOL = {"atol": 1e-5, "rtol": 1e-5}


@pytest.fixture(autouse=True, scope="module")
def _one_cpu_thread():
    """These tensors are tiny: on a shared 2-core machine, synchronising two OpenMP
    threads per op costs far more than the arithmetic (measured 6x slower)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def _model(attention: str, norm_first: bool = False, **overrides) -> TransformerRegressor:
    torch.manual_seed(0)
    config = ModelConfig(dropout=0.0, attention=attention, norm_first=norm_first, **overrides)
    return TransformerRegressor(config).eval()


def _same_weights(
    attention: str, reference: TransformerRegressor, flash_kernel: str = "auto"
) -> TransformerRegressor:
    model = TransformerRegressor(
        ModelConfig(
            **{**reference.config.to_dict(), "attention": attention, "flash_kernel": flash_kernel}
        )
    )
    model.load_state_dict(reference.state_dict())
    return model.train(reference.training)


def _events(sizes: list[int], seed: int = 0, device: str = "cpu") -> DeviceEvents:
    """Random normalised events; every third hit is noise (no target)."""
    generator = torch.Generator().manual_seed(seed)
    n = sum(sizes)
    offsets = torch.tensor([0, *np.cumsum(sizes).tolist()])
    return DeviceEvents(
        inputs=torch.randn(n, 3, generator=generator).to(device),
        targets=torch.randn(n, 3, generator=generator).to(device),
        loss_mask=(torch.arange(n) % 3 != 0).to(device),
        offsets=offsets.to(device),
        sizes=torch.tensor(sizes).to(device),
    )


def _predict(model: TransformerRegressor, data: DeviceEvents, packed: bool) -> torch.Tensor:
    """[T, K] predictions in DeviceEvents row order, from one batch of all events."""
    index = torch.arange(data.n_events, device=data.sizes.device)
    batch = packed_batch(data, index) if packed else padded_batch(data, index)
    pred = model(batch.x, batch.layout)
    if packed:
        return pred[torch.argsort(batch.rows)]
    return pred[batch.rows >= 0][torch.argsort(batch.rows[batch.rows >= 0])]


@pytest.mark.parametrize("norm_first", [False, True])
def test_every_backend_and_layout_agrees_with_math(norm_first: bool) -> None:
    reference = _model("math", norm_first)
    data = _events(SIZES)
    expected = _predict(reference, data, packed=False)
    for backend in ATTENTION_BACKENDS:
        model = _same_weights(backend, reference)
        for packed in (False, True):
            torch.testing.assert_close(_predict(model, data, packed), expected, **TOL)


def test_packed_layout_indices() -> None:
    data = _events(SIZES)
    index = torch.tensor([3, 0, 1])
    batch = packed_batch(data, index)
    sizes = [SIZES[3], SIZES[0], SIZES[1]]
    assert batch.layout.cu_seqlens.tolist() == [0, *np.cumsum(sizes).tolist()]
    assert batch.layout.cu_seqlens.dtype == torch.int32
    assert batch.layout.max_seqlen == 16  # max(sizes) = 9, rounded up to a power of two >= 16
    assert batch.x.shape == (sum(sizes), 3)
    expected_rows = np.concatenate(
        [np.arange(s) + int(data.offsets[e]) for e, s in zip([3, 0, 1], sizes, strict=True)]
    )
    assert batch.rows.tolist() == expected_rows.tolist()
    torch.testing.assert_close(batch.x, data.inputs[batch.rows])
    assert batch.loss_mask.tolist() == data.loss_mask[batch.rows].tolist()
    # The scratch-buffer slots are distinct and the pad mask marks the rest.
    assert len(set(batch.layout.slots.tolist())) == sum(sizes)
    assert int((~batch.layout.pad_mask).sum()) == sum(sizes)


@pytest.mark.parametrize("backend", ATTENTION_BACKENDS)
def test_no_cross_event_attention_in_packed_batches(backend: str) -> None:
    model = _model(backend)
    data = _events(SIZES)
    before = _predict(model, data, packed=True)
    # Move every hit of event 1 somewhere else entirely.
    start, end = int(data.offsets[1]), int(data.offsets[2])
    data.inputs[start:end] = data.inputs[start:end] * 5.0 + 3.0
    after = _predict(model, data, packed=True)
    others = torch.ones(len(before), dtype=torch.bool)
    others[start:end] = False
    torch.testing.assert_close(after[others], before[others], atol=1e-6, rtol=1e-6)
    assert (after[start:end] - before[start:end]).abs().max() > 1e-3


@pytest.mark.parametrize("backend", ATTENTION_BACKENDS)
def test_padding_values_change_neither_outputs_nor_gradients(backend: str) -> None:
    data = _events(SIZES)
    index = torch.arange(len(SIZES))
    results = []
    for pad_value in (-1.0, 0.0, 1e4):
        model = _model(backend)
        batch = padded_batch(data, index, pad_value=pad_value)
        pred = model(batch.x, batch.layout)
        sq_error, n_terms = training_steps.masked_squared_error(pred, batch.y, batch.loss_mask)
        (sq_error / n_terms).backward()
        real = batch.rows >= 0
        grads = [p.grad.clone() for p in model.parameters()]
        results.append((pred[real].detach(), grads))
    for pred, grads in results[1:]:
        torch.testing.assert_close(pred, results[0][0], atol=1e-5, rtol=1e-5)
        for grad, ref in zip(grads, results[0][1], strict=True):
            torch.testing.assert_close(grad, ref, atol=1e-5, rtol=1e-4)


@pytest.mark.parametrize("backend", ATTENTION_BACKENDS)
def test_one_training_step_same_from_packed_and_padded_batches(backend: str) -> None:
    """Loss, gradients and updated weights do not depend on the layout (nor the backend).

    SGD, not Adam: Adam's first step is about lr * sign(gradient), which would turn
    rounding-level differences of near-zero gradients into full-size steps.
    """
    data = _events(SIZES)
    plan = BatchPlan.from_batches([np.arange(len(SIZES))], np.array(SIZES), "cpu")
    reference = _model("math").train()
    results = {}
    for name, attention, packed in (
        ("math padded", "math", False),
        (f"{backend} padded", backend, False),
        (f"{backend} packed", backend, True),
    ):
        model = _same_weights(attention, reference)
        optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
        optimisation = training_loop.Optimisation(optimizer, lambda step: 0.1)
        loss = training_loop.run_epoch(model, data, plan, packed, optimisation)
        assert optimisation.step == 1
        grads = torch.cat([p.grad.flatten() for p in model.parameters()])
        weights = torch.cat([p.detach().flatten() for p in model.parameters()])
        results[name] = (loss, grads, weights)
    loss_ref, grads_ref, weights_ref = results["math padded"]
    for loss, grads, weights in results.values():
        assert loss == pytest.approx(loss_ref, rel=1e-5)
        torch.testing.assert_close(grads, grads_ref, atol=1e-6, rtol=1e-4)
        torch.testing.assert_close(weights, weights_ref, atol=1e-6, rtol=1e-5)
    before = torch.cat([p.detach().flatten() for p in reference.parameters()])
    assert (weights_ref - before).abs().max() > 1e-4  # the step did change the weights


@pytest.mark.parametrize("backend", ATTENTION_BACKENDS)
def test_packed_gradients_match_finite_differences(backend: str) -> None:
    model = _model(backend, d_model=8, n_heads=2, dim_feedforward=16, n_layers=1).double()
    sizes = torch.tensor([3, 1, 2])
    layout = AttentionLayout.packed(sizes, 3, 6)
    x = torch.randn(6, 3, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda inputs: model(inputs, layout), (x,))


def test_flash_without_kernel_says_so_once(caplog: pytest.LogCaptureFixture) -> None:
    if flash_kernel_available(8):
        pytest.skip("a flash kernel is available here")
    with caplog.at_level(logging.WARNING, logger="custom_encoder"):
        _model("flash")
    notices = [r for r in caplog.records if "flash attention" in r.getMessage()]
    assert len(notices) == 1 and "\n" not in notices[0].getMessage()


def test_nested_sdpa_is_attention_within_each_event() -> None:
    """The wrapper behind the cuDNN kernel, run here with the math backend: packed hits
    in, the same values and gradients out as attention over each event alone."""
    from torch.nn.attention import SDPBackend

    generator = torch.Generator().manual_seed(0)
    sizes = [5, 9, 1, 3]
    cu_seqlens = torch.tensor([0, *np.cumsum(sizes).tolist()], dtype=torch.int32)
    q, k, v = (
        torch.randn(sum(sizes), 2, 8, generator=generator, requires_grad=True) for _ in range(3)
    )
    out = nested_sdpa(q, k, v, cu_seqlens, max(sizes), [SDPBackend.MATH])
    assert out.shape == q.shape
    expected = []
    for start, end in zip(cu_seqlens[:-1].tolist(), cu_seqlens[1:].tolist(), strict=True):
        heads_first = [t[start:end].transpose(0, 1) for t in (q, k, v)]  # [H, n, Dh]
        scores = heads_first[0] @ heads_first[1].transpose(1, 2) / 8**0.5
        expected.append((scores.softmax(-1) @ heads_first[2]).transpose(0, 1))
    expected = torch.cat(expected)
    torch.testing.assert_close(out, expected, **TOL)
    weights = torch.randn(out.shape, generator=generator)
    grads = torch.autograd.grad((out * weights).sum(), (q, k, v))
    expected_grads = torch.autograd.grad((expected * weights).sum(), (q, k, v))
    for got, want in zip(grads, expected_grads, strict=True):
        torch.testing.assert_close(got, want, **TOL)


def test_flash_kernel_choice_is_checked_and_loads_the_same_weights() -> None:
    with pytest.raises(ValueError, match="flash_kernel"):
        ModelConfig(attention="flash", flash_kernel="fa9")
    reference = _model("math")
    data = _events(SIZES)
    expected = _predict(reference, data, packed=False)
    for kernel in ("auto", "cudnn"):
        model = _same_weights("flash", reference, flash_kernel=kernel)
        # Without CUDA every kernel choice runs the exact fallback.
        torch.testing.assert_close(_predict(model, data, packed=True), expected, **TOL)
    assert training.config_from_args(["--flash_kernel", "cudnn"]).flash_kernel == "cudnn"
    with pytest.raises(SystemExit):
        training.config_from_args(["--flash_kernel", "fa9"])


def test_flash_has_no_attention_dropout_but_same_parameters() -> None:
    flash = TransformerRegressor(ModelConfig(attention="flash", dropout=0.1))
    sdpa = TransformerRegressor(ModelConfig(attention="sdpa", dropout=0.1, attention_dropout=True))
    assert flash.encoder.layers[0].self_attn.dropout == 0.0
    assert sdpa.encoder.layers[0].self_attn.dropout == 0.1
    assert list(flash.state_dict()) == list(sdpa.state_dict())
    # By default no backend drops attention weights (SDPA keeps its fused CPU kernel);
    # the residual and feed-forward dropout are there either way.
    default = TransformerRegressor(ModelConfig(dropout=0.1))
    assert default.encoder.layers[0].self_attn.dropout == 0.0
    assert default.encoder.layers[0].dropout.p == 0.1


def test_hit_budget_batches() -> None:
    sizes = np.random.default_rng(3).integers(90, 451, 2000)
    sizes[17] = 20_000  # larger than the budget: a batch of its own
    budget = 64 * 270
    batches = batch_event_indices(sizes, 64, True, np.random.default_rng(0), hits_per_batch=budget)
    assert sorted(np.concatenate(batches).tolist()) == list(range(2000))
    for batch in batches:
        assert sizes[batch].sum() <= budget or len(batch) == 1
    assert [b.tolist() for b in batches if 17 in b] == [[17]]
    # Full batches: the budget is used well, and sorting keeps padding small.
    totals = np.array([sizes[b].sum() for b in batches])
    assert np.median(totals) > 0.95 * budget
    padded = sum(len(b) * sizes[b].max() for b in batches)
    assert padded < 1.1 * sizes.sum()
    # Seeded: the same seed gives the same batches, another seed others.
    again = batch_event_indices(sizes, 64, True, np.random.default_rng(0), hits_per_batch=budget)
    assert all(np.array_equal(a, b) for a, b in zip(batches, again, strict=True))
    other = batch_event_indices(sizes, 64, True, np.random.default_rng(1), hits_per_batch=budget)
    assert not all(np.array_equal(a, b) for a, b in zip(batches, other, strict=False))


def test_batch_plan_host_metadata() -> None:
    sizes = np.array([4, 7, 2, 9, 1])
    plan = BatchPlan.from_batches([np.array([1, 3]), np.array([0, 2, 4])], sizes, "cpu")
    assert len(plan) == 2
    assert plan.n_hits.tolist() == [16, 7] and plan.max_len.tolist() == [9, 4]
    data = _events(sizes.tolist())
    packed = plan.batch(data, 1, packed=True)
    assert packed.layout.cu_seqlens.tolist() == [0, 4, 6, 7]
    padded = plan.batch(data, 0, packed=False)
    assert padded.x.shape == (2, 9, 3)


@pytest.mark.parametrize("attention", ["sdpa", "flash"])
def test_predict_track_params_rows_align(attention: str) -> None:
    """The one inference path returns rows in data order, whatever the layout."""
    model = _model(attention)
    sizes = [int(s) for s in np.random.default_rng(0).integers(1, 30, 23)]
    data = _events(sizes)
    out = predict_track_params(model, data, batch_size=4)
    expected = _predict(_same_weights("math", model), data, packed=False)
    torch.testing.assert_close(out, expected, **TOL)


def test_epoch_batches_shard_disjointly_and_equally() -> None:
    config = training.TrainConfig(batch_size=8, hits_per_batch=500, seed=3)
    sizes = np.random.default_rng(0).integers(10, 60, 301)
    single = training_loop.epoch_batches(config, sizes, 2, training_loop.DistributedContext())
    shards = [
        training_loop.epoch_batches(config, sizes, 2, training_loop.DistributedContext(rank, 3))
        for rank in range(3)
    ]
    assert len({len(s) for s in shards}) == 1  # every rank takes the same number of steps
    seen = np.concatenate([np.concatenate(s) for s in shards])
    assert set(seen.tolist()) == set(range(301))
    # Apart from the wrap-around fill, every batch goes to exactly one rank.
    assert len(seen) - sum(len(b) for b in single) <= sum(len(b) for b in single[:2])


def test_learning_rate_scaling_and_warmup() -> None:
    config = training.TrainConfig(lr=1e-3, batch_size=64, lr_scaling="sqrt")
    assert training_loop.scaled_lr(config, 64) == pytest.approx(1e-3)
    assert training_loop.scaled_lr(config, 1024) == pytest.approx(4e-3)
    linear = training.TrainConfig(lr=1e-3, batch_size=64, lr_scaling="linear")
    assert training_loop.scaled_lr(linear, 1024) == pytest.approx(16e-3)
    assert training_loop.events_per_step(config, 270.0, 1) == 64
    assert training_loop.events_per_step(
        training.TrainConfig(hits_per_batch=27_000), 270.0, 4
    ) == pytest.approx(400)
    lr_at = training_loop.learning_rate_schedule(4e-3, 10)
    assert lr_at(0) == pytest.approx(4e-4) and lr_at(9) == lr_at(100) == pytest.approx(4e-3)
    assert training_loop.learning_rate_schedule(1e-3, 0)(0) == 1e-3
    cosine = training_loop.learning_rate_schedule(4e-3, 10, 110, "cosine")
    assert cosine(9) == pytest.approx(4e-3)  # end of the warm-up: the peak
    assert cosine(60) == pytest.approx(2e-3)  # half way through the decay
    assert cosine(110) == cosine(500) == pytest.approx(0.0)
    with pytest.raises(ValueError, match="lr schedule"):
        training_loop.learning_rate_schedule(1e-3, 0, 10, "step")


def test_time_limit_stops_after_the_epoch_that_crosses_it() -> None:
    assert not training_loop.out_of_training_time(training.TrainConfig(), 1e9)  # 0: no limit
    limited = training.TrainConfig(max_minutes=0.5)
    assert not training_loop.out_of_training_time(limited, 29.0)
    assert training_loop.out_of_training_time(limited, 30.0)


@pytest.fixture(scope="module")
def helical_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("data") / "hel.csv"
    config = SimulationConfig(n_events=200, tracks="3", track_type="helical", seed=5)
    return generate_dataset(config, path, progress=False)


def _train_config(data: Path, checkpoint: Path, **overrides) -> training.TrainConfig:
    values = {
        "data_path": str(data),
        "data_type": "helical",
        "model_name": str(checkpoint),
        "nr_epochs": 2,
        "batch_size": 16,
        "embedding_size": 16,
        "hidden_dim": 32,
        "nr_enc_layers": 2,
        "nr_heads": 2,
        "evaluate": False,
        "device": "cpu",
    }
    values.update(overrides)
    return training.TrainConfig(**values)


def test_flash_training_with_hit_budget_and_backend_override(
    helical_file: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    path = tmp_path / "flash.pt"
    config = _train_config(
        helical_file, path, attention="flash", hits_per_batch=400, precision="bf16"
    )
    with caplog.at_level(logging.WARNING):
        result = training_loop.train(config)
    assert result.val_losses[-1] < result.val_losses[0] < 2.0
    # bf16 is a CUDA feature: on a CPU the run says so and trains in fp32.
    assert any("mixed precision needs CUDA" in r.getMessage() for r in caplog.records)
    state = load_checkpoint(path)
    assert state["model_config"]["attention"] == "flash"
    assert state["step"] > 0
    # The checkpoint runs with any backend at evaluation time, with the same outputs.
    flash, _ = model_from_checkpoint(state)
    exact, _ = model_from_checkpoint(state, attention="math")
    data = _events([9, 7, 8])
    torch.testing.assert_close(
        predict_track_params(flash, data), predict_track_params(exact, data), **TOL
    )


def test_compile_failure_falls_back_to_eager(
    helical_file: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    def broken_compile(*args, **kwargs):
        raise RuntimeError("no compiler here")

    monkeypatch.setattr(torch, "compile", broken_compile)
    with caplog.at_level(logging.WARNING):
        result = training_loop.train(_train_config(helical_file, tmp_path / "c.pt", compile=True))
    assert any("running eager" in r.getMessage() for r in caplog.records)
    assert len(result.val_losses) == 2


def test_unknown_choices_are_rejected(helical_file: Path, tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="precision"):
        training_loop.train(_train_config(helical_file, tmp_path / "x.pt", precision="fp8"))
    config = training.config_from_args(
        ["--attention", "flash", "--hits_per_batch", "5000", "--precision", "bf16", "--compile"]
    )
    assert config.attention == "flash" and config.hits_per_batch == 5000 and config.compile


def test_training_flash_entry_point_only_changes_defaults() -> None:
    import training_flash

    config = training.config_from_args([], training_flash.FLASH_DEFAULTS)
    assert config.attention == "flash" and config.precision == "bf16"
    plain = training.TrainConfig()
    differing = {
        name for name in plain.__dataclass_fields__ if getattr(plain, name) != getattr(config, name)
    }
    assert differing == {"attention", "precision"}


# --------------------------------------------------------------------------- GPU only


@pytest.mark.gpu
@pytest.mark.parametrize("kernel", ["auto", "cudnn"])
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_varlen_kernel_matches_math(dtype: torch.dtype, kernel: str) -> None:
    assert flash_kernel_available(8, kernel), f"no {kernel} varlen kernel on this CUDA machine"
    reference = _model("math").cuda()
    flash = _same_weights("flash", reference, kernel).cuda().eval()
    sizes = [int(s) for s in np.random.default_rng(0).integers(1, 400, 37)]
    data = _events(sizes, device="cuda")
    expected = _predict(reference, data, packed=False)
    with torch.autocast("cuda", dtype=dtype):
        got = _predict(flash, data, packed=True).float()
    torch.testing.assert_close(got, expected, atol=5e-2, rtol=5e-2)
    # fp32 activations outside autocast: the kernel still runs (in bf16).
    torch.testing.assert_close(_predict(flash, data, packed=True), expected, atol=5e-2, rtol=5e-2)
    # Isolation holds on the kernel too.
    data.inputs[: sizes[0]] += 10.0
    after = _predict(flash, data, packed=True)
    torch.testing.assert_close(
        after[sizes[0] :],
        _predict(flash, _events(sizes, device="cuda"), True)[sizes[0] :],
        atol=1e-5,
        rtol=1e-5,
    )


@pytest.mark.gpu
@pytest.mark.parametrize("kernel", ["auto", "cudnn"])
def test_bf16_training_step_and_gradients_on_cuda(kernel: str) -> None:
    reference = _model("math").cuda().train()
    data = _events([int(s) for s in np.random.default_rng(1).integers(50, 300, 16)], device="cuda")
    plan = BatchPlan.from_batches([np.arange(16)], data.sizes.cpu().numpy(), "cuda")
    grads = {}
    for name, attention, packed, precision in (
        ("exact", "math", False, "fp32"),
        ("flash", "flash", True, "bf16"),
    ):
        model = _same_weights(attention, reference, kernel).cuda()
        batch = plan.batch(data, 0, packed)
        with torch.autocast("cuda", dtype=torch.bfloat16, enabled=precision == "bf16"):
            pred = model(batch.x, batch.layout)
        sq_error, n_terms = training_steps.masked_squared_error(pred, batch.y, batch.loss_mask)
        (sq_error / n_terms).backward()
        grads[name] = torch.cat([p.grad.flatten() for p in model.parameters()])
    assert torch.isfinite(grads["flash"]).all()
    cosine = torch.nn.functional.cosine_similarity(grads["flash"], grads["exact"], dim=0)
    assert cosine > 0.99


@pytest.mark.gpu
def test_compiled_flash_training_on_cuda(helical_file: Path, tmp_path: Path) -> None:
    config = _train_config(
        helical_file,
        tmp_path / "g.pt",
        device="cuda",
        attention="flash",
        precision="bf16",
        hits_per_batch=2000,
        compile=True,
    )
    result = training_loop.train(config)
    assert result.val_losses[-1] < result.val_losses[0]


@pytest.mark.gpu
def test_fp16_grad_scaler_is_checkpointed_and_restored_on_resume(
    helical_file: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "fp16.pt"
    config = _train_config(helical_file, path, device="cuda", precision="fp16", nr_epochs=1)
    first = training_loop.train(config)
    assert len(first.val_losses) == 1
    state = load_checkpoint(path)
    stored = state["grad_scaler"]
    assert isinstance(stored, dict) and stored["scale"] > 0

    loaded: list[dict] = []
    real_load = torch.amp.GradScaler.load_state_dict

    def recording_load(self: torch.amp.GradScaler, state_dict: dict) -> None:
        loaded.append(state_dict)
        real_load(self, state_dict)

    monkeypatch.setattr(torch.amp.GradScaler, "load_state_dict", recording_load)
    resumed = training_loop.train(
        _train_config(helical_file, path, device="cuda", precision="fp16", nr_epochs=2, resume=True)
    )
    assert len(resumed.val_losses) == 2
    assert loaded == [stored]
    assert load_checkpoint(path)["grad_scaler"]["scale"] > 0
