"""The pipeline spine for real: DVC in a temporary git repo, the Prefect flow, the MLflow SQLite store."""

from __future__ import annotations

import json
import math
import re
import subprocess
import sys
from pathlib import Path

import mlflow
import mlflow.pyfunc
import pandas as pd
import pyarrow.compute as pc
import pyarrow.csv as pacsv
import pyarrow.parquet as pq
import pytest
import yaml
from pipeline_project import (
    PROJECT,
    TINY_EVAL,
    TINY_TRAIN,
    copy_pipeline,
    project_env,
    repro,
    run_ok,
    set_params,
)

from hpmcore.data.canonical import read_annotations
from hpmcore.tracking import mlflow as tracking

TINY_SYNTH = {
    "seed": 5,
    "num_dives": 8,
    "width": 64,
    "height": 64,
    "min_frames": 30,
    "max_frames": 40,
    "test_fraction": 0.25,
}

ALL_STAGES = {"synth", "prepare", "decode", "pose", "features", "train", "evaluate"}

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
    return copy_pipeline(tmp_path / "project", synth=TINY_SYNTH, train=TINY_TRAIN, eval=TINY_EVAL)


def test_dvc_repro_is_reproducible_and_incremental(project: Path) -> None:
    ran, _ = repro(project)
    assert ran == ALL_STAGES
    synth = read_annotations(project / "data/synth/annotations.parquet")
    dives = read_annotations(project / "data/prepared/dives.parquet")
    assert synth.num_rows == dives.num_rows == TINY_SYNTH["num_dives"]
    assert len(list((project / "data/synth/videos").glob("*.mp4"))) == TINY_SYNTH["num_dives"]
    assert (project / "dvc.lock").is_file()

    ran, out = repro(project)
    assert ran == set(), out
    assert "Data and pipelines are up to date" in out

    # the training seed feeds `prepare` (validation split) and the model stages, not the dataset
    # generator; `decode` and `pose` read the re-split dive table but reuse every cached video, so
    # `features` has nothing to do. Seed 3 moves the one validation dive of these 8 (synth_000/4 -> /6);
    # a seed that drew the same dive (11 does) would leave the table as it was and rerun only `prepare`
    set_params(project, seed=3)
    ran, _ = repro(project)
    assert ran == {"prepare", "decode", "pose", "train", "evaluate"}

    # the synth seed changes the dataset and hence everything downstream
    set_params(project, synth={"seed": 6})
    diff = run_ok([sys.executable, "-m", "dvc", "params", "diff"], project)
    assert re.search(r"synth\.seed\s+5\s+6", diff), diff
    assert re.search(r"seed\s+0\s+3", diff), diff
    ran, _ = repro(project)
    assert ran == ALL_STAGES
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

    # training: per-epoch metrics at step = epoch; evaluation metrics and plot data
    assert run.data.tags["stage.train"] == "ran" and run.data.tags["stage.evaluate"] == "ran"
    losses = client.get_metric_history(run.info.run_id, "train.loss")
    assert sorted(m.step for m in losses) == list(range(TINY_TRAIN["epochs"]))
    assert [m.step for m in client.get_metric_history(run.info.run_id, "train.lr")] == [0, 1]
    assert run.data.metrics["evaluate.num_queries"] >= 1
    eval_metrics = json.loads(tracking.read_artifact_text(state, run.info.run_id, "evaluate/metrics.json"))
    assert eval_metrics == json.loads((project / "data/eval/metrics.json").read_text())
    # the selected checkpoint in the model registry, with a signature and lineage on the version
    version = client.get_model_version("hpmcore", "1")
    assert version.run_id == run.info.run_id
    assert version.tags["git.commit"] == head
    assert version.tags["dvc.out.data/model/checkpoints"] == next(
        o["md5"] for o in lock["stages"]["train"]["outs"] if o["path"] == "data/model/checkpoints"
    )
    # it is the video scorer (python_function): a test dive's video → the evaluate stage's prediction
    mlflow.set_tracking_uri(tracking.tracking_uri(state))
    info = mlflow.models.get_model_info("models:/hpmcore/1")
    assert info.flavors["python_function"]["loader_module"] == "hpmcore.serving.pyfunc"
    assert {"video", "video_path", "dive_number"} <= set(info.signature.inputs.input_names())
    scorer = mlflow.pyfunc.load_model("models:/hpmcore/1")
    dive = next(
        d
        for d in read_annotations(project / "data/prepared/dives.parquet").to_pylist()
        if d["split"] == "test"
    )
    skeletons = pq.read_table(project / "data/synth/skeletons.parquet")
    pose = project.parent / "pose.parquet"  # the dive's skeleton, as the pose stage imported it
    pq.write_table(skeletons.filter(pc.equal(skeletons["id"], dive["id"])), pose)
    row = {
        "video_path": str(project / "data/synth" / dive["video_path"]),
        "dive_number": dive["dive_number"],
        "pose_path": str(pose),
        "query_id": dive["id"],  # the evaluation's voter draws
    }
    out = scorer.predict(pd.DataFrame([row]))
    predicted = pacsv.read_csv(project / "data/eval/predictions.csv").to_pylist()
    assert out["score"][0] == pytest.approx(
        next(r["predicted_score"] for r in predicted if r["id"] == dive["id"]), rel=1e-5
    )

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


def _stage(project: Path, script: str, *extra: str) -> subprocess.CompletedProcess[str]:
    """Run a model stage script directly (as dvc.yaml does) and return the finished process."""
    cmd = [
        sys.executable,
        f"stages/{script}.py",
        "--params",
        "params.yaml",
        "--dives",
        "data/prepared/dives.parquet",
        "--decoded",
        "data/decoded",
        "--pose",
        "data/pose",
        "--features",
        "data/features",
        *extra,
    ]
    env = project_env(project.parent)
    return subprocess.run(cmd, cwd=project, env=env, capture_output=True, text=True, check=False)


def test_model_stages_train_evaluate_reproducibly_and_fail_cleanly(project: Path) -> None:
    ran, _ = repro(project)
    assert ran == ALL_STAGES
    dives = read_annotations(project / "data/prepared/dives.parquet").to_pylist()
    test_ids = sorted(d["id"] for d in dives if d["split"] == "test")
    metrics_path = project / "data/eval/metrics.json"
    metrics = json.loads(metrics_path.read_text())
    assert metrics["split"] == "test" and metrics["num_queries"] == len(test_ids) > 0
    assert metrics["voters"]["num_voter_draws"] == TINY_EVAL["num_voter_draws"]
    assert {"rho", "rho_std", "l2", "rl2_x100", "tiou", "aiou_50", "aiou_75"} <= metrics.keys()
    assert metrics["checkpoint_epoch"] in (0, 1)
    predictions = pacsv.read_csv(project / "data/eval/predictions.csv").to_pylist()
    assert sorted(r["id"] for r in predictions) == test_ids
    assert all(math.isfinite(r["predicted_score"]) for r in predictions)
    history = json.loads((project / "data/model/history.json").read_text())
    assert [h["epoch"] for h in history] == [0, 1] and all("loss" in h and "lr" in h for h in history)
    assert (project / "data/model/checkpoints/best.pt").is_file()

    # same checkpoint + seed -> byte-identical metrics file
    before = metrics_path.read_bytes()
    run_ok([sys.executable, "-m", "dvc", "repro", "--force", "--single-item", "evaluate"], project)
    assert metrics_path.read_bytes() == before

    # a features manifest without a test video: exit 2 naming the video, nothing written
    manifest_path = project / "data/features/manifest.parquet"
    manifest = pq.read_table(manifest_path)
    missing = test_ids[0]
    pq.write_table(manifest.filter(pc.not_equal(manifest.column("id"), missing)), manifest_path)
    proc = _stage(project, "evaluate", "--model", "data/model", "--out", "data/eval")
    assert proc.returncode == 2 and missing in proc.stderr and "manifest.parquet" in proc.stderr, proc.stderr
    assert metrics_path.read_bytes() == before
    # no features manifest at all: exit 2 naming it (no traceback), nothing written
    manifest_path.unlink()
    proc = _stage(project, "evaluate", "--model", "data/model", "--out", "data/eval")
    assert proc.returncode == 2 and "features/manifest.parquet" in proc.stderr, proc.stderr
    assert "Traceback" not in proc.stderr and metrics_path.read_bytes() == before
    pq.write_table(manifest, manifest_path)

    # a checkpoint written for another model configuration: exit 2 naming the file and the key
    set_params(project, model={"dim": 32})
    proc = _stage(project, "evaluate", "--model", "data/model", "--out", "data/eval")
    assert proc.returncode == 2 and "best.pt" in proc.stderr and "dim" in proc.stderr, proc.stderr
    assert metrics_path.read_bytes() == before


def test_comparison_table_from_one_command(project: Path) -> None:
    set_params(project, compare={"seeds": 2, "bootstrap": 200})
    out = run_ok([sys.executable, "-m", "dvc", "repro", "compare/dvc.yaml"], project)
    # compare needs the extraction stages, not the train/evaluate stages of the main pipeline
    assert re.search(r"Running stage '[\w/.:]*compare'", out) and "Running stage 'train'" not in out, out
    table = json.loads((project / "data/compare/comparison.json").read_text())
    names = [r["name"] for r in table["rows"]]
    assert names == [
        "HP-MCoRe",
        "+ splash-aware loss",
        "w/o skeleton",
        "w/o static branch",
        "with I3D tokens",
        "w/o segmentation (thirds)",
        "w/o contrastive loss",
        "CoRe-style (I3D only)",
        "dive-number mean",
        "DD only",
    ]
    test_count = sum(
        1
        for d in read_annotations(project / "data/prepared/dives.parquet").to_pylist()
        if d["split"] == "test"
    )
    assert all(r["num_queries"] == test_count for r in table["rows"])
    assert all(len(r["per_seed"]) == 2 for r in table["rows"] if r["kind"] in ("hpmcore", "core"))
    rows = table["rows"]
    assert rows[0]["vs_reference"] is None and rows[-1]["vs_reference"]["rho"]["resamples"] == 200
    predictions = (project / "data/compare/predictions.csv").read_text().splitlines()
    assert predictions[0] == '"variant","seed","id","difficulty","true_score","predicted_score"'
    assert len(predictions) == 1 + test_count * (2 * 8 + 2)  # 8 trained rows x 2 seeds, 2 table-only rows
    markdown = (project / "data/compare/comparison.md").read_text()
    assert all(f"| {name} |" in markdown for name in names)
    # the main pipeline's `dvc repro` does not run the comparison
    ran, out = repro(project)
    assert ran == {"train", "evaluate"} and "compare" not in out
