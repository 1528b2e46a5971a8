"""The in-memory feature bank and the honest evaluation of pair models (spec §10, §11).

**Feature bank.** :class:`VideoFeatures` holds the cached tensors of one dive (I3D clips, static
per-frame features, pose, ground-truth transitions) with its labels; :class:`FeatureBank` maps ids to
them and carries the canonical annotation table (``id``, ``split``, ``dive_number``, ``difficulty``,
``final_score``), which is the only source of splits. A bank may hold fewer videos than its table
lists (e.g. no test features while training): a video is only looked up when it is used, and a
missing one is an error naming it (:meth:`FeatureBank.require`, which also rejects NaN/inf and wrong
shapes, naming the video).

**Evaluation** (:func:`evaluate_model`), for every query of a split:

1. ``k`` distinct exemplars from the **train** pool (:func:`hpmcore.data.splits.select_exemplars`,
   seeded per query, so the draw does not depend on processing order), for each of
   ``num_voter_draws`` voter seeds (:func:`voter_seed`); no padding with duplicates (§13 item 14);
2. every query and every exemplar is encoded **once** (``model.encode``, eval mode: decoded
   transitions, or the exemplars' ground truth with ``exemplar_gt_at_test``), and only the pair heads
   (``model.forward_pair``) run per (query, exemplar) pair, each distinct pair once across draws
   (§10.2);
3. ``ŝ_q = mean_e (Δ^{qe} + s_e)``, or in DD mode ``DD_q · mean_e (Δ^{qe} + s_e / DD_e)`` (§10.3);
4. ρ, L2, relative L2 (raw and ×100) per draw, then mean ± sample std over draws; tIoU and
   AIoU@0.5/0.75 of the queries' decoded transitions against their ground truth (per-query
   convention (a), §11.2; identical across draws, so computed once).

Any model with ``encode(VideoInputs, use_gt=...)`` (returning an encoding with ``select``/``cat``/
``len`` and optionally ``predicted`` transitions) and ``forward_pair(q, e)`` (returning ``delta_qe``)
can be evaluated: :class:`~hpmcore.models.hpmcore.HPMCoRe` and the baselines of
:mod:`hpmcore.training.baselines`. Models other than HP-MCoRe say which inputs they need with an
``input_spec(role)`` method (see :func:`input_spec`).
"""

from __future__ import annotations

import logging
import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np
import pyarrow as pa
import torch
from torch import nn
from tqdm import tqdm

from hpmcore.config import EvalConfig
from hpmcore.data.canonical import DatasetError
from hpmcore.data.splits import ExemplarPool, select_exemplars
from hpmcore.models.hdgcn import NUM_JOINTS
from hpmcore.models.hpmcore import POSE_CHANNELS, HPMCoRe, VideoInputs
from hpmcore.runtime import derive_seed, resolve_device
from hpmcore.training.metrics import score_metrics, segmentation_metrics, tiou

__all__ = [
    "BANK_COLUMNS",
    "EvalConfig",
    "EvalPlan",
    "Evaluation",
    "FeatureBank",
    "FeatureBankError",
    "InputSpec",
    "VideoFeatures",
    "evaluate_model",
    "evaluation_from_predictions",
    "input_spec",
    "json_safe",
    "plan_evaluation",
    "stack_videos",
    "synthetic_feature_bank",
    "voter_seed",
]

log = logging.getLogger(__name__)

BANK_COLUMNS = ("id", "split", "dive_number", "difficulty", "final_score")
"""Columns of the canonical annotation table a :class:`FeatureBank` needs."""

Role = Literal["train", "query", "exemplar"]


class FeatureBankError(DatasetError):
    """A video is missing from the feature bank or its tensors are unusable; the message names it."""


# ---------------------------------------------------------------------------------------------------------
# Configuration


# ---------------------------------------------------------------------------------------------------------
# The feature bank


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
    """int64 ``(2,)`` ground truth ``(st, ed)``, first frames of stages 2 and 3 (§5.2), or ``None``."""
    score: float
    """Final score."""
    difficulty: float
    """Degree of difficulty (DD)."""
    dive_number: str
    """FINA dive number (``"407c"``)."""
    splash: float | None = None
    """Entry-stage splash size (for the splash-aware auxiliary loss), when known."""


@dataclass(frozen=True)
class InputSpec:
    """What a model needs of each video in a given role (checked by :meth:`FeatureBank.require`)."""

    i3d_dim: int
    """Width of the I3D features."""
    static_shape: tuple[int, int] | None = None
    """``(T, C_static)`` when static features are needed."""
    skeleton_frames: int | None = None
    """T when the pose is needed (shape ``(2, T, 16, 1)``)."""
    transitions: bool = False
    """Ground-truth transitions are needed."""
    splash: bool = False
    """A splash size is needed."""


def input_spec(model: nn.Module, role: Role) -> InputSpec:
    """The inputs ``model`` needs for videos in ``role`` (training pair, evaluated query, exemplar).

    HP-MCoRe: static features with the static branch or the segmenter, the pose with the skeleton,
    ground truth for training with the segmenter (GT pooling, ``L_tas``) and for exemplars with
    ``exemplar_gt_at_test``, splash sizes when the splash loss is on. Other models answer through their
    own ``input_spec(role)`` method.
    """
    if not isinstance(model, HPMCoRe):
        spec = getattr(model, "input_spec", None)
        if spec is None:
            raise TypeError(f"{type(model).__name__} has no input_spec(role) method")
        return spec(role)
    cfg = model.config
    needs_static = cfg.use_static or cfg.use_segmentation
    gt = cfg.use_segmentation and (role == "train" or (role == "exemplar" and cfg.exemplar_gt_at_test))
    return InputSpec(
        i3d_dim=cfg.i3d_dim,
        static_shape=(cfg.num_frames, cfg.static_dim) if needs_static else None,
        skeleton_frames=cfg.num_frames if cfg.use_skeleton else None,
        transitions=gt,
        splash=role == "train" and cfg.splash_weight > 0,
    )


def _check_video(v: VideoFeatures, spec: InputSpec) -> None:
    """Raise :class:`FeatureBankError` naming the video for a missing, mis-shaped or non-finite tensor."""
    tensors: dict[str, tuple[torch.Tensor | None, tuple[int, ...] | None]] = {
        "i3d": (v.i3d, None),
        "static": (v.static, spec.static_shape),
        "skeleton": (
            v.skeleton,
            None if spec.skeleton_frames is None else (POSE_CHANNELS, spec.skeleton_frames, NUM_JOINTS, 1),
        ),
    }
    if v.i3d.dim() != 2 or v.i3d.shape[1] != spec.i3d_dim or v.i3d.shape[0] < 2:
        raise FeatureBankError(
            f"video {v.id!r}: i3d features must be (J >= 2, {spec.i3d_dim}), got {tuple(v.i3d.shape)}"
        )
    for name, (t, shape) in tensors.items():
        if t is None:
            if shape is not None:
                raise FeatureBankError(f"video {v.id!r}: {name} features are needed but missing")
            continue
        if shape is not None and tuple(t.shape) != shape:
            raise FeatureBankError(f"video {v.id!r}: {name} must have shape {shape}, got {tuple(t.shape)}")
        if (shape is not None or name == "i3d") and not bool(torch.isfinite(t).all()):
            bad = int((~torch.isfinite(t)).sum())
            raise FeatureBankError(f"video {v.id!r}: {name} features contain {bad} NaN/inf values")
    if spec.transitions:
        if v.transitions is None:
            raise FeatureBankError(f"video {v.id!r}: ground-truth transitions are needed but missing")
        if tuple(v.transitions.shape) != (2,):
            raise FeatureBankError(
                f"video {v.id!r}: transitions must be (2,), got {tuple(v.transitions.shape)}"
            )
        frames = spec.static_shape[0] if spec.static_shape else spec.skeleton_frames
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
    def from_videos(cls, videos: Iterable[VideoFeatures], splits: Mapping[str, str]) -> FeatureBank:
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
        return cls(by_id, table)

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


def stack_videos(videos: Sequence[VideoFeatures], spec: InputSpec) -> VideoInputs:
    """Stack checked videos into :class:`VideoInputs` (float32; fields ``spec`` does not need are dropped).

    Shapes: ``i3d (N, J, C)``, ``static (N, T, C_s)``, ``skeleton (N, 2, T, 16, 1)``,
    ``transitions (N, 2)`` (kept only when every video has them).
    """
    has_gt = all(v.transitions is not None for v in videos)
    return VideoInputs(
        i3d=torch.stack([v.i3d for v in videos]).float(),
        static=torch.stack([v.static for v in videos]).float() if spec.static_shape else None,  # type: ignore[misc]
        skeleton=torch.stack([v.skeleton for v in videos]).float() if spec.skeleton_frames else None,  # type: ignore[misc]
        transitions=torch.stack([v.transitions for v in videos]).long() if has_gt else None,  # type: ignore[misc]
    )


# ---------------------------------------------------------------------------------------------------------
# Evaluation


def voter_seed(seed: int, draw: int) -> int:
    """The exemplar-draw seed of voter draw ``draw``: the stream ``("voters", draw)`` of ``seed``."""
    return derive_seed(seed, "voters", draw)


@dataclass(frozen=True)
class EvalPlan:
    """The queries of a split and their exemplars per voter draw; checked against the bank."""

    split: str
    queries: tuple[str, ...]
    exemplars: tuple[dict[str, tuple[str, ...]], ...]
    """Per draw: query id → its distinct exemplar ids."""
    seeds: tuple[int, ...]
    """Per draw: the voter seed."""


def plan_evaluation(
    bank: FeatureBank, split: str, cfg: EvalConfig, *, seed: int, model: nn.Module | None = None
) -> EvalPlan:
    """Draw the exemplars of every query of ``split`` and check that every needed video is usable.

    Raises:
        DatasetError: a query has no exemplar in the train pool (naming the query), or the split is empty.
        FeatureBankError: a query or exemplar is missing from the bank or unusable for ``model``.
    """
    cfg.validate()
    queries = bank.split_ids(split)
    if not queries:
        raise DatasetError(f"split {split!r} has no videos to evaluate")
    pool = bank.pool("train")
    seeds = tuple(voter_seed(seed, d) for d in range(cfg.num_voter_draws))
    draws = []
    for s in seeds:
        draw = {}
        for q in queries:
            lab = bank.label(q)
            draw[q] = tuple(
                select_exemplars(
                    pool,
                    q,
                    lab["dive_number"],
                    lab["difficulty"],
                    mode=cfg.exemplar_mode,
                    k=cfg.exemplars,
                    seed=s,
                )
            )
        draws.append(draw)
    if cfg.dd_mode:
        for i in sorted({*queries, *(e for d in draws for es in d.values() for e in es)}):
            if not bank.label(i)["difficulty"] > 0:
                raise DatasetError(
                    f"DD mode: video {i!r} has difficulty {bank.label(i)['difficulty']}, not > 0"
                )
    if model is not None:
        bank.require(queries, input_spec(model, "query"))
        bank.require(
            sorted({e for d in draws for es in d.values() for e in es}), input_spec(model, "exemplar")
        )
    return EvalPlan(split=split, queries=tuple(queries), exemplars=tuple(draws), seeds=seeds)


@dataclass(frozen=True)
class Evaluation:
    """Metrics (JSON-safe, NaN → ``None``) and one row per query (for plots), plus the plan."""

    metrics: dict[str, Any]
    rows: list[dict[str, Any]]
    plan: EvalPlan | None = None


def _model_device(model: nn.Module) -> torch.device:
    p = next(model.parameters(), None)
    return torch.device("cpu") if p is None else p.device


def _encode_all(
    model: nn.Module, videos: list[VideoFeatures], spec: InputSpec, *, use_gt: bool, batch: int
) -> Any:
    """Encode every video once (eval mode, no grad) → one concatenated encoding on the model's device."""
    device = _model_device(model)
    parts = []
    for i in range(0, len(videos), batch):
        inputs = stack_videos(videos[i : i + batch], spec).to(device)
        parts.append(model.encode(inputs, use_gt=use_gt))
    return type(parts[0]).cat(parts)


@torch.inference_mode()
def _pair_deltas(
    model: nn.Module, plan: EvalPlan, bank: FeatureBank, cfg: EvalConfig, *, progress: bool
) -> tuple[dict[tuple[str, str], float], torch.Tensor | None]:
    """Δ^{qe} of every distinct (query, exemplar) pair of the plan, and the queries' decoded transitions."""
    q_spec, e_spec = input_spec(model, "query"), input_spec(model, "exemplar")
    queries = list(plan.queries)
    exemplar_ids = sorted({e for d in plan.exemplars for es in d.values() for e in es})
    q_index = {q: i for i, q in enumerate(queries)}
    e_index = {e: i for i, e in enumerate(exemplar_ids)}
    q_feats, e_feats = bank.require(queries, q_spec), bank.require(exemplar_ids, e_spec)
    exemplar_uses_gt = getattr(model, "exemplar_uses_gt", None)  # HP-MCoRe: exemplar_gt_at_test in eval
    uses_gt = bool(exemplar_uses_gt()) if exemplar_uses_gt is not None else False
    q_enc = _encode_all(model, q_feats, q_spec, use_gt=False, batch=cfg.encode_batch_size)
    e_enc = _encode_all(model, e_feats, e_spec, use_gt=uses_gt, batch=cfg.encode_batch_size)
    pairs = list(dict.fromkeys((q, e) for d in plan.exemplars for q in queries for e in d[q]))
    device = _model_device(model)
    deltas: dict[tuple[str, str], float] = {}
    bar = tqdm(total=len(pairs), desc=f"eval {plan.split}", unit="pair", disable=not progress, leave=False)
    for i in range(0, len(pairs), cfg.pair_batch_size):
        chunk = pairs[i : i + cfg.pair_batch_size]
        qi = torch.tensor([q_index[q] for q, _ in chunk], device=device)
        ei = torch.tensor([e_index[e] for _, e in chunk], device=device)
        out = model.forward_pair(q_enc.select(qi), e_enc.select(ei))
        for pair, d in zip(chunk, out.delta_qe.float().cpu().tolist(), strict=True):
            deltas[pair] = d
        bar.update(len(chunk))
    bar.close()
    predicted = getattr(q_enc, "predicted", None)
    return deltas, None if predicted is None else predicted.cpu()


def evaluate_model(
    model: nn.Module,
    bank: FeatureBank,
    split: str,
    cfg: EvalConfig,
    *,
    seed: int,
    plan: EvalPlan | None = None,
    progress: bool = False,
) -> Evaluation:
    """Evaluate ``model`` on every query of ``split`` with voters from the train pool (module docstring).

    The model is moved to ``cfg.device`` and put in eval mode (and left so); no random state is used,
    so the same weights, bank, config and ``seed`` give identical metrics.

    Args:
        model: HP-MCoRe or another pair model (see the module docstring).
        bank: the features; queries and their exemplars must be in it.
        split: ``"val"`` or ``"test"`` (or ``"train"``, never pairing a query with itself).
        cfg: voters and DD mode.
        seed: the voter seed (draw ``d`` uses :func:`voter_seed`).
        plan: a plan from :func:`plan_evaluation` with the same arguments (reused across epochs).
        progress: show a progress bar over the pairs.

    Raises:
        DatasetError: a query without any exemplar in the pool (named).
        FeatureBankError: a needed video missing or with NaN/mis-shaped features (named).
    """
    cfg.validate()
    plan = plan or plan_evaluation(bank, split, cfg, seed=seed, model=model)
    model.to(resolve_device(cfg.device)).eval()
    deltas, predicted = _pair_deltas(model, plan, bank, cfg, progress=progress)
    score = {i: bank.label(i)["final_score"] for d in plan.exemplars for es in d.values() for i in es}
    preds = np.empty((len(plan.exemplars), len(plan.queries)))
    for d, draw in enumerate(plan.exemplars):
        for n, q in enumerate(plan.queries):
            es = draw[q]
            if cfg.dd_mode:
                dd_q = bank.label(q)["difficulty"]
                votes = [deltas[q, e] + score[e] / bank.label(e)["difficulty"] for e in es]
                preds[d, n] = dd_q * float(np.mean(votes))
            else:
                preds[d, n] = float(np.mean([deltas[q, e] + score[e] for e in es]))
    info = {
        "exemplars": cfg.exemplars,
        "exemplar_mode": cfg.exemplar_mode,
        "num_voter_draws": cfg.num_voter_draws,
        "dd_mode": cfg.dd_mode,
        "seed": seed,
        "voter_seeds": list(plan.seeds),
        "mean_exemplars_per_query": float(np.mean([len(plan.exemplars[0][q]) for q in plan.queries])),
    }
    ev = evaluation_from_predictions(bank, split, list(plan.queries), preds, predicted, info=info)
    for row in ev.rows:
        row["exemplars"] = list(plan.exemplars[0][row["id"]])
    return Evaluation(ev.metrics, ev.rows, plan)


def _mean_std(values: Sequence[float]) -> tuple[float, float]:
    """Mean and sample std (NaN for a single value); NaN when any value is NaN."""
    arr = np.asarray(values, dtype=np.float64)
    std = float(arr.std(ddof=1)) if arr.size > 1 else math.nan
    return float(arr.mean()), std


def evaluation_from_predictions(
    bank: FeatureBank,
    split: str,
    query_ids: Sequence[str],
    preds: np.ndarray,
    predicted_transitions: torch.Tensor | np.ndarray | None,
    *,
    info: Mapping[str, Any] | None = None,
) -> Evaluation:
    """Metrics and per-query rows from predictions ``(D, N)`` (D voter draws) of the queries' scores.

    Score metrics are computed per draw, then mean and sample std (``<name>_std``, ``None`` for one
    draw) over draws; non-finite predictions give NaN metrics (a warning), never an exception.
    Segmentation metrics need ``predicted_transitions (N, 2)`` and ground truth for every query.

    Returns:
        :class:`Evaluation` with JSON-safe ``metrics`` (``split``, ``num_queries``, ``rho``, ``rho_std``,
        ``l2``, ``rl2``, ``rl2_x100`` and their ``_std``, ``tiou``, ``aiou_50``, ``aiou_75``, ``draws``
        and ``info``) and rows ``id, dive_number, difficulty, true, pred, pred_std, st_pred, ed_pred,
        st_gt, ed_gt, tiou``.
    """
    preds = np.asarray(preds, dtype=np.float64)
    if preds.ndim != 2 or preds.shape[1] != len(query_ids):
        raise ValueError(f"predictions: expected (draws, {len(query_ids)}), got shape {preds.shape}")
    labels = [bank.label(q) for q in query_ids]
    true = np.array([lab["final_score"] for lab in labels], dtype=np.float64)
    per_draw = []
    for d in range(preds.shape[0]):
        if np.isfinite(preds[d]).all():
            per_draw.append(score_metrics(preds[d], true))
        else:
            log.warning(
                "%s: %d non-finite predictions; score metrics are NaN",
                split,
                int((~np.isfinite(preds[d])).sum()),
            )
            per_draw.append(dict.fromkeys(("rho", "l2", "rl2", "rl2_x100"), math.nan))
    metrics: dict[str, Any] = {"split": split, "num_queries": len(query_ids)}
    for key in ("rho", "l2", "rl2", "rl2_x100"):
        metrics[key], metrics[f"{key}_std"] = _mean_std([m[key] for m in per_draw])

    gts = [bank.get(q).transitions if q in bank.videos else None for q in query_ids]
    per_tiou: list[float | None] = [None] * len(query_ids)
    seg = {"tiou": math.nan, "aiou_50": math.nan, "aiou_75": math.nan}
    pred_t = None
    if predicted_transitions is not None:
        pred_t = np.asarray(predicted_transitions, dtype=np.int64).reshape(len(query_ids), 2)
        if all(g is not None for g in gts):
            gt = np.stack([np.asarray(g, dtype=np.int64) for g in gts])  # type: ignore[arg-type]
            seg = segmentation_metrics(pred_t, gt)
            per_tiou = [float(x) for x in tiou(pred_t, gt)]
    metrics.update(seg)
    metrics["draws"] = per_draw
    metrics["info"] = dict(info or {})

    std = preds.std(axis=0, ddof=1) if preds.shape[0] > 1 else np.full(len(query_ids), math.nan)
    rows = []
    for n, (q, lab) in enumerate(zip(query_ids, labels, strict=True)):
        g = gts[n]
        rows.append(
            {
                "id": q,
                "dive_number": lab["dive_number"],
                "difficulty": lab["difficulty"],
                "true": lab["final_score"],
                "pred": float(preds[:, n].mean()),
                "pred_std": float(std[n]),
                "st_pred": None if pred_t is None else int(pred_t[n, 0]),
                "ed_pred": None if pred_t is None else int(pred_t[n, 1]),
                "st_gt": None if g is None else int(g[0]),
                "ed_gt": None if g is None else int(g[1]),
                "tiou": per_tiou[n],
            }
        )
    return Evaluation(json_safe(metrics), json_safe(rows))


def json_safe(obj: Any) -> Any:
    """A copy with NaN/inf floats as ``None``, numpy scalars as Python numbers, tuples as lists."""
    if isinstance(obj, dict):
        return {str(k): json_safe(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [json_safe(v) for v in obj]
    if isinstance(obj, np.generic):
        obj = obj.item()
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    return obj


def synthetic_feature_bank(
    splits: Mapping[str, int],
    *,
    dive_numbers: Sequence[str] = ("101a", "201b", "301c"),
    i3d_dim: int = 1024,
    static_dim: int = 368,
    num_frames: int = 96,
    num_clips: int = 9,
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
                )
            )
            assignment[vid] = split
    return FeatureBank.from_videos(videos, assignment)
