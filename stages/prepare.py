"""DVC stage ``prepare``: index the selected dataset into the canonical table with train/val/test.

Usage: ``python stages/prepare.py --params params.yaml --out data/prepared``

Writes ``dives.parquet`` (canonical annotation table), ``summary.json`` (what
``hpmcore data inspect`` prints) and ``counts.json`` (numeric DVC metrics).
"""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

from hpmcore.config import ConfigError, load_params
from hpmcore.data.canonical import DatasetError
from hpmcore.data.prepare import prepare_dataset
from hpmcore.io import write_json, write_parquet
from hpmcore.logs import setup_logging

log = logging.getLogger("stages.prepare")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--params", type=Path, default=Path("params.yaml"))
    parser.add_argument("--out", type=Path, required=True, help="output folder")
    args = parser.parse_args(argv)
    setup_logging()
    try:
        params = load_params(args.params)
        prepared = prepare_dataset(params.data, params.seed, project_dir=args.params.parent)
    except (ConfigError, DatasetError) as exc:
        log.error("%s", exc)
        return 2
    write_parquet(prepared.table, args.out / "dives.parquet")
    write_json(prepared.summary, args.out / "summary.json")
    write_json(prepared.counts, args.out / "counts.json")
    for problem in prepared.summary["problems"]:
        log.warning("dataset problem: %s", problem)
    log.info("prepare: %s", prepared.counts)
    return 0


if __name__ == "__main__":
    sys.exit(main())
