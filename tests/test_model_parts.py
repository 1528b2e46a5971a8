"""HP-MCoRe head parts (spec §5–§8): segmentation, stage pooling, fusion, decoders, regressors, losses.

Reference values are written out by hand or computed by independent, loop-based formulas.
"""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from hpmcore.models.decoder import CrossAttentionDecoder, build_decoder, decode_stages
from hpmcore.models.fusion import ChannelReducer, PoseAttnNet, build_pose_fusion, build_reducers
from hpmcore.models.pooling import clamp_transitions, seg_pool_1d, stage_bounds
from hpmcore.models.regressor import ScoreMLP, StageWeights, build_score_mlp, combine_deltas
from hpmcore.models.segmentation import (
    build_spot_model,
    decode_halves,
    decode_joint,
    decode_transitions,
    fixed_thirds,
    gt_transitions,
    gt_transitions_batch,
    to_clip_index,
)
from hpmcore.training.losses import (
    LossWeights,
    dive_number_loss,
    score_loss,
    splash_loss,
    stage_contrastive_loss,
    total_loss,
    transition_loss,
)


def _count(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


# ---------------------------------------------------------------------------------------------------------
# Segmentation (§5)


def test_spot_model_shapes_and_full_size_parameter_count() -> None:
    torch.manual_seed(0)
    model = build_spot_model(in_dim=6, hidden=5)
    assert model(torch.randn(3, 12, 6)).shape == (3, 12, 2)
    with pytest.raises(ValueError, match=r"\(3, 12, 7\)"):
        model(torch.randn(3, 12, 7))
    assert _count(build_spot_model()) == 1_630_978  # spec §14.1


@pytest.mark.parametrize(
    ("labels", "expected"),
    [
        ([3, 3, 3, 8, 8, 8, 8, 9, 9], (3, 7)),  # 3 distinct labels
        ([1, 1, 2, 3, 3, 4, 4, 4], (2, 5)),  # 4: the middle steps merge into stage 2
        ([5, 5, 6, 7, 7, 8, 9, 9], (2, 6)),  # 5 distinct labels
        # The (4, 37, 36, 37, 36) quirk: the last distinct label in first-occurrence order is 36, first
        # seen at index 4, so ed falls in the middle of the dive (kept, spec §5.2).
        ([4, 4, 37, 37, 36, 36, 37, 37, 36, 36], (2, 4)),
    ],
)
def test_gt_transitions(labels: list[int], expected: tuple[int, int]) -> None:
    assert gt_transitions(labels) == expected
    assert gt_transitions(torch.tensor(labels)) == expected


def test_gt_transitions_batch_and_errors() -> None:
    labels = torch.tensor([[0, 0, 1, 1, 2, 2], [7, 1, 1, 1, 1, 3]])
    assert gt_transitions_batch(labels).tolist() == [[2, 4], [1, 5]]
    with pytest.raises(ValueError, match="at least 3 distinct"):
        gt_transitions([1, 1, 2, 2])
    with pytest.raises(ValueError, match="1-D"):
        gt_transitions([[1, 2, 3]])


def _peaks(t: int, st: int, ed: int, *, extra: dict[tuple[int, int], float] | None = None) -> torch.Tensor:
    """(1, T, 2) logits: 0 everywhere, 5 at (st, ch 0) and (ed, ch 1), plus ``extra`` entries."""
    logits = torch.zeros(1, t, 2)
    logits[0, st, 0] = 5.0
    logits[0, ed, 1] = 5.0
    for (frame, ch), value in (extra or {}).items():
        logits[0, frame, ch] = value
    return logits


def test_decode_halves_and_joint_agree_on_an_easy_case() -> None:
    logits = _peaks(8, 2, 6)  # split = 4
    assert decode_halves(logits).tolist() == [[2, 6]]
    assert decode_joint(logits).tolist() == [[2, 6]]


def test_decode_joint_recovers_what_halves_cannot() -> None:
    # st = 5 lies in the second half: halves can only pick from frames 0..3 (all tie → the first, 0).
    logits = _peaks(8, 5, 7)
    assert decode_halves(logits).tolist() == [[0, 7]]
    assert decode_joint(logits).tolist() == [[5, 7]]
    # ed = 3 lies in the first half: halves picks from frames 4..7 (tie → 4).
    logits = _peaks(8, 1, 3)
    assert decode_halves(logits).tolist() == [[1, 4]]
    assert decode_joint(logits).tolist() == [[1, 3]]
    assert decode_transitions(logits, "joint").tolist() == [[1, 3]]
    assert decode_transitions(logits, "halves").tolist() == [[1, 4]]
    with pytest.raises(ValueError, match="decode mode"):
        decode_transitions(logits, "thirds")  # type: ignore[arg-type]


def test_decode_joint_respects_order_constraint_by_hand() -> None:
    # P0 peaks late (frame 4), P1 early (frame 0); best s < e is (1, 2) with 1 + 3 = 4 (by enumeration:
    # (0,2)=3, (1,2)=4, (0,1)=0, (s,3)<=1, (s,4)<=1).
    logits = torch.tensor([[[0.0, 4.0], [1.0, 0.0], [0.0, 3.0], [0.0, 0.0], [5.0, 0.0]]])
    assert decode_joint(logits).tolist() == [[1, 2]]


def test_decode_joint_matches_brute_force() -> None:
    g = torch.Generator().manual_seed(3)
    logits = torch.randn(6, 11, 2, generator=g)
    got = decode_joint(logits).tolist()
    for n in range(6):
        best, arg = -math.inf, None
        for s in range(11):
            for e in range(s + 1, 11):
                v = float(logits[n, s, 0] + logits[n, e, 1])
                if v > best:
                    best, arg = v, [s, e]
        assert got[n] == arg
    halves = decode_halves(logits)
    assert bool((halves[:, 0] < 6).all()) and bool((halves[:, 1] >= 6).all())  # round(11/2) = 6
    with pytest.raises(ValueError, match=r"\(4, 11\)"):
        decode_halves(torch.zeros(4, 11))


def test_clip_index_and_fixed_thirds() -> None:
    assert to_clip_index(torch.tensor([[35, 95], [0, 9], [10, 89]])).tolist() == [[3, 9], [0, 0], [1, 8]]
    assert fixed_thirds(2, 96).tolist() == [[32, 64], [32, 64]]


# ---------------------------------------------------------------------------------------------------------
# Stage pooling (§6)

_SQUARES = torch.arange(9, dtype=torch.float64).pow(2).view(1, 9, 1)  # x[i] = i², L = 9, C = 1


def _pool_squares(s: int, e: int, f: int = 4) -> torch.Tensor:
    """Pool x[i] = i² with (s, e) → (3, F): one row per stage."""
    return seg_pool_1d(_SQUARES, torch.tensor([[s, e]]), fix_size=f).view(3, f)


def _assert_rows(got: torch.Tensor, expected: list[list[float]]) -> None:
    torch.testing.assert_close(got, torch.tensor(expected, dtype=torch.float64), rtol=0, atol=1e-12)


def test_stage_pooling_by_hand() -> None:
    # s = 2, e = 5: stage 1 = x[0..2] = [0, 1, 4]; positions j·2/3 → 0, 2/3, 4/3, 2.
    # stage 2 = x[2..5] = [4, 9, 16, 25]; positions 0, 1, 2, 3.
    # stage 3 = x[4..8] = [16, 25, 36, 49, 64] (overlap e−1 = 4); positions j·4/3 → 0, 4/3, 8/3, 4.
    expected = [
        [0.0, 2 / 3, 1 + (4 - 1) / 3, 4.0],
        [4.0, 9.0, 16.0, 25.0],
        [16.0, 25 + (36 - 25) / 3, 36 + 2 * (49 - 36) / 3, 64.0],
    ]
    _assert_rows(_pool_squares(2, 5), expected)


def test_stage_pooling_clamps_e_equal_to_length() -> None:
    # e = 9 = L (a predicted ed >= 90 on the I3D timeline) is clamped to 8: stage 2 = x[6..8],
    # stage 3 = x[7..8] = [49, 64] (the reference's unclamped slicing would give just [64]).
    expected = [
        [0.0, 4.0, 16.0, 36.0],  # x[0..6]: positions 0, 2, 4, 6
        [36.0, 36 + 2 * (49 - 36) / 3, 49 + (64 - 49) / 3, 64.0],  # x[6..8]: positions 0, 2/3, 4/3, 2
        [49.0, 54.0, 59.0, 64.0],  # x[7..8]: positions 0, 1/3, 2/3, 1
    ]
    _assert_rows(_pool_squares(6, 9), expected)


def test_stage_pooling_clamps_e_zero_and_replicates_length_one_slices() -> None:
    # (s, e) = (0, 0) → e = 1, s = 0: stage 1 = x[0] (replicated), stage 2 = x[0..1], stage 3 = x[0..8].
    expected = [
        [0.0, 0.0, 0.0, 0.0],
        [0.0, 1 / 3, 2 / 3, 1.0],
        [0.0, 4 + 2 * (9 - 4) / 3, 25 + (36 - 25) / 3, 64.0],
    ]
    _assert_rows(_pool_squares(0, 0), expected)
    # s = e = 4 (st_c == ed_c on the I3D timeline): stage 2 is the single clip x[4], replicated.
    _assert_rows(_pool_squares(4, 4)[1:2], [[16.0, 16.0, 16.0, 16.0]])
    # s > e is clamped to s = e.
    assert stage_bounds(torch.tensor([[7, 3], [-2, 5]]), 9).tolist() == [
        [[0, 3], [3, 3], [2, 8]],
        [[0, 0], [0, 5], [4, 8]],
    ]


def test_clamp_is_a_no_op_for_valid_transitions() -> None:
    grid = torch.tensor([(s, e) for e in range(1, 96) for s in range(e + 1)])
    assert torch.equal(clamp_transitions(grid, 96), grid)


def test_stage_pooling_matches_interpolate_per_video() -> None:
    g = torch.Generator().manual_seed(0)
    x = torch.randn(5, 96, 7, generator=g, dtype=torch.float64)
    transitions = torch.tensor([[1, 35], [58, 88], [47, 48], [10, 95], [0, 1]])
    out = seg_pool_1d(x, transitions, fix_size=10)
    assert out.shape == (5, 30, 7)
    for v, (s, e) in enumerate(transitions.tolist()):
        slices = [x[v, 0 : s + 1], x[v, s : e + 1], x[v, e - 1 :]]
        ref = [
            F.interpolate(sl.T[None], size=10, mode="linear", align_corners=True)[0].T for sl in slices
        ]  # each (10, C)
        torch.testing.assert_close(out[v], torch.cat(ref), rtol=1e-9, atol=1e-9)


def test_stage_pooling_gradients_and_bad_shapes() -> None:
    x = torch.randn(2, 9, 3, requires_grad=True)
    seg_pool_1d(x, torch.tensor([[2, 5], [0, 9]]), fix_size=10).sum().backward()
    assert x.grad is not None and bool(torch.isfinite(x.grad).all())
    with pytest.raises(ValueError, match=r"\(2, 9\)"):
        seg_pool_1d(torch.randn(2, 9), torch.tensor([[2, 5], [0, 9]]))
    with pytest.raises(ValueError, match=r"\(3, 2\)"):
        seg_pool_1d(torch.randn(2, 9, 3), torch.zeros(3, 2, dtype=torch.long))


# ---------------------------------------------------------------------------------------------------------
# Reducers and PoseAttnNet (§7.1, §7.2)


def test_reducer_shapes_and_full_size_counts() -> None:
    reducers = build_reducers(in_dim=12, out_dim=8, extra=4)
    assert len(reducers) == 3 and reducers[0](torch.randn(2, 5, 12)).shape == (2, 5, 8)
    assert bool((reducers[0](torch.randn(2, 5, 12)) >= 0).all())  # ends with ReLU
    with pytest.raises(ValueError, match=r"\(2, 5, 13\)"):
        reducers[0](torch.randn(2, 5, 13))
    assert _count(ChannelReducer(in_dim=1024)) == 1_475_968
    assert _count(ChannelReducer(in_dim=368)) == 310_256


def _pose_attn_by_formula(m: PoseAttnNet, x: torch.Tensor, p: torch.Tensor | None) -> torch.Tensor:
    """Spec §7.2 written out with explicit per-head loops."""
    d, h = m.dim, m.heads
    dh = d // h
    u = F.layer_norm(x, (d,), m.norm1.weight, m.norm1.bias)
    wq, wk, wv = m.qkv.weight.split(d)  # (D, D) each, y = u Wᵀ
    q, k, v = u @ wq.T, u @ wk.T, u @ wv.T
    g = 0.0
    if p is not None:
        pi = (p * 0.01) @ m.pose_proj.weight.T + m.pose_proj.bias  # (B, F, D)
        g = m.pose_weight * (pi @ pi.transpose(1, 2)) / 64.0
    heads = []
    for i in range(h):
        sl = slice(i * dh, (i + 1) * dh)
        a = torch.softmax(q[..., sl] @ k[..., sl].transpose(1, 2) / math.sqrt(dh) + g, dim=-1)
        heads.append(a @ v[..., sl])
    x = x + torch.cat(heads, dim=-1) @ m.proj.weight.T + m.proj.bias
    z = F.layer_norm(x, (d,), m.norm2.weight, m.norm2.bias)
    return x + m.mlp[2](F.gelu(m.mlp[0](z)))


def test_pose_attn_matches_formula_and_full_size_count() -> None:
    torch.manual_seed(0)
    m = PoseAttnNet(dim=16, heads=2, pose_dim=6)
    assert m.pose_weight.item() == pytest.approx(1e-3)
    with torch.no_grad():
        m.pose_weight.fill_(0.7)  # make the pose term matter
        m.pose_proj.weight.mul_(50.0)
    x, p = torch.randn(3, 5, 16), torch.randn(3, 5, 6)
    out = m(x, p)
    assert out.shape == (3, 5, 16)
    torch.testing.assert_close(out, _pose_attn_by_formula(m, x, p), rtol=1e-5, atol=1e-5)
    assert not torch.allclose(out, m(x, torch.zeros_like(p)), atol=1e-4)  # the pose matters here
    with pytest.raises(ValueError, match="pose tokens"):
        m(x, None)
    assert _count(PoseAttnNet()) == 822_017
    assert len(build_pose_fusion(dim=16, heads=2, pose_dim=6)) == 3


def test_pose_attn_without_pose_equals_zero_pose() -> None:
    torch.manual_seed(1)
    with_pose = PoseAttnNet(dim=16, heads=2, pose_dim=6)
    without = PoseAttnNet(dim=16, heads=2, pose_dim=None)
    without.load_state_dict(with_pose.state_dict(), strict=False)
    assert _count(without) == _count(with_pose) - (6 * 16 + 16 + 1)
    x = torch.randn(2, 5, 16)
    torch.testing.assert_close(without(x), with_pose(x, torch.zeros(2, 5, 6)), rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(without(x), _pose_attn_by_formula(without, x, None), rtol=1e-5, atol=1e-5)


# ---------------------------------------------------------------------------------------------------------
# Decoder (§7.3)


def _decoder_by_formula(dec: CrossAttentionDecoder, q: torch.Tensor, m: torch.Tensor) -> torch.Tensor:
    for blk in dec.blocks:
        d, h = dec.dim, blk.attn.heads
        dh = d // h
        qn = F.layer_norm(q, (d,), blk.norm_q.weight, blk.norm_q.bias)
        mn = F.layer_norm(m, (d,), blk.norm_m.weight, blk.norm_m.bias)  # the same raw memory every block
        wk, wv = blk.attn.kv.weight.split(d)
        qq, kk, vv = qn @ blk.attn.q.weight.T, mn @ wk.T, mn @ wv.T
        heads = []
        for i in range(h):
            sl = slice(i * dh, (i + 1) * dh)
            a = torch.softmax(qq[..., sl] @ kk[..., sl].transpose(1, 2) / math.sqrt(dh), dim=-1)
            heads.append(a @ vv[..., sl])
        q = q + torch.cat(heads, dim=-1) @ blk.attn.proj.weight.T + blk.attn.proj.bias
        z = F.layer_norm(q, (d,), blk.norm2.weight, blk.norm2.bias)
        q = q + blk.mlp[2](F.gelu(blk.mlp[0](z)))
    return q


def test_decoder_matches_formula_and_full_size_count() -> None:
    torch.manual_seed(0)
    dec = build_decoder(dim=16, heads=2, depth=2)
    q, m = torch.randn(3, 4, 16), torch.randn(3, 6, 16)
    out = dec(q, m)
    assert out.shape == (3, 4, 16)
    torch.testing.assert_close(out, _decoder_by_formula(dec, q, m), rtol=1e-5, atol=1e-5)
    with pytest.raises(ValueError, match=r"\(3, 4, 15\)"):
        dec(torch.randn(3, 4, 15), m)
    assert _count(build_decoder()) == 3_158_016


def test_decode_stages_is_per_stage_and_both_directions() -> None:
    torch.manual_seed(0)
    dec = build_decoder(dim=8, heads=2, depth=1)
    x, y = torch.randn(2, 9, 8), torch.randn(2, 9, 8)  # K = 3 stages of F = 3 tokens
    out = decode_stages(dec, x, y)
    assert out.shape == (4, 9, 8)
    for k in range(3):
        sl = slice(3 * k, 3 * k + 3)
        torch.testing.assert_close(out[:2, sl], dec(x[:, sl], y[:, sl]), rtol=1e-5, atol=1e-6)
        torch.testing.assert_close(out[2:, sl], dec(y[:, sl], x[:, sl]), rtol=1e-5, atol=1e-6)


# ---------------------------------------------------------------------------------------------------------
# Regressors, stage weights, Δ (§7.4–§7.6)


def test_score_mlp_stage_means_and_full_size_count() -> None:
    torch.manual_seed(0)
    mlp = build_score_mlp(dim=8)
    tokens = torch.randn(2, 6, 8)  # 3 stages × 2 tokens
    per_token = mlp.mlp(tokens)[..., 0]  # (2, 6)
    expected = torch.stack([per_token[:, 2 * k : 2 * k + 2].mean(dim=1) for k in range(3)], dim=1)
    torch.testing.assert_close(mlp(tokens), expected)
    assert _count(ScoreMLP()) == 82_305
    with pytest.raises(ValueError, match=r"\(2, 7, 8\)"):
        mlp(torch.randn(2, 7, 8))


def test_stage_weights() -> None:
    w = StageWeights()
    assert _count(w) == 3
    torch.testing.assert_close(w.weights(), torch.full((3,), 2.0))
    torch.testing.assert_close(w.normalized(), torch.full((3,), 1 / 3))
    deltas = torch.tensor([[3.0, 6.0, 9.0], [1.0, -1.0, 0.0]])
    torch.testing.assert_close(w(deltas), torch.tensor([6.0, 0.0]))
    with torch.no_grad():
        w.log_weights.copy_(torch.log(torch.tensor([1.0, 2.0, 5.0])))
    torch.testing.assert_close(w(deltas), torch.tensor([(3 + 12 + 45) / 8, (1 - 2) / 8]))


def test_combine_deltas_with_lambda() -> None:
    fu, st = torch.tensor([2.0, -4.0]), torch.tensor([6.0, 0.0])
    torch.testing.assert_close(combine_deltas(fu, st, 1.0), torch.tensor([4.0, -2.0]))  # ½(fu + st)
    torch.testing.assert_close(combine_deltas(fu, st, 3.0), torch.tensor([5.0, -1.0]))  # (fu + 3st)/4
    torch.testing.assert_close(combine_deltas(fu, st, 0.0), fu)
    assert combine_deltas(fu, None, 1.0) is fu
    with pytest.raises(ValueError, match="lambda"):
        combine_deltas(fu, st, -1.0)


# ---------------------------------------------------------------------------------------------------------
# Losses (§8)


def test_score_loss_by_hand() -> None:
    dqe, deq = torch.tensor([1.0, 2.0]), torch.tensor([-1.0, 0.0])
    sq, se = torch.tensor([10.0, 5.0]), torch.tensor([8.0, 5.0])
    # targets qe = [2, 0], eq = [-2, 0]: ((1-2)² + 2²)/2 + ((-1+2)² + 0)/2 = 2.5 + 0.5
    assert float(score_loss(dqe, deq, sq, se)) == pytest.approx(3.0)


@pytest.mark.parametrize("entry_weight", [2.0, 1.0])
def test_transition_loss_equals_cross_entropy_with_probability_targets(entry_weight: float) -> None:
    g = torch.Generator().manual_seed(0)
    logits = torch.randn(4, 12, 2, generator=g)
    gt = torch.tensor([[1, 7], [3, 4], [0, 11], [5, 9]])
    target = torch.zeros(4, 12, 2)
    for n, (st, ed) in enumerate(gt.tolist()):
        target[n, st, 0] = 1.0
        target[n, ed, 1] = entry_weight
    expected = nn.CrossEntropyLoss()(logits, target)
    torch.testing.assert_close(transition_loss(logits, gt, entry_weight=entry_weight), expected)
    with pytest.raises(ValueError, match=r"\[0, 12\)"):
        transition_loss(logits, torch.tensor([[1, 12], [0, 1], [0, 1], [0, 1]]))


def _contrastive_by_loops(x: torch.Tensor, y: torch.Tensor, tau: float) -> float:
    """Spec §8.3 with explicit loops over pairs, stages and negatives."""

    def cos(a: torch.Tensor, b: torch.Tensor) -> float:
        return float(a @ b) / (max(float(a.norm()), 1e-12) * max(float(b.norm()), 1e-12))

    def directed(xs: list[torch.Tensor], ys: list[torch.Tensor]) -> float:
        total = 0.0
        for k in range(3):
            pos = math.exp(cos(xs[k], ys[k]) / tau)
            neg = sum(
                math.exp(cos(xs[k], xs[j]) / tau) + math.exp(cos(xs[k], ys[j]) / tau)
                for j in range(3)
                if j != k
            )
            total += -math.log(pos / (pos + neg))
        return total / 3

    b, kf, _ = x.shape
    f = kf // 3
    per_pair = []
    for i in range(b):
        xs = [x[i, k * f : (k + 1) * f].mean(dim=0).double() for k in range(3)]
        ys = [y[i, k * f : (k + 1) * f].mean(dim=0).double() for k in range(3)]
        per_pair.append(0.5 * (directed(xs, ys) + directed(ys, xs)))
    return sum(per_pair) / b


@pytest.mark.parametrize("tau", [0.1, 0.5])
def test_stage_contrastive_loss_matches_direct_formula(tau: float) -> None:
    g = torch.Generator().manual_seed(0)
    x, y = torch.randn(3, 6, 5, generator=g), torch.randn(3, 6, 5, generator=g)
    x, y = x.double(), y.double()
    got = float(stage_contrastive_loss(x, y, tau=tau))
    assert got == pytest.approx(_contrastive_by_loops(x, y, tau), rel=1e-10)
    # Identical stage descriptors across videos and orthogonal stages: the positive dominates.
    basis = torch.eye(3).repeat_interleave(2, dim=0)[None]  # (1, 6, 3): stage k tokens = e_k
    assert float(stage_contrastive_loss(basis, basis, tau=0.1)) < 1e-3


def test_dive_number_and_splash_losses() -> None:
    # softmax([0, 0, ln 2]) = (1/4, 1/4, 1/2), label 2: −ln(1/2); softmax([ln 3, 0, 0]) = (3/5, 1/5, 1/5),
    # label 0: −ln(3/5); the loss is their mean.
    logits = torch.tensor([[0.0, 0.0, math.log(2.0)], [math.log(3.0), 0.0, 0.0]], dtype=torch.float64)
    want = (math.log(2.0) + math.log(5.0 / 3.0)) / 2
    assert float(dive_number_loss(logits, torch.tensor([2, 0]))) == pytest.approx(want, rel=1e-12)
    with pytest.raises(ValueError, match=r"\[0, 3\)"):
        dive_number_loss(logits, torch.tensor([0, 3]))
    assert float(splash_loss(torch.tensor([1.0, 3.0]), torch.tensor([2.0, 3.0]))) == pytest.approx(0.5)
    with pytest.raises(ValueError, match="splash"):
        splash_loss(torch.zeros(2), torch.zeros(3))


def test_total_loss_combines_weighted_terms() -> None:
    g = torch.Generator().manual_seed(0)
    b = 2
    kw = {
        "delta_qe": torch.randn(b, generator=g),
        "delta_eq": torch.randn(b, generator=g),
        "score_q": torch.tensor([80.0, 60.0]),
        "score_e": torch.tensor([70.0, 65.0]),
    }
    seg, gt = torch.randn(2 * b, 8, 2, generator=g), torch.tensor([[1, 5], [2, 6], [3, 4], [0, 7]])
    fu = (torch.randn(b, 6, 4, generator=g), torch.randn(b, 6, 4, generator=g))
    st = (torch.randn(b, 6, 4, generator=g), torch.randn(b, 6, 4, generator=g))
    dn_logits, dn_labels = torch.randn(2 * b, 3, generator=g), torch.tensor([0, 1, 2, 0])
    weights = LossWeights(dive_number=0.5)
    terms = total_loss(
        **kw,
        weights=weights,
        seg_logits=seg,
        gt_transitions=gt,
        fused=fu,
        static=st,
        dn_logits=dn_logits,
        dn_labels=dn_labels,
    )
    expected = (
        score_loss(*kw.values())
        + transition_loss(seg, gt)
        + 10 * stage_contrastive_loss(*fu)
        + 10 * stage_contrastive_loss(*st)
        + 0.5 * dive_number_loss(dn_logits, dn_labels)
    )
    torch.testing.assert_close(terms.total, expected)
    assert set(terms.scalars()) == {"total", "aqa", "tas", "contrastive_fu", "contrastive_st", "dive_number"}
    off = total_loss(**kw, weights=LossWeights(contrastive=0.0), fused=fu, static=st)
    assert off.contrastive_fu is None and off.tas is None
    torch.testing.assert_close(off.total, off.aqa)
    with pytest.raises(ValueError, match="splash"):
        total_loss(**kw, weights=LossWeights(splash=1.0))


def test_tas_leaves_out_videos_without_ground_truth() -> None:
    """A pair member whose ground truth is unknown (row (-1, -1)) adds nothing to L_tas; the term is the
    loss of the known rows alone, and absent when no row is known."""
    from dataclasses import replace

    from hpmcore.models.hpmcore import ModelConfig, VideoInputs, build_hpmcore, pair_losses

    cfg = ModelConfig.tiny(use_skeleton=False, contrastive_weight=0.0)
    model = build_hpmcore(cfg, seed=0).train()
    g = torch.Generator().manual_seed(0)

    def videos(gt: list[list[int]]) -> VideoInputs:
        n = len(gt)
        return VideoInputs(
            i3d=torch.randn(n, 3, cfg.i3d_dim, generator=g),
            static=torch.randn(n, cfg.num_frames, cfg.static_dim, generator=g),
            transitions=torch.tensor(gt),
        )

    q, e = videos([[2, 7], [-1, -1]]), videos([[-1, -1], [3, 9]])
    out = model(q, e)
    scores = torch.tensor([50.0, 60.0])
    terms = pair_losses(out, score_q=scores, score_e=scores, weights=LossWeights.of(cfg))
    known = torch.tensor([0, 3])  # rows: q0, q1, e0, e1
    want = transition_loss(out.seg_logits[known], torch.tensor([[2, 7], [3, 9]]))
    torch.testing.assert_close(terms.tas, want)
    # Unknown rows are pooled with their decoded transitions, known ones with the ground truth.
    assert torch.equal(out.transitions[known], torch.tensor([[2, 7], [3, 9]]))
    assert torch.equal(out.transitions[[1, 2]], out.predicted[[1, 2]])
    none = model(
        replace(q, transitions=torch.full((2, 2), -1)), replace(e, transitions=torch.full((2, 2), -1))
    )
    assert pair_losses(none, score_q=scores, score_e=scores, weights=LossWeights.of(cfg)).tas is None
