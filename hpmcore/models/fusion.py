"""Per-stage dimension reducers (spec §7.1) and pose-guided fusion, PoseAttnNet (spec §7.2).

- :class:`ChannelReducer` / :func:`build_reducers`: ``Linear(C → C+128)``, ReLU, ``Linear(C+128 → D)``,
  ReLU; one per stage and branch (I3D 1024 → 1152 → 256: 1,475,968 parameters; RegNet 368 → 496 → 256:
  310,256).
- :class:`PoseAttnNet` / :func:`build_pose_fusion`: a pre-LN transformer block whose self-attention logits
  get an additive pose prior ``w_pose · G`` (822,017 parameters at D = 256, pose 128).
- :class:`FeedForward`: the ``D → 4D (GELU) → D`` MLP shared with :mod:`hpmcore.models.decoder`.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

NUM_STAGES = 3


class ChannelReducer(nn.Sequential):
    """``Linear(C → C+extra)``, ReLU, ``Linear(C+extra → D)``, ReLU, per token (spec §7.1).

    Shapes: ``(B, F, C)`` → ``(B, F, D)``.
    """

    def __init__(self, *, in_dim: int, out_dim: int = 256, extra: int = 128) -> None:
        super().__init__(
            nn.Linear(in_dim, in_dim + extra),
            nn.ReLU(),
            nn.Linear(in_dim + extra, out_dim),
            nn.ReLU(),
        )
        self.in_dim = in_dim

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``(B, F, in_dim)`` → ``(B, F, out_dim)``."""
        if x.shape[-1] != self.in_dim:
            raise ValueError(f"reducer input: expected (..., {self.in_dim}), got shape {tuple(x.shape)}")
        return super().forward(x)


def build_reducers(
    *, in_dim: int, out_dim: int = 256, extra: int = 128, num_stages: int = NUM_STAGES
) -> nn.ModuleList:
    """One :class:`ChannelReducer` per stage (spec §7.1: 3 for I3D, 3 for RegNet)."""
    return nn.ModuleList(
        ChannelReducer(in_dim=in_dim, out_dim=out_dim, extra=extra) for _ in range(num_stages)
    )


class FeedForward(nn.Sequential):
    """``Linear(D → rD)``, GELU, ``Linear(rD → D)``, no dropout. Shapes: ``(…, D)`` → ``(…, D)``."""

    def __init__(self, dim: int, mlp_ratio: int = 4) -> None:
        super().__init__(nn.Linear(dim, mlp_ratio * dim), nn.GELU(), nn.Linear(mlp_ratio * dim, dim))


class PoseAttnNet(nn.Module):
    """Pre-LN self-attention block with an additive pose prior on the logits (spec §7.2).

    With ``x`` the stage's reduced I3D tokens and ``p`` its skeleton tokens:

    1. ``u = LN_1(x)``; ``Q, K, V = u W_q, u W_k, u W_v`` (no bias), split into ``heads`` heads.
    2. ``Π = 0.01 · p W_p + b_p``; ``G = Π Πᵀ / 64``, one ``(F, F)`` matrix shared by all heads.
    3. ``A_h = softmax(Q_h K_hᵀ / √d_h + w_pose · G)`` with the learnable scalar ``w_pose`` (init 0.001).
    4. ``x ← x + W_o concat_h(A_h V_h) + b_o``; 5. ``x ← x + MLP(LN_2(x))``.

    Args:
        dim: token width D (256).
        heads: attention heads (2, so 128 per head).
        pose_dim: skeleton token width (128), or ``None`` for the "without skeleton" ablation: no ``W_p``
            and no ``w_pose`` are built and the pose term is skipped (identical to a zero pose, which gives
            a constant ``G`` and so no change after the softmax).
        pose_scale, pose_temperature, pose_weight_init: the constants 0.01, 64 and 0.001 of the reference.
        mlp_ratio: MLP expansion (4).

    Shapes: ``x (B, F, D)``, ``pose (B, F, pose_dim)`` → ``(B, F, D)``.
    """

    def __init__(
        self,
        *,
        dim: int = 256,
        heads: int = 2,
        pose_dim: int | None = 128,
        pose_scale: float = 0.01,
        pose_temperature: float = 64.0,
        pose_weight_init: float = 1e-3,
        mlp_ratio: int = 4,
        pose_tokens: bool = False,
    ) -> None:
        super().__init__()
        if dim % heads:
            raise ValueError(f"dim {dim} is not divisible by heads {heads}")
        self.dim, self.heads, self.pose_dim = dim, heads, pose_dim
        self.pose_scale, self.pose_temperature = pose_scale, pose_temperature
        self.norm1 = nn.LayerNorm(dim)
        self.qkv = nn.Linear(dim, 3 * dim, bias=False)
        self.proj = nn.Linear(dim, dim)
        self.norm2 = nn.LayerNorm(dim)
        self.mlp = FeedForward(dim, mlp_ratio)
        if pose_dim is not None:
            self.pose_proj = nn.Linear(pose_dim, dim)
            self.pose_weight = nn.Parameter(torch.tensor(float(pose_weight_init)))
        if pose_tokens and pose_dim is None:
            raise ValueError("pose_tokens needs a pose branch (pose_dim)")
        self.pose_embed = nn.Linear(pose_dim, dim) if pose_tokens and pose_dim is not None else None

    def pose_prior(self, pose: torch.Tensor) -> torch.Tensor:
        """``G = Π Πᵀ / 64`` with ``Π = 0.01 · p W_p + b_p``: ``(B, F, pose_dim)`` → ``(B, F, F)``."""
        # Linear(0.01·p) = 0.01·p·W_pᵀ + b_p: the scale applies to the input, the bias is unscaled.
        proj = self.pose_proj(pose * self.pose_scale)  # (B, F, D)
        return proj @ proj.transpose(1, 2) / self.pose_temperature  # (B, F, F)

    def forward(self, x: torch.Tensor, pose: torch.Tensor | None = None) -> torch.Tensor:
        """``x (B, F, D)``, ``pose (B, F, pose_dim)`` or ``None`` → ``(B, F, D)``."""
        if x.dim() != 3 or x.shape[-1] != self.dim:
            raise ValueError(f"fusion input: expected (B, F, {self.dim}), got shape {tuple(x.shape)}")
        b, f, d = x.shape
        bias = None
        if self.pose_dim is not None:
            if pose is None or pose.shape != (b, f, self.pose_dim):
                got = None if pose is None else tuple(pose.shape)
                raise ValueError(f"fusion pose tokens: expected ({b}, {f}, {self.pose_dim}), got {got}")
            bias = (self.pose_weight * self.pose_prior(pose)).unsqueeze(1)  # (B, 1, F, F), all heads
        elif pose is not None:
            raise ValueError("fusion built without a pose branch (pose_dim=None) was given pose tokens")
        if self.pose_embed is not None:
            x = x + self.pose_embed(pose)  # (B, F, D): the skeleton's content joins the I3D tokens
        u = self.norm1(x)
        q, k, v = self.qkv(u).view(b, f, 3, self.heads, d // self.heads).permute(2, 0, 3, 1, 4)  # (B,h,F,dh)
        att = F.scaled_dot_product_attention(q, k, v, attn_mask=bias)  # (B, h, F, dh), scale 1/√dh
        x = x + self.proj(att.transpose(1, 2).reshape(b, f, d))  # (B, F, D)
        return x + self.mlp(self.norm2(x))


def build_pose_fusion(
    *,
    dim: int = 256,
    heads: int = 2,
    pose_dim: int | None = 128,
    mlp_ratio: int = 4,
    pose_tokens: bool = False,
    num_stages: int = NUM_STAGES,
) -> nn.ModuleList:
    """One :class:`PoseAttnNet` per stage (spec §7.2)."""
    return nn.ModuleList(
        PoseAttnNet(dim=dim, heads=heads, pose_dim=pose_dim, mlp_ratio=mlp_ratio, pose_tokens=pose_tokens)
        for _ in range(num_stages)
    )
