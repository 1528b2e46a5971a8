"""The one place that talks to MLflow: a SQLite tracking store and an artifact folder under a state dir.

Everything else in the project (flows, stages, the lineage audit) goes through these functions, so the
tracking URI is set in exactly one place and never deep inside a flow. Every run opened with
:func:`start_run` records the environment fingerprint (:mod:`hpmcore.environment`).
"""

from __future__ import annotations

import json
import os
import socket
import tempfile
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, replace
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
    ``env.*`` tags of :func:`hpmcore.environment.environment_tags`; and the process that runs it
    (``process.host``, ``process.pid``), so a later run can tell a killed run from a live one
    (:meth:`Registry.end_stale_runs`).
    """
    mlflow.set_tracking_uri(tracking_uri(state_dir))
    experiment_id = ensure_experiment(state_dir, experiment)
    fingerprint = environment_fingerprint()
    process = {"process.host": socket.gethostname(), "process.pid": str(os.getpid())}
    run_tags = {**environment_tags(fingerprint), **process, **dict(tags or {})}
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


def log_torch_model(model: Any, input_example: Any, *, name: str) -> Any:
    """Log a ``torch.nn.Module`` to the active run as an MLflow PyTorch model with a signature inferred
    from ``input_example`` (a float32 numpy array) and the model's output on it (not registered: see
    :meth:`Registry.register`).

    Returns:
        MLflow's ``ModelInfo`` (``model_uri``, ...).
    """
    import mlflow.pytorch
    import numpy as np
    import torch
    from mlflow.models import infer_signature

    with torch.no_grad():
        output = model(torch.from_numpy(input_example)).cpu().numpy()
    return mlflow.pytorch.log_model(
        model,
        name=name,
        signature=infer_signature(input_example, output),
        # eager pickle (the pair model has data-dependent control flow: no torch.export graph) with the
        # package's code beside it, and the requirements named, not inferred (no import-capture process)
        serialization_format="pickle",
        code_paths=[str(Path(__file__).resolve().parents[1])],  # the hpmcore package
        pip_requirements=[f"torch=={torch.__version__.split('+')[0]}", f"numpy=={np.__version__}"],
    )


def log_pyfunc_model(
    data_path: Path,
    *,
    loader_module: str,
    inputs: Sequence[tuple[str, str, bool]],
    outputs: Sequence[tuple[str, str]],
    requirements: Sequence[str],
    name: str,
) -> Any:
    """Log a folder as an MLflow ``python_function`` model to the active run (not registered: see
    :meth:`Registry.register`): ``loader_module._load_pyfunc(<model>/data/<folder name>)`` loads it, the
    package's code is stored beside it, and the signature has the columns ``inputs`` (name, MLflow type,
    required) and ``outputs`` (name, type). ``requirements`` (distribution names) are pinned to the
    installed versions.

    Returns:
        MLflow's ``ModelInfo`` (``model_uri``, ...).
    """
    from importlib.metadata import version

    import mlflow.pyfunc
    from mlflow.models import ModelSignature
    from mlflow.types.schema import ColSpec, Schema

    signature = ModelSignature(
        inputs=Schema([ColSpec(kind, column, required=required) for column, kind, required in inputs]),
        outputs=Schema([ColSpec(kind, column) for column, kind in outputs]),
    )
    return mlflow.pyfunc.log_model(
        name=name,
        loader_module=loader_module,
        data_path=str(data_path),
        code_paths=[str(Path(__file__).resolve().parents[1])],  # the hpmcore package
        pip_requirements=[f"{dist}=={version(dist).split('+')[0]}" for dist in requirements],
        signature=signature,
    )


def set_tags(tags: Mapping[str, str]) -> None:
    """Set string tags on the active run."""
    mlflow.set_tags(dict(tags))


def read_artifact_text(state_dir: Path, run_id: str, artifact_file: str) -> str:
    """The text of one artifact of a finished run (used by audits and tests)."""
    c = client(state_dir)
    with tempfile.TemporaryDirectory() as tmp:
        local = c.download_artifacts(run_id, artifact_file, tmp)
        return Path(local).read_text()


@dataclass(frozen=True)
class ModelVersion:
    """One version of a registered model, as plain values."""

    name: str
    version: str
    run_id: str
    tags: dict[str, str]
    aliases: tuple[str, ...]
    created_ms: int
    """Creation time, milliseconds since the epoch."""

    @property
    def ref(self) -> str:
        """``NAME/VERSION``."""
        return f"{self.name}/{self.version}"


def _version(mv: Any) -> ModelVersion:
    return ModelVersion(
        name=mv.name,
        version=str(mv.version),
        run_id=mv.run_id or "",
        tags=dict(mv.tags or {}),
        aliases=tuple(sorted(mv.aliases or ())),
        created_ms=int(mv.creation_timestamp or 0),
    )


class Registry:
    """The model registry and run store behind one tracking URI (the project's SQLite store by default).

    Registration is atomic: :meth:`register` creates the version with all its tags in one transaction,
    so a killed process leaves either no version or a complete one.
    """

    def __init__(self, uri: str) -> None:
        self.uri = uri
        self.client = MlflowClient(tracking_uri=uri, registry_uri=uri)

    @classmethod
    def at(cls, state_dir: Path) -> Registry:
        """The registry of the project's store under ``state_dir`` (created on first use)."""
        Path(state_dir).mkdir(parents=True, exist_ok=True)
        return cls(tracking_uri(state_dir))

    def versions(self, name: str | None = None) -> list[ModelVersion]:
        """Every version of model ``name`` (of every registered model when ``None``), oldest first."""
        from mlflow.exceptions import MlflowException

        try:
            found = self.client.search_model_versions(f"name = '{name}'" if name else None)
        except MlflowException:
            return []
        # search results carry no aliases in every store: read them per registered model
        aliases: dict[tuple[str, str], list[str]] = {}
        for model_name in {mv.name for mv in found}:
            for alias, version in self.client.get_registered_model(model_name).aliases.items():
                aliases.setdefault((model_name, str(version)), []).append(alias)
        out = [
            replace(_version(mv), aliases=tuple(sorted(aliases.get((mv.name, str(mv.version)), []))))
            for mv in found
        ]
        return sorted(out, key=lambda v: (v.name, int(v.version)))

    def version(self, name: str, version: str) -> ModelVersion | None:
        """Version ``version`` of ``name``, or ``None``."""
        return next((v for v in self.versions(name) if v.version == str(version)), None)

    def by_alias(self, name: str, alias: str) -> ModelVersion | None:
        """The version of ``name`` that ``alias`` points at, or ``None``."""
        return next((v for v in self.versions(name) if alias in v.aliases), None)

    def find(self, name: str, tag: str, value: str) -> ModelVersion | None:
        """The oldest version of ``name`` whose tag ``tag`` is ``value``, or ``None``."""
        return next((v for v in self.versions(name) if v.tags.get(tag) == value), None)

    def register(self, model_uri: str, name: str, tags: Mapping[str, str]) -> ModelVersion:
        """Register ``model_uri`` (a model logged with :func:`log_pyfunc_model` or :func:`log_torch_model`)
        as a new version of ``name``, with ``tags`` set in the same transaction."""
        mlflow.set_tracking_uri(self.uri)
        mlflow.set_registry_uri(self.uri)
        mv = mlflow.register_model(model_uri, name, tags={k: str(v) for k, v in tags.items()})
        found = self.version(name, str(mv.version))
        assert found is not None
        return found

    def set_tags(self, name: str, version: str, tags: Mapping[str, str]) -> None:
        """Set tags on a model version."""
        for key, value in tags.items():
            self.client.set_model_version_tag(name, str(version), key, str(value))

    def set_alias(self, name: str, alias: str, version: str) -> None:
        """Point ``alias`` of ``name`` at ``version`` (moving it from any other version)."""
        self.client.set_registered_model_alias(name, alias, str(version))

    def run(self, run_id: str) -> dict[str, Any] | None:
        """A run's experiment name, status, start/end times (ms), params and tags; ``None`` when there is
        no such run."""
        from mlflow.exceptions import MlflowException

        try:
            run = self.client.get_run(run_id)
        except MlflowException:
            return None
        experiment = self.client.get_experiment(run.info.experiment_id)
        return {
            "run_id": run_id,
            "experiment": experiment.name if experiment else run.info.experiment_id,
            "status": run.info.status,
            "start_ms": run.info.start_time,
            "end_ms": run.info.end_time,
            "params": dict(run.data.params),
            "tags": {k: v for k, v in run.data.tags.items() if not k.startswith("mlflow.")},
        }

    def artifact_text(self, run_id: str, artifact_file: str) -> str | None:
        """The text of one artifact of a run, or ``None`` when the run has no such artifact."""
        from mlflow.exceptions import MlflowException

        with tempfile.TemporaryDirectory() as tmp:
            try:
                local = self.client.download_artifacts(run_id, artifact_file, tmp)
            except (MlflowException, OSError):
                return None
            path = Path(local)
            return path.read_text() if path.is_file() else None

    def download(self, run_id: str, artifact_file: str, dst_dir: Path) -> Path:
        """Copy one artifact of a run into ``dst_dir``; returns the local path.

        Raises:
            FileNotFoundError: the run has no such artifact.
        """
        from mlflow.exceptions import MlflowException

        Path(dst_dir).mkdir(parents=True, exist_ok=True)
        try:
            local = Path(self.client.download_artifacts(run_id, artifact_file, str(dst_dir)))
        except (MlflowException, OSError) as exc:
            raise FileNotFoundError(f"run {run_id}: no artifact {artifact_file} ({exc})") from None
        if not local.exists():
            raise FileNotFoundError(f"run {run_id}: no artifact {artifact_file}")
        return local

    def download_model(self, name: str, version: str, dst_dir: Path) -> Path:
        """Copy the logged model of version ``version`` of ``name`` (its MLflow model folder, ``MLmodel``
        and data) into ``dst_dir``; returns the local folder.

        Raises:
            FileNotFoundError: no such version, or its model cannot be read.
        """
        from mlflow.artifacts import download_artifacts
        from mlflow.exceptions import MlflowException

        Path(dst_dir).mkdir(parents=True, exist_ok=True)
        try:
            # the version's storage location from this registry (a ``models:/NAME/VERSION`` URI would be
            # resolved against MLflow's global registry URI, not this store's)
            source = self.client.get_model_version_download_uri(name, str(version))
            local = download_artifacts(
                artifact_uri=source, dst_path=str(dst_dir), tracking_uri=self.uri, registry_uri=self.uri
            )
        except (MlflowException, OSError) as exc:
            raise FileNotFoundError(f"model {name}/{version}: cannot download its model ({exc})") from None
        return Path(local)

    def end_stale_runs(self, alive: Callable[[int], bool]) -> list[str]:
        """Mark ``KILLED`` the runs still ``RUNNING`` that were started on this host by a process that
        no longer exists (``alive(pid)`` is false), e.g. after a SIGKILL; returns their ids."""
        host = socket.gethostname()
        ended = []
        experiments = self.client.search_experiments()
        if not experiments:
            return ended
        runs = self.client.search_runs(
            [e.experiment_id for e in experiments], filter_string="attributes.status = 'RUNNING'"
        )
        for run in runs:
            tags = run.data.tags
            pid = tags.get("process.pid")
            if tags.get("process.host") == host and pid and pid.isdigit() and not alive(int(pid)):
                self.client.set_terminated(run.info.run_id, status="KILLED")
                ended.append(run.info.run_id)
        return ended
