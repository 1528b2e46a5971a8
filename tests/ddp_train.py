"""A tiny training run for the DDP tests (tests/test_ddp.py), started by ``torchrun`` (or as one process).

Usage: ``torchrun --standalone --nproc-per-node 2 tests/ddp_train.py --out DIR [--config decoupled|full]
[--crash-after-epoch E] [--end-to-end]``

Trains the tiny HP-MCoRe of :func:`setup` on a synthetic feature bank (or, with ``--end-to-end``, the
tiny end-to-end model on a synthetic frame bank) with checkpoints in ``DIR``; rank 0 writes
``DIR/result.json`` (history, best epoch, the validation metrics). ``--crash-after-epoch E`` makes rank 0
exit abruptly once epoch ``E``'s checkpoint is written (an interrupted run, for the resume test).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from dataclasses import replace
from pathlib import Path
from typing import Any

import torch

from hpmcore.config import ModelConfig, TrainConfig
from hpmcore.models.end_to_end import build_end_to_end
from hpmcore.models.hpmcore import build_hpmcore
from hpmcore.training.bank import synthetic_feature_bank
from hpmcore.training.distributed import init_distributed
from hpmcore.training.evaluate import json_safe
from hpmcore.training.frames import synthetic_frame_bank
from hpmcore.training.train import train

SEED = 11


def setup(config: str, *, end_to_end: bool = False) -> tuple[Any, Any, TrainConfig]:
    """``(model, bank, train config)``. ``decoupled``: no term couples the pairs of a batch (no HD-GCN
    BatchNorm, no contrastive loss, no GRU dropout), so DDP must give the single-process run; ``full``:
    the tiny model with all of them (the resume test)."""
    heads = ModelConfig.tiny(input_norm=True)
    if config == "decoupled":
        heads = replace(heads, use_skeleton=False, contrastive_weight=0.0, gru_dropout=0.0)
    cfg = TrainConfig(
        epochs=3, batch_size=4, lr=1e-3, pairing="any", val_exemplars=2, device="cpu", schedule="monotone"
    )
    if end_to_end:
        bank = synthetic_frame_bank({"train": 5, "val": 3}, seed=SEED)
        model = build_end_to_end(bank.model_config(heads), i3d_weights=None, static_weights=None, seed=0)
        return model, bank, replace(cfg, epochs=2, mode="end_to_end", num_workers=0)
    bank = synthetic_feature_bank(
        {"train": 9, "val": 4}, i3d_dim=16, static_dim=12, num_frames=12, num_clips=3, seed=SEED
    )  # 9 pairs in batches of 4: 4, 4, 1 (the last one leaves a rank without a pair)
    return build_hpmcore(heads, seed=0), bank, cfg


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--config", choices=["decoupled", "full"], default="decoupled")
    parser.add_argument("--crash-after-epoch", type=int, default=None)
    parser.add_argument("--end-to-end", action="store_true")
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    world = init_distributed("cpu")
    model, bank, cfg = setup(args.config, end_to_end=args.end_to_end)

    def on_epoch(epoch: int, metrics: dict[str, float]) -> None:
        if epoch == args.crash_after_epoch:
            sys.stdout.flush()
            os._exit(3)  # killed: no clean-up, the other rank is left waiting in a collective

    result = train(model, bank, cfg, seed=SEED, checkpoint_dir=args.out, on_epoch=on_epoch, progress=False)
    if world.is_main:
        summary = {
            "world_size": world.size,
            "history": result.history,
            "best_epoch": result.best_epoch,
            "best_val": {k: v for k, v in (result.best_val or {}).items() if k not in ("draws", "info")},
            "resumed_from": result.resumed_from,
        }
        (args.out / "result.json").write_text(json.dumps(json_safe(summary), indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
