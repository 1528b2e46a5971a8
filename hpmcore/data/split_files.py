"""Shared by the FineDiving and MTL-AQA readers: split pickles → one split per annotation key, and
the checks of pickled values (messages name the file and the key)."""

from __future__ import annotations

import logging
import math
from collections.abc import Callable, Container, Hashable, Mapping, Sequence
from pathlib import Path
from typing import Any, TypeVar

import numpy as np

from hpmcore.data.canonical import DatasetError

log = logging.getLogger(__name__)

K = TypeVar("K", bound=Hashable)
INT64_MIN, INT64_MAX = -(2**63), 2**63 - 1


def report(problems: list[str] | None, message: str) -> None:
    """Log a soft dataset problem and append it to ``problems`` (when given)."""
    log.warning("%s", message)
    if problems is not None:
        problems.append(message)


def where(path: Path, key: Any) -> str:
    """``"<path>: key <key>"``, the start of a message about one annotation entry."""
    return f"{path}: key {key!r}"


def as_float(path: Path, key: Any, name: str, value: Any, *, minimum: float | None = None) -> float:
    """A pickled number (Python or numpy, also a 0-d array) as a finite float; bools and others are refused.

    Args:
        minimum: if given, the smallest value allowed (scores and marks: 0).

    Raises:
        DatasetError: naming the file, the key and the field: not a number, NaN or infinite, too
            large for a float, or below ``minimum``.
    """
    if isinstance(value, np.ndarray) and value.shape == ():
        value = value[()]
    if isinstance(value, bool | np.bool_) or not isinstance(value, int | float | np.integer | np.floating):
        raise DatasetError(f"{where(path, key)}: {name} should be a number, got {type(value).__name__}")
    try:
        number = float(value)
    except OverflowError:
        raise DatasetError(f"{where(path, key)}: {name} is too large ({_short(value)})") from None
    if not math.isfinite(number):
        raise DatasetError(f"{where(path, key)}: {name} is {number}, not a finite number")
    if minimum is not None and number < minimum:
        raise DatasetError(f"{where(path, key)}: {name} is {number}, below {minimum}")
    return number


def as_int(path: Path, key: Any, name: str, value: Any, *, minimum: int | None = None) -> int:
    """A pickled whole number (``3`` or ``3.0``) as an int that fits int64.

    Args:
        minimum: if given, the smallest value allowed (frame numbers: 0).

    Raises:
        DatasetError: naming the file, the key and the field.
    """
    if isinstance(value, np.ndarray) and value.shape == ():
        value = value[()]
    if isinstance(value, int | np.integer) and not isinstance(value, bool | np.bool_):
        number = int(value)
    else:
        real = as_float(path, key, name, value)
        if not real.is_integer():
            raise DatasetError(f"{where(path, key)}: {name} should be an integer, got {value!r}")
        number = int(real)
    if not INT64_MIN <= number <= INT64_MAX:
        raise DatasetError(f"{where(path, key)}: {name} ({_short(number)}) does not fit a 64-bit integer")
    if minimum is not None and number < minimum:
        raise DatasetError(f"{where(path, key)}: {name} is {number}, below {minimum}")
    return number


def _short(value: Any) -> str:
    """A number for a message: huge ones by their size."""
    if isinstance(value, int) and abs(value) > 10**30:
        return f"an integer of {value.bit_length()} bits"
    return repr(value)


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
