"""HP-MCoRe end to end: the visual encoders fine-tuned from the decoded frames with the heads (spec §1.2,
§2, §3, §9.3).

:class:`EndToEndHPMCoRe` owns

- ``i3d``: :class:`~hpmcore.models.i3d.I3DVideoEncoder` (spec §2), trained at the full learning rate with
  its BatchNorm in training mode (statistics over all the clips of a step's 2B videos),
- ``static``: :class:`~hpmcore.models.static.StaticEncoder` with GSM (``temporal="gsm"``, spec §3.2–3.3)
  and **every BatchNorm frozen** in eval mode (§3.4; the affine parameters train), in the parameter group
  ``static_trunk`` (the trainer gives it ``train.static_trunk_lr_factor`` × lr, spec §9.3: 0.1×); absent
  when the heads use no static features (no static branch and no segmenter),
- ``heads``: the :class:`~hpmcore.models.hpmcore.HPMCoRe` of the cached mode, unchanged.

One model code path: the wrapper turns frames into the features the cached mode reads from disk —
``i3d (N, J, 1024)`` and ``static (N, T, 368)`` — and hands them, with the pose and the transitions, to
the same :meth:`HPMCoRe.encode` / :meth:`HPMCoRe.forward`. Its inputs are :class:`FrameInputs`: uint8 RGB
frames ``(N, T, H, W, 3)`` already flipped/cropped by the data pipeline
(:mod:`hpmcore.training.augment`); the wrapper scales and normalises them on the device with the
features stage's :func:`~hpmcore.extraction.features.preprocess` (ImageNet mean/std, spec §1.2), and the
same normalised tensor feeds both encoders. In :meth:`EndToEndHPMCoRe.forward` the queries and the
exemplars go through the encoders as one batch (spec §2.3: all 9 × 2B clips at once).

``heads.input_norm`` (the per-channel standardiser of the cached features) keeps working: it is fitted
once, before the first step, on the train split's features from the **initial** encoders as a training
step computes them (:meth:`EndToEndHPMCoRe.fit_input_norm`), then stays a fixed affine map while the
encoders train.

Activation checkpointing (:meth:`EndToEndHPMCoRe.set_activation_checkpointing`): I3D layer by layer
(:func:`~hpmcore.models.recompute.checkpoint_module`, BatchNorm statistics updated once) and timm's
stage-wise checkpointing of the RegNet trunk — same numbers, less activation memory, ~1/3 more compute.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import Literal

import torch
from torch import nn

from hpmcore.config import ConfigError, ModelConfig
from hpmcore.extraction.features import preprocess
from hpmcore.models.hpmcore import HPMCoRe, PairOutput, VideoEncoding, VideoInputs, build_hpmcore
from hpmcore.models.i3d import I3DVideoEncoder, InceptionI3d, build_i3d_encoder
from hpmcore.models.recompute import keep_batchnorm_buffers
from hpmcore.models.static import StaticEncoder, build_static_encoder
from hpmcore.training.losses import LossTerms
from hpmcore.training.protocol import InputSpec, PairTargets, Role

__all__ = [
    "I3D_GROUP",
    "STATIC_TRUNK_GROUP",
    "EndToEndConfig",
    "EndToEndHPMCoRe",
    "FrameInputs",
    "build_end_to_end",
]

I3D_GROUP = "i3d"
"""Parameter group of the I3D encoder (full learning rate, spec §9.3)."""
STATIC_TRUNK_GROUP = "static_trunk"
"""Parameter group of the RegNet+GSM trunk (``train.static_trunk_lr_factor`` × lr, spec §9.3)."""


@dataclass(frozen=True)
class FrameInputs:
    """N videos as frames (queries or exemplars), with their poses and ground-truth transitions."""

    frames: torch.Tensor
    """uint8 ``(N, T, H, W, 3)`` RGB, as the data pipeline shows them (flipped/cropped in training)."""
    skeleton: torch.Tensor | None = None
    """``(N, 2, T, 16, 1)`` poses (flipped with the frames when ``train.flip_pose``)."""
    transitions: torch.Tensor | None = None
    """``(N, 2)`` int ground truth ``(st, ed)``; a row ``(-1, -1)`` for a video without it."""

    def __len__(self) -> int:
        return self.frames.shape[0]

    def to(self, device: torch.device | str) -> FrameInputs:
        """A copy with every tensor on ``device`` (non-blocking from pinned memory)."""
        return FrameInputs(
            **{
                f.name: None if (t := getattr(self, f.name)) is None else t.to(device, non_blocking=True)
                for f in fields(self)
            }
        )

    @staticmethod
    def cat(parts: list[FrameInputs]) -> FrameInputs:
        """Concatenate along the video axis (a field must be present in all parts or in none)."""
        out = {}
        for f in fields(FrameInputs):
            values = [getattr(p, f.name) for p in parts]
            if all(v is None for v in values):
                out[f.name] = None
            elif any(v is None for v in values):
                raise ValueError(f"cannot concatenate {f.name}: present in some parts only")
            else:
                out[f.name] = torch.cat(values)
        return FrameInputs(**out)


@dataclass(frozen=True)
class EndToEndConfig:
    """What an end-to-end model is (recorded in checkpoints; :meth:`EndToEndHPMCoRe.from_config`)."""

    heads: ModelConfig = field(default_factory=ModelConfig)
    """The HP-MCoRe heads; ``heads.num_frames`` is T, ``heads.clip_stride`` the I3D clip stride."""
    clip_len: int = 16
    """Frames per I3D clip (spec §2.3)."""
    temporal: Literal["gsm", "tsm"] = "gsm"
    """Temporal module of the static encoder: GSM (the reference, spec §3.3) or TSM (§3.5)."""
    i3d_init: str = "random-init"
    """The starting I3D weights: ``sha256:<hex>`` of the file, or ``random-init`` (seeded by
    ``init_seed``); part of what a run is a function of."""
    static_init: str = "random-init"
    """The starting RegNetY-002 weights, as ``i3d_init``."""
    init_seed: int = 0
    """Seed of a random encoder initialisation (the features stage's ``init_seed``)."""

    def validate(self) -> None:
        """Raise ``ConfigError`` for values no model can be built from."""
        self.heads.validate()
        if self.clip_len < 1 or self.clip_len > self.heads.num_frames:
            raise ConfigError(
                f"end-to-end clip_len must be in [1, T={self.heads.num_frames}], got {self.clip_len}"
            )
        if self.temporal not in ("gsm", "tsm"):
            raise ConfigError(f"end-to-end temporal must be gsm or tsm, got {self.temporal!r}")


def _needs_static(cfg: ModelConfig) -> bool:
    return cfg.use_static or cfg.use_segmentation


class EndToEndHPMCoRe(nn.Module):
    """The encoders and the HP-MCoRe heads, trained together (see the module docstring).

    Build it with :func:`build_end_to_end` (pretrained or seeded encoders) or
    :meth:`from_config` (the architecture only, for a checkpoint's weights).
    """

    def __init__(
        self,
        config: EndToEndConfig,
        *,
        i3d: I3DVideoEncoder,
        static: StaticEncoder | None,
        heads: HPMCoRe,
    ) -> None:
        super().__init__()
        config.validate()
        if heads.config != config.heads:
            raise ValueError("heads were built with another config than config.heads")
        if (static is None) == _needs_static(config.heads):
            raise ValueError("a static encoder is needed exactly when the heads use static features")
        if i3d.clip_stride != config.heads.clip_stride or i3d.clip_len != config.clip_len:
            raise ValueError(
                f"I3D clips ({i3d.clip_len} frames every {i3d.clip_stride}) differ from the config's "
                f"({config.clip_len} every {config.heads.clip_stride})"
            )
        self.config = config
        self.i3d = i3d
        self.static = static
        self.heads = heads

    @classmethod
    def from_config(cls, config: EndToEndConfig) -> EndToEndHPMCoRe:
        """The architecture of ``config`` with seeded weights (to be replaced by a checkpoint's)."""
        config.validate()
        h = config.heads
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(config.init_seed)
            i3d = I3DVideoEncoder(InceptionI3d(), clip_len=config.clip_len, clip_stride=h.clip_stride)
            static = (
                StaticEncoder(temporal=config.temporal, num_frames=h.num_frames, freeze_bn=True)
                if _needs_static(h)
                else None
            )
        return cls(config, i3d=i3d, static=static, heads=build_hpmcore(h))

    # -----------------------------------------------------------------------------------------------------
    # Frames → the heads' inputs

    def visual_features(self, frames: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        """uint8 ``(N, T, H, W, 3)`` → ``(i3d (N, J, 1024), static (N, T, 368) or None)``."""
        t = self.config.heads.num_frames
        if frames.dim() != 5 or frames.shape[1] != t or frames.shape[-1] != 3:
            raise ValueError(f"frames: expected uint8 (N, {t}, H, W, 3), got shape {tuple(frames.shape)}")
        x = preprocess(frames)  # (N, 3, T, H, W) float32, ImageNet-normalised
        i3d = self.i3d(x)  # (N, J, 1024)
        static = None if self.static is None else self.static(x)  # (N, T, 368)
        return i3d, static

    def video_inputs(self, videos: FrameInputs) -> VideoInputs:
        """The heads' :class:`VideoInputs` of ``videos``: features from the current encoders."""
        i3d, static = self.visual_features(videos.frames)
        return VideoInputs(i3d=i3d, static=static, skeleton=videos.skeleton, transitions=videos.transitions)

    def encode(self, videos: FrameInputs, *, use_gt: bool | torch.Tensor | None = None) -> VideoEncoding:
        """Encoders, then :meth:`HPMCoRe.encode` (per-video, cacheable in eval mode, spec §10.2)."""
        return self.heads.encode(self.video_inputs(videos), use_gt=use_gt)

    def forward_pair(self, query: VideoEncoding, exemplar: VideoEncoding) -> PairOutput:
        """The pair heads (:meth:`HPMCoRe.forward_pair`)."""
        return self.heads.forward_pair(query, exemplar)

    def forward(self, query: FrameInputs, exemplar: FrameInputs) -> PairOutput:
        """B (query, exemplar) pairs → :class:`PairOutput`; the 2B videos go through the encoders in one
        batch, then through :meth:`HPMCoRe.forward`."""
        if len(query) != len(exemplar):
            raise ValueError(f"forward: {len(query)} queries vs {len(exemplar)} exemplars")
        b = len(query)
        i3d, static = self.visual_features(torch.cat([query.frames, exemplar.frames]))  # 2B videos

        def side(v: FrameInputs, rows: slice) -> VideoInputs:
            return VideoInputs(
                i3d=i3d[rows],
                static=None if static is None else static[rows],
                skeleton=v.skeleton,
                transitions=v.transitions,
            )

        return self.heads(side(query, slice(0, b)), side(exemplar, slice(b, 2 * b)))

    # -----------------------------------------------------------------------------------------------------
    # The pair-model contract (hpmcore.training.protocol.PairModel)

    def input_spec(self, role: Role) -> InputSpec:
        """The heads' needs (:meth:`HPMCoRe.input_spec`) plus T decoded frames per video."""
        return replace(self.heads.input_spec(role), num_frames=self.config.heads.num_frames)

    def pair_loss(self, out: PairOutput, targets: PairTargets) -> LossTerms:
        """The loss of spec §8 (:meth:`HPMCoRe.pair_loss`)."""
        return self.heads.pair_loss(out, targets)

    def exemplar_uses_gt(self) -> bool:
        """As :meth:`HPMCoRe.exemplar_uses_gt`."""
        return self.heads.exemplar_uses_gt()

    @torch.no_grad()
    def fit_input_norm(self, videos: FrameInputs | Iterable[FrameInputs]) -> None:
        """Fit the heads' input standardiser (no-op without ``input_norm``) on the features the current
        encoders give ``videos`` (one :class:`FrameInputs` or batches of them; pass a training step's
        2B videos per batch) **as in training**: I3D's BatchNorm normalises with each batch's statistics,
        which is what the heads see in a training step (eval-mode statistics of a randomly initialised
        I3D are far off them). The BatchNorm running statistics are left as they were."""
        if self.heads.input_norm is None:
            return
        batches = [videos] if isinstance(videos, FrameInputs) else videos
        was_training = self.training
        device = next(self.parameters()).device
        i3d, static = [], []
        with keep_batchnorm_buffers(self):
            self.train()
            try:
                for batch in batches:
                    f_i3d, f_static = self.visual_features(batch.frames.to(device))
                    i3d.append(f_i3d.float())
                    if f_static is not None:
                        static.append(f_static.float())
            finally:
                self.train(was_training)
        self.heads.fit_input_norm(
            VideoInputs(i3d=torch.cat(i3d), static=torch.cat(static) if static else None)
        )

    def parameter_groups(self) -> dict[str, list[nn.Parameter]]:
        """``i3d``, ``static_trunk`` (RegNet + GSM) and the heads' groups; every trainable parameter once."""
        groups = {I3D_GROUP: [p for p in self.i3d.parameters() if p.requires_grad]}
        if self.static is not None:
            groups[STATIC_TRUNK_GROUP] = [p for p in self.static.parameters() if p.requires_grad]
        heads = self.heads.parameter_groups()
        clash = set(groups) & set(heads)
        if clash:
            raise ValueError(f"parameter group names used twice: {sorted(clash)}")
        return {**groups, **heads}

    def set_activation_checkpointing(self, enabled: bool = True) -> None:
        """Recompute the encoders' activations in the backward pass instead of storing them."""
        self.i3d.backbone.gradient_checkpointing = enabled
        if self.static is not None:
            self.static.trunk.set_grad_checkpointing(enabled)


def build_end_to_end(
    config: EndToEndConfig,
    *,
    i3d_weights: Path | str | None,
    static_weights: Path | str | None,
    seed: int = 0,
) -> EndToEndHPMCoRe:
    """The end-to-end model at the start of training.

    Args:
        config: the architecture; ``config.init_seed`` seeds an encoder without weights.
        i3d_weights, static_weights: Kinetics ``model_rgb.pth`` / timm ``regnety_002`` files, loaded
            strictly (:func:`~hpmcore.models.i3d.build_i3d_encoder`,
            :func:`~hpmcore.models.static.build_static_encoder`), or ``None`` for a seeded random
            initialisation (logged as a warning). With the features stage's weights and seed, the
            encoders start as the ones that computed the cached features.
        seed: seed of the heads' initialisation (:func:`~hpmcore.models.hpmcore.build_hpmcore`).

    Raises:
        CheckpointError: a weights file is missing or does not match.
    """
    config.validate()
    h = config.heads
    i3d = build_i3d_encoder(
        weights=i3d_weights, seed=config.init_seed, clip_len=config.clip_len, clip_stride=h.clip_stride
    )
    static = None
    if _needs_static(h):
        static = build_static_encoder(
            weights=static_weights,
            temporal=config.temporal,
            num_frames=h.num_frames,
            freeze_bn=True,
            seed=config.init_seed,
        )
    return EndToEndHPMCoRe(config, i3d=i3d, static=static, heads=build_hpmcore(h, seed=seed))
