"""The comparison table: HP-MCoRe, its ablations and the baselines, trained and evaluated alike, over
several training seeds, with paired bootstrap intervals of the ρ differences.

- **Ablations of HP-MCoRe** are :class:`~hpmcore.config.ModelConfig` switches (``use_skeleton``,
  ``use_static``, ``use_segmentation``, ``contrastive_weight``); **baselines** are the CoRe-style pair
  regressor (:class:`~hpmcore.training.core_baseline.CoReBaseline`), the dive-number mean and the DD-only
  predictor (:mod:`hpmcore.training.baselines`). :func:`default_variants` lists them.
- :func:`run_comparison` trains every trainable variant once per **training seed**
  (:func:`training_seeds`: the run's seed, then the streams ``("compare", k)`` of it), selects each run
  on validation, and evaluates each once on the same split with the **same voters** (drawn from the
  run's seed, whatever the training seed). Within a seed a dive's prediction is the mean over the voter
  draws (what ``predictions.csv`` reports); ρ, execution ρ, L2 and RL2 are computed on those
  predictions, tIoU/AIoU on the decoded transitions; a row is the mean ± sample sd over the seeds.
  The table-only predictors are deterministic: one value, no sd.
- **Execution ρ** is Spearman's ρ of ``predicted / DD`` against ``true / DD``: what a model ranks beyond
  the difficulty it is given. A predictor whose ``predicted / DD`` is the same for every dive (DD only)
  ranks nothing: its execution ρ is undefined (``None``).
- **Paired bootstrap** (:func:`paired_bootstrap`): the test dives are resampled with replacement (the
  same resamples for every row, seeded from the run's seed); in each resample Δρ = mean over seeds of
  the reference's ρ − mean over seeds of the row's ρ, for final-score ρ and for execution ρ; the
  interval is the percentile interval of the resampled Δ. It measures how much Δ depends on which dives
  were tested; seed-to-seed variation is the ± sd. Against a row whose execution prediction is a
  constant, Δ execution ρ is taken against 0 (a constant ranks nothing) and flagged ``constant``.

Timings are returned apart (:attr:`Comparison.seconds`): they change from run to run, so they stay out of
the table that DVC tracks.
"""

from __future__ import annotations

import logging
import math
import re
import tempfile
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
from scipy import stats

from hpmcore.config import CoReConfig, EvalConfig, ModelConfig, TrainConfig
from hpmcore.models.hpmcore import build_hpmcore
from hpmcore.runtime import derive_rng, derive_seed
from hpmcore.training.bank import FeatureBank
from hpmcore.training.baselines import DDOnly, DiveNumberMean, dd_only, dive_number_mean
from hpmcore.training.core_baseline import build_core_baseline
from hpmcore.training.evaluate import Evaluation, evaluate_model, json_safe
from hpmcore.training.protocol import PairModel
from hpmcore.training.train import train

__all__ = [
    "Comparison",
    "SeedResult",
    "Variant",
    "comparison_markdown",
    "default_variants",
    "paired_bootstrap",
    "prediction_metrics",
    "rank_correlation",
    "run_comparison",
    "training_seeds",
]

log = logging.getLogger(__name__)

Variant = ModelConfig | CoReConfig | DiveNumberMean | DDOnly
"""A comparison entry: an HP-MCoRe config (incl. ablations), the CoRe baseline, the dive-number mean or
the DD-only predictor."""

SEED_METRICS = ("rho", "exec_rho", "l2", "rl2_x100", "tiou", "aiou_50", "aiou_75")
"""Metrics of one seed's evaluation; a row holds each as the mean over seeds and ``<name>_sd``."""
CONSTANT_RTOL = 1e-9
"""Predictions whose spread is below this fraction of their magnitude count as constant (DD × c / DD
differs from c only by rounding)."""

EpochCallback = Callable[[str, int, int, dict[str, float]], None]
"""``on_epoch(variant name, training seed, epoch, metrics)``."""


def default_variants(model_cfg: ModelConfig, core_cfg: CoReConfig | None = None) -> dict[str, Variant]:
    """HP-MCoRe, its ablations and the baselines, keyed by table name (HP-MCoRe first: the reference
    of the Δ columns).

    The CoRe baseline gets ``model_cfg.i3d_dim`` unless ``core_cfg`` is given. ``w/o skeleton`` also turns
    off the deviations that read the skeleton (``segmenter_input`` back to ``static``, no
    ``skeleton_skip`` or ``skeleton_kinematics``, ``pose_fusion`` ``bias``) and turns the I3D tokens on
    (without the skeleton they are the fused branch's only content). The static branch is a
    ``w/o static branch`` row when ``model_cfg`` has it and a ``with static branch`` row when it does
    not; a config without I3D tokens (``use_i3d: false``) also gets a ``with I3D tokens`` row.
    """
    variants: dict[str, Variant] = {
        "HP-MCoRe": model_cfg,
        "w/o skeleton": replace(
            model_cfg,
            use_skeleton=False,
            pose_fusion="bias",
            segmenter_input="static",
            skeleton_skip=False,
            skeleton_kinematics=False,
            use_i3d=True,
        ),
    }
    if model_cfg.use_static:
        variants["w/o static branch"] = replace(model_cfg, use_static=False)
    else:
        variants["with static branch"] = replace(model_cfg, use_static=True)
    if not model_cfg.use_i3d:
        variants["with I3D tokens"] = replace(model_cfg, use_i3d=True)
    variants["w/o segmentation (thirds)"] = replace(model_cfg, use_segmentation=False)
    variants["w/o contrastive loss"] = replace(model_cfg, contrastive_weight=0.0)
    variants["CoRe-style (I3D only)"] = core_cfg or CoReConfig(i3d_dim=model_cfg.i3d_dim)
    variants["dive-number mean"] = DiveNumberMean()
    variants["DD only"] = DDOnly()
    return variants


def training_seeds(seed: int, count: int) -> list[int]:
    """The training seeds of a comparison: ``seed`` itself (so the first run of HP-MCoRe is the ``train``
    stage's model), then ``derive_seed(seed, "compare", k)`` for ``k = 1 .. count - 1``."""
    if count < 1:
        raise ValueError(f"a comparison needs at least one training seed, got {count}")
    return [seed, *(derive_seed(seed, "compare", k) for k in range(1, count))]


def _slug(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9]+", "-", name).strip("-").lower() or "variant"


def _build(variant: ModelConfig | CoReConfig, seed: int) -> PairModel:
    if isinstance(variant, ModelConfig):
        return build_hpmcore(variant, seed=seed)
    return build_core_baseline(variant, seed=seed)


def _kind(variant: Variant) -> str:
    match variant:
        case ModelConfig():
            return "hpmcore"
        case CoReConfig():
            return "core"
        case DiveNumberMean():
            return "dive_number_mean"
        case DDOnly():
            return "dd_only"
    raise TypeError(f"unknown variant type {type(variant).__name__}")


# ---------------------------------------------------------------------------------------------------------
# Metrics on predictions and the paired bootstrap


def _is_constant(x: np.ndarray) -> np.ndarray:
    """``(..., N)`` → ``(...)`` bool: the last axis is constant up to :data:`CONSTANT_RTOL`."""
    scale = np.maximum(np.max(np.abs(x), axis=-1), 1.0)
    return np.ptp(x, axis=-1) <= CONSTANT_RTOL * scale


def rank_correlation(pred: np.ndarray, true: np.ndarray) -> np.ndarray:
    """Spearman's ρ along the last axis (Pearson's r of average ranks, as ``scipy.stats.spearmanr``).

    Shapes: ``pred (..., N)`` and ``true (..., N)`` broadcast → ``(...)`` float64. NaN where either side
    is constant (:data:`CONSTANT_RTOL`) or not finite: a constant ranks nothing.
    """
    p = np.asarray(pred, dtype=np.float64)
    t = np.asarray(true, dtype=np.float64)
    p, t = np.broadcast_arrays(p, t)
    finite = np.isfinite(p).all(axis=-1) & np.isfinite(t).all(axis=-1)
    undefined = (
        ~finite
        | _is_constant(np.where(np.isfinite(p), p, 0.0))
        | _is_constant(np.where(np.isfinite(t), t, 0.0))
    )
    rp = stats.rankdata(np.where(np.isfinite(p), p, 0.0), axis=-1)
    rt = stats.rankdata(np.where(np.isfinite(t), t, 0.0), axis=-1)
    rp = rp - rp.mean(axis=-1, keepdims=True)
    rt = rt - rt.mean(axis=-1, keepdims=True)
    with np.errstate(invalid="ignore", divide="ignore"):
        r = (rp * rt).sum(axis=-1) / np.sqrt((rp**2).sum(axis=-1) * (rt**2).sum(axis=-1))
    return np.where(undefined, np.nan, r)


def prediction_metrics(pred: np.ndarray, true: np.ndarray, difficulty: np.ndarray) -> dict[str, float]:
    """``rho``, ``exec_rho`` (ρ of ``pred / DD`` against ``true / DD``), ``l2`` and ``rl2_x100`` of one
    prediction per query (``(N,)`` each); NaN where undefined (see :func:`rank_correlation`)."""
    pred, true, dd = (np.asarray(a, dtype=np.float64) for a in (pred, true, difficulty))
    span = float(true.max() - true.min())
    err = pred - true
    return {
        "rho": float(rank_correlation(pred, true)),
        "exec_rho": float(rank_correlation(pred / dd, true / dd)),
        "l2": float(np.mean(err**2)),
        "rl2_x100": 100.0 * float(np.mean((err / span) ** 2)) if span > 0 else math.nan,
    }


def paired_bootstrap(
    reference: np.ndarray,
    other: np.ndarray,
    true: np.ndarray,
    resamples: np.ndarray,
    *,
    confidence: float = 0.95,
) -> dict[str, Any]:
    """Δρ = ρ(reference) − ρ(other) with its paired percentile bootstrap interval over the queries.

    Args:
        reference: ``(S1, N)`` the reference's predictions per training seed (or ``(N,)``).
        other: ``(S2, N)`` the other row's predictions per seed (or ``(N,)``).
        true: ``(N,)`` the true values.
        resamples: ``(B, N)`` int query indices of each bootstrap resample (the same for every row).
        confidence: the interval's coverage.

    Returns:
        ``delta`` (on all queries; each side's ρ is the mean over its seeds), ``low``, ``high``, ``p_le_0``
        (the fraction of resamples with Δ ≤ 0), ``resamples`` and ``constant`` (``other`` is a constant:
        its ρ is taken as 0). NaN values where ρ is undefined.
    """
    ref = np.atleast_2d(np.asarray(reference, dtype=np.float64))
    oth = np.atleast_2d(np.asarray(other, dtype=np.float64))
    true = np.asarray(true, dtype=np.float64)
    constant = bool(_is_constant(oth).all())

    def mean_rho(preds: np.ndarray, idx: np.ndarray | None, *, zero: bool = False) -> np.ndarray:
        """Mean over seeds of ρ on all queries (``idx`` None → scalar) or per resample → ``(B,)``."""
        if zero:  # a constant ranks nothing
            return np.zeros(() if idx is None else idx.shape[0])
        p = preds if idx is None else preds[:, idx]  # (S, N) or (S, B, N)
        t = true if idx is None else true[idx]  # (N,) or (B, N)
        return rank_correlation(p, t).mean(axis=0)

    delta = float(mean_rho(ref, None) - mean_rho(oth, None, zero=constant))
    boot = mean_rho(ref, resamples) - mean_rho(oth, resamples, zero=constant)  # (B,)
    alpha = (1.0 - confidence) / 2
    finite = boot[np.isfinite(boot)]
    low, high = (
        (float(np.quantile(finite, alpha)), float(np.quantile(finite, 1 - alpha)))
        if finite.size
        else (math.nan,) * 2
    )
    return {
        "delta": delta,
        "low": low,
        "high": high,
        "p_le_0": float(np.mean(finite <= 0)) if finite.size else math.nan,
        "resamples": int(resamples.shape[0]),
        "constant": constant,
    }


# ---------------------------------------------------------------------------------------------------------
# Running the comparison


@dataclass(frozen=True)
class SeedResult:
    """One evaluation of one variant (one training seed; ``seed`` ``None`` for a table-only predictor)."""

    seed: int | None
    pred: np.ndarray
    """``(N,)`` each query's prediction, the mean over voter draws."""
    metrics: dict[str, float]
    """:data:`SEED_METRICS` (NaN where undefined)."""
    best_epoch: int | None
    evaluation: Evaluation

    @classmethod
    def of(cls, ev: Evaluation, seed: int | None, best_epoch: int | None) -> SeedResult:
        """The voter-averaged predictions of an evaluation and their :data:`SEED_METRICS`."""
        pred = np.array([r["pred"] for r in ev.rows], dtype=np.float64)
        true = np.array([r["true"] for r in ev.rows], dtype=np.float64)
        dd = np.array([r["difficulty"] for r in ev.rows], dtype=np.float64)
        metrics = prediction_metrics(pred, true, dd)
        for key in ("tiou", "aiou_50", "aiou_75"):
            value = ev.metrics.get(key)
            metrics[key] = math.nan if value is None else float(value)
        return cls(seed, pred, metrics, best_epoch, ev)


def _mean_sd(values: Sequence[float]) -> tuple[float, float]:
    arr = np.asarray(values, dtype=np.float64)
    return float(arr.mean()), float(arr.std(ddof=1)) if arr.size > 1 else math.nan


@dataclass(frozen=True)
class Comparison:
    """The table and, apart from it, how long each variant took."""

    rows: list[dict[str, Any]]
    """One JSON-safe row per variant: ``name``, ``kind``, ``seeds``, ``num_queries``, each of
    :data:`SEED_METRICS` (mean over seeds) with ``<metric>_sd`` (sample sd over seeds; ``None`` for one
    seed), ``best_epoch`` (per seed), ``num_params``, ``per_seed`` (the metrics of each seed, and
    ``rho_draws``: ρ per voter draw, averaged; ``voter_seeds``) and ``vs_reference`` (``rho`` and
    ``exec_rho``: :func:`paired_bootstrap` of the reference − this row; ``None`` on the reference's
    row)."""
    markdown: str
    """:func:`comparison_markdown` of the rows."""
    seconds: dict[str, dict[str, Any]]
    """Per variant name: ``train`` (the epochs this run trained, all seeds) and ``total`` wall seconds, and
    ``per_seed``; ``comparison`` for the whole run."""
    predictions: list[dict[str, Any]]
    """One record per (variant, seed, query): ``variant``, ``seed``, ``id``, ``difficulty``,
    ``true_score``, ``predicted_score`` (mean over voter draws)."""
    info: dict[str, Any]
    """``split``, ``seed`` (voters, bootstrap), ``training_seeds``, ``reference``, ``bootstrap``
    (``resamples``, ``confidence``), ``voter_seeds``, ``num_voter_draws``."""


def run_comparison(
    bank: FeatureBank,
    variants: Mapping[str, Variant],
    train_cfg: TrainConfig,
    eval_cfg: EvalConfig,
    seed: int,
    *,
    seeds: int = 3,
    bootstrap: int = 2000,
    confidence: float = 0.95,
    split: str = "test",
    work_dir: Path | None = None,
    restart_on_mismatch: bool = False,
    progress: bool = False,
    on_epoch: EpochCallback | None = None,
) -> Comparison:
    """Train (train split, val selection; ``seeds`` training seeds) and evaluate (``split``, one
    checkpoint per seed) every variant, and compare each row with the first (the reference).

    Every trained run of a given training seed sees the same initial seeding, training pairs and
    validation voters; every evaluation (any variant, any seed) the same voters, drawn from ``seed``.
    Checkpoints go to ``work_dir/<variant slug>/seed-<seed>/`` (a temporary folder when ``None``), so a
    rerun with a ``work_dir`` resumes or reuses finished runs (checkpoints of another configuration
    there are an error, or replaced with ``restart_on_mismatch``).

    Raises:
        TypeError: a variant of unknown type. ValueError: empty or colliding names, ``seeds < 1``,
            ``bootstrap < 1`` or ``confidence`` outside (0, 1).
    """
    for name, variant in variants.items():
        _kind(variant)  # fail before training anything
        if not name:
            raise ValueError("variant names must be non-empty")
    if not variants:
        raise ValueError("nothing to compare")
    slugs = [_slug(n) for n in variants]
    if len(set(slugs)) != len(slugs):
        raise ValueError(f"variant names collide as folder names: {list(variants)}")
    if bootstrap < 1 or not 0 < confidence < 1:
        raise ValueError(f"bootstrap must be >= 1 and confidence in (0, 1), got {bootstrap}, {confidence}")
    run_seeds = training_seeds(seed, seeds)
    t_start = time.perf_counter()
    results: dict[str, list[SeedResult]] = {}
    num_params: dict[str, int] = {}
    seconds: dict[str, dict[str, Any]] = {}
    with tempfile.TemporaryDirectory(prefix="hpmcore-compare-") as tmp:
        root = Path(work_dir) if work_dir is not None else Path(tmp)
        for name, variant in variants.items():
            t0 = time.perf_counter()
            if isinstance(variant, DiveNumberMean | DDOnly):
                log.info("comparison: %s", name)
                ev = (
                    dive_number_mean(bank, split)
                    if isinstance(variant, DiveNumberMean)
                    else dd_only(bank, split)
                )
                results[name] = [SeedResult.of(ev, None, None)]
                num_params[name] = 0
                seconds[name] = {"train": 0.0, "total": round(time.perf_counter() - t0, 2)}
                continue
            per_seed, train_total, timing = [], 0.0, []
            for s in run_seeds:
                log.info("comparison: %s, training seed %d", name, s)
                t1 = time.perf_counter()
                model = _build(variant, s)
                num_params[name] = sum(p.numel() for p in model.parameters())
                callback = None if on_epoch is None else (lambda e, m, _n=name, _s=s: on_epoch(_n, _s, e, m))
                result = train(
                    model,
                    bank,
                    train_cfg,
                    seed=s,
                    checkpoint_dir=root / _slug(name) / f"seed-{s}",
                    on_epoch=callback,
                    restart_on_mismatch=restart_on_mismatch,
                    progress=progress,
                )
                ev = evaluate_model(
                    model, bank, split, eval_cfg, seed=seed, dd_mode=train_cfg.dd_mode, progress=progress
                )
                per_seed.append(SeedResult.of(ev, s, result.best_epoch))
                train_total += result.train_seconds
                timing.append({"seed": s, "train": round(result.train_seconds, 2),
                               "total": round(time.perf_counter() - t1, 2)})  # fmt: skip
            results[name] = per_seed
            seconds[name] = {
                "train": round(train_total, 2),
                "total": round(time.perf_counter() - t0, 2),
                "per_seed": timing,
            }
    reference = next(iter(variants))
    ids = [r["id"] for r in results[reference][0].evaluation.rows]
    for name, per_seed in results.items():
        if any([r["id"] for r in sr.evaluation.rows] != ids for sr in per_seed):
            raise RuntimeError(f"comparison: {name!r} was evaluated on other queries than {reference!r}")
    first = results[reference][0].evaluation.rows
    true = np.array([r["true"] for r in first], dtype=np.float64)
    dd = np.array([r["difficulty"] for r in first], dtype=np.float64)
    resamples = derive_rng(seed, "compare", "bootstrap").integers(0, len(ids), size=(bootstrap, len(ids)))
    ref_pred = np.stack([sr.pred for sr in results[reference]])  # (S, N)
    rows, predictions = [], []
    for name, variant in variants.items():
        per_seed = results[name]
        pred = np.stack([sr.pred for sr in per_seed])  # (S, N)
        row: dict[str, Any] = {
            "name": name,
            "kind": _kind(variant),
            "seeds": [sr.seed for sr in per_seed if sr.seed is not None],
            "num_queries": len(ids),
        }
        for key in SEED_METRICS:
            row[key], row[f"{key}_sd"] = _mean_sd([sr.metrics[key] for sr in per_seed])
        row["best_epoch"] = [sr.best_epoch for sr in per_seed if sr.best_epoch is not None] or None
        row["num_params"] = num_params[name]
        row["per_seed"] = [
            {
                "seed": sr.seed,
                "best_epoch": sr.best_epoch,
                **sr.metrics,
                "rho_draws": sr.evaluation.metrics.get("rho"),
                "voter_seeds": sr.evaluation.metrics.get("info", {}).get("voter_seeds"),
            }
            for sr in per_seed
        ]
        row["vs_reference"] = (
            None
            if name == reference
            else {
                "rho": paired_bootstrap(ref_pred, pred, true, resamples, confidence=confidence),
                "exec_rho": paired_bootstrap(
                    ref_pred / dd, pred / dd, true / dd, resamples, confidence=confidence
                ),
            }
        )
        rows.append(row)
        for sr in per_seed:
            predictions.extend(
                {
                    "variant": name,
                    "seed": sr.seed,
                    "id": r["id"],
                    "difficulty": r["difficulty"],
                    "true_score": r["true"],
                    "predicted_score": float(p),
                }
                for r, p in zip(sr.evaluation.rows, sr.pred, strict=True)
            )
    seconds["comparison"] = {"total": round(time.perf_counter() - t_start, 2)}
    trained = next((results[n][0] for n in variants if results[n][0].seed is not None), None)
    voters = {} if trained is None else trained.evaluation.metrics.get("info", {})
    info = {
        "split": split,
        "seed": seed,
        "training_seeds": run_seeds,
        "reference": reference,
        "bootstrap": {"resamples": bootstrap, "confidence": confidence, "method": "paired percentile"},
        "voter_seeds": voters.get("voter_seeds"),
        "num_voter_draws": voters.get("num_voter_draws"),
    }
    rows = json_safe(rows)
    return Comparison(rows, comparison_markdown(rows, info), seconds, predictions, json_safe(info))


# ---------------------------------------------------------------------------------------------------------
# The Markdown table


CELLS = (("rho", 3), ("exec_rho", 3), ("rl2_x100", 2), ("aiou_50", 1), ("aiou_75", 1))
"""The metric columns of the Markdown table and their decimals."""


def _fmt(value: Any, sd: Any, digits: int) -> str:
    if value is None:
        return "–"
    return f"{value:.{digits}f}" + ("" if sd is None else f" ± {sd:.{digits}f}")


def _fmt_delta(boot: dict[str, Any] | None) -> str:
    if boot is None:
        return "(reference)"
    if boot.get("delta") is None:
        return "–"
    interval = "" if boot.get("low") is None else f" [{boot['low']:+.3f}, {boot['high']:+.3f}]"
    return f"{boot['delta']:+.3f}{interval}" + (" †" if boot.get("constant") else "")


def comparison_markdown(rows: list[dict[str, Any]], info: Mapping[str, Any]) -> str:
    """A Markdown table: per variant ρ, execution ρ, RL2×100, AIoU@0.5/0.75 (mean ± sd over training
    seeds), Δρ and Δ execution ρ of the reference against it with the bootstrap interval, best epochs;
    a header line says the split, seeds, voters and bootstrap, and a footnote what † means."""
    boot = info.get("bootstrap", {})
    seeds = info.get("training_seeds") or []
    pct = round(100 * boot.get("confidence", 0.95))
    ref = info.get("reference", "the first row")
    lines = [
        f"Split `{info.get('split', 'test')}`, {rows[0]['num_queries'] if rows else 0} dives. Trained rows: "
        f"mean ± sd over {len(seeds)} training seed(s) {seeds}; within a seed each dive's prediction is the "
        f"mean over {info.get('num_voter_draws')} voter draws (the same voters for every row). "
        f"Δ = {ref} − row, with the {pct}% paired bootstrap interval over the dives "
        f"({boot.get('resamples')} resamples).",
        "",
        "| variant | ρ | execution ρ | RL2 ×100 | AIoU@0.5 | AIoU@0.75 | Δρ | Δ execution ρ | best epoch |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        vs = r.get("vs_reference")
        epochs = "–" if not r.get("best_epoch") else ", ".join(str(e) for e in r["best_epoch"])
        cells = [
            r["name"],
            *(_fmt(r[k], r.get(f"{k}_sd"), d) for k, d in CELLS),
            _fmt_delta(None if vs is None else vs["rho"]),
            _fmt_delta(None if vs is None else vs["exec_rho"]),
            epochs,
        ]
        lines.append("| " + " | ".join(cells) + " |")
    if any((r.get("vs_reference") or {}).get("exec_rho", {}).get("constant") for r in rows):
        lines += [
            "",
            "† this row's predicted / DD is the same for every dive (it ranks nothing): Δ against 0.",
        ]
    return "\n".join(lines) + "\n"
