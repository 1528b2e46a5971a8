"""The honest evaluation of a pair model on a split of the feature bank (spec §10, §11).

:func:`evaluate_model`, for every query of a split:

1. ``k`` distinct exemplars from the **train** pool (:func:`hpmcore.data.splits.select_exemplars`,
   seeded per query, so the draw does not depend on processing order), for each of
   ``num_voter_draws`` voter seeds (:func:`voter_seed`: the stream ``("voters", d)`` of the one seed);
   no padding with duplicates (§13 item 14) — :func:`plan_evaluation`, which also checks every needed
   video against what the model needs (:meth:`~hpmcore.training.protocol.PairModel.input_spec`);
2. every query and every exemplar is encoded **once** (``model.encode``, eval mode: decoded
   transitions, or the exemplars' ground truth where known with ``exemplar_gt_at_test``), and only the
   pair heads (``model.forward_pair``) run per (query, exemplar) pair, each distinct pair once across
   draws (§10.2);
3. ``ŝ_q = mean_e (Δ^{qe} + s_e)``, or in DD mode ``DD_q · mean_e (Δ^{qe} + s_e / DD_e)`` (§10.3) — DD
   mode is what the model was trained in (its checkpoint records it);
4. ρ, L2, relative L2 (raw and ×100) per draw, then mean ± sample std over draws; tIoU and
   AIoU@0.5/0.75 of the queries' decoded transitions against their ground truth (per-query convention
   (a), §11.2; identical across draws, so computed once), over the queries that have ground truth
   (``queries_without_transitions`` counts the others).

Any :class:`~hpmcore.training.protocol.PairModel` can be evaluated: HP-MCoRe and the CoRe-style
baseline. Same weights, bank, config and seed → identical metrics (no random state is used).

:func:`evaluate_checkpoint` does all of it for **one checkpoint on one split of the current data**: the
model is rebuilt from the checkpoint alone (:func:`~hpmcore.training.checkpoints.model_from_checkpoint`;
the trainer is not involved) and votes in the DD mode it was trained in. The evaluate stage calls it on
``best.pt`` and the test split; choosing between two models calls it on the validation split.
"""

from __future__ import annotations

import dataclasses
import logging
import math
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import torch
from tqdm import tqdm

from hpmcore.config import EvalConfig, ModelConfig
from hpmcore.data.canonical import DatasetError
from hpmcore.data.splits import select_exemplars
from hpmcore.models.end_to_end import EndToEndConfig, EndToEndHPMCoRe
from hpmcore.models.hpmcore import HPMCoRe
from hpmcore.runtime import derive_seed, resolve_device
from hpmcore.training.bank import FeatureBank
from hpmcore.training.checkpoints import (
    CheckpointError,
    CheckpointInfo,
    compare_fingerprints,
    model_from_checkpoint,
)
from hpmcore.training.distributed import current_world
from hpmcore.training.metrics import score_metrics, segmentation_metrics, spearman_rho, tiou
from hpmcore.training.protocol import Encoding, InputSpec, PairModel

__all__ = [
    "EvalConfig",
    "EvalPlan",
    "EvalReport",
    "Evaluation",
    "evaluate_checkpoint",
    "evaluate_model",
    "evaluation_from_predictions",
    "json_safe",
    "plan_evaluation",
    "voter_seed",
]

log = logging.getLogger(__name__)


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
    bank: FeatureBank,
    split: str,
    cfg: EvalConfig,
    *,
    seed: int,
    dd_mode: bool = False,
    model: PairModel | None = None,
) -> EvalPlan:
    """Draw the exemplars of every query of ``split`` and check that every needed video is usable.

    Raises:
        DatasetError: a query has no exemplar in the train pool (naming the query), the split is empty,
            or (``dd_mode``) a query or exemplar has a DD that is not > 0.
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
    if dd_mode:
        for i in sorted({*queries, *(e for d in draws for es in d.values() for e in es)}):
            if not bank.label(i)["difficulty"] > 0:
                raise DatasetError(
                    f"DD mode: video {i!r} has difficulty {bank.label(i)['difficulty']}, not > 0"
                )
    if model is not None:
        bank.require(queries, model.input_spec("query"))
        bank.require(
            sorted({e for d in draws for es in d.values() for e in es}), model.input_spec("exemplar")
        )
    return EvalPlan(split=split, queries=tuple(queries), exemplars=tuple(draws), seeds=seeds)


@dataclass(frozen=True)
class Evaluation:
    """Metrics (JSON-safe, NaN → ``None``) and one row per query (for plots), plus the plan."""

    metrics: dict[str, Any]
    rows: list[dict[str, Any]]
    plan: EvalPlan | None = None


def _model_device(model: PairModel) -> torch.device:
    p = next(model.parameters(), None)
    return torch.device("cpu") if p is None else p.device


def _encode_all(
    model: PairModel, bank: FeatureBank, videos: list[Any], spec: InputSpec, *, use_gt: bool, batch: int
) -> Encoding:
    """Encode every video once (eval mode, no grad) → one concatenated encoding on the model's device
    (the bank makes the inputs: cached features, or the frames' test views for an end-to-end model)."""
    device = _model_device(model)
    parts = []
    for i in range(0, len(videos), batch):
        inputs = bank.stack(videos[i : i + batch], spec).to(device)
        parts.append(model.encode(inputs, use_gt=use_gt))
    return type(parts[0]).cat(parts)


def _pair_deltas(
    model: PairModel, plan: EvalPlan, bank: FeatureBank, cfg: EvalConfig, *, progress: bool
) -> tuple[dict[tuple[str, str], float], torch.Tensor | None]:
    """Δ^{qe} of every distinct (query, exemplar) pair of the plan, and the queries' decoded transitions;
    under ``torchrun`` each rank does a contiguous shard of the queries and the results are gathered."""
    world = current_world()
    if not world.distributed:
        return _shard_deltas(model, plan, list(plan.queries), bank, cfg, progress=progress)
    shards = np.array_split(np.arange(len(plan.queries)), world.size)
    mine = [plan.queries[i] for i in shards[world.rank]]
    gathered = world.all_gather(
        _shard_deltas(model, plan, mine, bank, cfg, progress=progress and world.is_main)
    )
    deltas = {pair: d for part, _ in gathered for pair, d in part.items()}
    predicted = [p for _, p in gathered if p is not None]
    return deltas, torch.cat(predicted) if predicted else None


@torch.inference_mode()
def _shard_deltas(
    model: PairModel,
    plan: EvalPlan,
    queries: list[str],
    bank: FeatureBank,
    cfg: EvalConfig,
    *,
    progress: bool,
) -> tuple[dict[tuple[str, str], float], torch.Tensor | None]:
    """Δ^{qe} of the distinct pairs of ``queries`` (a shard of the plan's) and their decoded transitions."""
    q_spec, e_spec = model.input_spec("query"), model.input_spec("exemplar")
    if not queries:
        return {}, None
    exemplar_ids = sorted({e for d in plan.exemplars for q in queries for e in d[q]})
    q_index = {q: i for i, q in enumerate(queries)}
    e_index = {e: i for i, e in enumerate(exemplar_ids)}
    q_feats, e_feats = bank.require(queries, q_spec), bank.require(exemplar_ids, e_spec)
    uses_gt = model.exemplar_uses_gt()  # HP-MCoRe: exemplar_gt_at_test
    q_enc = _encode_all(model, bank, q_feats, q_spec, use_gt=False, batch=cfg.encode_batch_size)
    e_enc = _encode_all(model, bank, e_feats, e_spec, use_gt=uses_gt, batch=cfg.encode_batch_size)
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
    predicted = q_enc.predicted
    return deltas, None if predicted is None else predicted.cpu()


def evaluate_model(
    model: PairModel,
    bank: FeatureBank,
    split: str,
    cfg: EvalConfig,
    *,
    seed: int,
    dd_mode: bool = False,
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
        cfg: voters, their draws and the device.
        seed: the voter seed (draw ``d`` uses :func:`voter_seed`).
        dd_mode: the model regresses completeness (score / DD): vote in DD mode (§10.3). It must be the
            mode the model was trained in (:attr:`~hpmcore.training.checkpoints.CheckpointInfo.dd_mode`).
        plan: a plan from :func:`plan_evaluation` with the same arguments (reused across epochs).
        progress: show a progress bar over the pairs.

    Raises:
        DatasetError: a query without any exemplar in the pool (named).
        FeatureBankError: a needed video missing or with NaN/mis-shaped features (named).
    """
    cfg.validate()
    plan = plan or plan_evaluation(bank, split, cfg, seed=seed, dd_mode=dd_mode, model=model)
    model.to(resolve_device(cfg.device)).eval()
    deltas, predicted = _pair_deltas(model, plan, bank, cfg, progress=progress)
    score = {i: bank.label(i)["final_score"] for d in plan.exemplars for es in d.values() for i in es}
    preds = np.empty((len(plan.exemplars), len(plan.queries)))
    for d, draw in enumerate(plan.exemplars):
        for n, q in enumerate(plan.queries):
            es = draw[q]
            if dd_mode:
                dd_q = bank.label(q)["difficulty"]
                votes = [deltas[q, e] + score[e] / bank.label(e)["difficulty"] for e in es]
                preds[d, n] = dd_q * float(np.mean(votes))
            else:
                preds[d, n] = float(np.mean([deltas[q, e] + score[e] for e in es]))
    info = {
        "exemplars": cfg.exemplars,
        "exemplar_mode": cfg.exemplar_mode,
        "num_voter_draws": cfg.num_voter_draws,
        "dd_mode": dd_mode,
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
    Segmentation metrics need ``predicted_transitions (N, 2)``; they are computed over the queries with
    ground-truth transitions (the others are counted in ``queries_without_transitions``).

    Returns:
        :class:`Evaluation` with JSON-safe ``metrics`` (``split``, ``num_queries``, ``rho``, ``rho_std``,
        ``l2``, ``rl2``, ``rl2_x100``, ``exec_rho`` (Spearman's ρ of predicted / DD against true / DD)
        and their ``_std``, ``dd_only_rho`` (ρ of the DD-only predictor: DD against the true score),
        ``tiou``, ``aiou_50``, ``aiou_75``,
        ``queries_without_transitions``, ``draws`` and ``info``) and rows ``id, dive_number,
        difficulty, true, pred, pred_std, st_pred, ed_pred, st_gt, ed_gt, tiou``.
    """
    preds = np.asarray(preds, dtype=np.float64)
    if preds.ndim != 2 or preds.shape[1] != len(query_ids):
        raise ValueError(f"predictions: expected (draws, {len(query_ids)}), got shape {preds.shape}")
    labels = [bank.label(q) for q in query_ids]
    true = np.array([lab["final_score"] for lab in labels], dtype=np.float64)
    dd = np.array([lab["difficulty"] for lab in labels], dtype=np.float64)
    keys = ("rho", "l2", "rl2", "rl2_x100", "exec_rho")
    per_draw = []
    for d in range(preds.shape[0]):
        if np.isfinite(preds[d]).all():
            # execution rho: what the prediction ranks beyond the difficulty it is given
            exec_rho = spearman_rho(preds[d] / dd, true / dd)
            per_draw.append({**score_metrics(preds[d], true), "exec_rho": exec_rho})
        else:
            log.warning(
                "%s: %d non-finite predictions; score metrics are NaN",
                split,
                int((~np.isfinite(preds[d])).sum()),
            )
            per_draw.append(dict.fromkeys(keys, math.nan))
    metrics: dict[str, Any] = {"split": split, "num_queries": len(query_ids)}
    for key in keys:
        metrics[key], metrics[f"{key}_std"] = _mean_std([m[key] for m in per_draw])
    metrics["dd_only_rho"] = spearman_rho(dd, true)

    gts = [bank.get(q).transitions if q in bank.videos else None for q in query_ids]
    per_tiou: list[float | None] = [None] * len(query_ids)
    seg = {"tiou": math.nan, "aiou_50": math.nan, "aiou_75": math.nan}
    pred_t = None
    known = [n for n, g in enumerate(gts) if g is not None]
    if predicted_transitions is not None:
        pred_t = np.asarray(predicted_transitions, dtype=np.int64).reshape(len(query_ids), 2)
        if known:
            gt = np.stack([np.asarray(gts[n], dtype=np.int64) for n in known])  # (K, 2)
            seg = segmentation_metrics(pred_t[known], gt)
            for n, x in zip(known, tiou(pred_t[known], gt), strict=True):
                per_tiou[n] = float(x)
    metrics.update(seg)
    metrics["queries_without_transitions"] = len(query_ids) - len(known)
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


# ---------------------------------------------------------------------------------------------------------
# One checkpoint on one split of the current data


@dataclass(frozen=True)
class EvalReport:
    """The evaluation of one checkpoint on one split: what the evaluate stage writes."""

    metrics: dict[str, Any]
    """JSON-safe metrics (ρ, L2, RL2, RL2×100 with std over voter draws, tIoU, AIoU@0.5/0.75 over the
    queries with ground truth, ``queries_without_transitions``), the checkpoint's epoch and validation
    ρ, the voters, and ``skipped`` (the split's dives that failed in extraction, left out); no timings."""
    predictions: pa.Table
    """One row per query: ``id, dive_number, difficulty, true_score, predicted_score, predicted_std`` (the
    mean and std over voter draws)."""
    transitions: pa.Table
    """One row per query with ground truth: ``id, takeoff_error, entry_error`` (predicted − true, in
    sampled frames) and ``tiou``."""
    evaluation: Evaluation
    checkpoint: CheckpointInfo


PREDICTIONS_SCHEMA = pa.schema(
    [
        ("id", pa.string()),
        ("dive_number", pa.string()),
        ("difficulty", pa.float64()),
        ("true_score", pa.float64()),
        ("predicted_score", pa.float64()),
        ("predicted_std", pa.float64()),
    ]
)
TRANSITIONS_SCHEMA = pa.schema(
    [("id", pa.string()), ("takeoff_error", pa.int64()), ("entry_error", pa.int64()), ("tiou", pa.float64())]
)


def _check_dims(info: CheckpointInfo, bank: FeatureBank) -> None:
    """The checkpoint's model was trained on features of the bank's sizes (widths, T, clip stride)."""
    dims = bank.require_dims()
    stored = info.config["model"]["config"]
    if info.kind == EndToEndHPMCoRe.__name__:
        stored = stored["heads"]  # the heads' config (the encoders' widths are the dims of a frame bank)
    differ = [
        f"{name}: {stored.get(name)!r} in the checkpoint, {getattr(dims, name)!r} in the features"
        for name in (f.name for f in dataclasses.fields(dims))
        if name in stored and stored.get(name) != getattr(dims, name)
    ]
    if differ:
        raise CheckpointError(
            f"checkpoint {info.path} was trained on other features than the current ones "
            f"({'; '.join(differ)})"
        )


def evaluate_checkpoint(
    checkpoint: Path,
    bank: FeatureBank,
    cfg: EvalConfig,
    *,
    seed: int,
    split: str = "val",
    expected_model: ModelConfig | EndToEndConfig | None = None,
    progress: bool = False,
) -> EvalReport:
    """Evaluate the checkpoint ``checkpoint`` on ``split`` of the current data (``bank``), once.

    The model is rebuilt from the checkpoint (its kind and config as recorded, any
    :class:`~hpmcore.training.protocol.PairModel`) and votes in the DD mode it was trained in; voters
    come from the bank's train split, drawn from ``seed`` with ``cfg`` (so two checkpoints evaluated
    with the same bank, config and seed meet the same queries and voters).

    Args:
        checkpoint: a ``best.pt`` (or ``last.pt``).
        bank: the current data (:func:`~hpmcore.training.bank.pipeline_bank`).
        cfg: voters, draws and device (``params.eval``).
        seed: the voter seed (``params.seed``).
        split: the split to score (``"val"`` to choose between models, ``"test"`` once to report).
        expected_model: refuse a checkpoint of another model configuration (the stage passes its own:
            the heads' config, or an end-to-end model's config in ``train.mode: end_to_end``).
        progress: show a progress bar.

    Raises:
        CheckpointError: the checkpoint is missing, unreadable, has NaN/inf weights or lacks keys, was
            trained on features of other sizes, or (``expected_model``) for another configuration —
            naming the file.
        DatasetError / FeatureBankError: an empty split, a query or exemplar missing or with bad
            features (named), a query whose dive number has no exemplar in the train pool (named).
    """
    if not bank.split_ids(split):
        raise DatasetError(f"no videos in the {split!r} split to evaluate")
    model, info = model_from_checkpoint(Path(checkpoint))
    if expected_model is not None:
        kind = EndToEndHPMCoRe if isinstance(expected_model, EndToEndConfig) else HPMCoRe
        expected = {"kind": kind.__name__, "config": asdict(expected_model)}
        compare_fingerprints(Path(checkpoint), info.config["model"], expected, "model configuration")
    _check_dims(info, bank)
    ev = evaluate_model(model, bank, split, cfg, seed=seed, dd_mode=info.dd_mode, progress=progress)
    val = info.val or {}
    metrics = json_safe(
        {
            **{k: v for k, v in ev.metrics.items() if k not in ("draws", "info")},
            "checkpoint_epoch": info.epoch,
            "checkpoint_val_rho": val.get("rho"),
            "voters": ev.metrics.get("info", {}),
            "skipped": bank.skipped_report((split,)),
        }
    )
    rows = ev.rows
    predictions = pa.Table.from_pylist(
        [
            {
                "id": r["id"],
                "dive_number": r["dive_number"],
                "difficulty": r["difficulty"],
                "true_score": r["true"],
                "predicted_score": r["pred"],
                "predicted_std": r["pred_std"],
            }
            for r in rows
        ],
        schema=PREDICTIONS_SCHEMA,
    )
    seg = [r for r in rows if r.get("st_gt") is not None and r.get("st_pred") is not None]
    transitions = pa.Table.from_pylist(
        [
            {
                "id": r["id"],
                "takeoff_error": r["st_pred"] - r["st_gt"],
                "entry_error": r["ed_pred"] - r["ed_gt"],
                "tiou": r["tiou"],
            }
            for r in seg
        ],
        schema=TRANSITIONS_SCHEMA,
    )
    return EvalReport(metrics, predictions, transitions, ev, info)
