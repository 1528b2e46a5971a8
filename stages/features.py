"""DVC stage ``features``: I3D clip features and RegNetY-002 per-frame features of the decoded dives.

Usage: ``python stages/features.py --params params.yaml --decoded data/decoded --out data/features``

Writes ``cache/<key>.safetensors`` (``i3d`` (num_clips, 1024), ``static`` (T, 368); incremental),
``manifest.parquet`` (with the encoders' weights hashes, or ``random-init``), ``failures.parquet`` and
``stats.json`` (DVC metric) into ``--out``. Logs ``features: computed N, reused M (...)``. Exit
status 1 when a video fails with ``features.on_error: fail``, 2 for bad params, a missing or
mismatched weights file (nothing is written then) or a bad decode manifest.
"""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

from hpmcore.config import ConfigError, load_params
from hpmcore.extraction.cache import FAILURES, MANIFEST, STATS, ExtractionFailed, ManifestError
from hpmcore.extraction.features import extract_features
from hpmcore.io import write_json, write_parquet
from hpmcore.logs import setup_logging
from hpmcore.models.checkpoints import CheckpointError

log = logging.getLogger("stages.features")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--params", type=Path, default=Path("params.yaml"))
    parser.add_argument("--decoded", type=Path, required=True, help="output folder of the decode stage")
    parser.add_argument("--out", type=Path, required=True, help="output folder")
    args = parser.parse_args(argv)
    setup_logging()
    try:
        cfg = load_params(args.params).features
        result = extract_features(args.decoded, cfg, out_dir=args.out, project_dir=args.params.parent)
    except (ConfigError, CheckpointError, ManifestError) as exc:
        log.error("%s", exc)
        return 2
    except ExtractionFailed as exc:
        log.error("%s", exc)
        return 1
    write_parquet(result.manifest, args.out / MANIFEST)
    write_parquet(result.failures, args.out / FAILURES)
    write_json(result.stats, args.out / STATS)
    return 0


if __name__ == "__main__":
    sys.exit(main())
