"""Stage-wise cross-attention decoder, ``decoder_fuser`` (spec §7.3).

One :class:`CrossAttentionDecoder` (4 pre-LN blocks, D = 256, 2 heads: 3,158,016 parameters) per branch,
shared across the 3 stages and both pair directions. A block updates the query tokens while the memory
stays fixed; every block sees the same raw memory.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from hpmcore.models.fusion import FeedForward


class CrossAttention(nn.Module):
    """Multi-head cross-attention: ``Q = q W_q``, ``K = m W_k``, ``V = m W_v`` (no bias), output projection
    with bias, softmax scale ``1/√(D/heads)``.

    Shapes: ``q (B, Fq, D)``, ``m (B, Fm, D)`` → ``(B, Fq, D)``.
    """

    def __init__(self, *, dim: int = 256, heads: int = 2) -> None:
        super().__init__()
        if dim % heads:
            raise ValueError(f"dim {dim} is not divisible by heads {heads}")
        self.dim, self.heads = dim, heads
        self.q = nn.Linear(dim, dim, bias=False)
        self.kv = nn.Linear(dim, 2 * dim, bias=False)
        self.proj = nn.Linear(dim, dim)

    def forward(self, q: torch.Tensor, m: torch.Tensor) -> torch.Tensor:
        """``q (B, Fq, D)``, ``m (B, Fm, D)`` → ``(B, Fq, D)``."""
        b, fq, d = q.shape
        fm = m.shape[1]
        dh = d // self.heads
        qh = self.q(q).view(b, fq, self.heads, dh).transpose(1, 2)  # (B, h, Fq, dh)
        k, v = self.kv(m).view(b, fm, 2, self.heads, dh).permute(2, 0, 3, 1, 4)  # (B, h, Fm, dh) each
        att = F.scaled_dot_product_attention(qh, k, v)  # (B, h, Fq, dh)
        return self.proj(att.transpose(1, 2).reshape(b, fq, d))


class DecoderBlock(nn.Module):
    """``q ← q + CrossAttn(LN_q(q), LN_m(m))``; ``q ← q + MLP(LN_2(q))`` (spec §7.3).

    Shapes: ``q (B, Fq, D)``, ``m (B, Fm, D)`` → ``(B, Fq, D)``.
    """

    def __init__(self, *, dim: int = 256, heads: int = 2, mlp_ratio: int = 4) -> None:
        super().__init__()
        self.norm_q = nn.LayerNorm(dim)
        self.norm_m = nn.LayerNorm(dim)
        self.attn = CrossAttention(dim=dim, heads=heads)
        self.norm2 = nn.LayerNorm(dim)
        self.mlp = FeedForward(dim, mlp_ratio)

    def forward(self, q: torch.Tensor, m: torch.Tensor) -> torch.Tensor:
        """``q (B, Fq, D)``, ``m (B, Fm, D)`` → ``(B, Fq, D)``."""
        q = q + self.attn(self.norm_q(q), self.norm_m(m))
        return q + self.mlp(self.norm2(q))


class CrossAttentionDecoder(nn.Module):
    """``depth`` :class:`DecoderBlock` s applied in turn to the query, each with the same raw memory.

    Shapes: ``q (B, Fq, D)``, ``m (B, Fm, D)`` → ``(B, Fq, D)``.
    """

    def __init__(self, *, dim: int = 256, heads: int = 2, depth: int = 4, mlp_ratio: int = 4) -> None:
        super().__init__()
        self.dim = dim
        self.blocks = nn.ModuleList(
            DecoderBlock(dim=dim, heads=heads, mlp_ratio=mlp_ratio) for _ in range(depth)
        )

    def forward(self, q: torch.Tensor, m: torch.Tensor) -> torch.Tensor:
        """``q (B, Fq, D)``, ``m (B, Fm, D)`` → ``(B, Fq, D)``."""
        if q.dim() != 3 or m.dim() != 3 or q.shape[-1] != self.dim or m.shape[-1] != self.dim:
            raise ValueError(
                f"decoder: expected q (B, Fq, {self.dim}) and m (B, Fm, {self.dim}), "
                f"got shapes {tuple(q.shape)} and {tuple(m.shape)}"
            )
        if q.shape[0] != m.shape[0]:
            raise ValueError(f"decoder: batch sizes differ, q {tuple(q.shape)} vs m {tuple(m.shape)}")
        for block in self.blocks:
            q = block(q, m)
        return q


def build_decoder(
    *, dim: int = 256, heads: int = 2, depth: int = 4, mlp_ratio: int = 4
) -> CrossAttentionDecoder:
    """The ``decoder_fuser`` of spec §7.3 (one per branch)."""
    return CrossAttentionDecoder(dim=dim, heads=heads, depth=depth, mlp_ratio=mlp_ratio)


def decode_stages(
    decoder: CrossAttentionDecoder, x: torch.Tensor, y: torch.Tensor, *, num_stages: int = 3
) -> torch.Tensor:
    """Stage-wise decoding in both pair directions with one decoder call (spec §7.3).

    For each stage k, ``dec(x_k, y_k)`` (query → exemplar) and ``dec(y_k, x_k)`` (exemplar → query), where
    ``x_k`` is tokens ``kF … kF+F−1``. Attention never crosses stages: stages and directions are folded
    into the batch.

    Shapes: ``x, y (B, KF, D)`` → ``(2B, KF, D)``: rows ``0..B−1`` hold x→y, rows ``B..2B−1`` y→x.
    """
    if x.shape != y.shape or x.dim() != 3 or x.shape[1] % num_stages:
        raise ValueError(
            f"stage decoding: expected two (B, {num_stages}·F, D) token tensors, "
            f"got shapes {tuple(x.shape)} and {tuple(y.shape)}"
        )
    b, kf, d = x.shape
    f = kf // num_stages
    q = torch.cat([x, y]).reshape(2 * b * num_stages, f, d)  # (2B·K, F, D), stage-major within video
    m = torch.cat([y, x]).reshape(2 * b * num_stages, f, d)
    return decoder(q, m).reshape(2 * b, kf, d)
