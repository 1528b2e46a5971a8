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

    def validate(self) -> None:
        """Raise ``ConfigError`` for an impossible split."""
        if not 0.0 <= self.val_fraction < 1.0:
            raise ConfigError(f"data.val_fraction must be in [0, 1), got {self.val_fraction}")


@dataclass(frozen=True)
class DecodeConfig:
    """Video decoding (stage ``decode``): uniform sampling of the dive, resized in the decoder."""

    num_frames: int = 96
    """T, frames sampled uniformly over each dive, both end frames included (spec §1.1)."""
    width: int = 112
    """Decoded frame width in pixels."""
    height: int = 112
    """Decoded frame height in pixels."""
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
class Params:
    """The whole ``params.yaml``."""

    seed: int = 0
    """The one seed for splits, exemplar draws, training and evaluation."""
    synth: SynthConfig = field(default_factory=SynthConfig)
    data: DataConfig = field(default_factory=DataConfig)


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
