"""Hierarchical skeletal encoder: HD-GCN on the 16-joint FineDiving-Pose skeleton, spec §4.

- :func:`hierarchy_groups`: the five joint groups G0..G4 around the centre of mass (spec §1.4).
- :func:`build_graph`: the hierarchical graph tensor ``A (4, 3, 16, 16)``, ``M[dst, src]`` (spec §4.1).
- :func:`aha_level_joints`: the joint set ``G_i ∪ G_{i+1}`` that level attention pools for each level,
  correct or with the reference's off-by-one (spec §13 item 10).
- :class:`EdgeConv`, :class:`AHA`, :class:`HDGconv`, :class:`MSTCN`, :class:`TCNGCNUnit`: the parts.
- :class:`HDGCN`: ``(N, 2, T, 16, 1)`` poses → :class:`SkeletonOutput` with ``F_sk (N, 128, T)`` and the
  auxiliary dive-number logits ``(N, num_classes)``.
- :func:`build_hdgcn`: the keyword-only builder.

Module and parameter names follow the reference ``models/HDGCN.py`` (``data_bn``, ``l1.gcn1.PA``,
``l2.gcn1.conv.0.3.conv.0.weight``, ``l5.residual.conv.weight``, ``fc``, …), so a reference state dict
loads strictly once its duplicate ``l*.gcn1.conv_d.*`` keys are dropped (the reference also registers
the last level's branch list under that second name; the tensors are the same as ``l*.gcn1.conv.3.*``).

Initialisation follows the reference code (spec §4.3): inside a graph conv every ``Conv2d`` (AHA's
``conv_down`` included, since the reference's init loop runs over the whole graph conv after AHA is
built) gets Kaiming-normal (fan_out) with bias 0 and every ``BatchNorm2d`` γ = 1, β = 0; only AHA's
``Conv1d`` (``aggregate``) keeps PyTorch's default initialisation.

Device: nothing here names a device; index tensors are made on ``x.device`` and constant buffers move
with the module, so the same code runs on CPU and CUDA (the reference's ``get_device()`` broke on CPU,
spec §13 item 9). All operations are out of place.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

NUM_JOINTS = 16
"""V: joints per skeleton, MPII order (spec §1.4)."""
NUM_SUBSETS = 3
"""Subsets per level: identity, outward, inward (spec §4.1)."""
BASE_CHANNELS = 64
"""The reference's width c of units l1–l4 (l5 has 2c)."""
FEATURE_DIM = 2 * BASE_CHANNELS
"""Channels of ``F_sk`` (the output of l5) at the reference width."""
GCN_EDGE_K = 5
"""Neighbours of the EdgeConv inside each graph conv."""
AHA_EDGE_K = 1
"""Neighbours of the EdgeConv over the 4 levels inside AHA (the node itself)."""
FINAL_BN_GAMMA = 1e-6
"""γ of the last BatchNorm of every graph conv, so each unit starts close to its shortcut (spec §4.3)."""

Groups = tuple[tuple[int, ...], ...]


def hierarchy_groups(com: int = 7) -> Groups:
    """The five 0-based joint groups G0..G4, ordered outward from the centre of mass (spec §1.4).

    Only CoM = 7 (thorax) is defined for the 16-joint skeleton; the order inside a group is the
    reference's (it only matters for the order of AHA's index lists, never for a result).

    Raises:
        ValueError: ``com`` is not 7.
    """
    if com != 7:
        raise ValueError(f"only CoM = 7 (thorax) is defined for the 16-joint skeleton, got com={com}")
    return ((7,), (6, 8, 12, 13), (9, 14, 2, 3, 11), (10, 15, 1, 4), (5, 0))


def _check_groups(groups: Sequence[Sequence[int]], num_joints: int) -> None:
    if len(groups) < 2:
        raise ValueError(f"need at least 2 groups, got {len(groups)}")
    flat = [j for g in groups for j in g]
    if any(not 0 <= j < num_joints for j in flat) or len(set(flat)) != len(flat):
        raise ValueError(f"groups must be disjoint joint indices in [0, {num_joints}), got {groups}")


def build_graph(groups: Sequence[Sequence[int]], *, num_joints: int = NUM_JOINTS) -> torch.Tensor:
    """The hierarchical graph tensor, one edge set per pair of consecutive groups (spec §4.1).

    Entries are ``M[dst, src]``; for level ``i`` (groups ``G_i``, ``G_{i+1}``):

    - ``A[i, 0]`` identity: 1 on the diagonal for every joint of ``G_i ∪ G_{i+1}``, not normalised;
    - ``A[i, 1]`` outward: ``M[k, u] = 1 / |G_{i+1}|`` for ``u ∈ G_i``, ``k ∈ G_{i+1}``;
    - ``A[i, 2]`` inward: ``M[u, k] = 1 / |G_i|`` for ``k ∈ G_{i+1}``, ``u ∈ G_i``;

    i.e. the 0/1 edge matrices column-normalised (each source column sums to 1).

    Returns:
        float32 ``(len(groups) − 1, 3, V, V)``; ``(4, 3, 16, 16)`` for :func:`hierarchy_groups`.
    """
    _check_groups(groups, num_joints)
    num_levels = len(groups) - 1
    a = torch.zeros(num_levels, NUM_SUBSETS, num_joints, num_joints)
    for i in range(num_levels):
        inner, outer = list(groups[i]), list(groups[i + 1])
        for j in inner + outer:
            a[i, 0, j, j] = 1.0
        for u in inner:
            for k in outer:
                a[i, 1, k, u] = 1.0  # outward: source u ∈ G_i → destination k ∈ G_{i+1}
                a[i, 2, u, k] = 1.0  # inward: source k ∈ G_{i+1} → destination u ∈ G_i
        for j in (1, 2):
            col_sums = a[i, j].sum(dim=0, keepdim=True)  # (1, V): per source
            a[i, j] = torch.where(col_sums > 0, a[i, j] / col_sums.clamp_min(1.0), a[i, j])
    return a


def aha_level_joints(
    groups: Sequence[Sequence[int]], *, reference: bool = False, num_joints: int = NUM_JOINTS
) -> Groups:
    """For each level ``i``, the joints AHA averages over: ``G_i ∪ G_{i+1}`` (spec §4.2, AHA step 3).

    With ``reference=True`` every index is shifted by −1 first, as the reference code does to groups
    that are already 0-based (spec §13 item 10); −1 wraps to the last joint as a negative index would,
    so G4 = {5, 0} becomes {4, 15}.
    """
    _check_groups(groups, num_joints)
    shift = -1 if reference else 0
    shifted = [tuple((j + shift) % num_joints for j in g) for g in groups]
    return tuple(shifted[i] + shifted[i + 1] for i in range(len(groups) - 1))


def aggregate(h: torch.Tensor, adjacency: torch.Tensor) -> torch.Tensor:
    """Graph aggregation ``z[..., v] = Σ_u A[v, u] · h[..., u]`` (spec §4.1).

    Shapes: ``h (N, C, T, V)``, ``adjacency (V, V)`` as ``M[dst, src]`` → ``(N, C, T, V)``.
    """
    return torch.einsum("nctu,vu->nctv", h, adjacency)


def _kaiming_conv_(conv: nn.Conv2d) -> None:
    """The reference ``conv_init``: Kaiming-normal (fan_out), bias 0."""
    nn.init.kaiming_normal_(conv.weight, mode="fan_out")
    if conv.bias is not None:
        nn.init.zeros_(conv.bias)


def _bn_const_(bn: nn.BatchNorm1d | nn.BatchNorm2d, gamma: float) -> None:
    """The reference ``bn_init``: γ = ``gamma``, β = 0."""
    nn.init.constant_(bn.weight, gamma)
    nn.init.zeros_(bn.bias)


def knn(x: torch.Tensor, k: int) -> torch.Tensor:
    """Indices of the ``k`` nearest nodes of every node by squared Euclidean distance (self included).

    Distances are formed from explicit differences, so a node's distance to itself is exactly 0 (the
    reference expands ``|a|² − 2a·b + |b|²``, equal up to rounding).

    Shapes: ``x (N, C, V)`` → ``(N, V, k)`` int64, nearest first.
    """
    dist = (x.unsqueeze(-1) - x.unsqueeze(-2)).square().sum(dim=1)  # (N, V, V): dist[n, v, u]
    return dist.topk(k, dim=-1, largest=False).indices


class EdgeConv(nn.Module):
    """EdgeConv(k) over nodes (spec §4.2): kNN in feature space, ``[h_nbr − h_ctr ; h_ctr]``, 1×1 conv
    (no bias) + BN + LeakyReLU(0.2), max over the ``k`` neighbours.

    Shapes: nodes ``(N, C_in, V)`` → ``(N, C_out, V)``; or joints over time ``(N, C_in, T, V)``: averaged
    over T first, the result broadcast back to ``(N, C_out, T, V)``.
    With ``k = 1`` the neighbour is the node itself, so the edge feature is ``[0 ; h]``.
    """

    def __init__(self, in_channels: int, out_channels: int, k: int) -> None:
        super().__init__()
        if k < 1:
            raise ValueError(f"k must be positive, got {k}")
        self.k = k
        self.conv = nn.Sequential(
            nn.Conv2d(2 * in_channels, out_channels, kernel_size=1, bias=False),
            nn.BatchNorm2d(out_channels),
            nn.LeakyReLU(negative_slope=0.2),
        )
        _kaiming_conv_(self.conv[0])
        _bn_const_(self.conv[1], 1.0)

    def edge_features(self, x: torch.Tensor) -> torch.Tensor:
        """``(N, C, V)`` → ``(N, 2C, V, k)``: ``[h_nbr − h_ctr ; h_ctr]`` for the k nearest neighbours."""
        n, _, v = x.shape
        if self.k > v:
            raise ValueError(f"EdgeConv k={self.k} needs at least k nodes, got shape {tuple(x.shape)}")
        idx = knn(x, self.k)  # (N, V, k)
        nodes = x.transpose(1, 2)  # (N, V, C)
        batch = torch.arange(n, device=x.device).view(n, 1, 1)
        neighbours = nodes[batch, idx]  # (N, V, k, C)
        centres = nodes.unsqueeze(2).expand_as(neighbours)  # (N, V, k, C)
        feature = torch.cat((neighbours - centres, centres), dim=3)  # (N, V, k, 2C)
        return feature.permute(0, 3, 1, 2)  # (N, 2C, V, k)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``(N, C_in, V)`` → ``(N, C_out, V)``, or ``(N, C_in, T, V)`` → ``(N, C_out, T, V)``."""
        if x.dim() == 4:
            t = x.shape[2]
            y = self._nodes(x.mean(dim=2))  # (N, C_out, V)
            return y.unsqueeze(2).expand(-1, -1, t, -1)  # (N, C_out, T, V)
        if x.dim() == 3:
            return self._nodes(x)
        raise ValueError(f"EdgeConv expects (N, C, V) or (N, C, T, V), got shape {tuple(x.shape)}")

    def _nodes(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(self.edge_features(x)).amax(dim=-1)  # (N, C_out, V)


class AHA(nn.Module):
    """Attentive hierarchical aggregation: level attention over the stacked levels (spec §4.2).

    ``level_joints[i]`` is the joint set averaged for level ``i`` (see :func:`aha_level_joints`).
    Shapes: ``Y (N, C, L, T, V)`` → ``(N, C, T, V)``.
    """

    level_pool: torch.Tensor

    def __init__(
        self, channels: int, level_joints: Sequence[Sequence[int]], *, num_joints: int = NUM_JOINTS
    ) -> None:
        super().__init__()
        if channels % 4:
            raise ValueError(f"AHA needs channels divisible by 4, got {channels}")
        inter = channels // 4
        self.level_joints: Groups = tuple(tuple(j) for j in level_joints)
        self.conv_down = nn.Sequential(
            nn.Conv2d(channels, inter, kernel_size=1), nn.BatchNorm2d(inter), nn.ReLU()
        )
        self.edge_conv = EdgeConv(inter, inter, k=AHA_EDGE_K)
        self.aggregate = nn.Conv1d(inter, channels, kernel_size=1)
        # (L, V) averaging weights: 1/|joints_i| on level i's joints; a constant that moves with .to().
        pool = torch.zeros(len(self.level_joints), num_joints)
        for i, joints in enumerate(self.level_joints):
            pool[i, list(joints)] = 1.0 / len(joints)
        self.register_buffer("level_pool", pool, persistent=False)

    def attention(self, y: torch.Tensor) -> torch.Tensor:
        """Level weights ``a ∈ (0, 1)``: ``(N, C, L, T, V)`` → ``(N, C, L)``."""
        if y.dim() != 5 or y.shape[2] != self.level_pool.shape[0] or y.shape[4] != self.level_pool.shape[1]:
            raise ValueError(
                f"AHA expects (N, C, {self.level_pool.shape[0]}, T, {self.level_pool.shape[1]}), "
                f"got shape {tuple(y.shape)}"
            )
        y_t = self.conv_down(y.amax(dim=3))  # (N, C/4, L, V): max over T
        sampled = torch.einsum("nclv,lv->ncl", y_t, self.level_pool)  # (N, C/4, L): mean over level joints
        return torch.sigmoid(self.aggregate(self.edge_conv(sampled)))  # (N, C, L)

    def forward(self, y: torch.Tensor) -> torch.Tensor:
        """``(N, C, L, T, V)`` → ``(N, C, T, V)``: ``Σ_i Y[:, :, i] · a[:, :, i]``."""
        a = self.attention(y)
        return (y * a[..., None, None]).sum(dim=2)


class HDGconv(nn.Module):
    """Hierarchically decomposed graph conv ``C_in → C_out`` (spec §4.2).

    Per level ``i``: ``h_i = ReLU(BN(Conv1×1(x)))`` with ``C_out/4`` channels; three subset branches
    ``BN(Conv1×1(aggregate(h_i, A[i, j])))`` and ``EdgeConv_5(h_i)``, concatenated to ``C_out``. The levels
    are combined by AHA (``attention=True``) or summed, then BN (γ = 1e-6), plus the residual (identity,
    or Conv1×1 + BN when ``C_in ≠ C_out``), then ReLU. ``PA`` is this layer's learnable copy of A.

    Shapes: ``(N, C_in, T, V)`` → ``(N, C_out, T, V)``.
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        graph: torch.Tensor,
        *,
        attention: bool,
        level_joints: Sequence[Sequence[int]] | None = None,
    ) -> None:
        super().__init__()
        num_levels, num_subsets, v, _ = graph.shape
        if out_channels % (num_subsets + 1):
            raise ValueError(f"out_channels must be divisible by {num_subsets + 1}, got {out_channels}")
        inter = out_channels // (num_subsets + 1)
        self.in_channels = in_channels
        self.PA = nn.Parameter(graph.detach().clone().float())
        self.conv_down = nn.ModuleList(
            nn.Sequential(nn.Conv2d(in_channels, inter, kernel_size=1), nn.BatchNorm2d(inter), nn.ReLU())
            for _ in range(num_levels)
        )
        self.conv = nn.ModuleList(
            nn.ModuleList(
                [
                    *(
                        nn.Sequential(nn.Conv2d(inter, inter, kernel_size=1), nn.BatchNorm2d(inter))
                        for _ in range(num_subsets)
                    ),
                    EdgeConv(inter, inter, k=GCN_EDGE_K),
                ]
            )
            for _ in range(num_levels)
        )
        self.aha: AHA | None = None
        if attention:
            if level_joints is None:
                raise ValueError("attention=True needs level_joints")
            self.aha = AHA(out_channels, level_joints, num_joints=v)
        self.down: nn.Module = (
            nn.Sequential(nn.Conv2d(in_channels, out_channels, kernel_size=1), nn.BatchNorm2d(out_channels))
            if in_channels != out_channels
            else nn.Identity()
        )
        self.bn = nn.BatchNorm2d(out_channels)
        # Reference order: every Conv2d / BatchNorm2d below this layer (AHA's included) gets conv_init /
        # bn_init(1); AHA's Conv1d keeps PyTorch's default; then the final BN gets γ = 1e-6.
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                _kaiming_conv_(m)
            elif isinstance(m, nn.BatchNorm2d):
                _bn_const_(m, 1.0)
        _bn_const_(self.bn, FINAL_BN_GAMMA)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``(N, C_in, T, V)`` → ``(N, C_out, T, V)``."""
        levels = []
        for i, (down, branches) in enumerate(zip(self.conv_down, self.conv, strict=True)):
            h = down(x)  # (N, C_out/4, T, V)
            subsets = [branch(aggregate(h, self.PA[i, j])) for j, branch in enumerate(branches[:-1])]
            levels.append(torch.cat([*subsets, branches[-1](h)], dim=1))  # (N, C_out, T, V)
        y = torch.stack(levels, dim=2)  # (N, C_out, L, T, V)
        y = self.aha(y) if self.aha is not None else y.sum(dim=2)  # (N, C_out, T, V)
        return F.relu(self.bn(y) + self.down(x))


class TemporalConv(nn.Module):
    """Temporal conv (k×1, dilation d, "same" padding, no bias) + a separate per-channel bias, then BN.

    Shapes: ``(N, C, T, V)`` → ``(N, C, T, V)``.
    """

    def __init__(self, channels: int, kernel_size: int, dilation: int) -> None:
        super().__init__()
        pad = (kernel_size + (kernel_size - 1) * (dilation - 1) - 1) // 2
        self.conv = nn.Conv2d(
            channels, channels, (kernel_size, 1), padding=(pad, 0), dilation=(dilation, 1), bias=False
        )
        self.bias = nn.Parameter(torch.zeros(1, channels, 1, 1))
        self.bn = nn.BatchNorm2d(channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``(N, C, T, V)`` → ``(N, C, T, V)``."""
        return self.bn(self.conv(x) + self.bias)


class MSTCN(nn.Module):
    """Multi-scale temporal conv ``C → C``, kernel 5, dilations (1, 2), no internal residual (spec §4.2).

    Four branches of ``C/4`` channels, concatenated: 1×1+BN+ReLU → TemporalConv(d=1); the same with d=2;
    1×1+BN+ReLU → max-pool 3×1 → BN; 1×1+BN.
    Init: Kaiming-normal (fan_out) convs with bias 0, BN γ ~ N(1, 0.02), β = 0.

    Shapes: ``(N, C, T, V)`` → ``(N, C, T, V)``.
    """

    def __init__(self, channels: int, *, kernel_size: int = 5, dilations: Sequence[int] = (1, 2)) -> None:
        super().__init__()
        num_branches = len(dilations) + 2
        if channels % num_branches:
            raise ValueError(f"MSTCN channels must be divisible by {num_branches}, got {channels}")
        c = channels // num_branches

        def pointwise() -> list[nn.Module]:
            return [nn.Conv2d(channels, c, kernel_size=1), nn.BatchNorm2d(c)]

        self.branches = nn.ModuleList(
            nn.Sequential(*pointwise(), nn.ReLU(), TemporalConv(c, kernel_size, d)) for d in dilations
        )
        self.branches.append(
            nn.Sequential(
                *pointwise(), nn.ReLU(), nn.MaxPool2d((3, 1), stride=1, padding=(1, 0)), nn.BatchNorm2d(c)
            )
        )
        self.branches.append(nn.Sequential(*pointwise()))
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                _kaiming_conv_(m)
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.normal_(m.weight, 1.0, 0.02)
                nn.init.zeros_(m.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``(N, C, T, V)`` → ``(N, C, T, V)``."""
        return torch.cat([branch(x) for branch in self.branches], dim=1)


class ResidualConv(nn.Module):
    """The unit shortcut when channels change: Conv1×1 (with bias) + BN.

    Shapes: ``(N, C_in, T, V)`` → ``(N, C_out, T, V)``.
    """

    def __init__(self, in_channels: int, out_channels: int) -> None:
        super().__init__()
        self.conv = nn.Conv2d(in_channels, out_channels, kernel_size=1)
        self.bn = nn.BatchNorm2d(out_channels)
        _kaiming_conv_(self.conv)
        _bn_const_(self.bn, 1.0)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``(N, C_in, T, V)`` → ``(N, C_out, T, V)``."""
        return self.bn(self.conv(x))


class TCNGCNUnit(nn.Module):
    """One TCN-GCN unit: ``ReLU(MSTCN(HDGconv(x)) + shortcut(x))`` (spec §4.2).

    The shortcut is none (``residual=False``), the identity (``C_in = C_out``) or :class:`ResidualConv`.
    Shapes: ``(N, C_in, T, V)`` → ``(N, C_out, T, V)``.
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        graph: torch.Tensor,
        *,
        attention: bool,
        residual: bool = True,
        level_joints: Sequence[Sequence[int]] | None = None,
    ) -> None:
        super().__init__()
        self.gcn1 = HDGconv(in_channels, out_channels, graph, attention=attention, level_joints=level_joints)
        self.tcn1 = MSTCN(out_channels)
        self.shortcut = "none" if not residual else "identity" if in_channels == out_channels else "conv"
        self.residual = ResidualConv(in_channels, out_channels) if self.shortcut == "conv" else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``(N, C_in, T, V)`` → ``(N, C_out, T, V)``."""
        y = self.tcn1(self.gcn1(x))
        if self.residual is not None:
            y = y + self.residual(x)
        elif self.shortcut == "identity":
            y = y + x
        return F.relu(y)


@dataclass(frozen=True)
class SkeletonOutput:
    """What :class:`HDGCN` returns."""

    features: torch.Tensor
    """``F_sk (N, 128, T)``: l5's output averaged over joints (and persons), the per-frame feature."""
    dn_logits: torch.Tensor
    """``(N, num_classes)``: dive-number logits from the mean over (T, V) (spec §4.2, §13 item 2)."""


class HDGCN(nn.Module):
    """HD-GCN skeletal encoder (spec §4): data BN → units l1..l5 → ``F_sk`` and dive-number logits.

    ``reference_groups=True`` reproduces the reference's AHA joint groups shifted by −1 (spec §13
    item 10); the graph tensor itself always uses the correct groups (the reference builds A correctly).
    ``num_classes`` is 60 in the reference (labels 1..52); 52 with labels 0..51 is the clean choice.

    Shapes: ``(N, C=in_channels, T, V=16, M=num_person)`` → :class:`SkeletonOutput`.
    """

    def __init__(
        self,
        *,
        in_channels: int = 2,
        num_classes: int = 60,
        num_person: int = 1,
        reference_groups: bool = False,
        com: int = 7,
        base_channels: int = BASE_CHANNELS,
    ) -> None:
        super().__init__()
        if num_classes < 1:
            raise ValueError(f"num_classes must be positive, got {num_classes}")
        if base_channels < 8 or base_channels % 8:
            raise ValueError(f"HD-GCN base_channels must be a positive multiple of 8, got {base_channels}")
        self.in_channels = in_channels
        self.num_classes = num_classes
        self.num_person = num_person
        self.reference_groups = reference_groups
        groups = hierarchy_groups(com)
        graph = build_graph(groups)  # (4, 3, 16, 16)
        joints = aha_level_joints(groups, reference=reference_groups)
        self.data_bn = nn.BatchNorm1d(num_person * in_channels * NUM_JOINTS)
        c = base_channels
        self.feature_dim = 2 * c
        self.l1 = TCNGCNUnit(in_channels, c, graph, attention=False, residual=False)
        self.l2 = TCNGCNUnit(c, c, graph, attention=True, level_joints=joints)
        self.l3 = TCNGCNUnit(c, c, graph, attention=True, level_joints=joints)
        self.l4 = TCNGCNUnit(c, c, graph, attention=True, level_joints=joints)
        self.l5 = TCNGCNUnit(c, 2 * c, graph, attention=True, level_joints=joints)
        self.fc = nn.Linear(self.feature_dim, num_classes)
        nn.init.normal_(self.fc.weight, 0.0, math.sqrt(2.0 / num_classes))  # bias: PyTorch default
        _bn_const_(self.data_bn, 1.0)

    @property
    def units(self) -> tuple[TCNGCNUnit, ...]:
        """``(l1, l2, l3, l4, l5)``."""
        return (self.l1, self.l2, self.l3, self.l4, self.l5)

    def forward(self, x: torch.Tensor) -> SkeletonOutput:
        """``(N, C, T, V, M)`` poses → ``features (N, 2c, T)`` (2c = 128 by default), ``dn_logits``.

        Raises:
            ValueError: ``x`` is not 5-D with ``C = in_channels``, ``V = 16`` and ``M = num_person``.
        """
        if (
            x.dim() != 5
            or x.shape[1] != self.in_channels
            or x.shape[3] != NUM_JOINTS
            or x.shape[4] != self.num_person
        ):
            raise ValueError(
                f"HDGCN expects (N, {self.in_channels}, T, {NUM_JOINTS}, {self.num_person}), "
                f"got shape {tuple(x.shape)}"
            )
        n, c, t, v, m = x.shape
        # Data BN over channels m·V·C + v·C + c (= v·2 + c for one person with (x, y)).
        x = x.permute(0, 4, 3, 1, 2).reshape(n, m * v * c, t)  # (N, M·V·C, T)
        x = self.data_bn(x)
        x = x.view(n, m, v, c, t).permute(0, 1, 3, 4, 2).reshape(n * m, c, t, v)  # (N·M, C, T, V)
        for unit in self.units:
            x = unit(x)
        x = x.view(n, m, self.feature_dim, t, v)  # (N, M, 2c, T, V)
        features = x.mean(dim=4).mean(dim=1)  # (N, 2c, T)
        pooled = x.mean(dim=(3, 4)).mean(dim=1)  # (N, 2c)
        return SkeletonOutput(features=features, dn_logits=self.fc(pooled))


def build_hdgcn(
    *,
    in_channels: int = 2,
    num_classes: int = 60,
    reference_groups: bool = False,
    base_channels: int = BASE_CHANNELS,
) -> HDGCN:
    """The HD-GCN of spec §4 for one person on the 16-joint skeleton, CoM = 7.

    Args:
        in_channels: 2 for (x, y) poses.
        num_classes: dive-number classes; 60 as in the reference, 52 (labels 0..51) is the clean choice.
        reference_groups: reproduce the reference's −1 shift of AHA's joint groups (spec §13 item 10).
        base_channels: width c of l1–l4 (64 = reference; a multiple of 8); ``F_sk`` has 2c channels.
    """
    return HDGCN(
        in_channels=in_channels,
        num_classes=num_classes,
        reference_groups=reference_groups,
        base_channels=base_channels,
    )
