"""Static visual encoder: timm RegNetY-002 per frame, optionally with GSM or TSM (spec §3).

- ``temporal="none"``: a pure per-frame encoder (each frame's feature depends on that frame only); used
  to cache per-frame features.
- ``temporal="gsm"`` (the reference, spec §3.2–3.3) or ``"tsm"`` (§3.5): a temporal module runs on the
  input of ``conv1`` in each of the 13 bottleneck blocks, so neighbouring frames mix (end-to-end mode).
  The residual shortcut sees the unshifted block input.

The wrapped ``conv1`` keeps timm's ``conv`` / ``bn`` child names, so the trunk keys stay in timm's layout
(spec §3.7: ``s1.b1.conv1.conv.weight``, …) and the only new keys are ``s{i}.b{j}.conv1.shift.*``.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Literal

import timm
import torch
from torch import nn

from hpmcore.models.checkpoints import LoadReport, load_strict
from hpmcore.models.gsm import GateShift, TemporalShift

log = logging.getLogger(__name__)

Temporal = Literal["none", "gsm", "tsm"]
FEATURE_DIM = 368
# The ImageNet classifier of a timm regnety_002 file: present in the file, unused here (spec §3.1).
_IMAGENET_HEAD_KEYS = {"head.fc.weight": (1000, FEATURE_DIM), "head.fc.bias": (1000,)}


class ShiftedConv1(nn.Module):
    """A block's ``conv1`` (1×1 conv + BN + ReLU) preceded by a temporal module (spec §3.2).

    ``conv`` and ``bn`` are timm's own modules, moved over so their state-dict keys do not change.
    Shapes: ``(N·T, C_in, H, W)`` → ``(N·T, C_out, H, W)``.
    """

    def __init__(self, shift: nn.Module, conv: nn.Module, bn: nn.Module) -> None:
        super().__init__()
        self.shift = shift
        self.conv = conv
        self.bn = bn  # timm BatchNormAct2d: BN followed by ReLU

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``(N·T, C_in, H, W)`` → ``(N·T, C_out, H, W)``."""
        return self.bn(self.conv(self.shift(x)))


def _temporal_module(kind: Temporal, in_channels: int, num_frames: int) -> nn.Module:
    match kind:
        case "gsm":
            return GateShift(in_channels, num_frames)
        case "tsm":
            return TemporalShift(in_channels, num_frames)
        case _:
            raise ValueError(f"temporal must be 'gsm' or 'tsm' here, got {kind!r}")


class StaticEncoder(nn.Module):
    """RegNetY-002 trunk → 368 features per frame (spec §3.1), with optional GSM/TSM.

    Args:
        temporal: ``"none"``, ``"gsm"`` or ``"tsm"`` (see the module docstring).
        num_frames: frames per video the temporal modules are built for (96 in HP-MCoRe). Shorter
            videos are zero-padded to it and the output trimmed, as the reference does; longer ones are
            an error. Ignored with ``temporal="none"``.
        freeze_bn: keep every BatchNorm (timm's and GSM's) in eval mode even after ``.train()``
            (spec §3.4); their affine parameters still train.

    Shapes: ``(B, 3, T, H, W)`` → ``(B, T, 368)``; one video ``(3, T, H, W)`` → ``(T, 368)``.

    Note: timm's random initialisation zeroes the last BN scale of every block (``zero_init_last``), so
    without pretrained weights the residual branches, and the temporal modules inside them, start out
    inactive; they become active as soon as training moves those scales (or weights are loaded).
    """

    def __init__(self, *, temporal: Temporal = "gsm", num_frames: int = 96, freeze_bn: bool = True) -> None:
        super().__init__()
        match temporal:
            case "none" | "gsm" | "tsm":
                pass
            case _:
                raise ValueError(f"temporal must be 'none', 'gsm' or 'tsm', got {temporal!r}")
        self.temporal: Temporal = temporal
        self.num_frames = num_frames
        self.freeze_bn = freeze_bn
        self.trunk = timm.create_model("regnety_002", pretrained=False, num_classes=0)
        if temporal != "none":
            for stage_name in ("s1", "s2", "s3", "s4"):
                stage = getattr(self.trunk, stage_name)
                for block in stage.children():
                    conv1 = block.conv1
                    shift = _temporal_module(temporal, conv1.conv.in_channels, num_frames)
                    block.conv1 = ShiftedConv1(shift, conv1.conv, conv1.bn)
        if freeze_bn:
            self.train(self.training)

    def train(self, mode: bool = True) -> StaticEncoder:
        """Set training mode; with ``freeze_bn`` every BatchNorm stays in eval mode (spec §3.4)."""
        super().train(mode)
        if self.freeze_bn:
            for m in self.modules():
                if isinstance(m, nn.modules.batchnorm._BatchNorm):
                    m.eval()
        return self

    def temporal_modules(self) -> list[nn.Module]:
        """The 13 GSM/TSM modules in block order (empty with ``temporal="none"``)."""
        return [m for m in self.modules() if isinstance(m, GateShift | TemporalShift)]

    def encode_frames(self, frames: torch.Tensor) -> torch.Tensor:
        """Frames of videos, flattened: ``(N·T, 3, H, W)`` → ``(N·T, 368)``.

        With a temporal module ``N·T`` must be whole videos of ``num_frames`` consecutive frames.
        """
        if frames.dim() != 4 or frames.shape[1] != 3:
            raise ValueError(f"frames: expected (N*T, 3, H, W), got shape {tuple(frames.shape)}")
        return self.trunk(frames)

    def forward(self, video: torch.Tensor) -> torch.Tensor:
        """``(B, 3, T, H, W)`` → ``(B, T, 368)``; ``(3, T, H, W)`` → ``(T, 368)``."""
        if video.dim() not in (4, 5) or video.shape[-4] != 3:
            raise ValueError(
                f"video: expected (B, 3, T, H, W) or (3, T, H, W), got shape {tuple(video.shape)}"
            )
        single = video.dim() == 4
        if single:
            video = video.unsqueeze(0)
        b, c, t, h, w = video.shape
        steps = t
        if self.temporal != "none":
            if t > self.num_frames:
                raise ValueError(
                    f"video: temporal={self.temporal!r} is built for {self.num_frames} frames, "
                    f"got shape {tuple(video.shape)}"
                )
            if t < self.num_frames:  # the reference zero-pads short clips and trims the output
                pad = video.new_zeros(b, c, self.num_frames - t, h, w)
                video = torch.cat([video, pad], dim=2)
                steps = self.num_frames
        frames = video.transpose(1, 2).reshape(b * steps, c, h, w)  # (B·T, C, H, W), frames contiguous
        feats = self.trunk(frames).view(b, steps, -1)[:, :t]  # (B, T, 368)
        return feats[0] if single else feats


def build_static_encoder(
    *,
    weights: Path | str | None,
    temporal: Temporal = "gsm",
    num_frames: int = 96,
    freeze_bn: bool = True,
    seed: int = 0,
) -> StaticEncoder:
    """Build the static encoder, loading timm ImageNet ``regnety_002`` weights strictly.

    Args:
        weights: a ``.safetensors`` or ``torch.save`` file in timm's key layout (spec §3.7), or ``None``
            for a seeded random initialisation (logged as a warning). The ImageNet classifier
            (``head.fc.*``) may be present and is dropped; GSM parameters are not in such a file and keep
            their zero initialisation (they are loaded if the file has them).
        temporal, num_frames, freeze_bn: see :class:`StaticEncoder`.
        seed: seed of the random initialisation (the global RNG state is left untouched).

    Raises:
        CheckpointError: the file is missing or does not match (see :func:`load_static_weights`).
    """
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        encoder = StaticEncoder(temporal=temporal, num_frames=num_frames, freeze_bn=freeze_bn)
    if weights is None:
        log.warning(
            "RegNetY-002: NO PRETRAINED WEIGHTS - using a random initialisation (seed %d); "
            "set the ImageNet regnety_002 weights path to reproduce HP-MCoRe",
            seed,
        )
    else:
        load_static_weights(encoder, weights)
    return encoder


def load_static_weights(encoder: StaticEncoder, path: Path | str) -> LoadReport:
    """Strictly load timm ``regnety_002`` weights (trunk key layout, spec §3.7) into ``encoder.trunk``.

    Every trunk tensor must be present with its shape; ``head.fc.*`` is shape-checked and dropped;
    the temporal-module keys ``*.conv1.shift.*`` may be absent (they keep their initialisation).

    Raises:
        CheckpointError: naming the file and every missing, unexpected or mis-shaped key.
    """
    shift_keys = [k for k in encoder.trunk.state_dict() if ".conv1.shift." in k]
    return load_strict(encoder.trunk, path, ignorable=_IMAGENET_HEAD_KEYS, may_keep_init=shift_keys)
