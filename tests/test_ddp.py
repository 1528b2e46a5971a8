"""Data-parallel training (issue 11 item 2): 2 real processes under ``torchrun`` (gloo on the CPU).

* With no term that couples the pairs of a batch, 2-process DDP with the same global batch gives the
  single-process run: same losses and validation metrics (relative 1e-6: the gradient all-reduce sums in
  another order) and the same weights (absolute 1e-5) — except ``segmenter.fc.bias``, whose gradient is
  exactly zero in exact arithmetic (``L_tas`` is a softmax over time, invariant to a per-channel
  constant), so Adam turns rounding noise of ~1e-9 into steps of up to ``lr`` in either run.
* With them (HD-GCN BatchNorm, the contrastive loss and GRU dropout), a DDP run killed after epoch 1 and
  resumed ends byte-identical to an uninterrupted DDP run (every rank's RNG state is in ``last.pt``).
* The end-to-end mode trains under DDP too (frames through a DataLoader on each rank).
"""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from ddp_train import SEED, setup

from hpmcore.training.checkpoints import LAST
from hpmcore.training.train import train

pytestmark = pytest.mark.slow

SCRIPT = Path(__file__).with_name("ddp_train.py")
ZERO_GRADIENT = {"segmenter.fc.bias"}
"""Parameters whose gradient is zero in exact arithmetic (see the module docstring)."""


def _torchrun(out: Path, *args: str, procs: int = 2) -> subprocess.CompletedProcess[str]:
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc-per-node={procs}"]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    return subprocess.run(
        [*cmd, str(SCRIPT), "--out", str(out), *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )


def _result(out: Path) -> dict:
    return json.loads((out / "result.json").read_text())


def test_two_process_ddp_equals_the_single_process_run_with_the_same_global_batch(tmp_path: Path) -> None:
    proc = _torchrun(tmp_path / "ddp")
    assert proc.returncode == 0, proc.stderr[-3000:]
    model, bank, cfg = setup("decoupled")
    single = train(model, bank, cfg, seed=SEED, checkpoint_dir=tmp_path / "single", progress=False)
    ddp = _result(tmp_path / "ddp")
    assert ddp["world_size"] == 2 and len(ddp["history"]) == len(single.history) == 3
    for a, b in zip(single.history, ddp["history"], strict=True):
        for key, value in a.items():
            assert math.isclose(value, b[key], rel_tol=1e-6, abs_tol=1e-9), (a["epoch"], key, value, b[key])
    assert ddp["best_epoch"] == single.best_epoch
    w1 = torch.load(tmp_path / "single" / LAST, weights_only=True)["model"]
    w2 = torch.load(tmp_path / "ddp" / LAST, weights_only=True)["model"]
    assert w1.keys() == w2.keys()
    for key in w1:
        if key in ZERO_GRADIENT:
            continue
        diff = float((w1[key].double() - w2[key].double()).abs().max()) if w1[key].numel() else 0.0
        assert diff <= 1e-5, (key, diff)
    moved = [k for k in w1 if k.startswith("reducers.") and w1[k].is_floating_point()]
    assert moved  # the comparison covers trained weights


def test_ddp_resume_after_a_killed_rank_equals_an_uninterrupted_ddp_run(tmp_path: Path) -> None:
    straight = _torchrun(tmp_path / "a", "--config", "full")
    assert straight.returncode == 0, straight.stderr[-3000:]
    killed = _torchrun(tmp_path / "b", "--config", "full", "--crash-after-epoch", "1")
    assert killed.returncode != 0
    state = torch.load(tmp_path / "b" / LAST, weights_only=True)
    assert state["epoch"] == 1 and state["world_size"] == 2
    assert not torch.equal(state["rng_ranks"][0]["torch"], state["rng_ranks"][1]["torch"])  # GRU dropout
    resumed = _torchrun(tmp_path / "b", "--config", "full")
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert _result(tmp_path / "b")["resumed_from"] == 2
    assert (tmp_path / "a" / LAST).read_bytes() == (tmp_path / "b" / LAST).read_bytes()
    assert _result(tmp_path / "a")["history"] == _result(tmp_path / "b")["history"]


def test_end_to_end_training_runs_data_parallel(tmp_path: Path) -> None:
    proc = _torchrun(tmp_path / "e2e", "--end-to-end")
    assert proc.returncode == 0, proc.stderr[-3000:]
    result = _result(tmp_path / "e2e")
    assert result["world_size"] == 2 and len(result["history"]) == 2
    assert all(math.isfinite(h["loss"]) and h["val_rho"] is not None for h in result["history"])
    state = torch.load(tmp_path / "e2e" / LAST, weights_only=True)
    assert state["config"]["model"]["kind"] == "EndToEndHPMCoRe" and len(state["rng_ranks"]) == 2
