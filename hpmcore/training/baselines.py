"""Baselines and ablations, trained and evaluated by the same code as HP-MCoRe, for comparison tables.

- **(a) Dive-number mean** (:func:`dive_number_mean`): predict the mean train score of the query's dive
  number; a dive number absent from train falls back to the global train mean.
- **(b) CoRe-style single-stage contrastive regression** (:class:`CoReBaseline`): an MLP on
  ``[mean-pooled I3D of the query ; of the exemplar]`` → Δ, trained with the bidirectional score MSE on
  the same pairs as HP-MCoRe (:func:`hpmcore.training.train.train`) and evaluated with the same voters
  (:func:`hpmcore.training.evaluate.evaluate_model`) — no segmentation, no pose, no static branch.
- **(c) Ablations of HP-MCoRe** are :class:`~hpmcore.models.hpmcore.ModelConfig` switches
  (``use_skeleton``, ``use_static``, ``use_segmentation``, ``contrastive_weight``);
  :func:`default_variants` lists them.

:func:`run_comparison` trains and evaluates every variant on the same split with the same seed (so the
same training pairs and the same test voters) and returns one table (rows + Markdown).
"""

from __future__ import annotations

import logging
import re
import tempfile
import time
from collections import defaultdict
from collections.abc import Callable, Mapping
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from hpmcore.config import CoReConfig, ModelConfig, TrainConfig
from hpmcore.models.hpmcore import VideoInputs, build_hpmcore
from hpmcore.models.normalize import FeatureStandardizer
from hpmcore.training.evaluate import (
    EvalConfig,
    Evaluation,
    FeatureBank,
    InputSpec,
    evaluate_model,
    evaluation_from_predictions,
)
from hpmcore.training.losses import LossTerms, score_loss
from hpmcore.training.train import train

__all__ = [
    "CoReBaseline",
    "CoReConfig",
    "CoReOutput",
    "DiveNumberMean",
    "PooledEncoding",
    "Variant",
    "build_core_baseline",
    "comparison_markdown",
    "default_variants",
    "dive_number_mean",
    "run_comparison",
]

log = logging.getLogger(__name__)


# ---------------------------------------------------------------------------------------------------------
# (a) Train mean per dive number


@dataclass(frozen=True)
class DiveNumberMean:
    """Baseline (a) as a comparison variant (no parameters)."""


def dive_number_mean(bank: FeatureBank, split: str = "test") -> Evaluation:
    """Baseline (a): ``ŝ_q`` = mean train score of the query's dive number (global train mean if unseen).

    Uses only the annotation table (no features). Same metrics and rows as
    :func:`~hpmcore.training.evaluate.evaluate_model` (one "draw"; no transitions, so no AIoU).
    """
    train_rows = [bank.label(i) for i in bank.split_ids("train")]
    if not train_rows:
        raise ValueError("dive-number mean: the train split is empty")
    by_dn: dict[str, list[float]] = defaultdict(list)
    for r in train_rows:
        by_dn[r["dive_number"]].append(r["final_score"])
    global_mean = float(np.mean([r["final_score"] for r in train_rows]))
    means = {dn: float(np.mean(v)) for dn, v in by_dn.items()}
    queries = bank.split_ids(split)
    if not queries:
        raise ValueError(f"dive-number mean: split {split!r} is empty")
    preds = np.array([[means.get(bank.label(q)["dive_number"], global_mean) for q in queries]])
    unseen = sum(bank.label(q)["dive_number"] not in means for q in queries)
    info = {"baseline": "dive_number_mean", "unseen_dive_numbers": unseen, "global_train_mean": global_mean}
    return evaluation_from_predictions(bank, split, queries, preds, None, info=info)


# ---------------------------------------------------------------------------------------------------------
# (b) CoRe-style single-stage contrastive regression on I3D features


@dataclass(frozen=True)
class PooledEncoding:
    """Per-video encoding of the baseline: mean-pooled I3D features ``(N, C)``."""

    features: torch.Tensor

    def __len__(self) -> int:
        return self.features.shape[0]

    def select(self, index: torch.Tensor | list[int] | slice) -> PooledEncoding:
        """Rows ``index``."""
        if isinstance(index, list):
            index = torch.tensor(index, dtype=torch.long, device=self.features.device)
        return PooledEncoding(self.features[index])

    @staticmethod
    def cat(parts: list[PooledEncoding]) -> PooledEncoding:
        """Concatenate along the video axis."""
        return PooledEncoding(torch.cat([p.features for p in parts]))


@dataclass(frozen=True)
class CoReOutput:
    """Δ of B pairs in both directions."""

    delta_qe: torch.Tensor
    """``(B,)`` predicted ``s_q − s_e``."""
    delta_eq: torch.Tensor
    """``(B,)`` predicted ``s_e − s_q``."""


class CoReBaseline(nn.Module):
    """Baseline (b): ``Δ^{qe} = MLP([mean_j I3D_q ; mean_j I3D_e])`` (no segmentation, pose or static branch).

    Implements the pair-model interface of :mod:`hpmcore.training.train` and :mod:`hpmcore.training.evaluate`
    (``encode``, ``forward_pair``, ``forward``, ``parameter_groups``, ``input_spec``, ``pair_loss``).
    """

    def __init__(self, config: CoReConfig | None = None) -> None:
        super().__init__()
        cfg = config or CoReConfig()
        cfg.validate()
        self.config = cfg
        self.input_norm = FeatureStandardizer(cfg.i3d_dim) if cfg.input_norm else None
        self.regressor = nn.Sequential(
            nn.Linear(2 * cfg.i3d_dim, cfg.hidden),
            nn.ReLU(),
            nn.Dropout(cfg.dropout),
            nn.Linear(cfg.hidden, cfg.hidden),
            nn.ReLU(),
            nn.Dropout(cfg.dropout),
            nn.Linear(cfg.hidden, 1),
        )

    def encode(self, videos: VideoInputs, *, use_gt: bool | torch.Tensor | None = None) -> PooledEncoding:
        """``i3d (N, J, C)`` → ``PooledEncoding((N, C))`` (``use_gt`` is ignored: no segmentation)."""
        i3d = videos.i3d
        if i3d.dim() != 3 or i3d.shape[2] != self.config.i3d_dim:
            raise ValueError(f"i3d features: expected (N, J, {self.config.i3d_dim}), got {tuple(i3d.shape)}")
        if self.input_norm is not None:
            i3d = self.input_norm(i3d)
        return PooledEncoding(i3d.mean(dim=1))  # (N, C)

    def forward_pair(self, query: PooledEncoding, exemplar: PooledEncoding) -> CoReOutput:
        """Both directions of B pairs: ``(B, C)`` each → Δ ``(B,)`` each."""
        if len(query) != len(exemplar):
            raise ValueError(f"pair heads: {len(query)} queries vs {len(exemplar)} exemplars")
        q, e = query.features, exemplar.features
        x = torch.cat([torch.cat([q, e], dim=1), torch.cat([e, q], dim=1)])  # (2B, 2C)
        delta = self.regressor(x)[:, 0]  # (2B,)
        b = len(query)
        return CoReOutput(delta_qe=delta[:b], delta_eq=delta[b:])

    def forward(self, query: VideoInputs, exemplar: VideoInputs) -> CoReOutput:
        """B (query, exemplar) pairs of cached features → :class:`CoReOutput`."""
        return self.forward_pair(self.encode(query), self.encode(exemplar))

    def fit_input_norm(self, videos: VideoInputs) -> None:
        """Set the I3D standardisation from the training videos' ``i3d (N, J, C)`` (no-op when off)."""
        if self.input_norm is not None:
            self.input_norm.fit(videos.i3d)

    def parameter_groups(self) -> dict[str, list[nn.Parameter]]:
        """One named group."""
        return {"regressor": list(self.regressor.parameters())}

    def input_spec(self, role: str) -> InputSpec:
        """Only the I3D features, in every role."""
        return InputSpec(i3d_dim=self.config.i3d_dim)

    def pair_loss(self, out: CoReOutput, *, score_q: torch.Tensor, score_e: torch.Tensor) -> LossTerms:
        """The bidirectional score MSE (spec §8.1), the only term."""
        aqa = score_loss(out.delta_qe, out.delta_eq, score_q, score_e)
        return LossTerms(total=aqa, aqa=aqa)


def build_core_baseline(config: CoReConfig | None = None, *, seed: int = 0) -> CoReBaseline:
    """Build :class:`CoReBaseline` with a seeded initialisation (the global RNG state is left untouched)."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return CoReBaseline(config)


# ---------------------------------------------------------------------------------------------------------
# Comparison of variants

Variant = ModelConfig | CoReConfig | DiveNumberMean
"""A comparison entry: an HP-MCoRe config (incl. ablations), the CoRe baseline, or the dive-number mean."""


def default_variants(
    model_cfg: ModelConfig | None = None, core_cfg: CoReConfig | None = None
) -> dict[str, Variant]:
    """HP-MCoRe, its four ablations (§ issue 4 (c)) and baselines (a), (b), keyed by table name.

    The CoRe baseline gets ``model_cfg.i3d_dim`` unless ``core_cfg`` is given.
    """
    cfg = model_cfg or ModelConfig()
    return {
        "HP-MCoRe": cfg,
        "w/o skeleton": replace(cfg, use_skeleton=False),
        "w/o static branch": replace(cfg, use_static=False),
        "w/o segmentation (thirds)": replace(cfg, use_segmentation=False),
        "w/o contrastive loss": replace(cfg, contrastive_weight=0.0),
        "CoRe-style (I3D only)": core_cfg or CoReConfig(i3d_dim=cfg.i3d_dim),
        "dive-number mean": DiveNumberMean(),
    }


def _slug(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9]+", "-", name).strip("-").lower() or "variant"


def _build(variant: Variant, seed: int) -> nn.Module:
    if isinstance(variant, ModelConfig):
        return build_hpmcore(variant, seed=seed)
    if isinstance(variant, CoReConfig):
        return build_core_baseline(variant, seed=seed)
    raise TypeError(f"cannot build a model for variant {variant!r}")


def _kind(variant: Variant) -> str:
    if isinstance(variant, ModelConfig):
        return "hpmcore"
    if isinstance(variant, CoReConfig):
        return "core"
    if isinstance(variant, DiveNumberMean):
        return "dive_number_mean"
    raise TypeError(f"unknown variant type {type(variant).__name__}")


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
) -> tuple[list[dict[str, Any]], str]:
    """Train (train split, val selection) and evaluate (``split``, one checkpoint each) every variant.

    Every variant sees the same seed: the same initial seeding, training pairs, validation voters and
    evaluation voters. Checkpoints go to ``work_dir/<variant slug>/`` (a temporary folder when ``None``),
    so a rerun with a ``work_dir`` resumes or reuses finished variants (checkpoints of another
    configuration there are an error, or replaced with ``restart_on_mismatch``).

    Returns:
        ``(rows, markdown)``: one JSON-safe row per variant (``name``, ``kind``, ``rho``, ``rho_std``,
        ``l2``, ``rl2_x100``, ``rl2_x100_std``, ``tiou``, ``aiou_50``, ``aiou_75``, ``best_epoch``,
        ``train_seconds``, ``num_params``, ``metrics``) and the Markdown table of :func:`comparison_markdown`.
    """
    for name, variant in variants.items():
        _kind(variant)  # fail before training anything
        if not name:
            raise ValueError("variant names must be non-empty")
    slugs = [_slug(n) for n in variants]
    if len(set(slugs)) != len(slugs):
        raise ValueError(f"variant names collide as folder names: {list(variants)}")
    rows = []
    with tempfile.TemporaryDirectory(prefix="hpmcore-compare-") as tmp:
        root = Path(work_dir) if work_dir is not None else Path(tmp)
        for name, variant in variants.items():
            log.info("comparison: %s", name)
            t0 = time.perf_counter()
            best_epoch, num_params, seconds = None, 0, 0.0
            if isinstance(variant, DiveNumberMean):
                ev = dive_number_mean(bank, split)
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
                best_epoch, seconds = result.best_epoch, result.train_seconds
                ev = evaluate_model(model, bank, split, eval_cfg, seed=seed, progress=progress)
            m = ev.metrics
            rows.append(
                {
                    "name": name,
                    "kind": _kind(variant),
                    **{
                        k: m.get(k)
                        for k in (
                            "rho",
                            "rho_std",
                            "l2",
                            "rl2_x100",
                            "rl2_x100_std",
                            "tiou",
                            "aiou_50",
                            "aiou_75",
                        )
                    },
                    "best_epoch": best_epoch,
                    "train_seconds": round(seconds, 2),
                    "seconds": round(time.perf_counter() - t0, 2),
                    "num_params": num_params,
                    "metrics": m,
                }
            )
    return rows, comparison_markdown(rows, split=split)


def _fmt(value: Any, digits: int) -> str:
    return "–" if value is None else f"{value:.{digits}f}"


def comparison_markdown(rows: list[dict[str, Any]], *, split: str = "test") -> str:
    """A Markdown table: variant, ρ mean ± std over voter draws, RL2×100, AIoU@0.5/0.75 (%), train seconds."""
    lines = [
        f"| variant ({split}) | ρ | RL2 ×100 | AIoU@0.5 | AIoU@0.75 | best epoch | train s |",
        "|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        rho = _fmt(r["rho"], 4) + ("" if r.get("rho_std") is None else f" ± {r['rho_std']:.4f}")
        lines.append(
            f"| {r['name']} | {rho} | {_fmt(r['rl2_x100'], 3)} | {_fmt(r['aiou_50'], 2)} | "
            f"{_fmt(r['aiou_75'], 2)} | {'–' if r['best_epoch'] is None else r['best_epoch']} | "
            f"{r['train_seconds']:.1f} |"
        )
    return "\n".join(lines) + "\n"
