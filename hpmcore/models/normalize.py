"""Per-channel standardisation of cached features with statistics of the training split.

:class:`FeatureStandardizer` holds ``mean`` and ``std`` ``(C,)`` as buffers (saved in the model's
state dict, so a checkpoint carries the statistics it was trained with). It starts as the identity
(mean 0, std 1, ``fitted`` false); :meth:`FeatureStandardizer.fit` sets the statistics from training
features once, before the first step. Used by :class:`~hpmcore.models.hpmcore.HPMCoRe` with
``input_norm`` and by the CoRe baseline, because randomly initialised encoders give features of very
different scales (I3D ~1e-6, RegNet ~1e-2) and plain Adam steps do not adapt to that in a short run.
"""

from __future__ import annotations

import torch
from torch import nn

__all__ = ["FeatureStandardizer"]

MIN_STD_FRACTION = 0.1
"""A channel's std is floored at this fraction of the mean std over channels: channels that are (nearly)
constant in training (e.g. ReLU units dead on every training video) would otherwise blow up a test
video on which they fire."""


class FeatureStandardizer(nn.Module):
    """``(x − mean) / std`` per channel (last axis); the identity until :meth:`fit` is called.

    Shapes: ``(..., C)`` → ``(..., C)``.
    """

    def __init__(self, channels: int) -> None:
        super().__init__()
        if channels < 1:
            raise ValueError(f"channels must be >= 1, got {channels}")
        self.register_buffer("mean", torch.zeros(channels))
        self.register_buffer("std", torch.ones(channels))
        self.register_buffer("fitted", torch.zeros((), dtype=torch.bool))

    @torch.no_grad()
    def fit(self, x: torch.Tensor) -> None:
        """Set mean and std per channel from ``x (..., C)`` (every other axis is pooled; float64 sums).

        Raises:
            ValueError: ``x`` has another channel count, fewer than 2 rows, or non-finite values.
        """
        c = self.mean.shape[0]
        if x.shape[-1] != c:
            raise ValueError(f"standardizer of {c} channels cannot fit features of shape {tuple(x.shape)}")
        rows = x.reshape(-1, c).double()
        if rows.shape[0] < 2:
            raise ValueError("standardizer needs at least 2 feature rows to fit")
        if not bool(torch.isfinite(rows).all()):
            raise ValueError("standardizer: non-finite values in the fitting features")
        mean = rows.mean(dim=0)
        std = rows.std(dim=0)
        floor = max(float(std.mean()) * MIN_STD_FRACTION, torch.finfo(torch.float32).tiny)
        self.mean.copy_(mean.to(self.mean))
        self.std.copy_(std.clamp_min(floor).to(self.std))
        self.fitted.fill_(True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Standardise ``x (..., C)``."""
        return (x - self.mean.to(x.dtype)) / self.std.to(x.dtype)
