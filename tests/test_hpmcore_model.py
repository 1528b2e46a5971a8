"""The assembled HP-MCoRe model on cached features: shapes, transition policy, caching, ablations,
parameter counts (spec §14.1), a one-batch overfit and query/exemplar antisymmetry after training."""

from __future__ import annotations

import itertools
from dataclasses import replace

import pytest
import torch

from hpmcore.models.hpmcore import (
    HPMCoRe,
    ModelConfig,
    VideoInputs,
    build_hpmcore,
    pair_losses,
    select_rows,
)
from hpmcore.models.pooling import seg_pool_1d
from hpmcore.models.segmentation import decode_halves, decode_joint, fixed_thirds
from hpmcore.training.losses import LossWeights

T, J = 12, 3  # tiny: 12 frames, 3 clips (clip stride 4)
GT = torch.tensor([[3, 8], [2, 7], [4, 9], [1, 6], [5, 10], [3, 6]])
SCORES = torch.tensor([80.0, 60.0, 70.0, 65.0, 90.0, 55.0])


def _videos(n: int, *, seed: int = 0, cfg: ModelConfig | None = None) -> VideoInputs:
    cfg = cfg or ModelConfig.tiny()
    g = torch.Generator().manual_seed(seed)
    return VideoInputs(
        i3d=torch.randn(n, J, cfg.i3d_dim, generator=g),
        static=torch.randn(n, cfg.num_frames, cfg.static_dim, generator=g),
        skeleton=torch.randn(n, 2, cfg.num_frames, 16, 1, generator=g),
        transitions=GT[:n].clone(),
    )


def _select(v: VideoInputs, index: list[int]) -> VideoInputs:
    idx = torch.tensor(index)
    return VideoInputs(
        i3d=v.i3d[idx],
        static=None if v.static is None else v.static[idx],
        skeleton=None if v.skeleton is None else v.skeleton[idx],
        transitions=None if v.transitions is None else v.transitions[idx],
    )


def _count(module: torch.nn.Module | None) -> int:
    return 0 if module is None else sum(p.numel() for p in module.parameters())


# ---------------------------------------------------------------------------------------------------------
# Shapes and the transition policy (§5.5)


def test_output_shapes_tiny_config() -> None:
    cfg = ModelConfig.tiny()
    model = build_hpmcore(cfg)
    q, e = _videos(2, seed=1), _videos(2, seed=2)
    out = model(q, e)
    b, f3, d = 2, 3 * cfg.fix_size, cfg.dim
    assert out.delta_qe.shape == (b,) and out.delta_eq.shape == (b,)
    assert out.delta_fu.shape == (2 * b,) and out.delta_st is not None and out.delta_st.shape == (2 * b,)
    assert out.seg_logits is not None and out.seg_logits.shape == (2 * b, T, 2)
    assert out.dn_logits is not None and out.dn_logits.shape == (2 * b, cfg.dn_classes)
    assert out.fused_tokens[0].shape == (b, f3, d) and out.fused_tokens[1].shape == (b, f3, d)
    assert out.static_tokens is not None and out.static_tokens[0].shape == (b, f3, d)
    assert out.transitions.shape == (2 * b, 2) and out.transitions.dtype == torch.long
    assert out.splash is None
    torch.testing.assert_close(out.delta_qe, (out.delta_fu[:b] + out.delta_st[:b]) / 2)  # λ = 1


def test_training_pools_with_gt_and_eval_with_decoded() -> None:
    model = build_hpmcore(ModelConfig.tiny())
    q, e = _videos(2, seed=1), _videos(2, seed=2)
    out = model.train()(q, e)
    assert torch.equal(out.transitions, torch.cat([q.transitions, e.transitions]))
    out = model.eval()(q, e)
    decoded = decode_halves(out.seg_logits)
    assert torch.equal(out.transitions, decoded) and torch.equal(out.predicted, decoded)
    with pytest.raises(ValueError, match="query ground-truth transitions"):
        model.train()(VideoInputs(q.i3d, q.static, q.skeleton), e)
    with pytest.raises(ValueError, match="ground-truth transitions"):
        model.train().encode(VideoInputs(q.i3d, q.static, q.skeleton))
    # Eval: exemplars without ground truth are fine; the queries' ground truth is kept for L_tas / tIoU.
    out = model.eval()(q, VideoInputs(e.i3d, e.static, e.skeleton))
    assert torch.equal(out.query.gt, q.transitions) and out.exemplar.gt is None


def test_exemplar_gt_at_test_and_joint_decoding() -> None:
    cfg = ModelConfig.tiny(exemplar_gt_at_test=True, decode="joint")
    model = build_hpmcore(cfg).eval()
    q, e = _videos(2, seed=1), _videos(2, seed=2)
    out = model(q, e)
    assert torch.equal(out.query.transitions, decode_joint(out.query.seg_logits))
    assert torch.equal(out.exemplar.transitions, e.transitions)
    assert torch.equal(out.exemplar.predicted, decode_joint(out.exemplar.seg_logits))


def test_pooling_uses_frame_and_clip_transitions() -> None:
    """The static tokens are the reduced seg_pool_1d of the static features with frame transitions."""
    cfg = ModelConfig.tiny()
    model = build_hpmcore(cfg).train()
    v = _videos(2, seed=3)
    enc = model.encode(v)
    pooled = seg_pool_1d(v.static, v.transitions, fix_size=cfg.fix_size)
    f = cfg.fix_size
    for k in range(3):
        torch.testing.assert_close(
            enc.static[:, k * f : (k + 1) * f], model.reducers["static"][k](pooled[:, k * f : (k + 1) * f])
        )


def test_i3d_tokens_are_pooled_with_clip_indices_not_frame_indices() -> None:
    """Transitions are frame numbers; the I3D clips are pooled at ``frame // clip_stride`` (spec §5.6).

    T = 12 frames, clip stride 4 → 3 clips; clip j's features are all j. Transitions at frames (4, 8) are
    clips (1, 2); with F = 2 tokens per stage the inclusive, overlapping slices of spec §6 are clips
    [0, 1], [1, 2] and [e − 1, 2] = [1, 2]. Pooling the 3 clips with the frame numbers instead (clamped to
    (2, 2)) would give [0, 2], [2, 2], [1, 2].
    """
    cfg = ModelConfig.tiny(use_skeleton=False, fix_size=2)
    assert (cfg.num_frames, cfg.clip_stride) == (12, 4)
    model = build_hpmcore(cfg, seed=0).train()
    i3d = torch.arange(3.0)[None, :, None].expand(1, 3, cfg.i3d_dim).contiguous()  # (1, J=3, C)
    v = VideoInputs(i3d=i3d, static=torch.randn(1, 12, cfg.static_dim), transitions=torch.tensor([[4, 8]]))
    pooled = []
    reducers = model.reducers["i3d"]
    hooks = [r.register_forward_pre_hook(lambda m, args: pooled.append(args[0])) for r in reducers]
    model.encode(v)
    for h in hooks:
        h.remove()
    tokens = [p[0, :, 0].tolist() for p in pooled]  # per stage: (F,) values of channel 0
    assert tokens == [[0.0, 1.0], [1.0, 2.0], [1.0, 2.0]]
    assert all(torch.equal(p, p[..., :1].expand_as(p)) for p in pooled)  # every channel alike


def test_cached_encodings_give_the_same_deltas_as_forward() -> None:
    """Spec §10.2: in eval mode encoding each video once and running only the pair heads is exact."""
    for exemplar_gt in (False, True):
        model = build_hpmcore(ModelConfig.tiny(exemplar_gt_at_test=exemplar_gt)).eval()
        q, pool = _videos(2, seed=1), _videos(4, seed=2)
        with torch.no_grad():
            cache_q = model.encode(q).detach()
            cache_e = model.encode(pool, use_gt=model.exemplar_uses_gt()).detach()
            pick = [3, 1]
            direct = model(q, _select(pool, pick))
            cached = model.forward_pair(cache_q, cache_e.select(pick))
        torch.testing.assert_close(cached.delta_qe, direct.delta_qe, rtol=1e-5, atol=1e-5)
        torch.testing.assert_close(cached.delta_eq, direct.delta_eq, rtol=1e-5, atol=1e-5)


# ---------------------------------------------------------------------------------------------------------
# Ablations


def test_without_segmentation_uses_fixed_thirds_and_no_tas() -> None:
    cfg = ModelConfig.tiny(use_segmentation=False)
    model = build_hpmcore(cfg)
    assert model.segmenter is None
    q, e = _videos(2, seed=1), _videos(2, seed=2)
    for mode in (True, False):
        out = model.train(mode)(q, e)
        assert torch.equal(out.transitions, fixed_thirds(4, T)) and out.seg_logits is None
    terms = pair_losses(out, score_q=SCORES[:2], score_e=SCORES[2:4], weights=LossWeights.of(cfg))
    assert terms.tas is None and LossWeights.of(cfg).tas == 0.0
    # No static branch and no segmenter: static features are not needed at all.
    cfg = ModelConfig.tiny(use_segmentation=False, use_static=False)
    out = build_hpmcore(cfg)(VideoInputs(q.i3d, None, q.skeleton), VideoInputs(e.i3d, None, e.skeleton))
    assert out.delta_qe.shape == (2,)


def test_without_static_branch_delta_is_the_fused_delta() -> None:
    model = build_hpmcore(ModelConfig.tiny(use_static=False))
    assert "static" not in model.reducers and "st" not in model.decoders
    out = model(_videos(2, seed=1), _videos(2, seed=2))
    assert out.delta_st is None and out.static_tokens is None
    torch.testing.assert_close(torch.cat([out.delta_qe, out.delta_eq]), out.delta_fu)


def test_lambda_weights_the_static_branch() -> None:
    model = build_hpmcore(ModelConfig.tiny(lam=3.0))
    out = model(_videos(2, seed=1), _videos(2, seed=2))
    expected = (out.delta_fu + 3.0 * out.delta_st) / 4.0
    torch.testing.assert_close(torch.cat([out.delta_qe, out.delta_eq]), expected)


def test_without_skeleton_has_no_pose_parts() -> None:
    model = build_hpmcore(ModelConfig.tiny(use_skeleton=False))
    assert model.skeleton is None
    assert all(not hasattr(block, "pose_proj") for block in model.fusion)
    q, e = _videos(2, seed=1), _videos(2, seed=2)
    out = model(
        VideoInputs(q.i3d, q.static, None, q.transitions), VideoInputs(e.i3d, e.static, None, e.transitions)
    )
    assert out.dn_logits is None and out.delta_qe.shape == (2,)


def test_contrastive_weight_zero_and_splash_head() -> None:
    cfg = ModelConfig.tiny(contrastive_weight=0.0, splash_head=True, splash_weight=0.5)
    model = build_hpmcore(cfg)
    out = model(_videos(2, seed=1), _videos(2, seed=2))
    assert out.splash is not None and out.splash.shape == (4,)
    target = torch.tensor([1.0, 2.0, 3.0, 4.0])
    terms = pair_losses(
        out, score_q=SCORES[:2], score_e=SCORES[2:4], weights=LossWeights.of(cfg), splash_target=target
    )
    assert terms.contrastive_fu is None and terms.contrastive_st is None
    torch.testing.assert_close(terms.total, terms.aqa + terms.tas + 0.5 * terms.splash)
    with pytest.raises(ValueError, match="splash_head"):
        ModelConfig.tiny(splash_weight=1.0).validate()


def test_bad_inputs_raise_value_errors_naming_the_shape() -> None:
    model = build_hpmcore(ModelConfig.tiny())
    q, e = _videos(2, seed=1), _videos(2, seed=2)
    with pytest.raises(ValueError, match=r"\(2, 11, 12\)"):
        model(VideoInputs(q.i3d, q.static[:, :11], q.skeleton, q.transitions), e)
    with pytest.raises(ValueError, match=r"\(2, 3, 15\)"):
        model(VideoInputs(q.i3d[..., :15], q.static, q.skeleton, q.transitions), e)
    with pytest.raises(ValueError, match="skeleton"):
        model(VideoInputs(q.i3d, q.static, None, q.transitions), e)
    with pytest.raises(ValueError, match="2 queries vs 1 exemplars"):
        model(q, _select(e, [0]))
    with pytest.raises(ValueError, match="divisible"):
        HPMCoRe(ModelConfig.tiny(dim=30, heads=4))


# ---------------------------------------------------------------------------------------------------------
# Parameter counts (§14.1) and named groups


def test_full_size_parameter_counts_match_spec() -> None:
    model = HPMCoRe(ModelConfig())
    assert [_count(r) for r in model.reducers["i3d"]] == [1_475_968] * 3
    assert [_count(r) for r in model.reducers["static"]] == [310_256] * 3
    assert [_count(f) for f in model.fusion] == [822_017] * 3
    assert [_count(model.decoders[b]) for b in ("fu", "st")] == [3_158_016] * 2
    assert [_count(model.regressors[b]) for b in ("fu", "st")] == [82_305] * 2
    assert _count(model.stage_weights) == 3
    assert _count(model.segmenter) == 1_630_978
    assert _count(model.skeleton) == 182_156
    # Everything but the frozen visual encoders: 31,631,364 − I3D (12,287,264 + 410,000) − RegNet
    # (2,793,996) − GSM (21,602).
    assert _count(model) == 16_118_502
    groups = model.parameter_groups()
    assert set(groups) == {
        "segmenter",
        "skeleton",
        "reducers",
        "fusion",
        "decoders",
        "regressors",
        "stage_weights",
    }
    ids = [id(p) for params in groups.values() for p in params]
    assert len(ids) == len(set(ids)) == len(list(model.parameters()))


# ---------------------------------------------------------------------------------------------------------
# Training behaviour


def test_one_batch_overfit() -> None:
    """The full tiny model (with HD-GCN) drives its total loss down by far more than 10× on one batch."""
    cfg = ModelConfig.tiny(gru_dropout=0.0)
    model = build_hpmcore(cfg, seed=0).train()
    q, e = _videos(2, seed=1), _videos(2, seed=2)
    sq, se = SCORES[:2], SCORES[2:4]
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    history = []
    for step in range(60):
        terms = pair_losses(model(q, e), score_q=sq, score_e=se, weights=LossWeights.of(cfg))
        opt.zero_grad()
        terms.total.backward()
        if step == 0:  # gradients reach HD-GCN through the pose prior of the fusion
            assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in model.skeleton.parameters())
        opt.step()
        history.append(terms.scalars())
    first, last = history[0], history[-1]
    assert last["total"] < first["total"] / 20
    assert last["aqa"] < first["aqa"] / 100


def test_swapping_query_and_exemplar_negates_delta_after_training() -> None:
    cfg = ModelConfig.tiny(gru_dropout=0.0, use_skeleton=False)
    model = build_hpmcore(cfg, seed=0)
    videos = _videos(6, seed=5)
    pairs = list(itertools.combinations(range(6), 2))
    qi, ei = [a for a, _ in pairs], [b for _, b in pairs]
    q, e = _select(videos, qi), _select(videos, ei)
    with torch.no_grad():  # untrained: no antisymmetry to speak of
        before = model.eval()(q, e).delta_qe + model(e, q).delta_qe
        assert float(before.abs().mean()) > 0.5 * float(model(q, e).delta_qe.abs().mean())
    model.train()
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    for _ in range(150):
        terms = pair_losses(model(q, e), score_q=SCORES[qi], score_e=SCORES[ei], weights=LossWeights.of(cfg))
        opt.zero_grad()
        terms.total.backward()
        opt.step()
    model.eval()
    with torch.no_grad():
        forward, swapped = model(q, e), model(e, q)
    torch.testing.assert_close(swapped.delta_qe, forward.delta_eq)  # the e→q half is the swapped pass
    magnitude = float(forward.delta_qe.abs().mean())  # ~16 points
    assert float((forward.delta_qe + swapped.delta_qe).abs().mean()) < 0.1 * magnitude
    assert float((forward.delta_qe - (SCORES[qi] - SCORES[ei])).abs().mean()) < 0.1 * magnitude


# ---------------------------------------------------------------------------------------------------------
# Deviation switches: pose_fusion and segmenter_input


def test_segmenter_reads_the_skeleton_only_with_static_plus_skeleton() -> None:
    v = _videos(3, seed=4)
    moved = VideoInputs(i3d=v.i3d, static=v.static, skeleton=v.skeleton + 5.0, transitions=v.transitions)
    for source, should_change in (("static", False), ("static+skeleton", True)):
        cfg = ModelConfig.tiny(segmenter_input=source)
        model = build_hpmcore(cfg, seed=0).eval()
        want = cfg.static_dim + (2 * cfg.skeleton_channels if should_change else 0)
        assert model.segmenter is not None and model.segmenter.gru.input_size == want
        a, b = model.encode(v).seg_logits, model.encode(moved).seg_logits
        assert a is not None and b is not None
        assert (not torch.allclose(a, b)) is should_change, source
    with pytest.raises(ValueError, match=r"static\+skeleton needs model\.use_skeleton"):
        ModelConfig.tiny(segmenter_input="static+skeleton", use_skeleton=False).validate()


def test_pose_tokens_add_the_skeleton_content_to_the_fused_tokens() -> None:
    v = _videos(3, seed=5)
    skeleton = v.skeleton.clone()
    skeleton[0] = torch.randn(skeleton[0].shape, generator=torch.Generator().manual_seed(9))  # another body
    moved = VideoInputs(i3d=v.i3d, static=v.static, skeleton=skeleton, transitions=v.transitions)
    for mode in ("bias", "tokens"):
        model = build_hpmcore(ModelConfig.tiny(pose_fusion=mode), seed=0).train()
        assert (model.fusion[0].pose_embed is not None) is (mode == "tokens")
        # w_pose starts at 0.001, so with the bias alone the skeleton barely moves the fused tokens
        a = model.encode(v, use_gt=True).fused[0]
        b = model.encode(moved, use_gt=True).fused[0]
        change = (a - b).abs().max().item()
        if mode == "bias":
            assert change < 1e-2
        else:
            assert change > 0.1


def test_skeleton_skip_appends_the_normalised_joint_coordinates() -> None:
    cfg = ModelConfig.tiny(skeleton_skip=True, pose_fusion="tokens", segmenter_input="static+skeleton")
    model = build_hpmcore(cfg, seed=0).eval()
    width = 2 * cfg.skeleton_channels + 32
    assert model.fusion[0].pose_proj.in_features == width and model.fusion[0].pose_embed is not None
    assert model.segmenter is not None and model.segmenter.gru.input_size == cfg.static_dim + width
    # the skip's BatchNorm sees channel v·2 + c of joint v, coordinate c (HD-GCN's data_bn layout)
    v = _videos(2, seed=6)
    seen = {}
    hook = model.skeleton_skip_bn.register_forward_hook(lambda m, i, o: seen.setdefault("x", i[0]))
    model.encode(v)
    hook.remove()
    x = seen["x"]  # (N, 32, T)
    assert x.shape == (2, 32, cfg.num_frames)
    torch.testing.assert_close(x[1, 2 * 7 + 1], v.skeleton[1, 1, :, 7, 0])  # joint 7 (thorax), y
    torch.testing.assert_close(x[0, 2 * 15 + 0], v.skeleton[0, 0, :, 15, 0])  # joint 15, x
    with pytest.raises(ValueError, match=r"skeleton_skip needs model\.use_skeleton"):
        ModelConfig.tiny(skeleton_skip=True, use_skeleton=False).validate()


def test_without_i3d_the_fused_tokens_come_from_the_skeleton_alone() -> None:
    cfg = ModelConfig.tiny(use_i3d=False, pose_fusion="tokens", skeleton_skip=True)
    model = build_hpmcore(cfg, seed=0).eval()
    assert "i3d" not in model.reducers and "static" in model.reducers
    v = _videos(3, seed=11)
    noisy = replace(v, i3d=torch.randn_like(v.i3d) * 100)
    a, b = model.encode(v), model.encode(noisy)
    torch.testing.assert_close(a.fused, b.fused)  # the I3D features do not reach F_fu
    other_pose = replace(v, skeleton=v.skeleton.flip(2))
    assert not torch.allclose(model.encode(other_pose).fused, a.fused)  # the skeleton does
    with_i3d = build_hpmcore(replace(cfg, use_i3d=True), seed=0).eval()
    assert not torch.allclose(with_i3d.encode(noisy).fused, with_i3d.encode(v).fused)
    with pytest.raises(ValueError, match=r"use_i3d: false needs"):
        ModelConfig.tiny(use_i3d=False, pose_fusion="bias").validate()
    with pytest.raises(ValueError, match=r"use_i3d: false needs"):
        ModelConfig.tiny(use_i3d=False, use_skeleton=False, pose_fusion="tokens").validate()


def test_delta_scale_multiplies_each_branch_delta() -> None:
    cfg = ModelConfig.tiny()
    q, e = _videos(3, seed=12), _videos(3, seed=13)
    one = build_hpmcore(cfg, seed=0).eval()(q, e)
    scaled = build_hpmcore(replace(cfg, delta_scale=2.5), seed=0).eval()(q, e)
    torch.testing.assert_close(scaled.delta_fu, 2.5 * one.delta_fu)
    torch.testing.assert_close(scaled.delta_st, 2.5 * one.delta_st)
    torch.testing.assert_close(scaled.delta_qe, 2.5 * one.delta_qe)
    # the scorer's per-stage contributions still add up to the scaled delta
    from hpmcore.serving.score import stage_contributions

    heads = build_hpmcore(replace(cfg, delta_scale=2.5), seed=0).eval()
    with torch.no_grad():
        enc_q, enc_e = heads.encode(q), heads.encode(e)
        parts = stage_contributions(heads, enc_q, enc_e)
        torch.testing.assert_close(parts.sum(dim=1), heads.forward_pair(enc_q, enc_e).delta_qe)
    for bad in (0.0, -1.0, float("nan")):
        with pytest.raises(ValueError, match="delta_scale"):
            ModelConfig.tiny(delta_scale=bad).validate()


def test_feature_dropout_acts_in_training_only() -> None:
    v = _videos(3, seed=7)
    model = build_hpmcore(ModelConfig.tiny(feature_dropout=0.5, use_segmentation=False), seed=0)
    model.eval()
    torch.testing.assert_close(model.encode(v).fused, model.encode(v).fused)  # no dropout at eval
    model.train()
    torch.manual_seed(0)
    a = model.encode(v, use_gt=True).fused
    torch.manual_seed(1)
    b = model.encode(v, use_gt=True).fused
    assert not torch.allclose(a, b)
    plain = build_hpmcore(ModelConfig.tiny(use_segmentation=False), seed=0).train()
    torch.manual_seed(0)
    c = plain.encode(v, use_gt=True).fused
    torch.manual_seed(1)
    torch.testing.assert_close(c, plain.encode(v, use_gt=True).fused)  # nothing random without it
    with pytest.raises(ValueError, match="feature_dropout must be in"):
        ModelConfig.tiny(feature_dropout=1.0).validate()


def test_select_rows_backward_is_bit_identical_across_repeats() -> None:
    """In-batch pairs select each video's encoding many times (as the exemplar of every other video of the
    batch); the gradient of those repeated rows must not depend on thread timing, or two training runs of
    one configuration drift apart. With ``t[index]`` this repeat gave a different gradient nearly every
    time on a 2-core machine; ``select_rows`` must give the same bits every time, and the right sum."""
    threads = torch.get_num_threads()
    torch.set_num_threads(max(2, threads))
    try:
        gen = torch.Generator().manual_seed(0)
        x = torch.randn(16, 24, 64, generator=gen, requires_grad=True)
        exemplars = torch.tensor([j for i in range(16) for j in range(16) if i != j])  # every row 15 times
        upstream = torch.randn(len(exemplars), 24, 64, generator=gen)
        grads = []
        for _ in range(20):
            x.grad = None
            select_rows(x, exemplars).backward(upstream)
            grads.append(x.grad.clone())
    finally:
        torch.set_num_threads(threads)
    assert all(torch.equal(grads[0], g) for g in grads[1:])
    expected = torch.zeros(16, 24, 64, dtype=torch.float64).index_add_(0, exemplars, upstream.double())
    torch.testing.assert_close(grads[0].double(), expected, rtol=1e-5, atol=1e-5)
    assert torch.equal(select_rows(x, slice(2, 5)), x[2:5])
    assert torch.equal(select_rows(x, [3, 3, 0]), x[[3, 3, 0]])
