"""The sampled skeleton table: what the ``pose`` stage writes and training reads.

One row per (dive, sampled frame, joint) (:data:`SAMPLED_SKELETON_SCHEMA`), sorted by ``id`` (in
dive-table order), ``frame``, ``joint``:

============  ========  ==================================================================================
column        type      meaning
============  ========  ==================================================================================
id            string    dive id of the canonical dive table
frame         int32     sample index 0 .. T-1 (the time axis the model sees)
source_frame  int64     frame number in the dive's ``video_path`` (mp4: 0-based decode index; frame
                        folder: the JPEG's number) — the decode manifest's ``indices`` of the dive
joint         int8      0..15, MPII order of spec §1.4 (``MPII_JOINTS``)
x, y          float32   pixels of the source video frame: origin at the top-left corner, x to the right,
                        y down (mmpose output is clipped into ``[0, width-1] × [0, height-1]``)
confidence    float32   in [0, 1]: annotation confidence / visibility (1 when the file has none),
                        or the model's keypoint score clipped to [0, 1]
width         int32     width of the source frame in pixels (for normalisation and flips, spec §13.7);
                        both backends read it from the dive's video, which must therefore be readable
height        int32     height of the source frame in pixels
============  ========  ==================================================================================

The coordinates are stored in pixels; the normalisation the model applies is recorded in the schema
metadata (key ``hpmcore.pose``, JSON, read with :func:`pose_metadata`) and implemented by
:func:`normalize_skeleton`: ``none`` (spec §1.4: the reference feeds raw pixels and relies on the
GCN's input BatchNorm) or ``frame``.
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pyarrow as pa

from hpmcore.data.canonical import NUM_JOINTS, DatasetError

__all__ = [
    "METADATA_KEY",
    "PIXEL_SPACE",
    "SAMPLED_SKELETON_SCHEMA",
    "SKELETONS",
    "DiveSkeleton",
    "PoseError",
    "dive_skeletons",
    "group_rows",
    "normalize_skeleton",
    "pose_metadata",
    "skeleton_table",
]

METADATA_KEY = b"hpmcore.pose"
"""Schema-metadata key of the sampled skeleton table; the value is JSON (see :func:`pose_metadata`)."""

SKELETONS = "skeletons.parquet"
"""The pose stage's sampled skeleton table, next to its ``cache`` folder (dvc.yaml names it too)."""

PIXEL_SPACE = "source video frame pixels, origin top-left, x right, y down"
"""How the table's metadata describes the coordinates."""


SAMPLED_SKELETON_SCHEMA = pa.schema(
    [
        pa.field("id", pa.string(), nullable=False),
        pa.field("frame", pa.int32(), nullable=False),
        pa.field("source_frame", pa.int64(), nullable=False),
        pa.field("joint", pa.int8(), nullable=False),
        pa.field("x", pa.float32(), nullable=False),
        pa.field("y", pa.float32(), nullable=False),
        pa.field("confidence", pa.float32(), nullable=False),
        pa.field("width", pa.int32(), nullable=False),
        pa.field("height", pa.int32(), nullable=False),
    ]
)
"""The sampled skeleton table (see the module docstring)."""


class PoseError(ValueError):
    """A pose model, its config or its output is unusable; the message names the file or the dive."""


@dataclass(frozen=True)
class DiveSkeleton:
    """The skeleton of one dive at its T sampled frames, in source-frame pixels."""

    id: str
    source_frames: np.ndarray
    """int64 ``(T,)``: frame number in the dive's ``video_path`` of each sampled frame."""
    xy: np.ndarray
    """float32 ``(T, 16, 2)``: (x, y) pixels of the source frame, MPII joint order."""
    confidence: np.ndarray
    """float32 ``(T, 16)`` in [0, 1]."""
    width: int
    """Source frame width in pixels."""
    height: int
    """Source frame height in pixels."""


def skeleton_table(skeletons: Sequence[DiveSkeleton], metadata: dict[str, Any]) -> pa.Table:
    """The sampled skeleton table (``SAMPLED_SKELETON_SCHEMA``) of ``skeletons``, in their order.

    ``metadata`` is stored as JSON under the schema-metadata key ``hpmcore.pose``.
    """
    ids, frames, source, joints, xs, ys, conf, widths, heights = ([] for _ in range(9))
    for s in skeletons:
        t = len(s.source_frames)
        rows = t * NUM_JOINTS
        ids.append(np.full(rows, s.id, dtype=object))
        frames.append(np.repeat(np.arange(t, dtype=np.int32), NUM_JOINTS))
        source.append(np.repeat(s.source_frames.astype(np.int64), NUM_JOINTS))
        joints.append(np.tile(np.arange(NUM_JOINTS, dtype=np.int8), t))
        xs.append(s.xy[..., 0].reshape(-1))  # (T, 16) → (T·16,), joint fastest
        ys.append(s.xy[..., 1].reshape(-1))
        conf.append(s.confidence.reshape(-1))
        widths.append(np.full(rows, s.width, dtype=np.int32))
        heights.append(np.full(rows, s.height, dtype=np.int32))
    schema = SAMPLED_SKELETON_SCHEMA.with_metadata({METADATA_KEY: json.dumps(metadata, sort_keys=True)})
    columns = [ids, frames, source, joints, xs, ys, conf, widths, heights]
    arrays = [
        pa.array(np.concatenate(c), type=f.type) if c else pa.array([], type=f.type)
        for c, f in zip(columns, SAMPLED_SKELETON_SCHEMA, strict=True)
    ]
    return pa.Table.from_arrays(arrays, schema=schema)


def dive_skeletons(table: pa.Table) -> dict[str, DiveSkeleton]:
    """Read a sampled skeleton table back into one :class:`DiveSkeleton` per dive (dense arrays).

    Raises:
        DatasetError: a dive whose rows are not exactly T×16 distinct (frame, joint) pairs.
    """
    if not set(SAMPLED_SKELETON_SCHEMA.names) <= set(table.schema.names):
        raise DatasetError(f"not a sampled skeleton table: columns {table.schema.names}")
    out: dict[str, DiveSkeleton] = {}
    for dive_id, sel in group_rows(table.column("id")):
        frame = table.column("frame").to_numpy()[sel].astype(np.int64)
        joint = table.column("joint").to_numpy()[sel].astype(np.int64)
        t = int(frame.max()) + 1
        if len(sel) != t * NUM_JOINTS or frame.min() < 0 or joint.min() < 0 or joint.max() >= NUM_JOINTS:
            raise DatasetError(f"skeleton table: dive {dive_id!r} has {len(sel)} rows, not T×16")
        flat = frame * NUM_JOINTS + joint
        if len(np.unique(flat)) != len(flat):
            raise DatasetError(f"skeleton table: dive {dive_id!r} repeats (frame, joint) pairs")
        order = sel[np.argsort(flat)]

        def col(name: str, idx: np.ndarray = order) -> np.ndarray:
            return table.column(name).to_numpy()[idx]

        xy = np.stack([col("x"), col("y")], axis=-1).reshape(t, NUM_JOINTS, 2)  # (T, 16, 2)
        out[dive_id] = DiveSkeleton(
            id=dive_id,
            source_frames=col("source_frame").reshape(t, NUM_JOINTS)[:, 0].astype(np.int64),
            xy=xy.astype(np.float32),
            confidence=col("confidence").reshape(t, NUM_JOINTS).astype(np.float32),
            width=int(col("width")[0]),
            height=int(col("height")[0]),
        )
    return out


def pose_metadata(table: pa.Table | pa.Schema) -> dict[str, Any]:
    """The JSON metadata of a sampled skeleton table (read with ``pq.read_table``, it survives).

    Keys: ``backend``, ``source`` (annotations) or ``model`` (mmpose: config, checkpoint and its
    SHA-256, random_init, detector, keypoint layout), ``normalize`` (``none`` | ``frame``, see
    :func:`normalize_skeleton`), ``num_frames`` (T) and ``pixel_space``.
    """
    schema = table.schema if isinstance(table, pa.Table) else table
    raw = (schema.metadata or {}).get(METADATA_KEY)
    if raw is None:
        raise DatasetError("skeleton table has no hpmcore.pose metadata")
    return json.loads(raw)


def normalize_skeleton(xy: np.ndarray, width: int, height: int, mode: str = "frame") -> np.ndarray:
    """Apply the skeleton normalisation named ``mode`` to pixel coordinates.

    * ``none``: the pixels unchanged (spec §1.4: the reference feeds raw pixels and relies on the
      GCN's input BatchNorm).
    * ``frame``: ``(xy − (W/2, H/2)) / (max(W, H)/2)``: the frame centre goes to (0, 0) and the
      longer side of the frame spans [−1, 1]; one scale for both axes keeps the aspect ratio (bone
      lengths and angles), so frames of any size give comparable skeletons.

    Args:
        xy: ``(..., 16, 2)`` pixel (x, y), e.g. ``(T, 16, 2)``.
        width, height: source frame size in pixels.

    Returns:
        float32 array of the shape of ``xy``.
    """
    xy = np.asarray(xy, dtype=np.float32)
    if xy.ndim < 2 or xy.shape[-1] != 2:
        raise ValueError(f"xy must have shape (..., 2), got {xy.shape}")
    if width <= 0 or height <= 0:
        raise ValueError(f"frame size must be positive, got {width}x{height}")
    match mode:
        case "none":
            return xy.copy()
        case "frame":
            centre = np.array([width / 2, height / 2], dtype=np.float32)
            return (xy - centre) / np.float32(max(width, height) / 2)
        case _:
            raise ValueError(f"unknown skeleton normalisation {mode!r}; use 'none' or 'frame'")


def group_rows(ids: pa.ChunkedArray | pa.Array) -> Iterator[tuple[str, np.ndarray]]:
    """``(id, row indices)`` per distinct id, ids in order of first appearance."""
    values = np.asarray(ids.to_pylist(), dtype=object)
    if len(values) == 0:
        return
    uniq, first, inverse = np.unique(values, return_index=True, return_inverse=True)
    order = np.argsort(inverse, kind="stable")
    bounds = np.searchsorted(inverse[order], np.arange(len(uniq) + 1))
    for u in np.argsort(first):
        yield str(uniq[u]), order[bounds[u] : bounds[u + 1]]
