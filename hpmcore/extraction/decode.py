"""The ``decode`` stage: every dive's sampled frames as a uint8 tensor, through the per-video cache.

Every dive of the canonical table → :func:`hpmcore.extraction.video.decode_dive` → one cache entry
(:mod:`hpmcore.extraction.cache`) ``frames`` uint8 ``(T, H, W, 3)`` RGB and ``indices`` int64 ``(T,)``;
the manifest :data:`DECODE_MANIFEST_SCHEMA` lists them (read back with :func:`load_decoded`) and is
what the ``pose`` and ``features`` stages start from.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import pyarrow as pa
import torch

from hpmcore.config import DecodeConfig
from hpmcore.extraction.cache import (
    CACHE_DIR,
    ZSTD_SUFFIX,
    Compute,
    Entry,
    Extraction,
    Item,
    ItemError,
    digest,
    failures_table,
    load_entry,
    per_item,
    resolve_source,
    run_cached,
    source_hash,
)
from hpmcore.extraction.executor import ComputeTask, Executor

__all__ = [
    "DECODE_CACHE_VERSION",
    "DECODE_MANIFEST_SCHEMA",
    "decode_compute",
    "decode_videos",
    "load_decoded",
]

DECODE_MANIFEST_SCHEMA = pa.schema(
    [
        pa.field("id", pa.string(), nullable=False),
        pa.field("source_path", pa.string(), nullable=False),
        pa.field("source_hash", pa.string(), nullable=False),
        pa.field("start_frame", pa.int64(), nullable=False),
        pa.field("end_frame", pa.int64(), nullable=False),
        pa.field("source_num_frames", pa.int64(), nullable=False),
        pa.field("fps", pa.float64()),
        pa.field("indices", pa.list_(pa.int64()), nullable=False),
        pa.field("num_frames", pa.int64(), nullable=False),
        pa.field("height", pa.int64(), nullable=False),
        pa.field("width", pa.int64(), nullable=False),
        pa.field("key", pa.string(), nullable=False),
        pa.field("path", pa.string(), nullable=False),
    ]
)
"""Decode manifest, one row per decoded dive in dive-table order:

=================  ==============  ==========================================================================
column             type            meaning
=================  ==============  ==========================================================================
id                 string          dive id of the canonical table
source_path        string          ``video_path`` of the dive (mp4 or frame folder, relative to ``data.root``)
source_hash        string          ``sha256:<hex>`` of the mp4's bytes / of the frame folder's JPEGs
start_frame        int64           first frame of the dive in the source (inclusive)
end_frame          int64           last frame of the dive in the source (inclusive)
source_num_frames  int64           frames in the whole source (mp4 frame count / number of JPEGs)
fps                float64         the mp4's average frame rate; null for a frame folder
indices            list<int64>     the T sampled source frame numbers (spec §1.1)
num_frames         int64           T
height, width      int64           decoded frame size, px
key                string          cache key of the entry
path               string          the entry, relative to the manifest's folder:
                                   ``cache/<key>.safetensors.zst`` (``frames`` uint8 (T, H, W, 3) RGB,
                                   ``indices`` int64 (T,))
=================  ==============  ==========================================================================
"""


DECODE_CACHE_VERSION = 1
"""Cache version of the decode stage's entries (see "Cache versions" in :mod:`hpmcore.extraction.cache`):
bump it when a change to the decoding code (this module, :mod:`hpmcore.extraction.video`, the spec §1.1
sampling) changes the frames or the metadata of an entry for the same source and params."""


def decode_compute(cfg: DecodeConfig) -> Compute:
    """The decode stage's compute function: items (payload: path, start and end frame, the source's
    content hash) → entries ``frames`` uint8 ``(T, H, W, 3)`` and ``indices`` int64 ``(T,)``."""
    from hpmcore.extraction.video import VideoError, decode_dive

    def decode_one(item: Item) -> Entry:
        path, start, end, h = item.payload
        try:
            dive = decode_dive(path, start, end, cfg)
        except VideoError as exc:
            raise ItemError(str(exc)) from None
        frames = dive.frames
        expected = (cfg.num_frames, cfg.height, cfg.width, 3)
        if tuple(frames.shape) != expected or frames.dtype != torch.uint8:  # decode_dive's contract
            got = f"{frames.dtype} {tuple(frames.shape)}"
            raise ItemError(f"{path}: decoder returned {got}, expected uint8 {expected}")
        meta = {
            "source_hash": h,
            "start_frame": str(start),
            "end_frame": str(end),
            "source_num_frames": str(dive.source_num_frames),
            "fps": json.dumps(dive.fps),
            "indices": json.dumps([int(i) for i in dive.indices]),
            "num_frames": str(cfg.num_frames),
            "height": str(cfg.height),
            "width": str(cfg.width),
        }
        return Entry({"frames": frames, "indices": torch.from_numpy(dive.indices.astype("int64"))}, meta)

    return per_item(decode_one)


def decode_videos(
    dives: pa.Table,
    cfg: DecodeConfig,
    *,
    root: Path,
    out_dir: Path,
    progress: bool = True,
    executor: Executor | None = None,
) -> Extraction:
    """Decode every dive of a canonical dive table into the per-video cache ``out_dir/cache``.

    Each dive's ``video_path`` (mp4 or frame folder, relative to ``root``) is decoded frames
    ``start_frame .. end_frame``, sampled to ``cfg.num_frames`` and resized to ``cfg.width`` ×
    ``cfg.height`` (:func:`hpmcore.extraction.video.decode_dive`). A ``video_path`` that leaves ``root``
    (absolute, ``..``, a symlink out; unless ``cfg.allow_outside_root``) or that is neither a regular
    file nor a folder (a device, a FIFO) fails like an unreadable video, before it is opened
    (:func:`~hpmcore.extraction.cache.resolve_source`, :func:`~hpmcore.extraction.cache.source_hash`).
    The entry key covers the source's content hash, the frame range, the decode params (not
    ``on_error`` nor ``allow_outside_root``), decord's and Pillow's versions and
    :data:`DECODE_CACHE_VERSION`. Only the cache entries are written here; the caller writes the
    returned manifest, failures table, counts and timings next to the cache (:meth:`Extraction.write`).

    ``executor`` runs the decoding (:mod:`hpmcore.extraction.executor`; ``None``: in this process).

    Raises:
        ExtractionFailed: ``cfg.on_error == "fail"`` and a dive cannot be decoded.
        ConfigError: an invalid ``cfg``.
    """
    import decord
    import PIL

    from hpmcore.extraction.video import FRAME_SUFFIXES

    cfg.validate()
    root = Path(os.path.abspath(root))  # absolute: the workers of a cluster may run elsewhere
    decode_params = {
        "num_frames": cfg.num_frames,
        "width": cfg.width,
        "height": cfg.height,
        "min_source_frames": cfg.min_source_frames,
    }
    fixed = {
        "stage": "decode",
        "version": DECODE_CACHE_VERSION,
        "params": decode_params,
        "decord": decord.__version__,
        "pillow": PIL.__version__,
    }
    hashes: dict[Path, str | ItemError] = {}
    items = []
    for row in dives.select(["id", "video_path", "start_frame", "end_frame"]).to_pylist():
        path = root / row["video_path"]
        if path not in hashes:
            try:
                resolve_source(root, row["video_path"], allow_outside_root=cfg.allow_outside_root)
                hashes[path] = source_hash(path, FRAME_SUFFIXES)
            except ItemError as exc:
                hashes[path] = exc
        h = hashes[path]
        payload = (path, int(row["start_frame"]), int(row["end_frame"]), h)
        if isinstance(h, ItemError):
            items.append(Item(row["id"], row["video_path"], None, payload, error=str(h)))
            continue
        key = digest({**fixed, "source": h, "start_frame": payload[1], "end_frame": payload[2]})
        items.append(Item(row["id"], row["video_path"], key, payload))

    run = run_cached(
        items,
        Path(out_dir) / CACHE_DIR,
        ComputeTask(decode_compute, (cfg,)),
        stage="decode",
        on_error=cfg.on_error,
        compress=True,
        progress=progress,
        executor=executor,
    )
    rows = []
    for item in run.ok:
        meta = run.metas[item.key]  # type: ignore[index]
        rows.append(
            {
                "id": item.id,
                "source_path": item.source,
                "source_hash": meta["source_hash"],
                "start_frame": int(meta["start_frame"]),
                "end_frame": int(meta["end_frame"]),
                "source_num_frames": int(meta["source_num_frames"]),
                "fps": json.loads(meta["fps"]),
                "indices": json.loads(meta["indices"]),
                "num_frames": int(meta["num_frames"]),
                "height": int(meta["height"]),
                "width": int(meta["width"]),
                "key": item.key,
                "path": f"{CACHE_DIR}/{item.key}{ZSTD_SUFFIX}",
            }
        )
    manifest = pa.Table.from_pylist(rows, schema=DECODE_MANIFEST_SCHEMA).replace_schema_metadata(
        {"hpmcore.decode": json.dumps({"params": decode_params, "format": "safetensors+zstd"})}
    )
    timings = run.timings()
    if "videos_per_s" in timings:
        timings["frames_per_s"] = round(timings["videos_per_s"] * cfg.num_frames, 1)
    return Extraction(manifest, failures_table(run.failures), run.stats(), timings, run)


def load_decoded(manifest_dir: Path, row: dict[str, Any]) -> torch.Tensor:
    """The decoded frames of one decode-manifest row: uint8 ``(T, H, W, 3)`` RGB.

    Raises:
        ValueError: the entry is unreadable, or its key or shape does not match the row.
    """
    path = Path(manifest_dir) / row["path"]
    entry = load_entry(path)
    if entry.meta.get("key") != row["key"]:
        raise ValueError(f"{path}: holds key {entry.meta.get('key')!r}, the manifest says {row['key']!r}")
    frames = entry.tensors.get("frames")
    expected = (row["num_frames"], row["height"], row["width"], 3)
    if frames is None or frames.dtype != torch.uint8 or tuple(frames.shape) != expected:
        got = None if frames is None else (frames.dtype, tuple(frames.shape))
        raise ValueError(f"{path}: frames are {got}, expected uint8 {expected}")
    return frames
