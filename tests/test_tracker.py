"""Tests of the hit filter + MaskFormer tracker family (tracker/), CPU, about half a minute."""

from __future__ import annotations

import itertools
import json

import numpy as np
import pandas as pd
import pytest
import torch

from custom_encoder import AttentionLayout
from evaluation.efficiencies import MatchSettings, efficiencies
from tracker.data import TargetCuts, hit_features, read_hit_set, renumber_slots
from tracker.matching import LossWeights, match, pairwise_costs, tracker_loss
from tracker.metrics import decode_tracks, hepattn_counts
from tracker.model import (
    EncoderSettings,
    FilterModelConfig,
    HitFilter,
    MaskFormerTracker,
    QueryAttention,
    TrackerModelConfig,
)


def _layout(batch: int, n_hits: int) -> AttentionLayout:
    return AttentionLayout(pad_mask=torch.zeros(batch, n_hits, dtype=torch.bool))


def _random_hits(n: int, seed: int = 0) -> torch.Tensor:
    rng = np.random.default_rng(seed)
    r = rng.uniform(30, 180, n)
    phi = rng.uniform(-np.pi, np.pi, n)
    z = rng.uniform(-400, 400, n)
    return torch.from_numpy(hit_features(r * np.cos(phi), r * np.sin(phi), z))


def test_matching_equals_brute_force_assignment():
    rng = np.random.default_rng(1)
    costs = torch.from_numpy(rng.random((2, 3, 5, 5)))
    n_particles = torch.tensor([4, 0, 2])
    layer, event, query, particle = match(costs, n_particles)
    for ell in range(2):
        for b, n in enumerate(n_particles.tolist()):
            chosen = (layer == ell) & (event == b)
            assert chosen.sum() == n
            assert sorted(particle[chosen]) == list(range(n))
            assert len(set(query[chosen])) == n  # one query per particle
            got = float(costs[ell, b, query[chosen], particle[chosen]].sum())
            best = min(
                (
                    float(costs[ell, b, list(rows), list(range(n))].sum())
                    for rows in itertools.permutations(range(5), n)
                ),
                default=0.0,
            )
            assert got == pytest.approx(best)


def test_pairwise_costs_equal_the_loss_of_each_pair():
    """The cost of (query, particle) is the loss that pair would have once matched."""
    torch.manual_seed(0)
    class_logits = torch.randn(1, 1, 3)
    mask_logits = torch.randn(1, 1, 3, 7)
    slot = torch.tensor([[0, 0, 1, -1, 1, 1, 0]])
    valid = torch.ones(1, 7, dtype=torch.bool)
    targets = (slot[:, None, :] == torch.arange(3)[None, :, None]).float()
    weights = LossWeights()
    costs = pairwise_costs(class_logits, mask_logits, targets, valid, weights)
    # Query 2 <-> particle 1 alone: per-pair focal + dice by hand.
    prob = torch.sigmoid(mask_logits[0, 0, 2])
    t = targets[0, 1]
    ce = torch.nn.functional.binary_cross_entropy_with_logits(
        mask_logits[0, 0, 2], t, reduction="none"
    )
    p_t = prob * t + (1 - prob) * (1 - t)
    alpha = 0.25 * t + 0.75 * (1 - t)
    focal = (alpha * (1 - p_t) ** 2 * ce).mean()
    dice = 1 - (2 * (prob * t).sum() + 1) / (prob.sum() + t.sum() + 1)
    exists = torch.nn.functional.softplus(-class_logits[0, 0, 2])
    expected = 0.1 * exists + 50 * focal + 2 * dice
    assert float(costs[0, 0, 2, 1]) == pytest.approx(float(expected), rel=1e-5)


def test_mask_attention_never_sees_a_dropped_hit():
    torch.manual_seed(0)
    attention = QueryAttention(16, 4)
    queries, hits = torch.randn(1, 3, 16), torch.randn(1, 6, 16)
    allowed = torch.ones(1, 3, 6, dtype=torch.bool)
    allowed[0, 0, 2] = False  # query 0 may not see hit 2
    before = attention(queries, hits, allowed)
    changed = hits.clone()
    changed[0, 2] += 5.0
    after = attention(queries, changed, allowed)
    torch.testing.assert_close(after[0, 0], before[0, 0])
    assert not torch.allclose(after[0, 1], before[0, 1])  # query 1 does see it


def test_decoder_query_unchanged_by_hits_outside_every_mask():
    """Whole tracker: a hit that no query's previous mask keeps changes no later query
    state except through the mask head (the encoder is bypassed: one hit changed after it)."""
    torch.manual_seed(0)
    config = TrackerModelConfig(EncoderSettings(16, 1, 4, 32, 0), n_queries=4, n_decoder_layers=1)
    model = MaskFormerTracker(config).eval()
    layer = model.layers[0]
    queries, hits = torch.randn(1, 4, 16), torch.randn(1, 5, 16)
    allowed = torch.ones(1, 4, 5, dtype=torch.bool)
    allowed[:, :, 3] = False
    changed = hits.clone()
    changed[0, 3] -= 3.0
    torch.testing.assert_close(layer(queries, changed, allowed), layer(queries, hits, allowed))


def test_permuting_hits_permutes_the_outputs():
    torch.manual_seed(0)
    x = _random_hits(40)[None]
    perm = torch.randperm(40)
    hit_filter = HitFilter(FilterModelConfig(EncoderSettings(16, 2, 4, 32, 5))).eval()
    torch.testing.assert_close(
        hit_filter(x[:, perm], _layout(1, 40)),
        hit_filter(x, _layout(1, 40))[:, perm],
        rtol=1e-4,
        atol=1e-4,
    )
    tracker = MaskFormerTracker(
        TrackerModelConfig(EncoderSettings(16, 2, 4, 32, 5), n_queries=6, n_decoder_layers=2)
    ).eval()
    out, out_perm = tracker(x, _layout(1, 40)), tracker(x[:, perm], _layout(1, 40))
    torch.testing.assert_close(out_perm["class_logits"], out["class_logits"], rtol=1e-4, atol=1e-4)
    torch.testing.assert_close(
        out_perm["mask_logits"], out["mask_logits"][..., perm], rtol=1e-4, atol=1e-4
    )


def _toy_events(n_events: int, n_particles: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Events of curved tracks from the origin, 5 hits each: features [B, N, 8], slot [B, N]."""
    rng = np.random.default_rng(seed)
    radii = np.array([32.0, 72.0, 116.0, 172.0, 260.0])
    features, slots = [], []
    for _ in range(n_events):
        phi0 = rng.uniform(-np.pi, np.pi, n_particles)
        curvature = rng.uniform(-1e-3, 1e-3, n_particles)
        cot = rng.uniform(-2, 2, n_particles)
        r = np.tile(radii, n_particles)
        phi = np.repeat(phi0, 5) + np.repeat(curvature, 5) * r
        z = np.repeat(cot, 5) * r
        order = rng.permutation(len(r))
        features.append(hit_features(r * np.cos(phi), r * np.sin(phi), z)[order])
        slots.append(np.repeat(np.arange(n_particles), 5)[order])
    return torch.from_numpy(np.stack(features)), torch.from_numpy(np.stack(slots))


def test_tiny_tracker_overfits_a_handful_of_events_to_full_efficiency():
    torch.manual_seed(0)
    x, slot = _toy_events(3, 4, seed=2)
    mean = tuple(x.reshape(-1, 8).mean(0).tolist())
    std = tuple(x.reshape(-1, 8).std(0).tolist())
    config = TrackerModelConfig(
        EncoderSettings(32, 2, 4, 64, 0),
        n_queries=6,
        n_decoder_layers=2,
        feature_mean=mean,
        feature_std=std,
    )
    model = MaskFormerTracker(config)
    optimizer = torch.optim.Adam(model.parameters(), lr=3e-3)
    layout = _layout(*slot.shape)
    valid = ~layout.pad_mask
    for _ in range(250):
        loss, _ = tracker_loss(model(x, layout), slot, valid)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    model.eval()
    with torch.no_grad():
        out = model(x, layout)
    truth, submission = [], []
    for b in range(len(x)):
        class_logits, mask_logits = out["class_logits"][-1, b], out["mask_logits"][-1, b]
        counts = hepattn_counts(class_logits, mask_logits, slot[b])
        assert counts["n_matched_particles"] == counts["n_particles"] == 4
        assert counts["n_fake_tracks"] == 0
        labels = decode_tracks(class_logits, mask_logits)
        hit_id = np.arange(slot.shape[1])
        truth.append(pd.DataFrame({"event_id": b, "hit_id": hit_id, "particle_id": slot[b] + 1}))
        submission.append(pd.DataFrame({"event_id": b, "hit_id": hit_id, "track_id": labels}))
    eff = efficiencies(
        pd.concat(truth), pd.concat(submission), settings=MatchSettings("trackformers_min_hits")
    )
    assert eff["double_majority"] == 1.0 and eff["perfect"] == 1.0 and eff["fake_rate"] == 0.0


def test_decode_tracks_drops_unlikely_queries_and_short_tracks():
    class_logits = torch.tensor([5.0, -5.0, 5.0])
    mask_logits = torch.tensor(
        [
            [3.0, 3.0, 3.0, -1.0, -1.0, -1.0],
            [9.0, 9.0, 9.0, 9.0, 9.0, 9.0],  # certain hits, but the track does not exist
            [-2.0, -2.0, -2.0, 2.0, 2.0, -2.0],  # two hits only: dropped
        ]
    )
    assert decode_tracks(class_logits, mask_logits).tolist() == [0, 0, 0, -1, -1, -1]


def test_renumber_slots_keeps_particles_with_enough_hits():
    event = np.array([0, 0, 0, 0, 0, 1, 1, 1, 1])
    slot = np.array([3, 3, 3, 5, -1, 0, 0, 0, 2])
    assert renumber_slots(event, slot, 3).tolist() == [0, 0, 0, -1, -1, 0, 0, 0, -1]
    assert renumber_slots(event, slot, 1).tolist() == [0, 0, 0, 1, -1, 0, 0, 0, 1]


@pytest.fixture(scope="module")
def simulated_events(tmp_path_factory):
    from data_processing.trackml_sim import SimConfig, simulate_events

    directory = tmp_path_factory.mktemp("tracker_events")
    simulate_events(directory, SimConfig(seed=3, n_particles=400), 6)
    return directory


def test_hit_filter_beats_a_random_baseline(simulated_events):
    from data_processing.batching import BatchPlan
    from tracker.train import filter_loss, filter_probabilities

    hits = read_hit_set(str(simulated_events), TargetCuts(volumes=(8,), pt_min=1.0))
    train, test = hits.subset(np.arange(5)), hits.subset(np.array([5]))
    mean = tuple(train.features.mean(0).tolist())
    std = tuple(train.features.std(0).tolist())
    torch.manual_seed(0)
    model = HitFilter(FilterModelConfig(EncoderSettings(32, 2, 4, 64, 32), mean, std))
    optimizer = torch.optim.Adam(model.parameters(), lr=3e-3)
    data = train.device_events()
    plan = BatchPlan.from_batches([np.arange(5)], train.sizes, "cpu")
    for _ in range(40):
        total, count = filter_loss(model, plan.batch(data, 0, False))
        optimizer.zero_grad()
        (total / count).backward()
        optimizer.step()
    prob = filter_probabilities(model, test, torch.device("cpu"))

    # AUC on the held-out event: chance that a target hit outranks a background hit. A
    # random filter scores 0.5 with a spread of about 0.03 here (about 1,000 hits, 13 %
    # targets); a short training run on five events gets about 0.6. The fit on its own
    # training events must be far better still.
    def auc(prob: np.ndarray, label: np.ndarray) -> float:
        ranks = pd.Series(prob).rank().to_numpy()
        n_pos, n_neg = label.sum(), (~label).sum()
        return (ranks[label].sum() - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg)

    assert auc(prob, test.label) > 0.56
    assert auc(filter_probabilities(model, train, torch.device("cpu")), train.label) > 0.65


def test_train_and_evaluate_commands_end_to_end(simulated_events, tmp_path, capsys):
    from tracker import evaluate, train

    common = [
        "--data_dir",
        str(simulated_events),
        "--filter_model",
        str(tmp_path / "f.pt"),
        "--tracker_model",
        str(tmp_path / "t.pt"),
        "--no-progress",
        "--n_queries",
        "40",
        "--filter_layers",
        "1",
        "--tracker_layers",
        "1",
        "--decoder_layers",
        "1",
    ]
    losses = train.main([*common, "--nr_epochs", "2"])
    assert len(losses["filter"]) == 2 and len(losses["tracker"]) == 2
    resumed = train.main([*common, "--nr_epochs", "3", "--stage", "filter", "--resume"])
    assert len(resumed["filter"]) == 3 and resumed["filter"][:2] == losses["filter"]
    out = tmp_path / "metrics.json"
    metrics = evaluate.main([*common, "--split", "all", "--output", str(out)])
    stored = json.loads(out.read_text())
    assert stored["n_events"] == 6 == metrics["n_events"]
    for key in (
        "trackml_score",
        "gnn_pt0.9_double_majority",
        "hepattn_efficiency",
        "filter_purity",
    ):
        assert key in stored
    assert 0.0 <= metrics["filter_purity"] <= 1.0
    assert capsys.readouterr().out.startswith("config:")
    # Sector training and evaluation: the same events, the metrics of the whole events.
    sectors = [*common, "--phi_sectors", "4", "--nr_epochs", "1"]
    assert len(train.main([*sectors, "--stage", "filter"])["filter"]) == 1
    in_sectors = evaluate.main([*sectors, "--split", "all"])
    assert in_sectors["n_events"] == 6
    assert in_sectors["gnn_pt1_n_particles"] == metrics["gnn_pt1_n_particles"]
    # --filter_init: the stored weights start the stage, with the window asked for.
    from tracker.model import HitFilter, load_trained

    start = load_trained(HitFilter, tmp_path / "f.pt")
    widened = [*common, "--filter_model", str(tmp_path / "f2.pt"), "--filter_window", "7"]
    widened += ["--filter_init", str(tmp_path / "f.pt"), "--nr_epochs", "1", "--stage", "filter"]
    assert len(train.main([*widened, "--lr", "1e-9"])["filter"]) == 1
    tuned = load_trained(HitFilter, tmp_path / "f2.pt")
    assert tuned.config.encoder.attention_window == 7 != start.config.encoder.attention_window
    assert tuned.config.feature_mean == start.config.feature_mean
    # At a vanishing learning rate the weights are the stored ones (a fresh start is not).
    for before, after in zip(start.parameters(), tuned.parameters(), strict=True):
        torch.testing.assert_close(after, before, atol=1e-6, rtol=0)


def test_command_line_errors_are_one_line(tmp_path, capsys):
    from data_processing.errors import run_cli
    from tracker import train

    with pytest.raises(SystemExit) as exit_info:
        run_cli(train.main, ["--preset", "nope"])
    assert exit_info.value.code == 2
    assert capsys.readouterr().err.count("\n") == 1
    with pytest.raises(SystemExit):
        run_cli(
            train.main,
            ["--data_dir", str(tmp_path / "none"), "--simulate_events", "0", "--no-progress"],
        )
    assert "no TrackML events" in capsys.readouterr().err
    # A missing start checkpoint is named before any event is read or simulated.
    for flag in ("--filter_init", "--tracker_init"):
        with pytest.raises(SystemExit):
            run_cli(
                train.main,
                [
                    "--data_dir",
                    str(tmp_path / "none"),
                    flag,
                    str(tmp_path / "x.pt"),
                    "--no-progress",
                ],
            )
        assert (
            capsys.readouterr().err.strip()
            == f"error: {flag}: checkpoint not found: {tmp_path / 'x.pt'}"
        )


@pytest.mark.parametrize("n_hits", [9, 14, 40, 101])
def test_windowed_encoder_equals_the_dense_window_mask(n_hits):
    """tracker.window (blocks of W on the phi ring) = custom_encoder's dense window mask."""
    from custom_encoder import Encoder, EncoderOptions
    from tracker.window import windowed_encode

    torch.manual_seed(0)
    window = 5
    options = EncoderOptions(norm="hybrid", feedforward="swiglu")
    plain = Encoder(16, 4, 32, 3, 0.0, "sdpa", options).eval()
    dense = Encoder(
        16,
        4,
        32,
        3,
        0.0,
        "sdpa",
        EncoderOptions(norm="hybrid", feedforward="swiglu", attention_window=window),
    ).eval()
    dense.load_state_dict(plain.state_dict())
    x = torch.randn(n_hits, 16)
    phi = torch.rand(n_hits) * 2 * np.pi - np.pi
    expected = dense(x[None], _layout(1, n_hits), phi[None])[0]
    got = windowed_encode(plain, x, phi, window)
    torch.testing.assert_close(got, expected, rtol=1e-4, atol=1e-5)
    # The window matters: full attention gives another answer on large events.
    if n_hits > 2 * window + 1:
        assert not torch.allclose(plain(x[None], _layout(1, n_hits))[0], expected, atol=1e-3)


@pytest.mark.gpu
def test_tracker_chain_in_bf16_on_cuda_agrees_with_fp32():
    """Published-scale widths on a 20,000-hit event: the filter's windowed attention and the
    tracker run under bf16 autocast on CUDA and agree with fp32 (same weights)."""
    torch.manual_seed(0)
    device = torch.device("cuda")
    x = _random_hits(20_000)[None].to(device)
    layout = AttentionLayout(pad_mask=torch.zeros(1, 20_000, dtype=torch.bool, device=device))
    hit_filter = HitFilter(FilterModelConfig(EncoderSettings(256, 2, 8, 768, 1024))).to(device)
    tracker = MaskFormerTracker(
        TrackerModelConfig(EncoderSettings(256, 2, 8, 768, 512), n_queries=300, n_decoder_layers=2)
    ).to(device)
    with torch.no_grad():
        exact = hit_filter(x, layout)
        with torch.autocast("cuda", dtype=torch.bfloat16):
            fast = hit_filter(x, layout)
        assert torch.corrcoef(torch.stack([exact.flatten(), fast.float().flatten()]))[0, 1] > 0.99
        kept = x[:, :3000]
        small = AttentionLayout(pad_mask=torch.zeros(1, 3000, dtype=torch.bool, device=device))
        exact = tracker(kept, small)["mask_logits"][-1]
        with torch.autocast("cuda", dtype=torch.bfloat16):
            fast = tracker(kept, small)["mask_logits"][-1].float()
        assert torch.corrcoef(torch.stack([exact.flatten(), fast.flatten()]))[0, 1] > 0.98


def test_angle_encoding_is_periodic_in_phi_and_peaks_at_equal_angles():
    """Fourier features: phi and phi + 2 pi give the same vector, and the dot product of
    two hits' vectors is largest for equal angles and falls with the angle difference
    (the kernel an attention head reads)."""
    from tracker.model import ETA_FEATURE, PHI_FEATURE, AnglePositionalEncoding

    encoding = AnglePositionalEncoding(6)
    x = torch.zeros(5, 8)
    x[:, PHI_FEATURE] = torch.tensor([0.3, 0.3 + 2 * np.pi, 0.32, 0.5, 2.0])
    x[:, ETA_FEATURE] = 0.7
    features = encoding(x)
    assert features.shape == (5, 24)
    torch.testing.assert_close(features[0], features[1], atol=1e-5, rtol=0)
    similarity = features @ features[0]
    assert similarity[0] == pytest.approx(12.0, abs=1e-4)  # 2 F terms of cos(0) = 1
    assert similarity[0] > similarity[2] > similarity[3] > similarity[4]


def test_train_on_true_hits_gives_the_tracker_only_target_hits(simulated_events):
    from tracker.config import preset
    from tracker.train import tracker_hits

    config = preset("cpu")
    hits = read_hit_set(str(simulated_events), config.cuts)
    kept = tracker_hits(config, hits, torch.device("cpu"), training=True)
    assert kept.label.all() and len(kept.slot) == int(hits.label.sum())
    assert (kept.slot >= 0).all()


def test_regressor_events_keep_the_tracker_hits_row_for_row(simulated_events):
    from tracker.compare import regressor_events

    hits = read_hit_set(str(simulated_events), TargetCuts(volumes=(7, 8, 9)), 3)
    events = regressor_events(hits)
    assert events.n_events == hits.n_events == 3
    np.testing.assert_array_equal(events.offsets, hits.offsets)
    np.testing.assert_array_equal(events.hit_id, hits.hit_id)
    np.testing.assert_array_equal(events.inputs, hits.features[:, :3])
    assert events.input_names == ("x", "y", "z")


def test_score_labels_truth_is_perfect_and_nothing_scores_zero(simulated_events):
    from tracker.compare import event_unique_track_ids, score_labels

    hits = read_hit_set(str(simulated_events), TargetCuts(volumes=(7, 8, 9)), 3)
    # Per-event labels from the truth: the same small numbers recur in every event, so a
    # scorer that did not make them unique per event would merge tracks across events.
    event = np.repeat(np.arange(hits.n_events), np.diff(hits.offsets))
    truth = np.full(len(hits.hit_id), -1, dtype=np.int64)
    for e in range(hits.n_events):
        rows = (event == e) & (hits.particle_id != 0)
        truth[rows] = pd.factorize(hits.particle_id[rows])[0]
    ids = event_unique_track_ids(truth, hits.offsets)
    assert len(np.unique(ids[ids >= 0])) == len(
        np.unique(np.c_[event, hits.particle_id][hits.particle_id != 0], axis=0)
    )
    perfect = score_labels(hits, truth, eta_max=2.5)
    assert perfect["trackml_score"] > 0.99
    assert perfect["gnn_pt0.9_double_majority"] == 1.0
    assert perfect["gnn_pt0.9_fake_rate"] == 0.0
    assert not any(k.startswith(("hepattn_", "filter_")) for k in perfect)
    nothing = score_labels(hits, np.full(len(truth), -1), eta_max=2.5)
    assert nothing["trackml_score"] == 0.0
    assert nothing["gnn_pt0.9_double_majority"] == 0.0


def test_parse_regions_reads_bands_sectors_and_merge():
    from data_processing.errors import UserError
    from evaluation.decomposition import parse_regions

    assert parse_regions("1x1") == (1, 1, "labels")
    assert parse_regions("4x8p") == (4, 8, "params")
    for bad in ("4by8", "0x4", "x"):
        with pytest.raises(UserError, match="--regions"):
            parse_regions(bad)


def test_sector_split_covers_every_hit_once_at_home_and_merges_back(simulated_events):
    from tracker.data import split_sectors
    from tracker.evaluate import merge_sectors

    hits = read_hit_set(str(simulated_events), TargetCuts(volumes=(8,), pt_min=1.0))
    split = split_sectors(hits, n_sectors=8, overlap=0.05, min_hits=3)
    cut = split.sectors
    assert cut.n_events == 8 * hits.n_events
    # Every hit is at home in exactly one sector, and the margins add hits.
    home_rows = np.sort(split.rows[split.home])
    np.testing.assert_array_equal(home_rows, np.arange(len(hits.slot)))
    assert len(split.rows) > len(hits.slot)
    # Each sector event holds hits of its own event within its widened sector only.
    sector_event = cut.hit_event
    np.testing.assert_array_equal(hits.hit_event[split.rows], sector_event // 8)
    np.testing.assert_array_equal(cut.hit_id, hits.hit_id[split.rows])
    centre = -np.pi + np.pi / 4 * (sector_event % 8 + 0.5)
    distance = np.abs(np.angle(np.exp(1j * (cut.features[:, 5] - centre))))
    assert distance.max() <= np.pi / 8 + 0.05 + 1e-6
    assert (distance[split.home] <= np.pi / 8 + 1e-6).all()
    # Slots: 0..P-1 per sector event over the targets with >= 3 hits in it.
    for e in range(0, cut.n_events, 5):
        slots = cut.slot[cut.offsets[e] : cut.offsets[e + 1]]
        used, counts = np.unique(slots[slots >= 0], return_counts=True)
        np.testing.assert_array_equal(used, np.arange(len(used)))
        assert (counts >= 3).all()
    # Merging: each hit takes its home sector's label; times add up per event.
    labels = np.arange(len(split.rows)) % 7
    result = {"track_id": labels, "kept": split.home.copy(), "hepattn": {}}
    result |= {k: [1.0] * cut.n_events for k in ("filter_s", "tracker_s", "decode_s")}
    merged = merge_sectors(result, split, len(hits.slot))
    np.testing.assert_array_equal(merged["track_id"][split.rows[split.home]], labels[split.home])
    assert merged["kept"].all() and merged["filter_s"] == [8.0] * hits.n_events
