"""Throughput of the synthetic dataset generator, with and without rendering, and its size on disk.

Usage: ``python benchmarks/synth_throughput.py [--num-dives 240] [--workers 1 2]``

Generates the same configuration (the default ``SynthConfig`` unless overridden) once without
videos and once with videos per worker count, into a temporary folder, and prints a table of
seconds and dives/s, then the on-disk size of the rendered dataset by file kind.
"""

from __future__ import annotations

import argparse
import dataclasses
import tempfile
import time
from pathlib import Path

from hpmcore.config import SynthConfig
from hpmcore.data.synth import generate_dataset


def _size(paths: list[Path]) -> int:
    return sum(p.stat().st_size for p in paths if p.is_file())


def main(argv: list[str] | None = None) -> int:
    defaults = SynthConfig()
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--num-dives", type=int, default=defaults.num_dives)
    parser.add_argument("--width", type=int, default=defaults.width)
    parser.add_argument("--height", type=int, default=defaults.height)
    parser.add_argument("--seed", type=int, default=defaults.seed)
    parser.add_argument("--workers", type=int, nargs="+", default=[1], help="worker counts to time")
    args = parser.parse_args(argv)
    cfg = dataclasses.replace(
        defaults, num_dives=args.num_dives, width=args.width, height=args.height, seed=args.seed
    )
    print(f"config: {cfg}")
    rows = []
    with tempfile.TemporaryDirectory(prefix="synth-bench-") as tmp:
        runs = [(False, 1)] + [(True, w) for w in args.workers]
        for render, workers in runs:
            out = Path(tmp) / f"render{int(render)}_w{workers}"
            start = time.perf_counter()
            generate_dataset(cfg, out, render=render, progress=False, workers=workers)
            seconds = time.perf_counter() - start
            rows.append(("video" if render else "no video", workers, seconds, cfg.num_dives / seconds))
        print(f"\n{'mode':<10} {'workers':>7} {'seconds':>8} {'dives/s':>8}")
        for mode, workers, seconds, rate in rows:
            print(f"{mode:<10} {workers:>7} {seconds:>8.2f} {rate:>8.1f}")

        dataset = Path(tmp) / f"render1_w{args.workers[0]}"
        files = sorted(p for p in dataset.rglob("*") if p.is_file())
        videos = [p for p in files if p.suffix == ".mp4"]
        print(f"\non-disk size of the dataset ({cfg.num_dives} dives, {cfg.width}x{cfg.height}):")
        print(f"{'file':<22} {'MiB':>8}")
        for p in files:
            if p.suffix != ".mp4":
                print(f"{p.name:<22} {p.stat().st_size / 2**20:>8.2f}")
        print(f"{f'videos/ ({len(videos)} mp4)':<22} {_size(videos) / 2**20:>8.2f}")
        print(f"{'total':<22} {_size(files) / 2**20:>8.2f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
