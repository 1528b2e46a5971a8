"""Baselines that predict from the annotation table alone (no video), scored with the same metrics as
the models (:mod:`hpmcore.training.compare` puts them in the table):

- **DD only** (:func:`dd_only`): ``ŝ_q = DD_q · mean_train(score / DD)`` — what the degree of
  difficulty alone predicts; a model of execution quality must beat it.
- **(a) Dive-number mean** (:func:`dive_number_mean`): predict the mean train score of the query's dive
  number; a dive number absent from train falls back to the global train mean.

Baseline (b), the CoRe-style pair regressor, is a model: :mod:`hpmcore.training.core_baseline`.
"""

from __future__ import annotations

import logging
from collections import defaultdict
from dataclasses import dataclass

import numpy as np

from hpmcore.training.bank import FeatureBank
from hpmcore.training.evaluate import Evaluation, evaluation_from_predictions

__all__ = ["DDOnly", "DiveNumberMean", "dd_only", "dive_number_mean"]

log = logging.getLogger(__name__)


# ---------------------------------------------------------------------------------------------------------
# Predictors from the annotation table alone


@dataclass(frozen=True)
class DDOnly:
    """The DD-only predictor as a comparison variant (no parameters)."""


@dataclass(frozen=True)
class DiveNumberMean:
    """Baseline (a) as a comparison variant (no parameters)."""


def _train_rows(bank: FeatureBank, split: str, name: str) -> tuple[list[dict], list[str]]:
    train_rows = [bank.label(i) for i in bank.split_ids("train")]
    if not train_rows:
        raise ValueError(f"{name}: the train split is empty")
    queries = bank.split_ids(split)
    if not queries:
        raise ValueError(f"{name}: split {split!r} is empty")
    return train_rows, queries


def dd_only(bank: FeatureBank, split: str = "test") -> Evaluation:
    """``ŝ_q = DD_q · mean over train of (score / DD)``: the degree of difficulty alone, no video.

    Uses only the annotation table. Same metrics and rows as
    :func:`~hpmcore.training.evaluate.evaluate_model` (one "draw"; no transitions, so no AIoU).

    Raises:
        ValueError: an empty train or evaluated split, or a DD that is not > 0.
    """
    train_rows, queries = _train_rows(bank, split, "DD only")
    labels = [*train_rows, *(bank.label(q) for q in queries)]
    bad = next((r for r in labels if not r["difficulty"] > 0), None)
    if bad is not None:
        raise ValueError(f"DD only: dive {bad['id']!r} has difficulty {bad['difficulty']}, not > 0")
    completeness = float(np.mean([r["final_score"] / r["difficulty"] for r in train_rows]))
    preds = np.array([[bank.label(q)["difficulty"] * completeness for q in queries]])
    info = {"baseline": "dd_only", "train_mean_score_per_dd": completeness}
    return evaluation_from_predictions(bank, split, queries, preds, None, info=info)


def dive_number_mean(bank: FeatureBank, split: str = "test") -> Evaluation:
    """Baseline (a): ``ŝ_q`` = mean train score of the query's dive number (global train mean if unseen).

    Uses only the annotation table (no features). Same metrics and rows as
    :func:`~hpmcore.training.evaluate.evaluate_model` (one "draw"; no transitions, so no AIoU).
    """
    train_rows, queries = _train_rows(bank, split, "dive-number mean")
    by_dn: dict[str, list[float]] = defaultdict(list)
    for r in train_rows:
        by_dn[r["dive_number"]].append(r["final_score"])
    global_mean = float(np.mean([r["final_score"] for r in train_rows]))
    means = {dn: float(np.mean(v)) for dn, v in by_dn.items()}
    preds = np.array([[means.get(bank.label(q)["dive_number"], global_mean) for q in queries]])
    unseen = sum(bank.label(q)["dive_number"] not in means for q in queries)
    info = {"baseline": "dive_number_mean", "unseen_dive_numbers": unseen, "global_train_mean": global_mean}
    return evaluation_from_predictions(bank, split, queries, preds, None, info=info)
