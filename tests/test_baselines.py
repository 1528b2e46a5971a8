"""Baselines and the comparison table: the dive-number mean by hand, the CoRe-style I3D regressor learns a
feature-dependent score, and run_comparison trains/evaluates variants on the same split and voters."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from hpmcore.models.hpmcore import ModelConfig, VideoInputs
from hpmcore.training.baselines import (
    CoReBaseline,
    CoReConfig,
    DiveNumberMean,
    build_core_baseline,
    comparison_markdown,
    default_variants,
    dive_number_mean,
    run_comparison,
)
from hpmcore.training.evaluate import (
    EvalConfig,
    FeatureBank,
    VideoFeatures,
    evaluate_model,
    synthetic_feature_bank,
)
from hpmcore.training.train import TrainConfig, train

TINY = dict(i3d_dim=16, static_dim=12, num_frames=12, num_clips=3)


def _video(vid: str, score: float, dn: str) -> VideoFeatures:
    return VideoFeatures(vid, torch.zeros(3, 4), None, None, None, score, 2.0, dn)


def test_dive_number_mean_by_hand() -> None:
    rows = [
        ("a", 60.0, "101a", "train"),
        ("b", 70.0, "101a", "train"),
        ("c", 40.0, "201b", "train"),
        ("d", 90.0, "301c", "val"),  # not train: ignored
        ("q1", 66.0, "101a", "test"),
        ("q2", 45.0, "201b", "test"),
        ("q3", 50.0, "999z", "test"),  # unseen dive number → global train mean 56.67
    ]
    bank = FeatureBank.from_videos(
        [_video(i, s, dn) for i, s, dn, _ in rows], {i: sp for i, _, _, sp in rows}
    )
    ev = dive_number_mean(bank, "test")
    preds = {r["id"]: r["pred"] for r in ev.rows}
    assert preds == pytest.approx({"q1": 65.0, "q2": 40.0, "q3": 170.0 / 3})
    true, pred = np.array([66.0, 45.0, 50.0]), np.array([65.0, 40.0, 170.0 / 3])
    assert ev.metrics["l2"] == pytest.approx(np.mean((pred - true) ** 2))
    assert ev.metrics["rl2_x100"] == pytest.approx(100 * np.mean(((pred - true) / 21.0) ** 2))
    assert ev.metrics["rho"] == pytest.approx(1.0)  # ranks: true (3, 1, 2), pred (3, 1, 2)
    assert ev.metrics["info"]["unseen_dive_numbers"] == 1 and ev.metrics["aiou_50"] is None


def test_core_baseline_shapes_and_interface() -> None:
    model = build_core_baseline(CoReConfig(i3d_dim=8, hidden=6), seed=1)
    q = VideoInputs(i3d=torch.randn(3, 4, 8))
    e = VideoInputs(i3d=torch.randn(3, 4, 8))
    out = model(q, e)
    assert out.delta_qe.shape == (3,) and out.delta_eq.shape == (3,)
    enc = model.encode(q)
    torch.testing.assert_close(enc.features, q.i3d.mean(dim=1))
    swapped = model(e, q)
    torch.testing.assert_close(swapped.delta_qe, out.delta_eq)  # the two directions are the same MLP
    assert list(model.parameter_groups()) == ["regressor"]
    assert model.input_spec("train").static_shape is None and not model.input_spec("train").transitions
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
    dn_mean = dive_number_mean(bank, "test")
    assert ev.metrics["rho"] > (dn_mean.metrics["rho"] or 0.0)


def test_run_comparison_trains_and_evaluates_every_variant_on_the_same_voters(tmp_path: Path) -> None:
    bank = synthetic_feature_bank({"train": 9, "val": 3, "test": 4}, **TINY)  # type: ignore[arg-type]
    tiny = ModelConfig.tiny(use_skeleton=False)
    variants = {
        "HP-MCoRe (tiny)": tiny,
        "w/o contrastive": ModelConfig.tiny(use_skeleton=False, contrastive_weight=0.0),
        "CoRe": CoReConfig(i3d_dim=16, hidden=8),
        "DN mean": DiveNumberMean(),
    }
    ecfg = EvalConfig(exemplars=3, num_voter_draws=2, device="cpu")
    seen: list[tuple[str, int]] = []
    rows, md = run_comparison(
        bank,
        variants,
        TrainConfig(epochs=2, batch_size=4, val_exemplars=3, device="cpu"),
        ecfg,
        seed=0,
        work_dir=tmp_path,
        on_epoch=lambda name, epoch, m: seen.append((name, epoch)),
    )
    assert [r["name"] for r in rows] == list(variants)
    assert [r["kind"] for r in rows] == ["hpmcore", "hpmcore", "core", "dive_number_mean"]
    assert seen == [(n, e) for n in ("HP-MCoRe (tiny)", "w/o contrastive", "CoRe") for e in (0, 1)]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["core", "hp-mcore-tiny", "w-o-contrastive"]
    assert rows[3]["metrics"] == dive_number_mean(bank, "test").metrics
    voters = {tuple(r["metrics"]["info"]["voter_seeds"]) for r in rows[:3]}
    assert len(voters) == 1  # the same voter draws for every trained variant
    assert rows[0]["aiou_50"] is not None and rows[2]["aiou_50"] is None
    lines = md.strip().splitlines()
    assert lines[0].startswith("| variant (test) | ρ | RL2 ×100 | AIoU@0.5 | AIoU@0.75")
    assert len(lines) == 2 + len(variants) and lines[5].startswith("| DN mean |")
    assert comparison_markdown(rows) == md
    json.dumps(rows, allow_nan=False)  # the JSON table as written by the stage
    # Rerunning with the same work_dir reuses the finished checkpoints: same table, nothing retrained.
    seen.clear()
    rows2, _ = run_comparison(
        bank,
        variants,
        TrainConfig(epochs=2, batch_size=4, val_exemplars=3, device="cpu"),
        ecfg,
        seed=0,
        work_dir=tmp_path,
        on_epoch=lambda n, e, m: seen.append((n, e)),
    )
    assert seen == [] and [r["rho"] for r in rows2] == [r["rho"] for r in rows]


def test_default_variants_cover_the_ablations_and_baselines() -> None:
    cfg = ModelConfig.tiny()
    v = default_variants(cfg)
    assert v["HP-MCoRe"] == cfg
    assert v["w/o skeleton"].use_skeleton is False and v["w/o static branch"].use_static is False
    assert v["w/o segmentation (thirds)"].use_segmentation is False
    assert v["w/o contrastive loss"].contrastive_weight == 0.0
    assert v["CoRe-style (I3D only)"] == CoReConfig(i3d_dim=cfg.i3d_dim)
    assert isinstance(v["dive-number mean"], DiveNumberMean)
    with pytest.raises(TypeError):
        run_comparison(
            synthetic_feature_bank({"train": 3}, **TINY),
            {"x": "nope"},  # type: ignore[dict-item, arg-type]
            TrainConfig(),
            EvalConfig(),
            0,
        )
