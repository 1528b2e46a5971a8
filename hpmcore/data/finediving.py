"""FineDiving ↔ canonical dataset: reader, FineDiving-layout exporter, pose and MPII-JSON readers.

On-disk layout of a FineDiving dataset root (spec §12):

.. code-block:: text

    <root>/Annotations/fine-grained_annotation_aqa.pkl        {(video_name, dive_index): [5 items]}
    <root>/Annotations/FineDiving_fine-grained_annotation.pkl {key: {action_type, …, frames_labels}}
    <root>/Annotations/FineDiving_coarse_annotation.pkl       {key: {…, start_frame, judge_scores}}
    <root>/Annotations/train_split.pkl, test_split.pkl        [key, …]
    <root>/FINADiving_MTL_256s/<video_name>/<dive_index>/<frame_no>.jpg
    <root>/FineDiving-Pose/<video_name>/pred_comp_<dive_index>.npz   (key "pred", 96×16×2)

Every pickle is read with :func:`hpmcore.data.safe_pickle.safe_load`.
"""

from __future__ import annotations

import json
import os
import pickle
import shutil
import zipfile
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import av
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from hpmcore.data.canonical import (
    MAX_FRAME,
    NUM_JOINTS,
    DatasetError,
    annotation_table,
    dive_id,
    name_problem,
    normalize_dive_number,
    step_label_problem,
    validate_annotations,
    value_problem,
)
from hpmcore.data.safe_pickle import safe_load
from hpmcore.data.split_files import (
    as_float,
    as_int,
    assign_splits,
    few,
    report,
    report_bad_transitions,
    report_unsplit,
    where,
)
from hpmcore.io import atomic_path

ANNOTATIONS_DIR = "Annotations"
FRAMES_DIR = "FINADiving_MTL_256s"
POSE_DIR = "FineDiving-Pose"
AQA_FILE = "fine-grained_annotation_aqa.pkl"
FINE_FILE = "FineDiving_fine-grained_annotation.pkl"
COARSE_FILE = "FineDiving_coarse_annotation.pkl"
TRAIN_SPLIT_FILE = "train_split.pkl"
TEST_SPLIT_FILE = "test_split.pkl"
NUM_SAMPLES = 96
PICKLE_PROTOCOL = 4
"""Protocol of the exported pickles: readable by every Python 3 and numpy ≥ 1.x reader."""

Key = tuple[str, int]


def linspace_indices(start: int, end: int, num: int = NUM_SAMPLES) -> np.ndarray:
    """The spec §1.1 temporal sampling: ``idx_i = int(np.linspace(start, end, num)[i]) - start``.

    Uniform sampling that includes both end frames, truncating toward zero; dives shorter than
    ``num`` frames get repeated indices.

    Returns:
        int64 array of shape (num,), values in ``0 .. end - start``, non-decreasing.
    """
    if end < start:
        raise ValueError(f"end frame {end} before start frame {start}")
    if num < 1:
        raise ValueError(f"num must be positive, got {num}")
    return np.linspace(start, end, num).astype(np.int64) - np.int64(start)


# --------------------------------------------------------------------------------------------------
# Value checks: every message names the file, the key and the field.


def _check_key(path: Path, key: Any) -> Key:
    """A FineDiving key is ``(video_name: str, dive_index: int)``: a valid folder name
    (:func:`~hpmcore.data.canonical.name_problem`) and an index in ``0 .. 2**63 - 1``."""
    if (
        not isinstance(key, tuple)
        or len(key) != 2
        or not isinstance(key[0], str)
        or isinstance(key[1], bool)
        or not isinstance(key[1], int | np.integer)
    ):
        raise DatasetError(f"{path}: key {key!r} is not a (video_name: str, dive_index: int) tuple")
    reason = name_problem(key[0])
    if reason is not None:
        raise DatasetError(f"{path}: key {key!r}: video_name {reason}")
    return (str(key[0]), as_int(path, key, "dive_index", key[1], minimum=0))


def _as_str(path: Path, key: Any, name: str, value: Any) -> str:
    if not isinstance(value, str):
        raise DatasetError(f"{where(path, key)}: {name} should be a string, got {type(value).__name__}")
    try:
        return normalize_dive_number(value)
    except ValueError as exc:
        raise DatasetError(f"{where(path, key)}: {name}: {exc}") from None


def _as_int_list(path: Path, key: Any, name: str, value: Any) -> list[int]:
    if isinstance(value, np.ndarray):
        if value.ndim != 1 or not (value.size == 0 or np.issubdtype(value.dtype, np.integer)):
            raise DatasetError(
                f"{where(path, key)}: {name} should be a 1-D integer array, got dtype {value.dtype} "
                f"shape {value.shape}"
            )
        if value.dtype == np.uint64 and value.size and value.max() > np.iinfo(np.int64).max:
            raise DatasetError(f"{where(path, key)}: {name} has values that do not fit a 64-bit integer")
        return [int(v) for v in value]
    if isinstance(value, list | tuple):
        return [as_int(path, key, f"{name}[{i}]", v) for i, v in enumerate(value)]
    raise DatasetError(f"{where(path, key)}: {name} should be an integer array, got {type(value).__name__}")


def _as_float_list(path: Path, key: Any, name: str, value: Any, minimum: float | None = None) -> list[float]:
    if isinstance(value, np.ndarray):
        if value.ndim != 1:
            raise DatasetError(f"{where(path, key)}: {name} should be 1-D, got shape {value.shape}")
        value = value.tolist()
    if not isinstance(value, list | tuple):
        raise DatasetError(f"{where(path, key)}: {name} should be a list, got {type(value).__name__}")
    return [as_float(path, key, f"{name}[{i}]", v, minimum=minimum) for i, v in enumerate(value)]


def _as_dd(path: Path, key: Any, name: str, value: Any) -> float:
    """A degree of difficulty: a finite number > 0."""
    dd = as_float(path, key, name, value)
    if dd <= 0:
        raise DatasetError(f"{where(path, key)}: {name} is {dd}, not > 0")
    return dd


def _require(path: Path, key: Any, value: dict, names: Sequence[str]) -> None:
    missing = [n for n in names if n not in value]
    if missing:
        raise DatasetError(f"{where(path, key)}: missing field(s) {missing}")


# --------------------------------------------------------------------------------------------------
# The three annotation variants.


@dataclass(frozen=True)
class _Fine:
    """Step-labelled entry (``fine-grained_annotation_aqa.pkl`` or the fine-grained dict variant)."""

    source: Path
    dive_number: str
    final_score: float
    difficulty: float
    transitions: list[int]
    frame_labels: list[int]


@dataclass(frozen=True)
class _Coarse:
    """Entry of ``FineDiving_coarse_annotation.pkl``: frames in the broadcast and judges' marks."""

    source: Path
    dive_number: str
    final_score: float
    difficulty: float
    start_frame: int
    end_frame: int
    judge_scores: list[float]


_FINE_FIELDS = ("action_type", "dive_score", "difficulty", "steps_transit_frames", "frames_labels")
_COARSE_FIELDS = ("action_type", "start_frame", "end_frame", "dive_score", "difficulty", "judge_scores")


def _parse_aqa(path: Path, key: Any, value: Any) -> _Fine:
    if not isinstance(value, list | tuple):
        raise DatasetError(f"{where(path, key)}: value should be a 5-item list, got {type(value).__name__}")
    if len(value) != 5:
        raise DatasetError(f"{where(path, key)}: value should be a 5-item list, got {len(value)} items")
    dive_number, score, dd, transits, labels = value
    return _Fine(
        source=path,
        dive_number=_as_str(path, key, "dive number (item 1)", dive_number),
        final_score=as_float(path, key, "final score (item 2)", score, minimum=0),
        difficulty=_as_dd(path, key, "DD (item 3)", dd),
        transitions=_as_int_list(path, key, "steps_transit_frames (item 4)", transits),
        frame_labels=_as_int_list(path, key, "frames_labels (item 5)", labels),
    )


def _parse_fine(path: Path, key: Any, value: Any) -> _Fine:
    if not isinstance(value, dict):
        raise DatasetError(f"{where(path, key)}: value should be a dict, got {type(value).__name__}")
    _require(path, key, value, _FINE_FIELDS)
    return _Fine(
        source=path,
        dive_number=_as_str(path, key, "action_type", value["action_type"]),
        final_score=as_float(path, key, "dive_score", value["dive_score"], minimum=0),
        difficulty=_as_dd(path, key, "difficulty", value["difficulty"]),
        transitions=_as_int_list(path, key, "steps_transit_frames", value["steps_transit_frames"]),
        frame_labels=_as_int_list(path, key, "frames_labels", value["frames_labels"]),
    )


def _parse_coarse(path: Path, key: Any, value: Any) -> _Coarse:
    if not isinstance(value, dict):
        raise DatasetError(f"{where(path, key)}: value should be a dict, got {type(value).__name__}")
    _require(path, key, value, _COARSE_FIELDS)
    start = as_int(path, key, "start_frame", value["start_frame"], minimum=0)
    end = as_int(path, key, "end_frame", value["end_frame"])
    if not start <= end <= MAX_FRAME:
        raise DatasetError(f"{where(path, key)}: end_frame {end} not in start_frame {start} .. {MAX_FRAME}")
    return _Coarse(
        source=path,
        dive_number=_as_str(path, key, "action_type", value["action_type"]),
        final_score=as_float(path, key, "dive_score", value["dive_score"], minimum=0),
        difficulty=_as_dd(path, key, "difficulty", value["difficulty"]),
        start_frame=start,
        end_frame=end,
        judge_scores=_as_float_list(path, key, "judge_scores", value["judge_scores"], minimum=0),
    )


def read_annotation_pickle(path: Path) -> dict[Key, _Fine] | dict[Key, _Coarse]:
    """Read one FineDiving annotation pickle, detecting its variant from its structure.

    A 5-item list value → ``fine-grained_annotation_aqa.pkl``; a dict with ``frames_labels`` → the
    fine-grained dict variant; a dict with ``start_frame`` → the coarse variant. Every entry is then
    checked against the detected variant.

    Raises:
        DatasetError: naming the file (and the key) on any structural problem.
    """
    data = safe_load(path, encoding="latin1")
    if not isinstance(data, dict):
        raise DatasetError(
            f"{path}: expected a dict keyed by (video_name, dive_index), got {type(data).__name__}"
        )
    if not data:
        raise DatasetError(f"{path}: no annotation entries")
    first = next(iter(data.values()))
    if isinstance(first, list | tuple):
        parse = _parse_aqa
    elif isinstance(first, dict) and "frames_labels" in first:
        parse = _parse_fine
    elif isinstance(first, dict) and "start_frame" in first:
        parse = _parse_coarse
    else:
        raise DatasetError(
            f"{path}: not a FineDiving annotation file (first value is a {type(first).__name__}"
            f"{' with fields ' + str(sorted(map(str, first))) if isinstance(first, dict) else ''})"
        )
    return {_check_key(path, key): parse(path, key, value) for key, value in data.items()}


def read_split_pickle(path: Path) -> list[Key]:
    """Read a FineDiving split file: a list of ``(video_name, dive_index)`` keys.

    Raises:
        DatasetError: naming the file and the key on a malformed file.
    """
    data = safe_load(path, encoding="latin1")
    if not isinstance(data, list | tuple):
        raise DatasetError(
            f"{path}: expected a list of (video_name, dive_index) keys, got {type(data).__name__}"
        )
    return [_check_key(path, key) for key in data]


# --------------------------------------------------------------------------------------------------
# Locating the files.


@dataclass
class _Files:
    root: Path
    annotations: list[Path] = field(default_factory=list)
    splits: dict[str, list[Path]] = field(default_factory=lambda: {"train": [], "test": []})


def _split_of_name(name: str) -> str | None:
    if name.endswith(".pkl"):
        for split in ("train", "test"):
            if name.startswith(f"{split}_split"):
                return split
    return None


def _locate(paths: Sequence[Path]) -> _Files:
    if not paths:
        raise DatasetError("no FineDiving path given")
    paths = [Path(p) for p in paths]
    dirs = [p for p in paths if p.is_dir()]
    if len(dirs) > 1:
        raise DatasetError(f"give one FineDiving dataset root, not {len(dirs)}: {[str(d) for d in dirs]}")
    root = dirs[0] if dirs else None
    files = _Files(root=Path("."))
    for path in paths:
        if path.is_dir():
            found = False
            for folder in (path, path / ANNOTATIONS_DIR):
                for name in (AQA_FILE, FINE_FILE, COARSE_FILE):
                    if (folder / name).is_file():
                        files.annotations.append(folder / name)
                        found = True
                for split, name in (("train", TRAIN_SPLIT_FILE), ("test", TEST_SPLIT_FILE)):
                    if (folder / name).is_file():
                        files.splits[split].append(folder / name)
            if not found:
                raise DatasetError(
                    f"{path}: no FineDiving annotation pickle ({AQA_FILE}, {FINE_FILE} or {COARSE_FILE}) "
                    f"in it or in its {ANNOTATIONS_DIR}/ folder"
                )
        elif not path.is_file():
            raise DatasetError(f"{path}: file not found")
        elif (split := _split_of_name(path.name)) is not None:
            files.splits[split].append(path)
        else:
            files.annotations.append(path)
    if not files.annotations:
        raise DatasetError(f"no FineDiving annotation pickle among {[str(p) for p in paths]}")
    if not files.splits["train"] and not files.splits["test"]:
        raise DatasetError(
            f"no FineDiving split file ({TRAIN_SPLIT_FILE} / {TEST_SPLIT_FILE}) among "
            f"{[str(p) for p in paths]}"
        )
    if root is None:
        parent = files.annotations[0].parent
        root = parent.parent if parent.name == ANNOTATIONS_DIR else parent
    files.root = root
    return files


def _frame_numbers(folder: Path) -> list[int] | None:
    """Sorted integer names of the ``.jpg`` files in a dive's frame folder; None if no folder."""
    if not folder.is_dir():
        return None
    numbers = []
    with os.scandir(folder) as entries:
        for entry in entries:
            stem, ext = os.path.splitext(entry.name)
            if ext.lower() != ".jpg":
                continue
            try:
                numbers.append(int(stem))
            except ValueError:
                raise DatasetError(
                    f"{folder}: frame file {entry.name!r} is not named by a frame number"
                ) from None
    return sorted(numbers)


# --------------------------------------------------------------------------------------------------
# Reader.


def read_finediving(
    paths: Sequence[Path], problems: list[str] | None = None, bad_transitions: dict[str, str] | None = None
) -> pa.Table:
    """Read FineDiving annotations into the canonical annotation table.

    Args:
        paths: a dataset root (the standard file names are looked up in it and in ``Annotations/``)
            or explicit files: ``train_split*.pkl`` / ``test_split*.pkl`` by name, and annotation
            pickles of any of the three variants (detected by structure). Fine-grained entries
            (step labels) and coarse entries (broadcast frames, judges' marks) are combined when
            both are given; either alone also works (``judge_scores`` is empty without the coarse
            file; ``transitions``/``frame_labels`` are empty without a fine-grained one). When
            several files give the same field, the fine-grained ones win and disagreements are
            reported as problems. The dataset root for frame folders is the directory argument, or
            else the folder holding the first annotation file (its parent if it is ``Annotations``).
        problems: if given, soft problems are appended to it (annotation keys in no split, which
            are dropped; disagreeing sources; frame folders with gaps; dives with unusable step
            labels; ``steps_transit_frames`` that differ from where ``frames_labels`` change); they
            are also logged.
        bad_transitions: if given, ``dive id → "<file>: key <key>: <reason>"`` is added for each dive
            whose step labels cannot be used (:func:`~hpmcore.data.canonical.step_label_problem`):
            such a dive is kept with null ``transitions`` and ``frame_labels``, never an error.

    Rows follow the annotation file's key order. ``video_path`` is
    ``FINADiving_MTL_256s/<video_name>/<dive_index>`` (relative to the root, whether or not the
    folder exists). ``start_frame``/``end_frame`` are, in order of preference: the integer names
    of the first and last ``.jpg`` in that folder (spec §1.1: the folder holds exactly the dive);
    else the coarse file's ``start_frame``/``end_frame`` (broadcast frame numbers); else
    ``0 .. len(frame_labels) - 1``. ``split`` is ``"train"``/``"test"`` from the split files.
    ``transitions`` are ``steps_transit_frames`` as given; training derives its ground truth from
    ``frame_labels`` (spec §5.2), as the reference does.

    Raises:
        DatasetError: naming the file (and key) for a missing or malformed file, a split key that
            no annotation file has, or a key in both splits.
    """
    files = _locate(paths)
    fine: dict[Key, _Fine] = {}
    coarse: dict[Key, _Coarse] = {}
    order: dict[Key, None] = {}
    differences: dict[tuple[str, Path, Path], list[str]] = defaultdict(list)
    for path in files.annotations:
        entries = read_annotation_pickle(path)
        target: dict = fine if isinstance(next(iter(entries.values())), _Fine) else coarse
        for key, entry in entries.items():
            if key in target:
                _compare(target[key], entry, key, differences)
            else:
                target[key] = entry
            order.setdefault(key, None)
    if fine and coarse:
        only_fine = [k for k in fine if k not in coarse]
        only_coarse = [k for k in coarse if k not in fine]
        if only_fine:
            report(
                problems, f"{len(only_fine)} key(s) have step labels but no coarse entry: {few(only_fine)}"
            )
        if only_coarse:
            report(
                problems,
                f"{len(only_coarse)} key(s) have a coarse entry but no step labels: {few(only_coarse)}",
            )
        for key in fine:
            if key in coarse:
                _compare(fine[key], coarse[key], key, differences)
    for (name, first, second), cases in differences.items():
        report(
            problems,
            f"{name} differs between {first} and {second} for {len(cases)} key(s), using the first: "
            + few(cases, quote=False),
        )

    split_of = assign_splits(files.splits, read_split_pickle, order, "is in no annotation file", problems)
    report_unsplit(list(order), split_of, problems)

    rows, bad, disagree = [], {}, []
    for key in order:
        if key in split_of:
            rows.append(_row(key, fine.get(key), coarse.get(key), split_of[key], files.root, problems, bad))
            labels, transitions = rows[-1]["frame_labels"], rows[-1]["transitions"]
            if labels and transitions != _step_ends(labels):
                disagree.append(f"{key!r} ({transitions} vs {_step_ends(labels)})")
    report_bad_transitions(problems, bad)
    if disagree:
        report(
            problems,
            f"{len(disagree)} dive(s) have steps_transit_frames other than the last frames of their "
            f"frames_labels steps (kept; training uses frames_labels, spec §5.2): "
            + few(disagree, quote=False),
        )
    if bad_transitions is not None:
        bad_transitions.update(bad)
    return annotation_table(rows)


def _step_ends(labels: list[int]) -> list[int]:
    """The last frame of every step but the final one: where ``labels`` change, minus one."""
    return [i for i in range(len(labels) - 1) if labels[i] != labels[i + 1]]


def _compare(
    a: _Fine | _Coarse, b: _Fine | _Coarse, key: Key, differences: dict[tuple[str, Path, Path], list[str]]
) -> None:
    """Record where two sources disagree on a key, grouped by (field, first source, second source)."""
    fields = ["dive_number", "final_score", "difficulty"]
    if isinstance(a, _Fine) and isinstance(b, _Fine):
        fields += ["transitions", "frame_labels"]
    for name in fields:
        va, vb = getattr(a, name), getattr(b, name)
        if not (abs(va - vb) <= 1e-6 if isinstance(va, float) else va == vb):
            differences[(name, a.source, b.source)].append(f"{key!r} ({va!r} vs {vb!r})")


def _row(
    key: Key,
    fine: _Fine | None,
    coarse: _Coarse | None,
    split: str,
    root: Path,
    problems: list[str] | None,
    bad: dict[str, str],
) -> dict:
    video_name, dive_index = key
    rel = Path(FRAMES_DIR, video_name, str(dive_index))
    numbers = _frame_numbers(root / rel)
    if numbers:
        start, end = numbers[0], numbers[-1]
        frames_from = str(root / rel)
        if start < 0 or end > MAX_FRAME:
            raise DatasetError(f"{root / rel}: frame numbers {start}..{end} outside 0..{MAX_FRAME}")
        if len(numbers) != end - start + 1:
            report(problems, f"{root / rel}: {len(numbers)} frame files for frames {start}..{end} (gaps)")
    elif coarse is not None:
        start, end = coarse.start_frame, coarse.end_frame
        frames_from = f"{coarse.source} start/end_frame"
    elif fine is not None and fine.frame_labels:
        start, end = 0, len(fine.frame_labels) - 1
        frames_from = f"{fine.source} frames_labels"
    else:
        raise DatasetError(f"key {key!r}: no frame folder {root / rel}, no coarse frames and no frame labels")
    if numbers == []:
        report(problems, f"{root / rel}: frame folder has no .jpg files; frames from {frames_from}")
    n = end - start + 1
    transitions: list[int] | None = fine.transitions if fine else []
    labels: list[int] | None = fine.frame_labels if fine else []
    reason = step_label_problem(transitions, labels, n) if fine is not None else None
    if fine is not None and reason is not None:
        if labels and len(labels) != n:
            reason += f" (frames {start}..{end} from {frames_from})"
        bad[dive_id(video_name, dive_index)] = f"{where(fine.source, key)}: {reason}"
        transitions = labels = None
    main = fine if fine is not None else coarse
    assert main is not None  # every key comes from a fine-grained or a coarse file
    row = {
        "id": dive_id(video_name, dive_index),
        "video_name": video_name,
        "dive_index": dive_index,
        "video_path": rel.as_posix(),
        "start_frame": start,
        "end_frame": end,
        "num_frames": n,
        "dive_number": main.dive_number,
        "difficulty": main.difficulty,
        "judge_scores": coarse.judge_scores if coarse else [],
        "final_score": main.final_score,
        "transitions": transitions,
        "frame_labels": labels,
        "split": split,
    }
    reason = value_problem(row)
    if reason is not None:
        raise DatasetError(f"{where(main.source, key)}: {reason}")
    return row


# --------------------------------------------------------------------------------------------------
# Poses.


def read_finediving_pose(path: Path, num_samples: int = NUM_SAMPLES) -> np.ndarray:
    """Read a FineDiving-Pose ``pred_comp_<dive_index>.npz``.

    Returns:
        float32 array (num_samples, 16, C) with C = 2 (x, y) or 3 (x, y, confidence). A flat
        ``pred`` of shape (num_samples, 16·C) is reshaped.

    Raises:
        DatasetError: missing/unreadable file, no ``pred`` key, or ``pred`` of the wrong shape.
    """
    path = Path(path)
    if not path.is_file():
        raise DatasetError(f"{path}: pose file not found")
    try:
        with np.load(path, allow_pickle=False) as npz:
            if "pred" not in npz.files:
                raise DatasetError(f"{path}: no 'pred' array (keys: {npz.files})")
            pred = npz["pred"]
    except DatasetError:
        raise
    except (OSError, ValueError, EOFError, zipfile.BadZipFile) as exc:
        raise DatasetError(f"{path}: not a readable .npz ({exc})") from exc
    if pred.ndim == 2 and pred.shape[0] == num_samples and pred.shape[1] in (2 * NUM_JOINTS, 3 * NUM_JOINTS):
        pred = pred.reshape(num_samples, NUM_JOINTS, -1)  # (T, 16·C) → (T, 16, C)
    if pred.ndim != 3 or pred.shape[:2] != (num_samples, NUM_JOINTS) or pred.shape[2] not in (2, 3):
        raise DatasetError(
            f"{path}: 'pred' has shape {pred.shape}, expected ({num_samples}, {NUM_JOINTS}, 2 or 3)"
        )
    if not np.issubdtype(pred.dtype, np.number):
        raise DatasetError(f"{path}: 'pred' has dtype {pred.dtype}, expected numbers")
    return pred.astype(np.float32)


def read_mpii_json(path: Path) -> tuple[np.ndarray, np.ndarray]:
    """Read FineDiving-Pose's human annotations (MPII-style JSON, spec §12.4).

    Returns:
        ``joints`` float64 (N, 16, 2) pixel (x, y) and ``visible`` bool (N, 16), in file order.

    Raises:
        DatasetError: naming the file and the entry for a missing file or malformed content.
    """
    path = Path(path)
    try:
        entries = json.loads(path.read_text())
    except FileNotFoundError:
        raise DatasetError(f"{path}: file not found") from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise DatasetError(f"{path}: not readable JSON ({exc})") from exc
    if not isinstance(entries, list):
        raise DatasetError(f"{path}: expected a list of per-frame dicts, got {type(entries).__name__}")
    joints = np.zeros((len(entries), NUM_JOINTS, 2))
    visible = np.zeros((len(entries), NUM_JOINTS), dtype=bool)
    for i, entry in enumerate(entries):
        where = f"{path}: entry {i}" + (f" ({entry.get('image')!r})" if isinstance(entry, dict) else "")
        if not isinstance(entry, dict) or "joints" not in entry or "joints_vis" not in entry:
            raise DatasetError(f"{where}: expected a dict with 'joints' and 'joints_vis'")
        try:
            j = np.asarray(entry["joints"], dtype=np.float64)
            v = np.asarray(entry["joints_vis"], dtype=np.float64)
        except (TypeError, ValueError) as exc:
            raise DatasetError(f"{where}: non-numeric joints ({exc})") from None
        if j.shape != (NUM_JOINTS, 2) or v.shape != (NUM_JOINTS,):
            raise DatasetError(f"{where}: joints {j.shape} / joints_vis {v.shape}, expected (16, 2) / (16,)")
        joints[i], visible[i] = j, v > 0
    return joints, visible


# --------------------------------------------------------------------------------------------------
# Export.


def export_finediving(
    annotations: pa.Table,
    skeletons: pa.Table,
    dataset_root: Path,
    out_dir: Path,
    num_samples: int = NUM_SAMPLES,
) -> None:
    """Write a canonical dataset in FineDiving's on-disk layout (see the module docstring).

    Annotation pickles use the real files' types: keys ``(str, int)``; the aqa variant's values are
    ``[dive_number, score, DD, int64 array, int64 array]``; the fine-grained dict adds
    ``sub-action_types`` (``{id: "sub-action <id>"}``; canonical tables carry no names); the coarse
    dict has ``start_frame``/``end_frame`` = the canonical frames and ``judge_scores`` a list.
    ``train_split.pkl`` lists the train and val dives, ``test_split.pkl`` the test dives. A dive whose
    transitions are missing (null) is written without step labels (empty arrays).

    Frames ``start_frame .. end_frame`` of ``dataset_root / video_path`` (an mp4, decoded with PyAV,
    or a folder of ``<frame>.jpg``) go to ``FINADiving_MTL_256s/<video_name>/<dive_index>/<frame:05d>.jpg``
    (named by their frame number, so reading back gives the same start/end frames). The pose file
    ``FineDiving-Pose/<video_name>/pred_comp_<dive_index>.npz`` holds ``pred`` float32
    (num_samples, 16, 2): the skeleton's (x, y) at :func:`linspace_indices`.

    The whole ``out_dir`` is written under a temporary name and renamed when complete.

    Raises:
        DatasetError: a video that is missing or too short, or a skeleton lacking sampled frames.
    """
    validate_annotations(annotations)
    rows = annotations.to_pylist()
    poses = _sampled_poses(rows, skeletons, num_samples)  # before any slow work: fail fast
    with atomic_path(Path(out_dir)) as tmp:
        ann_dir = tmp / ANNOTATIONS_DIR
        ann_dir.mkdir(parents=True)
        aqa: dict[Key, list] = {}
        fine: dict[Key, dict] = {}
        coarse: dict[Key, dict] = {}
        splits: dict[str, list[Key]] = {"train": [], "test": []}
        for row in rows:
            key = (str(row["video_name"]), int(row["dive_index"]))
            transits = np.asarray(row["transitions"] or [], dtype=np.int64)  # null (missing) → none
            labels = np.asarray(row["frame_labels"] or [], dtype=np.int64)
            aqa[key] = [
                row["dive_number"],
                float(row["final_score"]),
                float(row["difficulty"]),
                transits,
                labels,
            ]
            fine[key] = {
                "action_type": row["dive_number"],
                "dive_score": float(row["final_score"]),
                "difficulty": float(row["difficulty"]),
                "steps_transit_frames": transits.copy(),
                "frames_labels": labels.copy(),
                "sub-action_types": {int(i): f"sub-action {int(i)}" for i in dict.fromkeys(labels.tolist())},
            }
            coarse[key] = {
                "action_type": row["dive_number"],
                "start_frame": int(row["start_frame"]),
                "end_frame": int(row["end_frame"]),
                "dive_score": float(row["final_score"]),
                "difficulty": float(row["difficulty"]),
                "judge_scores": [float(s) for s in row["judge_scores"]],
            }
            splits["test" if row["split"] == "test" else "train"].append(key)
        for name, obj in (
            (AQA_FILE, aqa),
            (FINE_FILE, fine),
            (COARSE_FILE, coarse),
            (TRAIN_SPLIT_FILE, splits["train"]),
            (TEST_SPLIT_FILE, splits["test"]),
        ):
            with open(ann_dir / name, "wb") as f:
                pickle.dump(obj, f, protocol=PICKLE_PROTOCOL)
        _write_frames(rows, Path(dataset_root), tmp / FRAMES_DIR)
        for row in rows:
            pose_path = tmp / POSE_DIR / row["video_name"] / f"pred_comp_{int(row['dive_index'])}.npz"
            pose_path.parent.mkdir(parents=True, exist_ok=True)
            np.savez(pose_path, pred=poses[row["id"]])


def _sampled_poses(rows: list[dict], skeletons: pa.Table, num_samples: int) -> dict[str, np.ndarray]:
    """Per dive id, the (num_samples, 16, 2) float32 skeleton at the spec §1.1 sample indices."""
    ids = pa.array([r["id"] for r in rows], pa.string())
    dive = pc.index_in(skeletons.column("id"), value_set=ids).fill_null(-1).to_numpy()
    frame = skeletons.column("frame").to_numpy().astype(np.int64)
    joint = skeletons.column("joint").to_numpy().astype(np.int64)
    xy = np.stack([skeletons.column("x").to_numpy(), skeletons.column("y").to_numpy()], axis=-1)  # (R, 2)
    order = np.argsort(dive, kind="stable")
    bounds = np.searchsorted(dive[order], np.arange(len(rows) + 1))
    poses = {}
    for i, row in enumerate(rows):
        sel = order[bounds[i] : bounds[i + 1]]
        n = row["num_frames"]
        f, j = frame[sel], joint[sel]
        if ((f < 0) | (f >= n) | (j < 0) | (j >= NUM_JOINTS)).any():
            raise DatasetError(
                f"skeleton table: dive {row['id']!r} has frames/joints outside 0..{n - 1} / 0..15"
            )
        dense = np.full((n, NUM_JOINTS, 2), np.nan, dtype=np.float32)  # (n, 16, 2)
        dense[f, j] = xy[sel]
        sampled = dense[linspace_indices(row["start_frame"], row["end_frame"], num_samples)]
        if np.isnan(sampled).any():
            raise DatasetError(f"skeleton table: dive {row['id']!r} lacks joints at sampled frames")
        poses[row["id"]] = sampled
    return poses


def _write_frames(rows: list[dict], dataset_root: Path, frames_out: Path) -> None:
    """Write each dive's frames start..end as ``<frame:05d>.jpg``, decoding each source once."""
    by_source: dict[str, list[dict]] = defaultdict(list)
    for row in rows:
        by_source[row["video_path"]].append(row)
    for video_path, dives in by_source.items():
        source = dataset_root / video_path
        wanted: dict[int, list[Path]] = defaultdict(list)
        for row in dives:
            folder = frames_out / row["video_name"] / str(int(row["dive_index"]))
            folder.mkdir(parents=True)
            for frame in range(row["start_frame"], row["end_frame"] + 1):
                wanted[frame].append(folder / f"{frame:05d}.jpg")
        last = max(wanted)
        if source.is_dir():
            files = {}
            with os.scandir(source) as entries:
                for entry in entries:
                    stem, ext = os.path.splitext(entry.name)
                    if ext.lower() == ".jpg" and stem.isdigit():
                        files[int(stem)] = Path(entry.path)
            missing = sorted(set(wanted) - set(files))
            if missing:
                raise DatasetError(f"{source}: no frame file for frame(s) {few(missing)}")
            for frame, targets in wanted.items():
                for target in targets:
                    shutil.copyfile(files[frame], target)
        elif source.is_file():
            count = 0
            try:
                with av.open(str(source)) as container:
                    for index, image in enumerate(container.decode(video=0)):
                        count = index + 1
                        if index in wanted:
                            picture = image.to_image()
                            for target in wanted[index]:
                                picture.save(target, quality=95)
                        if index >= last:
                            break
            except av.FFmpegError as exc:
                raise DatasetError(f"{source}: cannot decode ({exc})") from exc
            if count <= last:
                raise DatasetError(f"{source}: has {count} frames, but dives need frame {last}")
        else:
            raise DatasetError(f"{source}: video not found")
