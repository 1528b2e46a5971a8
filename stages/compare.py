"""DVC stage ``compare`` (compare/dvc.yaml): HP-MCoRe, its ablations and baselines side by side.

Usage: ``python stages/compare.py --params params.yaml --dives data/prepared/dives.parquet
--decoded data/decoded --pose data/pose --features data/features --out data/compare``

Trains every variant (HP-MCoRe; without skeleton, static branch, segmentation, contrastive loss; the
CoRe-style I3D baseline) on the train split with the same seed, pairs and validation selection, and
evaluates each once on the test split with the same voters, next to the dive-number-mean and DD-only
predictors. Writes ``comparison.md`` (the table), ``comparison.json`` (rows with all metrics; no
timings, so an unchanged result leaves it byte-identical), ``timings.json`` (seconds per variant: not a
DVC output, git-ignored) and keeps each variant's checkpoints in ``runs/<variant>/`` (a rerun resumes).
Exit status 2 for bad params or missing/bad features (named).
"""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

from _common import INPUT_ERRORS, add_bank_arguments, load_bank

from hpmcore.config import load_params
from hpmcore.extraction.cache import TIMINGS
from hpmcore.io import atomic_path, write_json
from hpmcore.logs import setup_logging
from hpmcore.training.runs import compare_run

log = logging.getLogger("stages.compare")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_bank_arguments(parser)
    parser.add_argument("--out", type=Path, required=True, help="output folder")
    args = parser.parse_args(argv)
    setup_logging()
    try:
        params = load_params(args.params)
        bank = load_bank(args, params)
        comparison = compare_run(bank, params, args.out / "runs")
    except INPUT_ERRORS as exc:
        log.error("%s", exc)
        return 2
    write_json(
        {
            "split": "test",
            "seed": params.seed,
            "rows": comparison.rows,
            "skipped": bank.skipped_report(("train", "val", "test")),
        },
        args.out / "comparison.json",
    )
    with atomic_path(args.out / "comparison.md") as tmp:
        tmp.write_text(comparison.markdown)
    write_json(comparison.seconds, args.out / TIMINGS)
    print(comparison.markdown)
    return 0


if __name__ == "__main__":
    sys.exit(main())
