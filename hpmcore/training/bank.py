"""The feature bank: the cached features, poses and labels of the dives that training and evaluation see.

:class:`VideoFeatures` holds the tensors of one dive (I3D clips, static per-frame features, pose,
ground-truth transitions) with its labels; :class:`FeatureBank` maps ids to them and carries the
canonical annotation table (``id``, ``split``, ``dive_number``, ``difficulty``, ``final_score``), the
only source of splits and labels. A bank may hold fewer videos than its table lists (e.g. no test
features while training): a video is looked up when it is used, and a missing one is an error naming
it (:meth:`FeatureBank.require`, which also rejects NaN/inf and wrong shapes for what a model needs,
:class:`~hpmcore.training.protocol.InputSpec`).

**From the pipeline** (:func:`pipeline_bank`, :func:`load_feature_bank`): the ``prepare`` table, the
decode manifest (sampled frames → ground-truth transitions, spec §5.2), the features manifest and cache,
the pose table. What the features are — the I3D and static widths, T, the number of clips and the I3D
clip stride — is read from the features manifest and its entries (:class:`BankDims`), never stated
again in ``params.yaml``; :meth:`BankDims.fill` puts it into a model config.

**Dives left out.** A dive of the table without features (or pose) is an error naming the manifest —
unless an extraction stage recorded it in its ``failures.parquet`` (``on_error: skip``): then it is
left out of the bank (its table, so of training, exemplar pools and evaluation) and listed in
:attr:`FeatureBank.skipped` with the stage and reason, for the stages to report. A dive without usable
ground-truth transitions (null in the canonical table, no step labels, or fewer than 3 steps at the
sampled frames) stays in: it has ``transitions = None``, is pooled with its decoded transitions in
training, and is left out of ``L_tas`` and of tIoU/AIoU.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import json
import logging
import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, TypeVar

import numpy as np
import pyarrow as pa
import torch

from hpmcore.data.canonical import DatasetError, read_annotations
from hpmcore.data.splits import ExemplarPool
from hpmcore.extraction.cache import FAILURE_SCHEMA, FAILURES, MANIFEST, read_manifest
from hpmcore.extraction.decode import DECODE_MANIFEST_SCHEMA
from hpmcore.extraction.features import FEATURES_MANIFEST_SCHEMA, load_features
from hpmcore.extraction.pose.table import SKELETONS, dive_skeletons, normalize_skeleton, pose_metadata
from hpmcore.io import read_parquet
from hpmcore.models.hdgcn import NUM_JOINTS
from hpmcore.models.hpmcore import POSE_CHANNELS, VideoInputs
from hpmcore.models.segmentation import gt_transitions
from hpmcore.training.checkpoints import digest
from hpmcore.training.protocol import InputSpec

__all__ = [
    "BANK_COLUMNS",
    "LATENTS",
    "BankDims",
    "FeatureBank",
    "FeatureBankError",
    "SkippedDive",
    "VideoFeatures",
    "load_feature_bank",
    "pipeline_bank",
    "stack_videos",
    "synthetic_feature_bank",
]

log = logging.getLogger(__name__)

BANK_COLUMNS = ("id", "split", "dive_number", "difficulty", "final_score")
"""Columns of the canonical annotation table a :class:`FeatureBank` needs."""
LATENTS = "latents.parquet"
"""The synthetic generator's latent factors (``splash`` feeds the splash-aware loss when present)."""

C = TypeVar("C")


class FeatureBankError(DatasetError):
    """A video is missing from the feature bank or its tensors are unusable; the message names it."""


@dataclass(frozen=True)
class VideoFeatures:
    """Cached features and labels of one dive (tensors on the CPU)."""

    id: str
    i3d: torch.Tensor
    """float32 ``(J, C_i3d)`` I3D clip features (J = 9, C = 1024 for 96 frames)."""
    static: torch.Tensor | None
    """float32 ``(T, C_static)`` per-frame static features (T = 96, C = 368), or ``None``."""
    skeleton: torch.Tensor | None
    """float32 ``(2, T, 16, 1)`` pose (x, y channels), or ``None``."""
    transitions: torch.Tensor | None
    """int64 ``(2,)`` ground truth ``(st, ed)``, first frames of stages 2 and 3 (§5.2); ``None`` when the
    dive has no usable step labels."""
    score: float
    """Final score."""
    difficulty: float
    """Degree of difficulty (DD)."""
    dive_number: str
    """FINA dive number (``"407c"``)."""
    splash: float | None = None
    """Entry-stage splash size (for the splash-aware auxiliary loss), when known."""
    pose_mirror_x: float | None = None
    """The x of the source frame's vertical centre line in the skeleton's coordinates (pixels:
    ``(W − 1) / 2``), to mirror the pose with a flipped video (end-to-end augmentation,
    :func:`hpmcore.training.augment.flip_skeleton`); ``None`` without a pose."""


@dataclass(frozen=True)
class BankDims:
    """What the cached features are, read from the features manifest (the same for every dive)."""

    i3d_dim: int
    """Width of the I3D clip features."""
    static_dim: int
    """Width of the static per-frame features."""
    num_frames: int
    """T, sampled frames per dive."""
    num_clips: int
    """I3D clips per dive."""
    clip_stride: int
    """Frames between I3D clip starts (``features.clip_stride`` of the run that computed them)."""

    def fill(self, config: C) -> C:
        """``config`` (a model config dataclass) with its fields marked ``from_data``
        (:data:`hpmcore.config.FROM_FEATURES`) set from these dims."""
        names = [f.name for f in dataclasses.fields(config) if f.metadata.get("from_data")]  # type: ignore[arg-type]
        return replace(config, **{n: getattr(self, n) for n in names})  # type: ignore[type-var]


@dataclass(frozen=True)
class SkippedDive:
    """A dive of the annotation table left out because an extraction stage recorded it as failed."""

    id: str
    split: str
    stage: str
    reason: str


def _check_video(v: VideoFeatures, spec: InputSpec) -> None:
    """Raise :class:`FeatureBankError` naming the video for a missing, mis-shaped or non-finite tensor."""
    if v.i3d.dim() != 2 or v.i3d.shape[1] != spec.i3d_dim or v.i3d.shape[0] < 2:
        raise FeatureBankError(
            f"video {v.id!r}: i3d features must be (J >= 2, {spec.i3d_dim}), got {tuple(v.i3d.shape)}"
        )
    check_tensor(v.id, "i3d", v.i3d, None, required=True)
    check_tensor(v.id, "static", v.static, spec.static_shape)
    frames = spec.static_shape[0] if spec.static_shape else spec.skeleton_frames
    check_pose_and_labels(v, spec, frames)


def check_tensor(
    vid: str, name: str, t: torch.Tensor | None, shape: tuple[int, ...] | None, *, required: bool = False
) -> None:
    """A tensor a model needs (``shape`` given, or ``required``): present, of that shape, finite."""
    needed = required or shape is not None
    if t is None:
        if needed:
            raise FeatureBankError(f"video {vid!r}: {name} features are needed but missing")
        return
    if shape is not None and tuple(t.shape) != shape:
        raise FeatureBankError(f"video {vid!r}: {name} must have shape {shape}, got {tuple(t.shape)}")
    if needed and not bool(torch.isfinite(t).all()):
        bad = int((~torch.isfinite(t)).sum())
        raise FeatureBankError(f"video {vid!r}: {name} features contain {bad} NaN/inf values")


def check_pose_and_labels(v: Any, spec: InputSpec, frames: int | None) -> None:
    """The pose, ground-truth transitions (within ``[0, frames)``), splash size and labels of a video
    (:class:`VideoFeatures` or a frame-bank video) as ``spec`` needs them; :class:`FeatureBankError`
    naming the video."""
    skeleton_shape = (
        None if spec.skeleton_frames is None else (POSE_CHANNELS, spec.skeleton_frames, NUM_JOINTS, 1)
    )
    check_tensor(v.id, "skeleton", v.skeleton, skeleton_shape)
    if spec.transitions and v.transitions is not None:
        if tuple(v.transitions.shape) != (2,):
            raise FeatureBankError(
                f"video {v.id!r}: transitions must be (2,), got {tuple(v.transitions.shape)}"
            )
        st, ed = (int(x) for x in v.transitions)
        if st < 0 or (frames is not None and ed >= frames):
            raise FeatureBankError(f"video {v.id!r}: transitions ({st}, {ed}) outside [0, {frames})")
    if spec.splash and (v.splash is None or not math.isfinite(v.splash)):
        raise FeatureBankError(f"video {v.id!r}: a splash size is needed (splash loss on) but missing")
    if not math.isfinite(v.score) or not math.isfinite(v.difficulty):
        raise FeatureBankError(
            f"video {v.id!r}: score/difficulty must be finite, got {v.score}, {v.difficulty}"
        )


@dataclass(frozen=True)
class FeatureBank:
    """Per-video features by id plus the canonical annotation table (the source of splits and labels).

    ``table`` needs the columns :data:`BANK_COLUMNS`; every video must be a row of it with the same
    dive number, difficulty and score. Rows without features are allowed until they are used.
    """

    videos: Mapping[str, VideoFeatures]
    table: pa.Table
    dims: BankDims | None = None
    """What the features are (from the features manifest); ``None`` for a bank built by hand."""
    skipped: tuple[SkippedDive, ...] = ()
    """Dives of the dataset left out (not in ``table``) because an extraction stage failed on them."""
    _rows: dict[str, dict[str, Any]] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        missing = [c for c in BANK_COLUMNS if c not in self.table.schema.names]
        if missing:
            raise FeatureBankError(f"feature bank: the annotation table lacks column(s) {missing}")
        rows = {r["id"]: r for r in self.table.select(list(BANK_COLUMNS)).to_pylist()}
        if len(rows) != self.table.num_rows:
            raise FeatureBankError("feature bank: the annotation table has duplicate ids")
        for key, v in self.videos.items():
            if key != v.id:
                raise FeatureBankError(f"feature bank: key {key!r} holds video {v.id!r}")
            row = rows.get(key)
            if row is None:
                raise FeatureBankError(f"feature bank: video {key!r} is not in the annotation table")
            if (
                row["dive_number"] != v.dive_number
                or abs(row["difficulty"] - v.difficulty) > 1e-6
                or abs(row["final_score"] - v.score) > 1e-6
            ):
                raise FeatureBankError(
                    f"feature bank: video {key!r} labels (dive number {v.dive_number!r}, DD {v.difficulty}, "
                    f"score {v.score}) differ from the annotation table ({row['dive_number']!r}, "
                    f"{row['difficulty']}, {row['final_score']})"
                )
        object.__setattr__(self, "_rows", rows)

    @classmethod
    def from_videos(
        cls, videos: Iterable[VideoFeatures], splits: Mapping[str, str], dims: BankDims | None = None
    ) -> FeatureBank:
        """A bank whose table is built from the videos' labels and ``splits`` (id → split)."""
        by_id = {v.id: v for v in videos}
        unknown = sorted(set(splits) - set(by_id))
        if unknown:
            raise FeatureBankError(f"feature bank: split given for unknown video(s) {unknown[:5]}")
        table = pa.table(
            {
                "id": [v.id for v in by_id.values()],
                "split": [splits[v.id] for v in by_id.values()],
                "dive_number": [v.dive_number for v in by_id.values()],
                "difficulty": pa.array([v.difficulty for v in by_id.values()], pa.float64()),
                "final_score": pa.array([v.score for v in by_id.values()], pa.float64()),
            }
        )
        return cls(by_id, table, dims)

    def split_ids(self, split: str) -> list[str]:
        """Ids of ``split`` in table order."""
        return [r["id"] for r in self._rows.values() if r["split"] == split]

    def label(self, video_id: str) -> dict[str, Any]:
        """``{"id", "split", "dive_number", "difficulty", "final_score"}`` of a table row."""
        row = self._rows.get(video_id)
        if row is None:
            raise FeatureBankError(f"video {video_id!r} is not in the annotation table")
        return row

    def pool(self, split: str = "train") -> ExemplarPool:
        """The exemplar pool: every dive of ``split`` (the reduced train split, §11.4)."""
        return ExemplarPool.from_table(self.table.select(list(BANK_COLUMNS)), split)

    def get(self, video_id: str) -> VideoFeatures:
        """The features of one video; :class:`FeatureBankError` naming it when absent."""
        v = self.videos.get(video_id)
        if v is None:
            split = self._rows.get(video_id, {}).get("split", "no split")
            raise FeatureBankError(f"video {video_id!r} ({split}) has no features in the feature bank")
        return v

    def require(self, ids: Iterable[str], spec: InputSpec) -> list[VideoFeatures]:
        """The features of ``ids``, each checked against ``spec`` (presence, shapes, finiteness).

        Raises:
            FeatureBankError: naming the first video that is missing or unusable.
        """
        out = [self.get(i) for i in ids]
        clips = None
        for v in out:
            _check_video(v, spec)
            if clips is None:
                clips = v.i3d.shape[0]
            elif v.i3d.shape[0] != clips:
                raise FeatureBankError(
                    f"video {v.id!r}: {v.i3d.shape[0]} I3D clips, other videos have {clips}"
                )
        return out

    def require_dims(self) -> BankDims:
        """:attr:`dims`; :class:`FeatureBankError` for a bank that does not know them."""
        if self.dims is None:
            raise FeatureBankError("the feature bank does not know its feature sizes (no features manifest)")
        return self.dims

    def fill(self, config: C) -> C:
        """A model config (``params.model``, ``params.core``) with this bank's feature sizes
        (:meth:`BankDims.fill`)."""
        return self.require_dims().fill(config)

    def model_config(self, config: Any) -> Any:
        """The config of a model trained on this bank from ``params.model``: its feature sizes filled in
        (:meth:`fill`); a frame bank wraps it in an end-to-end config
        (:meth:`hpmcore.training.frames.FrameBank.model_config`)."""
        return self.fill(config)

    def skipped_report(self, splits: Sequence[str]) -> dict[str, Any]:
        """``{"count", "dives": [{"id", "split", "stage", "reason"}]}`` of the skipped dives of ``splits``
        (what the stages write into their metrics, for DVC and MLflow)."""
        dives = [dataclasses.asdict(d) for d in self.skipped if d.split in splits]
        return {"count": len(dives), "dives": dives}

    def without_transitions(self, split: str) -> list[str]:
        """Ids of ``split`` whose features are loaded but have no ground-truth transitions."""
        return [i for i in self.split_ids(split) if i in self.videos and self.videos[i].transitions is None]

    def stack(self, videos: Sequence[VideoFeatures], spec: InputSpec) -> VideoInputs:
        """The model inputs of checked videos (:func:`stack_videos`)."""
        return stack_videos(videos, spec)

    def digest(self, split: str) -> str:
        """SHA-256 of a split's labels and, for the videos the bank holds, their tensors (what a training
        run on this split is a function of)."""
        h = hashlib.sha256()
        for vid in self.split_ids(split):
            row = self.label(vid)
            h.update(digest([row[k] for k in ("id", "dive_number", "difficulty", "final_score")]).encode())
            v = self.videos.get(vid)
            if v is not None:
                self._hash_video(h, v)
        return h.hexdigest()

    def _hash_video(self, h: Any, v: Any) -> None:
        for t in (v.i3d, v.static, v.skeleton, v.transitions):
            h.update(b"-" if t is None else t.detach().cpu().contiguous().numpy().tobytes())
        h.update(repr(v.splash).encode())


def stack_videos(videos: Sequence[VideoFeatures], spec: InputSpec) -> VideoInputs:
    """Stack checked videos into :class:`VideoInputs` (float32; fields ``spec`` does not need are dropped).

    Shapes: ``i3d (N, J, C)``, ``static (N, T, C_s)``, ``skeleton (N, 2, T, 16, 1)``, ``transitions
    (N, 2)`` int64 with ``(-1, -1)`` for a video without ground truth (``None`` when no video has it).
    """
    unknown = torch.full((2,), -1, dtype=torch.long)
    has_gt = any(v.transitions is not None for v in videos)
    return VideoInputs(
        i3d=torch.stack([v.i3d for v in videos]).float(),
        static=torch.stack([v.static for v in videos]).float() if spec.static_shape else None,  # type: ignore[misc]
        skeleton=torch.stack([v.skeleton for v in videos]).float() if spec.skeleton_frames else None,  # type: ignore[misc]
        transitions=(
            torch.stack([unknown if v.transitions is None else v.transitions.long() for v in videos])
            if has_gt
            else None
        ),
    )


# ---------------------------------------------------------------------------------------------------------
# The bank of the pipeline's outputs


def _dims(manifest_path: Path, rows: list[dict[str, Any]], first: VideoFeatures | None) -> BankDims | None:
    """The one :class:`BankDims` of a features manifest (its rows must agree)."""
    if not rows or first is None:
        return None
    settings = set()
    for r in rows:
        try:
            stride = json.loads(r["params"])["clip_stride"]
        except (ValueError, KeyError, TypeError):
            raise FeatureBankError(
                f"{manifest_path}: dive {r['id']!r} has no clip_stride in its params column"
            ) from None
        settings.add((r["num_frames"], r["num_clips"], stride))
    if len(settings) != 1:
        raise FeatureBankError(
            f"{manifest_path}: dives were computed with different settings (T, clips, clip stride): "
            f"{sorted(settings)[:4]}; rerun stage features"
        )
    ((t, clips, stride),) = settings
    static_dim = 0 if first.static is None else first.static.shape[1]
    return BankDims(
        i3d_dim=first.i3d.shape[1], static_dim=static_dim, num_frames=t, num_clips=clips, clip_stride=stride
    )


def _skip_or_fail(
    dives: pa.Table,
    feature_rows: Mapping[str, Any],
    poses: Mapping[str, Any] | None,
    failures: pa.Table | None,
    manifest_path: Path,
) -> tuple[pa.Table, tuple[SkippedDive, ...]]:
    """The dives that have features (and pose), and the failed ones left out; an error for any other
    missing dive."""
    failed: dict[str, dict[str, Any]] = {}
    if failures is not None:
        for row in failures.to_pylist():
            failed.setdefault(row["id"], row)
    skipped, unexplained = [], []
    for row in dives.select(["id", "split"]).to_pylist():
        vid = row["id"]
        if vid not in feature_rows:
            what = "features"
        elif poses is not None and vid not in poses:
            what = "pose"
        else:
            continue
        if vid in failed:
            f = failed[vid]
            skipped.append(SkippedDive(vid, row["split"], f["stage"], f["reason"]))
        else:
            unexplained.append((vid, what))
    if unexplained:
        vid, what = unexplained[0]
        where = manifest_path if what == "features" else "skeleton table"
        more = f" (and {len(unexplained) - 1} more dives)" if len(unexplained) > 1 else ""
        raise FeatureBankError(
            f"{where}: no {what} for dive {vid!r}{more}, and no extraction stage recorded it as failed"
        )
    if skipped:
        log.warning(
            "feature bank: %d dives left out, failed in extraction (on_error: skip): %s",
            len(skipped),
            ", ".join(f"{s.id} ({s.stage})" for s in skipped[:5]) + (" …" if len(skipped) > 5 else ""),
        )
        gone = {s.id for s in skipped}
        dives = dives.filter(pa.array([i not in gone for i in dives.column("id").to_pylist()]))
    return dives, tuple(skipped)


def load_feature_bank(
    dives: pa.Table,
    features_dir: Path,
    *,
    decode_manifest: pa.Table,
    skeletons: pa.Table | None = None,
    failures: pa.Table | None = None,
) -> FeatureBank:
    """Assemble a :class:`FeatureBank` from the stages' outputs.

    Args:
        dives: the canonical annotation table with splits (stage ``prepare``).
        features_dir: output folder of stage ``features`` (``manifest.parquet`` + ``cache/``): I3D
            ``(J, C_i3d)`` and static ``(T, C_static)`` per dive; its manifest gives :class:`BankDims`.
        decode_manifest: the decode stage's manifest; its sampled source frames (``indices``) pick the
            dive's ``frame_labels`` from which the ground-truth transitions are computed (spec §5.2), and
            its keys must be the ones the features were computed from.
        skeletons: the pose stage's sampled skeleton table, normalised as its metadata says
            (:func:`normalize_skeleton`) → ``(2, T, 16, 1)``; ``None``: no pose (a model
            with the skeleton branch then fails naming the first video).
        failures: the extraction stages' failures tables (:data:`~hpmcore.extraction.cache.FAILURE_SCHEMA`)
            together: a dive listed there and missing from the features (or pose) is left out and
            reported in :attr:`FeatureBank.skipped`.

    Dives without frame labels (MTL-AQA, or null for unusable ones), or whose sampled labels have fewer
    than 3 steps, get no ground-truth transitions.

    Raises:
        ValueError: an unreadable manifest or cache entry (naming the file).
        FeatureBankError: a dive of ``dives`` without features or pose that no stage recorded as failed
            (naming it and the file), a features entry computed from another decode, inconsistent frame
            counts (naming the dive), or features computed with different settings.
    """
    features_dir = Path(features_dir)
    manifest_path = features_dir / MANIFEST
    feature_rows = {r["id"]: r for r in read_manifest(manifest_path, FEATURES_MANIFEST_SCHEMA).to_pylist()}
    decode_rows = {r["id"]: r for r in decode_manifest.select(["id", "indices", "key"]).to_pylist()}
    poses, norm = None, "none"
    if skeletons is not None:
        poses = dive_skeletons(skeletons)
        norm = pose_metadata(skeletons).get("normalize", "none")
    dives, skipped = _skip_or_fail(dives, feature_rows, poses, failures, manifest_path)
    videos, no_gt = {}, 0
    for row in dives.to_pylist():
        vid = row["id"]
        frow, drow = feature_rows[vid], decode_rows.get(vid)
        if drow is None or drow["key"] != frow["decode_key"]:
            raise FeatureBankError(
                f"dive {vid!r}: the features in {manifest_path} were computed from another decode "
                f"(decode key {frow['decode_key'][:12]}…) than the decode manifest holds"
            )
        i3d, static = load_features(features_dir, frow)
        offsets = np.asarray(drow["indices"], dtype=np.int64) - row["start_frame"]
        if len(offsets) != static.shape[0] or offsets.min() < 0 or offsets.max() >= row["num_frames"]:
            raise FeatureBankError(
                f"dive {vid!r}: decoded frames {drow['indices'][:3]}… do not fit the dive's frames "
                f"{row['start_frame']}..{row['end_frame']} or the {static.shape[0]} static feature rows"
            )
        transitions = None
        if row["frame_labels"]:
            with contextlib.suppress(ValueError):  # fewer than 3 steps at the sampled frames
                transitions = torch.tensor(gt_transitions(np.asarray(row["frame_labels"])[offsets]))
        no_gt += transitions is None
        skeleton, mirror_x = None, None
        if poses is not None:
            pose = poses[vid]
            if pose.xy.shape[0] != static.shape[0]:
                raise FeatureBankError(
                    f"dive {vid!r}: {pose.xy.shape[0]} skeleton frames but {static.shape[0]} static "
                    "feature rows"
                )
            xy = normalize_skeleton(pose.xy, pose.width, pose.height, norm)  # (T, 16, 2)
            xy = np.ascontiguousarray(xy.transpose(2, 0, 1))[..., None]  # (2, T, 16, 1)
            skeleton = torch.from_numpy(xy)
            centre = np.array([[(pose.width - 1) / 2, 0.0]], dtype=np.float32)  # the mirror line, pixels
            mirror_x = float(normalize_skeleton(centre, pose.width, pose.height, norm)[0, 0])
        videos[vid] = VideoFeatures(
            id=vid,
            i3d=i3d.float(),
            static=static.float(),
            skeleton=skeleton,
            transitions=transitions,
            score=float(row["final_score"]),
            difficulty=float(row["difficulty"]),
            dive_number=row["dive_number"],
            pose_mirror_x=mirror_x,
        )
    if no_gt:
        log.warning(
            "feature bank: %d dives without usable step labels (none, or fewer than 3 steps at the "
            "sampled frames): pooled with decoded transitions in training, no L_tas, not in tIoU/AIoU",
            no_gt,
        )
    rows = [feature_rows[i] for i in dives.column("id").to_pylist()]
    dims = _dims(manifest_path, rows, next(iter(videos.values()), None))
    return FeatureBank(videos, dives, dims, skipped)


def _failures(folders: Iterable[Path | None]) -> pa.Table:
    """The failures tables of the extraction output ``folders`` (``None``: none), concatenated."""
    tables = [pa.Table.from_pylist([], schema=FAILURE_SCHEMA)]
    for folder in folders:
        if folder is None:
            continue
        path = Path(folder) / FAILURES
        table = read_parquet(path, DatasetError, "failures table not found (run the stage first)")
        if not set(FAILURE_SCHEMA.names) <= set(table.schema.names):
            raise DatasetError(f"{path}: not a failures table (columns {table.schema.names})")
        tables.append(table.select(FAILURE_SCHEMA.names).cast(FAILURE_SCHEMA))
    return pa.concat_tables(tables)


def pipeline_bank(
    dives_path: Path,
    decoded_dir: Path,
    features_dir: Path,
    pose_dir: Path | None,
    *,
    data_root: Path | None = None,
) -> FeatureBank:
    """The feature bank of the pipeline's outputs (see :func:`load_feature_bank`).

    Args:
        dives_path: ``prepare``'s ``dives.parquet`` (annotations and splits).
        decoded_dir: ``decode``'s folder (its manifest maps the sampled frames; its failures table).
        features_dir: ``features``' folder (manifest, cache, failures table).
        pose_dir: ``pose``'s folder (``skeletons.parquet``, failures table), or ``None`` for no pose.
        data_root: the dataset root; its ``latents.parquet`` (synthetic data) gives each dive's splash
            size for the splash-aware loss, when the file exists.

    Raises:
        DatasetError / FeatureBankError: a missing, unreadable or invalid dive table, skeleton table or
            failures table, or a dive without features/pose that no stage recorded as failed, naming
            the file and the dive.
        ManifestError: a missing or malformed decode or features manifest (named).
    """
    dives = read_annotations(Path(dives_path))
    decode_manifest = read_manifest(Path(decoded_dir) / MANIFEST, DECODE_MANIFEST_SCHEMA)
    skeletons = None
    if pose_dir is not None:
        skeletons = read_parquet(
            Path(pose_dir) / SKELETONS, DatasetError, "skeleton table not found (run stage pose)"
        )
    failures = _failures([decoded_dir, pose_dir, features_dir])
    bank = load_feature_bank(
        dives, Path(features_dir), decode_manifest=decode_manifest, skeletons=skeletons, failures=failures
    )
    latents_path = None if data_root is None else Path(data_root) / LATENTS
    if latents_path is not None and latents_path.is_file():
        latents = read_parquet(latents_path, DatasetError, "latent table not found")
        splash = dict(
            zip(latents.column("id").to_pylist(), latents.column("splash").to_pylist(), strict=True)
        )
        videos = {
            vid: replace(v, splash=float(splash[vid])) if vid in splash else v
            for vid, v in bank.videos.items()
        }
        bank = replace(bank, videos=videos)
    return bank


def synthetic_feature_bank(
    splits: Mapping[str, int],
    *,
    dive_numbers: Sequence[str] = ("101a", "201b", "301c"),
    i3d_dim: int = 1024,
    static_dim: int = 368,
    num_frames: int = 96,
    num_clips: int = 9,
    clip_stride: int = 10,
    signal: float = 10.0,
    seed: int = 0,
) -> FeatureBank:
    """A bank of random features with the real layout, for tests and benchmarks.

    ``splits`` gives the number of videos per split (e.g. ``{"train": 20, "val": 5, "test": 5}``); ids
    are ``"<split>/<n>"`` and video ``n`` of a split has dive number ``dive_numbers[n % len]``, with DD
    ``2.0 + 0.4·index`` of that dive number. Scores carry a learnable signal: ``score = 50 + signal·z``
    with ``z`` the (unit-variance) clip mean of I3D channel 0. Transitions are uniform with
    ``1 <= st < T/2 <= ed < T - 1``.
    """
    g = torch.Generator().manual_seed(seed)
    videos, assignment = [], {}
    dd_of = {dn: 2.0 + 0.4 * i for i, dn in enumerate(dict.fromkeys(dive_numbers))}
    for split, count in splits.items():
        for n in range(count):
            i3d = torch.randn(num_clips, i3d_dim, generator=g)
            z = float(i3d[:, 0].mean()) * math.sqrt(num_clips)
            st = int(torch.randint(1, num_frames // 2, (1,), generator=g))
            ed = int(torch.randint(num_frames // 2, num_frames - 1, (1,), generator=g))
            dn = dive_numbers[n % len(dive_numbers)]
            vid = f"{split}/{n}"
            videos.append(
                VideoFeatures(
                    id=vid,
                    i3d=i3d,
                    static=torch.randn(num_frames, static_dim, generator=g),
                    skeleton=torch.randn(POSE_CHANNELS, num_frames, NUM_JOINTS, 1, generator=g),
                    transitions=torch.tensor([st, ed]),
                    score=50.0 + signal * z,
                    difficulty=dd_of[dn],
                    dive_number=dn,
                    splash=float(torch.rand((), generator=g)),
                    pose_mirror_x=0.0,
                )
            )
            assignment[vid] = split
    dims = BankDims(i3d_dim, static_dim, num_frames, num_clips, clip_stride)
    return FeatureBank.from_videos(videos, assignment, dims)
