"""Atomic output helpers: nothing half-written ever carries its final name."""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.csv as pacsv
import pyarrow.parquet as pq


@contextmanager
def atomic_path(path: Path) -> Iterator[Path]:
    """Yield a temporary sibling path; on success rename it to ``path``, on error delete it.

    Works for files and directories alike: the caller creates whatever it wants at the yielded
    path. An existing ``path`` is replaced only after the new content is complete.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent))
    tmp.rmdir()  # the caller decides whether it is a file or a folder
    try:
        yield tmp
        if not tmp.exists():
            raise FileNotFoundError(f"{tmp}: nothing was written for {path}")
        if path.is_dir() and not path.is_symlink():
            old = path.with_name(f".{path.name}.old")
            shutil.rmtree(old, ignore_errors=True)
            path.rename(old)
            tmp.rename(path)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(tmp, path)
    finally:
        if tmp.is_dir():
            shutil.rmtree(tmp, ignore_errors=True)
        elif tmp.exists():
            tmp.unlink()


def read_parquet(path: Path, error: type[Exception], missing: str) -> pa.Table:
    """Read a Parquet file, turning a missing or unreadable file into ``error`` naming it.

    Args:
        path: the file.
        error: the exception class the caller's users expect (e.g. ``DatasetError``).
        missing: the message after ``"<path>: "`` when the file does not exist.
    """
    path = Path(path)
    if not path.is_file():
        raise error(f"{path}: {missing}")
    try:
        return pq.read_table(path)
    except (OSError, pa.ArrowException) as exc:
        raise error(f"{path}: not a readable Parquet file ({exc})") from None


def write_parquet(table: pa.Table, path: Path) -> None:
    """Write ``table`` to ``path`` atomically (zstd-compressed Parquet)."""
    with atomic_path(path) as tmp:
        pq.write_table(table, tmp, compression="zstd")


def write_csv(table: pa.Table, path: Path) -> None:
    """Write ``table`` to ``path`` atomically as CSV with a header (e.g. for DVC plots)."""
    with atomic_path(path) as tmp:
        pacsv.write_csv(table, tmp)


def write_json(obj: Any, path: Path) -> None:
    """Write ``obj`` as indented, key-sorted JSON to ``path`` atomically."""
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(obj, indent=2, sort_keys=True) + "\n")
