"""DVC stage ``train``: HP-MCoRe on the cached features or end to end, selected on the validation split.

Usage: ``python stages/train.py --params params.yaml --dives data/prepared/dives.parquet
--decoded data/decoded --pose data/pose --features data/features --out data/model``

``train.mode: cached`` trains the heads on the features stage's features; ``end_to_end`` fine-tunes the
encoders from the decoded frames with them. Data parallel on N processes (gloo on the CPU, NCCL with one
GPU per process): ``torchrun --nproc-per-node N stages/train.py ...`` (same arguments); only rank 0
writes.

Writes into ``--out``: ``checkpoints/last.pt`` (after every epoch: resumable) and ``checkpoints/best.pt``
(the epoch with the best validation ρ), ``history.json`` (per-epoch losses, validation metrics and lr:
DVC plots) and ``train.json`` (best epoch, its validation metrics, the dives left out because an
extraction stage skipped them, the dives without ground-truth transitions: DVC metrics), none with a
timing, so an unchanged result leaves them byte-identical; ``timings.json`` (seconds: not a DVC
output, git-ignored). Rerun after an interruption, it continues after the last complete epoch. Exit
status 2 for bad params, missing or bad features (naming the video or file) or a bad checkpoint; 1
when the loss becomes non-finite.
"""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

from _common import INPUT_ERRORS, add_bank_arguments, load_bank

from hpmcore.config import load_params
from hpmcore.extraction.cache import TIMINGS
from hpmcore.io import write_json
from hpmcore.logs import setup_logging
from hpmcore.training.distributed import init_distributed
from hpmcore.training.runs import train_run

log = logging.getLogger("stages.train")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_bank_arguments(parser)
    parser.add_argument("--out", type=Path, required=True, help="output folder")
    args = parser.parse_args(argv)
    setup_logging()
    try:
        params = load_params(args.params)
        world = init_distributed(params.train.device)  # the one process, unless started by torchrun
        bank = load_bank(args, params, frames=params.train.mode == "end_to_end")
        run = train_run(bank, params, args.out, progress=world.is_main, project_dir=args.params.parent)
    except INPUT_ERRORS as exc:
        log.error("%s", exc)
        return 2
    except FloatingPointError as exc:
        log.error("%s", exc)
        return 1
    if not world.is_main:
        return 0
    write_json(run.history, args.out / "history.json")
    write_json(run.summary, args.out / "train.json")
    write_json({"train_seconds": round(run.result.train_seconds, 2)}, args.out / TIMINGS)
    log.info(
        "train: best epoch %d (val rho %s), %d dives skipped, %.1f s",
        run.result.best_epoch,
        run.summary["best_val"].get("rho"),
        run.summary["skipped"]["count"],
        run.result.train_seconds,
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
