"""params.yaml ↔ frozen dataclasses: defaults, unknown keys, types, validation."""

from __future__ import annotations

import dataclasses
import subprocess
import sys
from pathlib import Path

import pytest

from hpmcore.config import ConfigError, Params, SynthConfig, flatten, load_params, params_to_dict

PROJECT = Path(__file__).resolve().parents[1]


def test_project_params_file_matches_the_dataclass_defaults() -> None:
    """The shipped params.yaml is valid and documents every key of every section."""
    params = load_params(PROJECT / "params.yaml")
    assert params == Params(), "params.yaml and the dataclass defaults have drifted apart"
    import yaml

    raw = yaml.safe_load((PROJECT / "params.yaml").read_text())
    assert flatten(raw).keys() == flatten(params_to_dict(Params())).keys()


def _write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "params.yaml"
    path.write_text(text)
    return path


def test_unknown_key_is_rejected_with_its_dotted_name(tmp_path: Path) -> None:
    path = _write(tmp_path, "synth:\n  num_dive: 10\n")
    with pytest.raises(ConfigError, match=r"params\.yaml: unknown key\(s\) synth\.num_dive"):
        load_params(path)


def test_unknown_section_is_rejected(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"unknown key.*trian"):
        load_params(_write(tmp_path, "trian: {}\n"))


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("seed: 1.5\n", "seed: expected an integer"),
        ("seed: true\n", "seed: expected an integer"),
        ("synth:\n  test_fraction: high\n", "synth.test_fraction: expected a number"),
        ("data:\n  format: kinetics\n", "data.format: 'kinetics' is not one of"),
        ("synth: 3\n", "synth: expected a mapping"),
        ("synth:\n  num_dives: 0\n", "num_dives must be > 0"),
        ("synth:\n  width: 33\n", "must be even"),
        ("data:\n  val_fraction: 1.0\n", "val_fraction must be in"),
        # absurd values: a ConfigError naming the key, not a traceback later (issue 8)
        ("seed: -1\n", r"seed must be in \[0, 4294967295\], got -1"),
        ("seed: 4294967296\n", r"seed must be in \[0, 4294967295\]"),
        ("synth:\n  seed: -3\n", r"synth\.seed must be in"),
        ("features:\n  init_seed: -1\n", r"features\.init_seed must be in"),
        ("decode:\n  width: 100000\n", r"decode\.width must be in \[16, 4096\], got 100000"),
        ("decode:\n  num_frames: 1e9\n", r"decode\.num_frames: expected an integer, got '1e9'"),
        ("decode:\n  num_frames: 1.0e9\n", r"decode\.num_frames: expected an integer"),
        ("decode:\n  num_frames: 1000000000\n", r"decode\.num_frames must be in \[16, 4096\]"),
        ("decode:\n  num_frames: 4096\n  width: 1024\n  height: 1024\n", r"bytes per dive, more than"),
        ("synth:\n  width: 5000\n", r"synth\.width must be in"),
        ("train:\n  lr: .inf\n", r"train\.lr: expected a finite number"),
        ("train:\n  lr: .nan\n", r"train\.lr: expected a finite number"),
        ("train:\n  lr: 1" + "0" * 400 + "\n", r"train\.lr: .* is too large"),
        ("eval:\n  pair_batch_size: 1000000000\n", r"eval\.pair_batch_size must be in"),
        ("features:\n  batch_size: 100000\n", r"features\.batch_size must be in"),
    ],
)
def test_bad_values_are_rejected(tmp_path: Path, text: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        load_params(_write(tmp_path, text))


def test_missing_file_and_bad_yaml(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="parameter file not found"):
        load_params(tmp_path / "nope.yaml")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_params(_write(tmp_path, "synth: [1, 2\n"))


def test_partial_file_keeps_defaults_and_configs_are_frozen(tmp_path: Path) -> None:
    params = load_params(_write(tmp_path, "synth:\n  num_dives: 12\n  test_fraction: 0\n"))
    assert params.synth == SynthConfig(num_dives=12, test_fraction=0.0)
    assert isinstance(params.synth.test_fraction, float)
    with pytest.raises(dataclasses.FrozenInstanceError):
        params.synth.num_dives = 3  # type: ignore[misc]


@pytest.mark.parametrize(
    ("text", "key"),
    [
        ("seed: -1\n", "seed"),
        ("decode:\n  width: 100000\n", "decode.width"),
        ("decode:\n  num_frames: 1e9\n", "decode.num_frames"),
    ],
)
def test_absurd_params_stop_prepare_with_exit_2(tmp_path: Path, text: str, key: str) -> None:
    """Through the real stage: exit 2 and one line naming the file and the key, no traceback."""
    path = _write(tmp_path, text)
    cmd = [
        sys.executable,
        str(PROJECT / "stages/prepare.py"),
        "--params",
        str(path),
        "--out",
        str(tmp_path / "out"),
    ]
    proc = subprocess.run(cmd, capture_output=True, text=True, check=False)
    assert proc.returncode == 2, proc.stderr
    assert f"{path}: {key}" in proc.stderr and "Traceback" not in proc.stderr
    assert not (tmp_path / "out").exists()
