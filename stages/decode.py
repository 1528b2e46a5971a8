"""DVC stage ``decode``: every dive's sampled frames as a uint8 tensor, cached per video.

Usage: ``python stages/decode.py --params params.yaml --dives data/prepared/dives.parquet --out data/decoded``

Writes ``cache/<key>.safetensors.zst`` (one per dive, incremental: only new or changed dives are
decoded), ``manifest.parquet``, ``failures.parquet``, ``stats.json`` (counts, a DVC metric) and
``timings.json`` (not tracked) into ``--out``. Logs ``decode: computed N, reused M (...)``. Exit
status 2, with a message naming the file, for bad params, a bad dive table, or a video that fails with
``decode.on_error: fail`` (no manifest is written then), or an unreachable Dask scheduler
(``extract``: the per-video work runs in this process or on a Dask cluster; nothing is written then).
"""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

from hpmcore.config import ConfigError, load_params
from hpmcore.data.canonical import DatasetError, read_annotations
from hpmcore.extraction.cache import ExtractionFailed
from hpmcore.extraction.decode import decode_videos
from hpmcore.extraction.executor import ExecutorError, open_executor
from hpmcore.logs import setup_logging

log = logging.getLogger("stages.decode")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--params", type=Path, default=Path("params.yaml"))
    parser.add_argument("--dives", type=Path, required=True, help="canonical dive table (prepare stage)")
    parser.add_argument("--out", type=Path, required=True, help="output folder")
    args = parser.parse_args(argv)
    setup_logging()
    try:
        params = load_params(args.params)
        dives = read_annotations(args.dives)
        root = params.data.root_path(args.params.parent)
        with open_executor(params.extract) as executor:
            result = decode_videos(dives, params.decode, root=root, out_dir=args.out, executor=executor)
    except (ConfigError, DatasetError, ExtractionFailed, ExecutorError) as exc:
        log.error("%s", exc)
        return 2
    result.write(args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
