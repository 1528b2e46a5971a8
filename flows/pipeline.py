"""The hpmcore pipeline as a Prefect flow: ``dvc repro`` stage by stage, logged to MLflow with lineage.

DVC stays the source of truth for what is up to date (each task runs ``dvc repro --single-item``
for one stage, in dependency order); the flow adds orchestration, one MLflow run per flow run, and
the lineage an auditor needs: params, git commit, ``dvc.lock`` (hashes of every input and output),
the dataset summary, per-stage timings, and each stage's own metrics (``stats.json``: counts of
computed / reused / failed videos and throughput) and failures table.

Usage: ``python -m flows.pipeline [--project-dir DIR] [--experiment NAME] [--force]``
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import networkx as nx
import pyarrow.parquet as pq
from dvc.repo import Repo
from prefect import flow, get_run_logger, task
from prefect.cache_policies import NO_CACHE
from prefect.runtime import flow_run

import hpmcore
from flows.lock import LockBusy, project_lock
from flows.registry import REGISTERED_MODEL, decide_champion, register_checkpoint
from flows.settings import PROJECT_DIR, state_dir
from hpmcore.config import Params, flatten, load_params, params_to_dict
from hpmcore.extraction.cache import FAILURES, TIMINGS
from hpmcore.serving import pyfunc
from hpmcore.serving.bundle import SCORING_BUNDLE, write_bundle
from hpmcore.tracking import lineage
from hpmcore.tracking import mlflow as tracking
from hpmcore.training.checkpoints import BEST, CHECKPOINTS

MODEL_DIR = Path("data/model")
"""The train stage's output folder (``model_dir`` in dvc.yaml)."""
EVAL_DIR = Path("data/eval")
"""The evaluate stage's output folder (``eval_dir`` in dvc.yaml)."""
FEATURES_DIR = Path("data/features")
COMPARE_DIR = Path("data/compare")
EXIT_BUSY = 3
"""Exit status when another pipeline or retraining run holds the lock."""


class StageFailed(RuntimeError):
    """A DVC stage exited non-zero; the message carries the end of its output."""


@dataclass(frozen=True)
class StageRun:
    """What one stage did in this flow run."""

    stage: str
    ran: bool
    seconds: float


COMPARE_STAGE = "compare/dvc.yaml:compare"
"""The comparison stage (its own dvc.yaml, so that a plain ``dvc repro`` leaves it out)."""


def stage_order(project_dir: Path, *, compare: bool = False) -> list[str]:
    """The pipeline's stages (DVC addresses: ``train``, ``compare/dvc.yaml:compare``), upstream first,
    from DVC's own dependency graph: those of the top-level ``dvc.yaml``, plus the comparison stage
    when ``compare``."""
    with Repo(str(project_dir)) as repo:
        graph = repo.index.graph  # edges point from a stage to the stages it depends on
        root = Path(repo.root_dir)
        stages = []
        for stage in reversed(list(nx.topological_sort(graph))):
            dvcfile = Path(stage.dvcfile.path).resolve().relative_to(root.resolve())
            stages.append(stage.name if dvcfile == Path("dvc.yaml") else f"{dvcfile.as_posix()}:{stage.name}")
    return [s for s in stages if ":" not in s or (compare and s == COMPARE_STAGE)]


def stage_name(address: str) -> str:
    """``compare/dvc.yaml:compare`` → ``compare``; top-level names stay."""
    return address.rsplit(":", 1)[-1]


def stage_reports(project_dir: Path) -> dict[str, dict[str, list[Path]]]:
    """Per stage, the files it reports through: ``{"metrics": [...], "failures": [...], "timings": [...]}``.

    ``metrics`` are the stage's DVC metrics files (``metrics:`` in dvc.yaml, e.g. ``stats.json`` with
    counts); ``failures`` its outputs named ``failures.parquet`` (extraction stages), and ``timings``
    the ``timings.json`` beside each of those (throughput; not a DVC output, git-ignored).
    """
    with Repo(str(project_dir)) as repo:
        return {
            stage.name: {
                "metrics": [Path(out.fs_path) for out in stage.outs if out.metric],
                "failures": [Path(out.fs_path) for out in stage.outs if Path(out.fs_path).name == FAILURES],
                "timings": [
                    Path(out.fs_path).with_name(TIMINGS)
                    for out in stage.outs
                    if Path(out.fs_path).name == FAILURES
                ],
            }
            for stage in repo.index.stages
        }


def log_stage_reports(stage: str, reports: dict[str, list[Path]]) -> dict[str, float]:
    """Log a stage's JSON metrics and timings as MLflow metrics ``<stage>.<key>`` and its non-empty
    failures table as the artifact ``failures/<stage>.json``; returns the metrics logged.

    The values are those of the stage's last execution (the ``stage.<name>`` tag says whether that
    was in this flow run).
    """
    metrics: dict[str, float] = {}
    for path in [*reports.get("metrics", []), *reports.get("timings", [])]:
        if path.suffix == ".json" and path.is_file():
            values = flatten(json.loads(path.read_text()))
            metrics.update({f"{stage}.{k}": v for k, v in values.items()})
    tracking.log_metrics(metrics)
    for path in reports.get("failures", []):
        if path.is_file():
            rows = pq.read_table(path).to_pylist()
            if rows:
                tracking.log_dict(rows, f"failures/{stage}.json")
    return metrics


def _subprocess_env() -> dict[str, str]:
    """The environment for stage commands: this interpreter's bin dir first, so ``python`` is ours."""
    env = dict(os.environ)
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
    return env


@task(name="dvc-stage", task_run_name="{stage}")
def reproduce_stage(project_dir: Path, stage: str, force: bool = False) -> StageRun:
    """Run ``dvc repro --single-item STAGE`` (a DVC address), streaming its output to the flow log.

    Not retried: a failed stage is a bug or bad input to look at, and DVC leaves no half-written
    outputs behind (stage scripts write atomically).
    """
    logger = get_run_logger()
    cmd = [sys.executable, "-m", "dvc", "repro", "--single-item", stage]
    if force:
        cmd.append("--force")
    start = time.perf_counter()
    lines: list[str] = []
    with subprocess.Popen(
        cmd,
        cwd=project_dir,
        env=_subprocess_env(),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    ) as proc:
        assert proc.stdout is not None
        for line in proc.stdout:
            line = line.rstrip()
            lines.append(line)
            logger.info("[%s] %s", stage, line)
    seconds = time.perf_counter() - start
    if proc.returncode != 0:
        tail = "\n".join(lines[-30:])
        raise StageFailed(f"DVC stage {stage!r} failed (exit {proc.returncode}):\n{tail}")
    ran = any(line.startswith(f"Running stage '{stage}'") for line in lines)
    return StageRun(stage=stage, ran=ran, seconds=seconds)


def _git(project_dir: Path, *args: str) -> str:
    out = subprocess.run(["git", *args], cwd=project_dir, capture_output=True, text=True, check=False)
    return out.stdout.strip() if out.returncode == 0 else ""


def git_lineage(project_dir: Path) -> dict[str, str]:
    """Commit, branch and dirtiness of the project's git checkout (empty values outside git)."""
    status = _git(project_dir, "status", "--porcelain", "--untracked-files=no")
    return {
        "git.commit": _git(project_dir, "rev-parse", "HEAD") or "unknown",
        "git.branch": _git(project_dir, "rev-parse", "--abbrev-ref", "HEAD") or "unknown",
        "git.dirty": str(bool(status)).lower(),
    }


def log_comparison(project_dir: Path) -> None:
    """Log the comparison table (Markdown + JSON) as artifacts and each variant's test metrics as
    ``compare.<variant>.<metric>``."""
    folder = project_dir / COMPARE_DIR
    for name in ("comparison.md", "comparison.json"):
        tracking.log_file(folder / name, "compare")
    rows = json.loads((folder / "comparison.json").read_text())["rows"]
    for row in rows:
        slug = "".join(c if c.isalnum() else "_" for c in row["name"].lower()).strip("_")
        tracking.log_metrics(
            {f"compare.{slug}.{k}": row[k] for k in ("rho", "exec_rho", "rl2_x100", "aiou_50", "aiou_75")}
        )


def log_model_results(
    project_dir: Path,
    params: Params,
    registry: tracking.Registry,
    *,
    tags: dict[str, str],
    record: Callable[[], dict[str, Any]],
) -> tracking.ModelVersion:
    """Log what the train and evaluate stages produced to the active MLflow run, and register the
    selected checkpoint unless a version already holds it.

    - per-epoch training metrics from ``data/model/history.json`` as ``train.<key>`` at step = epoch
      (losses, validation ρ/RL2/AIoU, lr);
    - the evaluation's plots data (``data/eval/*.csv``) and the training history as artifacts;
    - for a checkpoint no version holds yet: ``checkpoint/best.pt``, the lineage record
      (``lineage/record.json``, built by ``record()``) and the servable video scorer as an MLflow
      ``python_function`` model (``model``; :mod:`hpmcore.serving.pyfunc`: a video and its dive number →
      score, stage boundaries, per-stage contributions) whose data is the scoring bundle
      (:func:`hpmcore.serving.bundle.write_bundle`: the checkpoint, the exemplar pool's encodings and
      labels, the decode/features/pose settings) — registered as a new version of ``hpmcore`` with
      ``tags`` (git commit, ``dvc.lock`` hashes, run id) and ``checkpoint.sha256``.

    Returns:
        The model version holding the checkpoint (new or not).
    """
    model_dir, eval_dir = project_dir / MODEL_DIR, project_dir / EVAL_DIR
    history = json.loads((model_dir / "history.json").read_text())
    tracking.log_metric_series(history, step_key="epoch", prefix="train.")
    tracking.log_file(model_dir / "history.json", "train")
    tracking.log_file(model_dir / "train.json", "train")
    for name in ("metrics.json", "predictions.csv", "transitions.csv"):
        tracking.log_file(eval_dir / name, "evaluate")
    checkpoint = model_dir / CHECKPOINTS / BEST

    def log_artifacts() -> str:
        tracking.log_file(checkpoint, "checkpoint")
        tracking.log_dict(record(), lineage.RECORD_ARTIFACT)
        return log_scoring_model(project_dir, params)

    version, _ = register_model(registry, checkpoint, log_artifacts, tags)
    return version


def log_scoring_model(project_dir: Path, params: Params, *, name: str = "model") -> str:
    """Log the train stage's ``best.pt`` to the active MLflow run as the servable video scorer: an MLflow
    ``python_function`` model (:mod:`hpmcore.serving.pyfunc`) whose data is the scoring bundle of the
    project's outputs (:func:`hpmcore.serving.bundle.write_bundle`: the checkpoint, the exemplar pool's
    encodings and labels, the decode/features/pose settings it was made with). Returns its model URI
    (not registered: :func:`flows.registry.register_checkpoint` does that)."""
    layout = lineage.PipelineLayout()
    with tempfile.TemporaryDirectory(prefix="hpmcore-bundle-") as tmp:
        bundle = write_bundle(
            Path(tmp) / SCORING_BUNDLE,
            checkpoint=project_dir / layout.checkpoint,
            dives=project_dir / layout.dives,
            decoded=project_dir / layout.decoded,
            pose=project_dir / layout.pose,
            features=project_dir / layout.features,
            params=params,
            project_dir=project_dir,
        )
        info = tracking.log_pyfunc_model(
            bundle,
            loader_module=pyfunc.LOADER_MODULE,
            inputs=pyfunc.INPUT_COLUMNS,
            outputs=pyfunc.OUTPUT_COLUMNS,
            requirements=pyfunc.REQUIREMENTS,
            name=name,
        )
    return info.model_uri


@task(name="register-model", retries=2, retry_delay_seconds=5, cache_policy=NO_CACHE)
def register_model(
    registry: tracking.Registry,
    checkpoint: Path,
    log_artifacts: Callable[[], str],
    tags: dict[str, str],
) -> tuple[tracking.ModelVersion, bool]:
    """:func:`flows.registry.register_checkpoint` as a task: MLflow store I/O, retried (safe: a retry
    finds the version a failed attempt may have created, by its checkpoint hash)."""
    return register_checkpoint(registry, checkpoint, log_artifacts=log_artifacts, tags=tags)


def pid_alive(pid: int) -> bool:
    """Whether a process ``pid`` exists on this host."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


@flow(name="hpmcore-pipeline", log_prints=True)
def pipeline(
    project_dir: Path = PROJECT_DIR,
    experiment: str = "hpmcore-pipeline",
    force: bool = False,
    compare: bool = False,
) -> dict[str, Any]:
    """Reproduce every DVC stage in order, log the run with lineage to MLflow, register a new checkpoint
    and decide the ``champion`` alias (:mod:`flows.registry`).

    One run per state folder at a time (:func:`flows.lock.project_lock`; ``retrain.lock_wait_s``).
    With ``compare`` the comparison stage (HP-MCoRe, ablations, baselines; ``compare/dvc.yaml``) runs
    too and its table is logged.

    Returns:
        ``{"run_id": MLflow run id, "stages": {name: {"ran": bool, "seconds": float}}, "model_version",
        "model_registered", "champion", "champion_decision", "champion_reason"}`` (the model keys when the
        pipeline trains).

    Raises:
        LockBusy: another pipeline or retraining run holds the lock.
    """
    logger = get_run_logger()
    project_dir = Path(project_dir).resolve()
    state = state_dir(project_dir)
    params_text = (project_dir / "params.yaml").read_text()
    params = load_params(project_dir / "params.yaml")  # fail fast on a bad params file
    with project_lock(state, what="pipeline", wait_s=params.retrain.lock_wait_s):
        registry = tracking.Registry.at(state)
        for run_id in registry.end_stale_runs(pid_alive):
            logger.warning(
                "MLflow run %s was left RUNNING by a process that no longer exists: KILLED", run_id
            )
        return _pipeline(project_dir, state, params, params_text, registry, experiment, force, compare)


def _pipeline(
    project_dir: Path,
    state: Path,
    params: Params,
    params_text: str,
    registry: tracking.Registry,
    experiment: str,
    force: bool,
    compare: bool,
) -> dict[str, Any]:
    logger = get_run_logger()
    stages = stage_order(project_dir, compare=compare)
    logger.info("stages in order: %s", ", ".join(stages))
    git = git_lineage(project_dir)
    tags = {
        **git,
        "hpmcore.version": hpmcore.__version__,
        "prefect.flow_run_id": str(flow_run.get_id() or ""),
    }
    with tracking.start_run(state, experiment, run_name=flow_run.get_name() or "pipeline", tags=tags) as run:
        tracking.log_params(flatten(params_to_dict(params)))
        tracking.log_text(params_text, lineage.PARAMS_ARTIFACT)
        tracking.log_file(project_dir / "dvc.yaml", "lineage")
        reports = stage_reports(project_dir)
        results: dict[str, dict[str, Any]] = {}
        for address in stages:
            result = reproduce_stage(project_dir, address, force=force)
            stage = stage_name(address)
            results[stage] = {"ran": result.ran, "seconds": result.seconds}
            tracking.log_metrics({f"stage.{stage}.seconds": result.seconds, f"stage.{stage}.ran": result.ran})
            tracking.set_tags({f"stage.{stage}": "ran" if result.ran else "up-to-date"})
            log_stage_reports(stage, reports.get(stage, {}))
        lock_text = (project_dir / "dvc.lock").read_text()
        outputs = lineage.dvc_outputs(lock_text)
        tracking.log_text(lock_text, lineage.DVC_LOCK_ARTIFACT)
        lock_sha256 = hashlib.sha256(lock_text.encode()).hexdigest()
        tracking.set_tags(
            {
                "dvc.lock.sha256": lock_sha256,
                **{f"dvc.out.{path}": md5 for outs in outputs.values() for path, md5 in outs.items()},
            }
        )
        model_info: dict[str, Any] = {}
        if compare:
            log_comparison(project_dir)
        if "train" in stages and "evaluate" in stages:
            version_tags = {
                "git.commit": tags["git.commit"],
                "dvc.lock.sha256": lock_sha256,
                **{f"dvc.out.{p}": md5 for p, md5 in outputs.get("train", {}).items()},
                "mlflow.run_id": run.info.run_id,
            }

            def record() -> dict[str, Any]:
                return lineage.build_record(
                    project_dir, params, git=git, lock_text=lock_text, params_text=params_text
                )

            version = log_model_results(project_dir, params, registry, tags=version_tags, record=record)
            decision = decide_champion(registry, project_dir, params, version)
            model_info = {
                "model_version": version.version,
                "model_registered": version.run_id == run.info.run_id,
                "champion": decision.champion,
                "champion_decision": decision.decision,
                "champion_reason": decision.reason,
            }
            tracking.set_tags(
                {
                    "model.version": f"{REGISTERED_MODEL}/{version.version}",
                    "model.registered": str(model_info["model_registered"]).lower(),
                    "champion.version": decision.champion,
                    "champion.decision": decision.decision,
                }
            )
            logger.info(
                "model %s/%s (%s); champion %s/%s: %s (%s)",
                REGISTERED_MODEL,
                version.version,
                "registered now" if model_info["model_registered"] else "checkpoint already registered",
                REGISTERED_MODEL,
                decision.champion,
                decision.decision,
                decision.reason,
            )
        prepared = {Path(p).name: project_dir / p for p in outputs["prepare"]}
        tracking.log_file(prepared["summary.json"], "dataset")
        counts = json.loads(prepared["counts.json"].read_text())
        tracking.log_metrics({f"dataset.{k}": v for k, v in counts.items()})
        logger.info("MLflow run %s in %s", run.info.run_id, tracking.tracking_uri(state))
        return {"run_id": run.info.run_id, "stages": results, **model_info}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Run the hpmcore pipeline (DVC stages) as a Prefect flow.")
    parser.add_argument("--project-dir", type=Path, default=PROJECT_DIR)
    parser.add_argument("--experiment", default="hpmcore-pipeline", help="MLflow experiment name")
    parser.add_argument("--force", action="store_true", help="rerun every stage even if up to date")
    parser.add_argument(
        "--compare", action="store_true", help="also train and evaluate the ablations and baselines"
    )
    args = parser.parse_args(argv)
    try:
        result = pipeline(
            project_dir=args.project_dir, experiment=args.experiment, force=args.force, compare=args.compare
        )
    except LockBusy as exc:
        print(f"flows.pipeline: {exc}", file=sys.stderr)
        return EXIT_BUSY
    print(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
