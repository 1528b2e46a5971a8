"""Metrics (spec §11) against hand-computed values, including ties and degenerate inputs."""

from __future__ import annotations

import math
import warnings

import numpy as np
import pytest
import torch

from hpmcore.training.metrics import (
    aiou,
    l2,
    relative_l2,
    rho_for_selection,
    score_metrics,
    segmentation_metrics,
    spearman_rho,
    tiou,
    transition_errors,
)


def test_spearman_rho_by_hand() -> None:
    # Ranks differ by d = (0, 1, 1, 0): ρ = 1 − 6·Σd² / (n(n² − 1)) = 1 − 12/60.
    assert spearman_rho([1.0, 2.0, 3.0, 4.0], [1.0, 3.0, 2.0, 4.0]) == pytest.approx(0.8)
    assert spearman_rho([10, 20, 30], [3, 2, 1]) == pytest.approx(-1.0)
    assert spearman_rho(torch.tensor([0.1, 0.5, 0.2]), np.array([1.0, 9.0, 2.0])) == pytest.approx(1.0)


def test_spearman_rho_with_ties_uses_average_ranks() -> None:
    # pred ranks (1, 2.5, 2.5, 4), true ranks (1, 2, 3, 4); Pearson of the ranks:
    # deviations (−1.5, 0, 0, 1.5) and (−1.5, −0.5, 0.5, 1.5): 4.5 / √(4.5 · 5).
    assert spearman_rho([1.0, 2.0, 2.0, 3.0], [1.0, 2.0, 3.0, 4.0]) == pytest.approx(4.5 / math.sqrt(22.5))


def test_spearman_rho_of_a_constant_prediction_is_nan_without_warning() -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        rho = spearman_rho([50.0, 50.0, 50.0], [1.0, 2.0, 3.0])
    assert math.isnan(rho)
    assert rho_for_selection(rho) == -math.inf and rho_for_selection(0.3) == 0.3
    metrics = score_metrics([50.0, 50.0, 50.0], [40.0, 50.0, 60.0])
    assert math.isnan(metrics["rho"])
    assert metrics["l2"] == pytest.approx(200 / 3)  # errors 10, 0, −10


def test_l2_and_relative_l2_by_hand() -> None:
    pred, true = [10.0, 20.0, 30.0], [12.0, 18.0, 36.0]  # errors −2, 2, −6; range 24
    assert l2(pred, true) == pytest.approx(44 / 3)
    assert relative_l2(pred, true) == pytest.approx((44 / 3) / 24**2)
    m = score_metrics(pred, true)
    assert m["rl2_x100"] == pytest.approx(100 * (44 / 3) / 576)
    assert m["rl2"] == pytest.approx(m["rl2_x100"] / 100)
    assert math.isnan(relative_l2([1.0, 2.0], [5.0, 5.0]))  # constant ground truth: undefined


def test_score_metric_input_errors() -> None:
    with pytest.raises(ValueError, match="differ in shape"):
        l2([1.0, 2.0], [1.0])
    with pytest.raises(ValueError, match="NaN"):
        spearman_rho([1.0, float("nan")], [1.0, 2.0])
    with pytest.raises(ValueError, match="non-empty"):
        l2([], [])


def test_tiou_by_hand() -> None:
    gt = np.array([[10, 50], [10, 50], [10, 50], [0, 20]])
    pred = np.array([[20, 60], [60, 80], [10, 50], [10, 30]])
    # inter 30 / union (40 + 40 − 30); disjoint → 0; identical → 1 (up to ε); 10 / 30.
    np.testing.assert_allclose(tiou(pred, gt), [0.6, 0.0, 1.0, 1 / 3], atol=1e-7)


def test_aiou_per_query_convention() -> None:
    assert aiou([0.9, 0.6, 0.8, 0.4]) == {0.5: 75.0, 0.75: 50.0}
    # Convention (a): average the voters of each query first: means (0.7, 0.55) → both ≥ 0.5, none ≥ 0.75.
    # (Convention (b) would count 3/4 and 1/4 of the (query, voter) pairs.)
    assert aiou([[0.8, 0.6], [0.4, 0.7]]) == {0.5: 100.0, 0.75: 0.0}


def test_segmentation_metrics_with_and_without_voters() -> None:
    gt = np.array([[10, 50], [0, 20]])
    pred = np.array([[20, 60], [0, 20]])  # tIoU 0.6 and 1
    m = segmentation_metrics(pred, gt)
    assert m["tiou"] == pytest.approx(0.8, abs=1e-7)
    assert m["aiou_50"] == 100.0 and m["aiou_75"] == 50.0
    voters = np.stack([pred, np.array([[10, 50], [10, 30]])], axis=1)  # (2 queries, 2 voters, 2)
    m = segmentation_metrics(voters, gt)  # per-query means (0.8, 2/3)
    assert m["tiou"] == pytest.approx((0.8 + 2 / 3) / 2, abs=1e-7)
    assert m["aiou_50"] == 100.0 and m["aiou_75"] == 50.0
    np.testing.assert_array_equal(transition_errors(pred, gt), [[10, 10], [0, 0]])
