"""The ``annotations`` pose backend: existing skeletons, taken at the decode stage's sampled frames.

``PoseConfig.source`` names the format:

- ``skeletons``: a canonical skeleton table (``SKELETON_SCHEMA``, e.g. the synthetic ground truth
  ``<dataset_root>/skeletons.parquet``), frames 0-based within the dive;
- ``finediving-npz``: FineDiving-Pose ``<pose_root>/<video_name>/pred_comp_<dive_index>.npz``
  (``pred`` 96×16×2 or 96×16×3 with a confidence channel, at the spec §1.1 sampled frames;
  ``pose_root`` defaults to ``<dataset_root>/FineDiving-Pose``);
- ``mpii-json``: MPII-style JSON (spec §12.4) ``<json_root>/<video_name>/<dive_index>.json``, one
  entry per frame of the dive in frame order (``json_root`` defaults to
  ``<dataset_root>/FineDiving-Pose-MPII``; this layout is ours, the upstream download has none).

Each dive's skeleton is taken at the source frames the decode stage sampled (the decode manifest's
``indices``, spec §1.1). A FineDiving ``.npz`` holds the 96 frames of ``linspace_indices(start, end,
96)``; when those are the decode stage's frames (T = 96) they are taken as they are, otherwise each
sampled frame is linearly interpolated (in source-frame number) between the two nearest ``.npz``
frames. The frame size comes from the dive's video.
"""

from __future__ import annotations

import hashlib
import math
import zipfile
from pathlib import Path
from typing import Any

import numpy as np

from hpmcore.config import PoseConfig, project_path
from hpmcore.data.canonical import NUM_JOINTS, SKELETON_SCHEMA, DatasetError
from hpmcore.data.finediving import POSE_DIR, linspace_indices, read_finediving_pose, read_mpii_json
from hpmcore.extraction.cache import NotRegularFile, sha256_file
from hpmcore.extraction.pose.table import PIXEL_SPACE, DiveSkeleton, group_rows
from hpmcore.extraction.video import probe
from hpmcore.io import read_parquet

__all__ = ["MPII_JSON_DIR", "NPZ_SAMPLES", "Annotations", "check_npz_size", "read_skeleton_table"]

MPII_JSON_DIR = "FineDiving-Pose-MPII"
"""Default folder (under the dataset root) of the MPII-style JSON files, one per dive."""
NPZ_SAMPLES = 96
"""Frames per FineDiving-Pose ``.npz`` (spec §12.4)."""


class Annotations:
    """Imported skeletons (synthetic ground truth / canonical table, FineDiving-Pose npz, MPII JSON)."""

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
            self.path = project_path(cfg.annotations_path, project_dir)
        self._table: dict[str, tuple[np.ndarray, ...]] | None = None
        self._sizes: dict[Path, tuple[int, int]] = {}

    def key_params(self) -> dict[str, Any]:
        """The backend's part of every cache key; loads the skeletons table, so that a missing or
        malformed one (a dataset-wide file) stops the stage here instead of failing every dive."""
        if self.cfg.source == "skeletons":
            self._load_table()
        return {"backend": "annotations", "source": self.cfg.source}

    def input_hash(self, row: dict) -> str:
        """Content hash of the dive's annotation: its skeleton rows in (frame, joint) order (so that
        reordering the file changes nothing), or its ``.npz`` / ``.json`` file."""
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
        """What produced the skeletons (the table's ``hpmcore.pose`` metadata)."""
        return {
            "backend": "annotations",
            "source": self.cfg.source,
            "annotations_path": str(self.path),
            "normalize": self.cfg.normalize,
            "pixel_space": PIXEL_SPACE,
        }

    def dive(self, row: dict, video: Path, frames: np.ndarray) -> DiveSkeleton:
        """The skeleton of one dive (a row of the dive table) at the source frames ``frames`` (T,).

        Raises:
            DatasetError: a missing or malformed annotation, naming the file.
            VideoError: the video's frame size cannot be read.
        """
        start, end = int(row["start_frame"]), int(row["end_frame"])
        offsets = np.asarray(frames, dtype=np.int64) - start  # (T,) in 0 .. end - start
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
            self._table = read_skeleton_table(self.path)
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
        path = self._npz_path(row)
        check_npz_size(path)  # before np.load allocates what the file declares
        pred = read_finediving_pose(path, NPZ_SAMPLES)  # (96, 16, C), C = 2 or 3
        if pred.shape[2] == 2:
            pred = np.concatenate([pred, np.ones((*pred.shape[:2], 1), dtype=np.float32)], axis=2)
        at = linspace_indices(start, end, NPZ_SAMPLES)  # (96,) offsets of the npz frames
        if np.array_equal(offsets, at):
            sampled = pred  # the same frames (spec §1.1, T = 96)
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


def check_npz_size(path: Path, key: str = "pred", max_values: int = NPZ_SAMPLES * NUM_JOINTS * 3) -> None:
    """Refuse a ``.npz`` whose array ``key`` declares more than ``max_values`` values (or a dtype wider
    than 8 bytes), reading only the ``.npy`` header inside the zip: ``np.load`` allocates whatever
    the header declares, so a file of a few hundred bytes declaring 10¹¹ frames would exhaust memory.

    A missing file or key is left to the reader to report.

    Raises:
        DatasetError: naming the file, the declared shape and the limit; or an unreadable zip/header.
    """
    member = f"{key}.npy"
    try:
        with zipfile.ZipFile(path) as archive:
            if member not in archive.namelist():
                return
            with archive.open(member) as f:
                version = np.lib.format.read_magic(f)
                if version == (1, 0):
                    shape, _, dtype = np.lib.format.read_array_header_1_0(f)
                elif version == (2, 0):
                    shape, _, dtype = np.lib.format.read_array_header_2_0(f)
                else:
                    raise DatasetError(
                        f"{path}: {member} has .npy format version {version}, expected 1.0 or 2.0"
                    )
    except FileNotFoundError:
        return
    except (OSError, ValueError, EOFError, zipfile.BadZipFile) as exc:
        raise DatasetError(f"{path}: not a readable .npz ({exc})") from None
    values = math.prod(int(n) for n in shape)
    if values > max_values or dtype.itemsize > 8 or dtype.hasobject:
        raise DatasetError(
            f"{path}: '{key}' declares shape {tuple(shape)} of {dtype} ({values} values); a FineDiving-Pose "
            f"file holds at most {max_values} numbers ({NPZ_SAMPLES}×{NUM_JOINTS}×3)"
        )


def read_skeleton_table(path: Path) -> dict[str, tuple[np.ndarray, ...]]:
    """A canonical skeleton table as ``{id: (frame, joint, xy (R, 2), confidence)}``.

    Raises:
        DatasetError: the file is missing, unreadable or not a canonical skeleton table.
    """
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
    return {
        dive: (frame[sel], joint[sel], xy[sel], conf[sel]) for dive, sel in group_rows(table.column("id"))
    }


def _file_hash(path: Path, missing: str) -> str:
    """``sha256:<hex>`` of an annotation file; ``DatasetError`` "<path>: <missing>" when there is none."""
    if not path.exists():
        raise DatasetError(f"{path}: {missing}")
    try:
        return sha256_file(path)
    except NotRegularFile as exc:  # a FIFO or a device: refused before it is opened
        raise DatasetError(str(exc)) from None
    except OSError as exc:
        raise DatasetError(f"{path}: cannot be read ({exc.strerror or exc})") from None
