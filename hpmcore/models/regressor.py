"""Score regressors (spec §7.4), learnable stage weights (§7.5) and the final delta (§7.6).

- :class:`ScoreMLP` / :func:`build_score_mlp`: ``Linear(D→D)``, ReLU, ``Linear(D→D/4)``, ReLU,
  ``Linear(D/4→1)`` per token; the stage delta is the mean over the stage's tokens (82,305 parameters at
  D = 256).
- :class:`StageWeights`: ``w_k = exp(s_k)``, ``s_k`` initialised to ln 2 (normalised weights 1/3 each);
  ``Δ = Σ_k w_k δ^k / Σ_k w_k``, shared by both branches. This is the intended computation of the
  reference's ``LogitScaleNetwork``, whose code multiplies by the module object instead (§13 item 1).
- :func:`combine_deltas`: ``Δ = (Δ_fu + λ·Δ_st) / (1 + λ)``; λ = 1 is the reference's ``½(Δ_fu + Δ_st)``.
"""

from __future__ import annotations

import math

import torch
from torch import nn

NUM_STAGES = 3


class ScoreMLP(nn.Module):
    """Per-token MLP regressor, averaged per stage (spec §7.4).

    Args:
        dim: token width D.
        hidden: widths of the two hidden layers; default ``(D, D // 4)`` = (256, 64) at D = 256.
        num_stages: K; the tokens split into K equal stages.

    Shapes: ``(N, K·F, D)`` → stage deltas ``(N, K)``.
    """

    def __init__(
        self, *, dim: int = 256, hidden: tuple[int, int] | None = None, num_stages: int = NUM_STAGES
    ) -> None:
        super().__init__()
        h1, h2 = (dim, max(dim // 4, 1)) if hidden is None else hidden
        self.dim, self.num_stages = dim, num_stages
        self.mlp = nn.Sequential(
            nn.Linear(dim, h1), nn.ReLU(), nn.Linear(h1, h2), nn.ReLU(), nn.Linear(h2, 1)
        )

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        """``(N, K·F, D)`` → ``(N, K)``: the mean of the token outputs of each stage."""
        if tokens.dim() != 3 or tokens.shape[-1] != self.dim or tokens.shape[1] % self.num_stages:
            raise ValueError(
                f"regressor: expected (N, {self.num_stages}·F, {self.dim}), got shape {tuple(tokens.shape)}"
            )
        n, kf, _ = tokens.shape
        out = self.mlp(tokens).view(n, self.num_stages, kf // self.num_stages)  # (N, K, F)
        return out.mean(dim=2)


def build_score_mlp(*, dim: int = 256, num_stages: int = NUM_STAGES) -> ScoreMLP:
    """The ``MLP_score`` of spec §7.4 (one per branch, shared across stages)."""
    return ScoreMLP(dim=dim, num_stages=num_stages)


class StageWeights(nn.Module):
    """Learnable stage weights ``w_k = exp(s_k)``, ``s_k`` initialised to ln 2 (spec §7.5).

    Shapes: stage deltas ``(N, K)`` → weighted mean ``(N,)``.
    """

    def __init__(self, num_stages: int = NUM_STAGES, init: float = math.log(2.0)) -> None:
        super().__init__()
        self.log_weights = nn.Parameter(torch.full((num_stages,), float(init)))

    def weights(self) -> torch.Tensor:
        """``w_k = exp(s_k)``, ``(K,)``."""
        return self.log_weights.exp()

    def normalized(self) -> torch.Tensor:
        """``w_k / Σ_j w_j``, ``(K,)`` (1/3 each at initialisation)."""
        return torch.softmax(self.log_weights, dim=0)

    def forward(self, stage_deltas: torch.Tensor) -> torch.Tensor:
        """``(N, K)`` → ``Σ_k w_k δ^k / Σ_k w_k``, ``(N,)``."""
        if stage_deltas.dim() != 2 or stage_deltas.shape[1] != self.log_weights.numel():
            raise ValueError(
                f"stage deltas: expected (N, {self.log_weights.numel()}), "
                f"got shape {tuple(stage_deltas.shape)}"
            )
        return stage_deltas @ self.normalized()


def combine_deltas(delta_fu: torch.Tensor, delta_st: torch.Tensor | None, lam: float = 1.0) -> torch.Tensor:
    """``Δ = (Δ_fu + λ·Δ_st) / (1 + λ)`` (spec §7.6); ``Δ_fu`` alone when there is no static branch.

    λ = 1 reproduces the reference's ``½(Δ_fu + Δ_st)``; λ = 0 uses the fused branch only.
    """
    if lam < 0:
        raise ValueError(f"lambda must be >= 0, got {lam}")
    if delta_st is None:
        return delta_fu
    if delta_st.shape != delta_fu.shape:
        raise ValueError(f"branch deltas differ in shape: {tuple(delta_fu.shape)} vs {tuple(delta_st.shape)}")
    return (delta_fu + lam * delta_st) / (1.0 + lam)
