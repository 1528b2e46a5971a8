"""DVC stage ``pose``: each decoded dive's skeleton at its T sampled frames, cached per video.

Usage: ``python stages/pose.py --params params.yaml --dives data/prepared/dives.parquet
--decoded data/decoded --out data/pose``

Writes ``cache/<key>.safetensors`` (``xy`` (T, 16, 2), ``confidence`` (T, 16), ``source_frame`` (T,);
incremental: only new or changed dives are computed), ``skeletons.parquet`` (the sampled skeleton
table of :mod:`hpmcore.extraction.pose.table`), ``failures.parquet``, ``stats.json`` (counts, a DVC
metric) and ``timings.json`` (not tracked) into ``--out``. The skeletons are taken at the decode
manifest's sampled frames; dives missing from it (failed decoding) are left out. Logs ``pose:
computed N, reused M (...)``. Exit status 2, with a message naming the file, for bad params, a bad
dive table or decode manifest, a missing skeletons table, checkpoint or model config (nothing is
written then), a dive that fails with ``pose.on_error: fail`` (no table is written then), or an
unreachable Dask scheduler (``extract``: the per-dive work runs here or on a Dask cluster).
"""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

from hpmcore.config import ConfigError, load_params
from hpmcore.data.canonical import DatasetError, read_annotations
from hpmcore.extraction.cache import MANIFEST, ExtractionFailed, ManifestError, read_manifest
from hpmcore.extraction.decode import DECODE_MANIFEST_SCHEMA
from hpmcore.extraction.executor import ExecutorError, cuda_workers, open_executor
from hpmcore.extraction.pose.stage import extract_pose
from hpmcore.extraction.pose.table import SKELETONS, PoseError
from hpmcore.logs import setup_logging
from hpmcore.models.checkpoints import CheckpointError

log = logging.getLogger("stages.pose")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--params", type=Path, default=Path("params.yaml"))
    parser.add_argument("--dives", type=Path, required=True, help="canonical dive table (prepare stage)")
    parser.add_argument("--decoded", type=Path, required=True, help="output folder of the decode stage")
    parser.add_argument("--out", type=Path, required=True, help="output folder")
    args = parser.parse_args(argv)
    setup_logging()
    try:
        params = load_params(args.params)
        dives = read_annotations(args.dives)
        decoded = read_manifest(args.decoded / MANIFEST, DECODE_MANIFEST_SCHEMA)
        mmpose = params.pose.backend == "mmpose"
        gpus = cuda_workers(params.pose.device, param="pose.device") if mmpose else 0
        with open_executor(params.extract, gpus=gpus) as executor:
            result = extract_pose(
                dives,
                params.pose,
                root=params.data.root_path(args.params.parent),
                decoded=decoded,
                out_dir=args.out,
                project_dir=args.params.parent,
                executor=executor,
            )
    except (
        ConfigError,
        DatasetError,
        ManifestError,
        CheckpointError,
        PoseError,
        ExtractionFailed,
        ExecutorError,
    ) as exc:
        log.error("%s", exc)
        return 2
    result.write(args.out, manifest_name=SKELETONS)
    return 0


if __name__ == "__main__":
    sys.exit(main())
