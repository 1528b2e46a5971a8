"""Temporal modules for the static encoder: Gate-Shift (GSM, spec §3.3) and Temporal Shift (TSM, §3.5).

Both take the per-frame batch ``(N·T, C, H, W)`` of a 2-D CNN, with the ``T`` frames of each video
contiguous and in temporal order, and return a tensor of the same shape in which some channels carry
values from neighbouring frames. Everything is out-of-place and device-agnostic (spec §13 item 9): the
zero frames come from ``torch.zeros_like`` on the input, never from ``torch.cuda.FloatTensor``.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn


def shift_back(y: torch.Tensor, dim: int) -> torch.Tensor:
    """``out[t] = y[t + 1]`` along ``dim``; the last step gets 0. Out-of-place."""
    first = y.narrow(dim, 1, y.shape[dim] - 1)
    return torch.cat([first, torch.zeros_like(y.narrow(dim, 0, 1))], dim=dim)


def shift_fwd(y: torch.Tensor, dim: int) -> torch.Tensor:
    """``out[t] = y[t − 1]`` along ``dim``; the first step gets 0. Out-of-place."""
    rest = y.narrow(dim, 0, y.shape[dim] - 1)
    return torch.cat([torch.zeros_like(y.narrow(dim, 0, 1)), rest], dim=dim)


def gsm_channels(in_channels: int) -> int:
    """Channels processed by GSM: ``f = 4·⌈⌊C/4⌋ / 4⌉`` (spec §3.2), e.g. 32 → 8, 152 → 40, 368 → 92."""
    return 4 * math.ceil((in_channels // 4) / 4)


def _frames_view(x: torch.Tensor, num_frames: int, what: str) -> tuple[int, int, int, int]:
    """Validate ``(N·T, C, H, W)`` and return ``(N, C, H, W)``."""
    if x.dim() != 4 or x.shape[0] % num_frames != 0:
        raise ValueError(
            f"{what}: expected (N*T, C, H, W) with T={num_frames} frames per video, "
            f"got shape {tuple(x.shape)}"
        )
    nt, c, h, w = x.shape
    return nt // num_frames, c, h, w


class GateShift(nn.Module):
    """Gate-Shift Module on the first ``f = gsm_channels(C)`` channels (spec §3.3).

    With ``x`` the first ``f`` channels laid out ``(N, f, T, H, W)``:
    ``g = tanh(Conv3d_{f→2, k=3, groups=2}(ReLU(BN3d(x))))``; the first half of ``x`` is gated by
    ``g[0]`` and shifted back in time (``t ← t+1``), the second half gated by ``g[1]`` and shifted
    forward (``t ← t−1``), the ungated residual is added back, and within each half the channels are
    interleaved (index ``a·f/4 + b`` → ``2b + a``). Channels ``f…C`` pass through unchanged.

    The gate conv is zero-initialised, so at initialisation GSM is a fixed channel permutation.
    Parameters: ``27·f + 2`` (conv) ``+ 2·f`` (BN affine).

    Args:
        in_channels: ``C``, the channels of the tensor this module sees.
        num_frames: ``T``, frames per video in the ``N·T`` batch.

    Shapes: ``(N·T, C, H, W)`` → ``(N·T, C, H, W)``.
    """

    def __init__(self, in_channels: int, num_frames: int) -> None:
        super().__init__()
        f = gsm_channels(in_channels)
        if f % 4 != 0 or f > in_channels:
            raise ValueError(f"GSM needs f divisible by 4 and ≤ C; C={in_channels} gives f={f}")
        self.in_channels = in_channels
        self.channels = f
        self.num_frames = num_frames
        self.bn = nn.BatchNorm3d(f)
        self.conv3d = nn.Conv3d(f, 2, kernel_size=3, padding=1, groups=2)
        nn.init.zeros_(self.conv3d.weight)
        nn.init.zeros_(self.conv3d.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``(N·T, C, H, W)`` → ``(N·T, C, H, W)``."""
        n, c, h, w = _frames_view(x, self.num_frames, "GateShift input")
        if c != self.in_channels:
            raise ValueError(f"GateShift: expected C={self.in_channels}, got shape {tuple(x.shape)}")
        f, t = self.channels, self.num_frames
        xf = x[:, :f].reshape(n, t, f, h, w).transpose(1, 2)  # (N, f, T, H, W)
        gate = torch.tanh(self.conv3d(F.relu(self.bn(xf))))  # (N, 2, T, H, W)
        x1, x2 = xf[:, : f // 2], xf[:, f // 2 :]  # (N, f/2, T, H, W) each
        y1, y2 = gate[:, 0:1] * x1, gate[:, 1:2] * x2
        x1 = shift_back(y1, dim=2) + (x1 - y1)
        x2 = shift_fwd(y2, dim=2) + (x2 - y2)
        # Interleave within each half: channel a·f/4 + b → 2b + a, i.e. (2, f/4) → transpose → flatten.
        x1 = x1.reshape(n, 2, f // 4, t, h, w).transpose(1, 2).reshape(n, f // 2, t, h, w)
        x2 = x2.reshape(n, 2, f // 4, t, h, w).transpose(1, 2).reshape(n, f // 2, t, h, w)
        shifted = torch.cat([x1, x2], dim=1).transpose(1, 2).reshape(n * t, f, h, w)  # (N·T, f, H, W)
        return torch.cat([shifted, x[:, f:]], dim=1)  # (N·T, C, H, W)


class TemporalShift(nn.Module):
    """Parameter-free Temporal Shift (spec §3.5), out-of-place.

    With ``fold = ⌊C/8⌋``: channels ``[0, fold)`` take frame ``t+1`` (0 at the last frame), channels
    ``[fold, 2·fold)`` take frame ``t−1`` (0 at the first frame), the rest are unchanged.

    Args:
        in_channels: ``C``.
        num_frames: ``T``, frames per video in the ``N·T`` batch.

    Shapes: ``(N·T, C, H, W)`` → ``(N·T, C, H, W)``.
    """

    def __init__(self, in_channels: int, num_frames: int, *, fold_div: int = 8) -> None:
        super().__init__()
        self.in_channels = in_channels
        self.num_frames = num_frames
        self.fold = in_channels // fold_div

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``(N·T, C, H, W)`` → ``(N·T, C, H, W)``."""
        n, c, h, w = _frames_view(x, self.num_frames, "TemporalShift input")
        if c != self.in_channels:
            raise ValueError(f"TemporalShift: expected C={self.in_channels}, got shape {tuple(x.shape)}")
        fold = self.fold
        v = x.reshape(n, self.num_frames, c, h, w)  # (N, T, C, H, W)
        out = torch.cat(
            [
                shift_back(v[:, :, :fold], dim=1),
                shift_fwd(v[:, :, fold : 2 * fold], dim=1),
                v[:, :, 2 * fold :],
            ],
            dim=2,
        )
        return out.reshape(n * self.num_frames, c, h, w)
