"""The model registry's policy: register a checkpoint once, and move the ``champion`` alias only for a
better model on validation.

- :func:`register_checkpoint`: the train stage's ``best.pt`` becomes a new version of ``hpmcore`` only
  when no version holds the same checkpoint (tag ``checkpoint.sha256``); the version is created with
  all its tags in one transaction, after its artifacts (``checkpoint/best.pt``, the lineage record,
  the servable model) are stored.
- :func:`decide_champion`: the first registered version becomes ``champion``; a later one replaces it
  only when its validation metric (``retrain.metric``) beats the champion's by more than
  ``retrain.margin``, both scored here on the **same validation dives with the same voters** of the
  current data (each model rebuilt from its own checkpoint). The decision and its reason are tags on
  the candidate (``champion.decision``: ``champion`` | ``rejected`` | ``not-compared``,
  ``champion.reason``, ``champion.compared_with``, ``val.<metric>``), so a rejected candidate stays
  registered with the reason.

Both are safe to repeat: a rerun after a crash finds the version by its checkpoint hash and decides
only if no decision was recorded.
"""

from __future__ import annotations

import logging
import math
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from hpmcore.config import ConfigError, Params, RetrainConfig
from hpmcore.data.canonical import DatasetError
from hpmcore.extraction.cache import ManifestError, sha256_file
from hpmcore.models.checkpoints import CheckpointError
from hpmcore.tracking.lineage import PipelineLayout
from hpmcore.tracking.mlflow import ModelVersion, Registry
from hpmcore.training.bank import pipeline_bank
from hpmcore.training.evaluate import evaluate_checkpoint

log = logging.getLogger(__name__)

REGISTERED_MODEL = "hpmcore"
"""Name of the model in the MLflow model registry."""
CHAMPION = "champion"
CHECKPOINT_TAG = "checkpoint.sha256"
CHECKPOINT_ARTIFACT = "checkpoint/best.pt"
DECISION_TAG = "champion.decision"
REASON_TAG = "champion.reason"
HIGHER_IS_BETTER = {"rho": True, "rl2_x100": False, "l2": False}
SCORING_ERRORS = (ConfigError, DatasetError, ManifestError, CheckpointError, FileNotFoundError)
"""Why a model cannot be scored on the current data (its params or checkpoint do not fit it)."""


def validation_metrics(project_dir: Path, params: Params, checkpoint: Path) -> dict[str, Any]:
    """Score ``checkpoint`` (a ``best.pt``; the model, its configuration and DD mode are rebuilt from it)
    on the validation split of the project's current data, with ``params.eval``'s voters drawn from
    ``params.seed``: two checkpoints scored here meet the same queries and the same voters.

    The one call into the training runtime for the champion decision
    (:func:`hpmcore.training.evaluate.evaluate_checkpoint`).

    Raises:
        DatasetError / ManifestError / CheckpointError: the checkpoint does not fit the current data
            (other feature sizes, ...) or the data is unreadable.
    """
    layout = PipelineLayout()
    project_dir = Path(project_dir)
    bank = pipeline_bank(
        project_dir / layout.dives,
        project_dir / layout.decoded,
        project_dir / layout.features,
        project_dir / layout.pose,
        data_root=params.data.root_path(project_dir),
    )
    # the model is rebuilt from the checkpoint (its kind, config and DD mode as trained)
    return evaluate_checkpoint(checkpoint, bank, params.eval, seed=params.seed, split="val").metrics


def is_better(candidate: float | None, champion: float | None, metric: str, margin: float) -> bool:
    """Whether ``candidate`` beats ``champion`` on ``metric`` by more than ``margin`` (a missing or NaN
    candidate value never does; a missing champion value always loses to a real one)."""
    if candidate is None or math.isnan(candidate):
        return False
    if champion is None or math.isnan(champion):
        return True
    gain = candidate - champion if HIGHER_IS_BETTER[metric] else champion - candidate
    return gain > margin


@dataclass(frozen=True)
class Decision:
    """What :func:`decide_champion` did."""

    version: str
    champion: str
    """The version ``champion`` points at afterwards."""
    decision: str
    """``champion`` | ``rejected`` | ``not-compared`` | ``unchanged`` (decided before)."""
    reason: str


def register_checkpoint(
    registry: Registry,
    checkpoint: Path,
    *,
    log_artifacts: Any,
    tags: dict[str, str],
    name: str = REGISTERED_MODEL,
) -> tuple[ModelVersion, bool]:
    """Register ``checkpoint`` as a new version of ``name`` unless one already holds it.

    Args:
        registry: the model registry.
        checkpoint: the train stage's ``best.pt``.
        log_artifacts: ``() -> model_uri``: stores the run's artifacts (checkpoint, lineage record,
            servable model) and returns the logged model's URI; called only for a new checkpoint.
        tags: lineage tags of the new version (``checkpoint.sha256`` is added).
        name: registered model name.

    Returns:
        The version holding the checkpoint, and whether it was created now.
    """
    digest = sha256_file(checkpoint)
    existing = registry.find(name, CHECKPOINT_TAG, digest)
    if existing is not None:
        log.info(
            "checkpoint %s unchanged: already registered as %s (nothing new registered)", digest, existing.ref
        )
        return existing, False
    model_uri = log_artifacts()
    version = registry.register(model_uri, name, {**tags, CHECKPOINT_TAG: digest})
    log.info("registered %s (checkpoint %s)", version.ref, digest)
    return version, True


def decide_champion(
    registry: Registry,
    project_dir: Path,
    params: Params,
    candidate: ModelVersion,
    *,
    name: str = REGISTERED_MODEL,
) -> Decision:
    """Move ``champion`` to ``candidate`` when it is the first model or better on validation (see module
    docstring); record the decision as tags on ``candidate``. ``candidate`` must hold the workspace's
    ``best.pt`` (what :func:`register_checkpoint` returned)."""
    cfg: RetrainConfig = params.retrain
    champion = registry.by_alias(name, CHAMPION)
    if champion is not None and champion.version == candidate.version:
        return Decision(candidate.version, champion.version, "unchanged", "already the champion")
    if champion is None:
        reason = "first registered model"
        registry.set_tags(name, candidate.version, {DECISION_TAG: "champion", REASON_TAG: reason})
        registry.set_alias(name, CHAMPION, candidate.version)
        return Decision(candidate.version, candidate.version, "champion", reason)
    if candidate.tags.get("champion.compared_with") == champion.version and DECISION_TAG in candidate.tags:
        decided = candidate.tags[DECISION_TAG]
        if decided == "champion":  # a run killed between recording the decision and moving the alias
            registry.set_alias(name, CHAMPION, candidate.version)
            return Decision(
                candidate.version, candidate.version, "champion", candidate.tags.get(REASON_TAG, "")
            )
        return Decision(candidate.version, champion.version, "unchanged", candidate.tags.get(REASON_TAG, ""))

    metric, margin = cfg.metric, cfg.margin
    checkpoint = Path(project_dir) / PipelineLayout().checkpoint
    if sha256_file(checkpoint) != candidate.tags.get(CHECKPOINT_TAG):
        raise RuntimeError(f"{checkpoint} is not the checkpoint of {candidate.ref}")
    cand = validation_metrics(project_dir, params, checkpoint).get(metric)
    tags = {"champion.compared_with": champion.version, f"val.{metric}": str(cand)}
    try:
        with tempfile.TemporaryDirectory() as tmp:
            ckpt = registry.download(champion.run_id, CHECKPOINT_ARTIFACT, Path(tmp))
            if sha256_file(ckpt) != champion.tags.get(CHECKPOINT_TAG):
                raise CheckpointError(f"{champion.ref}: its stored checkpoint differs from {CHECKPOINT_TAG}")
            champ = validation_metrics(project_dir, params, ckpt).get(metric)
    except SCORING_ERRORS as exc:
        reason = f"not compared: champion {champion.ref} cannot be scored on the current data ({exc}); kept"
        registry.set_tags(name, candidate.version, {**tags, DECISION_TAG: "not-compared", REASON_TAG: reason})
        return Decision(candidate.version, champion.version, "not-compared", reason)
    tags[f"val.{metric}.champion"] = str(champ)
    verb = "beats" if is_better(cand, champ, metric, margin) else "does not beat"
    reason = f"validation {metric} {cand} {verb} champion {champion.ref}'s {champ} by more than {margin}"
    if verb == "beats":
        registry.set_tags(name, candidate.version, {**tags, DECISION_TAG: "champion", REASON_TAG: reason})
        registry.set_alias(name, CHAMPION, candidate.version)
        registry.set_tags(name, champion.version, {"champion.replaced_by": candidate.version})
        return Decision(candidate.version, candidate.version, "champion", reason)
    registry.set_tags(name, candidate.version, {**tags, DECISION_TAG: "rejected", REASON_TAG: reason})
    return Decision(candidate.version, champion.version, "rejected", reason)
