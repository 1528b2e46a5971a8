"""Baselines and the comparison table: the dive-number mean and the DD-only predictor by hand, the
CoRe-style I3D regressor learns a feature-dependent score; execution ρ, the paired bootstrap and the
Markdown table against hand-computed values and scipy; run_comparison trains every variant over seeds and
evaluates all on the same split and voters."""

from __future__ import annotations

import json
import math
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch
from scipy import stats

from hpmcore.config import EvalConfig
from hpmcore.models.hpmcore import ModelConfig, VideoInputs, build_hpmcore
from hpmcore.training.bank import FeatureBank, VideoFeatures, synthetic_feature_bank
from hpmcore.training.baselines import DDOnly, DiveNumberMean, dd_only, dive_number_mean
from hpmcore.training.compare import (
    comparison_markdown,
    default_variants,
    paired_bootstrap,
    prediction_metrics,
    rank_correlation,
    run_comparison,
    training_seeds,
)
from hpmcore.training.core_baseline import CoReBaseline, CoReConfig, build_core_baseline
from hpmcore.training.evaluate import evaluate_model
from hpmcore.training.protocol import PairModel, PairTargets
from hpmcore.training.train import TrainConfig, train

TINY = dict(i3d_dim=16, static_dim=12, num_frames=12, num_clips=3)


def _video(vid: str, score: float, dn: str, dd: float = 2.0) -> VideoFeatures:
    return VideoFeatures(vid, torch.zeros(3, 4), None, None, None, score, dd, dn)


ROWS = [
    ("a", 60.0, "101a", 2.0, "train"),
    ("b", 70.0, "101a", 2.0, "train"),
    ("c", 40.0, "201b", 2.5, "train"),
    ("d", 90.0, "301c", 3.0, "val"),  # not train: ignored
    ("q1", 66.0, "101a", 2.0, "test"),
    ("q2", 45.0, "201b", 2.5, "test"),
    ("q3", 50.0, "999z", 3.5, "test"),  # unseen dive number → global train mean 56.67
]


def _table_bank() -> FeatureBank:
    return FeatureBank.from_videos(
        [_video(i, s, dn, dd) for i, s, dn, dd, _ in ROWS], {i: sp for i, *_, sp in ROWS}
    )


def test_dive_number_mean_by_hand() -> None:
    ev = dive_number_mean(_table_bank(), "test")
    preds = {r["id"]: r["pred"] for r in ev.rows}
    assert preds == pytest.approx({"q1": 65.0, "q2": 40.0, "q3": 170.0 / 3})
    true, pred = np.array([66.0, 45.0, 50.0]), np.array([65.0, 40.0, 170.0 / 3])
    assert ev.metrics["l2"] == pytest.approx(np.mean((pred - true) ** 2))
    assert ev.metrics["rl2_x100"] == pytest.approx(100 * np.mean(((pred - true) / 21.0) ** 2))
    assert ev.metrics["rho"] == pytest.approx(1.0)  # ranks: true (3, 1, 2), pred (3, 1, 2)
    assert ev.metrics["info"]["unseen_dive_numbers"] == 1 and ev.metrics["aiou_50"] is None


def test_dd_only_by_hand() -> None:
    """ŝ = DD × mean over train of score / DD = DD × (30 + 35 + 16) / 3 = DD × 27."""
    ev = dd_only(_table_bank(), "test")
    assert ev.metrics["info"]["train_mean_score_per_dd"] == pytest.approx(27.0)
    assert {r["id"]: r["pred"] for r in ev.rows} == pytest.approx({"q1": 54.0, "q2": 67.5, "q3": 94.5})
    # true (66, 45, 50) ranks (3, 1, 2); predicted (54, 67.5, 94.5) ranks (1, 2, 3): d² = 4 + 1 + 1
    assert ev.metrics["rho"] == pytest.approx(1 - 6 * 6 / (3 * 8))
    assert ev.metrics["l2"] == pytest.approx((12.0**2 + 22.5**2 + 44.5**2) / 3)
    zero = FeatureBank.from_videos(
        [_video("a", 60.0, "101a", 2.0), _video("q", 1.0, "101a", 0.0)], {"a": "train", "q": "test"}
    )
    with pytest.raises(ValueError, match=r"'q' has difficulty 0\.0"):
        dd_only(zero, "test")


def test_core_baseline_shapes_and_interface() -> None:
    model = build_core_baseline(CoReConfig(i3d_dim=8, hidden=6), seed=1)
    assert isinstance(model, PairModel) and isinstance(build_hpmcore(ModelConfig.tiny()), PairModel)
    q = VideoInputs(i3d=torch.randn(3, 4, 8))
    e = VideoInputs(i3d=torch.randn(3, 4, 8))
    out = model(q, e)
    assert out.delta_qe.shape == (3,) and out.delta_eq.shape == (3,)
    enc = model.encode(q)
    torch.testing.assert_close(enc.features, q.i3d.mean(dim=1))
    assert enc.predicted is None and not model.exemplar_uses_gt()
    swapped = model(e, q)
    torch.testing.assert_close(swapped.delta_qe, out.delta_eq)  # the two directions are the same MLP
    assert list(model.parameter_groups()) == ["regressor"]
    assert model.input_spec("train").static_shape is None and not model.input_spec("train").transitions
    # its loss: the bidirectional score MSE only, by hand
    terms = model.pair_loss(out, PairTargets(score_q=torch.tensor([1.0, 2.0, 3.0]), score_e=torch.zeros(3)))
    want = ((out.delta_qe - torch.tensor([1.0, 2.0, 3.0])) ** 2).mean() + (
        (out.delta_eq + torch.tensor([1.0, 2.0, 3.0])) ** 2
    ).mean()
    torch.testing.assert_close(terms.total, want)
    assert terms.tas is None and terms.contrastive_fu is None
    with pytest.raises(ValueError, match=r"\(N, J, 8\)"):
        model.encode(VideoInputs(i3d=torch.randn(3, 8)))
    same = build_core_baseline(CoReConfig(i3d_dim=8, hidden=6), seed=1)
    assert all(torch.equal(a, b) for a, b in zip(model.parameters(), same.parameters(), strict=True))
    assert isinstance(model, CoReBaseline)


def test_core_baseline_learns_a_feature_dependent_score(tmp_path: Path) -> None:
    """Score = 50 + 10·z with z a channel of the I3D features: the pair regressor must rank the test set."""
    bank = synthetic_feature_bank({"train": 64, "val": 8, "test": 16}, **TINY)  # type: ignore[arg-type]
    model = build_core_baseline(CoReConfig(i3d_dim=16, hidden=32), seed=0)
    cfg = TrainConfig(
        epochs=30, batch_size=8, lr=3e-3, schedule="monotone", pairing="any", val_exemplars=5, device="cpu"
    )
    result = train(model, bank, cfg, seed=0, checkpoint_dir=tmp_path, progress=False)
    ev = evaluate_model(
        model,
        bank,
        "test",
        EvalConfig(exemplars=5, exemplar_mode="any", num_voter_draws=3, device="cpu"),
        seed=0,
    )
    assert ev.metrics["rho"] > 0.5, ev.metrics
    assert result.history[-1]["loss"] < 0.5 * result.history[0]["loss"]
    # Scores here do not depend on the dive number or DD: the table-only predictors cannot rank them.
    assert ev.metrics["rho"] > (dive_number_mean(bank, "test").metrics["rho"] or 0.0)
    assert ev.metrics["rho"] > (dd_only(bank, "test").metrics["rho"] or 0.0)


def test_rank_correlation_is_spearman_and_nan_for_a_constant() -> None:
    rng = np.random.default_rng(0)
    pred = np.round(rng.normal(size=(4, 30)), 1)  # ties
    true = np.round(rng.normal(size=30), 1)
    want = [stats.spearmanr(p, true).statistic for p in pred]
    np.testing.assert_allclose(rank_correlation(pred, true), want, rtol=1e-12)
    dd = rng.uniform(1.5, 3.5, size=30)
    # DD × c / DD is c up to rounding: a constant, which ranks nothing (scipy would rank the rounding)
    assert np.ptp(dd * 27.3 / dd) > 0
    assert np.isnan(rank_correlation(dd * 27.3 / dd, true)) and np.isnan(rank_correlation(true, np.ones(30)))
    assert np.isnan(rank_correlation(np.r_[np.nan, true[1:]], true))


def test_prediction_metrics_by_hand() -> None:
    """true (66, 45, 50) over DD (2, 2.5, 3.5) → execution 33, 18, 14.29; predicted 54, 67.5, 94.5 → 27
    each (a constant)."""
    m = prediction_metrics(
        np.array([54.0, 67.5, 94.5]), np.array([66.0, 45.0, 50.0]), np.array([2.0, 2.5, 3.5])
    )
    assert m["rho"] == pytest.approx(-0.5) and math.isnan(m["exec_rho"])
    assert m["l2"] == pytest.approx((12.0**2 + 22.5**2 + 44.5**2) / 3)
    assert m["rl2_x100"] == pytest.approx(100 * (12.0**2 + 22.5**2 + 44.5**2) / 3 / 21.0**2)
    # predicted execution 30, 20, 10 ranks as the true one (33, 18, 14.29): execution ρ 1, final ρ -0.5
    m = prediction_metrics(
        np.array([60.0, 50.0, 35.0]), np.array([66.0, 45.0, 50.0]), np.array([2.0, 2.5, 3.5])
    )
    assert m["exec_rho"] == pytest.approx(1.0) and m["rho"] == pytest.approx(0.5)


def test_paired_bootstrap_by_hand_and_against_a_loop() -> None:
    true = np.arange(10.0)
    rng = np.random.default_rng(1)
    idx = rng.integers(0, 10, size=(200, 10))
    # the reference ranks perfectly, the other in reverse: Δ = 1 − (−1) = 2 in every resample
    out = paired_bootstrap(true[None] * 2, -true, true, idx)
    assert out["delta"] == pytest.approx(2.0) and out["low"] == pytest.approx(2.0) == out["high"]
    assert out["p_le_0"] == 0.0 and out["resamples"] == 200 and not out["constant"]
    # against a constant: Δ = the reference's own ρ, flagged
    out = paired_bootstrap(true, np.full(10, 5.0), true, idx)
    assert out["constant"] and out["delta"] == pytest.approx(1.0) and out["low"] == pytest.approx(1.0)
    # two seeds per side, noisy: the same numbers as a plain loop over resamples with scipy
    ref = true + rng.normal(scale=3.0, size=(2, 10))
    oth = true + rng.normal(scale=6.0, size=(3, 10))
    out = paired_bootstrap(ref, oth, true, idx, confidence=0.9)
    deltas = []
    for b in idx:
        r = np.mean([stats.spearmanr(p[b], true[b]).statistic for p in ref])
        o = np.mean([stats.spearmanr(p[b], true[b]).statistic for p in oth])
        deltas.append(r - o)
    assert out["low"] == pytest.approx(np.quantile(deltas, 0.05))
    assert out["high"] == pytest.approx(np.quantile(deltas, 0.95))
    assert out["p_le_0"] == pytest.approx(np.mean(np.array(deltas) <= 0))
    full = np.mean([stats.spearmanr(p, true).statistic for p in ref]) - np.mean(
        [stats.spearmanr(p, true).statistic for p in oth]
    )
    assert out["delta"] == pytest.approx(full)


def test_training_seeds() -> None:
    assert training_seeds(7, 1) == [7]
    seeds = training_seeds(7, 3)
    assert seeds[0] == 7 and len(set(seeds)) == 3 and seeds == training_seeds(7, 3)
    assert training_seeds(8, 3)[1:] != seeds[1:]
    with pytest.raises(ValueError, match="at least one"):
        training_seeds(7, 0)


def test_run_comparison_over_seeds_with_the_same_voters(tmp_path: Path) -> None:
    bank = synthetic_feature_bank({"train": 9, "val": 3, "test": 5}, **TINY)  # type: ignore[arg-type]
    variants = {
        "HP-MCoRe (tiny)": ModelConfig.tiny(use_skeleton=False),
        "w/o contrastive": ModelConfig.tiny(use_skeleton=False, contrastive_weight=0.0),
        "CoRe": CoReConfig(i3d_dim=16, hidden=8),
        "DN mean": DiveNumberMean(),
        "DD only": DDOnly(),
    }
    ecfg = EvalConfig(exemplars=3, num_voter_draws=2, device="cpu")
    seen: list[tuple[str, int, int]] = []
    tcfg = TrainConfig(epochs=2, batch_size=4, val_exemplars=3, device="cpu", dd_mode=True, pairing="any")
    kwargs = dict(seeds=2, bootstrap=300, work_dir=tmp_path)
    table = run_comparison(
        bank, variants, tcfg, ecfg, seed=0, on_epoch=lambda n, s, e, m: seen.append((n, s, e)), **kwargs
    )
    seeds = training_seeds(0, 2)
    trained = ("HP-MCoRe (tiny)", "w/o contrastive", "CoRe")
    assert seen == [(n, s, e) for n in trained for s in seeds for e in (0, 1)]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["core", "hp-mcore-tiny", "w-o-contrastive"]
    assert sorted(p.name for p in (tmp_path / "core").iterdir()) == [f"seed-{s}" for s in sorted(seeds)]
    rows = table.rows
    assert [r["name"] for r in rows] == list(variants)
    assert [r["kind"] for r in rows] == ["hpmcore", "hpmcore", "core", "dive_number_mean", "dd_only"]
    assert [r["seeds"] for r in rows] == [seeds] * 3 + [[]] * 2 and all(r["num_queries"] == 5 for r in rows)
    # a trained row is the mean ± sample sd of its seeds, each computed on the voter-averaged predictions
    preds = {(p["variant"], p["seed"]): [] for p in table.predictions}
    for p in table.predictions:
        preds[p["variant"], p["seed"]].append(p)
    tests = [bank.label(i) for i in bank.split_ids("test")]
    true = np.array([r["final_score"] for r in tests])
    dd = np.array([r["difficulty"] for r in tests])
    for row in rows[:3]:
        per = []
        for s in seeds:
            recs = preds[row["name"], s]
            assert [r["id"] for r in recs] == [t["id"] for t in tests]
            pred = np.array([r["predicted_score"] for r in recs])
            per.append(
                (stats.spearmanr(pred, true).statistic, stats.spearmanr(pred / dd, true / dd).statistic)
            )
        assert row["rho"] == pytest.approx(np.mean([p[0] for p in per]))
        assert row["rho_sd"] == pytest.approx(np.std([p[0] for p in per], ddof=1))
        assert row["exec_rho"] == pytest.approx(np.mean([p[1] for p in per]))
        assert len(row["per_seed"]) == 2 and len(row["best_epoch"]) == 2
    # every evaluation met the same voters (drawn from the run's seed, not the training seed)
    voters = {tuple(p["voter_seeds"]) for row in rows[:3] for p in row["per_seed"]}
    assert voters == {tuple(table.info["voter_seeds"])} and len(table.info["voter_seeds"]) == 2
    assert table.info["training_seeds"] == seeds
    # the table-only rows, by hand (dive numbers 101a, 201b, 301c in turn, DD 2.0, 2.4, 2.8)
    train_rows = [bank.label(i) for i in bank.split_ids("train")]
    by_dn = {
        dn: np.mean([r["final_score"] for r in train_rows if r["dive_number"] == dn])
        for dn in ("101a", "201b", "301c")
    }
    dn_pred = np.array([by_dn[r["dive_number"]] for r in tests])
    assert rows[3]["l2"] == pytest.approx(np.mean((dn_pred - true) ** 2)) and rows[3]["l2_sd"] is None
    per_dd = np.mean([r["final_score"] / r["difficulty"] for r in train_rows])
    assert rows[4]["l2"] == pytest.approx(np.mean((dd * per_dd - true) ** 2))
    assert rows[4]["exec_rho"] is None  # DD only ranks no execution
    assert rows[3]["best_epoch"] is None and rows[3]["num_params"] == 0 and rows[3]["aiou_50"] is None
    assert rows[0]["aiou_50"] is not None and rows[2]["aiou_50"] is None
    # Δ against the reference: the difference of the row means; DD only's execution Δ is against 0
    assert rows[0]["vs_reference"] is None
    for row in rows[1:]:
        assert row["vs_reference"]["rho"]["delta"] == pytest.approx(rows[0]["rho"] - row["rho"])
        low, high = row["vs_reference"]["rho"]["low"], row["vs_reference"]["rho"]["high"]
        assert low <= high and row["vs_reference"]["rho"]["resamples"] == 300
    assert rows[4]["vs_reference"]["exec_rho"]["constant"]
    assert rows[4]["vs_reference"]["exec_rho"]["delta"] == pytest.approx(rows[0]["exec_rho"])
    assert set(table.seconds) == {*variants, "comparison"} and "seconds" not in json.dumps(rows)
    json.dumps(rows, allow_nan=False)  # the JSON table as written by the stage
    assert "| DD only |" in table.markdown and "†" in table.markdown

    # Rerunning with the same work_dir reuses the finished checkpoints: same table, nothing retrained.
    seen.clear()
    again = run_comparison(
        bank, variants, tcfg, ecfg, seed=0, on_epoch=lambda n, s, e, m: seen.append((n, s, e)), **kwargs
    )
    assert seen == [] and again.rows == rows and again.markdown == table.markdown


def test_comparison_markdown_by_hand() -> None:
    boot = {"delta": 0.1234, "low": -0.01, "high": 0.25, "constant": False}
    rows = [
        {
            "name": "A",
            "num_queries": 3,
            **{"rho": 0.61234, "rho_sd": 0.01, "exec_rho": 0.3, "exec_rho_sd": 0.02},
            **{"rl2_x100": 4.5, "rl2_x100_sd": 0.5, "aiou_50": 85.0, "aiou_50_sd": 0.0},
            **{"aiou_75": 10.0, "aiou_75_sd": 5.0, "best_epoch": [3, 4]},
            "vs_reference": None,
        },
        {
            "name": "B",
            "num_queries": 3,
            **{"rho": 0.5, "rho_sd": None, "exec_rho": None, "exec_rho_sd": None},
            **{"rl2_x100": 1.23456, "rl2_x100_sd": None, "aiou_50": None, "aiou_50_sd": None},
            **{"aiou_75": None, "aiou_75_sd": None, "best_epoch": None},
            "vs_reference": {"rho": boot, "exec_rho": {**boot, "delta": 0.3, "constant": True}},
        },
    ]
    info = {
        "split": "val",
        "training_seeds": [0, 9],
        "num_voter_draws": 5,
        "reference": "A",
        "bootstrap": {"resamples": 2000, "confidence": 0.95},
    }
    assert comparison_markdown(rows, info) == (
        "Split `val`, 3 dives. Trained rows: mean ± sd over 2 training seed(s) [0, 9]; within a seed each "
        "dive's prediction is the mean over 5 voter draws (the same voters for every row). Δ = A − row, "
        "with the 95% paired bootstrap interval over the dives (2000 resamples).\n"
        "\n"
        "| variant | ρ | execution ρ | RL2 ×100 | AIoU@0.5 | AIoU@0.75 | Δρ | Δ execution ρ | best epoch |\n"
        "|---|---|---|---|---|---|---|---|---|\n"
        "| A | 0.612 ± 0.010 | 0.300 ± 0.020 | 4.50 ± 0.50 | 85.0 ± 0.0 | 10.0 ± 5.0 | (reference) | "
        "(reference) | 3, 4 |\n"
        "| B | 0.500 | – | 1.23 | – | – | +0.123 [-0.010, +0.250] | +0.300 [-0.010, +0.250] † | – |\n"
        "\n"
        "† this row's predicted / DD is the same for every dive (it ranks nothing): Δ against 0.\n"
    )


def test_default_variants_cover_the_ablations_and_baselines() -> None:
    cfg = ModelConfig.tiny()
    v = default_variants(cfg)
    assert next(iter(v)) == "HP-MCoRe" and v["HP-MCoRe"] == cfg
    assert v["w/o skeleton"].use_skeleton is False and v["w/o static branch"].use_static is False
    assert v["w/o segmentation (thirds)"].use_segmentation is False
    assert v["w/o contrastive loss"].contrastive_weight == 0.0
    deviations = replace(cfg, pose_fusion="tokens", segmenter_input="static+skeleton", skeleton_skip=True)
    without = default_variants(deviations)["w/o skeleton"]
    without.validate()  # the skeleton's deviations are off with it, so the ablation is a valid config
    assert (without.use_skeleton, without.segmenter_input, without.skeleton_skip) == (False, "static", False)
    assert default_variants(deviations)["w/o static branch"].skeleton_skip is True
    # the embedded default's deviation: no I3D tokens -> a "with I3D tokens" row; a config without the
    # static branch gets a "with static branch" row instead of "w/o static branch"
    embedded = default_variants(ModelConfig.cpu_default())
    assert list(embedded)[:4] == ["HP-MCoRe", "w/o skeleton", "w/o static branch", "with I3D tokens"]
    assert embedded["with I3D tokens"].use_i3d is True  # type: ignore[union-attr]
    no_skeleton = embedded["w/o skeleton"]
    assert isinstance(no_skeleton, ModelConfig)
    no_skeleton.validate()  # valid: the I3D tokens are back, the skeleton's deviations off
    assert (no_skeleton.use_i3d, no_skeleton.skeleton_kinematics) == (True, False)
    no_static = default_variants(replace(ModelConfig.cpu_default(), use_static=False))
    assert "w/o static branch" not in no_static and no_static["with static branch"].use_static is True  # type: ignore[union-attr]
    assert v["CoRe-style (I3D only)"] == CoReConfig(i3d_dim=cfg.i3d_dim)
    assert isinstance(v["dive-number mean"], DiveNumberMean) and isinstance(v["DD only"], DDOnly)
    bank = synthetic_feature_bank({"train": 3}, **TINY)  # type: ignore[arg-type]
    with pytest.raises(TypeError):
        run_comparison(bank, {"x": "nope"}, TrainConfig(), EvalConfig(), 0)  # type: ignore[dict-item]
    with pytest.raises(ValueError, match="bootstrap"):
        run_comparison(bank, {"DD": DDOnly()}, TrainConfig(), EvalConfig(), 0, bootstrap=0)
