"""A servable form of a trained model: one flat float32 tensor per (query, exemplar) pair → Δ.

MLflow's PyTorch flavour feeds a model one array; :class:`PairScorer` wraps an
:class:`~hpmcore.models.hpmcore.HPMCoRe` (in eval mode: decoded transitions) so that a row of the input
is ``[query ; exemplar]``, each video laid out as :func:`flat_layout` says (I3D clips, then static
per-frame features, then the pose), and the output is ``Δ^{qe}``, the predicted score difference
``s_q − s_e`` (completeness difference in DD mode). The score of the query is then ``Δ + s_e``
averaged over exemplars (spec §10.2).
"""

from __future__ import annotations

import math

import torch
from torch import nn

from hpmcore.config import ModelConfig
from hpmcore.models.hdgcn import NUM_JOINTS
from hpmcore.models.hpmcore import POSE_CHANNELS, HPMCoRe, VideoInputs

__all__ = ["PairScorer", "flat_layout", "flatten_pair"]


def flat_layout(config: ModelConfig, num_clips: int) -> dict[str, tuple[int, ...]]:
    """Shapes of one video's parts in a flat row, in order: ``i3d (J, C)``, ``static (T, C_s)``, ``skeleton
    (2, T, 16, 1)`` (static and skeleton only when the model uses them)."""
    layout: dict[str, tuple[int, ...]] = {"i3d": (num_clips, config.i3d_dim)}
    if config.use_static or config.use_segmentation:
        layout["static"] = (config.num_frames, config.static_dim)
    if config.use_skeleton:
        layout["skeleton"] = (POSE_CHANNELS, config.num_frames, NUM_JOINTS, 1)
    return layout


def _width(layout: dict[str, tuple[int, ...]]) -> int:
    return sum(math.prod(s) for s in layout.values())


def flatten_pair(
    query: VideoInputs, exemplar: VideoInputs, layout: dict[str, tuple[int, ...]]
) -> torch.Tensor:
    """``(B, 2·L)`` rows ``[query ; exemplar]`` of B pairs (L = the layout's width per video)."""
    parts = []
    for videos in (query, exemplar):
        for name in layout:
            t = getattr(videos, name)
            if t is None:
                raise ValueError(f"flatten_pair: the layout needs {name} features, got None")
            parts.append(t.reshape(len(videos), -1).float())
    return torch.cat(parts, dim=1)


class PairScorer(nn.Module):
    """``x (B, 2·L)`` float32 pairs → ``Δ^{qe} (B,)`` with the wrapped model in eval mode."""

    def __init__(self, model: HPMCoRe, num_clips: int) -> None:
        super().__init__()
        self.model = model.eval()
        self.layout = flat_layout(model.config, num_clips)
        self.width = _width(self.layout)

    def _unflatten(self, x: torch.Tensor) -> VideoInputs:
        parts, offset = {}, 0
        for name, shape in self.layout.items():
            size = math.prod(shape)
            parts[name] = x[:, offset : offset + size].reshape(x.shape[0], *shape)
            offset += size
        return VideoInputs(**parts)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Δ of each row's query over its exemplar.

        Raises:
            ValueError: ``x`` is not ``(B, 2·L)``.
        """
        if x.dim() != 2 or x.shape[1] != 2 * self.width:
            raise ValueError(f"PairScorer expects (B, {2 * self.width}) rows, got {tuple(x.shape)}")
        self.model.eval()
        q, e = self._unflatten(x[:, : self.width]), self._unflatten(x[:, self.width :])
        return self.model(q, e).delta_qe
