"""Process environment for the flows (state folder, Prefect ephemeral server, telemetry off)."""

from __future__ import annotations

import os
from pathlib import Path

from hpmcore.tracking import default_state_dir

PROJECT_DIR = Path(__file__).resolve().parents[1]


def state_dir(project_dir: Path = PROJECT_DIR) -> Path:
    """The git-ignored folder for local state: ``$HPMCORE_STATE_DIR`` or ``<project>/.hpmcore``."""
    return default_state_dir(project_dir)


def configure_environment(project_dir: Path = PROJECT_DIR) -> None:
    """Set defaults (``setdefault``: the caller's environment wins) for Prefect, MLflow and DVC."""
    state = state_dir(project_dir)
    defaults = {
        "PREFECT_HOME": str(state / "prefect"),
        "PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS": "300",
        "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
        "PREFECT_UI_ENABLED": "false",
        "DO_NOT_TRACK": "true",
        "MLFLOW_DISABLE_TELEMETRY": "true",
        "DVC_NO_ANALYTICS": "1",
    }
    for key, value in defaults.items():
        os.environ.setdefault(key, value)
    # Prefect creates its home without parents and then fails to open its database: make it here.
    Path(os.environ["PREFECT_HOME"]).mkdir(parents=True, exist_ok=True)
