"""DVC stage ``compare`` (compare/dvc.yaml): HP-MCoRe, its ablations and baselines side by side.

Usage: ``python stages/compare.py --params params.yaml --dives data/prepared/dives.parquet
--decoded data/decoded --pose data/pose --features data/features --out data/compare``

Trains every variant (HP-MCoRe; without skeleton, static branch, segmentation, contrastive loss; the
CoRe-style I3D baseline) on the train split once per training seed (``compare.seeds``) with validation
selection, and evaluates each run once on the test split with the same voters, next to the
dive-number-mean and DD-only predictors; Δρ and Δ execution ρ of HP-MCoRe against each row with a paired
bootstrap over the test dives (:mod:`hpmcore.training.compare`). Writes ``comparison.md`` (the table),
``comparison.json`` (rows with all metrics, per seed and bootstrap intervals; no timings, so an
unchanged result leaves it byte-identical), ``predictions.csv`` (``variant, seed, id, difficulty,
true_score, predicted_score`` per test dive and run), ``timings.json`` (seconds per variant and seed:
not a DVC output, git-ignored) and keeps each run's checkpoints in ``runs/<variant>/seed-<seed>/`` (a
rerun resumes). Exit status 2 for bad params or missing/bad features (named).
"""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

import pyarrow as pa
import pyarrow.csv as pacsv
from _common import INPUT_ERRORS, add_bank_arguments, load_bank

from hpmcore.config import load_params
from hpmcore.extraction.cache import TIMINGS
from hpmcore.io import atomic_path, write_json
from hpmcore.logs import setup_logging
from hpmcore.training.runs import compare_run

log = logging.getLogger("stages.compare")

PREDICTIONS_SCHEMA = pa.schema(
    [
        ("variant", pa.string()),
        ("seed", pa.int64()),
        ("id", pa.string()),
        ("difficulty", pa.float64()),
        ("true_score", pa.float64()),
        ("predicted_score", pa.float64()),
    ]
)
"""``predictions.csv``: one row per (variant, training seed, test dive); seed empty for the table-only
predictors."""


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
            **comparison.info,
            "rows": comparison.rows,
            "skipped": bank.skipped_report(("train", "val", "test")),
        },
        args.out / "comparison.json",
    )
    with atomic_path(args.out / "predictions.csv") as tmp:
        pacsv.write_csv(pa.Table.from_pylist(comparison.predictions, schema=PREDICTIONS_SCHEMA), tmp)
    with atomic_path(args.out / "comparison.md") as tmp:
        tmp.write_text(comparison.markdown)
    write_json(comparison.seconds, args.out / TIMINGS)
    log.info("comparison: %.1f s in all (per variant in %s)", comparison.seconds["comparison"]["total"],
             args.out / TIMINGS)  # fmt: skip
    print(comparison.markdown)
    return 0


if __name__ == "__main__":
    sys.exit(main())
