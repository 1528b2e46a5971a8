"""Baselines and the comparison table: the dive-number mean and the DD-only predictor by hand, the
CoRe-style I3D regressor learns a feature-dependent score, and run_comparison trains/evaluates variants
on the same split and voters, with a table checked against hand-computed values."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from hpmcore.config import EvalConfig
from hpmcore.models.hpmcore import ModelConfig, VideoInputs, build_hpmcore
from hpmcore.training.bank import FeatureBank, VideoFeatures, synthetic_feature_bank
from hpmcore.training.baselines import DDOnly, DiveNumberMean, dd_only, dive_number_mean
from hpmcore.training.compare import comparison_markdown, default_variants, run_comparison
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


def test_run_comparison_trains_and_evaluates_every_variant_on_the_same_voters(tmp_path: Path) -> None:
    bank = synthetic_feature_bank({"train": 9, "val": 3, "test": 4}, **TINY)  # type: ignore[arg-type]
    tiny = ModelConfig.tiny(use_skeleton=False)
    variants = {
        "HP-MCoRe (tiny)": tiny,
        "w/o contrastive": ModelConfig.tiny(use_skeleton=False, contrastive_weight=0.0),
        "CoRe": CoReConfig(i3d_dim=16, hidden=8),
        "DN mean": DiveNumberMean(),
        "DD only": DDOnly(),
    }
    ecfg = EvalConfig(exemplars=3, num_voter_draws=2, device="cpu")
    seen: list[tuple[str, int]] = []
    tcfg = TrainConfig(epochs=2, batch_size=4, val_exemplars=3, device="cpu")
    table = run_comparison(
        bank,
        variants,
        tcfg,
        ecfg,
        seed=0,
        work_dir=tmp_path,
        on_epoch=lambda name, epoch, m: seen.append((name, epoch)),
    )
    rows = table.rows
    assert [r["name"] for r in rows] == list(variants)
    assert [r["kind"] for r in rows] == ["hpmcore", "hpmcore", "core", "dive_number_mean", "dd_only"]
    assert seen == [(n, e) for n in ("HP-MCoRe (tiny)", "w/o contrastive", "CoRe") for e in (0, 1)]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["core", "hp-mcore-tiny", "w-o-contrastive"]
    # The table-only rows, by hand (dive numbers 101a, 201b, 301c in turn, DD 2.0, 2.4, 2.8).
    train_rows = [bank.label(i) for i in bank.split_ids("train")]
    by_dn = {
        dn: np.mean([r["final_score"] for r in train_rows if r["dive_number"] == dn])
        for dn in ("101a", "201b", "301c")
    }
    tests = [bank.label(i) for i in bank.split_ids("test")]
    true = np.array([r["final_score"] for r in tests])
    dn_pred = np.array([by_dn[r["dive_number"]] for r in tests])
    assert rows[3]["l2"] == pytest.approx(np.mean((dn_pred - true) ** 2))
    per_dd = np.mean([r["final_score"] / r["difficulty"] for r in train_rows])
    dd_pred = np.array([r["difficulty"] * per_dd for r in tests])
    assert rows[4]["l2"] == pytest.approx(np.mean((dd_pred - true) ** 2))
    assert rows[3]["best_epoch"] is None and rows[3]["num_params"] == 0 and rows[3]["aiou_50"] is None
    voters = {tuple(r["metrics"]["info"]["voter_seeds"]) for r in rows[:3]}
    assert len(voters) == 1  # the same voter draws for every trained variant
    assert rows[0]["aiou_50"] is not None and rows[2]["aiou_50"] is None
    assert set(table.seconds) == set(variants) and "seconds" not in json.dumps(rows)  # timings apart
    json.dumps(rows, allow_nan=False)  # the JSON table as written by the stage

    # Rerunning with the same work_dir reuses the finished checkpoints: same table, nothing retrained.
    seen.clear()
    again = run_comparison(
        bank, variants, tcfg, ecfg, seed=0, work_dir=tmp_path, on_epoch=lambda n, e, m: seen.append((n, e))
    )
    assert seen == [] and again.rows == rows and again.markdown == table.markdown


def test_comparison_markdown_by_hand() -> None:
    rows = [
        {
            "name": "A",
            "rho": 0.61234,
            "rho_std": 0.01,
            "rl2_x100": 4.5,
            "aiou_50": 85.0,
            "aiou_75": 10.0,
            "best_epoch": 3,
        },
        {
            "name": "B",
            "rho": None,
            "rho_std": None,
            "rl2_x100": 1.23456,
            "aiou_50": None,
            "aiou_75": None,
            "best_epoch": None,
        },
    ]
    assert comparison_markdown(rows, split="val") == (
        "| variant (val) | ρ | RL2 ×100 | AIoU@0.5 | AIoU@0.75 | best epoch |\n"
        "|---|---|---|---|---|---|\n"
        "| A | 0.6123 ± 0.0100 | 4.500 | 85.00 | 10.00 | 3 |\n"
        "| B | – | 1.235 | – | – | – |\n"
    )


def test_default_variants_cover_the_ablations_and_baselines() -> None:
    cfg = ModelConfig.tiny()
    v = default_variants(cfg)
    assert v["HP-MCoRe"] == cfg
    assert v["w/o skeleton"].use_skeleton is False and v["w/o static branch"].use_static is False
    assert v["w/o segmentation (thirds)"].use_segmentation is False
    assert v["w/o contrastive loss"].contrastive_weight == 0.0
    assert v["CoRe-style (I3D only)"] == CoReConfig(i3d_dim=cfg.i3d_dim)
    assert isinstance(v["dive-number mean"], DiveNumberMean) and isinstance(v["DD only"], DDOnly)
    with pytest.raises(TypeError):
        run_comparison(
            synthetic_feature_bank({"train": 3}, **TINY),
            {"x": "nope"},  # type: ignore[dict-item, arg-type]
            TrainConfig(),
            EvalConfig(),
            0,
        )
