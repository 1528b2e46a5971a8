"""Training, evaluation and comparison runs on the pipeline's outputs: what the stages call.

The pipeline's folders (``data/prepared``, ``data/decoded``, ``data/pose``, ``data/features``) become a
:class:`~hpmcore.training.evaluate.FeatureBank` with :func:`pipeline_bank`; then

- :func:`train_run` trains the configured HP-MCoRe (``params.model``, ``params.train``, ``params.seed``)
  with checkpoints in ``<model_dir>/checkpoints`` (resumed when the configuration is the same, restarted
  when it is not), and returns the result with the per-epoch history;
- :func:`evaluate_run` loads ``best.pt`` and evaluates the test split once (``params.eval``), returning
  the metrics (no timings, so the same checkpoint and seed give an identical file), per-query rows for
  the predicted-vs-true plot and per-query transition errors;
- :func:`compare_run` trains and evaluates HP-MCoRe, its ablations and the baselines on the same split
  (:func:`hpmcore.training.baselines.run_comparison`).

Nothing here writes the stage outputs; the stage scripts do, atomically.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import pyarrow as pa

from hpmcore.config import ConfigError, Params
from hpmcore.data.canonical import DatasetError, read_annotations
from hpmcore.extraction.cache import MANIFEST, read_manifest
from hpmcore.extraction.decode import DECODE_MANIFEST_SCHEMA
from hpmcore.extraction.pose.table import SKELETONS
from hpmcore.io import read_parquet
from hpmcore.models.hpmcore import HPMCoRe, build_hpmcore
from hpmcore.training.baselines import default_variants, run_comparison
from hpmcore.training.evaluate import Evaluation, FeatureBank, FeatureBankError, evaluate_model, json_safe
from hpmcore.training.train import BEST, TrainResult, load_checkpoint, load_feature_bank, train

__all__ = [
    "CHECKPOINTS",
    "EvalReport",
    "build_model",
    "check_run_params",
    "compare_run",
    "evaluate_run",
    "pipeline_bank",
    "train_run",
]

log = logging.getLogger(__name__)

CHECKPOINTS = "checkpoints"
"""Sub-folder of the train stage's output with ``last.pt`` and ``best.pt``."""
SPLASH_WEIGHT = 10.0
"""Weight of the splash-aware loss in the comparison's "+ splash-aware loss" row (splash sizes are in
[0, 1], so their MSE is ~100x smaller than the completeness MSE)."""
LATENTS = "latents.parquet"
"""The synthetic generator's latent factors (``splash`` feeds the splash-aware loss when present)."""


def check_run_params(params: Params) -> None:
    """Reject combinations the sections cannot express alone.

    Raises:
        ConfigError: ``model.num_frames`` / ``model.clip_stride`` differ from the decode / features
            stages' ``num_frames`` / ``clip_stride``, or ``eval.dd_mode`` differs from ``train.dd_mode``
            (a model trained on completeness must be evaluated on completeness).
    """
    if params.model.num_frames != params.decode.num_frames:
        raise ConfigError(
            f"model.num_frames ({params.model.num_frames}) must equal decode.num_frames "
            f"({params.decode.num_frames})"
        )
    if params.model.clip_stride != params.features.clip_stride:
        raise ConfigError(
            f"model.clip_stride ({params.model.clip_stride}) must equal features.clip_stride "
            f"({params.features.clip_stride})"
        )
    if params.eval.dd_mode != params.train.dd_mode:
        raise ConfigError(
            f"eval.dd_mode ({params.eval.dd_mode}) must equal train.dd_mode ({params.train.dd_mode})"
        )


def pipeline_bank(
    dives_path: Path,
    decoded_dir: Path,
    features_dir: Path,
    pose_dir: Path | None,
    *,
    data_root: Path | None = None,
    drop_missing: bool = False,
) -> FeatureBank:
    """The feature bank of the pipeline's outputs (see :func:`hpmcore.training.train.load_feature_bank`).

    Args:
        dives_path: ``prepare``'s ``dives.parquet`` (annotations and splits).
        decoded_dir: ``decode``'s folder (its manifest maps the sampled frames).
        features_dir: ``features``' folder.
        pose_dir: ``pose``'s folder (``skeletons.parquet``), or ``None`` for no pose.
        data_root: the dataset root; its ``latents.parquet`` (synthetic data) gives each dive's splash
            size for the splash-aware loss, when the file exists.
        drop_missing: leave out dives without features/pose (after ``on_error: skip`` upstream).

    Raises:
        DatasetError / FeatureBankError: a missing, unreadable or invalid dive table or skeleton table,
            or a dive without features/pose, naming the file and the dive.
        ManifestError: a missing or malformed decode or features manifest (named).
    """
    dives = read_annotations(Path(dives_path))
    decode_manifest = read_manifest(Path(decoded_dir) / MANIFEST, DECODE_MANIFEST_SCHEMA)
    skeletons = None
    if pose_dir is not None:
        skeletons = read_parquet(
            Path(pose_dir) / SKELETONS, DatasetError, "skeleton table not found (run stage pose)"
        )
    bank = load_feature_bank(
        dives,
        Path(features_dir),
        decode_manifest=decode_manifest,
        skeletons=skeletons,
        drop_missing=drop_missing,
    )
    latents_path = None if data_root is None else Path(data_root) / LATENTS
    if latents_path is not None and latents_path.is_file():
        latents = read_parquet(latents_path, DatasetError, "latent table not found")
        splash = dict(
            zip(latents.column("id").to_pylist(), latents.column("splash").to_pylist(), strict=True)
        )
        videos = {
            vid: replace(v, splash=float(splash[vid])) if vid in splash else v
            for vid, v in bank.videos.items()
        }
        bank = FeatureBank(videos, bank.table)
    return bank


def build_model(params: Params) -> HPMCoRe:
    """HP-MCoRe of ``params.model``, initialised from ``params.seed``."""
    return build_hpmcore(params.model, seed=params.seed)


def train_run(bank: FeatureBank, params: Params, model_dir: Path, *, progress: bool = True) -> TrainResult:
    """Train HP-MCoRe on the bank's train split, selecting on val (checkpoints in ``model_dir/checkpoints``).

    A rerun with the same configuration resumes after the last complete epoch (or returns at once when
    training is complete); checkpoints of another configuration are replaced, with a warning.
    """
    check_run_params(params)
    model = build_model(params)
    return train(
        model,
        bank,
        params.train,
        seed=params.seed,
        checkpoint_dir=Path(model_dir) / CHECKPOINTS,
        restart_on_mismatch=True,
        progress=progress,
    )


@dataclass(frozen=True)
class EvalReport:
    """The test evaluation of one checkpoint: what the evaluate stage writes."""

    metrics: dict[str, Any]
    """JSON-safe metrics (ρ, L2, RL2, RL2×100 with std over voter draws, tIoU, AIoU@0.5/0.75), the
    checkpoint's epoch and validation ρ; no timings."""
    predictions: pa.Table
    """One row per query: ``id, dive_number, difficulty, true_score, predicted_score, predicted_std`` (the
    mean and std over voter draws)."""
    transitions: pa.Table
    """One row per query with ground truth: ``id, takeoff_error, entry_error`` (predicted − true, in
    sampled frames) and ``tiou``."""
    evaluation: Evaluation


def evaluate_run(
    bank: FeatureBank, params: Params, model_dir: Path, *, split: str = "test", progress: bool = True
) -> EvalReport:
    """Evaluate ``model_dir/checkpoints/best.pt`` on ``split`` once (``params.eval``, ``params.seed``).

    Raises:
        CheckpointError: ``best.pt`` missing, unreadable or written for another model configuration.
        DatasetError / FeatureBankError: a query or exemplar missing or with bad features (named), a
            query whose dive number has no exemplar in the train pool (named).
    """
    check_run_params(params)
    if not bank.split_ids(split):
        raise DatasetError(f"no videos in the {split!r} split to evaluate")
    model = build_model(params)
    meta = load_checkpoint(Path(model_dir) / CHECKPOINTS / BEST, model)
    ev = evaluate_model(model, bank, split, params.eval, seed=params.seed, progress=progress)
    val = meta.get("val") or {}
    metrics = json_safe(
        {
            **{k: v for k, v in ev.metrics.items() if k not in ("draws", "info")},
            "checkpoint_epoch": meta.get("epoch"),
            "checkpoint_val_rho": val.get("rho"),
            "voters": ev.metrics.get("info", {}),
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
        schema=pa.schema(
            [
                ("id", pa.string()),
                ("dive_number", pa.string()),
                ("difficulty", pa.float64()),
                ("true_score", pa.float64()),
                ("predicted_score", pa.float64()),
                ("predicted_std", pa.float64()),
            ]
        ),
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
        schema=pa.schema(
            [
                ("id", pa.string()),
                ("takeoff_error", pa.int64()),
                ("entry_error", pa.int64()),
                ("tiou", pa.float64()),
            ]
        ),
    )
    return EvalReport(metrics=metrics, predictions=predictions, transitions=transitions, evaluation=ev)


def compare_run(
    bank: FeatureBank, params: Params, work_dir: Path, *, split: str = "test", progress: bool = False
) -> tuple[list[dict[str, Any]], str]:
    """HP-MCoRe, its ablations and baselines (a), (b), trained and evaluated alike on ``split``; plus HP-MCoRe
    with the splash-aware loss when every train video has a splash size (synthetic data).

    Checkpoints go to ``work_dir/<variant>/`` (a rerun resumes finished and unfinished variants).
    Returns the rows and the Markdown table of :func:`hpmcore.training.baselines.run_comparison`.
    """
    check_run_params(params)
    if not bank.split_ids(split):
        raise FeatureBankError(f"no videos in the {split!r} split to compare on")
    variants = default_variants(params.model, replace(params.core, i3d_dim=params.model.i3d_dim))
    train_ids = bank.split_ids("train")
    if not params.model.splash_head and all(bank.get(i).splash is not None for i in train_ids):
        # splash targets known (synthetic data): does the splash-aware loss (spec TL;DR) help?
        with_splash = replace(params.model, splash_head=True, splash_weight=SPLASH_WEIGHT)
        items = list(variants.items())
        variants = dict([*items[:1], ("+ splash-aware loss", with_splash), *items[1:]])
    return run_comparison(
        bank,
        variants,
        params.train,
        params.eval,
        params.seed,
        split=split,
        work_dir=Path(work_dir),
        restart_on_mismatch=True,
        progress=progress,
    )
