"""Training and comparison runs on the pipeline's outputs, from ``params.yaml``: what the stages call.

The pipeline's folders become a :class:`~hpmcore.training.bank.FeatureBank` with
:func:`~hpmcore.training.bank.pipeline_bank`, which knows the feature sizes
(:class:`~hpmcore.training.bank.BankDims`); the model config is ``params.model`` with those sizes filled
in (:meth:`~hpmcore.training.bank.FeatureBank.fill`). Then

- :func:`train_run` trains the configured HP-MCoRe (``params.model``, ``params.train``, ``params.seed``;
  :func:`model_config`: on cached features, or end to end with the encoders) with checkpoints in
  ``<model_dir>/checkpoints`` (resumed when the configuration is the same, restarted when it is not)
  and returns the result with the JSON-safe history and summary the stage writes;
- :func:`compare_run` trains and evaluates HP-MCoRe, its ablations and the baselines on the same split
  (:func:`hpmcore.training.compare.run_comparison`).

Evaluation needs no run function: :func:`hpmcore.training.evaluate.evaluate_checkpoint` scores one
checkpoint on one split of the current data (the evaluate stage calls it on ``best.pt`` and the test
split). Nothing here writes the stage outputs; the stage scripts do, atomically. No output here carries
a timing (they go to logs and MLflow), so an unchanged result gives unchanged files.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from hpmcore.config import ConfigError, ModelConfig, Params, project_path
from hpmcore.extraction.cache import sha256_file
from hpmcore.models.checkpoints import CheckpointError
from hpmcore.models.end_to_end import EndToEndConfig, build_end_to_end
from hpmcore.models.hpmcore import build_hpmcore
from hpmcore.training.bank import FeatureBank, FeatureBankError
from hpmcore.training.checkpoints import CHECKPOINTS
from hpmcore.training.compare import Comparison, default_variants, run_comparison
from hpmcore.training.evaluate import json_safe
from hpmcore.training.frames import FrameBank
from hpmcore.training.protocol import PairModel
from hpmcore.training.train import TrainResult, train

__all__ = ["TrainRun", "build_model", "compare_run", "model_config", "train_run"]

log = logging.getLogger(__name__)

SPLASH_WEIGHT = 10.0
"""Weight of the splash-aware loss in the comparison's "+ splash-aware loss" row (splash sizes are in
[0, 1], so their MSE is ~100x smaller than the completeness MSE)."""


def model_config(params: Params, bank: FeatureBank) -> ModelConfig | EndToEndConfig:
    """The configured model: ``params.model`` with the bank's feature sizes (:meth:`FeatureBank.fill`);
    with ``train.mode: end_to_end`` an :class:`EndToEndConfig` whose encoders start as the features stage
    built them (:meth:`hpmcore.training.frames.FrameBank.model_config`).

    Raises:
        ConfigError: end-to-end mode without a frame bank, or a frame bank in cached mode.
    """
    if (params.train.mode == "end_to_end") != isinstance(bank, FrameBank):
        raise ConfigError(
            f"train.mode is {params.train.mode} but the bank is a {type(bank).__name__} "
            "(end_to_end: pipeline_frame_bank; cached: pipeline_bank)"
        )
    return bank.model_config(params.model)


def _start_weights(path: str | None, sha256: str, what: str, project_dir: Path) -> Path | None:
    """The features stage's weights file (``None``: random init), unchanged since it computed the
    features."""
    if path is None:
        return None
    resolved = project_path(path, project_dir)
    if not resolved.is_file():
        raise CheckpointError(f"features.{what}: checkpoint {resolved}: file does not exist")
    now = sha256_file(resolved)
    if now != sha256:
        raise CheckpointError(
            f"features.{what}: {resolved} is {now}, but the features were computed from {sha256}; "
            "rerun stage features"
        )
    return resolved


def build_model(params: Params, bank: FeatureBank, *, project_dir: Path = Path(".")) -> PairModel:
    """The model of :func:`model_config`, initialised from ``params.seed`` (heads) and, end to end, from
    the features stage's encoder weights (paths relative to ``project_dir``) or its ``init_seed``.

    Raises:
        CheckpointError: an encoder weights file is missing or changed since the features were computed.
    """
    config = model_config(params, bank)
    if isinstance(config, ModelConfig):
        return build_hpmcore(config, seed=params.seed)
    init = bank.encoders  # type: ignore[attr-defined]
    return build_end_to_end(
        config,
        i3d_weights=_start_weights(init.i3d_weights, init.i3d_weights_sha256, "i3d_weights", project_dir),
        static_weights=_start_weights(
            init.static_weights, init.static_weights_sha256, "static_weights", project_dir
        ),
        seed=params.seed,
    )


# ---------------------------------------------------------------------------------------------------------
# Training


@dataclass(frozen=True)
class TrainRun:
    """A training run and what the train stage writes from it."""

    result: TrainResult
    history: list[dict[str, Any]]
    """JSON-safe per-epoch metrics (``history.json``)."""
    summary: dict[str, Any]
    """JSON-safe ``train.json``: ``best_epoch``, ``best_val`` (its validation metrics), ``epochs``,
    ``train_videos``, ``val_videos``, ``skipped`` (``count`` and ``dives``: id, split, stage, reason of
    the train/val dives that failed in extraction and were left out), ``without_transitions`` (train
    and val dives without ground-truth transitions: no ``L_tas``, not in AIoU)."""


def train_run(
    bank: FeatureBank,
    params: Params,
    model_dir: Path,
    *,
    progress: bool = True,
    project_dir: Path = Path("."),
) -> TrainRun:
    """Train HP-MCoRe on the bank's train split, selecting on val (checkpoints in ``model_dir/checkpoints``):
    on cached features, or end to end on a :class:`~hpmcore.training.frames.FrameBank`
    (``train.mode``); under ``torchrun``, data parallel (:mod:`hpmcore.training.distributed`).

    A rerun with the same configuration resumes after the last complete epoch (or returns at once when
    training is complete); checkpoints of another configuration are replaced, with a warning.
    """
    result = train(
        build_model(params, bank, project_dir=project_dir),
        bank,
        params.train,
        seed=params.seed,
        checkpoint_dir=Path(model_dir) / CHECKPOINTS,
        restart_on_mismatch=True,
        progress=progress,
    )
    summary = {
        "best_epoch": result.best_epoch,
        "best_val": {k: v for k, v in (result.best_val or {}).items() if k not in ("draws", "info")},
        "epochs": params.train.epochs,
        "train_videos": len(bank.split_ids("train")),
        "val_videos": len(bank.split_ids("val")),
        "skipped": bank.skipped_report(("train", "val")),
        "without_transitions": {s: len(bank.without_transitions(s)) for s in ("train", "val")},
    }
    return TrainRun(result, json_safe(result.history), json_safe(summary))


# ---------------------------------------------------------------------------------------------------------
# Comparison


def compare_run(
    bank: FeatureBank, params: Params, work_dir: Path, *, split: str = "test", progress: bool = False
) -> Comparison:
    """HP-MCoRe, its ablations and the baselines, trained and evaluated alike on ``split`` on the cached
    features (whatever ``train.mode`` says); plus HP-MCoRe with the splash-aware loss when every train
    video has a splash size (synthetic data). Training seeds
    and the bootstrap from ``params.compare``.

    Checkpoints go to ``work_dir/<variant>/`` (a rerun resumes finished and unfinished variants).
    """
    if not bank.split_ids(split):
        raise FeatureBankError(f"no videos in the {split!r} split to compare on")
    model_cfg = bank.fill(params.model)
    variants = default_variants(model_cfg, bank.fill(params.core))
    train_ids = bank.split_ids("train")
    if not model_cfg.splash_head and all(bank.get(i).splash is not None for i in train_ids):
        # splash targets known (synthetic data): does the splash-aware loss (spec TL;DR) help?
        with_splash = replace(model_cfg, splash_head=True, splash_weight=SPLASH_WEIGHT)
        items = list(variants.items())
        variants = dict([*items[:1], ("+ splash-aware loss", with_splash), *items[1:]])
    return run_comparison(
        bank,
        variants,
        replace(params.train, mode="cached"),  # the comparison is on cached features
        params.eval,
        params.seed,
        seeds=params.compare.seeds,
        bootstrap=params.compare.bootstrap,
        confidence=params.compare.confidence,
        split=split,
        work_dir=Path(work_dir),
        restart_on_mismatch=True,
        progress=progress,
    )
