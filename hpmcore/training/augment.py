"""The spatial augmentation of end-to-end training (spec §1.2), on decoded uint8 frames.

The reference (spec §1.2), on frames resized to 112 wide × 200 tall:

- **training**: with probability 0.5 flip all 96 frames horizontally, then crop 112×112 with the
  x-offset 0 (the full width) and a random y-offset in [0, 88] **shared by all frames of the clip**;
- **test / validation**: no flip, the y-offset fixed at 44 (the centre crop);
- the query and the exemplar of a pair are augmented independently.

Here the decode stage has already resized the frames (``decode.width`` × ``decode.height``) and the
features stage's ``crop_size`` is the test-time centre crop (:func:`hpmcore.extraction.features.
preprocess`); the augmentation is the same idea on those sizes (:func:`crop_window`):

- the crop window is ``crop_size``² (the whole frame when ``crop_size`` is null), so training and test
  inputs have the same size and the test view is exactly what the features stage encodes;
- the y-offset is drawn uniformly in ``[0, H − crop]``, the x-offset is the centred ``(W − crop) // 2``
  (0 when ``W = crop``: the reference's full width);
- the flip comes first, then the crop, as in the reference.

At the spec's decode (112 wide × 200 tall, ``features.crop_size: 112``) this is the reference exactly:
y in [0, 88], x 0, test y 44. At the **default decode, 32 × 32 with no crop**, there is no vertical room:
the crop is the whole frame and the augmentation is the flip alone (the spec's proportions at width 32
would be ``decode.height: 57`` with ``features.crop_size: 32``: y in [0, 25], test y 12).

**The pose under a flip** (spec §13 item 7). The reference does not flip the skeleton, so skeleton and
RGB disagree on half of the training clips. :func:`flip_skeleton` mirrors the x coordinate about the
frame's vertical centre line and swaps the left/right joints (MPII 0↔5, 1↔4, 2↔3, 10↔15, 11↔14, 12↔13,
:data:`MPII_FLIP`); ``train.flip_pose`` chooses (true: flip it, the default here; false: the reference's
mismatch). The vertical crop is not applied to the skeleton (as in the reference: the skeleton stays in
the source frame's coordinates).

Every draw comes from a generator the caller derives per (epoch, pair, role) from the one seed
(:func:`augmentation_rng`), so an epoch's augmentations do not depend on worker processes, on the
order batches are loaded in, on the number of DDP ranks, or on what ran before (exact resume).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from hpmcore.runtime import derive_rng

__all__ = [
    "FLIP_P",
    "MPII_FLIP",
    "ClipView",
    "apply_view",
    "augmentation_rng",
    "crop_window",
    "eval_view",
    "flip_skeleton",
    "train_view",
]

FLIP_P = 0.5
"""Probability of the horizontal flip (spec §1.2)."""
MPII_FLIP = (5, 4, 3, 2, 1, 0, 6, 7, 8, 9, 15, 14, 13, 12, 11, 10)
"""Joint ``j`` of a mirrored MPII skeleton is joint ``MPII_FLIP[j]`` of the original (spec §13 item 7):
ankles 0↔5, knees 1↔4, hips 2↔3, wrists 10↔15, elbows 11↔14, shoulders 12↔13; pelvis, thorax, neck and
head top (6–9) stay."""


@dataclass(frozen=True)
class ClipView:
    """How one clip is shown to the model: a horizontal flip, then a crop shared by all frames."""

    flip: bool
    y0: int
    """Top row of the crop."""
    x0: int
    """Left column of the crop."""
    height: int
    """Crop height (px)."""
    width: int
    """Crop width (px)."""


def crop_window(height: int, width: int, crop: int | None) -> tuple[int, int]:
    """``(crop height, crop width)``: ``crop``² (``features.crop_size``), or the whole frame for ``None``.

    Raises:
        ValueError: a crop larger than the frame.
    """
    if crop is None:
        return height, width
    if crop > height or crop > width:
        raise ValueError(f"crop {crop} is larger than the {width}x{height} frames")
    return crop, crop


def train_view(rng: np.random.Generator, height: int, width: int, crop: int | None) -> ClipView:
    """A training view: flip with p = :data:`FLIP_P`, a random y-offset in ``[0, H − crop]``, the
    centred x-offset (two draws from ``rng``: the flip, then the offset)."""
    ch, cw = crop_window(height, width, crop)
    flip = bool(rng.random() < FLIP_P)
    y0 = int(rng.integers(0, height - ch + 1))
    return ClipView(flip=flip, y0=y0, x0=(width - cw) // 2, height=ch, width=cw)


def eval_view(height: int, width: int, crop: int | None) -> ClipView:
    """The test/validation view: no flip, the centre crop (the features stage's ``preprocess``)."""
    ch, cw = crop_window(height, width, crop)
    return ClipView(flip=False, y0=(height - ch) // 2, x0=(width - cw) // 2, height=ch, width=cw)


def apply_view(frames: torch.Tensor, view: ClipView) -> torch.Tensor:
    """uint8 ``(T, H, W, 3)`` → ``(T, view.height, view.width, 3)``: flipped (when ``view.flip``), then
    cropped; every frame alike. Returns a contiguous copy."""
    if frames.dim() != 4 or frames.shape[-1] != 3:
        raise ValueError(f"frames: expected (T, H, W, 3), got shape {tuple(frames.shape)}")
    h, w = frames.shape[1:3]
    if view.y0 < 0 or view.x0 < 0 or view.y0 + view.height > h or view.x0 + view.width > w:
        raise ValueError(f"{view} does not fit {w}x{h} frames")
    if view.flip:
        frames = frames.flip(2)  # (T, H, W, 3), columns reversed
    return frames[:, view.y0 : view.y0 + view.height, view.x0 : view.x0 + view.width].contiguous()


def flip_skeleton(skeleton: torch.Tensor, mirror_x: float) -> torch.Tensor:
    """The skeleton of the horizontally flipped video: ``x → 2·mirror_x − x``, left/right joints swapped.

    Args:
        skeleton: ``(2, T, 16, 1)`` (x, y) in the model's pose coordinates.
        mirror_x: the x of the source frame's vertical centre line in those coordinates (pixels:
            ``(W − 1) / 2``, so ``x → W − 1 − x`` as spec §13 item 7 says; with ``pose.normalize:
            frame``: ``−0.5 / (max(W, H) / 2)``; see
            :attr:`hpmcore.training.bank.VideoFeatures.pose_mirror_x`).

    Returns:
        ``(2, T, 16, 1)``, a new tensor.
    """
    if skeleton.dim() != 4 or skeleton.shape[0] != 2 or skeleton.shape[2] != len(MPII_FLIP):
        raise ValueError(f"skeleton: expected (2, T, 16, M), got shape {tuple(skeleton.shape)}")
    out = skeleton[:, :, list(MPII_FLIP)].clone()  # (2, T, 16, M), joints swapped
    out[0] = 2.0 * mirror_x - out[0]
    return out


def augmentation_rng(seed: int, epoch: int, pair: int, role: str) -> np.random.Generator:
    """The generator of one clip's view: the stream ``("augment", epoch, pair, role)`` of ``seed``
    (``pair``: the pair's position in the epoch's order; ``role``: ``"query"`` or ``"exemplar"``)."""
    return derive_rng(seed, "augment", epoch, pair, role)
