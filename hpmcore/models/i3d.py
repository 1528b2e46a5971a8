"""Dynamic visual encoder: Inception-I3D (Kinetics-400 RGB), spec §2.

Module and parameter names follow the checkpoint layout of hassony2/kinetics_i3d_pytorch
``model_rgb.pth`` (spec §2.4), so a strict ``load_state_dict`` needs no renaming:
``conv3d_1a_7x7.conv3d.weight``, ``mixed_4b.branch_1.1.batch3d.running_var``, …

- :class:`InceptionI3d`: one clip ``(N, 3, T, H, W)`` → ``(N, 1024)``.
- :class:`I3DVideoEncoder`: a video ``(B, 3, 96, H, W)`` → 9 overlapping 16-frame clips → ``(B, 9, 1024)``.
- :func:`build_i3d_encoder`: the keyword-only builder (strict weights or loudly-logged seeded init).
"""

from __future__ import annotations

import logging
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from hpmcore.models.checkpoints import CheckpointError, LoadReport, load_strict
from hpmcore.models.recompute import checkpoint_module

log = logging.getLogger(__name__)

FEATURE_DIM = 1024
NUM_KINETICS_CLASSES = 400
# Conv weight + 4 BatchNorm tensors for each of 3 stem units and 9 × 6 Inception units (spec §2.4).
NUM_BACKBONE_TENSORS = 285
_LOGITS_KEYS = {
    "conv3d_0c_1x1.conv3d.weight": (NUM_KINETICS_CLASSES, FEATURE_DIM, 1, 1, 1),
    "conv3d_0c_1x1.conv3d.bias": (NUM_KINETICS_CLASSES,),
}

Triple = tuple[int, int, int]


def tf_same_padding(kernel: Triple, stride: Triple) -> tuple[tuple[int, int], ...]:
    """TensorFlow "SAME" padding per axis ``(T, H, W)``: total ``max(k − s, 0)``, floor half in front.

    Returns ``((front_t, back_t), (front_h, back_h), (front_w, back_w))``.
    """
    pads = []
    for k, s in zip(kernel, stride, strict=True):
        total = max(k - s, 0)
        pads.append((total // 2, total - total // 2))
    return tuple(pads)


def _f_pad(pads: tuple[tuple[int, int], ...]) -> tuple[int, ...]:
    """Per-axis ``(T, H, W)`` pads → the last-axis-first tuple that ``F.pad`` expects."""
    (t0, t1), (h0, h1), (w0, w1) = pads
    return (w0, w1, h0, h1, t0, t1)


class Unit3D(nn.Module):
    """Conv3d (no bias) → BatchNorm3d (eps 1e-5, momentum 0.1) → ReLU, with TF-"SAME" padding.

    When the SAME padding is symmetric it is the conv's own padding; otherwise (only the 7×7×7 / 2 stem,
    which pads (2, 3) per axis) the input is zero-padded explicitly before an unpadded conv.
    With ``use_bn=False, activation=False, bias=True`` it is the (unused) logits layer.

    Shapes: ``(N, C_in, T, H, W)`` → ``(N, C_out, T', H', W')``.
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel: Triple = (1, 1, 1),
        stride: Triple = (1, 1, 1),
        *,
        use_bn: bool = True,
        activation: bool = True,
        bias: bool = False,
    ) -> None:
        super().__init__()
        pads = tf_same_padding(kernel, stride)
        symmetric = all(front == back for front, back in pads)
        self.explicit_pad: tuple[int, ...] | None = None if symmetric else _f_pad(pads)
        conv_pad = tuple(front for front, _ in pads) if symmetric else 0
        self.conv3d = nn.Conv3d(in_channels, out_channels, kernel, stride=stride, padding=conv_pad, bias=bias)
        self.batch3d = nn.BatchNorm3d(out_channels, eps=1e-5, momentum=0.1) if use_bn else None
        self.activation = activation

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``(N, C_in, T, H, W)`` → ``(N, C_out, T', H', W')``."""
        if self.explicit_pad is not None:
            x = F.pad(x, self.explicit_pad)
        x = self.conv3d(x)
        if self.batch3d is not None:
            x = self.batch3d(x)
        return F.relu(x) if self.activation else x


class MaxPool3dSame(nn.Module):
    """Zero-pad with the TF-"SAME" rule, then ``MaxPool3d(ceil_mode=True)``; no parameters.

    Zero padding equals ``-inf`` padding here because the inputs come after a ReLU.
    Shapes: ``(N, C, T, H, W)`` → ``(N, C, T', H', W')``.
    """

    def __init__(self, kernel: Triple, stride: Triple) -> None:
        super().__init__()
        self.pad = _f_pad(tf_same_padding(kernel, stride))
        self.pool = nn.MaxPool3d(kernel, stride, ceil_mode=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``(N, C, T, H, W)`` → ``(N, C, T', H', W')``."""
        return self.pool(F.pad(x, self.pad))


class Mixed(nn.Module):
    """Inception block with channel list ``[b0, b1a, b1b, b2a, b2b, b3]`` (spec §2.1).

    Branches: 1×1×1 → b0; 1×1×1 → b1a → 3×3×3 → b1b; 1×1×1 → b2a → 3×3×3 → b2b;
    3×3×3 max-pool (stride 1, SAME) → 1×1×1 → b3. Output: concatenation, ``b0 + b1b + b2b + b3`` channels.

    Shapes: ``(N, C_in, T, H, W)`` → ``(N, b0 + b1b + b2b + b3, T, H, W)``.
    """

    def __init__(self, in_channels: int, channels: tuple[int, int, int, int, int, int]) -> None:
        super().__init__()
        b0, b1a, b1b, b2a, b2b, b3 = channels
        self.out_channels = b0 + b1b + b2b + b3
        self.branch_0 = Unit3D(in_channels, b0)
        self.branch_1 = nn.Sequential(Unit3D(in_channels, b1a), Unit3D(b1a, b1b, (3, 3, 3)))
        self.branch_2 = nn.Sequential(Unit3D(in_channels, b2a), Unit3D(b2a, b2b, (3, 3, 3)))
        self.branch_3 = nn.Sequential(MaxPool3dSame((3, 3, 3), (1, 1, 1)), Unit3D(in_channels, b3))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``(N, C_in, T, H, W)`` → ``(N, C_out, T, H, W)``."""
        return torch.cat([self.branch_0(x), self.branch_1(x), self.branch_2(x), self.branch_3(x)], dim=1)


# (name, input channels, channel list) of the Inception blocks, spec §2.2.
_MIXED: tuple[tuple[str, int, tuple[int, int, int, int, int, int]], ...] = (
    ("mixed_3b", 192, (64, 96, 128, 16, 32, 32)),
    ("mixed_3c", 256, (128, 128, 192, 32, 96, 64)),
    ("mixed_4b", 480, (192, 96, 208, 16, 48, 64)),
    ("mixed_4c", 512, (160, 112, 224, 24, 64, 64)),
    ("mixed_4d", 512, (128, 128, 256, 24, 64, 64)),
    ("mixed_4e", 512, (112, 144, 288, 32, 64, 64)),
    ("mixed_4f", 528, (256, 160, 320, 32, 128, 128)),
    ("mixed_5b", 832, (256, 160, 320, 32, 128, 128)),
    ("mixed_5c", 832, (384, 192, 384, 48, 128, 128)),
)


class InceptionI3d(nn.Module):
    """Inception-I3D backbone (spec §2.2), ending in global average pooling to 1024 features.

    The reference pools with a fixed ``(2, 4, 4)`` kernel, which only fits 16×112×112 clips; here the
    pool is adaptive, which gives the identical result at 16×112×112 (the mixed_5c map is then
    1024×2×4×4) and also accepts other sizes (e.g. 32×32 for tests).

    Args:
        with_logits: also build the 400-way logits conv ``conv3d_0c_1x1`` (1×1×1, with bias). It is
            never used in ``forward`` (spec §2.2); build it only to keep those checkpoint tensors.

    ``gradient_checkpointing`` (attribute, default False): recompute each layer's activations in the
    backward pass instead of storing them (:func:`hpmcore.models.recompute.checkpoint_module`; the
    BatchNorm running statistics are updated once, as without it).

    Shapes: ``(N, 3, T, H, W)`` → ``(N, 1024)``.
    """

    def __init__(self, *, with_logits: bool = False) -> None:
        super().__init__()
        self.gradient_checkpointing = False
        self.conv3d_1a_7x7 = Unit3D(3, 64, (7, 7, 7), (2, 2, 2))
        self.maxPool3d_2a_3x3 = MaxPool3dSame((1, 3, 3), (1, 2, 2))
        self.conv3d_2b_1x1 = Unit3D(64, 64)
        self.conv3d_2c_3x3 = Unit3D(64, 192, (3, 3, 3))
        self.maxPool3d_3a_3x3 = MaxPool3dSame((1, 3, 3), (1, 2, 2))
        self.mixed_3b = Mixed(*_MIXED[0][1:])
        self.mixed_3c = Mixed(*_MIXED[1][1:])
        self.maxPool3d_4a_3x3 = MaxPool3dSame((3, 3, 3), (2, 2, 2))
        self.mixed_4b = Mixed(*_MIXED[2][1:])
        self.mixed_4c = Mixed(*_MIXED[3][1:])
        self.mixed_4d = Mixed(*_MIXED[4][1:])
        self.mixed_4e = Mixed(*_MIXED[5][1:])
        self.mixed_4f = Mixed(*_MIXED[6][1:])
        self.maxPool3d_5a_2x2 = MaxPool3dSame((2, 2, 2), (2, 2, 2))
        self.mixed_5b = Mixed(*_MIXED[7][1:])
        self.mixed_5c = Mixed(*_MIXED[8][1:])
        self.conv3d_0c_1x1 = (
            Unit3D(FEATURE_DIM, NUM_KINETICS_CLASSES, use_bn=False, activation=False, bias=True)
            if with_logits
            else None
        )
        self._layers = [
            self.conv3d_1a_7x7,
            self.maxPool3d_2a_3x3,
            self.conv3d_2b_1x1,
            self.conv3d_2c_3x3,
            self.maxPool3d_3a_3x3,
            self.mixed_3b,
            self.mixed_3c,
            self.maxPool3d_4a_3x3,
            self.mixed_4b,
            self.mixed_4c,
            self.mixed_4d,
            self.mixed_4e,
            self.mixed_4f,
            self.maxPool3d_5a_2x2,
            self.mixed_5b,
            self.mixed_5c,
        ]

    def features(self, clips: torch.Tensor) -> torch.Tensor:
        """The mixed_5c map: ``(N, 3, T, H, W)`` → ``(N, 1024, T/8, H/32, W/32)`` (rounded up)."""
        _check_5d(clips, "clips")
        x = clips
        recompute = self.gradient_checkpointing and torch.is_grad_enabled()
        for layer in self._layers:
            x = checkpoint_module(layer, x) if recompute else layer(x)
        return x

    def forward(self, clips: torch.Tensor) -> torch.Tensor:
        """``(N, 3, T, H, W)`` → ``(N, 1024)``; at 16×112×112 the pre-pool map is ``(N, 1024, 2, 4, 4)``."""
        x = self.features(clips)  # (N, 1024, t, h, w)
        return F.adaptive_avg_pool3d(x, 1).flatten(1)  # (N, 1024)

    def backbone_parameters(self) -> list[nn.Parameter]:
        """All parameters except the (unused) logits conv."""
        return [p for name, p in self.named_parameters() if not name.startswith("conv3d_0c_1x1.")]


def clip_starts(num_frames: int = 96, clip_len: int = 16, stride: int = 10) -> list[int]:
    """Start frames of the overlapping I3D clips (spec §2.3): 96 frames → ``[0, 10, …, 80]`` (9 clips).

    Clips start every ``stride`` frames as long as a whole clip fits.

    Raises:
        ValueError: ``clip_len`` or ``stride`` is not positive, or ``num_frames < clip_len``.
    """
    if clip_len < 1 or stride < 1:
        raise ValueError(f"clip_len and stride must be positive, got clip_len={clip_len}, stride={stride}")
    if num_frames < clip_len:
        raise ValueError(f"need at least clip_len={clip_len} frames, got num_frames={num_frames}")
    return list(range(0, num_frames - clip_len + 1, stride))


class I3DVideoEncoder(nn.Module):
    """A whole video → features of its overlapping clips, in temporal order (spec §2.3).

    All clips of all videos are stacked into one batch and run through I3D once (so in training mode
    BatchNorm sees every clip of the step).

    Shapes: ``(B, 3, T, H, W)`` → ``(B, num_clips, 1024)``, or one video ``(3, T, H, W)`` →
    ``(num_clips, 1024)``; ``T = 96`` gives ``num_clips = 9``.
    """

    def __init__(self, backbone: InceptionI3d, *, clip_len: int = 16, clip_stride: int = 10) -> None:
        super().__init__()
        self.backbone = backbone
        self.clip_len = clip_len
        self.clip_stride = clip_stride

    def forward(self, video: torch.Tensor) -> torch.Tensor:
        """``(B, 3, T, H, W)`` → ``(B, J, 1024)``; ``(3, T, H, W)`` → ``(J, 1024)``."""
        if video.dim() not in (4, 5) or video.shape[-4] != 3 or video.shape[-3] < self.clip_len:
            raise ValueError(
                f"video: expected (B, 3, T, H, W) or (3, T, H, W) with T ≥ {self.clip_len}, "
                f"got shape {tuple(video.shape)}"
            )
        single = video.dim() == 4
        if single:
            video = video.unsqueeze(0)
        b, c, t, h, w = video.shape
        starts = clip_starts(t, self.clip_len, self.clip_stride)
        clips = torch.stack([video[:, :, s : s + self.clip_len] for s in starts], dim=1)  # (B, J, C, L, H, W)
        clips = clips.reshape(b * len(starts), c, self.clip_len, h, w)  # (B·J, C, L, H, W)
        feats = self.backbone(clips).view(b, len(starts), -1)  # (B, J, 1024)
        return feats[0] if single else feats


def build_i3d_encoder(
    *,
    weights: Path | str | None,
    seed: int = 0,
    clip_len: int = 16,
    clip_stride: int = 10,
    with_logits: bool = False,
) -> I3DVideoEncoder:
    """Build the I3D video encoder, loading Kinetics ``model_rgb.pth`` strictly.

    Args:
        weights: path of ``model_rgb.pth`` in the layout of spec §2.4, or ``None`` for a seeded random
            initialisation (logged as a warning: results are then not comparable to the paper).
        seed: seed of the random initialisation (the global RNG state is left untouched).
        clip_len, clip_stride: clip geometry, spec §2.3.
        with_logits: build the unused logits conv so its checkpoint tensors are loaded too.

    Raises:
        CheckpointError: the file is missing or does not match (see :func:`load_i3d_weights`).
    """
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        backbone = InceptionI3d(with_logits=with_logits)
    if weights is None:
        log.warning(
            "I3D: NO PRETRAINED WEIGHTS - using a random initialisation (seed %d); "
            "set the Kinetics model_rgb.pth path to reproduce HP-MCoRe",
            seed,
        )
    else:
        load_i3d_weights(backbone, weights)
    return I3DVideoEncoder(backbone, clip_len=clip_len, clip_stride=clip_stride)


def load_i3d_weights(model: InceptionI3d, path: Path | str) -> LoadReport:
    """Strictly load a Kinetics ``model_rgb.pth`` (spec §2.4) into ``model``.

    Every one of the 285 backbone tensors must be present with its documented shape. The two logits
    tensors are loaded when the model has the logits conv, otherwise shape-checked and dropped.
    ``num_batches_tracked`` entries may be present or absent.

    Raises:
        CheckpointError: naming the file and every missing, unexpected or mis-shaped key.
    """
    has_logits = model.conv3d_0c_1x1 is not None
    report = load_strict(model, path, ignorable=None if has_logits else _LOGITS_KEYS)
    backbone_loaded = report.loaded - (len(_LOGITS_KEYS) if has_logits else 0)
    if backbone_loaded != NUM_BACKBONE_TENSORS:  # load_strict already guarantees it; keep the count visible
        raise CheckpointError(f"checkpoint {path}: loaded {backbone_loaded} backbone tensors, expected 285")
    log.info("I3D: loaded %d backbone tensors from %s", backbone_loaded, path)
    return report


def _check_5d(x: torch.Tensor, what: str) -> None:
    if x.dim() != 5 or x.shape[1] != 3:
        raise ValueError(f"{what}: expected (N, 3, T, H, W), got shape {tuple(x.shape)}")
