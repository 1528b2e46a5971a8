"""Evaluation metrics (spec §11): Spearman ρ, L2, relative L2, tIoU and AIoU@θ.

All functions take array-likes (numpy, lists or CPU tensors) and return Python floats or dicts of them.

**Undefined values are NaN.** Spearman ρ is undefined when either side is constant (e.g. a model that
predicts the same score for every query): scipy returns NaN and so does :func:`spearman_rho`, without the
warning. It is not replaced by 0.0, because a constant predictor is not "uncorrelated" — it carries no
ranking at all — and a 0.0 would silently enter means over seeds. Callers must handle NaN: model
selection should treat a NaN ρ as worse than any number (see :func:`rho_for_selection`), and JSON writers
should write it as ``null``. Relative L2 is likewise NaN when all ground-truth scores are equal.
"""

from __future__ import annotations

import math
import warnings

import numpy as np
from scipy import stats

DEFAULT_THRESHOLDS = (0.5, 0.75)


def _np(values: object) -> np.ndarray:
    """float64 numpy array of an array-like or a (CPU or device) tensor."""
    if hasattr(values, "detach"):
        values = values.detach().cpu()
    return np.asarray(values, dtype=np.float64)


def _as_1d(name: str, values: object) -> np.ndarray:
    arr = _np(values)
    if arr.ndim != 1 or arr.size == 0:
        raise ValueError(f"{name}: expected a non-empty 1-D array, got shape {arr.shape}")
    return arr


def _pair(pred: object, true: object) -> tuple[np.ndarray, np.ndarray]:
    p, t = _as_1d("pred", pred), _as_1d("true", true)
    if p.shape != t.shape:
        raise ValueError(f"pred and true differ in shape: {p.shape} vs {t.shape}")
    if not (np.isfinite(p).all() and np.isfinite(t).all()):
        raise ValueError("pred/true contain NaN or inf")
    return p, t


def spearman_rho(pred: object, true: object) -> float:
    """Spearman rank correlation (scipy, average ranks for ties); NaN when either side is constant."""
    p, t = _pair(pred, true)
    if p.size < 2 or np.ptp(p) == 0 or np.ptp(t) == 0:
        return math.nan
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", stats.ConstantInputWarning)
        return float(stats.spearmanr(p, t).statistic)


def rho_for_selection(rho: float) -> float:
    """ρ for "higher is better" comparisons: NaN (undefined) ranks below every real value."""
    return -math.inf if math.isnan(rho) else rho


def l2(pred: object, true: object) -> float:
    """``mean((ŝ − s)²)`` in points²."""
    p, t = _pair(pred, true)
    return float(np.mean((p - t) ** 2))


def relative_l2(pred: object, true: object) -> float:
    """``mean(((ŝ − s) / (max s − min s))²)`` over the evaluated set (raw, not ×100).

    NaN when the ground truth ``s`` is constant.
    """
    p, t = _pair(pred, true)
    span = float(t.max() - t.min())
    if span == 0:
        return math.nan
    return float(np.mean(((p - t) / span) ** 2))


def score_metrics(pred: object, true: object) -> dict[str, float]:
    """``rho``, ``l2``, ``rl2`` (raw) and ``rl2_x100`` (as papers report it) for one evaluated set."""
    rl2 = relative_l2(pred, true)
    return {"rho": spearman_rho(pred, true), "l2": l2(pred, true), "rl2": rl2, "rl2_x100": 100.0 * rl2}


def tiou(pred: object, gt: object, *, eps: float = 1e-8) -> np.ndarray:
    """Temporal IoU of ``[ŝt, êd]`` and ``[st, ed]`` (spec §11.2), in sampled-frame units.

    ``inter = max(0, min(ed, êd) − max(st, ŝt))``; ``tIoU = inter / ((ed − st) + (êd − ŝt) − inter + ε)``.

    Shapes: ``pred (…, 2)`` broadcast against ``gt (…, 2)`` (e.g. ``(N, V, 2)`` voters vs ``(N, 1, 2)``)
    → float64 ``(…)``.
    """
    p = _np(pred)
    g = _np(gt)
    if p.shape[-1:] != (2,) or g.shape[-1:] != (2,):
        raise ValueError(f"tIoU: expected (..., 2) intervals, got shapes {p.shape} and {g.shape}")
    inter = np.maximum(0.0, np.minimum(g[..., 1], p[..., 1]) - np.maximum(g[..., 0], p[..., 0]))
    union = (g[..., 1] - g[..., 0]) + (p[..., 1] - p[..., 0]) - inter
    return inter / (union + eps)


def aiou(tious: object, thresholds: tuple[float, ...] = DEFAULT_THRESHOLDS) -> dict[float, float]:
    """AIoU@θ in %, per-query convention (a) of spec §11.2.

    Args:
        tious: ``(N,)`` one tIoU per query, or ``(N, V)`` one per (query, voter): averaged over voters
            first, then thresholded.
        thresholds: the θ values.

    Returns:
        ``{θ: 100 · fraction of queries with tIoU ≥ θ}``.
    """
    t = _np(tious)
    if t.ndim == 2:
        t = t.mean(axis=1)
    if t.ndim != 1 or t.size == 0:
        raise ValueError(f"AIoU: expected (N,) or (N, V) tIoUs, got shape {t.shape}")
    return {float(th): 100.0 * float(np.mean(t >= th)) for th in thresholds}


def segmentation_metrics(
    pred: object, gt: object, thresholds: tuple[float, ...] = DEFAULT_THRESHOLDS
) -> dict[str, float]:
    """``tiou`` (mean) and ``aiou_50``, ``aiou_75``, … (%) for queries' transitions.

    Args:
        pred: ``(N, 2)`` predicted ``(ŝt, êd)`` per query, or ``(N, V, 2)`` per (query, voter).
        gt: ``(N, 2)`` ground truth per query.
    """
    p = _np(pred)
    g = _np(gt)
    if g.ndim != 2 or g.shape[1] != 2 or p.shape[0] != g.shape[0] or p.ndim not in (2, 3):
        raise ValueError(
            f"segmentation metrics: expected pred (N, [V,] 2) and gt (N, 2), got {p.shape}, {g.shape}"
        )
    per = tiou(p, g[:, None, :] if p.ndim == 3 else g)  # (N,) or (N, V)
    per_query = per.mean(axis=1) if per.ndim == 2 else per
    out = {"tiou": float(per_query.mean())}
    for th, value in aiou(per_query, thresholds).items():
        out[f"aiou_{round(100 * th)}"] = value
    return out


def transition_errors(pred: object, gt: object) -> np.ndarray:
    """Absolute frame error per transition, ``|pred − gt|``: ``(N, 2)`` → float64 ``(N, 2)``."""
    p = _np(pred)
    g = _np(gt)
    if p.shape != g.shape or p.ndim != 2 or p.shape[1] != 2:
        raise ValueError(f"transition errors: expected two (N, 2) arrays, got {p.shape} and {g.shape}")
    return np.abs(p - g)
