"""End-to-end training (issue 9 item 1): the spec §1.2 augmentation on hand-made frames, the pose flip,
the model wrapper (one code path with the heads, frozen RegNet BatchNorm, named lr groups), activation
checkpointing, and a tiny end-to-end run that trains, resumes exactly and evaluates — in the library and
through the train/evaluate stages on real decode-cache entries."""

from __future__ import annotations

import math
import random
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

import hpmcore.training.train as train_mod
from hpmcore.config import ConfigError, EvalConfig, ModelConfig, TrainConfig
from hpmcore.extraction.pose.table import normalize_skeleton
from hpmcore.models.end_to_end import EndToEndHPMCoRe, FrameInputs, build_end_to_end
from hpmcore.training.augment import (
    MPII_FLIP,
    ClipView,
    apply_view,
    augmentation_rng,
    crop_window,
    eval_view,
    flip_skeleton,
    train_view,
)
from hpmcore.training.bank import synthetic_feature_bank
from hpmcore.training.checkpoints import BEST, LAST, model_from_checkpoint
from hpmcore.training.evaluate import evaluate_model
from hpmcore.training.frames import FrameBank, PairFrames, synthetic_frame_bank
from hpmcore.training.train import build_optimizer, train

# ---------------------------------------------------------------------------------------------------------
# Augmentation on a hand-made frame tensor


def _frames(t: int = 3, h: int = 6, w: int = 4) -> torch.Tensor:
    """uint8 (T, H, W, 3) whose value says where it is: 60·t + 8·y + 2·x + c (c < 2 used)."""
    tt, yy, xx, cc = torch.meshgrid(
        torch.arange(t), torch.arange(h), torch.arange(w), torch.arange(3), indexing="ij"
    )
    return (60 * tt + 8 * yy + 2 * xx + cc).to(torch.uint8)


def test_crop_and_flip_do_what_the_spec_says_on_a_hand_made_clip() -> None:
    frames = _frames()  # T 3, H 6, W 4
    crop = apply_view(frames, ClipView(flip=False, y0=2, x0=0, height=4, width=4))
    assert crop.shape == (3, 4, 4, 3)
    for t in range(3):  # every frame cropped at the same place
        assert torch.equal(crop[t], frames[t, 2:6, 0:4])
    flipped = apply_view(frames, ClipView(flip=True, y0=1, x0=0, height=4, width=4))
    for t in range(3):
        for y in range(4):
            for x in range(4):  # flip first (columns reversed), then crop
                assert torch.equal(flipped[t, y, x], frames[t, y + 1, 3 - x])
    with pytest.raises(ValueError, match="does not fit"):
        apply_view(frames, ClipView(flip=False, y0=3, x0=0, height=4, width=4))


def test_training_views_flip_half_the_clips_and_crop_vertically_with_one_offset_per_clip() -> None:
    rng = np.random.default_rng(0)
    views = [train_view(rng, 6, 4, 4) for _ in range(2000)]
    assert abs(np.mean([v.flip for v in views]) - 0.5) < 0.04  # p = 0.5
    assert {v.y0 for v in views} == {0, 1, 2} and {v.x0 for v in views} == {0}  # y in [0, H - crop]
    assert all((v.height, v.width) == (4, 4) for v in views)
    # the same (seed, epoch, pair, role) gives the same view; query and exemplar are independent streams
    a = [train_view(augmentation_rng(3, 1, p, "query"), 200, 112, 112) for p in range(50)]
    b = [train_view(augmentation_rng(3, 1, p, "query"), 200, 112, 112) for p in range(50)]
    e = [train_view(augmentation_rng(3, 1, p, "exemplar"), 200, 112, 112) for p in range(50)]
    assert a == b and a != e


def test_view_geometry_at_the_spec_size_and_at_the_default_decode() -> None:
    # spec §1.2: 112 wide × 200 tall, crop 112: training y in [0, 88], x 0; test y 44
    assert crop_window(200, 112, 112) == (112, 112)
    rng = np.random.default_rng(1)
    ys = {train_view(rng, 200, 112, 112).y0 for _ in range(3000)}
    assert min(ys) == 0 and max(ys) == 88
    assert eval_view(200, 112, 112) == ClipView(flip=False, y0=44, x0=0, height=112, width=112)
    # the default decode, 32 × 32 without a crop: no vertical room, the flip alone
    assert {train_view(rng, 32, 32, None).y0 for _ in range(100)} == {0}
    assert eval_view(32, 32, None) == ClipView(flip=False, y0=0, x0=0, height=32, width=32)
    with pytest.raises(ValueError, match="larger than"):
        crop_window(32, 32, 48)


def test_pose_flip_mirrors_x_and_swaps_left_and_right_joints() -> None:
    t = 2
    skeleton = torch.zeros(2, t, 16, 1)
    skeleton[0, :, :, 0] = torch.arange(16.0)  # x of joint j = j
    skeleton[1, :, :, 0] = 100 + torch.arange(16.0)  # y of joint j = 100 + j
    flipped = flip_skeleton(skeleton, mirror_x=7.5)  # pixel frame of width 16: x -> 15 - x
    # left/right pairs swapped (spec §13 item 7), centre joints kept
    for a, b in ((0, 5), (1, 4), (2, 3), (10, 15), (11, 14), (12, 13)):
        assert MPII_FLIP[a] == b and MPII_FLIP[b] == a
    assert [MPII_FLIP[j] for j in (6, 7, 8, 9)] == [6, 7, 8, 9]
    # the flipped right ankle (joint 0) is the mirrored left ankle (joint 5): x 15 - 5, y of joint 5
    assert flipped[0, 0, 0, 0] == 10.0 and flipped[1, 0, 0, 0] == 105.0
    assert flipped[0, 0, 7, 0] == 8.0 and flipped[1, 0, 7, 0] == 107.0  # thorax: mirrored, same joint
    assert torch.equal(flip_skeleton(flipped, 7.5), skeleton)  # an involution
    # the mirror line in the model's coordinates: flipping pixels then normalising = mirroring normalised x
    w, h = 455, 256
    xy = np.random.default_rng(0).uniform(0, [w, h], size=(50, 16, 2)).astype(np.float32)
    mirrored = xy.copy()
    mirrored[..., 0] = w - 1 - xy[..., 0]
    for mode in ("none", "frame"):
        line = normalize_skeleton(np.array([[(w - 1) / 2, 0.0]], np.float32), w, h, mode)[0, 0]
        expected = normalize_skeleton(mirrored, w, h, mode)[..., 0]
        assert np.allclose(2 * line - normalize_skeleton(xy, w, h, mode)[..., 0], expected, atol=1e-4)


def test_training_pairs_are_augmented_independently_and_the_pose_follows_the_flip() -> None:
    bank = synthetic_frame_bank({"train": 4}, num_frames=12, height=20, width=16, crop_size=16)
    videos = [bank.get(i) for i in bank.split_ids("train")]
    spec = build_e2e(bank).input_spec("train")
    ds = PairFrames(bank, videos, videos[::-1], seed=0, epoch=0, spec=spec)
    flips = {"query": 0, "exemplar": 0}
    for p in range(len(ds)):
        _, fq, fe, sq, se = ds[p]
        for role, frames, pose, v in (("query", fq, sq, videos[p]), ("exemplar", fe, se, videos[::-1][p])):
            view = train_view(augmentation_rng(0, 0, p, role), 20, 16, 16)
            assert torch.equal(frames, apply_view(v.frames, view))  # type: ignore[arg-type]
            want = flip_skeleton(v.skeleton, 0.0) if view.flip else v.skeleton  # type: ignore[arg-type]
            assert torch.equal(pose, want)
            flips[role] += view.flip
    no_pose_flip = PairFrames(bank, videos, videos, seed=0, epoch=0, spec=spec, flip_pose=False)
    assert all(torch.equal(no_pose_flip[p][3], videos[p].skeleton) for p in range(4))  # type: ignore[arg-type]
    plain = PairFrames(bank, videos, videos, seed=0, epoch=0, spec=spec, augment=False)
    centre = eval_view(20, 16, 16)
    assert all(torch.equal(plain[p][1], apply_view(videos[p].frames, centre)) for p in range(4))  # type: ignore[arg-type]


# ---------------------------------------------------------------------------------------------------------
# The model


def tiny_heads(**kw: object) -> ModelConfig:
    return ModelConfig.tiny(**kw)


def build_e2e(bank: FrameBank, **kw: object) -> EndToEndHPMCoRe:
    return build_end_to_end(
        bank.model_config(tiny_heads(**kw)), i3d_weights=None, static_weights=None, seed=0
    )


def test_wrapper_feeds_the_heads_the_encoders_features_one_code_path() -> None:
    bank = synthetic_frame_bank({"train": 4})
    model = build_e2e(bank).eval()
    videos = [bank.get(i) for i in bank.split_ids("train")]
    inputs = bank.stack(videos, model.input_spec("query"))
    with torch.no_grad():
        enc = model.encode(inputs, use_gt=False)
        i3d, static = model.visual_features(inputs.frames)
        direct = model.heads.encode(model.video_inputs(inputs), use_gt=False)
    assert i3d.shape == (4, 3, 1024) and static is not None and static.shape == (4, 12, 368)
    assert torch.equal(enc.fused, direct.fused)
    # RegNet+GSM BatchNorm stays frozen in training mode (§3.4), I3D's trains
    model.train()
    bns = [m for m in model.static.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]  # type: ignore[union-attr]
    assert bns and not any(m.training for m in bns)
    assert all(m.training for m in model.i3d.modules() if isinstance(m, nn.BatchNorm3d))
    assert len(model.static.temporal_modules()) == 13  # type: ignore[union-attr]
    # a model without static branch or segmenter has no static encoder
    lean = build_e2e(bank, use_static=False, use_segmentation=False)
    assert lean.static is None and "static_trunk" not in lean.parameter_groups()


def test_lr_groups_static_trunk_at_the_factor_i3d_and_heads_at_full_lr() -> None:
    bank = synthetic_frame_bank({"train": 2})
    model = build_e2e(bank)
    cfg = TrainConfig(lr=2e-3, static_trunk_lr_factor=0.1, mode="end_to_end")
    opt = build_optimizer(model, cfg)
    lrs = {g["name"]: g["lr"] for g in opt.param_groups}
    assert lrs.pop("static_trunk") == pytest.approx(2e-4) and lrs.pop("i3d") == 2e-3
    assert lrs and all(v == 2e-3 for v in lrs.values())  # segmenter, skeleton, reducers, ... (§9.3)
    groups = model.parameter_groups()
    assert {id(p) for p in groups["static_trunk"]} == {id(p) for p in model.static.parameters()}  # type: ignore[union-attr]
    assert {id(p) for p in groups["i3d"]} == {id(p) for p in model.i3d.parameters()}
    # the schedule keeps the factor: LambdaLR scales each group's own base lr
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda e: 0.5)
    assert {g["name"]: g["lr"] for g in opt.param_groups}["static_trunk"] == pytest.approx(1e-4)
    del sched


def test_activation_checkpointing_gives_the_same_gradients_and_batchnorm_statistics() -> None:
    bank = synthetic_frame_bank({"train": 4})
    videos = [bank.get(i) for i in bank.split_ids("train")]
    results = []
    for checkpointing in (False, True):
        model = build_e2e(bank).train()
        model.set_activation_checkpointing(checkpointing)
        spec = model.input_spec("train")
        q, e = bank.stack(videos[:2], spec), bank.stack(videos[2:], spec)
        torch.manual_seed(0)
        out = model(q, e)
        (out.delta_qe.sum() + out.delta_eq.pow(2).sum()).backward()
        grads = {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}
        results.append((grads, {n: b.clone() for n, b in model.named_buffers()}))
    (g0, b0), (g1, b1) = results
    assert g0.keys() == g1.keys() and any(k.startswith("i3d.") for k in g0)
    assert all(torch.equal(g0[k], g1[k]) for k in g0)
    assert all(torch.equal(b0[k], b1[k]) for k in b0)  # BN running stats updated once, not twice


# ---------------------------------------------------------------------------------------------------------
# Training: trains, resumes exactly, evaluates


def _cfg(**kw: object) -> TrainConfig:
    base = TrainConfig(
        epochs=2,
        batch_size=2,
        lr=1e-3,
        val_exemplars=2,
        pairing="any",
        device="cpu",
        mode="end_to_end",
        num_workers=0,
    )
    return replace(base, **kw)


def _state(path: Path) -> dict:
    return torch.load(path, weights_only=True)


def test_end_to_end_trains_resumes_exactly_and_evaluates(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    bank = synthetic_frame_bank({"train": 4, "val": 2, "test": 2}, height=20, width=16, crop_size=16)
    cfg = _cfg(num_workers=1)  # a worker process: the views must not depend on it
    straight = build_e2e(bank, input_norm=True)
    start = {k: v.clone() for k, v in straight.state_dict().items()}
    res_a = train(straight, bank, cfg, seed=4, checkpoint_dir=tmp_path / "a", progress=False)
    last_a = _state(tmp_path / "a" / LAST)
    assert res_a.history[-1]["epoch"] == 1 and math.isfinite(res_a.history[-1]["loss"])
    moved = [
        k
        for k in start
        if k.startswith(("i3d.", "static.")) and not torch.equal(start[k], last_a["model"][k])
    ]
    assert any(k.startswith("i3d.") for k in moved) and any(k.startswith("static.") for k in moved)
    assert bool(last_a["model"]["heads.input_norm.i3d.fitted"])  # the standardiser keeps working
    # frozen RegNet BN statistics did not move; I3D's did
    assert all(
        torch.equal(start[k], last_a["model"][k]) for k in start if k.startswith("static.") and "running" in k
    )
    assert any(
        not torch.equal(start[k], last_a["model"][k])
        for k in start
        if k.startswith("i3d.") and "running" in k
    )

    calls = {"n": 0}
    real = train_mod._losses

    def crashing(*args: object, **kw: object) -> object:
        calls["n"] += 1
        if calls["n"] == 3:  # 2 steps per epoch: the 1st step of epoch 1
            raise KeyboardInterrupt("killed")
        return real(*args, **kw)  # type: ignore[arg-type]

    monkeypatch.setattr(train_mod, "_losses", crashing)
    with pytest.raises(KeyboardInterrupt):
        train(
            build_e2e(bank, input_norm=True),
            bank,
            replace(cfg, num_workers=0),
            seed=4,
            checkpoint_dir=tmp_path / "b",
            progress=False,
        )
    monkeypatch.setattr(train_mod, "_losses", real)
    assert _state(tmp_path / "b" / LAST)["epoch"] == 0
    random.seed(9), np.random.seed(9), torch.manual_seed(9)  # a fresh process
    resumed = build_end_to_end(
        bank.model_config(tiny_heads(input_norm=True)), i3d_weights=None, static_weights=None, seed=77
    )
    res_b = train(
        resumed, bank, replace(cfg, num_workers=0), seed=4, checkpoint_dir=tmp_path / "b", progress=False
    )
    assert res_b.resumed_from == 1
    last_b = _state(tmp_path / "b" / LAST)
    assert all(torch.equal(last_a["model"][k], last_b["model"][k]) for k in last_a["model"])
    assert res_a.history == res_b.history
    assert (tmp_path / "a" / LAST).read_bytes() == (tmp_path / "b" / LAST).read_bytes()

    # evaluation re-encodes the test dives' frames with the trained encoders; the checkpoint rebuilds it
    ecfg = EvalConfig(exemplars=2, exemplar_mode="any", num_voter_draws=1, device="cpu")
    ev = evaluate_model(straight, bank, "test", ecfg, seed=0)
    assert ev.metrics["num_queries"] == 2 and ev.metrics["l2"] is not None
    with torch.no_grad():  # evaluation encodes the frames with the encoders as they are now (no cache)
        for p in straight.i3d.parameters():
            p.mul_(1.5)
    assert evaluate_model(straight, bank, "test", ecfg, seed=0).metrics["l2"] != ev.metrics["l2"]
    rebuilt, info = model_from_checkpoint(tmp_path / "a" / BEST)
    assert isinstance(rebuilt, EndToEndHPMCoRe) and info.epoch == res_a.best_epoch
    assert evaluate_model(rebuilt, bank, "test", ecfg, seed=0).metrics == ev.metrics  # best.pt


def test_mode_bank_and_model_must_agree(tmp_path: Path) -> None:
    frames = synthetic_frame_bank({"train": 2, "val": 1})
    with pytest.raises(ConfigError, match=r"train\.mode is cached"):
        train(build_e2e(frames), frames, _cfg(mode="cached"), seed=0, checkpoint_dir=tmp_path, progress=False)
    features = synthetic_feature_bank({"train": 2}, i3d_dim=16, static_dim=12, num_frames=12, num_clips=3)
    from hpmcore.models.hpmcore import build_hpmcore

    with pytest.raises(ConfigError, match="end_to_end"):
        train(
            build_hpmcore(ModelConfig.tiny()),
            features,
            _cfg(),
            seed=0,
            checkpoint_dir=tmp_path,
            progress=False,
        )
    assert not any(tmp_path.iterdir())


def test_frame_inputs_concatenate_and_move() -> None:
    a = FrameInputs(torch.zeros(1, 2, 4, 4, 3, dtype=torch.uint8), None, torch.tensor([[1, 2]]))
    b = FrameInputs(torch.ones(2, 2, 4, 4, 3, dtype=torch.uint8), None, torch.tensor([[0, 1], [-1, -1]]))
    both = FrameInputs.cat([a, b])
    assert (
        len(both) == 3 and both.skeleton is None and both.transitions.tolist() == [[1, 2], [0, 1], [-1, -1]]
    )  # type: ignore[union-attr]
    with pytest.raises(ValueError, match="some parts only"):
        FrameInputs.cat([a, replace(b, skeleton=torch.zeros(2, 2, 2, 16, 1))])


# ---------------------------------------------------------------------------------------------------------
# The stages, on real decode-cache entries


def test_train_and_evaluate_stages_end_to_end(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """``train.mode: end_to_end`` through the stages: the frame bank of the pipeline's folders (frames from
    the zstd decode entries), the encoders from the features manifest's init, checkpoints of the whole
    model; evaluate rebuilds it and encodes the test dives' frames; a checkpoint of the other mode is
    refused by evaluate."""
    from stage_outputs import dives, write_params, write_stage_outputs
    from test_runs import _run

    paths = write_stage_outputs(tmp_path, dives(train=4, val=2, test=2), frames=True)
    e2e = {"mode": "end_to_end", "num_workers": 0, "batch_size": 2, "epochs": 1}
    write_params(tmp_path / "params.yaml", train=e2e)
    args = ["--params", str(tmp_path / "params.yaml")]
    for name in ("dives", "decoded", "pose", "features"):
        args += [f"--{name}", str(paths[name])]
    assert _run("train", [*args, "--out", str(tmp_path / "model")], caplog) == 0, caplog.text
    state = torch.load(tmp_path / "model" / "checkpoints" / LAST, weights_only=True)
    assert state["config"]["model"]["kind"] == "EndToEndHPMCoRe"
    assert state["config"]["train"]["mode"] == "end_to_end" and "num_workers" not in state["config"]["train"]
    assert any(k.startswith("i3d.backbone.") for k in state["model"])
    assert (
        _run("evaluate", [*args, "--model", str(tmp_path / "model"), "--out", str(tmp_path / "eval")], caplog)
        == 0
    ), caplog.text
    metrics = (tmp_path / "eval" / "metrics.json").read_text()
    assert '"num_queries": 2' in metrics
    # evaluating it as a cached-mode model is refused, naming the file
    write_params(tmp_path / "params.yaml", train={**e2e, "mode": "cached"})
    assert (
        _run("evaluate", [*args, "--model", str(tmp_path / "model"), "--out", str(tmp_path / "e2")], caplog)
        == 2
    )
    assert "best.pt" in caplog.text and not (tmp_path / "e2").exists()
