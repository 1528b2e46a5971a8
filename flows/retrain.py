"""Scheduled retraining: when data, params or code changed (``dvc status``), reproduce the pipeline,
register the new checkpoint and let it replace the ``champion`` only when it is better on validation.

One run of the ``hpmcore-retrain`` flow:

1. takes the state folder's lock (:mod:`flows.lock`): a second run at the same time exits with a
   message naming the holder, or waits ``retrain.lock_wait_s`` seconds;
2. marks ``KILLED`` the MLflow runs a killed process left ``RUNNING``;
3. asks DVC what changed (``dvc status dvc.yaml``); when nothing did and the workspace's checkpoint is
   registered with a champion decision, it stops there (``up-to-date``);
4. otherwise runs the pipeline flow (:func:`flows.pipeline.pipeline`, a subflow): ``dvc repro`` stage by
   stage (an interrupted training resumes after its last complete epoch), the MLflow run, the
   registration of a new checkpoint (only a new one) and the champion decision (:mod:`flows.registry`);
5. ``dvc push`` of the outputs to the default remote (``retrain.push``).

Prefect retries only the I/O steps (``dvc status``, the registration, ``dvc push``), never a stage.

    python -m flows.retrain run [--project-dir DIR] [--force]        # once, now
    python -m flows.retrain serve [--project-dir DIR] [--start-server] [--port 4200]
                                   # the deployment with the cron schedule of params.yaml (retrain.cron)

``serve`` needs a Prefect server (``PREFECT_API_URL``); ``--start-server`` starts one on 127.0.0.1
(what ``make serve`` does). Exit status of ``run``: 0 done or up to date, 3 another run holds the lock.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

from dvc.repo import Repo
from prefect import flow, get_run_logger, task
from prefect.cache_policies import NO_CACHE
from prefect.schedules import Cron

from flows.lock import LockBusy, project_lock
from flows.pipeline import EXIT_BUSY, MODEL_DIR, pid_alive, pipeline, stage_name
from flows.registry import CHAMPION, CHECKPOINT_TAG, DECISION_TAG, REGISTERED_MODEL
from flows.server import api_url, start_server, stop_server
from flows.settings import PROJECT_DIR, state_dir
from hpmcore.config import load_params
from hpmcore.extraction.cache import sha256_file
from hpmcore.tracking import mlflow as tracking
from hpmcore.training.checkpoints import BEST, CHECKPOINTS

DEPLOYMENT = "hpmcore-retrain"
EXPERIMENT = "hpmcore-retrain"
DEFAULT_PORT = 4200


@task(name="dvc-status", retries=2, retry_delay_seconds=5, cache_policy=NO_CACHE)
def changed_stages(project_dir: Path) -> list[str]:
    """The stages of ``dvc.yaml`` whose deps, params or outputs changed (``dvc status dvc.yaml``)."""
    with Repo(str(project_dir)) as repo:
        status = repo.status(targets=[str(Path(project_dir) / "dvc.yaml")])
    return sorted(stage_name(address) for address in status)


@task(name="dvc-push", retries=3, retry_delay_seconds=10, cache_policy=NO_CACHE)
def push_outputs(project_dir: Path) -> str:
    """``dvc push dvc.yaml``: every cached output of the pipeline to the default remote.

    Raises:
        RuntimeError: DVC failed (retried: a remote can be briefly unreachable).
    """
    cmd = [sys.executable, "-m", "dvc", "push", "dvc.yaml"]
    proc = subprocess.run(cmd, cwd=project_dir, capture_output=True, text=True, check=False)
    out = (proc.stdout + proc.stderr).strip()
    if proc.returncode != 0:
        raise RuntimeError(f"dvc push failed (exit {proc.returncode}):\n{out[-3000:]}")
    return out.splitlines()[-1] if out else ""


@flow(name="hpmcore-retrain", log_prints=True)
def retrain(
    project_dir: Path = PROJECT_DIR,
    experiment: str = EXPERIMENT,
    force: bool = False,
    lock_wait_s: float | None = None,
) -> dict[str, Any]:
    """Retrain when something changed, and decide the champion (see the module docstring).

    ``lock_wait_s`` overrides ``retrain.lock_wait_s`` of params.yaml.

    Returns:
        ``{"status": "busy" | "up-to-date" | "retrained", ...}``: for ``busy`` the ``message``; for
        ``up-to-date`` the ``model_version`` and ``champion``; for ``retrained`` the ``changed`` stages and
        the pipeline flow's result (``run_id``, ``model_version``, ``champion``, ``champion_decision``,
        ``champion_reason``, ...) and ``pushed``.
    """
    logger = get_run_logger()
    project_dir = Path(project_dir).resolve()
    state = state_dir(project_dir)
    params = load_params(project_dir / "params.yaml")
    try:
        wait_s = params.retrain.lock_wait_s if lock_wait_s is None else lock_wait_s
        with project_lock(state, what="retrain", wait_s=wait_s):
            return _retrain(project_dir, state, experiment, force, push=params.retrain.push)
    except LockBusy as exc:
        logger.warning("%s", exc)
        return {"status": "busy", "message": str(exc)}


def _retrain(project_dir: Path, state: Path, experiment: str, force: bool, *, push: bool) -> dict[str, Any]:
    logger = get_run_logger()
    registry = tracking.Registry.at(state)
    for run_id in registry.end_stale_runs(pid_alive):
        logger.warning("MLflow run %s was left RUNNING by a process that is gone: marked KILLED", run_id)
    changed = changed_stages(project_dir)
    checkpoint = project_dir / MODEL_DIR / CHECKPOINTS / BEST
    current = (
        registry.find(REGISTERED_MODEL, CHECKPOINT_TAG, sha256_file(checkpoint))
        if checkpoint.is_file()
        else None
    )
    champion = registry.by_alias(REGISTERED_MODEL, CHAMPION)
    decided = (
        current is not None
        and champion is not None
        and (current.version == champion.version or DECISION_TAG in current.tags)
    )
    if not changed and not force and decided:
        assert current is not None and champion is not None
        logger.info(
            "nothing changed (dvc status): the workspace holds %s; champion %s", current.ref, champion.ref
        )
        return {"status": "up-to-date", "model_version": current.version, "champion": champion.version}
    logger.info("changed stages: %s", ", ".join(changed) or "none (model not registered or decided yet)")
    result = pipeline(project_dir=project_dir, experiment=experiment)
    pushed = push_outputs(project_dir) if push else "push disabled (retrain.push)"
    logger.info("dvc push: %s", pushed)
    return {"status": "retrained", "changed": changed, **result, "pushed": pushed}


def serve(project_dir: Path, name: str = DEPLOYMENT) -> None:
    """Create (or update) the deployment ``hpmcore-retrain/<name>`` with ``retrain.cron`` in
    ``retrain.timezone`` on the Prefect server of ``PREFECT_API_URL``, and run its flow runs until
    interrupted."""
    cfg = load_params(Path(project_dir) / "params.yaml").retrain
    retrain.serve(
        name=name,
        schedules=[Cron(cfg.cron, timezone=cfg.timezone)],
        parameters={"project_dir": str(Path(project_dir).resolve())},
        description="Retrain hpmcore when data or params changed; move `champion` only for a better model.",
        pause_on_shutdown=False,
    )


def serve_with_server(project_dir: Path, port: int) -> int:
    """Start a Prefect server on 127.0.0.1:``port`` (database in the state folder), then serve the
    deployment against it in a child process; stop both on Ctrl-C."""
    state = state_dir(project_dir)
    home = state / "prefect-server"
    with open(state / "prefect-server.log", "ab") as log:
        server = start_server(home, port, log)
        url = api_url(port)
        print(
            f"Prefect server: {url} (log: {state / 'prefect-server.log'}); serving {DEPLOYMENT}", flush=True
        )
        env = {**os.environ, "PREFECT_API_URL": url}
        cmd = [sys.executable, "-m", "flows.retrain", "serve", "--project-dir", str(project_dir)]
        child = subprocess.Popen(cmd, env=env, cwd=Path(__file__).resolve().parents[1])
        try:
            return child.wait()
        except KeyboardInterrupt:
            child.terminate()
            return child.wait()
        finally:
            stop_server(server)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    run = sub.add_parser("run", help="one retraining run now")
    run.add_argument("--project-dir", type=Path, default=PROJECT_DIR)
    run.add_argument("--experiment", default=EXPERIMENT, help="MLflow experiment name")
    run.add_argument("--force", action="store_true", help="run the pipeline even if nothing changed")
    run.add_argument("--lock-wait", type=float, default=None, help="seconds to wait for another run")
    srv = sub.add_parser("serve", help="serve the scheduled deployment (needs a Prefect server)")
    srv.add_argument("--project-dir", type=Path, default=PROJECT_DIR)
    srv.add_argument("--start-server", action="store_true", help="start a Prefect server on 127.0.0.1")
    srv.add_argument("--port", type=int, default=DEFAULT_PORT, help="its port (with --start-server)")
    args = parser.parse_args(argv)
    if args.command == "serve":
        if args.start_server:
            return serve_with_server(args.project_dir.resolve(), args.port)
        if not os.environ.get("PREFECT_API_URL"):
            print("flows.retrain: serve needs PREFECT_API_URL (or --start-server)", file=sys.stderr)
            return 2
        serve(args.project_dir)
        return 0
    result = retrain(
        project_dir=args.project_dir, experiment=args.experiment, force=args.force, lock_wait_s=args.lock_wait
    )
    print(json.dumps(result, indent=2, default=str))
    if result["status"] == "busy":
        print(f"flows.retrain: {result['message']}", file=sys.stderr)
        return EXIT_BUSY
    return 0


if __name__ == "__main__":
    sys.exit(main())
