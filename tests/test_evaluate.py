"""Evaluation (spec §10, §11): seeded distinct voters, per-video encoder caching equal to the full pair
forward, the voting formula (raw and DD mode), reproducible JSON-safe metrics, and bad inputs."""

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
from hpmcore.data.canonical import DatasetError
from hpmcore.models.hpmcore import ModelConfig, build_hpmcore
from hpmcore.models.segmentation import decode_halves
from hpmcore.training.bank import (
    FeatureBank,
    FeatureBankError,
    VideoFeatures,
    stack_videos,
    synthetic_feature_bank,
)
from hpmcore.training.checkpoints import load_weights
from hpmcore.training.core_baseline import CoReConfig, build_core_baseline
from hpmcore.training.evaluate import (
    evaluate_model,
    evaluation_from_predictions,
    json_safe,
    plan_evaluation,
    voter_seed,
)
from hpmcore.training.train import TrainConfig, train

TINY = dict(i3d_dim=16, static_dim=12, num_frames=12, num_clips=3)
DNS = ("101a", "201b", "301c")


def _bank(train: int = 12, test: int = 4, **kw: object) -> FeatureBank:
    return synthetic_feature_bank({"train": train, "test": test}, **TINY, **kw)  # type: ignore[arg-type]


def _ecfg(**kw: object) -> EvalConfig:
    return replace(EvalConfig(exemplars=3, num_voter_draws=2, device="cpu"), **kw)


# ---------------------------------------------------------------------------------------------------------
# Exemplar plans


def test_plan_draws_distinct_seeded_exemplars_of_the_same_dive_number() -> None:
    bank = _bank(train=12, test=6)
    plan = plan_evaluation(bank, "test", _ecfg(exemplars=3, num_voter_draws=3), seed=4)
    assert plan.queries == tuple(bank.split_ids("test")) and plan.seeds == tuple(
        voter_seed(4, d) for d in range(3)
    )
    train_ids = set(bank.split_ids("train"))
    for draw in plan.exemplars:
        for q, es in draw.items():
            assert len(es) == 3 and len(set(es)) == 3 and set(es) <= train_ids
            assert {bank.label(e)["dive_number"] for e in es} == {bank.label(q)["dive_number"]}
    assert plan.exemplars[0] != plan.exemplars[1]  # different voter seeds, different voters
    assert plan_evaluation(bank, "test", _ecfg(exemplars=3, num_voter_draws=3), seed=4) == plan
    # Fewer candidates than k: all of them, distinct (no padding with duplicates, spec §13 item 14).
    few = plan_evaluation(bank, "test", _ecfg(exemplars=10, num_voter_draws=1), seed=0)
    assert all(len(es) == 4 == len(set(es)) for es in few.exemplars[0].values())  # 12 train / 3 dive numbers
    anyp = plan_evaluation(bank, "test", _ecfg(exemplars=6, exemplar_mode="any", num_voter_draws=1), seed=0)
    assert any(len({bank.label(e)["dive_number"] for e in es}) > 1 for es in anyp.exemplars[0].values())


# ---------------------------------------------------------------------------------------------------------
# Caching equivalence and the voting formula


def test_cached_encoding_and_heads_equal_the_full_forward_per_pair() -> None:
    """Spec §10.2: encoding each video once and running only the pair heads = the full pair forward."""
    bank = _bank(train=9, test=3)
    model = build_hpmcore(ModelConfig.tiny(), seed=3)  # full model: HD-GCN, segmenter, static branch
    ev = evaluate_model(model, bank, "test", _ecfg(exemplars=3, num_voter_draws=1), seed=1)
    spec = model.input_spec("query")
    assert not model.training
    with torch.no_grad():
        for row in ev.rows:
            q = stack_videos([bank.get(row["id"])], spec)
            preds, decoded = [], None
            for e_id in row["exemplars"]:
                e = stack_videos([bank.get(e_id)], spec)
                out = model(q, e)  # eval mode: every video re-encoded, decoded transitions for both
                preds.append(float(out.delta_qe[0]) + bank.get(e_id).score)
                decoded = out.query.transitions
            assert row["pred"] == pytest.approx(float(np.mean(preds)), abs=1e-4)
            assert [row["st_pred"], row["ed_pred"]] == decoded[0].tolist()
            assert [row["st_gt"], row["ed_gt"]] == bank.get(row["id"]).transitions.tolist()
            seg = model.segmenter(q.static)
            assert decoded[0].tolist() == decode_halves(seg)[0].tolist()


def _zero_delta_model() -> torch.nn.Module:
    model = build_core_baseline(CoReConfig(i3d_dim=16, hidden=4))
    last = model.regressor[-1]
    torch.nn.init.zeros_(last.weight), torch.nn.init.zeros_(last.bias)
    return model


def test_prediction_is_the_voter_mean_and_dd_mode_rescales() -> None:
    """With Δ ≡ 0: ŝ_q = mean_e s_e; DD mode: ŝ_q = DD_q · mean_e (s_e / DD_e) (spec §10.3)."""
    bank = _bank(train=12, test=4, dive_numbers=DNS)
    model = _zero_delta_model()
    for dd_mode in (False, True):
        cfg = _ecfg(exemplars=6, exemplar_mode="any", num_voter_draws=1)
        ev = evaluate_model(model, bank, "test", cfg, seed=2, dd_mode=dd_mode)
        for row in ev.rows:
            es = [bank.get(e) for e in row["exemplars"]]
            if dd_mode:
                want = bank.get(row["id"]).difficulty * np.mean([e.score / e.difficulty for e in es])
            else:
                want = np.mean([e.score for e in es])
            assert row["pred"] == pytest.approx(want, rel=1e-12)
        assert ev.metrics["info"]["dd_mode"] is dd_mode
        assert ev.metrics["tiou"] is None and ev.rows[0]["st_pred"] is None  # no segmentation in this model


# ---------------------------------------------------------------------------------------------------------
# Metrics


def test_metrics_from_predictions_by_hand() -> None:
    bank = _bank(train=3, test=4)
    queries = bank.split_ids("test")
    true = np.array([bank.label(q)["final_score"] for q in queries])
    order = np.argsort(true)
    draw0 = true.copy()  # perfect
    draw1 = true.copy()
    draw1[order[0]], draw1[order[1]] = true[order[1]], true[order[0]]  # swap the two lowest
    preds = np.stack([draw0, draw1])
    transitions = np.array([[2, 8], [3, 9], [1, 7], [4, 10]])
    ev = evaluation_from_predictions(bank, "test", queries, preds, transitions)
    m = ev.metrics
    span = true.max() - true.min()
    l2_1 = 2 * (true[order[1]] - true[order[0]]) ** 2 / 4
    assert m["draws"][0] == {"rho": 1.0, "l2": 0.0, "rl2": 0.0, "rl2_x100": 0.0, "exec_rho": 1.0}
    dd = np.array([bank.label(q)["difficulty"] for q in queries])
    assert m["dd_only_rho"] == pytest.approx(stats.spearmanr(dd, true).statistic)
    assert m["draws"][1]["exec_rho"] == pytest.approx(stats.spearmanr(draw1 / dd, true / dd).statistic)
    # DD times one constant ranks dives by difficulty alone: final rho = DD-only rho, execution rho undefined
    dd_only = evaluation_from_predictions(bank, "test", queries, (dd * 2.5)[None], None).metrics
    assert dd_only["rho"] == pytest.approx(m["dd_only_rho"]) and dd_only["exec_rho"] is None
    assert m["draws"][1]["rho"] == pytest.approx(1 - 6 * 2 / (4 * 15))  # one adjacent swap of 4 ranks: 0.8
    assert m["draws"][1]["l2"] == pytest.approx(l2_1)
    assert m["rho"] == pytest.approx(0.9) and m["rho_std"] == pytest.approx(np.std([1.0, 0.8], ddof=1))
    assert m["rl2_x100"] == pytest.approx(100 * l2_1 / span**2 / 2)
    gts = np.stack([bank.get(q).transitions.numpy() for q in queries])
    inter = np.maximum(0, np.minimum(gts[:, 1], transitions[:, 1]) - np.maximum(gts[:, 0], transitions[:, 0]))
    tious = inter / ((gts[:, 1] - gts[:, 0]) + (transitions[:, 1] - transitions[:, 0]) - inter + 1e-8)
    assert m["tiou"] == pytest.approx(tious.mean())
    assert m["aiou_50"] == pytest.approx(100 * np.mean(tious >= 0.5))
    assert m["aiou_75"] == pytest.approx(100 * np.mean(tious >= 0.75))
    assert [r["tiou"] for r in ev.rows] == pytest.approx(tious.tolist())
    assert [r["pred"] for r in ev.rows] == pytest.approx(preds.mean(axis=0).tolist())
    # A constant prediction has no ranking: ρ is undefined → null in JSON; non-finite predictions too.
    const = evaluation_from_predictions(bank, "test", queries, np.full((1, 4), 70.0), None)
    assert const.metrics["rho"] is None and const.metrics["rho_std"] is None and const.metrics["l2"] > 0
    nan = evaluation_from_predictions(bank, "test", queries, np.full((1, 4), math.nan), None)
    assert nan.metrics["rho"] is None and nan.metrics["l2"] is None
    json.dumps([const.metrics, nan.metrics, m, ev.rows], allow_nan=False)
    assert json_safe({"a": (1.0, math.inf, np.float32(2))}) == {"a": [1.0, None, 2.0]}


# ---------------------------------------------------------------------------------------------------------
# Reproducibility


def test_same_checkpoint_and_seed_give_identical_metrics(tmp_path: Path) -> None:
    bank = synthetic_feature_bank({"train": 9, "val": 3, "test": 4}, **TINY)  # type: ignore[arg-type]
    cfg_m = ModelConfig.tiny(use_skeleton=False)
    train(
        build_hpmcore(cfg_m),
        bank,
        TrainConfig(epochs=2, batch_size=4, val_exemplars=3, device="cpu"),
        seed=0,
        checkpoint_dir=tmp_path,
        progress=False,
    )
    results = []
    for init_seed in (1, 2):  # fresh models with different initial weights, loaded from the same best.pt
        model = build_hpmcore(cfg_m, seed=init_seed)
        load_weights(tmp_path / "best.pt", model)
        results.append(evaluate_model(model, bank, "test", _ecfg(num_voter_draws=3), seed=7))
    assert results[0].metrics == results[1].metrics and results[0].rows == results[1].rows
    assert json.dumps(results[0].metrics, sort_keys=True) == json.dumps(results[1].metrics, sort_keys=True)
    other = evaluate_model(model, bank, "test", _ecfg(num_voter_draws=3), seed=8)
    assert other.metrics["info"]["voter_seeds"] != results[0].metrics["info"]["voter_seeds"]


# ---------------------------------------------------------------------------------------------------------
# Bad inputs


def test_missing_query_or_exemplar_is_named() -> None:
    bank = _bank()
    model = build_hpmcore(ModelConfig.tiny(use_skeleton=False))
    for gone in ("test/2", "train/5"):
        partial = FeatureBank({k: v for k, v in bank.videos.items() if k != gone}, bank.table)
        with pytest.raises(FeatureBankError, match=f"'{gone}'.*no features"):
            evaluate_model(model, partial, "test", _ecfg(exemplars=10, num_voter_draws=1), seed=0)


def test_dive_number_without_train_exemplar_names_the_query() -> None:
    bank = _bank()
    odd = replace(bank.get("test/1"), dive_number="999z", id="test/99")
    merged = FeatureBank.from_videos(
        [*bank.videos.values(), odd], {**{k: bank.label(k)["split"] for k in bank.videos}, "test/99": "test"}
    )
    with pytest.raises(DatasetError, match=r"query 'test/99'.*dive number '999z'"):
        evaluate_model(build_core_baseline(CoReConfig(i3d_dim=16)), merged, "test", _ecfg(), seed=0)
    ok = evaluate_model(
        build_core_baseline(CoReConfig(i3d_dim=16)), merged, "test", _ecfg(exemplar_mode="any"), seed=0
    )
    assert ok.metrics["num_queries"] == 5  # w/o DN the same query is fine


def test_nan_or_misshaped_features_name_the_video() -> None:
    bank = _bank()
    model = build_hpmcore(ModelConfig.tiny())
    cases = {
        "i3d": lambda v: replace(v, i3d=v.i3d.clone().index_fill_(0, torch.tensor([1]), math.nan)),
        "skeleton": lambda v: replace(v, skeleton=v.skeleton.clone().fill_(math.inf)),
        "static": lambda v: replace(v, static=v.static[:5]),
    }
    for name, corrupt in cases.items():
        videos = dict(bank.videos)
        videos["test/3"] = corrupt(videos["test/3"])
        with pytest.raises(FeatureBankError, match=f"'test/3'.*{name}"):
            evaluate_model(model, FeatureBank(videos, bank.table), "test", _ecfg(), seed=0)


def test_bank_rejects_inconsistent_labels_and_unknown_videos() -> None:
    bank = _bank(train=3, test=1)
    wrong = replace(bank.get("test/0"), score=1.0)
    with pytest.raises(FeatureBankError, match="'test/0' labels"):
        FeatureBank({**bank.videos, "test/0": wrong}, bank.table)
    stray = VideoFeatures("x/1", torch.zeros(3, 16), None, None, None, 1.0, 2.0, "101a")
    with pytest.raises(FeatureBankError, match="'x/1' is not in the annotation table"):
        FeatureBank({**bank.videos, "x/1": stray}, bank.table)
    with pytest.raises(DatasetError, match="'val' has no videos"):
        plan_evaluation(bank, "val", _ecfg(), seed=0)
    with pytest.raises(ValueError, match="exemplars"):
        _ecfg(exemplars=0).validate()


def test_queries_without_ground_truth_are_left_out_of_tiou_and_aiou() -> None:
    """tIoU / AIoU over the queries with ground-truth transitions only; score metrics over all."""
    bank = _bank(train=3, test=4)
    queries = bank.split_ids("test")
    videos = dict(bank.videos)
    videos[queries[1]] = replace(videos[queries[1]], transitions=None)
    partial = FeatureBank(videos, bank.table, bank.dims)
    gts = {q: partial.get(q).transitions for q in queries}
    pred = np.array([gts[queries[0]].tolist(), [0, 11], gts[queries[2]].tolist(), [0, 1]])
    st, ed = gts[queries[3]].tolist()
    # query 3: predicted [0, 1] vs ground truth [st, ed] with st >= 1: disjoint, tIoU 0
    ev = evaluation_from_predictions(partial, "test", queries, np.zeros((1, 4)) + 50.0, pred)
    m = ev.metrics
    assert m["queries_without_transitions"] == 1
    assert m["tiou"] == pytest.approx(2 / 3, abs=1e-6)  # (1 + 1 + 0) / 3: query 1 is not counted
    assert m["aiou_50"] == pytest.approx(200 / 3) and m["aiou_75"] == pytest.approx(200 / 3)
    assert ev.rows[1]["tiou"] is None and ev.rows[1]["st_gt"] is None and ev.rows[1]["st_pred"] == 0
    assert ev.rows[3]["tiou"] == 0.0 and st >= 1 and ed > st
    none = FeatureBank({k: replace(v, transitions=None) for k, v in bank.videos.items()}, bank.table)
    m = evaluation_from_predictions(none, "test", queries, np.zeros((1, 4)) + 50.0, pred).metrics
    assert m["queries_without_transitions"] == 4 and m["tiou"] is None and m["aiou_50"] is None


def test_a_model_evaluates_queries_without_ground_truth(tmp_path: Path) -> None:
    """HP-MCoRe with exemplars pooled with their ground truth (exemplar_gt_at_test): an exemplar without
    it falls back to its decoded transitions; a query without it has no tIoU."""
    bank = _bank(train=9, test=3)
    videos = {
        k: replace(v, transitions=None) if k in ("train/0", "test/1") else v for k, v in bank.videos.items()
    }
    partial = FeatureBank(videos, bank.table, bank.dims)
    model = build_hpmcore(ModelConfig.tiny(exemplar_gt_at_test=True), seed=0)
    ev = evaluate_model(model, partial, "test", _ecfg(exemplars=9, exemplar_mode="any"), seed=0)
    assert all("train/0" in row["exemplars"] for row in ev.rows)  # every query votes with it
    assert ev.metrics["queries_without_transitions"] == 1 and ev.metrics["tiou"] is not None
    assert ev.rows[1]["tiou"] is None and ev.rows[0]["tiou"] is not None
