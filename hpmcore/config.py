"""Typed configuration: ``params.yaml`` ↔ frozen dataclasses that reject unknown keys.

Each top-level section of ``params.yaml`` maps to one dataclass below; :func:`load_params` builds the
whole :class:`Params` and :func:`load_section` one section. Unknown keys, missing required keys and
values of the wrong type raise :class:`ConfigError` naming the file and the dotted key.
"""

from __future__ import annotations

import dataclasses
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, TypeVar

import yaml

T = TypeVar("T")


class ConfigError(ValueError):
    """``params.yaml`` (or a section of it) is malformed; the message names the file and key."""


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

    def validate(self) -> None:
        """Raise ``ConfigError`` for values no dataset can be generated from."""
        if self.num_dives <= 0:
            raise ConfigError(f"synth.num_dives must be > 0, got {self.num_dives}")
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


@dataclass(frozen=True)
class DataConfig:
    """Which dataset the ``prepare`` stage indexes into the canonical table, and how it is split."""

    format: Literal["synthetic", "canonical", "finediving", "mtl-aqa"] = "synthetic"
    """Dataset format of ``root``."""
    root: str = "data/synth"
    """Dataset root folder (relative to the project or absolute)."""
    val_fraction: float = 0.1
    """Fraction of train carved out as validation, stratified by dive number (spec §11.4)."""

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

    def validate(self) -> None:
        """Raise ``ConfigError`` for impossible decoding settings."""
        if self.num_frames < 16:
            raise ConfigError(f"decode.num_frames must be >= 16 (one I3D clip), got {self.num_frames}")
        if self.width < 16 or self.height < 16:
            raise ConfigError(f"decode.width/height must be >= 16 px, got {self.width}x{self.height}")
        if self.min_source_frames < 2:
            raise ConfigError(f"decode.min_source_frames must be >= 2, got {self.min_source_frames}")


@dataclass(frozen=True)
class PoseConfig:
    """Skeleton extraction (stage ``pose``, library :mod:`hpmcore.pose`) at the decode stage's T frames."""

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
    """mmpose backend: model config, a file or a path inside mmpose's bundled ``.mim/configs``."""
    checkpoint: str | None = None
    """mmpose backend: local checkpoint of that model (required unless ``random_init``)."""
    random_init: bool = False
    """mmpose backend: allow running without checkpoints on random weights (tests only)."""
    trust_checkpoint: bool = False
    """Allow a full (non weights-only) unpickle of checkpoints carrying metadata; only for trusted files."""
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
    """Cached encoder features (stage ``features``, library :mod:`hpmcore.features`) of the decoded frames.

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


@dataclass(frozen=True)
class Params:
    """The whole ``params.yaml``."""

    seed: int = 0
    """The one seed for splits, exemplar draws, training and evaluation."""
    synth: SynthConfig = field(default_factory=SynthConfig)
    data: DataConfig = field(default_factory=DataConfig)
    decode: DecodeConfig = field(default_factory=DecodeConfig)
    pose: PoseConfig = field(default_factory=PoseConfig)
    features: FeaturesConfig = field(default_factory=FeaturesConfig)


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
        return float(value)
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


def load_params(path: Path = Path("params.yaml")) -> Params:
    """Read and validate the whole parameter file.

    Raises:
        ConfigError: "<path>: <problem>" for a missing file, bad YAML, unknown or mistyped keys.
    """
    try:
        return from_dict(Params, _read_yaml(path))
    except ConfigError as exc:
        if str(exc).startswith(str(path)):
            raise
        raise ConfigError(f"{path}: {exc}") from exc


def params_to_dict(params: Any) -> dict[str, Any]:
    """A plain nested dict of a config dataclass (tuples become lists), e.g. for logging."""

    def convert(value: Any) -> Any:
        if isinstance(value, tuple | list):
            return [convert(v) for v in value]
        if isinstance(value, dict):
            return {k: convert(v) for k, v in value.items()}
        return value

    return convert(dataclasses.asdict(params))


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
