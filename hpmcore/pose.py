"""Skeletons of the sampled frames of each dive: imported annotations or mmpose top-down estimation.

Two entry points turn the canonical dive table into the *sampled skeleton table* below and a failures
table:

* :func:`extract_pose` — the ``pose`` stage: one cache entry per dive (:mod:`hpmcore.extract`'s
  per-video cache, ``<out>/cache/<key>.safetensors``), so a rerun computes only new or changed dives
  and logs ``pose: computed N, reused M (...)``; failures as :data:`hpmcore.extract.FAILURE_SCHEMA`;
* :func:`extract_skeletons` — the same skeletons computed in memory, nothing cached (a quick look at
  a dataset, tests).

Two backends, chosen by ``PoseConfig.backend``:

* ``annotations`` — import existing skeletons (``PoseConfig.source``):

  - ``skeletons``: a canonical skeleton table (``SKELETON_SCHEMA``, e.g. the synthetic ground truth
    ``<dataset_root>/skeletons.parquet``), frames 0-based within the dive;
  - ``finediving-npz``: FineDiving-Pose ``<pose_root>/<video_name>/pred_comp_<dive_index>.npz``
    (``pred`` 96×16×2 or 96×16×3 with a confidence channel, at the spec §1.1 sampled frames;
    ``pose_root`` defaults to ``<dataset_root>/FineDiving-Pose``);
  - ``mpii-json``: MPII-style JSON (spec §12.4) ``<json_root>/<video_name>/<dive_index>.json``, one
    entry per frame of the dive in frame order (``json_root`` defaults to
    ``<dataset_root>/FineDiving-Pose-MPII``; this layout is ours, the upstream download has none).

  Each is resampled to the same T frames as the decode stage: frame offsets
  ``linspace_indices(start_frame, end_frame, T)`` (spec §1.1). A FineDiving ``.npz`` holds the 96
  frames of ``linspace_indices(start, end, 96)``; for T = 96 they are taken as they are, for another
  T each sampled frame is linearly interpolated (in source-frame number) between the two nearest
  ``.npz`` frames.

* ``mmpose`` — top-down estimation (``mmpose.apis.init_model`` + ``inference_topdown``) on the T
  sampled frames decoded at the source resolution (the decode stage's frames, 32×32 px by default,
  are too small for pose estimation). The person box of a frame is the best ``person`` detection of
  the optional detector (mmdet ``init_detector`` + ``inference_detector``); without a detector, or
  when it finds nobody, the box of the previous frame's confident keypoints grown by ``box_margin``
  per side, and the whole frame for the first frame (or after a frame with fewer than 2 confident
  keypoints).
  Models with 17 COCO keypoints are mapped to the 16 MPII joints by :func:`coco_to_mpii`; models with
  16 keypoints are taken to be in MPII order already (mmpose's MPII datasets use it).

Sampled skeleton table (``SAMPLED_SKELETON_SCHEMA``), one row per (dive, sampled frame, joint),
sorted by ``id`` (in dive-table order), ``frame``, ``joint``:

============  ========  ==================================================================================
column        type      meaning
============  ========  ==================================================================================
id            string    dive id of the canonical dive table
frame         int32     sample index 0 .. T-1 (the time axis the model sees)
source_frame  int64     frame number in the dive's ``video_path``: ``start_frame + linspace offset``
                        (mp4: 0-based decode index; frame folder: the JPEG's number) — the decode
                        stage's ``indices``
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

**The pose cache** (:func:`extract_pose`). A dive's entry holds ``xy`` float32 ``(T, 16, 2)``,
``confidence`` float32 ``(T, 16)`` and ``source_frame`` int64 ``(T,)``, with the source frame's
``width`` and ``height`` as metadata. Its key is the SHA-256 (:func:`hpmcore.extract.digest`) of

* the dive's input: the content hash of its video (both backends read the frame size from it; taken
  from the decode manifest when given), its frame range and its sampled frame numbers (the decode
  manifest's ``indices``), plus, for ``annotations``, the content
  of its skeleton rows (``skeletons``: the dive's rows, in (frame, joint) order, so reordering the
  file changes nothing) or the SHA-256 of its ``.npz`` / ``.json`` file;
* T (the sampled frames are those of the frame range and T); the annotation ``source``, or for ``mmpose``
  the SHA-256 of the
  model config and checkpoint (``random-init`` without one), of the detector's, the box and score
  params and the mmpose / mmdet / torch versions;
* :data:`POSE_CACHE_VERSION` (see "Cache versions" in :mod:`hpmcore.extract`).

Not in the key: ``decode.min_source_frames`` (it decides which dives decode keeps, not a skeleton),
``normalize`` (recorded in the table's metadata, the stored pixels do not change),
``device``, ``trust_checkpoint``, ``on_error``, and the paths themselves (entries stay valid when the
dataset moves). The table is rebuilt from the entries, in dive order, on every run.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import pyarrow as pa
import torch
from tqdm import tqdm

from hpmcore.config import DecodeConfig, PoseConfig
from hpmcore.data.canonical import MPII_JOINTS, NUM_JOINTS, SKELETON_SCHEMA, DatasetError
from hpmcore.data.finediving import POSE_DIR, linspace_indices, read_finediving_pose, read_mpii_json
from hpmcore.extract import (
    CACHE_DIR,
    SUFFIX,
    Entry,
    Extraction,
    Item,
    ItemError,
    ManifestError,
    digest,
    failures_table,
    load_entry,
    per_item,
    run_cached,
    sha256_file,
    source_hash,
)
from hpmcore.io import read_parquet
from hpmcore.models.checkpoints import CheckpointError
from hpmcore.runtime import resolve_device
from hpmcore.video import FRAME_SUFFIXES, VideoError, decode_dive, probe

__all__ = [
    "COCO_KEYPOINTS",
    "FAILURE_SCHEMA",
    "HEAD_TOP_EXTENSION",
    "MPII_JSON_DIR",
    "POSE_CACHE_VERSION",
    "SAMPLED_SKELETON_SCHEMA",
    "SKELETONS",
    "UPPER_NECK_FRACTION",
    "DiveSkeleton",
    "PoseError",
    "coco_to_mpii",
    "dive_skeletons",
    "extract_pose",
    "extract_skeletons",
    "normalize_skeleton",
    "pose_metadata",
    "skeleton_table",
]

log = logging.getLogger(__name__)

METADATA_KEY = b"hpmcore.pose"
"""Schema-metadata key of the sampled skeleton table; the value is JSON (see :func:`pose_metadata`)."""
MPII_JSON_DIR = "FineDiving-Pose-MPII"
"""Default folder (under the dataset root) of the MPII-style JSON files, one per dive."""
NPZ_SAMPLES = 96
"""Frames per FineDiving-Pose ``.npz`` (spec §12.4)."""
SKELETONS = "skeletons.parquet"
"""The pose stage's sampled skeleton table, next to its ``cache`` folder (dvc.yaml names it too)."""
RANDOM_INIT = "random-init"
"""What the cache key records for a model without a checkpoint (``pose.random_init``)."""
POSE_CACHE_VERSION = 1
"""Cache version of the pose stage's entries: bump it when a change to a backend, the COCO→MPII mapping,
the box tracking or the annotation readers changes the skeleton or the metadata of an entry for the
same inputs and params."""

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
FAILURE_SCHEMA = pa.schema(
    [pa.field("id", pa.string(), nullable=False), pa.field("reason", pa.string(), nullable=False)]
)

COCO_KEYPOINTS: tuple[str, ...] = (
    "nose",
    "left_eye",
    "right_eye",
    "left_ear",
    "right_ear",
    "left_shoulder",
    "right_shoulder",
    "left_elbow",
    "right_elbow",
    "left_wrist",
    "right_wrist",
    "left_hip",
    "right_hip",
    "left_knee",
    "right_knee",
    "left_ankle",
    "right_ankle",
)
_COCO = {name: i for i, name in enumerate(COCO_KEYPOINTS)}
_MPII = {name: i for i, name in enumerate(MPII_JOINTS)}
_COCO_DIRECT = {
    name: _COCO[name]
    for name in MPII_JOINTS
    if name in _COCO  # ankles, knees, hips, wrists, elbows, shoulders: the same joint in both layouts
}
_FACE = [_COCO[n] for n in ("nose", "left_eye", "right_eye", "left_ear", "right_ear")]
UPPER_NECK_FRACTION = 0.5
"""upper_neck = thorax + 0.5 · (head_centre − thorax)."""
HEAD_TOP_EXTENSION = 0.75
"""head_top = head_centre + 0.75 · (head_centre − thorax)."""
_MIN_TRACK_KEYPOINTS = 2
_MIN_BOX_SIDE = 16.0


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


# --------------------------------------------------------------------------------------------------
# Public API.


def extract_skeletons(
    dives: pa.Table,
    dataset_root: Path,
    cfg: PoseConfig,
    *,
    num_frames: int,
    decode_cfg: DecodeConfig | None = None,
    project_dir: Path = Path("."),
    progress: bool = True,
) -> tuple[pa.Table, pa.Table]:
    """Skeletons of the T sampled frames of every dive, and the dives that failed.

    Args:
        dives: canonical dive table (at least ``id``, ``video_name``, ``dive_index``, ``video_path``,
            ``start_frame``, ``end_frame``), e.g. ``data/prepared/dives.parquet``.
        dataset_root: root the ``video_path`` column (and the default annotation paths) are relative to.
        cfg: the ``pose`` section of ``params.yaml``.
        num_frames: T, frames sampled per dive (``decode.num_frames``; spec §1.1).
        decode_cfg: the decode stage's settings; its ``min_source_frames`` rejects too-short dives in
            both backends, as the decode stage does. ``None``: ``DecodeConfig(num_frames=num_frames)``.
        project_dir: relative paths in ``cfg`` (checkpoints, configs, ``annotations_path``) are
            resolved against it (the folder of ``params.yaml``).
        progress: show a progress bar.

    Returns:
        ``(skeletons, failures)``: the sampled skeleton table (``SAMPLED_SKELETON_SCHEMA``, T·16 rows
        per successful dive, metadata from :func:`pose_metadata`) and ``FAILURE_SCHEMA`` rows
        ``(id, reason)`` of the dives skipped under ``cfg.on_error == "skip"``.

    Raises:
        DatasetError, VideoError, PoseError: for a dive's missing or malformed input (annotation file,
            ``.npz`` of the wrong shape, unreadable video, non-finite model output) when
            ``cfg.on_error == "fail"``; messages name the file.
        CheckpointError: a checkpoint that does not exist, cannot be read or does not match the model.
        PoseError: a model config not found, or a model that is neither COCO-17 nor MPII-16.
        ConfigError: an invalid ``cfg`` / ``decode_cfg``.
        ValueError: ``num_frames`` differs from ``decode_cfg.num_frames``.
    """
    cfg.validate()
    if decode_cfg is None:
        decode_cfg = DecodeConfig(num_frames=num_frames)
    elif decode_cfg.num_frames != num_frames:
        raise ValueError(f"num_frames={num_frames} but decode_cfg.num_frames={decode_cfg.num_frames}")
    decode_cfg.validate()
    missing = sorted(
        {"id", "video_name", "dive_index", "video_path", "start_frame", "end_frame"} - set(dives.schema.names)
    )
    if missing:
        raise DatasetError(f"dive table lacks column(s) {missing}")
    dataset_root, project_dir = Path(dataset_root), Path(project_dir)
    start = time.perf_counter()
    match cfg.backend:
        case "annotations":
            backend: _Backend = _Annotations(cfg, dataset_root, project_dir)
        case "mmpose":
            backend = _MMPose(cfg, project_dir)
    skeletons: list[DiveSkeleton] = []
    failures: list[dict[str, str]] = []
    for row in tqdm(dives.to_pylist(), desc=f"pose ({cfg.backend})", unit="dive", disable=not progress):
        try:
            skeletons.append(backend.dive(row, dataset_root, decode_cfg))
        except (DatasetError, VideoError, PoseError) as exc:
            if cfg.on_error == "fail":
                raise
            log.warning("pose: skipping dive %s: %s", row["id"], exc)
            failures.append({"id": row["id"], "reason": str(exc)})
    seconds = time.perf_counter() - start
    log.info(
        "pose (%s): %d dives, %d failed, %.1f s (%.2f dives/s)",
        cfg.backend,
        len(skeletons),
        len(failures),
        seconds,
        len(skeletons) / seconds if seconds > 0 else float("inf"),
    )
    table = skeleton_table(skeletons, {**backend.metadata(), "num_frames": num_frames})
    return table, pa.Table.from_pylist(failures, schema=FAILURE_SCHEMA)


def extract_pose(
    dives: pa.Table,
    cfg: PoseConfig,
    *,
    root: Path,
    out_dir: Path,
    decode_cfg: DecodeConfig,
    decoded: pa.Table | None = None,
    project_dir: Path = Path("."),
    progress: bool = True,
) -> Extraction:
    """The ``pose`` stage: skeletons of every dive through the per-video cache ``out_dir/cache``.

    Computes (or reuses) one entry per dive (see "The pose cache" above) and builds the sampled
    skeleton table from the entries, in dive-table order. Only the cache entries are written here; the
    caller writes the returned table (``SKELETONS``), failures table and stats next to the cache.

    Args:
        dives: canonical dive table (at least ``id``, ``video_name``, ``dive_index``, ``video_path``,
            ``start_frame``, ``end_frame``), e.g. ``data/prepared/dives.parquet``.
        cfg: the ``pose`` section of ``params.yaml``.
        root: the dataset root (``data.root``) that ``video_path`` and the default annotation paths
            are relative to.
        out_dir: the stage's output folder; entries go to ``out_dir/cache``.
        decode_cfg: the decode stage's settings: T (``num_frames``) and ``min_source_frames``.
        decoded: the decode stage's manifest (:data:`hpmcore.extract.DECODE_MANIFEST_SCHEMA`), or
            ``None``. When given, only the dives it holds are extracted (a dive that failed decoding
            is left out here too), its source hashes are used instead of hashing the videos again,
            and each skeleton's sampled frames must equal its ``indices``.
        project_dir: relative paths in ``cfg`` (checkpoints, configs, ``annotations_path``) are
            resolved against it (the folder of ``params.yaml``).
        progress: show a progress bar.

    Returns:
        :class:`~hpmcore.extract.Extraction` whose ``manifest`` is the sampled skeleton table
        (``SAMPLED_SKELETON_SCHEMA``, metadata from :func:`pose_metadata`), ``failures`` the
        :data:`hpmcore.extract.FAILURE_SCHEMA` rows (stage ``pose``) of the dives skipped under
        ``cfg.on_error == "skip"``, and ``stats`` counts and throughput (``stats.json``).

    Raises:
        ExtractionFailed: ``cfg.on_error == "fail"`` and a dive failed (missing or malformed
            annotation file, no skeleton rows, unreadable or too-short video, non-finite model
            output); the message names the file.
        DatasetError: the dive table lacks columns, or the ``skeletons`` table is missing or malformed
            (a dataset-wide file: the stage stops under either ``on_error``).
        ManifestError: ``decoded`` was made with another T than ``decode_cfg.num_frames``.
        CheckpointError, PoseError, ConfigError: as :func:`extract_skeletons` (before anything is
            written).
    """
    cfg.validate()
    decode_cfg.validate()
    missing = sorted(
        {"id", "video_name", "dive_index", "video_path", "start_frame", "end_frame"} - set(dives.schema.names)
    )
    if missing:
        raise DatasetError(f"dive table lacks column(s) {missing}")
    root, project_dir = Path(root), Path(project_dir)
    num_frames = decode_cfg.num_frames
    rows = dives.to_pylist()
    decode_rows: dict[str, dict[str, Any]] | None = None
    if decoded is not None:
        decode_rows = {
            r["id"]: r for r in decoded.select(["id", "source_hash", "indices", "num_frames"]).to_pylist()
        }
        other_t = {r["num_frames"] for r in decode_rows.values()} - {num_frames}
        if other_t:
            raise ManifestError(
                f"the decode manifest holds T={sorted(other_t)}, but decode.num_frames={num_frames} "
                "(rerun the decode stage)"
            )
        left_out = [r["id"] for r in rows if r["id"] not in decode_rows]
        if left_out:
            log.info("pose: %d dives not in the decode manifest (failed decoding) left out", len(left_out))
        rows = [r for r in rows if r["id"] in decode_rows]

    match cfg.backend:
        case "annotations":
            backend: _Backend = _Annotations(cfg, root, project_dir)
        case "mmpose":
            backend = _MMPose(cfg, project_dir)
    fixed = {
        "stage": "pose",
        "version": POSE_CACHE_VERSION,
        "num_frames": num_frames,
        **backend.key_params(),
    }
    hashes: dict[Path, str | ItemError] = {}
    items = []
    for row in rows:
        source = row["video_path"]
        start, end = int(row["start_frame"]), int(row["end_frame"])
        expected = None
        if decode_rows is not None:
            h: str | ItemError = decode_rows[row["id"]]["source_hash"]
            expected = np.asarray(decode_rows[row["id"]]["indices"], dtype=np.int64)
        else:
            path = root / source
            if path not in hashes:
                try:
                    hashes[path] = source_hash(path, FRAME_SUFFIXES)
                except ItemError as exc:
                    hashes[path] = exc
            h = hashes[path]
        payload = (row, h, expected)
        try:
            if isinstance(h, ItemError):
                raise h  # the video cannot be hashed (missing, unreadable)
            input_hash = backend.input_hash(row)
        except (ItemError, DatasetError) as exc:
            items.append(Item(row["id"], source, None, payload, error=str(exc)))
            continue
        frames = expected if expected is not None else start + linspace_indices(start, end, num_frames)
        key = digest(
            {
                **fixed,
                "video": h,
                "start_frame": start,
                "end_frame": end,
                "frames": [int(f) for f in frames],
                "input": input_hash,
            }
        )
        items.append(Item(row["id"], source, key, payload))

    def pose_one(item: Item) -> Entry:
        row, h, expected = item.payload
        try:
            sk = backend.dive(row, root, decode_cfg)
        except (DatasetError, VideoError, PoseError) as exc:
            raise ItemError(str(exc)) from None
        shapes = (sk.xy.shape, sk.confidence.shape, sk.source_frames.shape)
        if shapes != ((num_frames, NUM_JOINTS, 2), (num_frames, NUM_JOINTS), (num_frames,)):  # a backend bug
            raise ItemError(f"{root / item.source}: pose backend returned shapes {shapes}, T={num_frames}")
        if expected is not None and not np.array_equal(sk.source_frames, expected):
            raise ItemError(
                f"{root / item.source}: skeleton frames {sk.source_frames[:4].tolist()}… differ from the "
                f"decode manifest's sampled frames {expected[:4].tolist()}… (rerun the decode stage)"
            )
        tensors = {
            "xy": torch.from_numpy(np.ascontiguousarray(sk.xy, dtype=np.float32)),  # (T, 16, 2)
            "confidence": torch.from_numpy(np.ascontiguousarray(sk.confidence, dtype=np.float32)),  # (T, 16)
            "source_frame": torch.from_numpy(sk.source_frames.astype(np.int64)),  # (T,)
        }
        meta = {
            "width": str(sk.width),
            "height": str(sk.height),
            "source_hash": h,
            "start_frame": str(row["start_frame"]),
            "end_frame": str(row["end_frame"]),
        }
        return Entry(tensors, meta)

    run = run_cached(
        items,
        Path(out_dir) / CACHE_DIR,
        per_item(pose_one),
        stage="pose",
        on_error=cfg.on_error,
        progress=progress,
    )
    skeletons = [_load_skeleton(Path(out_dir) / CACHE_DIR, item, num_frames) for item in run.ok]
    table = skeleton_table(skeletons, {**backend.metadata(), "num_frames": num_frames})
    stats = run.stats()
    if "videos_per_s" in stats:
        stats["frames_per_s"] = round(stats["videos_per_s"] * num_frames, 1)
    return Extraction(table, failures_table(run.failures), stats, run)


def _load_skeleton(cache_dir: Path, item: Item, num_frames: int) -> DiveSkeleton:
    """The :class:`DiveSkeleton` of dive ``item.id`` from its pose cache entry.

    Raises:
        ValueError: the entry is unreadable or its tensors are not ``(T, 16, 2)``, ``(T, 16)``, ``(T,)``.
    """
    path = cache_dir / f"{item.key}{SUFFIX}"
    entry = load_entry(path)
    xy, conf, frames = (entry.tensors.get(k) for k in ("xy", "confidence", "source_frame"))
    if (
        xy is None
        or conf is None
        or frames is None
        or tuple(xy.shape) != (num_frames, NUM_JOINTS, 2)
        or tuple(conf.shape) != (num_frames, NUM_JOINTS)
        or tuple(frames.shape) != (num_frames,)
    ):
        raise ValueError(f"{path}: not a pose entry of T={num_frames} frames (delete it and rerun)")
    return DiveSkeleton(
        id=item.id,
        source_frames=frames.numpy().astype(np.int64),
        xy=xy.numpy().astype(np.float32),
        confidence=conf.numpy().astype(np.float32),
        width=int(entry.meta["width"]),
        height=int(entry.meta["height"]),
    )


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
    for dive_id, sel in _groups(table.column("id")):
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


def coco_to_mpii(keypoints: np.ndarray, scores: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Map COCO-17 keypoints to the 16 MPII joints of spec §1.4.

    * ankles, knees, hips, wrists, elbows, shoulders: the same COCO keypoint, same score;
    * pelvis = mean of the two hips; thorax = mean of the two shoulders; score = the smaller one;
    * head_centre = mean of nose, eyes and ears weighted by their scores (clipped at 0; plain mean
      when all are 0); head score = the largest of those five scores;
    * upper_neck = thorax + 0.5 · (head_centre − thorax) (:data:`UPPER_NECK_FRACTION`);
    * head_top = head_centre + 0.75 · (head_centre − thorax) (:data:`HEAD_TOP_EXTENSION`);
    * upper_neck and head_top score = min(thorax score, head score).

    Args:
        keypoints: ``(..., 17, 2)`` (x, y) in COCO order (:data:`COCO_KEYPOINTS`).
        scores: ``(..., 17)``.

    Returns:
        ``(xy (..., 16, 2), scores (..., 16))`` float32 in MPII order (``MPII_JOINTS``).
    """
    kp = np.asarray(keypoints, dtype=np.float64)
    sc = np.asarray(scores, dtype=np.float64)
    if kp.shape[-2:] != (len(COCO_KEYPOINTS), 2) or sc.shape != kp.shape[:-1]:
        raise ValueError(f"expected keypoints (..., 17, 2) and scores (..., 17), got {kp.shape}, {sc.shape}")
    out = np.zeros((*kp.shape[:-2], NUM_JOINTS, 2))
    conf = np.zeros((*kp.shape[:-2], NUM_JOINTS))
    for name, c in _COCO_DIRECT.items():
        out[..., _MPII[name], :] = kp[..., c, :]
        conf[..., _MPII[name]] = sc[..., c]

    def mid(a: str, b: str) -> tuple[np.ndarray, np.ndarray]:
        i, j = _COCO[a], _COCO[b]
        return (kp[..., i, :] + kp[..., j, :]) / 2, np.minimum(sc[..., i], sc[..., j])

    pelvis, pelvis_conf = mid("left_hip", "right_hip")
    thorax, thorax_conf = mid("left_shoulder", "right_shoulder")
    face, face_sc = kp[..., _FACE, :], np.clip(sc[..., _FACE], 0, None)  # (..., 5, 2), (..., 5)
    total = face_sc.sum(axis=-1, keepdims=True)  # (..., 1)
    weights = np.where(total > 0, face_sc / np.where(total > 0, total, 1), 1 / len(_FACE))
    head = (weights[..., None] * face).sum(axis=-2)  # (..., 2)
    neck_conf = np.minimum(thorax_conf, sc[..., _FACE].max(axis=-1))
    out[..., _MPII["pelvis"], :], conf[..., _MPII["pelvis"]] = pelvis, pelvis_conf
    out[..., _MPII["thorax"], :], conf[..., _MPII["thorax"]] = thorax, thorax_conf
    out[..., _MPII["upper_neck"], :] = thorax + UPPER_NECK_FRACTION * (head - thorax)
    out[..., _MPII["head_top"], :] = head + HEAD_TOP_EXTENSION * (head - thorax)
    conf[..., _MPII["upper_neck"]] = neck_conf
    conf[..., _MPII["head_top"]] = neck_conf
    return out.astype(np.float32), conf.astype(np.float32)


# --------------------------------------------------------------------------------------------------
# Backends.


class _Backend(Protocol):
    def dive(self, row: dict, dataset_root: Path, decode_cfg: DecodeConfig) -> DiveSkeleton:
        """The skeleton of one dive (a row of the dive table) at its sampled frames."""
        ...

    def key_params(self) -> dict[str, Any]:
        """The part of every dive's cache key that comes from the backend (params, weights, code)."""
        ...

    def input_hash(self, row: dict) -> str | None:
        """Content hash of the dive's own input besides its video (``None``: the video is all).

        Raises ``DatasetError`` naming the file when that input is missing or unreadable."""
        ...

    def metadata(self) -> dict[str, Any]:
        """What produced the skeletons, for the table's ``hpmcore.pose`` metadata."""
        ...


class _Annotations:
    """Imported skeletons (synthetic GT / canonical table, FineDiving-Pose npz, MPII JSON)."""

    def __init__(self, cfg: PoseConfig, dataset_root: Path, project_dir: Path) -> None:
        self.cfg = cfg
        if cfg.annotations_path is None:
            match cfg.source:
                case "skeletons":
                    self.path = dataset_root / "skeletons.parquet"
                case "finediving-npz":
                    self.path = dataset_root / POSE_DIR
                case "mpii-json":
                    self.path = dataset_root / MPII_JSON_DIR
        else:
            self.path = _resolve(cfg.annotations_path, project_dir)
        self._table: dict[str, tuple[np.ndarray, ...]] | None = None
        self._sizes: dict[Path, tuple[int, int]] = {}

    def key_params(self) -> dict[str, Any]:
        # The skeletons table is one file for the whole dataset: missing or malformed, it stops the
        # stage here (DatasetError) instead of failing every dive one by one.
        if self.cfg.source == "skeletons":
            self._load_table()
        return {"backend": "annotations", "source": self.cfg.source}

    def input_hash(self, row: dict) -> str:
        match self.cfg.source:
            case "skeletons":
                frame, joint, xy, conf = self._rows(row["id"])
                order = np.lexsort((joint, frame))  # row order in the file does not matter
                h = hashlib.sha256(b"skeleton-rows\0")
                for a in (
                    frame.astype(np.int64),
                    joint.astype(np.int64),
                    xy.astype(np.float32),
                    conf.astype(np.float32),
                ):
                    h.update(np.ascontiguousarray(a[order]).tobytes())
                return "sha256:" + h.hexdigest()
            case "finediving-npz":
                return _file_hash(self._npz_path(row), "pose file not found")
            case "mpii-json":
                return _file_hash(self._json_path(row), "file not found")

    def metadata(self) -> dict[str, Any]:
        return {
            "backend": "annotations",
            "source": self.cfg.source,
            "annotations_path": str(self.path),
            "normalize": self.cfg.normalize,
            "pixel_space": _PIXEL_SPACE,
        }

    def dive(self, row: dict, dataset_root: Path, decode_cfg: DecodeConfig) -> DiveSkeleton:
        start, end = int(row["start_frame"]), int(row["end_frame"])
        video = dataset_root / row["video_path"]
        if end - start + 1 < decode_cfg.min_source_frames:
            raise VideoError(
                f"{video}: too short: the dive {start}..{end} has {end - start + 1} frames, fewer than "
                f"decode.min_source_frames={decode_cfg.min_source_frames}"
            )
        offsets = linspace_indices(start, end, decode_cfg.num_frames)  # (T,) in 0 .. end - start
        match self.cfg.source:
            case "skeletons":
                xy, conf = self._from_table(row["id"], end - start + 1, offsets)
            case "finediving-npz":
                xy, conf = self._from_npz(row, start, end, offsets)
            case "mpii-json":
                xy, conf = self._from_json(row, end - start + 1, offsets)
        if not (np.isfinite(xy).all() and np.isfinite(conf).all()):
            raise DatasetError(f"{self.path}: dive {row['id']!r} has non-finite coordinates or confidences")
        width, height = self._frame_size(video)
        return DiveSkeleton(
            id=row["id"],
            source_frames=(offsets + start).astype(np.int64),
            xy=xy.astype(np.float32),
            confidence=np.clip(conf, 0.0, 1.0).astype(np.float32),
            width=width,
            height=height,
        )

    def _frame_size(self, video: Path) -> tuple[int, int]:
        if video not in self._sizes:
            info = probe(video)
            self._sizes[video] = (info.width, info.height)
        return self._sizes[video]

    def _load_table(self) -> dict[str, tuple[np.ndarray, ...]]:
        if self._table is None:
            self._table = _read_skeleton_table(self.path)
        return self._table

    def _rows(self, dive_id: str) -> tuple[np.ndarray, ...]:
        """``(frame, joint, xy (R, 2), confidence)`` of the dive's rows of the skeletons table."""
        table = self._load_table()
        if dive_id not in table:
            raise DatasetError(f"{self.path}: no skeleton rows for dive {dive_id!r}")
        return table[dive_id]

    def _npz_path(self, row: dict) -> Path:
        return self.path / str(row["video_name"]) / f"pred_comp_{int(row['dive_index'])}.npz"

    def _json_path(self, row: dict) -> Path:
        return self.path / str(row["video_name"]) / f"{int(row['dive_index'])}.json"

    def _from_table(self, dive_id: str, n: int, offsets: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        frame, joint, xy, conf = self._rows(dive_id)
        if ((frame < 0) | (frame >= n)).any():
            raise DatasetError(f"{self.path}: dive {dive_id!r} has skeleton frames outside 0..{n - 1}")
        dense = np.full((n, NUM_JOINTS, 3), np.nan, dtype=np.float32)  # (n, 16, x/y/conf)
        dense[frame, joint, :2] = xy
        dense[frame, joint, 2] = conf
        sampled = dense[offsets]  # (T, 16, 3)
        if np.isnan(sampled).any():
            lacking = sorted({int(offsets[t]) for t in np.argwhere(np.isnan(sampled))[:, 0]})
            raise DatasetError(
                f"{self.path}: dive {dive_id!r} lacks joints at sampled frame(s) {lacking[:10]}"
            )
        return sampled[..., :2], sampled[..., 2]

    def _from_npz(
        self, row: dict, start: int, end: int, offsets: np.ndarray
    ) -> tuple[np.ndarray, np.ndarray]:
        pred = read_finediving_pose(self._npz_path(row), NPZ_SAMPLES)  # (96, 16, C), C = 2 or 3
        if pred.shape[2] == 2:
            pred = np.concatenate([pred, np.ones((*pred.shape[:2], 1), dtype=np.float32)], axis=2)
        at = linspace_indices(start, end, NPZ_SAMPLES)  # (96,) offsets of the npz frames
        if len(offsets) == NPZ_SAMPLES:
            sampled = pred  # the same frames (spec §1.1)
        else:
            # Linear interpolation in frame number; a dive shorter than 96 frames repeats offsets:
            # keep the first of each (np.interp needs increasing sample points).
            at, first = np.unique(at, return_index=True)
            flat = pred[first].reshape(len(first), -1)  # (U, 16·3)
            sampled = np.stack([np.interp(offsets, at, flat[:, k]) for k in range(flat.shape[1])], axis=1)
            sampled = sampled.reshape(len(offsets), NUM_JOINTS, 3)
        return sampled[..., :2], sampled[..., 2]

    def _from_json(self, row: dict, n: int, offsets: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        path = self._json_path(row)
        joints, visible = read_mpii_json(path)  # (N, 16, 2), (N, 16)
        if len(joints) != n:
            raise DatasetError(
                f"{path}: {len(joints)} entries, but dive {row['id']!r} has {n} frames "
                f"({row['start_frame']}..{row['end_frame']}); expected one entry per frame"
            )
        return joints[offsets], visible[offsets].astype(np.float32)


class _MMPose:
    """Top-down mmpose estimation with an optional mmdet person detector."""

    def __init__(self, cfg: PoseConfig, project_dir: Path) -> None:
        self.cfg = cfg
        self.device = str(resolve_device(cfg.device, param="pose.device"))
        # Checkpoints first: a missing file fails before the slow mmpose import and model build.
        self.checkpoint = None if cfg.checkpoint is None else _resolve(cfg.checkpoint, project_dir)
        state = self._read_checkpoint(self.checkpoint, "pose")
        self.detector_checkpoint = (
            None if cfg.detector_checkpoint is None else _resolve(cfg.detector_checkpoint, project_dir)
        )
        det_state = None
        if cfg.detector_config is not None:
            det_state = self._read_checkpoint(self.detector_checkpoint, "detector")
        self.checkpoint_sha256 = _sha256(self.checkpoint)
        self.detector_checkpoint_sha256 = _sha256(self.detector_checkpoint)

        import mmpose
        from mmpose.apis import inference_topdown, init_model

        self._inference_topdown = inference_topdown
        self.config = _find_config(cfg.config, mmpose, project_dir)
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(0)  # random_init is reproducible
            model = init_model(str(self.config), None, device="cpu")
        self.model = self._load(model, state, self.checkpoint, "pose").to(self.device)
        self.num_keypoints = int(self.model.dataset_meta["num_keypoints"])
        if self.num_keypoints not in (len(COCO_KEYPOINTS), NUM_JOINTS):
            raise PoseError(
                f"pose model {self.config} predicts {self.num_keypoints} keypoints; only COCO-17 "
                f"(mapped to MPII) and MPII-16 models are supported"
            )
        self.detector = None
        if cfg.detector_config is not None:
            import mmdet
            from mmdet.apis import inference_detector, init_detector

            self._inference_detector = inference_detector
            self.detector_config = _find_config(cfg.detector_config, mmdet, project_dir)
            with torch.random.fork_rng(devices=[]):
                torch.manual_seed(0)
                detector = init_detector(str(self.detector_config), None, device="cpu")
            self.detector = self._load(detector, det_state, self.detector_checkpoint, "detector")
            self.detector = self.detector.to(self.device)
            # mmpose's inference_topdown switches the registry scope to mmpose; prefix the detector's
            # test pipeline with "mmdet." or its transforms are not found ("PackDetInputs is not in
            # the mmpose::transform registry").
            from mmpose.utils import adapt_mmdet_pipeline

            self.detector.cfg = adapt_mmdet_pipeline(self.detector.cfg)
            classes = [str(c).lower() for c in self.detector.dataset_meta.get("classes", ())]
            self.person_label = classes.index("person") if "person" in classes else 0
        log.info(
            "pose model %s (%d keypoints) on %s, detector %s",
            self.config,
            self.num_keypoints,
            self.device,
            self.detector_config if self.detector is not None else "none (keypoint tracking)",
        )

    def key_params(self) -> dict[str, Any]:
        import mmpose

        params: dict[str, Any] = {
            "backend": "mmpose",
            "config": sha256_file(self.config),
            "checkpoint": self.checkpoint_sha256 or RANDOM_INIT,
            "keypoint_score": self.cfg.keypoint_score,
            "box_margin": self.cfg.box_margin,
            "mmpose": mmpose.__version__,
            "torch": torch.__version__,
        }
        if self.detector is not None:
            import mmdet

            params["detector"] = {
                "config": sha256_file(self.detector_config),
                "checkpoint": self.detector_checkpoint_sha256 or RANDOM_INIT,
                "score": self.cfg.detector_score,
                "mmdet": mmdet.__version__,
            }
        return params

    def input_hash(self, row: dict) -> None:
        return None  # the frames are all: the video's hash is in the key

    def metadata(self) -> dict[str, Any]:
        return {
            "backend": "mmpose",
            "model": {
                "config": str(self.config),
                "checkpoint": _str(self.checkpoint),
                "checkpoint_sha256": self.checkpoint_sha256,
                "random_init": self.cfg.random_init,
                "keypoints": "coco17->mpii16" if self.num_keypoints == 17 else "mpii16",
                "detector_config": None if self.detector is None else str(self.detector_config),
                "detector_checkpoint": None if self.detector is None else _str(self.detector_checkpoint),
                "detector_checkpoint_sha256": None
                if self.detector is None
                else self.detector_checkpoint_sha256,
                "box_margin": self.cfg.box_margin,
                "keypoint_score": self.cfg.keypoint_score,
                "detector_score": self.cfg.detector_score,
            },
            "normalize": self.cfg.normalize,
            "pixel_space": _PIXEL_SPACE,
        }

    def _read_checkpoint(self, path: Path | None, what: str) -> dict[str, torch.Tensor] | None:
        if path is None:
            log.warning(
                "%s model: NO CHECKPOINT - random_init: true, using randomly initialised weights; "
                "the skeletons are meaningless (tests only)",
                what,
            )
            return None
        return _read_mm_checkpoint(path, trust=self.cfg.trust_checkpoint)

    def _load(
        self, model: torch.nn.Module, state: dict[str, torch.Tensor] | None, path: Path | None, what: str
    ) -> torch.nn.Module:
        if state is not None:
            assert path is not None
            _load_state(model, state, path, what)
        return model.eval()

    def dive(self, row: dict, dataset_root: Path, decode_cfg: DecodeConfig) -> DiveSkeleton:
        video = dataset_root / row["video_path"]
        info = probe(video)
        native = dataclasses.replace(decode_cfg, width=info.width, height=info.height)
        decoded = decode_dive(video, int(row["start_frame"]), int(row["end_frame"]), native)
        frames = decoded.frames.numpy()  # (T, H, W, 3) RGB uint8
        width, height = info.width, info.height
        # Each distinct source frame once, in order (short dives repeat frames).
        unique, first, inverse = np.unique(decoded.indices, return_index=True, return_inverse=True)
        xy = np.zeros((len(unique), NUM_JOINTS, 2), dtype=np.float32)
        conf = np.zeros((len(unique), NUM_JOINTS), dtype=np.float32)
        box = _whole(width, height)
        with torch.inference_mode():
            for u, t in enumerate(first):
                bgr = np.ascontiguousarray(frames[t, :, :, ::-1])  # mmpose/mmdet expect BGR (cv2)
                if self.detector is not None:
                    box = self._detect(bgr) or box
                kp, sc = self._estimate(bgr, box)  # (K, 2), (K,)
                if not (np.isfinite(kp).all() and np.isfinite(sc).all()):
                    raise PoseError(
                        f"{video}: pose model returned non-finite keypoints at frame {int(unique[u])}"
                    )
                box = _track_box(kp, sc, self.cfg.keypoint_score, self.cfg.box_margin, width, height)
                if self.num_keypoints == len(COCO_KEYPOINTS):
                    xy[u], conf[u] = coco_to_mpii(kp, sc)
                else:
                    xy[u], conf[u] = kp, sc
        xy[..., 0] = np.clip(xy[..., 0], 0, width - 1)
        xy[..., 1] = np.clip(xy[..., 1], 0, height - 1)
        return DiveSkeleton(
            id=row["id"],
            source_frames=decoded.indices.astype(np.int64),
            xy=xy[inverse],
            confidence=np.clip(conf, 0.0, 1.0)[inverse],
            width=width,
            height=height,
        )

    def _estimate(self, bgr: np.ndarray, box: tuple[float, ...]) -> tuple[np.ndarray, np.ndarray]:
        results = self._inference_topdown(self.model, bgr, np.array([box], dtype=np.float32), "xyxy")
        pred = results[0].pred_instances
        return np.asarray(pred.keypoints[0], dtype=np.float64), np.asarray(
            pred.keypoint_scores[0], np.float64
        )

    def _detect(self, bgr: np.ndarray) -> tuple[float, ...] | None:
        pred = self._inference_detector(self.detector, bgr).pred_instances
        labels = pred.labels.cpu().numpy()
        scores = pred.scores.cpu().numpy()
        keep = (labels == self.person_label) & (scores >= self.cfg.detector_score)
        if not keep.any():
            return None
        best = np.flatnonzero(keep)[np.argmax(scores[keep])]
        return tuple(float(v) for v in pred.bboxes[best].cpu().numpy())


# --------------------------------------------------------------------------------------------------
# Helpers.

_PIXEL_SPACE = "source video frame pixels, origin top-left, x right, y down"


def _resolve(path: str, project_dir: Path) -> Path:
    p = Path(path)
    return p if p.is_absolute() else project_dir / p


def _find_config(name: str, package: Any, project_dir: Path) -> Path:
    """``name`` as a file (absolute or relative to ``project_dir``), else in the package's bundled
    configs (``<package>/.mim/configs/<name>``)."""
    path = _resolve(name, project_dir)
    if path.is_file():
        return path
    bundled = Path(package.__file__).parent / ".mim" / "configs" / name
    if bundled.is_file():
        return bundled
    raise PoseError(
        f"{package.__name__} config {name!r} not found: neither {path} nor the bundled {bundled} exists"
    )


def _read_mm_checkpoint(path: Path, *, trust: bool) -> dict[str, torch.Tensor]:
    """The flat state dict of an OpenMMLab checkpoint (``{"state_dict": …, "meta": …}`` or flat).

    Read with ``weights_only=True``; OpenMMLab's released files carry pickled metadata that this
    refuses, so ``trust`` (``pose.trust_checkpoint``) allows a full unpickle of a file you trust.
    """
    if not path.is_file():
        raise CheckpointError(f"checkpoint {path}: file does not exist")
    try:
        obj = torch.load(path, map_location="cpu", weights_only=not trust)
    except Exception as exc:  # any decoding failure becomes one clear error naming the file
        hint = (
            ""
            if trust
            else " — if it is an OpenMMLab checkpoint with pickled metadata and you trust the file, set "
            "pose.trust_checkpoint: true, or save only its state_dict"
        )
        raise CheckpointError(
            f"checkpoint {path}: cannot be read ({type(exc).__name__}: {exc}){hint}"
        ) from exc
    if isinstance(obj, dict) and isinstance(obj.get("state_dict"), dict):
        obj = obj["state_dict"]
    if not isinstance(obj, dict) or not all(
        isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in obj.items()
    ):
        raise CheckpointError(
            f"checkpoint {path}: expected a state_dict of tensors (optionally under 'state_dict')"
        )
    return {k.removeprefix("module."): v for k, v in obj.items()}


def _load_state(model: torch.nn.Module, state: dict[str, torch.Tensor], path: Path, what: str) -> None:
    expected = model.state_dict()
    missing = [k for k in expected if k not in state and not k.endswith("num_batches_tracked")]
    unexpected = [k for k in state if k not in expected and not k.endswith("num_batches_tracked")]
    misshaped = [
        f"{k}: file {tuple(v.shape)} vs model {tuple(expected[k].shape)}"
        for k, v in state.items()
        if k in expected and v.shape != expected[k].shape
    ]
    if missing or unexpected or misshaped:
        parts = [f"checkpoint {path} does not match the {what} model:"]
        for label, keys in (("missing", missing), ("unexpected", unexpected), ("mis-shaped", misshaped)):
            if keys:
                shown = ", ".join(keys[:20]) + (f", … and {len(keys) - 20} more" if len(keys) > 20 else "")
                parts.append(f"  {label} ({len(keys)}): {shown}")
        raise CheckpointError("\n".join(parts))
    model.load_state_dict({k: v for k, v in state.items() if k in expected}, strict=False)
    log.info("loaded %d tensors into the %s model from %s", len(state), what, path)


def _str(path: Path | None) -> str | None:
    return None if path is None else str(path)


def _sha256(path: Path | None) -> str | None:
    if path is None:
        return None
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def _file_hash(path: Path, missing: str) -> str:
    """``sha256:<hex>`` of an annotation file; ``DatasetError`` "<path>: <missing>" when there is none."""
    if not path.is_file():
        raise DatasetError(f"{path}: {missing}")
    try:
        return sha256_file(path)
    except OSError as exc:
        raise DatasetError(f"{path}: cannot be read ({exc.strerror or exc})") from None


def _whole(width: int, height: int) -> tuple[float, ...]:
    return (0.0, 0.0, float(width), float(height))


def _track_box(
    kp: np.ndarray, sc: np.ndarray, min_score: float, margin: float, width: int, height: int
) -> tuple[float, ...]:
    """Next frame's person box (x1, y1, x2, y2): the box of the keypoints scoring ≥ ``min_score``
    grown by ``margin`` × its size on each side (at least 16 px a side), clipped to the frame; the
    whole frame when fewer than 2 keypoints are confident."""
    good = kp[sc >= min_score]
    if len(good) < _MIN_TRACK_KEYPOINTS:
        return _whole(width, height)
    lo, hi = good.min(axis=0), good.max(axis=0)  # (2,)
    size = np.maximum(hi - lo, _MIN_BOX_SIDE)
    centre = (lo + hi) / 2
    half = size * (0.5 + margin)
    x1, y1 = np.maximum(centre - half, 0)
    x2, y2 = np.minimum(centre + half, [width, height])
    if x2 - x1 < 1 or y2 - y1 < 1:  # confident keypoints all outside the frame
        return _whole(width, height)
    return (float(x1), float(y1), float(x2), float(y2))


def _groups(ids: pa.ChunkedArray | pa.Array) -> Iterator[tuple[str, np.ndarray]]:
    """``(id, row indices)`` per distinct id, ids in order of first appearance."""
    values = np.asarray(ids.to_pylist(), dtype=object)
    if len(values) == 0:
        return
    uniq, first, inverse = np.unique(values, return_index=True, return_inverse=True)
    order = np.argsort(inverse, kind="stable")
    bounds = np.searchsorted(inverse[order], np.arange(len(uniq) + 1))
    for u in np.argsort(first):
        yield str(uniq[u]), order[bounds[u] : bounds[u + 1]]


def _read_skeleton_table(path: Path) -> dict[str, tuple[np.ndarray, ...]]:
    """A canonical skeleton table as ``{id: (frame, joint, xy (R, 2), confidence)}``."""
    table = read_parquet(
        path,
        DatasetError,
        "skeleton table not found (pose.source 'skeletons' needs a canonical skeletons.parquet; "
        "set pose.annotations_path or another pose.source)",
    )
    missing = [n for n in SKELETON_SCHEMA.names if n not in table.schema.names]
    if missing:
        raise DatasetError(f"{path}: not a canonical skeleton table, lacks column(s) {missing}")
    frame = table.column("frame").to_numpy().astype(np.int64)
    joint = table.column("joint").to_numpy().astype(np.int64)
    if len(joint) and (joint.min() < 0 or joint.max() >= NUM_JOINTS):
        raise DatasetError(f"{path}: joint indices outside 0..{NUM_JOINTS - 1}")
    xy = np.stack([table.column("x").to_numpy(), table.column("y").to_numpy()], axis=-1)  # (R, 2)
    conf = table.column("confidence").to_numpy()
    return {dive: (frame[sel], joint[sel], xy[sel], conf[sel]) for dive, sel in _groups(table.column("id"))}
