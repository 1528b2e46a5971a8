"""DVC stage ``train``: HP-MCoRe on the cached features, selected on the validation split.

Usage: ``python stages/train.py --params params.yaml --dives data/prepared/dives.parquet
--decoded data/decoded --pose data/pose --features data/features --out data/model``

Writes into ``--out``: ``checkpoints/last.pt`` (after every epoch: resumable) and ``checkpoints/best.pt``
(the epoch with the best validation ρ), ``history.json`` (per-epoch losses, validation metrics and lr:
DVC plots) and ``train.json`` (best epoch, its validation metrics, parameter count: DVC metrics).
Rerun after an interruption, it continues after the last complete epoch. Exit status 2 for bad
params, missing or bad features (naming the video or file) or a bad checkpoint; 1 when the loss
becomes non-finite.
"""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

from _common import INPUT_ERRORS, add_bank_arguments, load_bank

from hpmcore.config import load_params
from hpmcore.io import write_json
from hpmcore.logs import setup_logging
from hpmcore.training.evaluate import json_safe
from hpmcore.training.runs import train_run

log = logging.getLogger("stages.train")

EPOCH_KEYS_NOT_PLOTTED = ("epoch_seconds",)
"""Timings vary between runs: left out of the git-tracked history (the flow logs stage seconds)."""


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_bank_arguments(parser)
    parser.add_argument("--out", type=Path, required=True, help="output folder")
    args = parser.parse_args(argv)
    setup_logging()
    try:
        params = load_params(args.params)
        bank = load_bank(args, params)
        result = train_run(bank, params, args.out)
    except INPUT_ERRORS as exc:
        log.error("%s", exc)
        return 2
    except FloatingPointError as exc:
        log.error("%s", exc)
        return 1
    history = [{k: v for k, v in m.items() if k not in EPOCH_KEYS_NOT_PLOTTED} for m in result.history]
    summary = {
        "best_epoch": result.best_epoch,
        "best_val": {k: v for k, v in (result.best_val or {}).items() if k not in ("draws", "info")},
        "epochs": params.train.epochs,
        "train_videos": len(bank.split_ids("train")),
        "val_videos": len(bank.split_ids("val")),
    }
    write_json(json_safe(history), args.out / "history.json")
    write_json(json_safe(summary), args.out / "train.json")
    log.info("train: best epoch %d (val rho %s)", result.best_epoch, summary["best_val"].get("rho"))
    return 0


if __name__ == "__main__":
    sys.exit(main())
