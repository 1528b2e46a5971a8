"""Helpers for tests that run the real pipeline: a copy of the project in a fresh git repo, DVC and the
flow as subprocesses (used by test_pipeline.py and test_extract.py)."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import yaml

PROJECT = Path(__file__).resolve().parents[1]

TINY_TRAIN = {"epochs": 2, "pairing": "any", "val_exemplars": 2, "val_exemplar_mode": "any"}
"""A tiny model run for pipeline tests: 2 epochs, voters of any dive number (a handful of dives hardly
share dive numbers)."""
TINY_EVAL = {"exemplar_mode": "any", "exemplars": 3, "num_voter_draws": 2}


def project_env(tmp: Path, prefect_home: Path | None = None) -> dict[str, str]:
    """The environment of a pipeline subprocess: this interpreter first on PATH, telemetry off, the
    state folder (MLflow store) under ``tmp``, one intra-op thread (fastest on the shared 2 cores)."""
    env = dict(os.environ)
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env['PATH']}"
    env.update(
        DVC_NO_ANALYTICS="1",
        DO_NOT_TRACK="true",
        MLFLOW_DISABLE_TELEMETRY="true",
        HPMCORE_STATE_DIR=str(tmp / ".hpmcore"),
        PYTHONPATH=str(PROJECT),
        OMP_NUM_THREADS="1",
    )
    if prefect_home is not None:
        env["PREFECT_HOME"] = str(prefect_home)
    return env


def run_ok(cmd: list[str], cwd: Path, env: dict[str, str] | None = None) -> str:
    """Run ``cmd`` in ``cwd``; assert it succeeds and return stdout + stderr."""
    env = env if env is not None else project_env(cwd.parent)
    proc = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, check=False)
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, f"{' '.join(cmd)} failed:\n{out}"
    return out


def set_params(project: Path, **sections: Any) -> None:
    """Update ``params.yaml``: a dict updates that section, any other value replaces the key."""
    path = project / "params.yaml"
    params = yaml.safe_load(path.read_text())
    for name, values in sections.items():
        if isinstance(values, dict):
            params[name].update(values)
        else:
            params[name] = values
    path.write_text(yaml.safe_dump(params, sort_keys=False))


def copy_pipeline(dest: Path, **sections: Any) -> Path:
    """Copy the pipeline (code, dvc.yaml, params.yaml with ``sections`` applied, DVC config) to ``dest``
    and commit it in a fresh git repo."""
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc")
    for name in ("hpmcore", "stages", "flows"):
        shutil.copytree(PROJECT / name, dest / name, ignore=ignore)
    for name in (
        "dvc.yaml",
        "compare/dvc.yaml",
        "params.yaml",
        ".gitignore",
        ".dvcignore",
        ".dvc/config",
        ".dvc/.gitignore",
    ):
        (dest / name).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(PROJECT / name, dest / name)
    set_params(dest, **sections)
    run_ok(["git", "init", "-q", "-b", "main"], dest)
    run_ok(["git", "add", "-A"], dest)
    run_ok(["git", "-c", "user.name=t", "-c", "user.email=t@t", "commit", "-q", "-m", "init"], dest)
    return dest


def repro(project: Path) -> tuple[set[str], str]:
    """``dvc repro`` in ``project``: the names of the stages that ran, and the output."""
    out = run_ok([sys.executable, "-m", "dvc", "repro"], project)
    return set(re.findall(r"Running stage '([\w@.-]+)'", out)), out
