"""DVC stage ``evaluate``: the test split scored once by the selected checkpoint (spec 10-11).

Usage: ``python stages/evaluate.py --params params.yaml --dives data/prepared/dives.parquet
--decoded data/decoded --pose data/pose --features data/features --model data/model --out data/eval``

With ``train.mode: end_to_end`` the checkpoint holds the fine-tuned encoders too and the test dives'
decoded frames are encoded with them. ``torchrun --nproc-per-node N stages/evaluate.py ...`` shards the
queries over N processes (only rank 0 writes).

Writes into ``--out``: ``metrics.json`` (ρ, L2, RL2, RL2×100 as mean ± std over voter draws, tIoU,
AIoU@0.5/0.75 over the queries with ground-truth transitions, the checkpoint's epoch, the test dives
left out because an extraction stage skipped them: DVC metrics; the same checkpoint and seed give an
identical file), ``predictions.csv`` (per query: true and predicted score: DVC plot) and
``transitions.csv`` (per query: predicted − true transition frame of take-off→flight and
flight→entry: DVC plot). Exit status 2 for bad params, a missing, bad (NaN weights, missing keys) or
mismatched checkpoint, or missing/bad features (named).
"""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

from _common import INPUT_ERRORS, add_bank_arguments, load_bank

from hpmcore.config import load_params
from hpmcore.io import write_csv, write_json
from hpmcore.logs import setup_logging
from hpmcore.training.checkpoints import BEST, CHECKPOINTS
from hpmcore.training.distributed import init_distributed
from hpmcore.training.evaluate import evaluate_checkpoint

log = logging.getLogger("stages.evaluate")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_bank_arguments(parser)
    parser.add_argument("--model", type=Path, required=True, help="output folder of the train stage")
    parser.add_argument("--out", type=Path, required=True, help="output folder")
    args = parser.parse_args(argv)
    setup_logging()
    try:
        params = load_params(args.params)
        world = init_distributed(params.eval.device)  # the one process, unless started by torchrun
        bank = load_bank(args, params, splash=False, frames=params.train.mode == "end_to_end")
        report = evaluate_checkpoint(
            args.model / CHECKPOINTS / BEST,
            bank,
            params.eval,
            seed=params.seed,
            split="test",
            expected_model=bank.model_config(params.model),  # params.model + the features' sizes
            progress=world.is_main,
        )
    except INPUT_ERRORS as exc:
        log.error("%s", exc)
        return 2
    if not world.is_main:
        return 0
    write_json(report.metrics, args.out / "metrics.json")
    write_csv(report.predictions, args.out / "predictions.csv")
    write_csv(report.transitions, args.out / "transitions.csv")
    m = report.metrics
    log.info(
        "evaluate: %d test queries (%d skipped), rho %.4f ± %.4f, RL2x100 %.3f, AIoU@0.5 %s, AIoU@0.75 %s",
        m["num_queries"],
        m["skipped"]["count"],
        m["rho"] if m["rho"] is not None else float("nan"),
        m["rho_std"] if m.get("rho_std") is not None else float("nan"),
        m["rl2_x100"] if m["rl2_x100"] is not None else float("nan"),
        m.get("aiou_50"),
        m.get("aiou_75"),
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
