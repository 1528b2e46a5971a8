"""`hpmcore lineage show / verify / models` on a model the real pipeline flow registered (DVC, Prefect,
MLflow SQLite store), with tampered files: a feature cache entry, a re-encoded video, an edited
checkpoint."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import av
import numpy as np
import pyarrow.parquet as pq
import pytest
import yaml
from pipeline_project import PROJECT, TINY_EVAL, TINY_TRAIN, copy_pipeline, project_env, run_ok

from hpmcore.data.render import write_mp4
from hpmcore.extraction.cache import sha256_file

pytestmark = pytest.mark.slow

SYNTH = {"seed": 5, "num_dives": 10, "width": 64, "height": 64, "min_frames": 30, "max_frames": 40}


@pytest.fixture(scope="module")
def project(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny project after one run of the pipeline flow: hpmcore/1 registered and champion."""
    tmp = tmp_path_factory.mktemp("lineage")
    project = copy_pipeline(
        tmp / "project",
        synth=SYNTH,
        train=TINY_TRAIN,
        eval=TINY_EVAL,
    )
    env = {**project_env(tmp), "PREFECT_HOME": str(tmp / "prefect")}
    run_ok([sys.executable, "-m", "flows.pipeline", "--project-dir", str(project)], PROJECT, env)
    return project


def lineage(project: Path, *args: str, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    cmd = [sys.executable, "-m", "hpmcore.cli", "lineage", *args]
    env = project_env(project.parent)
    return subprocess.run(cmd, cwd=cwd or project, env=env, capture_output=True, text=True, check=False)


def test_show_prints_the_whole_chain(project: Path) -> None:
    proc = lineage(project, "show", "--model", "hpmcore@champion", "--json")
    assert proc.returncode == 0, proc.stderr
    shown = json.loads(proc.stdout)
    rec, model = shown["record"], shown["model"]
    assert (model["name"], model["version"], model["aliases"]) == ("hpmcore", "1", ["champion"])
    head = run_ok(["git", "rev-parse", "HEAD"], project).strip()
    assert rec["git"]["git.commit"] == head
    params = yaml.safe_load((project / "params.yaml").read_text())
    assert rec["params"]["synth"] == params["synth"] and rec["params"]["train"]["epochs"] == 2
    lock = yaml.safe_load((project / "dvc.lock").read_text())
    for stage, outs in rec["dvc_outputs"].items():
        assert outs == {o["path"]: o["md5"] for o in lock["stages"][stage]["outs"]}
    dives = {d["id"]: d for d in pq.read_table(project / "data/prepared/dives.parquet").to_pylist()}
    assert sorted(d["id"] for d in rec["dataset"]) == sorted(dives)
    for d in rec["dataset"]:
        assert d["split"] == dives[d["id"]]["split"]
        assert d["sha256"] == sha256_file(project / d["source"]) and d["source"].endswith(".mp4")
    assert sorted(i for ids in rec["splits"].values() for i in ids) == sorted(dives)
    assert rec["features"]["weights"]["i3d"]["sha256"] == "random-init"
    assert rec["features"]["sha256"] == sha256_file(project / "data/features/manifest.parquet")
    assert rec["skeletons"]["sha256"] == sha256_file(project / "data/pose/skeletons.parquet")
    assert rec["skeletons"]["metadata"]["backend"] == "annotations"
    assert rec["checkpoint"]["sha256"] == sha256_file(project / "data/model/checkpoints/best.pt")
    entries = [f for f in rec["files"] if f.startswith("data/features/cache/")]
    assert len(entries) == len(dives) and all(rec["files"][f] == sha256_file(project / f) for f in entries)
    assert shown["environment"]["video"]["libx264"].startswith("x264")
    assert shown["environment"]["torch"]["num_threads"] >= 1

    # the same record by version and by run id; the text form names each part
    by_version = json.loads(lineage(project, "show", "--model", "hpmcore/1", "--json").stdout)
    by_run = json.loads(lineage(project, "show", "--model", shown["run"]["run_id"], "--json").stdout)
    assert by_version["record"] == by_run["record"] == rec
    text = lineage(project, "show", "--model", "hpmcore@champion").stdout
    parts = ["model      hpmcore/1 (@champion)", f"git        {head}", "dataset    10 dives", "skeletons"]
    parts += ["features", "checkpoint data/model/checkpoints/best.pt", "environment", "synth.seed = 5"]
    for part in parts:
        assert part in text, part

    missing = lineage(project, "show", "--model", "hpmcore@nope")
    assert missing.returncode == 2 and "hpmcore/1 (@champion)" in missing.stderr, missing.stderr


def _reencode(video: Path) -> None:
    """Decode ``video`` and encode its frames again (another quality): same dive, other bytes."""
    with av.open(str(video)) as container:
        frames = [f.to_ndarray(format="rgb24") for f in container.decode(video=0)]
    write_mp4(iter(np.stack(frames)[:, ::-1].copy()), video, fps=25)  # mirrored: a visible change


def test_verify_names_every_file_that_no_longer_matches(project: Path) -> None:
    ok = lineage(project, "verify", "--model", "hpmcore@champion")
    assert ok.returncode == 0, ok.stdout + ok.stderr
    assert "OK" in ok.stdout.splitlines()[-1]

    rec = json.loads(lineage(project, "show", "--model", "hpmcore/1", "--json").stdout)["record"]
    entry = next(f for f in rec["files"] if f.startswith("data/features/cache/"))
    video = next(d["source"] for d in rec["dataset"])
    checkpoint = rec["checkpoint"]["path"]
    backup = project.parent / "backup"
    backup.mkdir()
    for rel in (entry, video, checkpoint):
        shutil.copy2(project / rel, backup / Path(rel).name)

    data = bytearray((project / entry).read_bytes())
    data[-1] ^= 0xFF  # one byte of the feature entry
    (project / entry).write_bytes(bytes(data))
    proc = lineage(project, "verify", "--model", "hpmcore@champion")
    assert proc.returncode == 1 and f"MISMATCH {entry}:" in proc.stdout, proc.stdout
    assert "FAILED: 1 mismatches" in proc.stdout
    shutil.copy2(backup / Path(entry).name, project / entry)

    _reencode(project / video)
    with open(project / checkpoint, "ab") as f:
        f.write(b"\0")
    report = lineage(project, "verify", "--model", "hpmcore/1", "--json")
    assert report.returncode == 1
    found = json.loads(report.stdout)
    assert not found["ok"]
    assert {m["path"] for m in found["mismatches"]} == {video, checkpoint}
    assert all(m["restorable"] for m in found["mismatches"])  # the DVC cache still has the recorded bytes

    # ... and DVC restores them from its cache, as the message says
    assert {m["output"] for m in found["mismatches"]} == {"data/synth", "data/model/checkpoints"}
    text = lineage(project, "verify", "--model", "hpmcore/1").stdout
    assert f"MISMATCH {video}: " in text and "`dvc checkout --force data/synth` restores it" in text
    run_ok(
        [sys.executable, "-m", "dvc", "checkout", "--force", "data/synth", "data/model/checkpoints"], project
    )
    assert sha256_file(project / video) == sha256_file(backup / Path(video).name)
    assert lineage(project, "verify", "--model", "hpmcore@champion").returncode == 0


def test_models_lists_the_versions_that_used_a_dive(project: Path, tmp_path: Path) -> None:
    rec = json.loads(lineage(project, "show", "--model", "hpmcore/1", "--json").stdout)["record"]
    train_id, test_id = rec["splits"]["train"][0], rec["splits"]["test"][0]
    rows = json.loads(lineage(project, "models", "--video", train_id, "--json").stdout)
    assert [(r["model"], r["role"], r["aliases"]) for r in rows] == [("hpmcore/1", "trained", ["champion"])]
    text = lineage(project, "models", "--video", test_id).stdout
    assert "hpmcore/1 (@champion)  evaluated (test split)" in text
    none = lineage(project, "models", "--video", "no/such-dive")
    assert none.returncode == 0 and "no registered model version" in none.stdout

    # from elsewhere, with the store and the project named
    uri = f"sqlite:///{project.parent / '.hpmcore/mlflow.db'}"
    away = lineage(project, "models", "--video", train_id, "--tracking-uri", uri, "--json", cwd=tmp_path)
    assert json.loads(away.stdout) == rows
    args = ("verify", "--model", "hpmcore/1", "--tracking-uri", uri, "--project-dir", str(project))
    assert lineage(project, *args, cwd=tmp_path).returncode == 0
