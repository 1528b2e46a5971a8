"""Typed configuration: ``params.yaml`` ↔ frozen dataclasses that reject unknown keys.

Each top-level section of ``params.yaml`` maps to one dataclass below; :func:`load_params` builds the
whole :class:`Params` and :func:`load_section` one section. Unknown keys, missing required keys and
values of the wrong type raise :class:`ConfigError` naming the file and the dotted key.
"""

from __future__ import annotations

import dataclasses
import math
import types
import typing
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Literal, TypeVar

import yaml

T = TypeVar("T")


class ConfigError(ValueError):
    """``params.yaml`` (or a section of it) is malformed; the message names the file and key."""


ExemplarMode = Literal["dive_number", "difficulty", "any"]
"""How exemplars are chosen: same dive number (w/ DN), same DD, or any train video (w/o DN)."""

MAX_SEED = 2**32 - 1
"""Seeds are 32-bit unsigned integers (numpy's legacy seeding takes no more)."""
MAX_SIDE = 4096
"""Largest frame width/height (px) rendered or decoded."""
MAX_FRAMES = 4096
"""Largest number of frames sampled per dive (``decode.num_frames``) or rendered per synthetic dive."""
MAX_DECODED_BYTES = 2**31
"""Largest decoded dive, ``num_frames · height · width · 3`` bytes (2 GiB)."""
MAX_BATCH = 65536
"""Largest batch size of any kind."""
FROM_FEATURES = {"from_data": "read from the features manifest (hpmcore.training.bank.BankDims)"}
"""Field metadata of a config value that is not a parameter: the training runtime fills it in from the
features it is given (widths, T, the I3D clip stride), so ``params.yaml`` must not state it."""


def _check_range(where: str, value: float, low: float, high: float) -> None:
    """Raise ``ConfigError`` naming ``where`` unless ``low <= value <= high``."""
    if not low <= value <= high:
        raise ConfigError(f"{where} must be in [{low}, {high}], got {value}")


def _check_seed(where: str, value: int) -> None:
    _check_range(where, value, 0, MAX_SEED)


@dataclass(frozen=True)
class SynthConfig:
    """The synthetic diving dataset generator (stage ``synth``).

    The dataset is a pure function of these values: same values → byte-identical annotation table.
    """

    seed: int = 2026
    """Seed of the generator; identifies the dataset (separate from the top-level training seed)."""
    num_dives: int = 240
    """Number of dives to generate (> 0)."""
    width: int = 112
    """Rendered frame width in pixels."""
    height: int = 112
    """Rendered frame height in pixels."""
    fps: int = 25
    """Frame rate written into the mp4 files."""
    min_frames: int = 60
    """Shortest dive, in frames (take-off + flight + entry)."""
    max_frames: int = 130
    """Longest dive, in frames."""
    test_fraction: float = 0.25
    """Fraction of dives put in the test split (the rest is train; val is carved later)."""
    num_judges: int = 7
    """Judges per dive (FINA rule: drop the two highest and two lowest when there are 7)."""

    @classmethod
    def embedded(cls) -> SynthConfig:
        """The embedded default dataset of ``params.yaml``: 1,000 dives rendered at 64 x 64 (the class
        defaults stay the earlier, smaller 240 dives at 112 x 112)."""
        return cls(num_dives=1000, width=64, height=64)

    def validate(self) -> None:
        """Raise ``ConfigError`` for values no dataset can be generated from."""
        _check_seed("synth.seed", self.seed)
        if self.num_dives <= 0:
            raise ConfigError(f"synth.num_dives must be > 0, got {self.num_dives}")
        _check_range("synth.num_dives", self.num_dives, 1, 1_000_000)
        _check_range("synth.width", self.width, 32, MAX_SIDE)
        _check_range("synth.height", self.height, 32, MAX_SIDE)
        _check_range("synth.max_frames", self.max_frames, 24, MAX_FRAMES)
        _check_range("synth.fps", self.fps, 1, 1000)
        if self.width < 32 or self.height < 32:
            raise ConfigError(f"synth.width/height must be >= 32 px, got {self.width}x{self.height}")
        if self.width % 2 or self.height % 2:
            raise ConfigError(f"synth.width/height must be even (H.264), got {self.width}x{self.height}")
        if not 3 * 8 <= self.min_frames <= self.max_frames:
            raise ConfigError(
                f"synth needs 24 <= min_frames <= max_frames, got {self.min_frames}, {self.max_frames}"
            )
        if not 0.0 <= self.test_fraction < 1.0:
            raise ConfigError(f"synth.test_fraction must be in [0, 1), got {self.test_fraction}")
        if self.num_judges not in (3, 5, 7):
            raise ConfigError(f"synth.num_judges must be 3, 5 or 7, got {self.num_judges}")
        if self.fps <= 0:
            raise ConfigError(f"synth.fps must be > 0, got {self.fps}")


def project_path(path: str | Path, project_dir: Path) -> Path:
    """A path from ``params.yaml``: absolute as it is, relative to ``project_dir`` (the folder of the
    parameter file) otherwise."""
    path = Path(path)
    return path if path.is_absolute() else Path(project_dir) / path


@dataclass(frozen=True)
class DataConfig:
    """Which dataset the ``prepare`` stage indexes into the canonical table, and how it is split."""

    format: Literal["synthetic", "canonical", "finediving", "mtl-aqa"] = "synthetic"
    """Dataset format of ``root``."""
    root: str = "data/synth"
    """Dataset root folder (relative to the project or absolute)."""
    val_fraction: float = 0.1
    """Fraction of train carved out as validation, stratified by dive number (spec §11.4)."""
    bad_transitions: Literal["keep", "skip", "fail"] = "keep"
    """A dive whose step labels cannot be used (e.g. FineDiving's ``steps_transit_frames`` with ``-1``):
    ``keep`` it for scoring with null transitions (left out of ``L_tas`` and tIoU/AIoU), ``skip`` it
    (dropped from the dataset), or ``fail`` (``prepare`` stops naming the file and keys)."""

    def root_path(self, project_dir: Path) -> Path:
        """``root`` as a path: relative roots are taken relative to ``project_dir``."""
        root = Path(self.root)
        return root if root.is_absolute() else Path(project_dir) / root

    def validate(self) -> None:
        """Raise ``ConfigError`` for an impossible split."""
        if not 0.0 <= self.val_fraction < 1.0:
            raise ConfigError(f"data.val_fraction must be in [0, 1), got {self.val_fraction}")


@dataclass(frozen=True)
class DecodeConfig:
    """Video decoding (stage ``decode``): uniform sampling of the dive, resized in the decoder."""

    num_frames: int = 96
    """T, frames sampled uniformly over each dive, both end frames included (spec §1.1)."""
    width: int = 32
    """Decoded frame width in pixels. 32 by default so that I3D (1.1 GFLOP per 16-frame clip at 32²,
    14 at 112²) keeps the embedded pipeline within minutes on 2 CPU cores; the spec uses 112 (§1.2)."""
    height: int = 32
    """Decoded frame height in pixels (FineDiving per spec §1.2: 200, with ``features.crop_size`` 112)."""
    min_source_frames: int = 16
    """Dives with fewer source frames are rejected as too short."""
    on_error: Literal["skip", "fail"] = "fail"
    """An unreadable or too-short video: ``skip`` records it in the failures table, ``fail`` stops."""
    allow_outside_root: bool = False
    """Read a ``video_path`` that leaves ``data.root`` (absolute, ``..``, a symlink out of it); refused
    by default: such a file is read from anywhere on the machine and is not a DVC dependency."""

    @classmethod
    def embedded(cls) -> DecodeConfig:
        """``params.yaml``'s decoding of the embedded dataset: T = 48 at 32 x 32 (the class default T is
        the spec's 96)."""
        return cls(num_frames=48)

    def validate(self) -> None:
        """Raise ``ConfigError`` for impossible decoding settings."""
        if self.num_frames < 16:
            raise ConfigError(f"decode.num_frames must be >= 16 (one I3D clip), got {self.num_frames}")
        if self.width < 16 or self.height < 16:
            raise ConfigError(f"decode.width/height must be >= 16 px, got {self.width}x{self.height}")
        if self.min_source_frames < 2:
            raise ConfigError(f"decode.min_source_frames must be >= 2, got {self.min_source_frames}")
        _check_range("decode.num_frames", self.num_frames, 16, MAX_FRAMES)
        _check_range("decode.width", self.width, 16, MAX_SIDE)
        _check_range("decode.height", self.height, 16, MAX_SIDE)
        _check_range("decode.min_source_frames", self.min_source_frames, 2, 2**31 - 1)
        if self.num_frames * self.width * self.height * 3 > MAX_DECODED_BYTES:
            raise ConfigError(
                f"decode.num_frames x height x width x 3 = {self.num_frames * self.width * self.height * 3} "
                f"bytes per dive, more than {MAX_DECODED_BYTES} (2 GiB)"
            )


@dataclass(frozen=True)
class ExtractConfig:
    """Where the extraction stages (``decode``, ``pose``, ``features``) run their per-video work
    (:mod:`hpmcore.extraction.executor`). Speed only: the outputs are byte-identical whichever runs
    them, so these are not DVC params of any stage and not part of any cache key."""

    executor: Literal["local", "dask"] = "local"
    """``local``: in the stage's process; ``dask``: as tasks on a Dask ``distributed`` cluster."""
    scheduler: str | None = None
    """``dask``: address of an existing scheduler (``tcp://host:8786``); ``None``: start a local cluster
    of ``workers`` processes for the stage (for ``features`` on CUDA: one worker per GPU)."""
    workers: int = 2
    """``dask`` without a scheduler: worker processes of the local cluster (one thread each)."""
    connect_timeout: float = 10.0
    """Seconds to wait for the scheduler (and for a first worker) before the stage fails."""

    def validate(self) -> None:
        """Raise ``ConfigError`` for settings no executor can use."""
        if self.workers < 1:
            raise ConfigError(f"extract.workers must be >= 1, got {self.workers}")
        if self.connect_timeout <= 0:
            raise ConfigError(f"extract.connect_timeout must be > 0, got {self.connect_timeout}")
        if self.scheduler is not None:
            if self.executor != "dask":
                raise ConfigError("extract.scheduler is set but extract.executor is not dask")
            if "://" not in self.scheduler:
                raise ConfigError(
                    f"extract.scheduler must be an address such as tcp://host:8786, got {self.scheduler!r}"
                )


@dataclass(frozen=True)
class PoseConfig:
    """Skeleton extraction (stage ``pose``, :mod:`hpmcore.extraction.pose`) at decode's T frames."""

    backend: Literal["annotations", "mmpose"] = "annotations"
    """``annotations``: import existing skeletons; ``mmpose``: top-down estimation on the video frames."""
    source: Literal["skeletons", "finediving-npz", "mpii-json"] = "skeletons"
    """annotations backend: ``skeletons`` (canonical skeleton Parquet, e.g. the synthetic ground truth),
    ``finediving-npz`` (FineDiving-Pose ``pred_comp_<i>.npz``) or ``mpii-json`` (spec §12.4)."""
    annotations_path: str | None = None
    """annotations backend: the skeleton Parquet file / FineDiving-Pose root / JSON folder; ``None``:
    ``<dataset root>/skeletons.parquet``, ``FineDiving-Pose`` or ``FineDiving-Pose-MPII``."""
    normalize: Literal["none", "frame"] = "none"
    """Normalisation the model applies (recorded in the output; coordinates stay in pixels): ``none``
    (spec §1.4, fidelity) or ``frame`` (centre of the frame → 0, longer side → [-1, 1])."""
    config: str = "body_2d_keypoint/rtmpose/coco/rtmpose-m_8xb256-420e_coco-256x192.py"
    """mmpose backend: model config, a file or a path inside mmpose's bundled ``.mim/configs``. The file is
    Python that mmengine executes when it loads it: point it only at a config you trust (as with
    ``trust_checkpoint``)."""
    checkpoint: str | None = None
    """mmpose backend: local checkpoint of that model (required unless ``random_init``)."""
    random_init: bool = False
    """mmpose backend: allow running without checkpoints on random weights (tests only)."""
    trust_checkpoint: bool = False
    """Allow a full (non weights-only) unpickle of checkpoints carrying metadata: the file can run code, so
    only for trusted files (``config`` and ``detector_config`` are code too: mmengine executes them)."""
    detector_config: str | None = None
    """mmpose backend: mmdet person detector config (file or in mmdet's ``.mim/configs``); ``None``:
    track the box from the previous frame's keypoints (whole frame for the first)."""
    detector_checkpoint: str | None = None
    """mmpose backend: local checkpoint of the detector (required with ``detector_config``)."""
    detector_score: float = 0.3
    """Lowest score of a person detection used as the box."""
    keypoint_score: float = 0.3
    """Lowest score of a keypoint used to track the box into the next frame."""
    box_margin: float = 0.25
    """The tracked box is the confident keypoints' box grown by this fraction of its size per side."""
    device: Literal["auto", "cpu", "cuda"] = "auto"
    """mmpose backend: ``auto`` = CUDA when available, else CPU."""
    on_error: Literal["skip", "fail"] = "fail"
    """A dive with unreadable or malformed input: ``skip`` records it in the failures table,
    ``fail`` stops."""

    def validate(self) -> None:
        """Raise ``ConfigError`` for inconsistent settings (files are checked when used)."""
        if self.backend == "mmpose":
            if self.checkpoint is None and not self.random_init:
                raise ConfigError(
                    "pose.checkpoint is required with pose.backend: mmpose "
                    "(pose.random_init: true runs on random weights, for tests only)"
                )
            if self.checkpoint is not None and self.random_init:
                raise ConfigError("pose.checkpoint and pose.random_init: true are mutually exclusive")
            if self.detector_config is not None and self.detector_checkpoint is None and not self.random_init:
                raise ConfigError("pose.detector_config needs pose.detector_checkpoint")
        if self.detector_checkpoint is not None and self.detector_config is None:
            raise ConfigError("pose.detector_checkpoint given without pose.detector_config")
        for name in ("detector_score", "keypoint_score"):
            if not 0.0 <= getattr(self, name) <= 1.0:
                raise ConfigError(f"pose.{name} must be in [0, 1], got {getattr(self, name)}")
        if not 0.0 <= self.box_margin <= 2.0:
            raise ConfigError(f"pose.box_margin must be in [0, 2], got {self.box_margin}")


@dataclass(frozen=True)
class FeaturesConfig:
    """Cached encoder features (stage ``features``, :mod:`hpmcore.extraction.features`) of decoded frames.

    Per video: I3D on overlapping clips → ``(num_clips, 1024)`` (spec §2.3) and RegNetY-002 per frame
    (no temporal module) → ``(T, 368)`` (spec §3.1).
    """

    i3d_weights: str | None = None
    """Kinetics I3D ``model_rgb.pth`` (spec §2.4 key layout), relative to the project or absolute;
    ``None`` explicitly asks for a seeded random initialisation (logged, recorded as ``random-init``)."""
    static_weights: str | None = None
    """timm ImageNet ``regnety_002`` weights (spec §3.7); ``None``: seeded random init, as above."""
    init_seed: int = 0
    """Seed of the random initialisation of an encoder whose weights are ``None``."""
    clip_len: int = 16
    """Frames per I3D clip (spec §2.3)."""
    clip_stride: int = 10
    """Start-to-start distance of consecutive I3D clips: T = 96 → 9 clips (spec §2.3)."""
    crop_size: int | None = None
    """Centre crop of ``crop_size``² px before both encoders (the spec's test-time crop: decode at
    112x200, crop 112 → x-offset 0, y-offset 44, spec §1.2); ``None``: the decoded frames as they are."""
    batch_size: int = 8
    """Videos per forward pass (all their clips / frames in one batch)."""
    device: Literal["auto", "cpu", "cuda"] = "auto"
    """``auto`` = CUDA when available, else CPU."""
    amp: bool = True
    """On CUDA: run under autocast (bf16 where supported, else fp16); ignored on CPU (always fp32)."""
    on_error: Literal["skip", "fail"] = "fail"
    """An unreadable decoded video or non-finite features: ``skip`` records it in the failures table,
    ``fail`` stops."""

    @classmethod
    def embedded(cls) -> FeaturesConfig:
        """``params.yaml``'s features of the embedded dataset: I3D clips every 8 frames (5 clips at T = 48;
        the class default is the spec's stride 10)."""
        return cls(clip_stride=8)

    def validate(self) -> None:
        """Raise ``ConfigError`` for impossible settings (weights files are checked when used)."""
        if self.clip_len < 1 or self.clip_stride < 1:
            raise ConfigError(
                f"features.clip_len and clip_stride must be >= 1, got {self.clip_len}, {self.clip_stride}"
            )
        if self.crop_size is not None and self.crop_size < 16:
            raise ConfigError(f"features.crop_size must be >= 16 px or null, got {self.crop_size}")
        if self.batch_size < 1:
            raise ConfigError(f"features.batch_size must be >= 1, got {self.batch_size}")
        _check_seed("features.init_seed", self.init_seed)
        _check_range("features.clip_len", self.clip_len, 1, MAX_FRAMES)
        _check_range("features.clip_stride", self.clip_stride, 1, MAX_FRAMES)
        _check_range("features.batch_size", self.batch_size, 1, MAX_BATCH)
        if self.crop_size is not None:
            _check_range("features.crop_size", self.crop_size, 16, MAX_SIDE)


@dataclass(frozen=True)
class ModelConfig:
    """Architecture, ablation switches and loss weights of :class:`~hpmcore.models.hpmcore.HPMCoRe` (§4–§8).

    The class defaults are the reference's sizes (D = 256, 4 decoder blocks, HD-GCN width 64, …) and no
    input normalisation; the pipeline's default (``params.yaml``, :meth:`cpu_default`) is smaller so it
    trains in about 2.5 minutes on 2 CPU cores.
    """

    i3d_dim: int = field(default=1024, metadata=FROM_FEATURES)
    """Width of the cached I3D clip features (from the features, not a param)."""
    static_dim: int = field(default=368, metadata=FROM_FEATURES)
    """Width of the cached static (RegNetY-002) per-frame features (from the features, not a param)."""
    num_frames: int = field(default=96, metadata=FROM_FEATURES)
    """T, sampled frames per video (static features and poses must have it; from the features)."""
    clip_stride: int = field(default=10, metadata=FROM_FEATURES)
    """Frames between I3D clip starts: frame transition ``t`` → clip ``t // clip_stride`` (§5.6; from the
    features manifest)."""
    dim: int = 256
    """D, the common token width."""
    heads: int = 2
    """Attention heads in PoseAttn and the decoders."""
    decoder_depth: int = 4
    """Blocks per cross-attention decoder."""
    mlp_ratio: int = 4
    """MLP expansion in PoseAttn and the decoders."""
    reducer_extra: int = 128
    """Reducer hidden width is ``C + reducer_extra``."""
    fix_size: int = 10
    """F, tokens per stage."""
    gru_hidden: int | None = None
    """Segmenter GRU hidden size per direction (``None``: ``static_dim``)."""
    gru_dropout: float = 0.5
    """Dropout on the GRU output."""
    dn_classes: int = 60
    """Classes of the HD-GCN dive-number head (60 in the reference; 52 is the clean choice)."""
    skeleton_channels: int = 64
    """HD-GCN base width c (units l1–l4 have c channels, l5 and ``F_sk`` 2c); 64 = reference."""
    reference_groups: bool = False
    """HD-GCN: reproduce the reference's shifted AHA joint groups (§13 item 10)."""
    input_norm: bool = False
    """Standardise each I3D and static feature channel with the train split's mean and std (stored in
    the model's state; a deviation from the reference, needed with randomly initialised encoders,
    whose features are ~1e-6)."""
    use_skeleton: bool = True
    """False: no HD-GCN and no pose term in the fusion (ablation)."""
    pose_fusion: Literal["bias", "tokens"] = "bias"
    """How the skeleton enters PoseAttn (§7.2): ``bias`` (reference) only as the additive prior on the
    attention logits; ``tokens`` (a deviation) also adds the projected skeleton tokens to the stage's I3D
    tokens before the block, so what the skeleton shows can reach the regressors directly."""
    segmenter_input: Literal["static", "static+skeleton"] = "static"
    """What the segmenter's BiGRU reads (§5.1): ``static`` (reference) the per-frame static features;
    ``static+skeleton`` (a deviation) those concatenated with HD-GCN's per-frame ``F_sk``, so the stage
    transitions can be read off the body's motion (needs the skeleton)."""
    skeleton_skip: bool = False
    """Append the batch-normalised joint coordinates (``2·16`` channels per frame) to HD-GCN's ``F_sk``
    before stage pooling (a deviation, a skip connection around HD-GCN): its last layer averages over
    the joints, which loses where each joint is, while stage-pooled coordinates carry the take-off
    height, body shape and entry angle almost linearly."""
    skeleton_kinematics: bool = False
    """With ``skeleton_skip``: the skip carries pelvis-centred joint coordinates plus per-frame body
    angles (trunk orientation and rotation speed, knee/hip/shoulder/elbow flexion per side and their
    left − right asymmetry, head to trunk; :mod:`hpmcore.models.kinematics`) instead of the raw
    coordinates (a deviation): body shape, rotation steadiness and entry angle are angles, which raw
    pixel coordinates of a somersaulting diver carry only non-linearly."""
    feature_dropout: float = 0.0
    """Dropout on the standardised I3D and static input features in training (0 = off, the reference):
    with randomly initialised encoders those features identify a video more than they describe it, so
    without it the heads memorise the training videos."""
    use_i3d: bool = True
    """False (a deviation, needs ``pose_fusion: tokens``): the I3D tokens do not enter the fused branch;
    each stage's PoseAttnNet reads the embedded skeleton tokens alone, so ``F_fu`` is built from the
    pose. The I3D features are still read and checked, but no I3D reducer is built. With randomly
    initialised encoders (the embedded default) the I3D features identify a video more than they
    describe it and the heads fit the training videos with them (README, Results); real Kinetics
    weights are what the reference's ``true`` assumes."""
    use_static: bool = True
    """False: no static branch, Δ = Δ_fu (ablation)."""
    use_segmentation: bool = True
    """False: fixed-thirds transitions, no segmenter and no ``L_tas`` (ablation)."""
    decode: Literal["halves", "joint"] = "halves"
    """Transition decoding at eval: the reference's halves or joint ``s < e`` (§13 item 4)."""
    exemplar_gt_at_test: bool = False
    """Eval: pool exemplars with their ground-truth transitions instead of decoded ones (§13 item 5)."""
    lam: float = 1.0
    """λ in Δ = (Δ_fu + λΔ_st)/(1+λ) (§7.6)."""
    delta_scale: float = 1.0
    """Each branch's Δ is this times its stage-weighted regressor output (1 = reference). The heads start
    with outputs near 0; a scale of about the training scores' spread (score / DD on the embedded data:
    sd ≈ 3) lets Adam, whose steps have a fixed size, reach the scores' range in the first epoch instead
    of spending several epochs growing the last layer (a deviation)."""
    splash_head: bool = False
    """Add a ``Linear(D → 1)`` splash-size head on the mean entry-stage fused token."""
    contrastive_weight: float = 10.0
    """Weight of each stage-wise contrastive term; 0 turns the loss off (ablation)."""
    tau: float = 0.1
    """Contrastive temperature."""
    tas_entry_weight: float = 2.0
    """Channel-1 target weight of ``L_tas`` (2 = reference, 1 = clean; §13 item 3)."""
    dive_number_weight: float = 0.0
    """β, weight of the dive-number CE (0 = reference)."""
    splash_weight: float = 0.0
    """Weight of the splash auxiliary loss (0 = off; > 0 needs ``splash_head``)."""

    def validate(self) -> None:
        """Raise ``ValueError`` for values no model can be built from."""
        for name in (
            "i3d_dim",
            "static_dim",
            "dim",
            "heads",
            "decoder_depth",
            "mlp_ratio",
            "fix_size",
        ):
            if getattr(self, name) < 1:
                raise ConfigError(f"model.{name} must be >= 1, got {getattr(self, name)}")
        if self.skeleton_channels < 8 or self.skeleton_channels % 8:
            raise ConfigError(f"model.skeleton_channels must be a multiple of 8: {self.skeleton_channels}")
        if self.dim % self.heads:
            raise ConfigError(f"model.dim ({self.dim}) must be divisible by model.heads ({self.heads})")
        if self.num_frames < 3 or self.clip_stride < 1:
            raise ConfigError(
                f"model needs num_frames >= 3 and clip_stride >= 1, got {self.num_frames}, {self.clip_stride}"
            )
        if not 0.0 <= self.feature_dropout < 1.0:
            raise ConfigError(f"model.feature_dropout must be in [0, 1), got {self.feature_dropout}")
        if self.skeleton_skip and not self.use_skeleton:
            raise ConfigError("model.skeleton_skip needs model.use_skeleton: true")
        if not self.use_i3d and not (self.use_skeleton and self.pose_fusion == "tokens"):
            raise ConfigError(
                "model.use_i3d: false needs model.use_skeleton: true and model.pose_fusion: tokens "
                "(the fused branch is then built from the skeleton tokens alone)"
            )
        if self.skeleton_kinematics and not self.skeleton_skip:
            raise ConfigError("model.skeleton_kinematics needs model.skeleton_skip: true")
        if self.segmenter_input not in ("static", "static+skeleton"):
            raise ConfigError(
                f"model.segmenter_input must be 'static' or 'static+skeleton', got {self.segmenter_input!r}"
            )
        if self.segmenter_input == "static+skeleton" and not self.use_skeleton:
            raise ConfigError("model.segmenter_input: static+skeleton needs model.use_skeleton: true")
        if self.pose_fusion not in ("bias", "tokens"):
            raise ConfigError(f"model.pose_fusion must be 'bias' or 'tokens', got {self.pose_fusion!r}")
        if self.decode not in ("halves", "joint"):
            raise ConfigError(f"model.decode must be 'halves' or 'joint', got {self.decode!r}")
        if self.lam < 0:
            raise ConfigError(f"model.lam must be >= 0, got {self.lam}")
        if not (math.isfinite(self.delta_scale) and self.delta_scale > 0):
            raise ConfigError(f"model.delta_scale must be a finite number > 0, got {self.delta_scale}")
        if self.splash_weight > 0 and not self.splash_head:
            raise ConfigError("model.splash_weight > 0 needs model.splash_head = true")
        if self.contrastive_weight < 0 or self.tau <= 0 or self.dive_number_weight < 0:
            raise ConfigError("model loss weights must be >= 0 and tau > 0")

    @classmethod
    def cpu_default(cls) -> ModelConfig:
        """The pipeline's default (``params.yaml``): D = 64, 1 decoder block, HD-GCN width 16, F = 4, a
        32-unit GRU, input normalisation on, and the deviations that make it learn execution on the
        embedded data (skeleton tokens in the fusion, a skeleton-reading segmenter, the joint skip, input
        feature dropout 0.5, joint transition decoding). The reference sizes and choices stay the class
        defaults (16.1 M parameters)."""
        return cls(
            dim=64,
            heads=2,
            decoder_depth=1,
            mlp_ratio=2,
            reducer_extra=32,
            fix_size=4,
            gru_hidden=32,
            dn_classes=52,
            skeleton_channels=16,
            input_norm=True,
            pose_fusion="tokens",
            segmenter_input="static+skeleton",
            skeleton_skip=True,
            skeleton_kinematics=True,
            use_i3d=False,
            feature_dropout=0.5,
            delta_scale=3.0,
            decode="joint",
        )

    @classmethod
    def tiny(cls, **overrides: object) -> ModelConfig:
        """A small config for tests (D = 32, 2 heads, 1 decoder block, F = 4, T = 12, 4-frame clip stride)."""
        base = cls(
            i3d_dim=16,
            static_dim=12,
            num_frames=12,
            clip_stride=4,
            dim=32,
            heads=2,
            decoder_depth=1,
            mlp_ratio=2,
            reducer_extra=8,
            fix_size=4,
            gru_hidden=8,
            dn_classes=5,
            skeleton_channels=8,
        )
        return replace(base, **overrides)


@dataclass(frozen=True)
class TrainConfig:
    """Training hyper-parameters (spec §9); the class defaults are the reference's where it has one."""

    epochs: int = 201
    """Number of epochs (the reference runs epochs 0–200)."""
    batch_size: int = 8
    """Pairs per step (2·batch_size videos)."""
    lr: float = 1e-3
    """Base learning rate of Adam (β = (0.9, 0.999), ε = 1e-8)."""
    weight_decay: float = 0.0
    """Adam weight decay (0 in the reference)."""
    schedule: Literal["cyclic", "monotone", "constant"] = "cyclic"
    """``cyclic``: reference cosine with period 2·t_max; ``monotone``: one cosine over the run (a
    deviation, flagged); ``constant``."""
    t_max: int = 20
    """T_max of the cyclic cosine."""
    static_trunk_lr_factor: float = 0.1
    """LR factor of the ``static_trunk`` parameter group (end-to-end mode only)."""
    pairing: ExemplarMode = "dive_number"
    """Training exemplars (and validation voters): ``dive_number`` (w/ DN), ``difficulty`` or ``any``."""
    pair_scheme: Literal["drawn", "in_batch"] = "drawn"
    """``drawn`` (the reference, §9.1–9.2): every train video is a query once per epoch with one drawn
    exemplar, ``batch_size`` pairs per step. ``in_batch`` (a deviation, cached mode, one process): the
    epoch's shuffled videos in batches of ``batch_size``, each video encoded once per step, and every
    ordered pair of two videos of the batch that ``pairing`` allows is a training pair — ``b(b−1)``
    pairs per step for ``pairing: any``, so the pair heads see far more pairs per encoder pass."""
    dd_mode: bool = False
    """Regress completeness ``score / DD`` instead of the score (spec §10.3). Recorded in the checkpoint:
    evaluation votes in the mode the model was trained in."""
    val_exemplars: int = 10
    """Voters per validation query (one seeded draw, the same every epoch)."""
    val_exemplar_mode: ExemplarMode | None = None
    """Voters of the validation queries; ``None``: as ``pairing``. Set it to the test protocol's
    ``eval.exemplar_mode`` when training pairs differ from it (e.g. ``pairing: any``), so the epoch is
    selected by the measure that is reported."""
    device: Literal["auto", "cpu", "cuda"] = "auto"
    """``auto`` = CUDA when available (not part of the checkpoint fingerprint)."""
    amp: bool = False
    """Mixed precision on CUDA (bf16 where supported, else fp16 + grad scaler); ignored on the CPU."""
    mode: Literal["cached", "end_to_end"] = "cached"
    """``cached``: the heads on the features stage's cached features (encoders frozen); ``end_to_end``:
    I3D and RegNetY-002 + GSM fine-tuned from the decoded frames with the heads (spec §9.3), starting
    from the encoders the features stage used (:mod:`hpmcore.models.end_to_end`)."""
    augment: bool = True
    """End-to-end only: the spec §1.2 training augmentation (flip p = 0.5, a random vertical crop shared
    by the clip's frames; :mod:`hpmcore.training.augment`); false: the test view in training too."""
    flip_pose: bool = True
    """End-to-end only: mirror the skeleton (left/right joints swapped) with a flipped video; false: the
    reference's skeleton/RGB mismatch (spec §13 item 7)."""
    num_workers: int = 2
    """End-to-end only: DataLoader worker processes reading and augmenting the frames (speed only: the
    views are drawn per pair from the seed, so the results do not depend on it)."""
    activation_checkpointing: bool = False
    """End-to-end only: recompute the encoders' activations in the backward pass (less memory, ~1/3 more
    compute; the same numbers)."""

    def validate(self) -> None:
        """Raise ``ConfigError`` (a ``ValueError``) for impossible settings."""
        if self.mode not in ("cached", "end_to_end"):
            raise ConfigError(f"train.mode must be cached or end_to_end, got {self.mode!r}")
        _check_range("train.num_workers", self.num_workers, 0, 256)
        for name in ("epochs", "batch_size", "t_max", "val_exemplars"):
            if getattr(self, name) < 1:
                raise ConfigError(f"train.{name} must be >= 1, got {getattr(self, name)}")
            high = MAX_BATCH if name == "batch_size" else 10**6
            _check_range(f"train.{name}", getattr(self, name), 1, high)
        if not self.lr > 0 or self.weight_decay < 0 or not self.static_trunk_lr_factor >= 0:
            raise ConfigError("train.lr must be > 0, weight_decay and static_trunk_lr_factor >= 0")
        if self.schedule not in ("cyclic", "monotone", "constant"):
            raise ConfigError(f"train.schedule must be cyclic, monotone or constant, got {self.schedule!r}")
        if self.val_exemplar_mode not in (None, "dive_number", "difficulty", "any"):
            raise ConfigError(
                f"train.val_exemplar_mode must be null or an exemplar mode: {self.val_exemplar_mode!r}"
            )
        if self.pairing not in ("dive_number", "difficulty", "any"):
            raise ConfigError(f"train.pairing must be dive_number, difficulty or any, got {self.pairing!r}")
        if self.pair_scheme not in ("drawn", "in_batch"):
            raise ConfigError(f"train.pair_scheme must be drawn or in_batch, got {self.pair_scheme!r}")
        if self.pair_scheme == "in_batch" and (self.mode != "cached" or self.batch_size < 2):
            raise ConfigError(
                "train.pair_scheme: in_batch needs train.mode: cached and train.batch_size >= 2"
            )
        if self.device not in ("auto", "cpu", "cuda"):
            raise ConfigError(f"train.device must be auto, cpu or cuda, got {self.device!r}")

    @classmethod
    def cpu_default(cls) -> TrainConfig:
        """The pipeline's default (``params.yaml``): 8 epochs with one cosine, 16 videos per step and all
        their ordered pairs (``in_batch``), exemplars of any dive number, completeness (DD mode) targets,
        weight decay 0.01, validation with same-dive-number voters."""
        return cls(
            epochs=8,
            batch_size=16,
            pair_scheme="in_batch",
            schedule="monotone",
            pairing="any",
            dd_mode=True,
            weight_decay=0.01,
            val_exemplars=5,
            val_exemplar_mode="dive_number",
        )

    def val_eval_config(self) -> EvalConfig:
        """The evaluation config of the per-epoch validation."""
        return EvalConfig(
            exemplars=self.val_exemplars,
            exemplar_mode=self.val_exemplar_mode or self.pairing,
            num_voter_draws=1,
            device=self.device,
        )


@dataclass(frozen=True)
class EvalConfig:
    """How a split is evaluated (spec §10, §11); the defaults are the paper's protocol, seeded."""

    exemplars: int = 10
    """k, distinct exemplars (voters) per query (fewer when the pool has fewer candidates)."""
    exemplar_mode: ExemplarMode = "dive_number"
    """``dive_number`` (w/ DN), ``difficulty`` (same DD) or ``any`` (w/o DN)."""
    num_voter_draws: int = 5
    """Independent voter draws (seeds ``voter_seed(seed, d)``); metrics are mean ± std over them."""
    pair_batch_size: int = 256
    """(query, exemplar) pairs per pair-head batch (speed only)."""
    encode_batch_size: int = 32
    """Videos per encoder batch (speed only)."""
    device: Literal["auto", "cpu", "cuda"] = "auto"
    """``auto`` = CUDA when available, else CPU."""

    def validate(self) -> None:
        """Raise ``ConfigError`` (a ``ValueError``) for impossible settings."""
        if self.exemplars < 1:
            raise ConfigError(f"eval.exemplars must be >= 1, got {self.exemplars}")
        if self.exemplar_mode not in ("dive_number", "difficulty", "any"):
            raise ConfigError(
                f"eval.exemplar_mode must be dive_number, difficulty or any, got {self.exemplar_mode!r}"
            )
        if self.num_voter_draws < 1:
            raise ConfigError(f"eval.num_voter_draws must be >= 1, got {self.num_voter_draws}")
        if self.pair_batch_size < 1 or self.encode_batch_size < 1:
            raise ConfigError("eval batch sizes must be >= 1")
        _check_range("eval.exemplars", self.exemplars, 1, 10**6)
        _check_range("eval.num_voter_draws", self.num_voter_draws, 1, 10**4)
        _check_range("eval.pair_batch_size", self.pair_batch_size, 1, 2**20)
        _check_range("eval.encode_batch_size", self.encode_batch_size, 1, MAX_BATCH)
        if self.device not in ("auto", "cpu", "cuda"):
            raise ConfigError(f"eval.device must be auto, cpu or cuda, got {self.device!r}")


@dataclass(frozen=True)
class CoReConfig:
    """The CoRe-style baseline: an MLP on the concatenated mean-pooled I3D features of a pair."""

    i3d_dim: int = field(default=1024, metadata=FROM_FEATURES)
    """Width of the cached I3D clip features (from the features, not a param)."""
    hidden: int = 256
    """Width of the two hidden layers."""
    dropout: float = 0.0
    """Dropout after each hidden layer."""
    input_norm: bool = True
    """Standardise the I3D channels with the train split's statistics (as HP-MCoRe's ``input_norm``)."""

    def validate(self) -> None:
        """Raise ``ConfigError`` (a ``ValueError``) for impossible settings."""
        if self.i3d_dim < 1 or self.hidden < 1:
            raise ConfigError(f"core.i3d_dim and hidden must be >= 1, got {self.i3d_dim}, {self.hidden}")
        if not 0.0 <= self.dropout < 1.0:
            raise ConfigError(f"core.dropout must be in [0, 1), got {self.dropout}")


@dataclass(frozen=True)
class CompareConfig:
    """The comparison (``compare/dvc.yaml``): training seeds per trained row and the paired bootstrap
    (:func:`hpmcore.training.compare.run_comparison`)."""

    seeds: int = 3
    """Training seeds per trained row (``seed``, then derived ones); rows are mean ± sd over them."""
    bootstrap: int = 2000
    """Paired bootstrap resamples of the evaluated dives for Δρ of HP-MCoRe against each row."""
    confidence: float = 0.95
    """Coverage of the bootstrap's percentile interval."""

    def validate(self) -> None:
        """Raise ``ConfigError`` (a ``ValueError``) for impossible settings."""
        _check_range("compare.seeds", self.seeds, 1, 100)
        _check_range("compare.bootstrap", self.bootstrap, 1, 10**6)
        if not 0.0 < self.confidence < 1.0:
            raise ConfigError(f"compare.confidence must be in (0, 1), got {self.confidence}")


@dataclass(frozen=True)
class RetrainConfig:
    """Scheduled retraining and the ``champion`` alias of the model registry (``flows/retrain.py``).

    No DVC stage reads this section: changing it reruns nothing.
    """

    cron: str = "0 3 * * *"
    """When the served deployment runs (five-field cron, in ``timezone``)."""
    timezone: str = "UTC"
    """Time zone of ``cron`` (IANA name)."""
    metric: Literal["rho", "rl2_x100", "l2"] = "rho"
    """Validation metric that decides: ``rho`` (higher is better), ``rl2_x100`` or ``l2`` (lower is
    better); candidate and champion are scored on the same validation dives with the same voters."""
    margin: float = 0.01
    """The candidate becomes champion only when better than the champion by more than this."""
    lock_wait_s: float = 0.0
    """Seconds a run waits for another pipeline/retraining run to finish; 0 = exit at once."""
    push: bool = True
    """``dvc push`` the outputs to the default DVC remote after a retraining run."""

    def validate(self) -> None:
        """Raise ``ConfigError`` for an impossible schedule or policy."""
        if len(self.cron.split()) != 5:
            raise ConfigError(f"retrain.cron needs five fields (minute hour day month wday): {self.cron!r}")
        if self.metric not in ("rho", "rl2_x100", "l2"):
            raise ConfigError(f"retrain.metric must be rho, rl2_x100 or l2, got {self.metric!r}")
        if not self.margin >= 0 or not self.lock_wait_s >= 0:
            raise ConfigError("retrain.margin and retrain.lock_wait_s must be >= 0")


@dataclass(frozen=True)
class Params:
    """The whole ``params.yaml``."""

    seed: int = 0
    """The one seed for splits, exemplar draws, training and evaluation."""
    synth: SynthConfig = field(default_factory=SynthConfig.embedded)
    data: DataConfig = field(default_factory=DataConfig)
    decode: DecodeConfig = field(default_factory=DecodeConfig.embedded)
    extract: ExtractConfig = field(default_factory=ExtractConfig)
    pose: PoseConfig = field(default_factory=PoseConfig)
    features: FeaturesConfig = field(default_factory=FeaturesConfig.embedded)
    model: ModelConfig = field(default_factory=ModelConfig.cpu_default)
    train: TrainConfig = field(default_factory=TrainConfig.cpu_default)
    eval: EvalConfig = field(default_factory=EvalConfig)
    core: CoReConfig = field(default_factory=CoReConfig)
    compare: CompareConfig = field(default_factory=CompareConfig)
    retrain: RetrainConfig = field(default_factory=RetrainConfig)

    def validate(self) -> None:
        """Raise ``ConfigError`` for an impossible top-level seed (each section validates itself)."""
        _check_seed("seed", self.seed)


def _check(value: Any, tp: Any, where: str) -> Any:
    """Return ``value`` converted to ``tp`` or raise ``ConfigError`` naming ``where``."""
    origin = typing.get_origin(tp)
    if dataclasses.is_dataclass(tp):
        if not isinstance(value, dict):
            raise ConfigError(f"{where}: expected a mapping, got {type(value).__name__}")
        return from_dict(tp, value, where)
    if origin is Literal:
        if value not in typing.get_args(tp):
            raise ConfigError(f"{where}: {value!r} is not one of {list(typing.get_args(tp))}")
        return value
    if origin in (typing.Union, types.UnionType):
        args = typing.get_args(tp)
        if value is None and type(None) in args:
            return None
        errors = []
        for arg in (a for a in args if a is not type(None)):
            try:
                return _check(value, arg, where)
            except ConfigError as exc:
                errors.append(str(exc))
        raise ConfigError("; ".join(errors))
    if origin is tuple:
        if not isinstance(value, list | tuple):
            raise ConfigError(f"{where}: expected a list, got {type(value).__name__}")
        (item_tp, _ellipsis) = typing.get_args(tp)
        return tuple(_check(v, item_tp, f"{where}[{i}]") for i, v in enumerate(value))
    if tp is float:
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise ConfigError(f"{where}: expected a number, got {value!r}")
        try:
            number = float(value)
        except OverflowError:
            raise ConfigError(f"{where}: {value!r} is too large") from None
        if not math.isfinite(number):
            raise ConfigError(f"{where}: expected a finite number, got {value!r}")
        return number
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"{where}: expected an integer, got {value!r}")
        return value
    if tp in (str, bool):
        if not isinstance(value, tp):
            raise ConfigError(f"{where}: expected {tp.__name__}, got {value!r}")
        return value
    raise TypeError(f"{where}: unsupported config type {tp!r}")  # a bug in this module


def from_dict(cls: type[T], mapping: dict[str, Any], where: str = "") -> T:
    """Build dataclass ``cls`` from ``mapping``, rejecting unknown keys and wrong types.

    Raises:
        ConfigError: naming the dotted key at fault.
    """
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls)}
    unknown = sorted(set(mapping) - set(fields))
    if unknown:
        prefix = f"{where}." if where else ""
        raise ConfigError(
            f"unknown key(s) {', '.join(prefix + k for k in unknown)}; "
            f"allowed in {where or 'the top level'}: {', '.join(fields)}"
        )
    kwargs = {}
    for name, f in fields.items():
        key = f"{where}.{name}" if where else name
        if name in mapping:
            kwargs[name] = _check(mapping[name], hints[name], key)
        elif f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING:
            raise ConfigError(f"missing required key {key}")
    obj = cls(**kwargs)
    validate = getattr(obj, "validate", None)
    if validate is not None:
        validate()
    return obj


def _read_yaml(path: Path) -> dict[str, Any]:
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"{path}: parameter file not found")
    try:
        data = yaml.safe_load(path.read_text())
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: not valid YAML ({exc})") from exc
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: expected a mapping at the top level")
    return data


def _refuse_from_data(raw: dict[str, Any]) -> None:
    """Raise ``ConfigError`` for a key of ``params.yaml`` that names a :data:`FROM_FEATURES` field."""
    hints = typing.get_type_hints(Params)
    for section, values in raw.items():
        tp = hints.get(section)
        if not (isinstance(values, dict) and dataclasses.is_dataclass(tp)):
            continue
        for f in dataclasses.fields(tp):
            if f.name in values and f.metadata.get("from_data"):
                raise ConfigError(
                    f"{section}.{f.name} is not a parameter: it is {f.metadata['from_data']}; "
                    "remove it from the file"
                )


def load_params(path: Path = Path("params.yaml")) -> Params:
    """Read and validate the whole parameter file.

    Raises:
        ConfigError: "<path>: <problem>" for a missing file, bad YAML, unknown or mistyped keys.
    """
    try:
        raw = _read_yaml(path)
        _refuse_from_data(raw)
        return from_dict(Params, raw)
    except ConfigError as exc:
        if str(exc).startswith(str(path)):
            raise
        raise ConfigError(f"{path}: {exc}") from exc


def params_to_dict(params: Any) -> dict[str, Any]:
    """A plain nested dict of a config dataclass (tuples become lists), e.g. for logging; the fields that
    are not parameters (:data:`FROM_FEATURES`) are left out."""

    def convert(value: Any) -> Any:
        if dataclasses.is_dataclass(value) and not isinstance(value, type):
            return {
                f.name: convert(getattr(value, f.name))
                for f in dataclasses.fields(value)
                if not f.metadata.get("from_data")
            }
        if isinstance(value, tuple | list):
            return [convert(v) for v in value]
        if isinstance(value, dict):
            return {k: convert(v) for k, v in value.items()}
        return value

    return convert(params)


def flatten(mapping: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """``{"a": {"b": 1}}`` → ``{"a.b": 1}``."""
    out: dict[str, Any] = {}
    for key, value in mapping.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict):
            out.update(flatten(value, f"{name}."))
        else:
            out[name] = value
    return out
