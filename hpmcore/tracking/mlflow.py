"""The one place that talks to MLflow: a SQLite tracking store and an artifact folder under a state dir.

Everything else in the project (flows, stages, the lineage audit) goes through these functions, so the
tracking URI is set in exactly one place and never deep inside a flow. Every run opened with
:func:`start_run` records the environment fingerprint (:mod:`hpmcore.environment`).
"""

from __future__ import annotations

import json
import tempfile
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import mlflow
from mlflow.tracking import MlflowClient

from hpmcore.environment import environment_fingerprint, environment_tags

MAX_PARAM_LENGTH = 6000  # MLflow 3 limit for a param value is 6000 characters
ENVIRONMENT_ARTIFACT = "environment/fingerprint.json"
"""Where every run keeps its environment fingerprint."""


def tracking_uri(state_dir: Path) -> str:
    """``sqlite:///<state_dir>/mlflow.db`` (absolute)."""
    return f"sqlite:///{(Path(state_dir) / 'mlflow.db').resolve()}"


def artifact_root(state_dir: Path) -> Path:
    """Where run artifacts are stored: ``<state_dir>/mlartifacts``."""
    return (Path(state_dir) / "mlartifacts").resolve()


def client(state_dir: Path) -> MlflowClient:
    """An MLflow client on the project's SQLite store (created on first use)."""
    Path(state_dir).mkdir(parents=True, exist_ok=True)
    return MlflowClient(tracking_uri=tracking_uri(state_dir))


def ensure_experiment(state_dir: Path, name: str) -> str:
    """The id of experiment ``name``, created with its artifacts under ``state_dir`` if missing."""
    c = client(state_dir)
    exp = c.get_experiment_by_name(name)
    if exp is not None:
        return exp.experiment_id
    location = artifact_root(state_dir) / name
    return c.create_experiment(name, artifact_location=location.as_uri())


@contextmanager
def start_run(
    state_dir: Path, experiment: str, run_name: str, tags: Mapping[str, str] | None = None
) -> Iterator[mlflow.ActiveRun]:
    """Open an MLflow run in the project's store; it is ended (FAILED on exception) on exit.

    The run records the environment fingerprint: the artifact ``environment/fingerprint.json`` and the
    ``env.*`` tags of :func:`hpmcore.environment.environment_tags`.
    """
    mlflow.set_tracking_uri(tracking_uri(state_dir))
    experiment_id = ensure_experiment(state_dir, experiment)
    fingerprint = environment_fingerprint()
    run_tags = {**environment_tags(fingerprint), **dict(tags or {})}
    with mlflow.start_run(experiment_id=experiment_id, run_name=run_name, tags=run_tags) as run:
        log_dict(fingerprint, ENVIRONMENT_ARTIFACT)
        yield run


def log_params(params: Mapping[str, Any]) -> None:
    """Log a flat mapping of params; long values are truncated to MLflow's limit."""
    mlflow.log_params({k: str(v)[:MAX_PARAM_LENGTH] for k, v in params.items()})


def log_metrics(metrics: Mapping[str, float], step: int | None = None) -> None:
    """Log numeric metrics (non-numeric values are skipped)."""
    numeric = {
        k: float(v) for k, v in metrics.items() if isinstance(v, int | float) and not isinstance(v, bool)
    }
    mlflow.log_metrics(numeric, step=step)


def log_text(text: str, artifact_file: str) -> None:
    """Store ``text`` as an artifact at ``artifact_file`` of the active run."""
    mlflow.log_text(text, artifact_file)


def log_dict(obj: Any, artifact_file: str) -> None:
    """Store ``obj`` as a JSON artifact at ``artifact_file`` of the active run."""
    mlflow.log_text(json.dumps(obj, indent=2, sort_keys=True, default=str), artifact_file)


def log_file(path: Path, artifact_path: str | None = None) -> None:
    """Copy a file into the active run's artifacts."""
    mlflow.log_artifact(str(path), artifact_path=artifact_path)


def log_metric_series(series: list[Mapping[str, Any]], *, step_key: str, prefix: str) -> None:
    """Log one metrics row per step (e.g. per epoch): ``<prefix><key>`` at ``step = row[step_key]``."""
    for row in series:
        step = int(row[step_key])
        log_metrics({f"{prefix}{k}": v for k, v in row.items() if k != step_key and v is not None}, step=step)


def log_torch_model(
    model: Any,
    input_example: Any,
    *,
    name: str,
    registered_model_name: str | None = None,
    tags: Mapping[str, str] | None = None,
) -> Any:
    """Log a ``torch.nn.Module`` as an MLflow PyTorch model with a signature inferred from
    ``input_example`` (a float32 numpy array) and the model's output on it; optionally register it
    (the model registry lives in the same SQLite store) and tag the new version.

    Returns:
        MLflow's ``ModelInfo`` (``model_uri``, ``registered_model_version``, ...).
    """
    import mlflow.pytorch
    import numpy as np
    import torch
    from mlflow.models import infer_signature

    with torch.no_grad():
        output = model(torch.from_numpy(input_example)).cpu().numpy()
    info = mlflow.pytorch.log_model(
        model,
        name=name,
        signature=infer_signature(input_example, output),
        registered_model_name=registered_model_name,
        # eager pickle (the pair model has data-dependent control flow: no torch.export graph) with the
        # package's code beside it, and the requirements named, not inferred (no import-capture process)
        serialization_format="pickle",
        code_paths=[str(Path(__file__).resolve().parents[1])],  # the hpmcore package
        pip_requirements=[f"torch=={torch.__version__.split('+')[0]}", f"numpy=={np.__version__}"],
    )
    if registered_model_name and tags and info.registered_model_version is not None:
        c = MlflowClient()
        for key, value in tags.items():
            c.set_model_version_tag(registered_model_name, str(info.registered_model_version), key, value)
    return info


def set_tags(tags: Mapping[str, str]) -> None:
    """Set string tags on the active run."""
    mlflow.set_tags(dict(tags))


def read_artifact_text(state_dir: Path, run_id: str, artifact_file: str) -> str:
    """The text of one artifact of a finished run (used by audits and tests)."""
    c = client(state_dir)
    with tempfile.TemporaryDirectory() as tmp:
        local = c.download_artifacts(run_id, artifact_file, tmp)
        return Path(local).read_text()
