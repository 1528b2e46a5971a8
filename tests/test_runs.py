"""Input standardisation, the configurable HD-GCN width, checkpoint restarts for pipeline stages, the
servable PairScorer and the params sections of the model stages."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import pytest
import torch

from hpmcore.config import ConfigError, EvalConfig, ModelConfig, Params, TrainConfig
from hpmcore.models.checkpoints import CheckpointError
from hpmcore.models.export import PairScorer, flat_layout, flatten_pair
from hpmcore.models.hdgcn import build_hdgcn
from hpmcore.models.hpmcore import VideoInputs, build_hpmcore
from hpmcore.models.normalize import MIN_STD_FRACTION, FeatureStandardizer
from hpmcore.training.evaluate import FeatureBank, synthetic_feature_bank
from hpmcore.training.runs import check_run_params
from hpmcore.training.train import BEST, LAST, train

TINY = dict(i3d_dim=16, static_dim=12, num_frames=12, num_clips=3)


def _bank(**splits: int) -> FeatureBank:
    return synthetic_feature_bank(splits or {"train": 8, "val": 4, "test": 4}, **TINY)  # type: ignore[arg-type]


def _train_cfg(**kw: object) -> TrainConfig:
    return replace(TrainConfig(epochs=2, batch_size=4, val_exemplars=3, device="cpu"), **kw)


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
    train(build_hpmcore(cfg, seed=0), bank, _train_cfg(), seed=0, checkpoint_dir=tmp_path, progress=False)
    other = replace(cfg, dim=16)
    with pytest.raises(CheckpointError, match="dim"):
        train(
            build_hpmcore(other, seed=0), bank, _train_cfg(), seed=0, checkpoint_dir=tmp_path, progress=False
        )
    result = train(
        build_hpmcore(other, seed=0),
        bank,
        _train_cfg(),
        seed=0,
        checkpoint_dir=tmp_path,
        restart_on_mismatch=True,
        progress=False,
    )
    assert result.resumed_from is None and len(result.history) == 2
    stored = torch.load(tmp_path / LAST, weights_only=True)["config"]["model"]["config"]
    assert stored["dim"] == 16


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


def test_eval_dd_mode_must_follow_train_dd_mode() -> None:
    params = Params()
    check_run_params(params)
    bad = replace(params, train=replace(params.train, dd_mode=True), eval=EvalConfig(dd_mode=False))
    with pytest.raises(ConfigError, match="dd_mode"):
        check_run_params(bad)
    with pytest.raises(ConfigError, match=r"decode\.num_frames"):
        check_run_params(replace(params, model=replace(params.model, num_frames=32)))
    with pytest.raises(ConfigError, match=r"features\.clip_stride"):
        check_run_params(replace(params, model=replace(params.model, clip_stride=8)))
