"""The project's canonical dataset form: one Parquet annotation table and one Parquet skeleton table.

Every dataset reader (synthetic, FineDiving, MTL-AQA) produces the annotation table below, and every
later stage consumes only this form.

Annotation table, one row per dive (``ANNOTATION_SCHEMA``):

=================  ==================  ==========================================================
column             type                meaning
=================  ==================  ==========================================================
id                 string              ``"<video_name>/<dive_index>"``, unique
video_name         string              broadcast / source video name (FineDiving key part 1)
dive_index         int64               dive number inside that video (FineDiving key part 2)
video_path         string              mp4 file or frame folder, relative to the dataset root
start_frame        int64               first frame of the dive inside ``video_path`` (inclusive)
end_frame          int64               last frame of the dive inside ``video_path`` (inclusive)
num_frames         int64               ``end_frame - start_frame + 1``
dive_number        string              FINA dive number, position letter lower-case (``"407c"``)
difficulty         float64             degree of difficulty (DD)
judge_scores       list<float64>       the judges' marks (empty when the source has none)
final_score        float64             the official dive score
transitions        list<int64>         last frame of each step, 0-based within the dive, strictly
                                       increasing (empty when the source has no step labels, e.g.
                                       MTL-AQA; null when they are unusable, see below)
frame_labels       list<int64>         one sub-action id per frame of the dive (empty when absent,
                                       null together with ``transitions``)
split              string              ``"train"``, ``"val"`` or ``"test"``
=================  ==================  ==========================================================

**Missing transitions.** A dive whose source gives step labels that cannot be used — a
``steps_transit_frames`` value outside the dive (FineDiving has ``-1`` in 4 of its 3,000 records),
unsorted or fewer than two values, ``frames_labels`` of the wrong length or with fewer than three
distinct steps (spec §5.2 needs three for its two transitions) — keeps its row with ``transitions``
and ``frame_labels`` both **null** (:func:`step_label_problem` says why; ``prepare`` applies
``data.bad_transitions``). Consumers treat null as "no ground-truth transitions": no ``L_tas`` term in
training, not counted in tIoU/AIoU; the score is still used. ``[]`` means the source has no step
labels at all (the same consequence, but not a data error).

**Values** (:func:`value_problem`, checked by every reader and :func:`validate_annotations`): final
score and judges' marks finite and >= 0, DD finite and > 0, frame numbers in ``0 .. 2**31 - 1``,
``video_name`` one printable path component (not empty, ``.``/``..``, no ``/``, ``\\``, NUL or lone
surrogate), ``id = "<video_name>/<dive_index>"``.

Skeleton table, one row per (dive, frame, joint) (``SKELETON_SCHEMA``): ``id``, ``frame`` (0-based
within the dive), ``joint`` (0..15, MPII order of spec §1.4), ``x``, ``y`` (pixels of the source video
frame, origin at the top-left corner, x to the right, y down) and ``confidence`` in [0, 1].
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path

import pyarrow as pa

from hpmcore.io import read_parquet

SPLITS: tuple[str, ...] = ("train", "val", "test")
MAX_FRAME = 2**31 - 1
"""Largest frame number a dive may have (2.7 years of video at 25 fps)."""

MPII_JOINTS: tuple[str, ...] = (
    "right_ankle",
    "right_knee",
    "right_hip",
    "left_hip",
    "left_knee",
    "left_ankle",
    "pelvis",
    "thorax",
    "upper_neck",
    "head_top",
    "right_wrist",
    "right_elbow",
    "right_shoulder",
    "left_shoulder",
    "left_elbow",
    "left_wrist",
)
NUM_JOINTS = len(MPII_JOINTS)

ANNOTATION_SCHEMA = pa.schema(
    [
        pa.field("id", pa.string(), nullable=False),
        pa.field("video_name", pa.string(), nullable=False),
        pa.field("dive_index", pa.int64(), nullable=False),
        pa.field("video_path", pa.string(), nullable=False),
        pa.field("start_frame", pa.int64(), nullable=False),
        pa.field("end_frame", pa.int64(), nullable=False),
        pa.field("num_frames", pa.int64(), nullable=False),
        pa.field("dive_number", pa.string(), nullable=False),
        pa.field("difficulty", pa.float64(), nullable=False),
        pa.field("judge_scores", pa.list_(pa.float64()), nullable=False),
        pa.field("final_score", pa.float64(), nullable=False),
        pa.field("transitions", pa.list_(pa.int64()), nullable=True),
        pa.field("frame_labels", pa.list_(pa.int64()), nullable=True),
        pa.field("split", pa.string(), nullable=False),
    ]
)

SKELETON_SCHEMA = pa.schema(
    [
        pa.field("id", pa.string(), nullable=False),
        pa.field("frame", pa.int32(), nullable=False),
        pa.field("joint", pa.int8(), nullable=False),
        pa.field("x", pa.float32(), nullable=False),
        pa.field("y", pa.float32(), nullable=False),
        pa.field("confidence", pa.float32(), nullable=False),
    ]
)


class DatasetError(ValueError):
    """A dataset file is missing or malformed; the message names the file and the problem."""


def dive_id(video_name: str, dive_index: int) -> str:
    """The canonical id of a dive: ``"<video_name>/<dive_index>"``."""
    return f"{video_name}/{int(dive_index)}"


def normalize_dive_number(value: str) -> str:
    """``"407C"`` → ``"407c"``; surrounding whitespace removed.

    Raises:
        ValueError: an empty dive number, or one with control characters or a lone surrogate.
    """
    text = str(value).strip()
    if not text:
        raise ValueError("empty dive number")
    if not text.isprintable():
        raise ValueError(f"dive number {text!r} has control characters or a lone surrogate")
    return text[:-1] + text[-1].lower() if text[-1].isalpha() else text


def name_problem(name: str) -> str | None:
    """Why ``name`` cannot be a ``video_name`` (a single path component of printable text), or ``None``.

    ``video_name`` becomes a folder name (FineDiving frame and pose folders, cache lookups), so
    ``../../etc``, ``a/b``, NUL, empty names and lone surrogates (not encodable) are refused.
    """
    if not name:
        return "is empty"
    if name in (".", ".."):
        return f"{name!r} is a relative path"
    if "/" in name or "\\" in name:
        return f"{name!r} contains a path separator"
    if not name.isprintable():
        return f"{name!r} has a NUL or control character or a lone surrogate"
    return None


def value_problem(row: dict) -> str | None:
    """Why a canonical row's values are unusable (the scores, DD, frame numbers, names), or ``None``.

    Final score and judges' marks must be finite and >= 0, DD finite and > 0, frame numbers in
    ``0 .. MAX_FRAME``, dive index >= 0, ``video_name`` a valid name (:func:`name_problem`) and ``id``
    ``"<video_name>/<dive_index>"``.
    """
    reason = name_problem(row["video_name"])
    if reason is not None:
        return f"video_name {reason}"
    if row["id"] != dive_id(row["video_name"], row["dive_index"]):
        return f"id {row['id']!r} is not '<video_name>/<dive_index>'"
    if row["dive_index"] < 0:
        return f"dive_index {row['dive_index']} is negative"
    if row["start_frame"] < 0 or row["end_frame"] > MAX_FRAME:
        return f"frames {row['start_frame']}..{row['end_frame']} outside 0..{MAX_FRAME}"
    if not row["dive_number"] or not row["dive_number"].isprintable():
        return f"dive_number {row['dive_number']!r} is empty or has control characters"
    if not (math.isfinite(row["difficulty"]) and row["difficulty"] > 0):
        return f"difficulty (DD) {row['difficulty']} is not a finite number > 0"
    if not (math.isfinite(row["final_score"]) and row["final_score"] >= 0):
        return f"final_score {row['final_score']} is not a finite number >= 0"
    if any(not (math.isfinite(j) and j >= 0) for j in row["judge_scores"]):
        return f"judge_scores {row['judge_scores']} are not all finite numbers >= 0"
    return None


def step_label_problem(transitions: Sequence[int], labels: Sequence[int], num_frames: int) -> str | None:
    """Why a dive's step labels cannot be used (see "Missing transitions" above), or ``None``.

    Args:
        transitions: the last frame of each step, 0-based in the dive (FineDiving's
            ``steps_transit_frames``).
        labels: one step id per frame of the dive (``frames_labels``); both empty: no step labels.
        num_frames: frames of the dive.
    """
    if not labels:
        return f"steps_transit_frames {list(transitions)} but no frames_labels" if transitions else None
    if len(labels) != num_frames:
        return f"{len(labels)} frames_labels for {num_frames} frames"
    steps = len(set(labels))
    if steps < 3:
        return f"frames_labels have {steps} distinct step(s); two transitions need 3"
    if len(transitions) < 2 or list(transitions) != sorted(set(transitions)):
        return f"steps_transit_frames {list(transitions)} are not two or more increasing frames"
    if transitions[0] < 0 or transitions[-1] >= num_frames:
        return f"steps_transit_frames {list(transitions)} outside the dive's frames 0..{num_frames - 1}"
    return None


def annotation_table(rows: list[dict]) -> pa.Table:
    """Build an annotation table from row dicts, checking the schema and the table's invariants.

    Raises:
        DatasetError: on missing columns, duplicate ids, bad splits or inconsistent frame counts.
    """
    missing = [name for name in ANNOTATION_SCHEMA.names if any(name not in r for r in rows)]
    if missing:
        raise DatasetError(f"annotation rows lack column(s) {sorted(set(missing))}")
    try:
        table = pa.Table.from_pylist(
            [{name: r[name] for name in ANNOTATION_SCHEMA.names} for r in rows],
            schema=ANNOTATION_SCHEMA,
        )
    except (pa.ArrowException, OverflowError, UnicodeError, TypeError, ValueError) as exc:
        raise DatasetError(f"annotation rows do not fit the canonical schema ({exc})") from exc
    validate_annotations(table)
    return table


def validate_annotations(table: pa.Table, source: str = "annotation table") -> None:
    """Check the invariants every canonical annotation table satisfies.

    Raises:
        DatasetError: naming ``source`` and the first offending dive.
    """
    if not table.schema.equals(ANNOTATION_SCHEMA, check_metadata=False):
        raise DatasetError(
            f"{source}: schema differs from the canonical one:\n{table.schema}\nexpected:\n"
            f"{ANNOTATION_SCHEMA}"
        )
    seen: set[str] = set()
    for row in table.to_pylist():
        rid = row["id"]
        if rid in seen:
            raise DatasetError(f"{source}: duplicate id {rid!r}")
        seen.add(rid)
        if row["split"] not in SPLITS:
            raise DatasetError(f"{source}: dive {rid!r} has split {row['split']!r}, not one of {SPLITS}")
        n = row["num_frames"]
        if n != row["end_frame"] - row["start_frame"] + 1 or n <= 0:
            raise DatasetError(
                f"{source}: dive {rid!r} has num_frames={n} but frames "
                f"{row['start_frame']}..{row['end_frame']}"
            )
        reason = value_problem(row)
        if reason is not None:
            raise DatasetError(f"{source}: dive {rid!r}: {reason}")
        labels, transitions = row["frame_labels"], row["transitions"]
        if (labels is None) != (transitions is None):
            raise DatasetError(f"{source}: dive {rid!r} has null transitions or frame_labels, not both")
        if labels is None:
            continue  # unusable step labels, marked missing
        if labels and len(labels) != n:
            raise DatasetError(f"{source}: dive {rid!r} has {len(labels)} frame labels for {n} frames")
        if any(not 0 <= t < n for t in transitions) or transitions != sorted(set(transitions)):
            raise DatasetError(
                f"{source}: dive {rid!r} has transitions {transitions} outside 0..{n - 1} or unsorted"
            )


def read_annotations(path: Path, bad_transitions: dict[str, str] | None = None) -> pa.Table:
    """Read and validate a canonical annotation Parquet file.

    Args:
        path: the file (tables written before ``transitions``/``frame_labels`` became nullable are
            read as well).
        bad_transitions: if given, a dataset being imported: dives whose step labels cannot be used
            (:func:`step_label_problem`) get null ``transitions``/``frame_labels`` instead of failing,
            and ``id → "<path>: dive <id>: <reason>"`` is added here for them (and for dives already
            null). Without it (a pipeline table) any such dive is an error.

    Raises:
        DatasetError: if the file is missing, unreadable or violates the canonical schema.
    """
    table = read_parquet(path, DatasetError, "annotation table not found").replace_schema_metadata(None)
    if [(f.name, f.type) for f in table.schema] == [(f.name, f.type) for f in ANNOTATION_SCHEMA]:
        table = table.cast(ANNOTATION_SCHEMA)  # only nullability differs (tables of earlier versions)
    if bad_transitions is not None and table.schema.equals(ANNOTATION_SCHEMA):
        rows = table.to_pylist()
        for row in rows:
            if row["transitions"] is None or row["frame_labels"] is None:
                reason = "transitions missing"
            else:
                reason = step_label_problem(row["transitions"], row["frame_labels"], row["num_frames"])
            if reason is not None:
                bad_transitions[row["id"]] = f"{path}: dive {row['id']!r}: {reason}"
                row["transitions"] = row["frame_labels"] = None
        table = pa.Table.from_pylist(rows, schema=ANNOTATION_SCHEMA)
    validate_annotations(table, source=str(path))
    return table
