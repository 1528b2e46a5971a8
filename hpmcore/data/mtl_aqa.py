"""MTL-AQA (as distributed with CoRe) → canonical annotation table (spec §12.5).

Files, in the dataset root or its ``info/`` folder:

.. code-block:: text

    final_annotations_dict_with_dive_number.pkl   Python 2 pickle (latin-1), {(video_id, dive_idx): {…}}
    train_split_0.pkl, test_split_0.pkl           [(video_id, dive_idx), …]
    <root>/<video_id:02d>/*.jpg                   frames of the whole broadcast video

Every pickle is read with :func:`hpmcore.data.safe_pickle.safe_load`.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa

from hpmcore.data.canonical import (
    MAX_FRAME,
    DatasetError,
    annotation_table,
    dive_id,
    normalize_dive_number,
    value_problem,
)
from hpmcore.data.safe_pickle import safe_load
from hpmcore.data.split_files import as_float, as_int, assign_splits, report_unsplit, where

ANNOTATION_FILE = "final_annotations_dict_with_dive_number.pkl"
TRAIN_SPLIT_FILE = "train_split_0.pkl"
TEST_SPLIT_FILE = "test_split_0.pkl"
INFO_DIR = "info"
REQUIRED_FIELDS = ("start_frame", "end_frame", "difficulty", "final_score", "judge_scores", "dive_number")

Key = tuple[int, int]


def _check_key(path: Path, key: Any) -> Key:
    """An MTL-AQA key is ``(video_id: int, dive_idx: int)``, both in ``0 .. 2**63 - 1``."""
    if (
        not isinstance(key, tuple)
        or len(key) != 2
        or any(isinstance(k, bool) or not isinstance(k, int | np.integer) for k in key)
    ):
        raise DatasetError(f"{path}: key {key!r} is not a (video_id: int, dive_idx: int) tuple")
    video_id = as_int(path, key, "video_id", key[0], minimum=0)
    return (video_id, as_int(path, key, "dive_idx", key[1], minimum=0))


def _read_split(path: Path) -> list[Key]:
    """A split pickle: a list of ``(video_id, dive_idx)`` keys."""
    keys = safe_load(path, encoding="latin1")
    if not isinstance(keys, list | tuple):
        raise DatasetError(f"{path}: expected a list of (video_id, dive_idx) keys, got {type(keys).__name__}")
    return [_check_key(path, key) for key in keys]


def _parse_value(path: Path, key: Key, value: Any) -> dict:
    if not isinstance(value, dict):
        raise DatasetError(f"{where(path, key)}: value should be a dict, got {type(value).__name__}")
    missing = [name for name in REQUIRED_FIELDS if name not in value]
    if missing:
        raise DatasetError(f"{where(path, key)}: missing field(s) {missing}")
    start = as_int(path, key, "start_frame", value["start_frame"], minimum=0)
    end = as_int(path, key, "end_frame", value["end_frame"])
    if not start <= end <= MAX_FRAME:
        raise DatasetError(f"{where(path, key)}: end_frame {end} not in start_frame {start} .. {MAX_FRAME}")
    judges = value["judge_scores"]
    if isinstance(judges, np.ndarray):
        if judges.ndim != 1:
            raise DatasetError(f"{where(path, key)}: judge_scores should be 1-D, got shape {judges.shape}")
        judges = list(judges)
    if not isinstance(judges, list | tuple):
        raise DatasetError(
            f"{where(path, key)}: judge_scores should be an array, got {type(judges).__name__}"
        )
    dive_number = value["dive_number"]
    if isinstance(dive_number, bytes):  # a Python 2 str read with encoding="bytes"
        dive_number = dive_number.decode("latin1")
    if not isinstance(dive_number, str):
        raise DatasetError(
            f"{where(path, key)}: dive_number should be a string, got {type(dive_number).__name__}"
        )
    try:
        dive_number = normalize_dive_number(dive_number)
    except ValueError as exc:
        raise DatasetError(f"{where(path, key)}: dive_number: {exc}") from None
    video_name = f"{key[0]:02d}"
    row = {
        "id": dive_id(video_name, key[1]),
        "video_name": video_name,
        "dive_index": key[1],
        "video_path": video_name,
        "start_frame": start,
        "end_frame": end,
        "num_frames": end - start + 1,
        "dive_number": dive_number,
        "difficulty": as_float(path, key, "difficulty", value["difficulty"]),
        "judge_scores": [
            as_float(path, key, f"judge_scores[{i}]", mark, minimum=0) for i, mark in enumerate(judges)
        ],
        "final_score": as_float(path, key, "final_score", value["final_score"], minimum=0),
        "transitions": [],
        "frame_labels": [],
    }
    reason = value_problem(row)  # DD <= 0
    if reason is not None:
        raise DatasetError(f"{where(path, key)}: {reason}")
    return row


def _locate(paths: Sequence[Path]) -> tuple[Path, dict[str, list[Path]]]:
    if not paths:
        raise DatasetError("no MTL-AQA path given")
    annotations: list[Path] = []
    splits: dict[str, list[Path]] = {"train": [], "test": []}
    for path in map(Path, paths):
        if path.is_dir():
            found = [folder for folder in (path, path / INFO_DIR) if (folder / ANNOTATION_FILE).is_file()]
            if not found:
                raise DatasetError(f"{path}: no {ANNOTATION_FILE} in it or in its {INFO_DIR}/ folder")
            annotations.append(found[0] / ANNOTATION_FILE)
            for split, name in (("train", TRAIN_SPLIT_FILE), ("test", TEST_SPLIT_FILE)):
                splits[split] += [f / name for f in (path, path / INFO_DIR) if (f / name).is_file()][:1]
        elif not path.is_file():
            raise DatasetError(f"{path}: file not found")
        elif path.name.startswith("train_split") and path.suffix == ".pkl":
            splits["train"].append(path)
        elif path.name.startswith("test_split") and path.suffix == ".pkl":
            splits["test"].append(path)
        else:
            annotations.append(path)
    if len(annotations) != 1:
        raise DatasetError(
            f"expected one MTL-AQA annotation file ({ANNOTATION_FILE}), got {len(annotations)}"
        )
    if not splits["train"] and not splits["test"]:
        raise DatasetError(
            f"no MTL-AQA split file ({TRAIN_SPLIT_FILE} / {TEST_SPLIT_FILE}) among {list(paths)}"
        )
    return annotations[0], splits


def read_mtl_aqa(paths: Sequence[Path], problems: list[str] | None = None) -> pa.Table:
    """Read MTL-AQA annotations and splits into the canonical annotation table.

    Args:
        paths: a dataset root (files looked up in it and in ``info/``) or explicit files:
            ``train_split*.pkl`` / ``test_split*.pkl`` by name, anything else is the annotation dict.
        problems: if given, soft problems are appended (keys in no split, which are dropped; keys
            listed twice in one split); they are also logged.

    Rows follow the annotation dict's order. ``video_name`` and ``video_path`` are
    ``f"{video_id:02d}"`` (the broadcast's frame folder); ``start_frame``/``end_frame`` are the
    annotation's (frame numbers of the broadcast, as CoRe uses them); ``transitions`` and
    ``frame_labels`` are empty (MTL-AQA has no step labels); ``judge_scores`` come from the array.

    Raises:
        DatasetError: naming the file (and key) for a missing or malformed file, a split key absent
            from the annotations, or a key in both splits.
    """
    ann_path, split_paths = _locate(paths)
    data = safe_load(ann_path, encoding="latin1")
    if not isinstance(data, dict):
        raise DatasetError(
            f"{ann_path}: expected a dict keyed by (video_id, dive_idx), got {type(data).__name__}"
        )
    rows = {}
    for raw_key, value in data.items():
        key = _check_key(ann_path, raw_key)
        rows[key] = _parse_value(ann_path, key, value)

    split_of = assign_splits(split_paths, _read_split, rows, f"is not in {ann_path}", problems)
    report_unsplit(list(rows), split_of, problems)
    return annotation_table([{**row, "split": split_of[key]} for key, row in rows.items() if key in split_of])
