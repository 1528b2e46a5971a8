"""Scheduled retraining for real: a Prefect server on loopback, the served deployment with its cron
schedule, runs triggered through the server's API, the MLflow registry's ``champion`` alias, a SIGKILL
in the middle of training, and two runs started at once.

The tests share one project and one server and run in file order (each starts from the registry the
previous one left). Tiny config: 24 dives of 30-40 frames at 64x64, 2 epochs.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from pipeline_project import PROJECT, TINY_EVAL, TINY_TRAIN, copy_pipeline, project_env, set_params

from flows.registry import CHAMPION, CHECKPOINT_ARTIFACT, CHECKPOINT_TAG, DECISION_TAG, REASON_TAG
from flows.server import api_url, start_server, stop_server
from hpmcore.extraction.cache import sha256_file
from hpmcore.tracking.lineage import RECORD_ARTIFACT
from hpmcore.tracking.mlflow import Registry

pytestmark = pytest.mark.slow

CRON = "17 4 1 1 *"
"""Once a year (never during a test): the runs here are triggered through the API."""
SYNTH = {"seed": 5, "num_dives": 24, "width": 64, "height": 64, "min_frames": 30, "max_frames": 40}
FLOW_TIMEOUT_S = 900


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _api(url: str, method: str, path: str, body: Any = None, attempts: int = 10) -> Any:
    """One call of the server's REST API; a 503 (its SQLite database busy on a loaded machine) is
    retried, as Prefect's own client does."""
    data = None if body is None else json.dumps(body).encode()
    for attempt in range(attempts):
        request = urllib.request.Request(
            f"{url}{path}", data=data, method=method, headers={"Content-Type": "application/json"}
        )
        try:
            with urllib.request.urlopen(request, timeout=60) as response:
                return json.loads(response.read() or "null")
        except urllib.error.HTTPError as exc:
            if exc.code != 503 or attempt == attempts - 1:
                raise
            time.sleep(2)
    raise AssertionError("unreachable")


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A real Prefect server on a free loopback port (the same helper `make serve` uses)."""
    home = tmp_path_factory.mktemp("prefect-server")
    port = _free_port()
    with open(home / "server.log", "wb") as log:
        proc = start_server(home, port, log)
        try:
            yield api_url(port)
        finally:
            stop_server(proc)


@pytest.fixture(scope="module")
def project(tmp_path_factory: pytest.TempPathFactory) -> Path:
    tmp = tmp_path_factory.mktemp("retrain")
    return copy_pipeline(
        tmp / "project",
        synth=SYNTH,
        data={"val_fraction": 0.5},  # 5 validation dives: a defined rho
        train=TINY_TRAIN,
        eval=TINY_EVAL,
        # RL2 decides: a diverged model's is off by orders of magnitude, while rho on 5 validation dives
        # moves in steps of 0.1 and a diverged model can rank them as well as a good one by chance
        retrain={"cron": CRON, "metric": "rl2_x100", "margin": 0.01},
    )


@pytest.fixture(scope="module")
def env(project: Path, server: str) -> dict[str, str]:
    tmp = project.parent
    return {
        **project_env(tmp),
        "PREFECT_API_URL": server,
        "PREFECT_HOME": str(tmp / "prefect-client"),
        "PREFECT_RUNNER_POLL_FREQUENCY": "2",
        "HOME": str(tmp / "home"),  # the DVC remote of .dvc/config (~/.cache/hpmcore/dvc-remote)
    }


def _registry(project: Path) -> Registry:
    return Registry.at(project.parent / ".hpmcore")


def _retrain(project: Path, env: dict[str, str], log: Path, *extra: str) -> subprocess.Popen:
    """``python -m flows.retrain run`` in its own process group, output to ``log``."""
    cmd = [sys.executable, "-m", "flows.retrain", "run", "--project-dir", str(project), *extra]
    with open(log, "wb") as out:
        return subprocess.Popen(
            cmd, cwd=PROJECT, env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True
        )


def _assert_consistent(registry: Registry, tmp: Path) -> None:
    """One version per checkpoint, each complete (lineage tags, decision, artifacts), champion on one."""
    versions = registry.versions("hpmcore")
    assert versions
    digests = [v.tags[CHECKPOINT_TAG] for v in versions]
    assert len(set(digests)) == len(digests), digests
    for v in versions:
        assert {"git.commit", "dvc.lock.sha256", DECISION_TAG, REASON_TAG} <= v.tags.keys(), v
        assert registry.artifact_text(v.run_id, RECORD_ARTIFACT) is not None
        local = registry.download(v.run_id, CHECKPOINT_ARTIFACT, tmp / f"check-{v.version}")
        assert sha256_file(local) == v.tags[CHECKPOINT_TAG]
    (champion,) = [v for v in versions if CHAMPION in v.aliases]
    assert champion.tags[DECISION_TAG] == "champion"


def test_served_deployment_promotes_the_first_model_and_keeps_it_against_a_worse_one(
    project: Path, env: dict[str, str], server: str, tmp_path: Path
) -> None:
    log = project.parent / "serve.log"
    with open(log, "wb") as out:
        serve = subprocess.Popen(
            [sys.executable, "-m", "flows.retrain", "serve", "--project-dir", str(project)],
            cwd=PROJECT,
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    try:
        deadline = time.monotonic() + 300
        while True:
            try:
                deployment = _api(server, "GET", "/deployments/name/hpmcore-retrain/hpmcore-retrain")
                break
            except OSError:
                assert serve.poll() is None and time.monotonic() < deadline, log.read_text()[-3000:]
                time.sleep(2)
        ((schedule,),) = [[s["schedule"] for s in deployment["schedules"] if s["active"]]]
        assert (schedule["cron"], schedule["timezone"]) == (CRON, "UTC")
        assert deployment["parameters"]["project_dir"] == str(project)

        def trigger() -> dict[str, Any]:
            run = _api(server, "POST", f"/deployments/{deployment['id']}/create_flow_run", {})
            deadline = time.monotonic() + FLOW_TIMEOUT_S
            while time.monotonic() < deadline:
                run = _api(server, "GET", f"/flow_runs/{run['id']}")
                if run["state"]["type"] in ("COMPLETED", "FAILED", "CRASHED", "CANCELLED"):
                    assert run["state"]["type"] == "COMPLETED", log.read_text()[-5000:]
                    return run
                time.sleep(3)
            raise AssertionError(
                f"flow run not finished after {FLOW_TIMEOUT_S} s:\n{log.read_text()[-3000:]}"
            )

        trigger()
        registry = _registry(project)
        (first,) = registry.versions("hpmcore")
        assert first.aliases == (CHAMPION,)
        assert first.tags[DECISION_TAG] == "champion" and first.tags[REASON_TAG] == "first registered model"
        remote = project.parent / "home/.cache/hpmcore/dvc-remote"
        assert any(remote.rglob("*")), "dvc push after retraining"

        # a worse candidate on purpose: a learning rate 500x too high (the model diverges)
        set_params(project, train={"lr": 0.5})
        trigger()
        versions = registry.versions("hpmcore")
        assert [v.version for v in versions] == ["1", "2"]
        worse = versions[1]
        assert registry.by_alias("hpmcore", CHAMPION).version == "1"
        assert worse.tags[DECISION_TAG] == "rejected" and worse.tags["champion.compared_with"] == "1"
        rl2, champion_rl2 = float(worse.tags["val.rl2_x100"]), float(worse.tags["val.rl2_x100.champion"])
        assert rl2 > champion_rl2 + 0.01, worse.tags
        assert "does not beat champion hpmcore/1" in worse.tags[REASON_TAG]

        # nothing changed: the next run stops at `dvc status` and registers nothing
        trigger()
        assert len(registry.versions("hpmcore")) == 2
        _assert_consistent(registry, tmp_path)
    finally:
        os.killpg(serve.pid, signal.SIGTERM)
        serve.wait(timeout=60)


def test_sigkill_mid_training_then_rerun_completes_and_leaves_the_registry_consistent(
    project: Path, env: dict[str, str], tmp_path: Path
) -> None:
    registry = _registry(project)
    before = len(registry.versions("hpmcore"))
    set_params(project, train={"lr": 0.001, "epochs": 12})
    last = project / "data/model/checkpoints/last.pt"
    log = project.parent / "killed.log"
    start = time.time()
    proc = _retrain(project, env, log)
    deadline = time.monotonic() + FLOW_TIMEOUT_S
    while not (
        last.is_file() and last.stat().st_mtime > start and "Running stage 'train'" in log.read_text()
    ):
        assert proc.poll() is None and time.monotonic() < deadline, log.read_text()[-3000:]
        time.sleep(0.2)
    assert proc.poll() is None, "training finished before the kill"
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    assert registry.versions("hpmcore")[-1].version == str(before)  # nothing registered by the killed run

    rerun = _retrain(project, env, project.parent / "rerun.log")
    assert rerun.wait(timeout=FLOW_TIMEOUT_S) == 0, (project.parent / "rerun.log").read_text()[-5000:]
    out = (project.parent / "rerun.log").read_text()
    assert "resuming from" in out and "after epoch" in out  # the train stage went on where it was killed
    assert "marked KILLED" in out  # the killed run's MLflow run
    versions = registry.versions("hpmcore")
    assert len(versions) == before + 1
    _assert_consistent(registry, tmp_path)
    killed = [
        r
        for r in registry.client.search_runs(
            [e.experiment_id for e in registry.client.search_experiments()], "attributes.status = 'KILLED'"
        )
    ]
    assert len(killed) == 1


def test_two_runs_started_at_once_do_not_both_train(
    project: Path, env: dict[str, str], tmp_path: Path
) -> None:
    registry = _registry(project)
    before = len(registry.versions("hpmcore"))
    set_params(project, train={"epochs": 3})
    logs = [project.parent / f"concurrent-{i}.log" for i in range(3)]
    procs = [_retrain(project, env, logs[0]), _retrain(project, env, logs[1])]
    procs.append(_retrain(project, env, logs[2], "--lock-wait", "600"))  # this one waits for the lock
    codes = [p.wait(timeout=FLOW_TIMEOUT_S) for p in procs]
    outs = [log.read_text() for log in logs]
    trained = [i for i, out in enumerate(outs) if "Running stage 'train'" in out]
    assert len(trained) == 1, codes
    for i, (code, out) in enumerate(zip(codes, outs, strict=True)):
        if i in trained:
            assert code == 0, out[-3000:]
        elif i < 2:  # no waiting: exit at once naming the holder, or find nothing left to do
            assert (code == 3 and "is running; this retrain run exits" in out) or '"up-to-date"' in out, out
        else:
            assert code == 0 and '"status": "up-to-date"' in out, out[-3000:]
    assert len(registry.versions("hpmcore")) == before + 1
    _assert_consistent(registry, tmp_path)
