"""DVC stage ``synth``: generate the embedded synthetic diving dataset.

Usage: ``python stages/synth.py --params params.yaml --out data/synth [--workers N]``

Dives are generated and rendered in ``--workers`` processes (default: the CPU count); the output does not
depend on it (every dive is a pure function of the seed and its index, and the encoding is bit-exact).
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
from pathlib import Path

from hpmcore.config import ConfigError, load_params
from hpmcore.data.synth import generate_dataset
from hpmcore.logs import setup_logging

log = logging.getLogger("stages.synth")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--params", type=Path, default=Path("params.yaml"))
    parser.add_argument("--out", type=Path, required=True, help="output dataset folder")
    parser.add_argument("--workers", type=int, default=os.cpu_count() or 1, help="processes (speed only)")
    args = parser.parse_args(argv)
    setup_logging()
    try:
        cfg = load_params(args.params).synth
    except ConfigError as exc:
        log.error("%s", exc)
        return 2
    summary = generate_dataset(cfg, args.out, workers=max(1, args.workers))
    log.info("synth: %s", summary)
    return 0


if __name__ == "__main__":
    sys.exit(main())
