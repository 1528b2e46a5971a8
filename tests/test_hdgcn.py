"""HD-GCN skeletal encoder (spec §4): groups, graph tensor, EdgeConv, AHA (correct vs reference groups),
unit structure and initialisation, output shapes, parameter count, gradients, shape errors."""

from __future__ import annotations

import dataclasses
import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from hpmcore.models.hdgcn import (
    AHA,
    HDGCN,
    MSTCN,
    EdgeConv,
    SkeletonOutput,
    aggregate,
    aha_level_joints,
    build_graph,
    build_hdgcn,
    hierarchy_groups,
    knn,
)

T = 16  # frames in the tiny test inputs (the real model sees 96)

# Spec §1.4, written out independently of the model code.
G = [{7}, {6, 8, 12, 13}, {9, 14, 2, 3, 11}, {10, 15, 1, 4}, {5, 0}]
# Spec §13 item 10: the reference subtracts 1 from already 0-based groups; −1 wraps to joint 15.
G_REF = [{6}, {5, 7, 11, 12}, {8, 13, 1, 2, 10}, {9, 14, 0, 3}, {4, 15}]


def _model(**kwargs: object) -> HDGCN:
    torch.manual_seed(0)
    return build_hdgcn(**kwargs)  # type: ignore[arg-type]


def _poses(n: int = 2, t: int = T, seed: int = 1) -> torch.Tensor:
    """``(N, 2, T, 16, 1)`` pixel-scale coordinates, as the loader delivers them (no normalisation)."""
    g = torch.Generator().manual_seed(seed)
    return torch.rand(n, 2, t, 16, 1, generator=g) * 400


# ---------------------------------------------------------------- groups and graph tensor (§1.4, §4.1)


def test_hierarchy_groups_partition_the_skeleton() -> None:
    groups = hierarchy_groups()
    assert [set(g) for g in groups] == G
    assert sorted(j for g in groups for j in g) == list(range(16))
    with pytest.raises(ValueError, match="com=2"):
        hierarchy_groups(2)


def test_graph_identity_subset_is_diagonal_on_consecutive_groups_only() -> None:
    a = build_graph(hierarchy_groups())
    assert a.shape == (4, 3, 16, 16) and a.dtype == torch.float32
    for i in range(4):
        expected = torch.zeros(16, 16)
        for j in G[i] | G[i + 1]:
            expected[j, j] = 1.0
        assert torch.equal(a[i, 0], expected), f"level {i}"


def test_graph_outward_and_inward_are_column_normalised_between_groups() -> None:
    a = build_graph(hierarchy_groups())
    for i in range(4):
        inner, outer = G[i], G[i + 1]
        out_w, in_w = a[i, 1], a[i, 2]  # M[dst, src]
        for src in range(16):
            # Every source of the edge set spreads total weight 1; other columns are empty.
            assert out_w[:, src].sum().item() == pytest.approx(1.0 if src in inner else 0.0)
            assert in_w[:, src].sum().item() == pytest.approx(1.0 if src in outer else 0.0)
            for dst in range(16):
                want_out = 1 / len(outer) if (src in inner and dst in outer) else 0.0
                want_in = 1 / len(inner) if (src in outer and dst in inner) else 0.0
                assert out_w[dst, src].item() == pytest.approx(want_out), (i, dst, src)
                assert in_w[dst, src].item() == pytest.approx(want_in), (i, dst, src)
    # A few entries by hand: thorax → each of G1 with 1/4; G1 → thorax with 1 (|G0| = 1);
    # pelvis (G1) → hip 2 (G2) with 1/5; knee 1 (G3) → hip 2 (G2) with 1/4; wrist 10 → ankle 5 with 1/2.
    assert a[0, 1, 6, 7].item() == pytest.approx(0.25)
    assert a[0, 2, 7, 6].item() == 1.0
    assert a[1, 1, 2, 6].item() == pytest.approx(0.2)
    assert a[2, 2, 2, 1].item() == pytest.approx(0.2)
    assert a[2, 1, 1, 2].item() == pytest.approx(0.25)
    assert a[3, 1, 5, 10].item() == pytest.approx(0.5)
    assert a[3, 2, 10, 5].item() == pytest.approx(0.25)
    assert a[0, 1, 7, 6].item() == 0.0  # outward never points back towards the centre


def test_aggregate_is_sum_over_sources_of_a_dst_src() -> None:
    a = build_graph(hierarchy_groups())
    h = (torch.arange(16, dtype=torch.float32) + 1).view(1, 1, 1, 16)  # h[u] = u + 1
    z_out = aggregate(h, a[0, 1])[0, 0, 0]
    z_in = aggregate(h, a[0, 2])[0, 0, 0]
    # Outward level 0: each G1 joint receives a quarter of the thorax (h[7] = 8); nothing else moves.
    assert z_out[[6, 8, 12, 13]].tolist() == [2.0, 2.0, 2.0, 2.0]
    assert z_out[[j for j in range(16) if j not in (6, 8, 12, 13)]].abs().sum().item() == 0.0
    # Inward level 0: the thorax receives all of G1 with weight 1/|G0| = 1: 7 + 9 + 13 + 14.
    assert z_in[7].item() == 43.0
    # Against an explicit double loop on a random multi-channel h.
    g = torch.Generator().manual_seed(0)
    h = torch.randn(2, 3, 4, 16, generator=g)
    m = torch.randn(16, 16, generator=g)
    loop = torch.zeros_like(h)
    for v in range(16):
        for u in range(16):
            loop[..., v] += m[v, u] * h[..., u]
    torch.testing.assert_close(aggregate(h, m), loop)


def test_graph_conv_aggregates_its_own_learnable_copy_of_a() -> None:
    model = _model()
    gcn = model.l2.gcn1
    assert isinstance(gcn.PA, nn.Parameter) and gcn.PA.requires_grad
    assert torch.equal(gcn.PA, build_graph(hierarchy_groups()))
    assert model.l2.gcn1.PA.data_ptr() != model.l3.gcn1.PA.data_ptr()  # one copy per layer
    with torch.no_grad():
        gcn.PA.add_(torch.randn_like(gcn.PA))  # unconstrained: any values are used as they are
    seen: dict[str, torch.Tensor] = {}
    gcn.conv_down[2].register_forward_hook(lambda m, i, o: seen.__setitem__("h", o))
    gcn.conv[2][1].register_forward_pre_hook(lambda m, i: seen.__setitem__("z", i[0]))
    with torch.no_grad():
        gcn(torch.randn(2, 64, 4, 16))
    h = seen["h"]
    expected = torch.zeros_like(h)
    for v in range(16):
        for u in range(16):
            expected[..., v] += gcn.PA[2, 1, v, u] * h[..., u]
    torch.testing.assert_close(seen["z"], expected)


# ---------------------------------------------------------------- EdgeConv


def test_knn_includes_self_and_orders_by_distance() -> None:
    x = torch.tensor([[[0.0, 1.0, 3.0, 10.0]]])  # (N=1, C=1, V=4): points on a line
    assert knn(x, 1)[0].tolist() == [[0], [1], [2], [3]]
    assert knn(x, 2)[0].tolist() == [[0, 1], [1, 0], [2, 1], [3, 2]]


def test_edgeconv_k1_is_a_conv_on_zero_and_x() -> None:
    torch.manual_seed(0)
    edge = EdgeConv(4, 6, k=1)
    with torch.no_grad():
        edge.conv[1].weight.uniform_(0.5, 1.5)
        edge.conv[1].bias.normal_()
    x = torch.randn(3, 4, 5)  # (N, C, L): AHA's 4-level case, with 5 nodes
    y = edge(x)
    # Direct: 1×1 conv on [0; x], BN with batch statistics over (N, L), LeakyReLU(0.2).
    w = edge.conv[0].weight[:, :, 0, 0]  # (6, 8)
    pre = torch.einsum("oc,ncl->nol", w, torch.cat([torch.zeros_like(x), x], dim=1))
    mean = pre.mean(dim=(0, 2), keepdim=True)
    var = pre.var(dim=(0, 2), unbiased=False, keepdim=True)
    bn = edge.conv[1]
    direct = (pre - mean) / torch.sqrt(var + bn.eps) * bn.weight[:, None] + bn.bias[:, None]
    torch.testing.assert_close(y, F.leaky_relu(direct, 0.2))
    # The neighbour-minus-centre half of the weight never matters with k = 1.
    with torch.no_grad():
        edge.conv[0].weight[:, :4] = 123.0
    torch.testing.assert_close(edge(x), y)


def test_edgeconv_over_all_joints_is_max_of_edge_mlp_and_broadcast_over_time() -> None:
    torch.manual_seed(0)
    edge = EdgeConv(3, 5, k=16).eval()
    h = torch.randn(2, 3, 4, 16)  # (N, C, T, V)
    y = edge(h)
    assert y.shape == (2, 5, 4, 16)
    assert torch.equal(y, y[:, :, :1].expand_as(y))  # the same for every frame
    nodes = h.mean(dim=2)  # (N, C, V)
    expected = torch.full((2, 5, 16), -math.inf)
    for v in range(16):
        for u in range(16):
            feat = torch.cat([nodes[:, :, u] - nodes[:, :, v], nodes[:, :, v]], dim=1)  # (N, 2C)
            out = edge.conv(feat[:, :, None, None])[:, :, 0, 0]  # conv + BN (running stats) + LeakyReLU
            expected[:, :, v] = torch.maximum(expected[:, :, v], out)
    torch.testing.assert_close(y[:, :, 0], expected)


# ---------------------------------------------------------------- AHA (correct vs reference groups)


def test_aha_level_joint_sets_correct_and_reference() -> None:
    groups = hierarchy_groups()
    correct = aha_level_joints(groups)
    reference = aha_level_joints(groups, reference=True)
    assert [set(j) for j in correct] == [G[i] | G[i + 1] for i in range(4)]
    assert [set(j) for j in reference] == [G_REF[i] | G_REF[i + 1] for i in range(4)]
    assert reference[3] == (9, 14, 0, 3, 4, 15)  # G3 {10,15,1,4} → {9,14,0,3}; G4 {5,0} → {4,15}
    assert set(reference[0]) == {6, 5, 7, 11, 12}
    for flag, want in ((False, correct), (True, reference)):
        model = _model(reference_groups=flag)
        assert model.l1.gcn1.aha is None  # l1 sums its levels
        for unit in model.units[1:]:
            assert unit.gcn1.aha is not None and unit.gcn1.aha.level_joints == want
        # The graph tensor itself is the same either way (the reference builds A correctly).
        assert torch.equal(model.l2.gcn1.PA, build_graph(groups))


@pytest.mark.parametrize("reference", [False, True])
def test_aha_attention_for_a_level_reads_only_that_levels_joints(reference: bool) -> None:
    torch.manual_seed(0)
    level_joints = aha_level_joints(hierarchy_groups(), reference=reference)
    aha = AHA(16, level_joints).eval()  # eval: BN per position, so levels and joints do not mix
    y = torch.randn(2, 16, 4, 3, 16)
    base = aha.attention(y)
    assert base.shape == (2, 16, 4) and bool(((base > 0) & (base < 1)).all())
    for i, joints in enumerate(level_joints):
        outside = [v for v in range(16) if v not in joints]
        y_out = y.clone()
        y_out[:, :, i, :, outside] += 5.0
        torch.testing.assert_close(aha.attention(y_out)[:, :, i], base[:, :, i], rtol=0, atol=0)
        y_in = y.clone()
        y_in[:, :, i, :, list(joints)] += 5.0
        assert not torch.allclose(aha.attention(y_in)[:, :, i], base[:, :, i])
    # Output: Σ_i Y[:, :, i] · a[:, :, i].
    torch.testing.assert_close(aha(y), (y * base[..., None, None]).sum(dim=2))


def test_correct_and_reference_groups_give_different_outputs() -> None:
    correct, reference = _model(), _model(reference_groups=True)
    state, state_ref = correct.state_dict(), reference.state_dict()
    assert state.keys() == state_ref.keys()
    assert all(torch.equal(v, state_ref[k]) for k, v in state.items())  # same weights
    y = torch.randn(2, 64, 4, 3, 16)
    a_correct = correct.l2.gcn1.aha
    a_reference = reference.l2.gcn1.aha
    assert a_correct is not None and a_reference is not None
    assert (a_correct(y) - a_reference(y)).abs().max().item() > 1e-3
    for model in (correct, reference):  # as after training, so AHA is not damped by γ = 1e-6
        for unit in model.units:
            nn.init.ones_(unit.gcn1.bn.weight)
    x = _poses()
    diff = (correct(x).features - reference(x).features).abs().max().item()
    assert diff > 1e-3


# ---------------------------------------------------------------- network structure and initialisation


def test_parameter_count_matches_spec() -> None:
    model = _model()
    assert sum(p.numel() for p in model.parameters()) == 182_156  # spec §14.1
    assert sum(p.numel() for p in model.fc.parameters()) == 7_740  # 128 · 60 + 60
    clean = _model(num_classes=52)
    assert sum(p.numel() for p in clean.parameters()) == 182_156 - 7_740 + 128 * 52 + 52


def test_units_channels_and_shortcuts() -> None:
    model = _model()
    want = [(2, 64, "none"), (64, 64, "identity"), (64, 64, "identity"), (64, 64, "identity")]
    want.append((64, 128, "conv"))
    for unit, (cin, cout, shortcut) in zip(model.units, want, strict=True):
        assert unit.gcn1.conv_down[0][0].in_channels == cin
        assert unit.gcn1.bn.num_features == cout
        assert unit.shortcut == shortcut
        assert len(unit.gcn1.conv_down) == 4 and all(len(level) == 4 for level in unit.gcn1.conv)
    # The graph conv's own residual exists in l1 (2 → 64) and l5 (64 → 128) as Conv1×1 + BN.
    assert isinstance(model.l1.gcn1.down, nn.Sequential) and isinstance(model.l5.gcn1.down, nn.Sequential)
    assert isinstance(model.l2.gcn1.down, nn.Identity)
    assert model.data_bn.num_features == 32
    assert [branch[-1].__class__.__name__ for branch in model.l3.tcn1.branches] == [
        "TemporalConv",
        "TemporalConv",
        "BatchNorm2d",
        "BatchNorm2d",
    ]
    assert [model.l3.tcn1.branches[i][-1].conv.dilation for i in (0, 1)] == [(1, 1), (2, 1)]


def test_initialisation_follows_spec() -> None:
    model = _model()
    for unit in model.units:
        gcn = unit.gcn1
        assert torch.equal(gcn.bn.weight, torch.full((gcn.bn.num_features,), 1e-6))
        assert not gcn.bn.bias.any()
        for name, m in gcn.named_modules():
            if isinstance(m, nn.BatchNorm2d) and m is not gcn.bn:
                assert bool((m.weight == 1).all()) and not m.bias.any(), name
            if isinstance(m, nn.Conv2d) and m.bias is not None:
                assert not m.bias.any(), name
        if gcn.aha is not None:  # AHA's Conv1d keeps PyTorch's default (uniform) initialisation
            bound = 1 / math.sqrt(gcn.aha.aggregate.in_channels)
            assert gcn.aha.aggregate.bias.any() and gcn.aha.aggregate.weight.abs().max() <= bound
        mstcn_gammas = torch.cat([m.weight for m in unit.tcn1.modules() if isinstance(m, nn.BatchNorm2d)])
        assert 0 < mstcn_gammas.std().item() < 0.05 and abs(mstcn_gammas.mean().item() - 1) < 0.01
        assert all(not branch[-1].bias.any() for branch in unit.tcn1.branches[:2])
    assert model.l5.residual is not None and bool((model.l5.residual.bn.weight == 1).all())
    assert bool((model.data_bn.weight == 1).all())
    assert model.fc.weight.std().item() == pytest.approx(math.sqrt(2 / 60), rel=0.05)
    edge_w = model.l2.gcn1.conv[0][3].conv[0].weight  # Kaiming-normal fan_out: std √(2 / fan_out)
    assert edge_w.std().item() == pytest.approx(math.sqrt(2 / edge_w.shape[0]), rel=0.2)


def test_each_unit_starts_near_its_shortcut() -> None:
    model = _model().eval()
    x = torch.relu(torch.randn(2, 64, T, 16))  # a previous unit's output is non-negative
    with torch.no_grad():
        torch.testing.assert_close(model.l2.gcn1(x), x, rtol=0, atol=1e-4)
        torch.testing.assert_close(model.l2(x), torch.relu(model.l2.tcn1(x) + x), rtol=0, atol=1e-3)


def test_mstcn_keeps_shape_and_has_no_residual() -> None:
    torch.manual_seed(0)
    tcn = MSTCN(8).eval()
    for branch in tcn.branches:
        for m in branch.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.zeros_(m.weight)
    x = torch.randn(2, 8, 7, 16)
    assert tcn(x).shape == x.shape
    with torch.no_grad():
        y = tcn(x)
    # With every conv weight zero the output no longer depends on x (no hidden x + … term).
    torch.testing.assert_close(y, tcn(torch.randn(2, 8, 7, 16)))


# ---------------------------------------------------------------- forward: layout, outputs, gradients


def test_data_bn_channel_index_is_v_times_2_plus_c() -> None:
    model = _model().eval()
    with torch.no_grad():
        model.data_bn.weight.copy_(torch.arange(32, dtype=torch.float32))
    seen: dict[str, torch.Tensor] = {}
    model.l1.register_forward_pre_hook(lambda m, i: seen.__setitem__("x", i[0]))
    model(torch.ones(2, 2, 3, 16, 1))
    x = seen["x"]  # (N·M, C, T, V)
    scale = 1 / math.sqrt(1 + model.data_bn.eps)
    for v in range(16):
        for c in range(2):
            torch.testing.assert_close(x[:, c, :, v], torch.full((2, 3), (v * 2 + c) * scale))


def test_output_shapes_and_pooling() -> None:
    model = _model()
    seen: dict[str, torch.Tensor] = {}
    model.l5.register_forward_hook(lambda m, i, o: seen.__setitem__("l5", o))
    out = model(_poses())
    assert isinstance(out, SkeletonOutput)
    assert out.features.shape == (2, 128, T) and out.dn_logits.shape == (2, 60)
    l5 = seen["l5"]  # (N, 128, T, V)
    torch.testing.assert_close(out.features, l5.mean(dim=3))
    torch.testing.assert_close(out.dn_logits, model.fc(l5.mean(dim=(2, 3))))
    with pytest.raises(dataclasses.FrozenInstanceError):
        out.features = out.features  # type: ignore[misc]
    assert _model(num_classes=52)(_poses()).dn_logits.shape == (2, 52)


def test_gradient_reaches_every_parameter_but_the_classifier() -> None:
    model = _model()
    for train in (True, False):
        model.train(train)
        model.zero_grad(set_to_none=True)
        model(_poses()).features.square().mean().backward()
        for name, p in model.named_parameters():
            if name.startswith("fc."):
                assert p.grad is None, name
                continue
            assert p.grad is not None and bool(torch.isfinite(p.grad).all()), name
            if not train:  # (train-mode BN cancels the bias right before it; eval mode does not)
                assert p.grad.abs().sum().item() > 0, name


@pytest.mark.parametrize(
    "shape",
    [(2, 2, T, 16), (2, 3, T, 16, 1), (2, 2, T, 17, 1), (2, 2, T, 16, 2), (2, 2, T, 16, 1, 1)],
)
def test_bad_input_shapes_raise_with_the_shape(shape: tuple[int, ...]) -> None:
    model = _model()
    with pytest.raises(ValueError, match=str(shape).replace("(", r"\(").replace(")", r"\)")):
        model(torch.zeros(shape))


def _devices() -> list[str]:
    return ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])


@pytest.mark.parametrize("device", _devices())
def test_runs_on_the_device_of_its_inputs(device: str) -> None:
    """No device-specific calls: the same code runs wherever the module and input are."""
    model = _model(reference_groups=True).to(device)
    out = model(_poses().to(device))
    assert out.features.device.type == device and out.dn_logits.device.type == device
    assert bool(torch.isfinite(out.features).all())
