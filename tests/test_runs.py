"""The model stages and their runs: params that are read from the features instead (widths, T, clip
stride) or from the checkpoint (DD mode), the train / evaluate stages end to end on tiny stage outputs
(dives skipped upstream, dives without transitions, bad checkpoints: exit 2 naming the file,
byte-identical outputs on a rerun), evaluating a checkpoint on a split without params; plus input
standardisation, the configurable HD-GCN width, checkpoint restarts for pipeline stages and the servable
PairScorer."""

from __future__ import annotations

import importlib.util
import json
import logging
import math
import sys
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import Any

import pyarrow.csv as pacsv
import pytest
import torch
from stage_outputs import Dive, dives, write_params, write_stage_outputs

from hpmcore.config import (
    ConfigError,
    EvalConfig,
    ModelConfig,
    Params,
    TrainConfig,
    load_params,
    params_to_dict,
)
from hpmcore.models.checkpoints import CheckpointError
from hpmcore.models.export import PairScorer, flat_layout, flatten_pair
from hpmcore.models.hdgcn import build_hdgcn
from hpmcore.models.hpmcore import VideoInputs, build_hpmcore
from hpmcore.models.normalize import MIN_STD_FRACTION, FeatureStandardizer
from hpmcore.training.bank import FeatureBank, pipeline_bank, synthetic_feature_bank
from hpmcore.training.checkpoints import BEST, CHECKPOINTS, LAST, code_digest, save_checkpoint
from hpmcore.training.evaluate import evaluate_checkpoint
from hpmcore.training.train import TrainResult, train

PROJECT = Path(__file__).resolve().parents[1]
TINY = dict(i3d_dim=16, static_dim=12, num_frames=12, num_clips=3)


def _bank(**splits: int) -> FeatureBank:
    return synthetic_feature_bank(splits or {"train": 8, "val": 4, "test": 4}, **TINY)  # type: ignore[arg-type]


def _train_cfg(**kw: object) -> TrainConfig:
    return replace(TrainConfig(epochs=2, batch_size=4, val_exemplars=3, device="cpu"), **kw)


def _train_tiny(cfg: ModelConfig, bank: FeatureBank, folder: Path, **kw: Any) -> TrainResult:
    """Two epochs of a seed-0 model of ``cfg`` with checkpoints in ``folder`` (``kw``: to :func:`train`)."""
    return train(
        build_hpmcore(cfg, seed=0), bank, _train_cfg(), seed=0, checkpoint_dir=folder, progress=False, **kw
    )


def test_standardizer_is_identity_until_fitted_then_standardises_per_channel() -> None:
    norm = FeatureStandardizer(3)
    x = torch.tensor(
        [[[1.0, 10.0, 5.0], [3.0, 30.0, 5.0]], [[5.0, 50.0, 5.0], [7.0, 70.0, 5.0]]]
    )  # (2, 2, 3)
    assert torch.equal(norm(x), x) and not bool(norm.fitted)
    norm.fit(x)
    assert bool(norm.fitted)
    # channel 0: 1, 3, 5, 7 → mean 4, sample std sqrt(20/3); channel 1 is 10× channel 0
    std0 = (20.0 / 3.0) ** 0.5
    assert torch.allclose(norm.mean, torch.tensor([4.0, 40.0, 5.0]))
    # the constant channel 2 gets the floor: a fraction of the mean std over channels
    floor = MIN_STD_FRACTION * (std0 + 10 * std0 + 0.0) / 3
    assert torch.allclose(norm.std, torch.tensor([std0, 10 * std0, floor]), rtol=1e-5)
    y = norm(x)
    assert torch.allclose(y[..., 0].flatten(), (torch.tensor([1.0, 3.0, 5.0, 7.0]) - 4) / std0, atol=1e-6)
    assert torch.allclose(y[..., 0], y[..., 1], atol=1e-6)
    assert torch.all(y[..., 2] == 0)
    # a test value on the constant channel stays finite and bounded by the floor, not 1/tiny
    assert torch.isfinite(norm(torch.tensor([[6.0, 1.0, 5.0 + floor]]))).all()
    # the statistics are part of the state dict (a checkpoint carries them)
    other = FeatureStandardizer(3)
    other.load_state_dict(norm.state_dict())
    assert torch.equal(other(x), y)


def test_standardizer_fit_rejects_bad_input() -> None:
    norm = FeatureStandardizer(2)
    with pytest.raises(ValueError, match="channels"):
        norm.fit(torch.zeros(4, 3))
    with pytest.raises(ValueError, match="non-finite"):
        norm.fit(torch.tensor([[0.0, 1.0], [float("nan"), 2.0]]))
    with pytest.raises(ValueError, match="at least 2"):
        norm.fit(torch.zeros(1, 2))


def test_training_fits_input_norm_on_the_train_split_only(tmp_path: Path) -> None:
    bank = _bank()
    model = build_hpmcore(ModelConfig.tiny(input_norm=True), seed=0)
    train(model, bank, _train_cfg(), seed=0, checkpoint_dir=tmp_path, progress=False)
    train_i3d = torch.stack([bank.get(i).i3d for i in bank.split_ids("train")])  # (N, J, C)
    all_i3d = torch.stack([v.i3d for v in bank.videos.values()])
    fitted = model.input_norm["i3d"].mean
    assert torch.allclose(fitted, train_i3d.reshape(-1, TINY["i3d_dim"]).mean(0), atol=1e-6)
    assert not torch.allclose(fitted, all_i3d.reshape(-1, TINY["i3d_dim"]).mean(0), atol=1e-6)
    # best.pt carries the statistics: a fresh model loading it standardises identically
    state = torch.load(tmp_path / BEST, weights_only=True)["model"]
    assert torch.equal(state["input_norm.i3d.mean"], fitted) and bool(state["input_norm.static.fitted"])


def test_input_norm_off_keeps_the_reference_model_unchanged() -> None:
    model = build_hpmcore(ModelConfig.tiny(), seed=0)
    assert model.input_norm is None
    assert not any(k.startswith("input_norm") for k in model.state_dict())


def test_hdgcn_width_is_configurable() -> None:
    net = build_hdgcn(num_classes=5, base_channels=8)
    out = net(torch.randn(3, 2, 10, 16, 1))
    assert out.features.shape == (3, 16, 10) and out.dn_logits.shape == (3, 5)
    full = sum(p.numel() for p in build_hdgcn(num_classes=5).parameters())
    assert sum(p.numel() for p in net.parameters()) < full / 8
    with pytest.raises(ValueError, match="multiple of 8"):
        build_hdgcn(base_channels=12)
    with pytest.raises(ConfigError, match="skeleton_channels"):
        ModelConfig(skeleton_channels=12).validate()
    # the fusion takes F_sk of width 2c
    model = build_hpmcore(ModelConfig.tiny(skeleton_channels=16), seed=0)
    assert model.skeleton.feature_dim == 32


def test_stage_restarts_on_checkpoints_of_another_config_but_the_library_refuses(tmp_path: Path) -> None:
    bank = _bank()
    cfg = ModelConfig.tiny()
    _train_tiny(cfg, bank, tmp_path)
    other = replace(cfg, dim=16)
    with pytest.raises(CheckpointError, match="dim"):
        _train_tiny(other, bank, tmp_path)
    result = _train_tiny(other, bank, tmp_path, restart_on_mismatch=True)
    assert result.resumed_from is None and len(result.history) == 2
    stored = torch.load(tmp_path / LAST, weights_only=True)["config"]["model"]["config"]
    assert stored["dim"] == 16


def test_checkpoints_of_other_training_code_are_not_resumed(tmp_path: Path) -> None:
    """The stage's checkpoint folder outlives a code change (DVC then reruns the stage): a finished
    checkpoint whose fingerprint names other training code must be retrained, not reused."""
    bank = _bank()
    cfg = ModelConfig.tiny()
    digest = code_digest()
    assert len(digest) == 64 and digest == code_digest()
    _train_tiny(cfg, bank, tmp_path)
    for name in (LAST, BEST):  # as if written by the code before an edit
        state = torch.load(tmp_path / name, weights_only=True)
        assert state["config"]["code"] == digest
        state["config"]["code"] = "0" * 64
        save_checkpoint(state, tmp_path / name)
    with pytest.raises(CheckpointError, match="code"):
        _train_tiny(cfg, bank, tmp_path)
    result = _train_tiny(cfg, bank, tmp_path, restart_on_mismatch=True)
    assert result.resumed_from is None and len(result.history) == 2
    assert torch.load(tmp_path / LAST, weights_only=True)["config"]["code"] == digest


def test_pair_scorer_gives_the_models_delta_from_flat_rows() -> None:
    cfg = ModelConfig.tiny()
    model = build_hpmcore(cfg, seed=0).eval()
    g = torch.Generator().manual_seed(1)

    def videos(n: int) -> VideoInputs:
        return VideoInputs(
            i3d=torch.randn(n, 3, cfg.i3d_dim, generator=g),
            static=torch.randn(n, cfg.num_frames, cfg.static_dim, generator=g),
            skeleton=torch.randn(n, 2, cfg.num_frames, 16, 1, generator=g),
        )

    q, e = videos(3), videos(3)
    layout = flat_layout(cfg, num_clips=3)
    scorer = PairScorer(model, num_clips=3)
    x = flatten_pair(q, e, layout)
    assert x.shape == (3, 2 * scorer.width)
    with torch.no_grad():
        assert torch.allclose(scorer(x), model(q, e).delta_qe, atol=1e-6)
        swapped = scorer(flatten_pair(e, q, layout))
        assert not torch.allclose(swapped, scorer(x))
    with pytest.raises(ValueError, match="expects"):
        scorer(x[:, :-1])


# ---------------------------------------------------------------------------------------------------------
# Params: each fact stated once


def test_feature_sizes_and_dd_mode_are_not_params(tmp_path: Path) -> None:
    """Widths, T and the clip stride come from the features manifest, DD mode from train.dd_mode (and the
    checkpoint): stating them in params.yaml is refused, naming the key."""
    for section, key in (
        ("model", "i3d_dim"),
        ("model", "num_frames"),
        ("model", "clip_stride"),
        ("core", "i3d_dim"),
    ):
        path = tmp_path / "params.yaml"
        path.write_text(f"{section}:\n  {key}: 96\n")
        with pytest.raises(
            ConfigError,
            match=rf"params\.yaml: {section}\.{key} is not a parameter: it is read from the features",
        ):
            load_params(path)
    path.write_text("eval:\n  dd_mode: true\n")
    with pytest.raises(ConfigError, match=r"unknown key\(s\) eval\.dd_mode"):
        load_params(path)
    flat = params_to_dict(Params())
    assert (
        "i3d_dim" not in flat["model"] and "num_frames" not in flat["model"] and "i3d_dim" not in flat["core"]
    )
    bank = _bank()
    cfg = bank.fill(Params().model)
    assert (cfg.i3d_dim, cfg.static_dim, cfg.num_frames, cfg.clip_stride) == (16, 12, 12, 10)
    assert replace(cfg, i3d_dim=1024, static_dim=368, num_frames=96) == Params().model


# ---------------------------------------------------------------------------------------------------------
# The train and evaluate stages on tiny stage outputs


def _stage(name: str) -> Callable[[list[str]], int]:
    """``main`` of ``stages/<name>.py`` (imported like DVC runs it: ``_common`` beside it)."""
    if str(PROJECT / "stages") not in sys.path:
        sys.path.insert(0, str(PROJECT / "stages"))
    spec = importlib.util.spec_from_file_location(f"stage_{name}", PROJECT / "stages" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)  # type: ignore[arg-type]
    spec.loader.exec_module(module)  # type: ignore[union-attr]
    return module.main


def _project(tmp_path: Path, spec: list[Dive], **params: dict) -> tuple[list[str], Path]:
    paths = write_stage_outputs(tmp_path, spec)
    write_params(tmp_path / "params.yaml", **params)
    args = ["--params", str(tmp_path / "params.yaml")]
    for name in ("dives", "decoded", "pose", "features"):
        args += [f"--{name}", str(paths[name])]
    return args, tmp_path


def _run(name: str, args: list[str], caplog: pytest.LogCaptureFixture) -> int:
    caplog.clear()
    with caplog.at_level(logging.INFO):
        return _stage(name)(args)


def _files(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def test_stages_leave_out_skipped_dives_and_score_dives_without_transitions(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """on_error: skip upstream: train and evaluate complete without the failed dives and report them;
    dives with unusable step labels train (no L_tas) and are scored (not in AIoU). Outputs hold no
    timings: a second run gives the same bytes."""
    spec = dives(train=8, val=3, test=5)
    spec[1] = replace(spec[1], failed="features")  # train/1: features failed
    spec[2] = replace(spec[2], labels=False)  # train/2: no ground-truth transitions
    spec[11] = replace(spec[11], failed="decode")  # test/0: decode failed
    spec[12] = replace(spec[12], labels=False)  # test/1: no ground-truth transitions
    args, root = _project(tmp_path, spec, train={"dd_mode": True})
    assert _run("train", [*args, "--out", str(root / "model")], caplog) == 0, caplog.text
    summary = json.loads((root / "model" / "train.json").read_text())
    assert summary["skipped"] == {
        "count": 1,
        "dives": [{"id": "train/1", "split": "train", "stage": "features", "reason": "train/1: broken"}],
    }
    assert summary["train_videos"] == 7 and summary["without_transitions"] == {"train": 1, "val": 0}
    history = json.loads((root / "model" / "history.json").read_text())
    assert len(history) == 2 and all(math.isfinite(h["loss_tas"]) for h in history)
    assert not any("seconds" in k for h in history for k in h) and "seconds" not in json.dumps(summary)

    assert _run("evaluate", [*args, "--model", str(root / "model"), "--out", str(root / "eval")], caplog) == 0
    metrics = json.loads((root / "eval" / "metrics.json").read_text())
    assert metrics["num_queries"] == 4 and metrics["skipped"]["count"] == 1
    assert metrics["skipped"]["dives"][0] == {
        "id": "test/0",
        "split": "test",
        "stage": "decode",
        "reason": "test/0: broken",
    }
    assert metrics["queries_without_transitions"] == 1 and metrics["aiou_50"] is not None
    assert metrics["voters"]["dd_mode"] is True  # from the checkpoint (train.dd_mode), never stated twice
    predictions = pacsv.read_csv(root / "eval" / "predictions.csv").column("id").to_pylist()
    assert predictions == ["test/1", "test/2", "test/3", "test/4"]
    transitions = pacsv.read_csv(root / "eval" / "transitions.csv").column("id").to_pylist()
    assert transitions == ["test/2", "test/3", "test/4"]

    # Reruns: a fresh training gives byte-identical checkpoints and files; evaluation too.
    assert _run("train", [*args, "--out", str(root / "model2")], caplog) == 0
    first, second = _files(root / "model"), _files(root / "model2")
    first.pop("timings.json"), second.pop("timings.json")  # git-ignored, not a DVC output
    assert first == second and set(first) == {
        "checkpoints/best.pt",
        "checkpoints/last.pt",
        "history.json",
        "train.json",
    }
    before = (root / "eval" / "metrics.json").read_bytes()
    assert (
        _run("evaluate", [*args, "--model", str(root / "model2"), "--out", str(root / "eval")], caplog) == 0
    )
    assert (root / "eval" / "metrics.json").read_bytes() == before


def test_a_dive_missing_for_another_reason_stops_train_naming_the_manifest(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    spec = dives(train=6, val=2, test=2)
    spec[3] = replace(spec[3], missing=True)
    args, root = _project(tmp_path, spec)
    assert _run("train", [*args, "--out", str(root / "model")], caplog) == 2
    assert "features/manifest.parquet: no features for dive 'train/3'" in caplog.text
    assert not (root / "model").exists()


def test_bad_checkpoints_stop_the_stages_naming_the_file(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    args, root = _project(tmp_path, dives(train=6, val=2, test=3))
    model = root / "model"
    assert _run("train", [*args, "--out", str(model)], caplog) == 0
    best_path, last_path = model / CHECKPOINTS / BEST, model / CHECKPOINTS / LAST
    best = torch.load(best_path, weights_only=True)
    last = torch.load(last_path, weights_only=True)
    evaluate = [*args, "--model", str(model), "--out", str(root / "eval")]

    # best.pt with NaN weights (a diverged run): refused, nothing written (it was evaluated before).
    weights = dict(best["model"])
    name = next(k for k, t in weights.items() if t.is_floating_point() and t.numel() > 1)
    weights[name] = weights[name].clone().fill_(math.nan)
    save_checkpoint({**best, "model": weights}, best_path)
    assert _run("evaluate", evaluate, caplog) == 2
    assert f"{best_path}: non-finite (NaN/inf) weights" in caplog.text and name in caplog.text
    assert not (root / "eval").exists()
    # best.pt without its config (the run fingerprint the model is rebuilt from)
    save_checkpoint({k: v for k, v in best.items() if k != "config"}, best_path)
    assert _run("evaluate", evaluate, caplog) == 2
    assert f"{best_path}: missing key(s) ['config']" in caplog.text
    # best.pt of another model configuration than params.model: the differing key is named
    save_checkpoint(best, best_path)
    write_params(root / "params.yaml", model={"dim": 8})
    assert _run("evaluate", evaluate, caplog) == 2
    assert f"{best_path} was written for another model configuration (config.dim: 16" in caplog.text
    write_params(root / "params.yaml")
    assert _run("evaluate", evaluate, caplog) == 0

    # last.pt with a bad RNG state: the resume refuses it; with keys missing too.
    save_checkpoint({**last, "rng": {**last["rng"], "torch": torch.zeros(7, dtype=torch.uint8)}}, last_path)
    assert _run("train", [*args, "--out", str(model)], caplog) == 2
    assert f"{last_path}: bad RNG state" in caplog.text
    save_checkpoint({k: v for k, v in last.items() if k not in ("rng", "history")}, last_path)
    assert _run("train", [*args, "--out", str(model)], caplog) == 2
    assert f"{last_path}: missing key(s) ['rng', 'history']" in caplog.text


def test_evaluate_checkpoint_on_a_split_of_the_current_data(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """The champion/candidate question: a checkpoint on the validation split of the current data, the
    model rebuilt from the checkpoint (no params.model), voters from the seed and eval config."""
    args, root = _project(tmp_path, dives(train=8, val=3, test=2), train={"dd_mode": False})
    assert _run("train", [*args, "--out", str(root / "model")], caplog) == 0
    bank = pipeline_bank(root / "dives.parquet", root / "decoded", root / "features", root / "pose")
    cfg = EvalConfig(exemplars=3, exemplar_mode="any", num_voter_draws=2, device="cpu")
    checkpoint = root / "model" / CHECKPOINTS / BEST
    a = evaluate_checkpoint(checkpoint, bank, cfg, seed=0, split="val")
    b = evaluate_checkpoint(checkpoint, bank, cfg, seed=0, split="val")
    assert a.metrics == b.metrics and a.metrics["split"] == "val" and a.metrics["num_queries"] == 3
    assert a.metrics["voters"]["dd_mode"] is False and a.checkpoint.dd_mode is False
    # With the validation protocol of training (train.val_exemplars, one draw) it is the selected epoch's.
    summary = json.loads((root / "model" / "train.json").read_text())
    val_cfg = EvalConfig(exemplars=2, exemplar_mode="any", num_voter_draws=1, device="cpu")
    same = evaluate_checkpoint(checkpoint, bank, val_cfg, seed=0, split="val").metrics
    assert {k: same[k] for k in ("rho", "l2", "tiou")} == {
        k: summary["best_val"][k] for k in ("rho", "l2", "tiou")
    }
    # Features of other sizes than the checkpoint's model: refused, naming the checkpoint.
    other = write_stage_outputs(tmp_path / "other", dives(train=8, val=3, test=2))
    wide = pipeline_bank(other["dives"], other["decoded"], other["features"], other["pose"])
    wide = replace(wide, dims=replace(wide.dims, clip_stride=5))
    with pytest.raises(
        CheckpointError, match=r"best\.pt was trained on other features.*clip_stride: 4 in the checkpoint, 5"
    ):
        evaluate_checkpoint(checkpoint, wide, cfg, seed=0, split="val")
