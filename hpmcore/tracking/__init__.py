"""Experiment tracking: the MLflow store (:mod:`hpmcore.tracking.mlflow`, the only module that imports
MLflow) and the lineage of registered models (:mod:`hpmcore.tracking.lineage`: what a model was made
from, checked against the workspace and the DVC cache).

Import the submodules: ``from hpmcore.tracking import mlflow as tracking``. This package itself imports
nothing heavy, so :func:`default_state_dir` can be used before MLflow's environment is set.
"""

from __future__ import annotations

import os
from pathlib import Path


def default_state_dir(project_dir: Path) -> Path:
    """The git-ignored folder for local state (MLflow store, Prefect home): ``$HPMCORE_STATE_DIR`` or
    ``<project>/.hpmcore``."""
    return Path(os.environ.get("HPMCORE_STATE_DIR", Path(project_dir) / ".hpmcore")).resolve()
