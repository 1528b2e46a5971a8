"""The frame bank: the decoded frames of the dives, for end-to-end training and evaluation.

:class:`FrameBank` is a :class:`~hpmcore.training.bank.FeatureBank` (same annotation table, splits,
exemplar pools, skipped dives, poses, ground-truth transitions and splash sizes; its feature sizes are
the encoders' outputs, 1024 and 368 wide, with T and the I3D clip stride of the features manifest) whose
videos are :class:`VideoFrames`: instead of cached features each holds where its decoded frames are —
the decode stage's cache entry (uint8 ``(T, H, W, 3)``, read with
:func:`~hpmcore.extraction.decode.load_decoded` when used, so a large dataset is never held in memory)
or, for tests and benchmarks, the frames themselves. It also knows how the features stage built its
encoders (:class:`EncoderInit`, from the features manifest): end-to-end training starts from them, and
the features stage's centre crop is the test view.

Views (:mod:`hpmcore.training.augment`): :meth:`FrameBank.stack` gives the **test** view (no flip, centre
crop) — what evaluation and validation encode, with the current encoders; :class:`PairFrames` gives
the **training** views of an epoch's pairs (query and exemplar augmented independently, the pose
flipped with the frames when asked), for a :class:`torch.utils.data.DataLoader` with seeded workers
(:func:`pair_loader`).
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import pyarrow as pa
import torch

from hpmcore.extraction.cache import MANIFEST, read_manifest
from hpmcore.extraction.decode import DECODE_MANIFEST_SCHEMA, load_decoded
from hpmcore.extraction.features import FEATURES_MANIFEST_SCHEMA
from hpmcore.models.end_to_end import EndToEndConfig, FrameInputs
from hpmcore.models.hdgcn import NUM_JOINTS
from hpmcore.models.hpmcore import POSE_CHANNELS
from hpmcore.models.i3d import FEATURE_DIM as I3D_DIM
from hpmcore.models.static import FEATURE_DIM as STATIC_DIM
from hpmcore.runtime import derive_seed, seed_worker
from hpmcore.training.augment import (
    apply_view,
    augmentation_rng,
    crop_window,
    eval_view,
    flip_skeleton,
    train_view,
)
from hpmcore.training.bank import (
    BankDims,
    FeatureBank,
    FeatureBankError,
    check_pose_and_labels,
    pipeline_bank,
)
from hpmcore.training.protocol import InputSpec

__all__ = [
    "EncoderInit",
    "FrameBank",
    "PairFrames",
    "VideoFrames",
    "encoder_init",
    "pair_loader",
    "pipeline_frame_bank",
    "synthetic_frame_bank",
]


@dataclass(frozen=True)
class EncoderInit:
    """How the features stage built the encoders (one value for every dive of its manifest)."""

    i3d_weights: str | None
    """The I3D weights file as given in params (relative to the project), ``None``: random init."""
    i3d_weights_sha256: str
    """``sha256:<hex>`` of that file, or ``random-init``."""
    static_weights: str | None
    static_weights_sha256: str
    init_seed: int
    """Seed of a random initialisation."""
    clip_len: int
    clip_stride: int
    crop_size: int | None
    """The test-time centre crop (``features.crop_size``), ``None``: the whole decoded frame."""


def encoder_init(features_manifest: pa.Table, path: Path) -> EncoderInit:
    """The :class:`EncoderInit` of a features manifest (``path`` names it in errors).

    Raises:
        FeatureBankError: an empty manifest, or dives computed with different encoders or settings.
    """
    seen = set()
    for r in features_manifest.to_pylist():
        p = json.loads(r["params"])
        seen.add(
            EncoderInit(
                i3d_weights=r["i3d_weights"],
                i3d_weights_sha256=r["i3d_weights_sha256"],
                static_weights=r["static_weights"],
                static_weights_sha256=r["static_weights_sha256"],
                init_seed=int(p.get("init_seed", 0)),
                clip_len=int(p["clip_len"]),
                clip_stride=int(p["clip_stride"]),
                crop_size=p.get("crop_size"),
            )
        )
    if len(seen) != 1:
        raise FeatureBankError(
            f"{path}: {'no dives' if not seen else 'dives computed with different encoders or settings'}; "
            "rerun stage features"
        )
    return seen.pop()


@dataclass(frozen=True)
class VideoFrames:
    """One dive for end-to-end training: where its decoded frames are, its pose and labels."""

    id: str
    num_frames: int
    height: int
    width: int
    skeleton: torch.Tensor | None
    """float32 ``(2, T, 16, 1)``, or ``None``."""
    transitions: torch.Tensor | None
    """int64 ``(2,)`` ground truth, or ``None``."""
    score: float
    difficulty: float
    dive_number: str
    splash: float | None = None
    pose_mirror_x: float | None = None
    """As :attr:`hpmcore.training.bank.VideoFeatures.pose_mirror_x`."""
    decoded_dir: Path | None = None
    """The decode stage's folder; with ``entry``, where the frames are read from."""
    entry: Mapping[str, Any] | None = None
    """The decode-manifest row (``path``, ``key``, ``num_frames``, ``height``, ``width``)."""
    frames: torch.Tensor | None = None
    """uint8 ``(T, H, W, 3)`` held in memory instead (tests, benchmarks)."""
    key: str = ""
    """What the frames are: the decode entry's key (a content hash), or a digest of ``frames``."""

    def load(self) -> torch.Tensor:
        """uint8 ``(T, H, W, 3)`` RGB.

        Raises:
            FeatureBankError: the decode entry is unreadable or does not match its manifest row.
        """
        if self.frames is not None:
            return self.frames
        try:
            return load_decoded(self.decoded_dir, dict(self.entry))  # type: ignore[arg-type]
        except ValueError as exc:
            raise FeatureBankError(f"video {self.id!r}: {exc}") from None


@dataclass(frozen=True)
class FrameBank(FeatureBank):
    """A :class:`FeatureBank` of :class:`VideoFrames` (see the module docstring)."""

    encoders: EncoderInit | None = None
    """How the features' encoders were built (``None`` for a bank built by hand: random init)."""
    crop_size: int | None = None
    """The centre crop of the test view (and the crop size of the training views)."""

    def require(self, ids: Any, spec: InputSpec) -> list[Any]:
        """The videos of ``ids``, checked against ``spec``: T decoded frames, all of one size; pose,
        transitions, splash size and labels as for cached features.

        Raises:
            FeatureBankError: naming the first video that is missing or unusable.
        """
        out = [self.get(i) for i in ids]
        size = None
        for v in out:
            if spec.num_frames is not None and v.num_frames != spec.num_frames:
                raise FeatureBankError(
                    f"video {v.id!r}: {v.num_frames} decoded frames, the model takes {spec.num_frames}"
                )
            if size is None:
                size = (v.height, v.width)
                crop_window(v.height, v.width, self.crop_size)  # the crop fits
            elif (v.height, v.width) != size:
                raise FeatureBankError(
                    f"video {v.id!r}: {v.width}x{v.height} frames, other videos are {size[1]}x{size[0]}"
                )
            check_pose_and_labels(v, spec, v.num_frames)
        return out

    def model_config(self, config: Any) -> EndToEndConfig:
        """The end-to-end config of the heads ``config`` (``params.model``, feature sizes filled in) on
        this bank: the encoders start as the features stage built them (:attr:`encoders`)."""
        init = self.encoders
        if init is None:
            raise FeatureBankError("the frame bank does not know how its encoders were built")
        return EndToEndConfig(
            heads=self.fill(config),
            clip_len=init.clip_len,
            i3d_init=init.i3d_weights_sha256,
            static_init=init.static_weights_sha256,
            init_seed=init.init_seed,
        )

    def stack(self, videos: Sequence[VideoFrames], spec: InputSpec) -> FrameInputs:
        """The **test** views of checked videos (no flip, centre crop): :class:`FrameInputs` with frames
        ``(N, T, h, w, 3)``, the poses when ``spec`` needs them and transitions ``(N, 2)`` (``-1`` rows for
        a video without ground truth)."""
        frames = []
        for v in videos:
            view = eval_view(v.height, v.width, self.crop_size)
            frames.append(apply_view(v.load(), view))
        return FrameInputs(
            frames=torch.stack(frames),
            skeleton=_stack_skeletons(videos, spec),
            transitions=_stack_transitions(videos),
        )

    def _hash_video(self, h: Any, v: Any) -> None:
        h.update(v.key.encode())
        for t in (v.skeleton, v.transitions):
            h.update(b"-" if t is None else t.detach().cpu().contiguous().numpy().tobytes())
        h.update(repr(v.splash).encode())


def _stack_skeletons(videos: Sequence[VideoFrames], spec: InputSpec) -> torch.Tensor | None:
    if not spec.skeleton_frames:
        return None
    return torch.stack([v.skeleton for v in videos]).float()  # type: ignore[misc]


def _stack_transitions(videos: Sequence[VideoFrames]) -> torch.Tensor:
    unknown = torch.full((2,), -1, dtype=torch.long)
    return torch.stack([unknown if v.transitions is None else v.transitions.long() for v in videos])


# ---------------------------------------------------------------------------------------------------------
# Banks


def frame_bank_from(
    bank: FeatureBank,
    decoded_dir: Path,
    decode_manifest: pa.Table,
    encoders: EncoderInit | None,
) -> FrameBank:
    """The :class:`FrameBank` of a feature bank's dives (its table, poses, labels, dims, skipped dives),
    their frames in ``decoded_dir`` as ``decode_manifest`` lists them.

    Raises:
        FeatureBankError: a dive of the bank missing from the decode manifest.
    """
    rows = {r["id"]: r for r in decode_manifest.to_pylist()}
    videos = {}
    for vid, v in bank.videos.items():
        row = rows.get(vid)
        if row is None:
            raise FeatureBankError(f"dive {vid!r}: not in the decode manifest of {decoded_dir}")
        entry = {k: row[k] for k in ("path", "key", "num_frames", "height", "width")}
        videos[vid] = VideoFrames(
            id=vid,
            num_frames=int(row["num_frames"]),
            height=int(row["height"]),
            width=int(row["width"]),
            skeleton=v.skeleton,
            transitions=v.transitions,
            score=v.score,
            difficulty=v.difficulty,
            dive_number=v.dive_number,
            splash=v.splash,
            pose_mirror_x=v.pose_mirror_x,
            decoded_dir=Path(decoded_dir),
            entry=entry,
            key=str(row["key"]),
        )
    dims = None
    if bank.dims is not None:  # the features are now the encoders' outputs, computed in the step
        dims = replace(bank.dims, i3d_dim=I3D_DIM, static_dim=STATIC_DIM)
    return FrameBank(
        videos,  # type: ignore[arg-type]
        bank.table,
        dims,
        bank.skipped,
        encoders=encoders,
        crop_size=None if encoders is None else encoders.crop_size,
    )


def pipeline_frame_bank(
    dives_path: Path,
    decoded_dir: Path,
    features_dir: Path,
    pose_dir: Path | None,
    *,
    data_root: Path | None = None,
) -> FrameBank:
    """The frame bank of the pipeline's outputs: the dives, poses, labels and skipped dives of
    :func:`~hpmcore.training.bank.pipeline_bank` (the features manifest gives the feature sizes and the
    encoders' initialisation), the frames of the decode stage's cache.

    Raises:
        DatasetError / FeatureBankError / ManifestError: as :func:`~hpmcore.training.bank.pipeline_bank`,
            or features computed with different encoders or settings.
    """
    bank = pipeline_bank(dives_path, decoded_dir, features_dir, pose_dir, data_root=data_root)
    decode_manifest = read_manifest(Path(decoded_dir) / MANIFEST, DECODE_MANIFEST_SCHEMA)
    features_manifest = read_manifest(Path(features_dir) / MANIFEST, FEATURES_MANIFEST_SCHEMA)
    ids = set(bank.videos)
    kept = features_manifest.filter(pa.array([i in ids for i in features_manifest.column("id").to_pylist()]))
    init = encoder_init(kept, Path(features_dir) / MANIFEST)
    return frame_bank_from(bank, Path(decoded_dir), decode_manifest, init)


def synthetic_frame_bank(
    splits: Mapping[str, int],
    *,
    num_frames: int = 12,
    height: int = 16,
    width: int = 16,
    clip_len: int = 4,
    clip_stride: int = 4,
    crop_size: int | None = None,
    dive_numbers: Sequence[str] = ("101a", "201b", "301c"),
    seed: int = 0,
) -> FrameBank:
    """A bank of random frames in memory, for tests and benchmarks.

    Video ``n`` of a split (id ``"<split>/<n>"``) has dive number ``dive_numbers[n % len]`` and
    uniform-noise frames whose mean brightness ``b`` carries the score: ``score = 50 + 20·(b − ½)``, so a
    model can learn it. Poses are random in [−1, 1] (mirror line x = 0); transitions uniform with
    ``1 <= st < T/2 <= ed < T − 1``. Dims: I3D 1024 wide, static 368, ``clip_stride``.
    """
    g = torch.Generator().manual_seed(seed)
    videos, splits_of = {}, {}
    dd_of = {dn: 2.0 + 0.4 * i for i, dn in enumerate(dict.fromkeys(dive_numbers))}
    for split, count in splits.items():
        for n in range(count):
            brightness = float(torch.rand((), generator=g))
            noise = torch.rand(num_frames, height, width, 3, generator=g)
            frames = (255 * (0.5 * noise + 0.5 * brightness)).to(torch.uint8)  # (T, H, W, 3)
            st = int(torch.randint(1, num_frames // 2, (1,), generator=g))
            ed = int(torch.randint(num_frames // 2, num_frames - 1, (1,), generator=g))
            dn = dive_numbers[n % len(dive_numbers)]
            vid = f"{split}/{n}"
            videos[vid] = VideoFrames(
                id=vid,
                num_frames=num_frames,
                height=height,
                width=width,
                skeleton=2 * torch.rand(POSE_CHANNELS, num_frames, NUM_JOINTS, 1, generator=g) - 1,
                transitions=torch.tensor([st, ed]),
                score=50.0 + 20.0 * (brightness - 0.5),
                difficulty=dd_of[dn],
                dive_number=dn,
                splash=float(torch.rand((), generator=g)),
                pose_mirror_x=0.0,
                frames=frames,
                key=f"synthetic-{seed}-{vid}",
            )
            splits_of[vid] = split
    base = FeatureBank.from_videos(videos.values(), splits_of)  # type: ignore[arg-type]
    t_clips = len(range(0, num_frames - clip_len + 1, clip_stride))
    dims = BankDims(I3D_DIM, STATIC_DIM, num_frames, t_clips, clip_stride)
    init = EncoderInit(None, "random-init", None, "random-init", 0, clip_len, clip_stride, crop_size)
    return FrameBank(videos, base.table, dims, encoders=init, crop_size=crop_size)  # type: ignore[arg-type]


# ---------------------------------------------------------------------------------------------------------
# Training views of an epoch's pairs


@dataclass(frozen=True)
class PairFrames(torch.utils.data.Dataset):
    """The training views of an epoch's pairs: item ``p`` is pair ``p`` of the epoch — query
    ``queries[p]`` with exemplar ``partners[p]`` — each augmented independently
    (:func:`~hpmcore.training.augment.train_view` from :func:`~hpmcore.training.augment.augmentation_rng`
    ``(seed, epoch, p, role)``), or both in the test view without ``augment``.

    An item is ``(p, query frames (T, h, w, 3), exemplar frames, query pose, exemplar pose)`` (poses
    ``(2, T, 16, 1)`` or ``None``; flipped with the frames when ``flip_pose``).
    """

    bank: FrameBank
    queries: Sequence[VideoFrames]
    partners: Sequence[VideoFrames]
    seed: int
    epoch: int
    spec: InputSpec
    augment: bool = True
    flip_pose: bool = True

    def __len__(self) -> int:
        return len(self.queries)

    def _view(self, v: VideoFrames, p: int, role: str) -> tuple[torch.Tensor, torch.Tensor | None]:
        crop = self.bank.crop_size
        if self.augment:
            view = train_view(augmentation_rng(self.seed, self.epoch, p, role), v.height, v.width, crop)
        else:
            view = eval_view(v.height, v.width, crop)
        frames = apply_view(v.load(), view)
        skeleton = v.skeleton if self.spec.skeleton_frames else None
        if skeleton is not None and view.flip and self.flip_pose:
            if v.pose_mirror_x is None:
                raise FeatureBankError(f"video {v.id!r}: no mirror line for its pose (cannot flip it)")
            skeleton = flip_skeleton(skeleton, v.pose_mirror_x)
        return frames, skeleton

    def __getitem__(self, p: int) -> tuple[int, torch.Tensor, torch.Tensor, Any, Any]:
        fq, sq = self._view(self.queries[p], p, "query")
        fe, se = self._view(self.partners[p], p, "exemplar")
        return p, fq, fe, sq, se

    def collate(
        self, items: list[tuple[int, torch.Tensor, torch.Tensor, Any, Any]]
    ) -> tuple[torch.Tensor, FrameInputs, FrameInputs]:
        """Items → ``(pair positions (B,), queries, exemplars)``."""
        pos = [it[0] for it in items]

        def side(k: int, videos: Sequence[VideoFrames]) -> FrameInputs:
            chosen = [videos[p] for p in pos]
            poses = [it[k + 2] for it in items]
            return FrameInputs(
                frames=torch.stack([it[k] for it in items]),
                skeleton=None if poses[0] is None else torch.stack(poses).float(),
                transitions=_stack_transitions(chosen),
            )

        return torch.tensor(pos, dtype=torch.long), side(1, self.queries), side(2, self.partners)


def pair_loader(
    dataset: PairFrames, batches: Sequence[Sequence[int]], *, workers: int, pin_memory: bool = False
) -> torch.utils.data.DataLoader:
    """A loader over ``batches`` (lists of pair positions) in that order; ``workers`` processes, each
    seeded (:func:`~hpmcore.runtime.seed_worker`) from a generator on the stream ``("loader", epoch)``
    of the seed (the views themselves do not depend on the workers: they are drawn per pair)."""
    generator = torch.Generator().manual_seed(derive_seed(dataset.seed, "loader", dataset.epoch))
    return torch.utils.data.DataLoader(
        dataset,
        batch_sampler=[list(b) for b in batches],
        num_workers=workers,
        collate_fn=dataset.collate,
        worker_init_fn=seed_worker if workers else None,
        generator=generator,
        pin_memory=pin_memory,
        persistent_workers=False,
    )


def view_batches(
    bank: FrameBank, videos: Sequence[VideoFrames], spec: InputSpec, batch: int
) -> Iterator[FrameInputs]:
    """The test views of ``videos`` in batches of ``batch`` (e.g. to fit the input standardiser)."""
    for i in range(0, len(videos), batch):
        yield bank.stack(videos[i : i + batch], spec)
