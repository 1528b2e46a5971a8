"""The pipeline spine for real: DVC in a temporary git repo, the Prefect flow, the MLflow SQLite store."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pyarrow.parquet as pq
import pytest
import yaml

from hpmcore import tracking
from hpmcore.data.canonical import read_annotations

PROJECT = Path(__file__).resolve().parents[1]
TINY_SYNTH = {
    "seed": 5,
    "num_dives": 8,
    "width": 64,
    "height": 64,
    "min_frames": 30,
    "max_frames": 40,
    "test_fraction": 0.25,
}

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def prefect_home(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One Prefect home for the module: its database is migrated once, not per test (slow on 2 cores).

    It does not exist yet (nor its parent), as on a fresh clone: the flow must create it.
    """
    return tmp_path_factory.mktemp("prefect") / "state" / "prefect"


def _env(tmp: Path, prefect_home: Path | None = None) -> dict[str, str]:
    env = dict(os.environ)
    if prefect_home is not None:
        env["PREFECT_HOME"] = str(prefect_home)
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env['PATH']}"
    env.update(
        DVC_NO_ANALYTICS="1",
        DO_NOT_TRACK="true",
        MLFLOW_DISABLE_TELEMETRY="true",
        HPMCORE_STATE_DIR=str(tmp / ".hpmcore"),
        PYTHONPATH=str(PROJECT),
    )
    return env


def _run(cmd: list[str], cwd: Path, env: dict[str, str]) -> str:
    proc = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, check=False)
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, f"{' '.join(cmd)} failed:\n{out}"
    return out


def _set_params(project: Path, **sections: dict) -> None:
    path = project / "params.yaml"
    params = yaml.safe_load(path.read_text())
    for name, values in sections.items():
        if isinstance(values, dict):
            params[name].update(values)
        else:
            params[name] = values
    path.write_text(yaml.safe_dump(params, sort_keys=False))


@pytest.fixture
def project(tmp_path: Path) -> Path:
    """A copy of the pipeline (code, dvc.yaml, params.yaml, DVC config) in a fresh git repo."""
    dest = tmp_path / "project"
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc")
    for name in ("hpmcore", "stages", "flows"):
        shutil.copytree(PROJECT / name, dest / name, ignore=ignore)
    for name in ("dvc.yaml", "params.yaml", ".gitignore", ".dvc/config", ".dvc/.gitignore"):
        (dest / name).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(PROJECT / name, dest / name)
    _set_params(dest, synth=TINY_SYNTH)
    env = _env(tmp_path)
    _run(["git", "init", "-q", "-b", "main"], dest, env)
    _run(["git", "add", "-A"], dest, env)
    _run(["git", "-c", "user.name=t", "-c", "user.email=t@t", "commit", "-q", "-m", "init"], dest, env)
    return dest


def _repro(project: Path) -> tuple[set[str], str]:
    out = _run([sys.executable, "-m", "dvc", "repro"], project, _env(project.parent))
    return set(re.findall(r"Running stage '([\w@.-]+)'", out)), out


def test_dvc_repro_is_reproducible_and_incremental(project: Path) -> None:
    ran, _ = _repro(project)
    assert ran == {"synth", "prepare", "decode", "pose", "features"}
    synth = read_annotations(project / "data/synth/annotations.parquet")
    dives = read_annotations(project / "data/prepared/dives.parquet")
    assert synth.num_rows == dives.num_rows == TINY_SYNTH["num_dives"]
    assert len(list((project / "data/synth/videos").glob("*.mp4"))) == TINY_SYNTH["num_dives"]
    assert (project / "dvc.lock").is_file()

    ran, out = _repro(project)
    assert ran == set(), out
    assert "Data and pipelines are up to date" in out

    # the training seed feeds only `prepare` (validation split), not the dataset generator; `decode`
    # and `pose` read the re-split dive table but reuse every cached video, so `features` has nothing to do
    _set_params(project, seed=11)
    ran, _ = _repro(project)
    assert ran == {"prepare", "decode", "pose"}

    # the synth seed changes the dataset and hence everything downstream
    _set_params(project, synth={"seed": 6})
    diff = _run([sys.executable, "-m", "dvc", "params", "diff"], project, _env(project.parent))
    assert re.search(r"synth\.seed\s+5\s+6", diff), diff
    assert re.search(r"seed\s+0\s+11", diff), diff
    ran, _ = _repro(project)
    assert ran == {"synth", "prepare", "decode", "pose", "features"}
    regenerated = pq.read_table(project / "data/synth/annotations.parquet")
    assert not regenerated.column("final_score").equals(synth.column("final_score"))

    dag = _run([sys.executable, "-m", "dvc", "dag", "--dot"], project, _env(project.parent))
    assert re.search(r'"synth"\s*->\s*"prepare"', dag), dag


def test_prefect_flow_runs_stages_and_logs_lineage_to_mlflow(project: Path, prefect_home: Path) -> None:
    env = _env(project.parent, prefect_home)
    out = _run(
        [sys.executable, "-m", "flows.pipeline", "--project-dir", str(project), "--experiment", "t"],
        PROJECT,
        env,
    )
    assert "Running stage 'synth'" in out and "Running stage 'prepare'" in out

    state = project.parent / ".hpmcore"
    client = tracking.client(state)
    experiment = client.get_experiment_by_name("t")
    assert experiment is not None
    (run,) = client.search_runs([experiment.experiment_id])
    assert run.info.status == "FINISHED"
    assert run.data.params["synth.num_dives"] == str(TINY_SYNTH["num_dives"])
    assert run.data.params["data.format"] == "synthetic"
    head = _run(["git", "rev-parse", "HEAD"], project, env).strip()
    assert run.data.tags["git.commit"] == head
    assert run.data.tags["stage.synth"] == "ran"
    lock_text = (project / "dvc.lock").read_text()
    assert tracking.read_artifact_text(state, run.info.run_id, "lineage/dvc.lock") == lock_text
    lock = yaml.safe_load(lock_text)
    synth_md5 = next(o["md5"] for o in lock["stages"]["synth"]["outs"] if o["path"] == "data/synth")
    assert run.data.tags["dvc.out.data/synth"] == synth_md5
    summary = yaml.safe_load(tracking.read_artifact_text(state, run.info.run_id, "dataset/summary.json"))
    total = sum(run.data.metrics[f"dataset.{s}"] for s in ("train", "val", "test"))
    assert total == TINY_SYNTH["num_dives"] == summary["num_dives"] == run.data.metrics["dataset.dives"]

    # a second flow run reuses everything: DVC says up to date, MLflow records it as such
    _run(
        [sys.executable, "-m", "flows.pipeline", "--project-dir", str(project), "--experiment", "t"],
        PROJECT,
        env,
    )
    runs = client.search_runs([experiment.experiment_id], order_by=["attributes.start_time DESC"])
    assert len(runs) == 2
    assert runs[0].data.tags["stage.synth"] == "up-to-date"
    assert runs[0].data.tags["dvc.lock.sha256"] == run.data.tags["dvc.lock.sha256"]
