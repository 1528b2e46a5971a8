"""The pipeline spine for real: DVC in a temporary git repo, the Prefect flow, the MLflow SQLite store."""

from __future__ import annotations

import re
import sys
from pathlib import Path

import pyarrow.parquet as pq
import pytest
import yaml
from pipeline_project import PROJECT, copy_pipeline, project_env, repro, run_ok, set_params

from hpmcore import tracking
from hpmcore.data.canonical import read_annotations

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


@pytest.fixture
def project(tmp_path: Path) -> Path:
    """A copy of the pipeline (code, dvc.yaml, params.yaml, DVC config) in a fresh git repo."""
    return copy_pipeline(tmp_path / "project", synth=TINY_SYNTH)


def test_dvc_repro_is_reproducible_and_incremental(project: Path) -> None:
    ran, _ = repro(project)
    assert ran == {"synth", "prepare", "decode", "pose", "features"}
    synth = read_annotations(project / "data/synth/annotations.parquet")
    dives = read_annotations(project / "data/prepared/dives.parquet")
    assert synth.num_rows == dives.num_rows == TINY_SYNTH["num_dives"]
    assert len(list((project / "data/synth/videos").glob("*.mp4"))) == TINY_SYNTH["num_dives"]
    assert (project / "dvc.lock").is_file()

    ran, out = repro(project)
    assert ran == set(), out
    assert "Data and pipelines are up to date" in out

    # the training seed feeds only `prepare` (validation split), not the dataset generator; `decode`
    # and `pose` read the re-split dive table but reuse every cached video, so `features` has nothing to do
    set_params(project, seed=11)
    ran, _ = repro(project)
    assert ran == {"prepare", "decode", "pose"}

    # the synth seed changes the dataset and hence everything downstream
    set_params(project, synth={"seed": 6})
    diff = run_ok([sys.executable, "-m", "dvc", "params", "diff"], project)
    assert re.search(r"synth\.seed\s+5\s+6", diff), diff
    assert re.search(r"seed\s+0\s+11", diff), diff
    ran, _ = repro(project)
    assert ran == {"synth", "prepare", "decode", "pose", "features"}
    regenerated = pq.read_table(project / "data/synth/annotations.parquet")
    assert not regenerated.column("final_score").equals(synth.column("final_score"))

    dag = run_ok([sys.executable, "-m", "dvc", "dag", "--dot"], project)
    assert re.search(r'"synth"\s*->\s*"prepare"', dag), dag


def test_prefect_flow_runs_stages_and_logs_lineage_to_mlflow(project: Path, prefect_home: Path) -> None:
    env = project_env(project.parent, prefect_home)
    out = run_ok(
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
    head = run_ok(["git", "rev-parse", "HEAD"], project, env).strip()
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
    run_ok(
        [sys.executable, "-m", "flows.pipeline", "--project-dir", str(project), "--experiment", "t"],
        PROJECT,
        env,
    )
    runs = client.search_runs([experiment.experiment_id], order_by=["attributes.start_time DESC"])
    assert len(runs) == 2
    assert runs[0].data.tags["stage.synth"] == "up-to-date"
    assert runs[0].data.tags["dvc.lock.sha256"] == run.data.tags["dvc.lock.sha256"]
