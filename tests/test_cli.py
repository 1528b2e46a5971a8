"""The installed ``hpmcore`` console script, end to end: synth → export → inspect, and its errors."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from test_readers import MTL, write_mtl_aqa

HPMCORE = Path(sys.executable).parent / "hpmcore"
TINY = "synth:\n  num_dives: 5\n  width: 64\n  height: 64\n  min_frames: 30\n  max_frames: 40\n"


def _cli(*args: str | Path, ok: bool = True) -> subprocess.CompletedProcess[str]:
    proc = subprocess.run([str(HPMCORE), *map(str, args)], capture_output=True, text=True, check=False)
    if ok:
        assert proc.returncode == 0, proc.stderr
    return proc


@pytest.fixture(scope="module")
def synth_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    tmp = tmp_path_factory.mktemp("cli")
    (tmp / "params.yaml").write_text(TINY)
    out = tmp / "dives"
    _cli("synth", "--out", out, "--seed", 4, "--params", tmp / "params.yaml")
    return out


def test_synth_then_inspect_canonical(synth_dir: Path) -> None:
    summary = json.loads(_cli("data", "inspect", "--format", "canonical", synth_dir, "--json").stdout)
    assert summary["num_dives"] == 5
    assert summary["splits"]["train"] + summary["splits"]["test"] == 5
    assert summary["num_frames"]["min"] >= 30 and summary["num_frames"]["max"] <= 40
    assert summary["judges_per_dive"] == {"7": 5}
    assert not [p for p in summary["problems"] if "inconsistent" in p], summary["problems"]
    text = _cli("data", "inspect", "--format", "canonical", synth_dir).stdout
    assert "dives:" in text and "5" in text


def test_export_finediving_round_trips_through_inspect(synth_dir: Path, tmp_path: Path) -> None:
    out = tmp_path / "FineDiving"
    _cli("data", "export-finediving", synth_dir, out)
    assert (out / "Annotations" / "fine-grained_annotation_aqa.pkl").is_file()
    canonical = json.loads(_cli("data", "inspect", "--format", "canonical", synth_dir, "--json").stdout)
    finediving = json.loads(_cli("data", "inspect", "--format", "finediving", out, "--json").stdout)
    for key in ("num_dives", "dive_numbers", "difficulty_values", "final_score", "num_frames"):
        assert finediving[key] == canonical[key], key
    again = _cli("data", "export-finediving", synth_dir, out, ok=False)
    assert again.returncode == 2 and "already exists" in again.stderr


def test_inspect_mtl_aqa(tmp_path: Path) -> None:
    keys = sorted(MTL)
    root = write_mtl_aqa(tmp_path, train=keys[:1], test=keys[1:])
    summary = json.loads(_cli("data", "inspect", "--format", "mtl-aqa", root, "--json").stdout)
    assert summary["num_dives"] == len(keys)
    assert summary["dives_with_step_labels"] == 0
    assert any("no step labels" in p for p in summary["problems"])


def test_synth_zero_dives_is_refused_and_writes_nothing(tmp_path: Path) -> None:
    proc = _cli("synth", "--out", tmp_path / "none", "--num-dives", 0, ok=False)
    assert proc.returncode == 2
    assert "num_dives must be > 0" in proc.stderr
    assert not (tmp_path / "none").exists()
    assert list(tmp_path.iterdir()) == []


def test_inspect_errors_name_the_file(tmp_path: Path) -> None:
    bad = tmp_path / "fine-grained_annotation_aqa.pkl"
    bad.write_bytes(b"\x80\x04\x95")  # a truncated pickle
    proc = _cli("data", "inspect", "--format", "finediving", bad, ok=False)
    assert proc.returncode == 2 and str(bad) in proc.stderr
    missing = tmp_path / "nope.parquet"
    proc = _cli("data", "inspect", "--format", "canonical", missing, ok=False)
    assert proc.returncode == 2 and "nope.parquet" in proc.stderr
