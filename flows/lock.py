"""One pipeline or retraining run at a time per state folder (MLflow store, model registry).

An exclusive ``flock`` on ``<state>/pipeline.lock``: the kernel releases it when the holder exits, even
on SIGKILL, so a killed run never leaves a stale lock. The file holds the holder's pid, host, start
time and what it runs, for the message a second run prints. Re-entrant within one process (the
retraining flow holds it while its pipeline subflow runs).
"""

from __future__ import annotations

import fcntl
import json
import os
import socket
import time
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path

LOCK_FILE = "pipeline.lock"

_held: dict[Path, int] = {}
"""Lock files this process holds, with their nesting depth."""


class LockBusy(RuntimeError):
    """Another run holds the lock (the message says which, and what to do)."""


def _holder(path: Path) -> str:
    try:
        info = json.loads(path.read_text() or "{}")
    except (OSError, ValueError):
        info = {}
    if not info:
        return "another process"
    return f"{info.get('what')} (pid {info.get('pid')} on {info.get('host')}, since {info.get('since')})"


@contextmanager
def project_lock(state_dir: Path, *, what: str, wait_s: float = 0.0, poll_s: float = 1.0) -> Iterator[Path]:
    """Hold the state folder's run lock for the body.

    Args:
        state_dir: the folder of the MLflow store (the lock lies beside it).
        what: what this run is, for the message another run prints (``"retrain"``, ``"pipeline"``).
        wait_s: how long to wait for a running holder; 0 fails at once.
        poll_s: retry interval while waiting.

    Raises:
        LockBusy: the lock is still held after ``wait_s`` seconds, naming the holder.
    """
    path = (Path(state_dir) / LOCK_FILE).resolve()
    if path in _held:
        _held[path] += 1
        try:
            yield path
        finally:
            _held[path] -= 1
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    deadline = time.monotonic() + wait_s
    try:
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() >= deadline:
                    waited = f" after waiting {wait_s:g} s" if wait_s else ""
                    raise LockBusy(
                        f"{path}: {_holder(path)} is running{waited}; this {what} run exits without doing "
                        "anything (set retrain.lock_wait_s in params.yaml to wait instead)"
                    ) from None
                time.sleep(poll_s)
        info = {
            "what": what,
            "pid": os.getpid(),
            "host": socket.gethostname(),
            "since": datetime.now(UTC).isoformat(timespec="seconds"),
        }
        os.ftruncate(fd, 0)
        os.pwrite(fd, json.dumps(info).encode(), 0)
        _held[path] = 1
        try:
            yield path
        finally:
            del _held[path]
            os.ftruncate(fd, 0)
            fcntl.flock(fd, fcntl.LOCK_UN)
    finally:
        os.close(fd)
