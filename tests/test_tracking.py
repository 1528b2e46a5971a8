"""The MLflow store and the environment fingerprint every run records (real MLflow, SQLite store)."""

from __future__ import annotations

import json
from pathlib import Path

import av
import torch

from hpmcore.environment import environment_fingerprint, environment_tags, fingerprint_digest
from hpmcore.tracking import default_state_dir
from hpmcore.tracking import mlflow as tracking


def test_fingerprint_describes_this_process() -> None:
    fp = environment_fingerprint()
    assert fp["cpu"]["model"] and fp["cpu"]["logical_cpus"] >= 1
    flags = set(Path("/proc/cpuinfo").read_text().split("flags", 1)[1].splitlines()[0].split())
    assert set(fp["cpu"]["isa_flags"]) <= flags and fp["cpu"]["isa_flags"] == sorted(fp["cpu"]["isa_flags"])
    assert fp["torch"]["version"] == torch.__version__
    assert fp["torch"]["num_threads"] == torch.get_num_threads()
    assert fp["torch"]["cuda"] == torch.version.cuda
    assert fp["torch"]["cpu_capability"] == torch.backends.cpu.get_cpu_capability()
    libs = fp["video"]["ffmpeg_libraries"]
    assert libs["libavcodec"] == ".".join(map(str, av.library_versions["libavcodec"]))
    assert fp["video"]["pyav"] == av.__version__
    assert fp["video"]["libx264"].startswith("x264 - core ")  # the encoder of the synthetic videos
    assert fp["packages"]["torch"] == torch.__version__.split("+")[0]
    assert fp["packages"]["av"] == av.__version__ and fp["packages"]["hpmcore"] is not None
    json.dumps(fp)  # JSON-safe as it is

    # the digest names the environment: stable, and it changes with the thread count
    assert fingerprint_digest(fp) == fingerprint_digest(environment_fingerprint())
    threads = torch.get_num_threads()
    torch.set_num_threads(threads + 1)
    try:
        assert fingerprint_digest(environment_fingerprint()) != fingerprint_digest(fp)
    finally:
        torch.set_num_threads(threads)


def test_every_run_records_the_fingerprint(tmp_path: Path) -> None:
    state = tmp_path / "state"
    with tracking.start_run(state, "t", run_name="r", tags={"mine": "1"}) as run:
        pass
    finished = tracking.client(state).get_run(run.info.run_id)
    stored = json.loads(tracking.read_artifact_text(state, run.info.run_id, tracking.ENVIRONMENT_ARTIFACT))
    assert stored["torch"]["num_threads"] == torch.get_num_threads()
    assert stored["video"]["libx264"] == environment_fingerprint()["video"]["libx264"]
    tags = finished.data.tags
    assert tags["mine"] == "1"
    assert {k: tags[k] for k in environment_tags(stored)} == environment_tags(stored)
    assert tags["env.torch"] == torch.__version__ and tags["env.threads"] == str(torch.get_num_threads())
    assert tags["env.digest"] == fingerprint_digest(stored)


def test_state_dir_follows_the_environment(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.delenv("HPMCORE_STATE_DIR", raising=False)
    assert default_state_dir(tmp_path) == (tmp_path / ".hpmcore").resolve()
    monkeypatch.setenv("HPMCORE_STATE_DIR", str(tmp_path / "elsewhere"))
    assert default_state_dir(tmp_path) == (tmp_path / "elsewhere").resolve()
