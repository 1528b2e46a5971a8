"""Stage pooling ``seg_pool_1d`` (spec §6): three overlapping stage slices, each resampled to F tokens.

For a sequence of length ``L`` and transitions ``(s, e)`` (first frames of stages 2 and 3) the slices are,
with inclusive ends:

==========  ====================  ============
stage       slice                 length
==========  ====================  ============
1           ``X[0 … s]``          ``s + 1``
2           ``X[s … e]``          ``e − s + 1``
3           ``X[e−1 … L−1]``      ``L − e + 1``
==========  ====================  ============

Stages 1 and 2 share index ``s``; stages 2 and 3 share ``e−1`` and ``e`` (the reference's overlaps, which
this module keeps exactly; TSA/MCoRe's non-overlapping convention is *not* used). Each slice is resampled
to ``F`` samples by 1-D linear interpolation with ``align_corners=True``: output ``j`` is the value at
position ``j·(n−1)/(F−1)`` of a slice of length ``n``; a length-1 slice is replicated.

**Clamping.** Before slicing, ``e`` is clamped to ``[1, L−1]`` and then ``s`` to ``[0, e]``. Valid
transitions (``0 ≤ s ≤ e``, ``1 ≤ e ≤ L−1``; every GT and every decoded pair at frame level, L = 96) are
unchanged, so the clamp is a no-op for them. It matters only on the I3D timeline (L = 9), where a
predicted ``ed ≥ 90`` gives ``e = 9 = L``: the reference's Python slicing then makes stage 3 the single
clip ``[8]``, whereas the clamp (``e = 8``) makes it ``[7, 8]``; stage 2 is ``[s, 8]`` either way. ``e = 0``
would make the reference's ``e−1`` the negative index −1; the clamp makes it 1. The spec (§6, §13 item 6)
asks for the clamp.
"""

from __future__ import annotations

import torch

NUM_STAGES = 3


def clamp_transitions(transitions: torch.Tensor, length: int) -> torch.Tensor:
    """Clamp ``(…, 2)`` transitions ``(s, e)`` to ``1 ≤ e ≤ L−1``, then ``0 ≤ s ≤ e`` (no-op if valid)."""
    if length < 2:
        raise ValueError(f"stage pooling needs a sequence of length >= 2, got {length}")
    e = transitions[..., 1].clamp(1, length - 1)
    s = torch.minimum(transitions[..., 0].clamp_min(0), e)
    return torch.stack([s, e], dim=-1)


def stage_bounds(transitions: torch.Tensor, length: int) -> torch.Tensor:
    """Inclusive ``[start, end]`` of the three stage slices after clamping.

    Shapes: ``(B, 2)`` → int64 ``(B, 3, 2)``: ``[[0, s], [s, e], [e−1, L−1]]`` per video.
    """
    if transitions.dim() != 2 or transitions.shape[1] != 2:
        raise ValueError(f"transitions: expected (B, 2), got shape {tuple(transitions.shape)}")
    st = clamp_transitions(transitions.long(), length)
    s, e = st[:, 0], st[:, 1]
    zero = torch.zeros_like(s)
    last = torch.full_like(s, length - 1)
    starts = torch.stack([zero, s, e - 1], dim=1)  # (B, 3)
    ends = torch.stack([s, e, last], dim=1)  # (B, 3)
    return torch.stack([starts, ends], dim=2)


def seg_pool_1d(x: torch.Tensor, transitions: torch.Tensor, *, fix_size: int = 10) -> torch.Tensor:
    """Pool a time-major sequence into ``3·fix_size`` stage tokens (spec §6), per video in one pass.

    Args:
        x: ``(B, L, C)`` features (time-major: I3D ``(B, 9, 1024)``, RegNet ``(B, 96, 368)``, skeleton
            ``(B, 96, 128)`` after transposing HD-GCN's ``(B, 128, 96)``).
        transitions: ``(B, 2)`` integer ``(s, e)`` per video, in units of ``x``'s time axis (clip indices
            for I3D, see :func:`hpmcore.models.segmentation.to_clip_index`); clamped as in the module
            docstring.
        fix_size: ``F``, tokens per stage.

    Returns:
        ``(B, 3F, C)``: tokens ``kF … kF+F−1`` belong to stage ``k``. Differentiable w.r.t. ``x``.
    """
    if x.dim() != 3:
        raise ValueError(f"stage pooling input: expected (B, L, C), got shape {tuple(x.shape)}")
    if transitions.shape != (x.shape[0], 2):
        raise ValueError(
            f"transitions: expected ({x.shape[0]}, 2) for input of shape {tuple(x.shape)}, "
            f"got shape {tuple(transitions.shape)}"
        )
    if fix_size < 1:
        raise ValueError(f"fix_size must be >= 1, got {fix_size}")
    b, length, c = x.shape
    bounds = stage_bounds(transitions.to(x.device), length)  # (B, 3, 2)
    start, end = bounds[..., 0:1], bounds[..., 1:2]  # (B, 3, 1)
    span = end - start  # (B, 3, 1), slice length − 1
    j = torch.arange(fix_size, device=x.device)  # (F,)
    # Position j·(n−1)/(F−1) inside the slice, in exact integer arithmetic: lo + num/den.
    den = max(fix_size - 1, 1)
    num = j * span  # (B, 3, F)
    lo = start + torch.div(num, den, rounding_mode="floor")  # (B, 3, F)
    frac = (num % den).to(x.dtype) / den  # (B, 3, F)
    hi = torch.minimum(lo + 1, end)  # frac == 0 wherever lo == end
    lo, hi, frac = lo.reshape(b, -1), hi.reshape(b, -1), frac.reshape(b, -1, 1)  # (B, 3F), (B, 3F, 1)
    x_lo = torch.gather(x, 1, lo[..., None].expand(b, lo.shape[1], c))  # (B, 3F, C)
    x_hi = torch.gather(x, 1, hi[..., None].expand(b, hi.shape[1], c))  # (B, 3F, C)
    return x_lo + frac * (x_hi - x_lo)
