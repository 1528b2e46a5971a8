"""Extraction on Dask (issue 11): ``decode``, ``pose`` and ``features`` run their per-video work on a real
``distributed`` cluster of 2 worker processes and write byte-identical outputs; a worker killed in the
middle of a stage loses nothing; an unreachable scheduler is a clear error before anything is written.
"""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import sys
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import pyarrow as pa
import pytest
import yaml
from pipeline_project import PROJECT, project_env

from hpmcore.config import DecodeConfig, ExtractConfig, FeaturesConfig, PoseConfig, SynthConfig
from hpmcore.data.canonical import read_annotations
from hpmcore.data.synth import generate_dataset
from hpmcore.extraction.cache import MANIFEST
from hpmcore.extraction.decode import decode_videos
from hpmcore.extraction.executor import DaskExecutor, Executor, open_executor
from hpmcore.extraction.features import extract_features
from hpmcore.extraction.pose.stage import extract_pose
from hpmcore.extraction.pose.table import SKELETONS
from hpmcore.io import read_parquet

DECODE = DecodeConfig(num_frames=16, width=32, height=32, min_source_frames=8, on_error="skip")
FEATURES = FeaturesConfig(device="cpu", batch_size=1)


@pytest.fixture(scope="module")
def dataset(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, pa.Table]:
    """6 tiny synthetic dives, one of whose videos is broken (a failure in every table)."""
    root = tmp_path_factory.mktemp("synth")
    generate_dataset(SynthConfig(num_dives=6, width=64, height=64, min_frames=30, max_frames=40), root)
    dives = read_annotations(root / "annotations.parquet")
    (root / dives.column("video_path")[2].as_py()).write_bytes(b"")
    return root, dives


@pytest.fixture(scope="module")
def cluster() -> Iterator[Any]:
    from distributed import LocalCluster

    with LocalCluster(
        n_workers=2,
        threads_per_worker=1,
        processes=True,
        dashboard_address=None,
        silence_logs=logging.WARNING,
    ) as cluster:
        yield cluster


def _extract(root: Path, dives: pa.Table, out: Path, executor: Executor | None) -> None:
    """decode → pose → features into ``out/{decoded,pose,features}``, as the stage scripts write them."""
    decode_videos(dives, DECODE, root=root, out_dir=out / "decoded", progress=False, executor=executor).write(
        out / "decoded"
    )
    decoded = read_parquet(out / "decoded" / MANIFEST, ValueError, "missing")
    extract_pose(
        dives,
        PoseConfig(),
        root=root,
        decoded=decoded,
        out_dir=out / "pose",
        progress=False,
        executor=executor,
    ).write(out / "pose", manifest_name=SKELETONS)
    features = extract_features(
        out / "decoded", FEATURES, out_dir=out / "features", progress=False, executor=executor
    )
    features.write(out / "features")


def _files(folder: Path) -> dict[str, bytes]:
    """Every file under ``folder`` but the timings (relative path → bytes)."""
    return {
        str(p.relative_to(folder)): p.read_bytes()
        for p in sorted(folder.rglob("*"))
        if p.is_file() and p.name != "timings.json"
    }


def test_decode_pose_features_on_a_dask_cluster_are_byte_identical_to_the_local_run(
    dataset: tuple[Path, pa.Table], cluster: Any, tmp_path: Path
) -> None:
    root, dives = dataset
    _extract(root, dives, tmp_path / "local", None)
    with open_executor(ExtractConfig(executor="dask", scheduler=cluster.scheduler_address)) as executor:
        assert isinstance(executor, DaskExecutor) and executor.workers == 2
        _extract(root, dives, tmp_path / "dask", executor)

    local, dask = _files(tmp_path / "local"), _files(tmp_path / "dask")
    assert sorted(local) == sorted(dask)
    assert [name for name in local if local[name] != dask[name]] == []
    assert sum(name.startswith("features/cache/") for name in local) == 5  # the broken dive has none
    failures = read_parquet(tmp_path / "dask/decoded/failures.parquet", ValueError, "missing")
    assert failures.column("id").to_pylist() == [dives.column("id")[2].as_py()]
    timings = yaml.safe_load((tmp_path / "dask/features/timings.json").read_text())
    assert (timings["executor"], timings["workers"]) == ("dask", 2)


class _KillABusyWorker:
    """The real :class:`DaskExecutor`, which SIGKILLs one worker process that is running a batch once
    the first batch is back (as the kernel's out-of-memory killer would); the worker's nanny starts a
    new one."""

    def __init__(self, inner: DaskExecutor) -> None:
        self.inner = inner
        self.name = inner.name
        self.killed: list[tuple[str, int, list[str]]] = []

    @property
    def workers(self) -> int:
        return self.inner.workers

    def prepare(self, task: Any) -> None:
        self.inner.prepare(task)

    def run_once(self, fn: Any, *args: Any) -> Any:
        return self.inner.run_once(fn, *args)

    def map(self, task: Any, batches: Sequence[list[Any]]) -> Iterator[Any]:
        client = self.inner.client
        for i, outcome in enumerate(self.inner.map(task, batches)):
            if i == 0:
                busy = {address: keys for address, keys in client.processing().items() if keys}
                address, keys = next(iter(busy.items()))
                pid = client.run(os.getpid, workers=[address])[address]
                os.kill(pid, signal.SIGKILL)
                self.killed.append((address, pid, [str(k) for k in keys]))
            yield outcome


def test_a_worker_killed_mid_stage_loses_nothing(dataset: tuple[Path, pa.Table], tmp_path: Path) -> None:
    root, dives = dataset
    decode_videos(dives, DECODE, root=root, out_dir=tmp_path / "decoded", progress=False).write(
        tmp_path / "decoded"
    )
    extract_features(tmp_path / "decoded", FEATURES, out_dir=tmp_path / "local", progress=False).write(
        tmp_path / "local"
    )
    # extract.scheduler null: the stage starts (and stops) its own cluster of extract.workers processes
    with open_executor(ExtractConfig(executor="dask", workers=2)) as executor:
        assert isinstance(executor, DaskExecutor)
        killer = _KillABusyWorker(executor)
        result = extract_features(tmp_path / "decoded", FEATURES, out_dir=tmp_path / "dask", executor=killer)
    result.write(tmp_path / "dask")

    ((address, pid, keys),) = killer.killed
    assert keys, f"worker {address} (pid {pid}) was running no batch when it was killed"
    assert result.stats["computed"] == 5 and result.stats["failed"] == 0  # the lost batch ran again
    assert not [p for p in (tmp_path / "dask").rglob("*") if p.name.endswith(".tmp")]  # nothing half-written
    assert _files(tmp_path / "dask") == _files(tmp_path / "local")


def test_an_unreachable_scheduler_fails_before_anything_is_written(
    dataset: tuple[Path, pa.Table], tmp_path: Path
) -> None:
    root, dives = dataset
    dives_file = tmp_path / "dives.parquet"
    import pyarrow.parquet as pq

    pq.write_table(dives, dives_file)
    params = tmp_path / "params.yaml"
    address = "tcp://127.0.0.1:9"  # the discard port: nothing listens
    extract = {"executor": "dask", "scheduler": address, "connect_timeout": 1}
    params.write_text(
        yaml.safe_dump({"data": {"root": str(root)}, "decode": {"num_frames": 16}, "extract": extract})
    )
    out = tmp_path / "decoded"
    cmd = [sys.executable, str(PROJECT / "stages/decode.py"), "--params", str(params)]
    cmd += ["--dives", str(dives_file), "--out", str(out)]
    proc = subprocess.run(
        cmd, env=project_env(tmp_path), capture_output=True, text=True, timeout=300, check=False
    )
    assert proc.returncode == 2, proc.stderr
    assert f"extract.scheduler {address}: cannot connect to the Dask scheduler within 1 s" in proc.stderr
    assert not out.exists()


def test_extract_params_are_speed_only() -> None:
    """Not DVC params of any stage (changing them reruns nothing); the configs reject nonsense."""
    from hpmcore.config import ConfigError, from_dict

    stages = yaml.safe_load((PROJECT / "dvc.yaml").read_text())["stages"]
    listed = [p for stage in stages.values() for p in stage.get("params", []) if isinstance(p, str)]
    assert not [p for p in listed if p == "extract" or p.startswith("extract.")]
    assert from_dict(ExtractConfig, {"executor": "dask", "workers": 3}, "extract").workers == 3
    with pytest.raises(ConfigError, match="unknown key"):
        from_dict(ExtractConfig, {"executors": "dask"}, "extract")
    with pytest.raises(ConfigError, match=r"extract\.scheduler must be an address"):
        from_dict(ExtractConfig, {"executor": "dask", "scheduler": "localhost"}, "extract")
    with pytest.raises(ConfigError, match=r"extract\.scheduler is set but extract\.executor is not dask"):
        from_dict(ExtractConfig, {"scheduler": "tcp://h:8786"}, "extract")
