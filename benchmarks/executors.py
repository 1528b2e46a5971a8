"""Extraction throughput on each executor: the local one, and Dask clusters of 1 and 2 worker processes,
printed as videos/s and as ratios to the local executor, all in one run on the same dives.

Usage: ``python benchmarks/executors.py [--num-dives 24] [--workers 1 2] [--stages decode features]
[--size 32] [--device cpu]``

Each run is the stage's own library call (:func:`~hpmcore.extraction.decode.decode_videos`,
:func:`~hpmcore.extraction.pose.stage.extract_pose`, :func:`~hpmcore.extraction.features.extract_features`)
into an empty cache, so every dive is computed; the time is the stage's ``compute_seconds`` (first
batch sent to last one back) and, separately, the whole call with the cluster already started (it
includes building the encoders on every worker). The local executor runs with torch's default threads
(as ``dvc repro`` does); each Dask worker has one thread, as the stages' local clusters do; with
``--device cuda`` each Dask worker is one GPU (``--workers`` at most the number of GPUs). The
outputs of every executor are checked byte for byte against the local run's.
"""

from __future__ import annotations

import argparse
import os
import platform
import shutil
import tempfile
import time
from pathlib import Path

import torch

from hpmcore.config import DecodeConfig, ExtractConfig, FeaturesConfig, PoseConfig, SynthConfig
from hpmcore.extraction.cache import MANIFEST, Extraction
from hpmcore.extraction.decode import decode_videos
from hpmcore.extraction.executor import Executor, LocalExecutor, open_executor
from hpmcore.extraction.features import extract_features
from hpmcore.extraction.pose.table import SKELETONS
from hpmcore.io import read_parquet


def _files(folder: Path) -> dict[str, bytes]:
    return {
        str(p.relative_to(folder)): p.read_bytes()
        for p in sorted(folder.rglob("*"))
        if p.is_file() and p.name != "timings.json"
    }


def run_stage(stage: str, executor: Executor, args: argparse.Namespace, work: Path, out: Path) -> Extraction:
    """One stage into the empty folder ``out`` (decode's outputs for pose and features: ``work/decoded``)."""
    match stage:
        case "decode":
            from hpmcore.data.canonical import read_annotations

            decode = DecodeConfig(num_frames=args.num_frames, width=args.size, height=args.size)
            root, dives = work / "synth", read_annotations(work / "synth" / "annotations.parquet")
            result = decode_videos(dives, decode, root=root, out_dir=out, progress=False, executor=executor)
            result.write(out)
        case "pose":
            from hpmcore.data.canonical import read_annotations
            from hpmcore.extraction.pose.stage import extract_pose

            root, dives = work / "synth", read_annotations(work / "synth" / "annotations.parquet")
            decoded = read_parquet(work / "decoded" / MANIFEST, ValueError, "missing")
            result = extract_pose(
                dives,
                PoseConfig(),
                root=root,
                decoded=decoded,
                out_dir=out,
                progress=False,
                executor=executor,
            )
            result.write(out, manifest_name=SKELETONS)
        case "features":
            cfg = FeaturesConfig(device=args.device, batch_size=args.batch_size)
            decoded_dir = args.decoded or work / "decoded"
            result = extract_features(decoded_dir, cfg, out_dir=out, progress=False, executor=executor)
            result.write(out)
    return result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--num-dives", type=int, default=24)
    parser.add_argument("--workers", type=int, nargs="+", default=[1, 2], help="Dask cluster sizes")
    parser.add_argument("--stages", nargs="+", default=["decode", "pose", "features"])
    parser.add_argument("--num-frames", type=int, default=96, help="T (decode.num_frames)")
    parser.add_argument("--size", type=int, default=32, help="decoded frame size (px)")
    parser.add_argument("--batch-size", type=int, default=8, help="features.batch_size (videos per task)")
    parser.add_argument("--device", default="cpu", help="features.device")
    parser.add_argument(
        "--decoded", type=Path, default=None, help="an existing decode output folder: features only, no synth"
    )
    parser.add_argument(
        "--fine-diving", type=int, default=3000, help="videos to project the features time for"
    )
    args = parser.parse_args(argv)
    if args.decoded is not None and args.stages != ["features"]:
        parser.error("--decoded runs the features stage only (--stages features)")

    print(f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores, torch {torch.__version__}")
    print(
        f"{args.decoded or f'{args.num_dives} synthetic dives'}, T={args.num_frames}, "
        f"{args.size}x{args.size} px, features on {args.device}"
    )
    with tempfile.TemporaryDirectory(prefix="hpmcore-executors-") as tmp:
        work = Path(tmp)
        if args.decoded is None:
            from hpmcore.data.synth import generate_dataset

            generate_dataset(SynthConfig(num_dives=args.num_dives), work / "synth", progress=False)
            run_stage("decode", LocalExecutor(), args, work, work / "decoded")
        executors = [("local", 0)] + [("dask", n) for n in args.workers]
        rates: dict[tuple[str, str], tuple[float, float]] = {}
        for name, workers in executors:
            cfg = ExtractConfig(executor=name, workers=max(workers, 1))  # type: ignore[arg-type]
            gpus = workers if name == "dask" and args.device == "cuda" else 0  # one worker per GPU
            with open_executor(cfg, gpus=gpus) as executor:
                for stage in args.stages:
                    out = work / f"{stage}-{name}-{workers}"
                    start = time.perf_counter()
                    result = run_stage(stage, executor, args, work, out)
                    total = time.perf_counter() - start
                    computed = result.stats["computed"]
                    rates[(stage, f"{name}-{workers}")] = (
                        computed / result.run.compute_seconds,
                        computed / total,
                    )
                    reference = work / f"{stage}-local-0"
                    same = _files(out) == _files(reference)
                    label = "local" if name == "local" else f"dask, {workers} worker{'s' * (workers > 1)}"
                    computing, whole = rates[(stage, f"{name}-{workers}")]
                    print(
                        f"{stage:9s} {label:17s} {computing:8.2f} videos/s computing, "
                        f"{whole:8.2f} with start-up"
                        f"{'' if same else '   OUTPUTS DIFFER FROM THE LOCAL RUN'}"
                    )
                    if name != "local":
                        shutil.rmtree(out)
        print("\nratio to the local executor (videos/s computing; with start-up in brackets)")
        for stage in args.stages:
            local = rates[(stage, "local-0")]
            cells = [
                f"{n} worker{'s' * (n > 1)}: x{rates[(stage, f'dask-{n}')][0] / local[0]:.2f} "
                f"(x{rates[(stage, f'dask-{n}')][1] / local[1]:.2f})"
                for n in args.workers
            ]
            print(f"{stage:9s} " + ", ".join(cells))
        if "features" in args.stages:
            best = max(v[0] for (stage, _), v in rates.items() if stage == "features")
            print(
                f"\nfeatures of {args.fine_diving} videos at the best rate: "
                f"{args.fine_diving / best / 60:.1f} min"
            )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
