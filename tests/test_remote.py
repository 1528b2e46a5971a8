"""The DVC remote of .dvc/config for real: push every stage output, pull it into a fresh clone."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import pytest
import yaml
from pipeline_project import TINY_EVAL, TINY_TRAIN, copy_pipeline, project_env, repro, run_ok

pytestmark = pytest.mark.slow

TINY_SYNTH = {"seed": 7, "num_dives": 8, "width": 64, "height": 64, "min_frames": 30, "max_frames": 40}


def _dvc(*args: str) -> list[str]:
    return [sys.executable, "-m", "dvc", *args]


def _commit(repo: Path, env: dict[str, str], message: str) -> None:
    run_ok(["git", "add", "-A"], repo, env)
    run_ok(["git", "-c", "user.name=t", "-c", "user.email=t@t", "commit", "-q", "-m", message], repo, env)


def test_fresh_clone_pulls_every_stage_output_and_evaluates_without_recomputing(tmp_path: Path) -> None:
    origin = copy_pipeline(tmp_path / "origin", synth=TINY_SYNTH, train=TINY_TRAIN, eval=TINY_EVAL)
    # the committed .dvc/config as it is: its default remote lives under ~ (here a temporary home)
    env = {**project_env(tmp_path), "HOME": str(tmp_path / "home")}
    remote = tmp_path / "home/.cache/hpmcore/dvc-remote"
    listed = "".join(run_ok(_dvc("remote", "list"), origin, env).split())  # DVC wraps long lines
    assert f"hpmcore{remote}(default)" in listed

    ran, _ = repro(origin)
    assert ran == {"synth", "prepare", "decode", "pose", "features", "train", "evaluate"}
    _commit(origin, env, "pipeline outputs")  # dvc.lock and the git-tracked metrics/plots files
    out = run_ok(_dvc("push"), origin, env)
    assert remote.is_dir() and any(remote.rglob("*")), out

    clone = tmp_path / "clone"
    run_ok(["git", "clone", "-q", str(origin), str(clone)], tmp_path, env)
    lock = yaml.safe_load((clone / "dvc.lock").read_text())
    in_git = set(run_ok(["git", "ls-files"], clone, env).split())
    outs = [o["path"] for stage in lock["stages"].values() for o in stage.get("outs", [])]
    cached_outs = [p for p in outs if p not in in_git]  # the rest (cache: false) are committed to git
    assert len(cached_outs) == 12  # synth, dives.parquet, and the cache/manifest/... of decode to train
    assert not any((clone / p).exists() for p in cached_outs)  # a fresh clone has none of them

    # the main pipeline's outputs (a plain `dvc pull` also wants compare/dvc.yaml's, never run here)
    out = run_ok(_dvc("pull", "dvc.yaml"), clone, env)
    assert all((clone / p).exists() for p in cached_outs), out
    assert "Data and pipelines are up to date" in run_ok(_dvc("status", "dvc.yaml"), clone, env)
    cloud = run_ok(_dvc("status", "--cloud", "dvc.yaml"), clone, env)
    assert "Cache and remote 'hpmcore' are in sync" in cloud
    ran, out = repro(clone)
    assert ran == set(), out  # nothing is recomputed

    # the pulled features, skeletons and checkpoint evaluate to the same metrics, byte for byte
    metrics = (origin / "data/eval/metrics.json").read_bytes()
    (clone / "data/eval/metrics.json").unlink()
    out = run_ok(_dvc("repro", "--force", "--single-item", "evaluate"), clone, env)
    assert "Running stage 'evaluate'" in out and "Running stage 'train'" not in out
    assert (clone / "data/eval/metrics.json").read_bytes() == metrics
    assert json.loads(metrics)["num_queries"] >= 1
    # the clone's DVC cache is its own (under the clone), filled from the remote
    assert (clone / ".hpmcore/dvc-cache").is_dir() and not os.path.samefile(clone, origin)
