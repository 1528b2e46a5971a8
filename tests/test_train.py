"""Training (spec §9, §11.4): pairing, the lr schedule, named groups, exact resume, validation-only model
selection, checkpoint fingerprints and bad inputs that must fail before anything is written."""

from __future__ import annotations

import itertools
import math
import random
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

import hpmcore.training.train as train_mod
from hpmcore.config import EvalConfig
from hpmcore.data.canonical import DatasetError
from hpmcore.models.checkpoints import CheckpointError
from hpmcore.models.hpmcore import ModelConfig, VideoInputs, build_hpmcore
from hpmcore.runtime import derive_seed
from hpmcore.training.bank import BankDims, FeatureBank, FeatureBankError, synthetic_feature_bank
from hpmcore.training.checkpoints import BEST, LAST, load_weights, model_from_checkpoint, save_checkpoint
from hpmcore.training.core_baseline import CoReConfig, build_core_baseline
from hpmcore.training.evaluate import evaluate_model
from hpmcore.training.train import TrainConfig, build_optimizer, draw_pairs, lr_factor, train

TINY = dict(i3d_dim=16, static_dim=12, num_frames=12, num_clips=3)


def _bank(train: int = 8, val: int = 4, test: int = 4, **kw: object) -> FeatureBank:
    return synthetic_feature_bank({"train": train, "val": val, "test": test}, **TINY, **kw)  # type: ignore[arg-type]


def _cfg(**kw: object) -> TrainConfig:
    base = TrainConfig(epochs=3, batch_size=4, lr=1e-3, val_exemplars=3, device="cpu")
    return replace(base, **kw)


def _files(folder: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(folder.iterdir())} if folder.exists() else {}


# ---------------------------------------------------------------------------------------------------------
# Schedule, pairing, optimizer groups


def test_lr_schedule_cyclic_reference_and_monotone_option() -> None:
    cyclic = [lr_factor(t, schedule="cyclic", t_max=20) for t in (0, 10, 20, 40, 60)]
    assert cyclic == [1.0, 0.5, 0.0, 1.0, 0.0]  # period 40, zero at 20 and 60 (spec §9.4)
    assert lr_factor(30, schedule="cyclic", t_max=20) == pytest.approx(0.5)
    mono = [lr_factor(t, schedule="monotone", epochs=40) for t in range(40)]
    assert mono[0] == 1.0 and mono[20] == pytest.approx(0.5) and mono[10] == pytest.approx(0.5 + 0.5**1.5)
    assert all(a > b for a, b in itertools.pairwise(mono)) and mono[-1] > 0
    assert lr_factor(7, schedule="constant") == 1.0
    with pytest.raises(ValueError, match="schedule"):
        lr_factor(0, schedule="step")


def test_optimizer_follows_the_schedule_epoch_by_epoch(tmp_path: Path) -> None:
    """The lr actually used per epoch (reported and in Adam's groups) is base·½(1+cos(πt/T_max))."""
    bank = _bank()
    model = build_core_baseline(CoReConfig(i3d_dim=16, hidden=8))
    seen: list[tuple[float, float]] = []

    def on_epoch(epoch: int, metrics: dict[str, float]) -> None:
        state = torch.load(tmp_path / LAST, weights_only=True)
        next_lr = state["optimizer"]["param_groups"][0]["lr"]  # after scheduler.step(): epoch + 1
        seen.append((metrics["lr"], next_lr))

    train(
        model,
        bank,
        _cfg(epochs=5, t_max=2, lr=0.1),
        seed=0,
        checkpoint_dir=tmp_path,
        on_epoch=on_epoch,
        progress=False,
    )
    expected = [0.1 * f for f in (1.0, 0.5, 0.0, 0.5, 1.0, 0.5)]
    assert [lr for lr, _ in seen] == pytest.approx(expected[:5], abs=1e-12)
    assert [nxt for _, nxt in seen] == pytest.approx(expected[1:], abs=1e-12)


def test_pairs_respect_dive_number_singletons_and_any_mode() -> None:
    dns = ("101a", "101a", "101a", "201b", "201b", "305c")  # 305c is alone in train
    bank = synthetic_feature_bank({"train": 12}, dive_numbers=dns, **TINY)
    pool = bank.pool("train")
    ids = bank.split_ids("train")
    dn = {i: bank.label(i)["dive_number"] for i in ids}
    bank1 = synthetic_feature_bank({"train": 7}, dive_numbers=dns, **TINY)  # one 305c, one 101a extra
    lone = [i for i in bank1.split_ids("train") if bank1.label(i)["dive_number"] == "305c"]
    partners1 = draw_pairs(bank1.pool("train"), bank1.split_ids("train"), mode="dive_number", seed=1)
    assert dict(zip(bank1.split_ids("train"), partners1, strict=True))[lone[0]] == lone[0]  # self-pair

    draws = []
    for epoch in range(6):
        partners = draw_pairs(pool, ids, mode="dive_number", seed=derive_seed(0, "pairs", epoch))
        assert all(dn[q] == dn[e] and q != e for q, e in zip(ids, partners, strict=True))
        draws.append(partners)
    assert len({tuple(d) for d in draws}) > 1  # a new exemplar every epoch
    assert draws[0] == draw_pairs(pool, ids, mode="dive_number", seed=derive_seed(0, "pairs", 0))  # seeded

    anys = [draw_pairs(pool, ids, mode="any", seed=s) for s in range(6)]
    assert all(q != e for a in anys for q, e in zip(ids, a, strict=True))
    assert any(dn[q] != dn[e] for a in anys for q, e in zip(ids, a, strict=True))  # crosses dive numbers
    with pytest.raises(DatasetError, match="not in the exemplar pool"):
        draw_pairs(pool, ["nope/0"], mode="any", seed=0)


def test_optimizer_uses_named_groups_and_the_static_trunk_factor() -> None:
    model = build_hpmcore(ModelConfig.tiny())
    opt = build_optimizer(model, _cfg(lr=2e-3))
    assert [g["name"] for g in opt.param_groups] == list(model.parameter_groups())
    assert all(g["lr"] == 2e-3 for g in opt.param_groups)

    class EndToEnd(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.static_trunk, self.head = nn.Linear(2, 2), nn.Linear(2, 1)

        def parameter_groups(self) -> dict[str, list[nn.Parameter]]:
            return {
                "static_trunk": list(self.static_trunk.parameters()),
                "head": list(self.head.parameters()),
            }

    opt = build_optimizer(EndToEnd(), _cfg(lr=1e-3))
    assert {g["name"]: g["lr"] for g in opt.param_groups} == pytest.approx(
        {"static_trunk": 1e-4, "head": 1e-3}
    )

    class Partial(EndToEnd):
        def parameter_groups(self) -> dict[str, list[nn.Parameter]]:
            return {"head": list(self.head.parameters())}

    with pytest.raises(ValueError, match="exactly once"):
        build_optimizer(Partial(), _cfg())


# ---------------------------------------------------------------------------------------------------------
# Resume


def _assert_same_state(a: dict, b: dict) -> None:
    assert a.keys() == b.keys()
    for k in a:
        assert torch.equal(a[k], b[k]), k


def test_resume_after_a_crash_mid_epoch_equals_an_uninterrupted_run(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Full model (HD-GCN, GRU dropout, BatchNorm): 3 epochs straight vs crash in epoch 2 + resume."""
    cfg_m = ModelConfig.tiny()
    bank = _bank(train=6, val=3, test=0)
    cfg = _cfg(batch_size=3, pairing="any")

    straight = build_hpmcore(cfg_m, seed=0)
    res_a = train(straight, bank, cfg, seed=5, checkpoint_dir=tmp_path / "a", progress=False)

    calls = {"n": 0}
    real_losses = train_mod._losses

    def crashing(*args: object, **kw: object) -> object:
        calls["n"] += 1
        if calls["n"] == 6:  # 2 steps per epoch: the 2nd step of epoch 2, after one optimizer step
            raise KeyboardInterrupt("killed")
        return real_losses(*args, **kw)  # type: ignore[arg-type]

    monkeypatch.setattr(train_mod, "_losses", crashing)
    with pytest.raises(KeyboardInterrupt):
        train(build_hpmcore(cfg_m, seed=0), bank, cfg, seed=5, checkpoint_dir=tmp_path / "b", progress=False)
    assert torch.load(tmp_path / "b" / LAST, weights_only=True)["epoch"] == 1
    monkeypatch.setattr(train_mod, "_losses", real_losses)

    # A fresh "process": other global RNG states, other initial weights; everything must come from last.pt.
    random.seed(99), np.random.seed(99), torch.manual_seed(99)
    torch.rand(100), np.random.rand(7), random.random()
    epochs_run: list[int] = []
    resumed = build_hpmcore(cfg_m, seed=123)
    res_b = train(
        resumed,
        bank,
        cfg,
        seed=5,
        checkpoint_dir=tmp_path / "b",
        progress=False,
        on_epoch=lambda e, m: epochs_run.append(e),
    )
    assert res_b.resumed_from == 2 and epochs_run == [2]
    last_a = torch.load(tmp_path / "a" / LAST, weights_only=True)
    last_b = torch.load(tmp_path / "b" / LAST, weights_only=True)
    _assert_same_state(last_a["model"], last_b["model"])
    for sa, sb in zip(
        last_a["optimizer"]["state"].values(), last_b["optimizer"]["state"].values(), strict=True
    ):
        _assert_same_state(sa, sb)
    assert torch.equal(last_a["rng"]["torch"], last_b["rng"]["torch"])
    assert res_a.history == res_b.history and "epoch_seconds" not in res_a.history[0]
    # Checkpoints hold no timings: the same training state gives the same bytes (DVC hashes them).
    assert _files(tmp_path / "a") == _files(tmp_path / "b")
    assert res_a.best_epoch == res_b.best_epoch and res_a.best_val == res_b.best_val
    _assert_same_state(straight.state_dict(), resumed.state_dict())  # both hold best.pt now

    # Running again once complete trains nothing and returns the same selection.
    third = build_hpmcore(cfg_m, seed=7)
    again = train(
        third,
        bank,
        cfg,
        seed=5,
        checkpoint_dir=tmp_path / "b",
        progress=False,
        on_epoch=lambda e, m: epochs_run.append(e),
    )
    assert epochs_run == [2] and again.best_epoch == res_a.best_epoch
    _assert_same_state(straight.state_dict(), third.state_dict())


# ---------------------------------------------------------------------------------------------------------
# Validation-only model selection


def test_model_selection_uses_validation_only_and_never_touches_test(tmp_path: Path) -> None:
    full = _bank(train=8, val=4, test=4)
    no_test = FeatureBank({k: v for k, v in full.videos.items() if not k.startswith("test/")}, full.table)
    cfg_m = ModelConfig.tiny(use_skeleton=False)
    model = build_hpmcore(cfg_m, seed=0)
    result = train(model, no_test, _cfg(epochs=4, lr=3e-3), seed=0, checkpoint_dir=tmp_path, progress=False)
    rhos = [h["val_rho"] for h in result.history]
    assert result.best_epoch == int(np.argmax([-math.inf if math.isnan(r) else r for r in rhos]))
    best = load_weights(tmp_path / BEST, build_hpmcore(cfg_m, seed=1))
    assert best.epoch == result.best_epoch and best.val["rho"] == result.best_val["rho"]
    assert best.val["split"] == "val"
    # The returned model holds the best weights; its val metrics are the selected ones.
    ev = evaluate_model(model, no_test, "val", _cfg().val_eval_config(), seed=0)
    assert ev.metrics["rho"] == result.best_val["rho"]
    with pytest.raises(FeatureBankError, match="test/0"):  # the test features really are absent
        evaluate_model(model, no_test, "test", EvalConfig(exemplars=3, device="cpu"), seed=0)


def test_without_validation_split_the_last_epoch_is_kept(tmp_path: Path) -> None:
    result = train(
        build_core_baseline(CoReConfig(i3d_dim=16, hidden=8)),
        _bank(val=0),
        _cfg(epochs=2),
        seed=0,
        checkpoint_dir=tmp_path,
        progress=False,
    )
    assert result.best_epoch == 1 and result.best_val is None and "val_rho" not in result.history[0]


# ---------------------------------------------------------------------------------------------------------
# Bad inputs: a clear error naming the culprit, nothing written


def test_missing_train_video_names_it_and_writes_nothing(tmp_path: Path) -> None:
    bank = _bank()
    partial = FeatureBank({k: v for k, v in bank.videos.items() if k != "train/3"}, bank.table)
    out = tmp_path / "ckpt"
    with pytest.raises(FeatureBankError, match=r"'train/3'.*no features"):
        train(build_hpmcore(ModelConfig.tiny()), partial, _cfg(), seed=0, checkpoint_dir=out, progress=False)
    assert not out.exists()


def test_nan_feature_names_the_video_and_writes_nothing(tmp_path: Path) -> None:
    bank = _bank()
    videos = dict(bank.videos)
    bad = videos["val/1"]
    static = bad.static.clone()
    static[4, 2] = math.nan
    videos["val/1"] = replace(bad, static=static)
    out = tmp_path / "ckpt"
    with pytest.raises(FeatureBankError, match=r"'val/1'.*static.*NaN"):
        train(
            build_hpmcore(ModelConfig.tiny()),
            FeatureBank(videos, bank.table),
            _cfg(),
            seed=0,
            checkpoint_dir=out,
            progress=False,
        )
    assert not out.exists()


def test_val_dive_number_without_train_exemplar_names_the_query(tmp_path: Path) -> None:
    bank = synthetic_feature_bank({"train": 4}, dive_numbers=("101a", "201b"), **TINY)
    lonely = synthetic_feature_bank({"val": 1}, dive_numbers=("999z",), seed=3, **TINY)
    merged = FeatureBank.from_videos(
        [*bank.videos.values(), *lonely.videos.values()],
        {**{i: "train" for i in bank.videos}, "val/0": "val"},
    )
    out = tmp_path / "ckpt"
    with pytest.raises(DatasetError, match=r"query 'val/0'.*999z"):
        train(build_hpmcore(ModelConfig.tiny()), merged, _cfg(), seed=0, checkpoint_dir=out, progress=False)
    assert not out.exists()


def test_checkpoint_from_another_config_is_refused_untouched(tmp_path: Path) -> None:
    bank = _bank()
    core = CoReConfig(i3d_dim=16, hidden=8)
    train(build_core_baseline(core), bank, _cfg(epochs=1), seed=0, checkpoint_dir=tmp_path, progress=False)
    before = _files(tmp_path)
    assert set(before) == {BEST, LAST}  # atomic writes leave no temp files behind
    with pytest.raises(CheckpointError, match=rf"{LAST}.*train\.lr"):
        train(
            build_core_baseline(core),
            bank,
            _cfg(epochs=1, lr=5e-4),
            seed=0,
            checkpoint_dir=tmp_path,
            progress=False,
        )
    with pytest.raises(CheckpointError, match=r"model\.config\.hidden"):
        train(
            build_core_baseline(replace(core, hidden=4)),
            bank,
            _cfg(epochs=1),
            seed=0,
            checkpoint_dir=tmp_path,
            progress=False,
        )
    with pytest.raises(CheckpointError, match=r"seed"):
        train(
            build_core_baseline(core), bank, _cfg(epochs=1), seed=1, checkpoint_dir=tmp_path, progress=False
        )
    with pytest.raises(CheckpointError, match=rf"{BEST}.*another model configuration.*hidden"):
        load_weights(tmp_path / BEST, build_core_baseline(replace(core, hidden=4)))
    with pytest.raises(CheckpointError, match=r"another model configuration.*kind"):
        load_weights(tmp_path / BEST, build_hpmcore(ModelConfig.tiny()))
    assert _files(tmp_path) == before
    (tmp_path / "junk.pt").write_bytes(b"not a checkpoint")
    with pytest.raises(CheckpointError, match=r"junk\.pt.*unreadable"):
        load_weights(tmp_path / "junk.pt", build_core_baseline(core))


def test_checkpoint_holds_the_full_training_state(tmp_path: Path) -> None:
    bank = _bank()
    model = build_hpmcore(ModelConfig.tiny(use_skeleton=False))
    train(
        model, bank, _cfg(epochs=1, amp=True), seed=0, checkpoint_dir=tmp_path, progress=False
    )  # amp: CPU → fp32
    state = torch.load(tmp_path / LAST, weights_only=True)
    assert {
        "model",
        "optimizer",
        "scheduler",
        "scaler",
        "rng",
        "epoch",
        "history",
        "best_epoch",
        "best_val_rho",
        "config",
    } <= set(state)
    assert "train_seconds" not in state and "epoch_seconds" not in state["history"][0]  # no timings
    assert set(state["rng"]) == {"python", "numpy", "torch", "cuda"}
    assert [g["name"] for g in state["optimizer"]["param_groups"]] == list(model.parameter_groups())
    assert state["config"]["train"]["lr"] == 1e-3 and "device" not in state["config"]["train"]
    assert state["config"]["model"]["kind"] == "HPMCoRe"


def test_train_config_validation() -> None:
    TrainConfig().validate()
    for bad in (
        dict(epochs=0),
        dict(lr=0.0),
        dict(schedule="step"),
        dict(pairing="judge"),
        dict(batch_size=0),
    ):
        with pytest.raises(ValueError):
            replace(TrainConfig(), **bad).validate()  # type: ignore[arg-type]


# ---------------------------------------------------------------------------------------------------------
# Targets and ground truth


def test_dd_mode_regresses_completeness() -> None:
    """DD mode (spec §10.3): training targets are score / DD; a DD <= 0 is refused, naming the video."""
    bank = _bank()
    model = build_core_baseline(CoReConfig(i3d_dim=16, hidden=8))
    videos = [bank.get(i) for i in bank.split_ids("train")]
    data = train_mod._train_data(model, videos, _cfg(dd_mode=True), torch.device("cpu"))
    want = torch.tensor([v.score / v.difficulty for v in videos], dtype=torch.float32)
    torch.testing.assert_close(data.targets, want)
    raw = train_mod._train_data(model, videos, _cfg(), torch.device("cpu"))
    torch.testing.assert_close(raw.targets, torch.tensor([v.score for v in videos], dtype=torch.float32))
    zero = [replace(videos[0], difficulty=0.0), *videos[1:]]
    with pytest.raises(FeatureBankError, match=f"'{videos[0].id}' has difficulty <= 0"):
        train_mod._train_data(model, zero, _cfg(dd_mode=True), torch.device("cpu"))


def test_train_dives_without_transitions_pool_with_decoded_ones(tmp_path: Path) -> None:
    """A train dive without ground truth is pooled with its decoded transitions (others with their ground
    truth) and trains; with no ground truth at all a segmenter cannot learn: an error, nothing written."""
    bank = _bank(train=6, val=3, test=0)
    unknown = {"train/1", "train/4"}
    videos = {k: replace(v, transitions=None) if k in unknown else v for k, v in bank.videos.items()}
    partial = FeatureBank(videos, bank.table, bank.dims)
    model = build_hpmcore(ModelConfig.tiny(use_skeleton=False), seed=0)
    data = train_mod._train_data(
        model, [partial.get(i) for i in partial.split_ids("train")], _cfg(), torch.device("cpu")
    )
    rows = torch.tensor([data.index[i] for i in partial.split_ids("train")])
    gt = data.inputs.transitions
    assert [bool((gt[r] == -1).all()) for r in rows] == [i in unknown for i in partial.split_ids("train")]
    out = model.train()(data.select(rows), data.select(rows))
    for n, vid in enumerate(partial.split_ids("train")):
        want = out.query.predicted[n] if vid in unknown else gt[rows[n]]
        assert torch.equal(out.query.transitions[n], want), vid
    result = train(model, partial, _cfg(epochs=2), seed=0, checkpoint_dir=tmp_path / "ok", progress=False)
    assert math.isfinite(result.history[-1]["loss_tas"])

    none = FeatureBank({k: replace(v, transitions=None) for k, v in bank.videos.items()}, bank.table)
    with pytest.raises(DatasetError, match="no train dive has ground-truth transitions"):
        train(
            build_hpmcore(ModelConfig.tiny(use_skeleton=False)),
            none,
            _cfg(),
            seed=0,
            checkpoint_dir=tmp_path / "x",
            progress=False,
        )
    assert not (tmp_path / "x").exists()
    # Without a segmenter ground truth is never needed.
    train(
        build_hpmcore(ModelConfig.tiny(use_skeleton=False, use_segmentation=False)),
        none,
        _cfg(epochs=1),
        seed=0,
        checkpoint_dir=tmp_path / "thirds",
        progress=False,
    )


# ---------------------------------------------------------------------------------------------------------
# Checkpoints: refused with the file named, rebuilt from the file alone


def test_bad_checkpoints_are_refused_naming_the_file(tmp_path: Path) -> None:
    bank = _bank()
    core = CoReConfig(i3d_dim=16, hidden=8)
    train(build_core_baseline(core), bank, _cfg(epochs=1), seed=0, checkpoint_dir=tmp_path, progress=False)
    best = torch.load(tmp_path / BEST, weights_only=True)
    last = torch.load(tmp_path / LAST, weights_only=True)

    nan = {
        **best,
        "model": {**best["model"], "regressor.0.weight": best["model"]["regressor.0.weight"] * math.nan},
    }
    save_checkpoint(nan, tmp_path / "nan.pt")
    with pytest.raises(
        CheckpointError, match=r"nan\.pt: non-finite \(NaN/inf\) weights.*regressor\.0\.weight"
    ):
        load_weights(tmp_path / "nan.pt", build_core_baseline(core))
    with pytest.raises(CheckpointError, match=r"nan\.pt: non-finite"):
        model_from_checkpoint(tmp_path / "nan.pt")

    save_checkpoint({k: v for k, v in best.items() if k != "config"}, tmp_path / "noconfig.pt")
    with pytest.raises(CheckpointError, match=r"noconfig\.pt: missing key\(s\) \['config'\]"):
        model_from_checkpoint(tmp_path / "noconfig.pt")
    save_checkpoint({**best, "config": {"model": best["config"]["model"]}}, tmp_path / "thin.pt")
    with pytest.raises(CheckpointError, match=r"thin\.pt: 'config' must hold the run fingerprint"):
        model_from_checkpoint(tmp_path / "thin.pt")
    save_checkpoint(
        {**best, "model": {k: v for k, v in best["model"].items() if "regressor.6" not in k}},
        tmp_path / "keys.pt",
    )
    with pytest.raises(CheckpointError, match=r"keys\.pt: weights do not fit the model.*regressor\.6"):
        model_from_checkpoint(tmp_path / "keys.pt")

    # A resume restores the RNG states: a malformed one is refused before anything is written.
    before = _files(tmp_path)
    for name, rng in (
        ("python", {**last["rng"], "python": [3, [1, 2, 3], None]}),
        (
            "numpy",
            {**last["rng"], "numpy": {**last["rng"]["numpy"], "keys": torch.zeros(5, dtype=torch.int64)}},
        ),
        ("torch", {**last["rng"], "torch": torch.zeros(3, dtype=torch.uint8)}),
    ):
        save_checkpoint({**last, "rng": rng}, tmp_path / LAST)
        with pytest.raises(CheckpointError, match=rf"{LAST}: bad RNG state"):
            train(
                build_core_baseline(core),
                bank,
                _cfg(epochs=1),
                seed=0,
                checkpoint_dir=tmp_path,
                progress=False,
            )
        assert _files(tmp_path)[BEST] == before[BEST], name
    save_checkpoint({k: v for k, v in last.items() if k != "optimizer"}, tmp_path / LAST)
    with pytest.raises(CheckpointError, match=rf"{LAST}: missing key\(s\) \['optimizer'\]"):
        train(
            build_core_baseline(core), bank, _cfg(epochs=1), seed=0, checkpoint_dir=tmp_path, progress=False
        )


def test_model_from_checkpoint_rebuilds_the_trained_model(tmp_path: Path) -> None:
    """Evaluation needs no trainer and no params: kind, config and weights come from the file."""
    bank = _bank()
    for name, model in (
        ("core", build_core_baseline(CoReConfig(i3d_dim=16, hidden=8))),
        ("hpmcore", build_hpmcore(ModelConfig.tiny(dim=16), seed=3)),
    ):
        train(model, bank, _cfg(epochs=1), seed=0, checkpoint_dir=tmp_path / name, progress=False)
        rebuilt, info = model_from_checkpoint(tmp_path / name / BEST)
        assert type(rebuilt) is type(model) and rebuilt.config == model.config
        assert info.kind == type(model).__name__ and info.epoch == 0 and info.dd_mode is False
        a = evaluate_model(model, bank, "test", EvalConfig(exemplars=3, device="cpu"), seed=1)
        b = evaluate_model(rebuilt, bank, "test", EvalConfig(exemplars=3, device="cpu"), seed=1)
        assert a.metrics == b.metrics


def test_bank_dims_fill_the_model_config() -> None:
    dims = BankDims(i3d_dim=16, static_dim=12, num_frames=12, num_clips=3, clip_stride=4)
    cfg = dims.fill(ModelConfig())
    assert (cfg.i3d_dim, cfg.static_dim, cfg.num_frames, cfg.clip_stride) == (16, 12, 12, 4)
    assert cfg.dim == ModelConfig().dim  # architecture params untouched
    assert dims.fill(CoReConfig(hidden=7)) == CoReConfig(i3d_dim=16, hidden=7)


# ---------------------------------------------------------------------------------------------------------
# In-batch pairs (train.pair_scheme: in_batch)


def test_in_batch_pairs_are_every_ordered_pair_the_pairing_allows() -> None:
    inputs = VideoInputs(i3d=torch.arange(5.0).view(5, 1, 1).expand(5, 2, 3))
    data = train_mod._Data(ids=[f"v{i}" for i in range(5)], inputs=inputs, targets=torch.arange(5.0))
    keys = ["a", "b", "a", "a", "b"]
    order = torch.tensor([4, 0, 3, 1, 2])
    batches = list(train_mod._in_batch_batches(data, order, keys, _cfg(batch_size=3), torch.device("cpu")))
    # batch 1: rows 4, 0, 3 -> keys b, a, a: pairs (0, 3), (3, 0); batch 2: rows 1, 2 -> b, a: none
    assert len(batches) == 1
    (b,) = batches
    assert sorted(zip(b.qi.tolist(), b.ei.tolist(), strict=True)) == [(0, 3), (3, 0)]
    assert b.count == 2 and b.exemplar is None and b.local is not None
    assert b.local[0].tolist() == [1, 2] and b.local[1].tolist() == [2, 1]  # positions in the batch
    assert b.query.i3d[:, 0, 0].tolist() == [4.0, 0.0, 3.0]  # the batch's videos, each once
    every = list(
        train_mod._in_batch_batches(data, order, [None] * 5, _cfg(batch_size=3), torch.device("cpu"))
    )
    assert [x.count for x in every] == [6, 2]  # 3·2 ordered pairs, then 2·1


def test_in_batch_training_learns_and_resumes_exactly(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    bank = _bank(train=12, val=4)
    cfg = _cfg(pair_scheme="in_batch", pairing="any", batch_size=4, epochs=3, lr=3e-3)
    result = train(
        build_hpmcore(ModelConfig.tiny(), seed=0), bank, cfg, seed=0, checkpoint_dir=tmp_path / "a"
    )
    losses = [h["loss_aqa"] for h in result.history]
    assert losses[-1] < losses[0]
    # 3 steps (of 12 pairs each) per epoch: killed in epoch 2, then resumed
    calls = {"n": 0}
    real_losses = train_mod._losses

    def crashing(*args: object, **kw: object) -> object:
        calls["n"] += 1
        if calls["n"] == 5:
            raise KeyboardInterrupt("killed")
        return real_losses(*args, **kw)  # type: ignore[arg-type]

    monkeypatch.setattr(train_mod, "_losses", crashing)
    with pytest.raises(KeyboardInterrupt):
        train(build_hpmcore(ModelConfig.tiny(), seed=0), bank, cfg, seed=0, checkpoint_dir=tmp_path / "b")
    monkeypatch.setattr(train_mod, "_losses", real_losses)
    train(build_hpmcore(ModelConfig.tiny(), seed=7), bank, cfg, seed=0, checkpoint_dir=tmp_path / "b")
    assert _files(tmp_path / "a") == _files(tmp_path / "b")  # byte-identical checkpoints
    with pytest.raises(ValueError, match=r"in_batch needs train\.mode: cached"):
        replace(cfg, mode="end_to_end").validate()
