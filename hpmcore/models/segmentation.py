"""Procedure segmentation (spec §5): BiGRU + FC transition spotter, ground truth and decoding.

- :class:`SpotModel` / :func:`build_spot_model`: per-frame static features ``(N, T, C)`` → transition
  logits ``(N, T, 2)``; channel 0 scores the first frame of stage 2, channel 1 the first frame of stage 3.
- :func:`gt_transitions` / :func:`gt_transitions_batch`: ``(a, b)`` from the step labels of the sampled
  frames (§5.2): first frame of the 2nd distinct label, first frame of the *last* distinct label.
- :func:`decode_halves` (the reference, §5.4) and :func:`decode_joint` (maximise ``P0[s] + P1[e]`` over
  ``s < e``, §13 item 4); :func:`decode_transitions` selects one by name.
- :func:`fixed_thirds`: the transitions of the "without segmentation" ablation.
- :func:`to_clip_index`: frame transitions → I3D clip indices (§5.6).

Every transition pair uses the convention of §5.2: ``(st, ed)`` are the **first** frames of stages 2 and 3,
0-based indices into the sampled frames.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal

import numpy as np
import torch
from torch import nn

DecodeMode = Literal["halves", "joint"]
NUM_TRANSITIONS = 2


class SpotModel(nn.Module):
    """Bidirectional GRU (1 layer, batch-first) → dropout → ``Linear(2H → 2)`` (spec §5.1).

    Args:
        in_dim: per-frame feature width (368 for RegNetY-002).
        hidden: GRU hidden size per direction (368 in the reference).
        dropout: dropout on the GRU output (0.5 in the reference; active in training mode only).

    Shapes: ``(N, T, in_dim)`` → logits ``(N, T, 2)``.
    """

    def __init__(self, *, in_dim: int = 368, hidden: int = 368, dropout: float = 0.5) -> None:
        super().__init__()
        self.in_dim = in_dim
        self.gru = nn.GRU(in_dim, hidden, num_layers=1, batch_first=True, bidirectional=True)
        self.dropout = nn.Dropout(dropout)
        self.fc = nn.Linear(2 * hidden, NUM_TRANSITIONS)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``(N, T, in_dim)`` → transition logits ``(N, T, 2)``."""
        if x.dim() != 3 or x.shape[-1] != self.in_dim:
            raise ValueError(f"segmenter input: expected (N, T, {self.in_dim}), got shape {tuple(x.shape)}")
        h, _ = self.gru(x)  # (N, T, 2H)
        return self.fc(self.dropout(h))  # (N, T, 2)


def build_spot_model(*, in_dim: int = 368, hidden: int | None = None, dropout: float = 0.5) -> SpotModel:
    """The segmenter of spec §5.1; ``hidden`` defaults to ``in_dim`` (368 → 1,630,978 parameters)."""
    return SpotModel(in_dim=in_dim, hidden=in_dim if hidden is None else hidden, dropout=dropout)


# ---------------------------------------------------------------------------------------------------------
# Ground truth (§5.2)


def gt_transitions(step_labels: Sequence[int] | np.ndarray | torch.Tensor) -> tuple[int, int]:
    """``(a, b)`` from the step labels of the sampled frames (spec §5.2).

    List the distinct labels in order of first occurrence; ``a`` is the index of the first frame carrying
    the 2nd distinct label and ``b`` the index of the first frame carrying the *last* distinct label. With
    4 or 5 distinct labels the middle ones merge into stage 2. A sequence whose labels come back (the
    ``4, 37, 36, 37, 36`` dive) keeps the rule, so ``b`` may fall in the middle of the dive (a data quirk
    the spec keeps).

    Raises:
        ValueError: not a 1-D sequence, or fewer than 3 distinct labels (no two transitions).
    """
    labels = np.asarray(
        step_labels.detach().cpu().numpy() if isinstance(step_labels, torch.Tensor) else step_labels
    )
    if labels.ndim != 1:
        raise ValueError(f"step labels: expected a 1-D sequence, got shape {labels.shape}")
    _, first = np.unique(labels, return_index=True)  # first occurrence of each distinct label
    order = np.sort(first)  # first-occurrence indices in time order
    if len(order) < 3:
        raise ValueError(
            f"step labels: need at least 3 distinct labels for two transitions, got {len(order)} "
            f"({labels.tolist()})"
        )
    return int(order[1]), int(order[-1])


def gt_transitions_batch(step_labels: torch.Tensor | np.ndarray) -> torch.Tensor:
    """:func:`gt_transitions` for each row of ``(N, T)`` labels → int64 ``(N, 2)`` (on the input's device)."""
    if isinstance(step_labels, np.ndarray):
        step_labels = torch.from_numpy(step_labels)
    if step_labels.dim() != 2:
        raise ValueError(f"step labels: expected (N, T), got shape {tuple(step_labels.shape)}")
    pairs = [gt_transitions(row) for row in step_labels.cpu()]
    return torch.tensor(pairs, dtype=torch.long, device=step_labels.device).view(-1, 2)


# ---------------------------------------------------------------------------------------------------------
# Decoding (§5.4, §13 item 4)


def _check_logits(logits: torch.Tensor) -> None:
    if logits.dim() != 3 or logits.shape[-1] != NUM_TRANSITIONS or logits.shape[1] < 2:
        raise ValueError(f"transition logits: expected (N, T >= 2, 2), got shape {tuple(logits.shape)}")


def decode_halves(logits: torch.Tensor) -> torch.Tensor:
    """The reference decoding (spec §5.4): ``ŝt`` from the first half, ``êd`` from the second.

    The split is ``round(T / 2)`` (48 for T = 96): ``ŝt = argmax_{t < split} P[t, 0]`` and
    ``êd = split + argmax_{t >= split} P[t, 1]``, so ``ŝt < êd`` always; transitions on the wrong side of
    the split can never be recovered. Ties go to the earliest frame.

    Shapes: ``(N, T, 2)`` → int64 ``(N, 2)``.
    """
    _check_logits(logits)
    split = round(logits.shape[1] / NUM_TRANSITIONS)
    st = logits[:, :split, 0].argmax(dim=1)  # (N,)
    ed = split + logits[:, split:, 1].argmax(dim=1)  # (N,)
    return torch.stack([st, ed], dim=1)


def decode_joint(logits: torch.Tensor) -> torch.Tensor:
    """Joint decoding (spec §13 item 4): ``argmax_{s < e} P[s, 0] + P[e, 1]``.

    Each channel's softmax runs over time (§5.3), so maximising the logit sum is maximising the joint
    log-probability of the two (independent) transitions under the order constraint. Ties go to the
    smallest ``s``, then the smallest ``e``.

    Shapes: ``(N, T, 2)`` → int64 ``(N, 2)``.
    """
    _check_logits(logits)
    n, t, _ = logits.shape
    pair = logits[:, :, 0, None] + logits[:, None, :, 1]  # (N, T_s, T_e)
    allowed = torch.ones(t, t, dtype=torch.bool, device=logits.device).triu(diagonal=1)  # s < e
    pair = pair.masked_fill(~allowed, float("-inf"))
    flat = pair.reshape(n, t * t).argmax(dim=1)  # (N,), first maximum in (s, e) row-major order
    return torch.stack([flat // t, flat % t], dim=1)


def decode_transitions(logits: torch.Tensor, mode: DecodeMode = "halves") -> torch.Tensor:
    """Decode ``(N, T, 2)`` logits to int64 ``(N, 2)`` transitions (``mode``: ``"halves"``, ``"joint"``)."""
    match mode:
        case "halves":
            return decode_halves(logits)
        case "joint":
            return decode_joint(logits)
        case _:
            raise ValueError(f"decode mode must be 'halves' or 'joint', got {mode!r}")


def fixed_thirds(num_videos: int, num_frames: int, *, device: torch.device | None = None) -> torch.Tensor:
    """Transitions of the "without segmentation" ablation: ``(round(T/3), round(2T/3))`` for every video.

    T = 96 gives (32, 64). Shapes: → int64 ``(num_videos, 2)``.
    """
    if num_frames < 3:
        raise ValueError(f"fixed thirds need at least 3 frames, got {num_frames}")
    pair = torch.tensor([round(num_frames / 3), round(2 * num_frames / 3)], dtype=torch.long, device=device)
    return pair.expand(num_videos, 2).clone()


def to_clip_index(transitions: torch.Tensor, clip_stride: int = 10) -> torch.Tensor:
    """Frame transitions → I3D clip indices (spec §5.6): ``t // clip_stride``.

    Clip ``j`` starts at frame ``clip_stride·j``, so this is the last clip starting at or before the frame.
    A frame ≥ 90 gives clip 9 although only clips 0..8 exist; stage pooling clamps it (§6).
    """
    return torch.div(transitions, clip_stride, rounding_mode="floor")
