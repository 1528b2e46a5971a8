"""Shared by the FineDiving and MTL-AQA readers: split pickles → one split per annotation key."""

from __future__ import annotations

import logging
from collections.abc import Callable, Container, Hashable, Mapping, Sequence
from pathlib import Path
from typing import Any, TypeVar

from hpmcore.data.canonical import DatasetError

log = logging.getLogger(__name__)

K = TypeVar("K", bound=Hashable)


def report(problems: list[str] | None, message: str) -> None:
    """Log a soft dataset problem and append it to ``problems`` (when given)."""
    log.warning("%s", message)
    if problems is not None:
        problems.append(message)


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
