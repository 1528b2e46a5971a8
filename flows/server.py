"""A Prefect server on loopback, for schedules (the temporary server that a plain flow call starts
refuses them: "Cannot schedule flows on an ephemeral server")."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import IO

HOST = "127.0.0.1"


def api_url(port: int) -> str:
    """The server's API URL (what ``PREFECT_API_URL`` must be for clients)."""
    return f"http://{HOST}:{port}/api"


def start_server(
    home: Path, port: int, log: IO[bytes] | None = None, timeout_s: float = 300
) -> subprocess.Popen:
    """Start ``prefect server start --host 127.0.0.1 --port PORT`` with its database under ``home`` (its
    ``PREFECT_HOME``) and wait until ``/api/health`` answers.

    Raises:
        RuntimeError: the server exited or did not answer within ``timeout_s`` (it is stopped).
    """
    Path(home).mkdir(parents=True, exist_ok=True)
    env = {
        **os.environ,
        "PREFECT_HOME": str(home),
        "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
        "PREFECT_UI_ENABLED": "false",
        "DO_NOT_TRACK": "true",
    }
    env.pop("PREFECT_API_URL", None)
    cmd = [sys.executable, "-m", "prefect", "server", "start", "--host", HOST, "--port", str(port)]
    proc = subprocess.Popen(
        cmd, env=env, stdout=log or subprocess.DEVNULL, stderr=subprocess.STDOUT, start_new_session=True
    )
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"prefect server exited with status {proc.returncode} (port {port} in use?)")
        try:
            with urllib.request.urlopen(f"{api_url(port)}/health", timeout=5) as response:
                if json.loads(response.read()) is True:
                    return proc
        except (urllib.error.URLError, OSError, ValueError):
            pass
        time.sleep(1)
    stop_server(proc)
    raise RuntimeError(f"prefect server on port {port} did not answer within {timeout_s:g} s")


def stop_server(proc: subprocess.Popen, timeout_s: float = 30) -> None:
    """Stop a server started by :func:`start_server` (its whole process group)."""
    if proc.poll() is not None:
        return
    os.killpg(proc.pid, signal.SIGTERM)
    try:
        proc.wait(timeout=timeout_s)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
