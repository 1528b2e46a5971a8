"""The run lock of flows/lock.py between real processes, and the champion rule of flows/registry.py."""

from __future__ import annotations

import math
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from pipeline_project import PROJECT

from flows.lock import LockBusy, project_lock
from flows.registry import is_better

HOLD = """
import sys, time
from pathlib import Path
from flows.lock import project_lock
with project_lock(Path(sys.argv[1]), what="holder"):
    print("held", flush=True)
    time.sleep(float(sys.argv[2]))
"""


def _holder(state: Path, seconds: float) -> subprocess.Popen:
    env = {**os.environ, "PYTHONPATH": str(PROJECT)}
    proc = subprocess.Popen(
        [sys.executable, "-c", HOLD, str(state), str(seconds)], env=env, stdout=subprocess.PIPE, text=True
    )
    assert proc.stdout is not None and proc.stdout.readline().strip() == "held"
    return proc


def test_a_second_run_exits_naming_the_holder_and_a_killed_holder_frees_the_lock(tmp_path: Path) -> None:
    holder = _holder(tmp_path, 60)
    start = time.monotonic()
    busy = rf"holder \(pid {holder.pid} on .*\) is running; this retrain run exits"
    with pytest.raises(LockBusy, match=busy), project_lock(tmp_path, what="retrain"):
        pass
    assert time.monotonic() - start < 5
    os.kill(holder.pid, signal.SIGKILL)  # the kernel drops the flock with the process
    holder.wait()
    # re-entrant in one process (the retraining flow and its pipeline subflow)
    with project_lock(tmp_path, what="retrain") as path, project_lock(tmp_path, what="nested"):
        assert path.read_text().count('"what": "retrain"') == 1


def test_a_waiting_run_gets_the_lock_when_the_holder_finishes(tmp_path: Path) -> None:
    holder = _holder(tmp_path, 2)
    start = time.monotonic()
    with project_lock(tmp_path, what="retrain", wait_s=60, poll_s=0.1):
        assert time.monotonic() - start > 1.5  # it got the lock only when the holder let it go
    assert holder.wait(timeout=30) == 0
    with pytest.raises(LockBusy, match=r"after waiting 0\.5 s"):
        other = _holder(tmp_path, 30)
        try:
            with project_lock(tmp_path, what="retrain", wait_s=0.5, poll_s=0.1):
                pass
        finally:
            other.kill()
            other.wait()


def test_champion_rule() -> None:
    assert is_better(0.52, 0.50, "rho", 0.01) and not is_better(0.505, 0.50, "rho", 0.01)
    assert is_better(4.0, 5.0, "rl2_x100", 0.5) and not is_better(4.8, 5.0, "rl2_x100", 0.5)
    assert not is_better(None, 0.5, "rho", 0.0) and not is_better(math.nan, 0.5, "rho", 0.0)
    assert is_better(0.1, None, "rho", 0.0)  # a champion without a value loses to a real one
