"""DVC stage ``features``: I3D clip features and RegNetY-002 per-frame features of the decoded dives.

Usage: ``python stages/features.py --params params.yaml --decoded data/decoded --out data/features``

Writes ``cache/<key>.safetensors`` (``i3d`` (num_clips, 1024), ``static`` (T, 368); incremental),
``manifest.parquet`` (with the encoders' weights hashes, or ``random-init``), ``failures.parquet``,
``stats.json`` (counts, a DVC metric) and ``timings.json`` (not tracked) into ``--out``. Logs
``features: computed N, reused M (...)``. Exit status 2, with a message naming the file, for bad
params, a missing or mismatched weights file (nothing is written then), a bad decode manifest, or a
video that fails with ``features.on_error: fail`` (no manifest is written then), or an unreachable
Dask scheduler (``extract``: the per-video work runs in this process or on a Dask cluster, one
worker per GPU on CUDA; nothing is written then).
"""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

from hpmcore.config import ConfigError, load_params
from hpmcore.extraction.cache import ExtractionFailed, ManifestError
from hpmcore.extraction.executor import ExecutorError, cuda_workers, open_executor
from hpmcore.extraction.features import extract_features
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
        params = load_params(args.params)
        gpus = cuda_workers(params.features.device, param="features.device")
        with open_executor(params.extract, gpus=gpus) as executor:
            result = extract_features(
                args.decoded,
                params.features,
                out_dir=args.out,
                project_dir=args.params.parent,
                executor=executor,
            )
    except (ConfigError, CheckpointError, ManifestError, ExtractionFailed, ExecutorError) as exc:
        log.error("%s", exc)
        return 2
    result.write(args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
