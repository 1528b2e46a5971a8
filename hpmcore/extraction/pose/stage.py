"""The ``pose`` stage: each decoded dive's skeleton at its T sampled frames, through the per-video cache.

:func:`extract_pose` turns the dives of the decode manifest into the sampled skeleton table
(:mod:`hpmcore.extraction.pose.table`) and a failures table, with one cache entry per dive
(:mod:`hpmcore.extraction.cache`, ``<out>/cache/<key>.safetensors``), so a rerun computes only new or
changed dives and logs ``pose: computed N, reused M (...)``. The frames are the decode stage's: each
dive's skeleton is taken at the decode manifest's ``indices`` (spec §1.1), never sampled again here,
and dives that failed decoding are left out.

Two backends, chosen by ``PoseConfig.backend``: ``annotations`` imports existing skeletons
(:mod:`hpmcore.extraction.pose.annotations`), ``mmpose`` estimates them on the video
(:mod:`hpmcore.extraction.pose.mmpose`).

**The pose cache.** A dive's entry holds ``xy`` float32 ``(T, 16, 2)``, ``confidence`` float32
``(T, 16)`` and ``source_frame`` int64 ``(T,)``, with the source frame's ``width`` and ``height`` as
metadata. Its key is the SHA-256 (:func:`hpmcore.extraction.cache.digest`) of

* the dive's input: the content hash of its video (from the decode manifest; both backends read the
  frame size from the video), its frame range and its sampled frame numbers (the decode manifest's
  ``indices``), plus, for ``annotations``, the content of its skeleton rows (``skeletons``: the dive's
  rows, in (frame, joint) order, so reordering the file changes nothing) or the SHA-256 of its
  ``.npz`` / ``.json`` file;
* T; the annotation ``source``, or for ``mmpose`` the SHA-256 of the model config and checkpoint
  (``random-init`` without one), of the detector's, the box and score params and the mmpose / mmdet /
  torch versions;
* :data:`POSE_CACHE_VERSION` (see "Cache versions" in :mod:`hpmcore.extraction.cache`).

Not in the key: ``normalize`` (recorded in the table's metadata, the stored pixels do not change),
``device``, ``trust_checkpoint``, ``on_error``, and the paths themselves (entries stay valid when the
dataset moves). The table is rebuilt from the entries, in dive order, on every run.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import pyarrow as pa
import torch

from hpmcore.config import PoseConfig
from hpmcore.data.canonical import NUM_JOINTS, DatasetError
from hpmcore.extraction.cache import (
    CACHE_DIR,
    SUFFIX,
    Compute,
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
)
from hpmcore.extraction.executor import ComputeTask, Executor
from hpmcore.extraction.pose.table import DiveSkeleton, PoseError, skeleton_table
from hpmcore.extraction.video import VideoError

__all__ = ["POSE_CACHE_VERSION", "extract_pose", "pose_backend", "pose_compute"]

log = logging.getLogger(__name__)

POSE_CACHE_VERSION = 1
"""Cache version of the pose stage's entries: bump it when a change to a backend, the COCO→MPII mapping,
the box tracking or the annotation readers changes the skeleton or the metadata of an entry for the
same inputs and params."""

_DIVE_COLUMNS = ("id", "video_name", "dive_index", "video_path", "start_frame", "end_frame")


class Backend(Protocol):
    """What :func:`extract_pose` needs of a pose backend."""

    def dive(self, row: dict, video: Path, frames: np.ndarray) -> DiveSkeleton:
        """The skeleton of one dive (a row of the dive table) at the source frames ``frames`` (T,)."""
        ...

    def key_params(self) -> dict[str, Any]:
        """The part of every dive's cache key that comes from the backend (params, weights, versions)."""
        ...

    def input_hash(self, row: dict) -> str | None:
        """Content hash of the dive's own input besides its video (``None``: the video is all).

        Raises ``DatasetError`` naming the file when that input is missing or unreadable."""
        ...

    def metadata(self) -> dict[str, Any]:
        """What produced the skeletons, for the table's ``hpmcore.pose`` metadata."""
        ...


def pose_backend(cfg: PoseConfig, root: Path, project_dir: Path) -> Backend:
    """The backend ``cfg.backend`` names.

    Raises:
        CheckpointError, PoseError, ConfigError: an unusable mmpose model (before anything is written).
    """
    match cfg.backend:
        case "annotations":
            from hpmcore.extraction.pose.annotations import Annotations

            return Annotations(cfg, root, project_dir)
        case "mmpose":
            from hpmcore.extraction.pose.mmpose import MMPose

            return MMPose(cfg, project_dir)
    raise ValueError(f"unknown pose backend {cfg.backend!r}")  # PoseConfig's Literal forbids it


def pose_compute(cfg: PoseConfig, root: Path, project_dir: Path, num_frames: int) -> Compute:
    """The pose stage's compute function: items (payload: dive row, sampled frames (T,), the video's
    content hash) → entries."""
    backend = pose_backend(cfg, root, project_dir)

    def pose_one(item: Item) -> Entry:
        row, frames, source_hash = item.payload
        try:
            sk = backend.dive(row, root / item.source, frames)
        except (DatasetError, VideoError, PoseError) as exc:
            raise ItemError(str(exc)) from None
        shapes = (sk.xy.shape, sk.confidence.shape, sk.source_frames.shape)
        if shapes != ((num_frames, NUM_JOINTS, 2), (num_frames, NUM_JOINTS), (num_frames,)):  # a backend bug
            raise ItemError(f"{root / item.source}: pose backend returned shapes {shapes}, T={num_frames}")
        tensors = {
            "xy": torch.from_numpy(np.ascontiguousarray(sk.xy, dtype=np.float32)),  # (T, 16, 2)
            "confidence": torch.from_numpy(np.ascontiguousarray(sk.confidence, dtype=np.float32)),  # (T, 16)
            "source_frame": torch.from_numpy(sk.source_frames.astype(np.int64)),  # (T,)
        }
        meta = {
            "width": str(sk.width),
            "height": str(sk.height),
            "source_hash": source_hash,
            "start_frame": str(row["start_frame"]),
            "end_frame": str(row["end_frame"]),
        }
        return Entry(tensors, meta)

    return per_item(pose_one)


def extract_pose(
    dives: pa.Table,
    cfg: PoseConfig,
    *,
    root: Path,
    decoded: pa.Table,
    out_dir: Path,
    project_dir: Path = Path("."),
    progress: bool = True,
    executor: Executor | None = None,
) -> Extraction:
    """The ``pose`` stage: skeletons of every decoded dive through the per-video cache ``out_dir/cache``.

    Computes (or reuses) one entry per dive (see "The pose cache" above) and builds the sampled
    skeleton table from the entries, in dive-table order. Only the cache entries are written here; the
    caller writes the returned table (as ``SKELETONS``), failures table, counts and timings next to the
    cache (:meth:`~hpmcore.extraction.cache.Extraction.write`).

    Args:
        dives: canonical dive table (at least ``id``, ``video_name``, ``dive_index``, ``video_path``,
            ``start_frame``, ``end_frame``), e.g. ``data/prepared/dives.parquet``.
        cfg: the ``pose`` section of ``params.yaml``.
        root: the dataset root (``data.root``) that ``video_path`` and the default annotation paths
            are relative to.
        decoded: the decode stage's manifest (:data:`hpmcore.extraction.decode.DECODE_MANIFEST_SCHEMA`).
            Only the dives it holds are extracted (a dive that failed decoding is left out here too),
            at its ``indices`` (T of them), with its source hashes (the videos are not hashed again).
        out_dir: the stage's output folder; entries go to ``out_dir/cache``.
        project_dir: relative paths in ``cfg`` (checkpoints, configs, ``annotations_path``) are
            resolved against it (the folder of ``params.yaml``).
        progress: show a progress bar.
        executor: where the per-dive work runs (:mod:`hpmcore.extraction.executor`; ``None``: here).
            The backend is also built here, for the keys and the table's metadata.

    Returns:
        :class:`~hpmcore.extraction.cache.Extraction` whose ``manifest`` is the sampled skeleton table
        (``SAMPLED_SKELETON_SCHEMA``, metadata from :func:`pose_metadata`), ``failures`` the
        :data:`~hpmcore.extraction.cache.FAILURE_SCHEMA` rows (stage ``pose``) of the dives skipped
        under ``cfg.on_error == "skip"``, ``stats`` its counts and ``timings``.

    Raises:
        ExtractionFailed: ``cfg.on_error == "fail"`` and a dive failed (missing or malformed
            annotation file, no skeleton rows, unreadable video, non-finite model output); the message
            names the file.
        DatasetError: the dive table lacks columns, or the ``skeletons`` table is missing or malformed
            (a dataset-wide file: the stage stops under either ``on_error``).
        ManifestError: the decode manifest disagrees with the dive table (frame range, video) or holds
            dives of different T (rerun the decode stage).
        CheckpointError, PoseError, ConfigError: an unusable mmpose model or config (before anything
            is written).
    """
    cfg.validate()
    missing = sorted(set(_DIVE_COLUMNS) - set(dives.schema.names))
    if missing:
        raise DatasetError(f"dive table lacks column(s) {missing}")
    root, project_dir = Path(root), Path(project_dir)
    rows = {r["id"]: r for r in dives.select(list(_DIVE_COLUMNS)).to_pylist()}
    manifest = decoded.select(["id", "source_path", "source_hash", "start_frame", "end_frame", "indices"])
    decode_rows = {r["id"]: r for r in manifest.to_pylist()}
    lengths = {len(r["indices"]) for r in decode_rows.values()}
    if len(lengths) > 1:
        raise ManifestError(
            f"the decode manifest holds dives of T={sorted(lengths)} (rerun the decode stage)"
        )
    num_frames = lengths.pop() if lengths else 0
    stale = [
        i
        for i, r in decode_rows.items()
        if i in rows
        and (
            (r["source_path"], r["start_frame"], r["end_frame"])
            != (rows[i]["video_path"], rows[i]["start_frame"], rows[i]["end_frame"])
            or not all(r["start_frame"] <= f <= r["end_frame"] for f in r["indices"])
        )
    ]
    if stale:
        raise ManifestError(
            "the decode manifest disagrees with the dive table on the video, frame range or sampled "
            f"frames of dive(s) {stale[:5]} (rerun the decode stage)"
        )
    left_out = [i for i in rows if i not in decode_rows]
    if left_out:
        log.info("pose: %d dives not in the decode manifest (failed decoding) left out", len(left_out))

    backend = pose_backend(cfg, root, project_dir)
    fixed = {"stage": "pose", "version": POSE_CACHE_VERSION, "num_frames": num_frames, **backend.key_params()}
    items = []
    for dive_id, row in rows.items():
        if dive_id not in decode_rows:
            continue
        decoded_row = decode_rows[dive_id]
        payload = (row, np.asarray(decoded_row["indices"], dtype=np.int64), decoded_row["source_hash"])
        key_inputs = {
            "video": decoded_row["source_hash"],
            "start_frame": int(row["start_frame"]),
            "end_frame": int(row["end_frame"]),
            "frames": [int(f) for f in decoded_row["indices"]],
        }
        try:
            input_hash = backend.input_hash(row)
        except DatasetError as exc:
            items.append(Item(dive_id, row["video_path"], None, payload, error=str(exc)))
            continue
        key = digest({**fixed, **key_inputs, "input": input_hash})
        items.append(Item(dive_id, row["video_path"], key, payload))

    run = run_cached(
        items,
        Path(out_dir) / CACHE_DIR,
        # absolute paths for the workers (a cluster's may run elsewhere); the table's metadata keeps the
        # paths as given (the same in every clone)
        ComputeTask(pose_compute, (cfg, _absolute(root), _absolute(project_dir), num_frames)),
        stage="pose",
        on_error=cfg.on_error,
        progress=progress,
        executor=executor,
    )
    skeletons = [_load_skeleton(Path(out_dir) / CACHE_DIR, item, num_frames) for item in run.ok]
    table = skeleton_table(skeletons, {**backend.metadata(), "num_frames": num_frames})
    timings = run.timings()
    if "videos_per_s" in timings:
        timings["frames_per_s"] = round(timings["videos_per_s"] * num_frames, 1)
    return Extraction(table, failures_table(run.failures), run.stats(), timings, run)


def _absolute(path: Path) -> Path:
    return Path(os.path.abspath(path))


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
