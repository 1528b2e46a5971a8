"""Shared by the FineDiving and MTL-AQA readers: split pickles → one split per annotation key, and
the checks of pickled values (messages name the file and the key)."""

from __future__ import annotations

import logging
from collections.abc import Callable, Container, Hashable, Mapping, Sequence
from pathlib import Path
from typing import Any, TypeVar

import numpy as np

from hpmcore.data.canonical import DatasetError

log = logging.getLogger(__name__)

K = TypeVar("K", bound=Hashable)


def report(problems: list[str] | None, message: str) -> None:
    """Log a soft dataset problem and append it to ``problems`` (when given)."""
    log.warning("%s", message)
    if problems is not None:
        problems.append(message)


def where(path: Path, key: Any) -> str:
    """``"<path>: key <key>"``, the start of a message about one annotation entry."""
    return f"{path}: key {key!r}"


def as_float(path: Path, key: Any, name: str, value: Any) -> float:
    """A pickled number (Python or numpy, also a 0-d array) as float; bools and others are refused.

    Raises:
        DatasetError: naming the file, the key and the field.
    """
    if isinstance(value, np.ndarray) and value.shape == ():
        value = value[()]
    if isinstance(value, bool | np.bool_) or not isinstance(value, int | float | np.integer | np.floating):
        raise DatasetError(f"{where(path, key)}: {name} should be a number, got {type(value).__name__}")
    return float(value)


def as_int(path: Path, key: Any, name: str, value: Any) -> int:
    """A pickled whole number (``3`` or ``3.0``) as int.

    Raises:
        DatasetError: naming the file, the key and the field.
    """
    number = as_float(path, key, name, value)
    if not number.is_integer():
        raise DatasetError(f"{where(path, key)}: {name} should be an integer, got {value!r}")
    return int(number)


def few(items: Sequence[Any], limit: int = 10, quote: bool = True) -> str:
    """``"a, b, … (3 more)"``: the first ``limit`` items of a listing for a message."""
    shown = ", ".join(repr(i) if quote else str(i) for i in items[:limit])
    return shown + (f", … ({len(items) - limit} more)" if len(items) > limit else "")


def assign_splits(
    split_files: Mapping[str, Sequence[Path]],
    read_keys: Callable[[Path], list[K]],
    annotated: Container[K],
    missing: str,
    problems: list[str] | None,
) -> dict[K, str]:
    """Map every key named by the split files to its split (``"train"``/``"test"``).

    Args:
        split_files: split name → split pickles.
        read_keys: reads one split pickle into its keys (raising ``DatasetError`` when malformed).
        annotated: the keys that have annotations.
        missing: the end of the error for a split key without annotation, e.g. ``"is in no annotation
            file"``.
        problems: soft problems are appended here (a key listed twice in one split).

    Raises:
        DatasetError: a split key without annotation, or a key in two different splits, naming the
            split file.
    """
    split_of: dict[K, tuple[str, Path]] = {}
    for split, paths in split_files.items():
        for path in paths:
            for key in read_keys(path):
                if key not in annotated:
                    raise DatasetError(f"{path}: split key {key!r} {missing}")
                if key in split_of:
                    other_split, other = split_of[key]
                    if other_split != split:
                        raise DatasetError(
                            f"{path}: key {key!r} is in both the {other_split} split ({other}) and {split}"
                        )
                    report(problems, f"{path}: key {key!r} listed twice")
                    continue
                split_of[key] = (split, path)
    return {key: split for key, (split, _path) in split_of.items()}


def report_unsplit(keys: Sequence[Any], split_of: Container[Any], problems: list[str] | None) -> None:
    """Report the annotation keys that no split names (they are dropped)."""
    dropped = [key for key in keys if key not in split_of]
    if dropped:
        report(problems, f"{len(dropped)} annotation key(s) are in no split and were dropped: {few(dropped)}")


def report_bad_transitions(problems: list[str] | None, bad: Mapping[str, str]) -> None:
    """Report the dives whose step labels are unusable (kept with missing transitions), one line."""
    if bad:
        report(
            problems,
            f"{len(bad)} dive(s) have unusable step labels (kept, transitions missing; prepare applies "
            f"data.bad_transitions): " + few(list(bad.values()), quote=False),
        )
