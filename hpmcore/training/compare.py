"""The comparison table: HP-MCoRe, its ablations and the baselines, trained and evaluated alike.

- **Ablations of HP-MCoRe** are :class:`~hpmcore.config.ModelConfig` switches (``use_skeleton``,
  ``use_static``, ``use_segmentation``, ``contrastive_weight``); **baselines** are the CoRe-style pair
  regressor (:class:`~hpmcore.training.core_baseline.CoReBaseline`), the dive-number mean and the DD-only
  predictor (:mod:`hpmcore.training.baselines`). :func:`default_variants` lists them.
- :func:`run_comparison` trains every trainable variant with the same seed (so the same initial
  seeding, training pairs and validation voters), selects each on validation and evaluates each once
  on the same split with the same voters; it returns one table (rows + Markdown). Timings are returned
  apart (:attr:`Comparison.seconds`): they change from run to run, so they stay out of the table that
  DVC tracks.
"""

from __future__ import annotations

import logging
import re
import tempfile
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from hpmcore.config import CoReConfig, EvalConfig, ModelConfig, TrainConfig
from hpmcore.models.hpmcore import build_hpmcore
from hpmcore.training.bank import FeatureBank
from hpmcore.training.baselines import DDOnly, DiveNumberMean, dd_only, dive_number_mean
from hpmcore.training.core_baseline import build_core_baseline
from hpmcore.training.evaluate import evaluate_model
from hpmcore.training.protocol import PairModel
from hpmcore.training.train import train

__all__ = ["Comparison", "Variant", "comparison_markdown", "default_variants", "run_comparison"]

log = logging.getLogger(__name__)

Variant = ModelConfig | CoReConfig | DiveNumberMean | DDOnly
"""A comparison entry: an HP-MCoRe config (incl. ablations), the CoRe baseline, the dive-number mean or
the DD-only predictor."""

ROW_METRICS = ("rho", "rho_std", "l2", "rl2_x100", "rl2_x100_std", "tiou", "aiou_50", "aiou_75")


def default_variants(model_cfg: ModelConfig, core_cfg: CoReConfig | None = None) -> dict[str, Variant]:
    """HP-MCoRe, its four ablations and the baselines, keyed by table name.

    The CoRe baseline gets ``model_cfg.i3d_dim`` unless ``core_cfg`` is given.
    """
    return {
        "HP-MCoRe": model_cfg,
        "w/o skeleton": replace(model_cfg, use_skeleton=False),
        "w/o static branch": replace(model_cfg, use_static=False),
        "w/o segmentation (thirds)": replace(model_cfg, use_segmentation=False),
        "w/o contrastive loss": replace(model_cfg, contrastive_weight=0.0),
        "CoRe-style (I3D only)": core_cfg or CoReConfig(i3d_dim=model_cfg.i3d_dim),
        "dive-number mean": DiveNumberMean(),
        "DD only": DDOnly(),
    }


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


@dataclass(frozen=True)
class Comparison:
    """The table and, apart from it, how long each variant took."""

    rows: list[dict[str, Any]]
    """One JSON-safe row per variant: ``name``, ``kind``, ``rho``, ``rho_std``, ``l2``, ``rl2_x100``,
    ``rl2_x100_std``, ``tiou``, ``aiou_50``, ``aiou_75``, ``best_epoch``, ``num_params``, ``metrics``."""
    markdown: str
    """:func:`comparison_markdown` of the rows."""
    seconds: dict[str, dict[str, float]]
    """Per variant name: ``train`` (the epochs this run trained) and ``total`` wall seconds."""


def run_comparison(
    bank: FeatureBank,
    variants: Mapping[str, Variant],
    train_cfg: TrainConfig,
    eval_cfg: EvalConfig,
    seed: int,
    *,
    split: str = "test",
    work_dir: Path | None = None,
    restart_on_mismatch: bool = False,
    progress: bool = False,
    on_epoch: Callable[[str, int, dict[str, float]], None] | None = None,
) -> Comparison:
    """Train (train split, val selection) and evaluate (``split``, one checkpoint each) every variant.

    Every variant sees the same seed: the same initial seeding, training pairs, validation voters and
    evaluation voters. Checkpoints go to ``work_dir/<variant slug>/`` (a temporary folder when ``None``),
    so a rerun with a ``work_dir`` resumes or reuses finished variants (checkpoints of another
    configuration there are an error, or replaced with ``restart_on_mismatch``).
    """
    for name, variant in variants.items():
        _kind(variant)  # fail before training anything
        if not name:
            raise ValueError("variant names must be non-empty")
    slugs = [_slug(n) for n in variants]
    if len(set(slugs)) != len(slugs):
        raise ValueError(f"variant names collide as folder names: {list(variants)}")
    rows, seconds = [], {}
    with tempfile.TemporaryDirectory(prefix="hpmcore-compare-") as tmp:
        root = Path(work_dir) if work_dir is not None else Path(tmp)
        for name, variant in variants.items():
            log.info("comparison: %s", name)
            t0 = time.perf_counter()
            best_epoch, num_params, train_seconds = None, 0, 0.0
            if isinstance(variant, DiveNumberMean):
                ev = dive_number_mean(bank, split)
            elif isinstance(variant, DDOnly):
                ev = dd_only(bank, split)
            else:
                model = _build(variant, seed)
                num_params = sum(p.numel() for p in model.parameters())
                callback = None if on_epoch is None else (lambda e, m, _n=name: on_epoch(_n, e, m))
                result = train(
                    model,
                    bank,
                    train_cfg,
                    seed=seed,
                    checkpoint_dir=root / _slug(name),
                    on_epoch=callback,
                    restart_on_mismatch=restart_on_mismatch,
                    progress=progress,
                )
                best_epoch, train_seconds = result.best_epoch, result.train_seconds
                ev = evaluate_model(
                    model, bank, split, eval_cfg, seed=seed, dd_mode=train_cfg.dd_mode, progress=progress
                )
            m = ev.metrics
            rows.append(
                {
                    "name": name,
                    "kind": _kind(variant),
                    **{k: m.get(k) for k in ROW_METRICS},
                    "best_epoch": best_epoch,
                    "num_params": num_params,
                    "metrics": m,
                }
            )
            seconds[name] = {"train": round(train_seconds, 2), "total": round(time.perf_counter() - t0, 2)}
    return Comparison(rows, comparison_markdown(rows, split=split), seconds)


def _fmt(value: Any, digits: int) -> str:
    return "–" if value is None else f"{value:.{digits}f}"


def comparison_markdown(rows: list[dict[str, Any]], *, split: str = "test") -> str:
    """A Markdown table: variant, ρ mean ± std over voter draws, RL2×100, AIoU@0.5/0.75 (%), best epoch."""
    lines = [
        f"| variant ({split}) | ρ | RL2 ×100 | AIoU@0.5 | AIoU@0.75 | best epoch |",
        "|---|---|---|---|---|---|",
    ]
    for r in rows:
        rho = _fmt(r["rho"], 4) + ("" if r.get("rho_std") is None else f" ± {r['rho_std']:.4f}")
        lines.append(
            f"| {r['name']} | {rho} | {_fmt(r['rl2_x100'], 3)} | {_fmt(r['aiou_50'], 2)} | "
            f"{_fmt(r['aiou_75'], 2)} | {'–' if r['best_epoch'] is None else r['best_epoch']} |"
        )
    return "\n".join(lines) + "\n"
