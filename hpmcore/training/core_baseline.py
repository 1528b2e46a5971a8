"""Baseline (b): CoRe-style single-stage contrastive regression on mean-pooled I3D features.

:class:`CoReBaseline` is an MLP on ``[mean-pooled I3D of the query ; of the exemplar]`` → Δ, trained with
the bidirectional score MSE on the same pairs as HP-MCoRe (:func:`hpmcore.training.train.train`) and
evaluated with the same voters (:func:`hpmcore.training.evaluate.evaluate_model`) — no segmentation, no
pose, no static branch. It is a :class:`~hpmcore.training.protocol.PairModel`, so checkpoints rebuild it
like HP-MCoRe (:func:`hpmcore.training.checkpoints.model_from_checkpoint`).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from hpmcore.config import CoReConfig
from hpmcore.models.hpmcore import VideoInputs, select_rows
from hpmcore.models.normalize import FeatureStandardizer
from hpmcore.training.losses import LossTerms, score_loss
from hpmcore.training.protocol import InputSpec, PairTargets, Role

__all__ = ["CoReBaseline", "CoReConfig", "CoReOutput", "PooledEncoding", "build_core_baseline"]


@dataclass(frozen=True)
class PooledEncoding:
    """Per-video encoding of the baseline: mean-pooled I3D features ``(N, C)``."""

    features: torch.Tensor

    def __len__(self) -> int:
        return self.features.shape[0]

    @property
    def predicted(self) -> None:
        """No segmentation: no decoded transitions."""
        return None

    def select(self, index: torch.Tensor | list[int] | slice) -> PooledEncoding:
        """Rows ``index``."""
        return PooledEncoding(select_rows(self.features, index))

    @staticmethod
    def cat(parts: list[PooledEncoding]) -> PooledEncoding:
        """Concatenate along the video axis."""
        return PooledEncoding(torch.cat([p.features for p in parts]))


@dataclass(frozen=True)
class CoReOutput:
    """Δ of B pairs in both directions."""

    delta_qe: torch.Tensor
    """``(B,)`` predicted ``s_q − s_e``."""
    delta_eq: torch.Tensor
    """``(B,)`` predicted ``s_e − s_q``."""


class CoReBaseline(nn.Module):
    """Baseline (b): ``Δ^{qe} = MLP([mean_j I3D_q ; mean_j I3D_e])`` (no segmentation, pose or static branch).

    A :class:`~hpmcore.training.protocol.PairModel`: trained and evaluated like HP-MCoRe.
    """

    def __init__(self, config: CoReConfig | None = None) -> None:
        super().__init__()
        cfg = config or CoReConfig()
        cfg.validate()
        self.config = cfg
        self.input_norm = FeatureStandardizer(cfg.i3d_dim) if cfg.input_norm else None
        self.regressor = nn.Sequential(
            nn.Linear(2 * cfg.i3d_dim, cfg.hidden),
            nn.ReLU(),
            nn.Dropout(cfg.dropout),
            nn.Linear(cfg.hidden, cfg.hidden),
            nn.ReLU(),
            nn.Dropout(cfg.dropout),
            nn.Linear(cfg.hidden, 1),
        )

    def encode(self, videos: VideoInputs, *, use_gt: bool | torch.Tensor | None = None) -> PooledEncoding:
        """``i3d (N, J, C)`` → ``PooledEncoding((N, C))`` (``use_gt`` is ignored: no segmentation)."""
        i3d = videos.i3d
        if i3d.dim() != 3 or i3d.shape[2] != self.config.i3d_dim:
            raise ValueError(f"i3d features: expected (N, J, {self.config.i3d_dim}), got {tuple(i3d.shape)}")
        if self.input_norm is not None:
            i3d = self.input_norm(i3d)
        return PooledEncoding(i3d.mean(dim=1))  # (N, C)

    def forward_pair(self, query: PooledEncoding, exemplar: PooledEncoding) -> CoReOutput:
        """Both directions of B pairs: ``(B, C)`` each → Δ ``(B,)`` each."""
        if len(query) != len(exemplar):
            raise ValueError(f"pair heads: {len(query)} queries vs {len(exemplar)} exemplars")
        q, e = query.features, exemplar.features
        x = torch.cat([torch.cat([q, e], dim=1), torch.cat([e, q], dim=1)])  # (2B, 2C)
        delta = self.regressor(x)[:, 0]  # (2B,)
        b = len(query)
        return CoReOutput(delta_qe=delta[:b], delta_eq=delta[b:])

    def forward(self, query: VideoInputs, exemplar: VideoInputs) -> CoReOutput:
        """B (query, exemplar) pairs of cached features → :class:`CoReOutput`."""
        return self.forward_pair(self.encode(query), self.encode(exemplar))

    def fit_input_norm(self, videos: VideoInputs) -> None:
        """Set the I3D standardisation from the training videos' ``i3d (N, J, C)`` (no-op when off)."""
        if self.input_norm is not None:
            self.input_norm.fit(videos.i3d)

    def parameter_groups(self) -> dict[str, list[nn.Parameter]]:
        """One named group."""
        return {"regressor": list(self.regressor.parameters())}

    def input_spec(self, role: Role) -> InputSpec:
        """Only the I3D features, in every role."""
        return InputSpec(i3d_dim=self.config.i3d_dim)

    def exemplar_uses_gt(self) -> bool:
        """No segmentation: never."""
        return False

    def pair_loss(self, out: CoReOutput, targets: PairTargets) -> LossTerms:
        """The bidirectional score MSE (spec §8.1), the only term."""
        aqa = score_loss(out.delta_qe, out.delta_eq, targets.score_q, targets.score_e)
        return LossTerms(total=aqa, aqa=aqa)


def build_core_baseline(config: CoReConfig | None = None, *, seed: int = 0) -> CoReBaseline:
    """Build :class:`CoReBaseline` with a seeded initialisation (the global RNG state is left untouched)."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return CoReBaseline(config)
