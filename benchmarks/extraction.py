"""Throughput of the extraction stages on this machine: video decoders, I3D, RegNet, and the features
stage's GFLOP/s next to a plain matmul's, all measured in one run on the same videos.

Usage: ``python benchmarks/extraction.py [--videos DIR] [--num-videos 24] [--sizes 32 64 112] [--threads N]``

* **Decoders** (every frame of every video, RGB uint8 in memory): decord ``VideoReader.get_batch`` at
  the native size and resized in the decoder, PyAV (``frame.to_ndarray("rgb24")``), OpenCV
  (``VideoCapture`` + BGR→RGB) when importable, and the decode stage's own path
  (:func:`hpmcore.extraction.video.decode_dive`: T sampled frames resized to the decode size).
* **Encoders** (random init, eval, ``inference_mode``, fp32): I3D clips/s on 16-frame clips and RegNetY-002
  frames/s at each size, in the default layout and channels-last (the layout the features stage uses);
  FLOPs counted with ``torch.utils.flop_counter.FlopCounterMode``.
* **Features stage**: :func:`hpmcore.extraction.features.encode_batch` on a batch of decoded videos at
  the decode size (as the stage runs it), its GFLOP/s, and a 2048² fp32 matmul's GFLOP/s with the same
  threads.

Times are the best of ``--repeats`` runs after a warm-up. The videos default to ``data/synth/videos``
(the embedded dataset, ``dvc repro synth``) or, when absent, a small synthetic set generated here.
"""

from __future__ import annotations

import argparse
import copy
import dataclasses
import platform
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import torch
from torch.utils.flop_counter import FlopCounterMode

from hpmcore.config import DecodeConfig, FeaturesConfig, SynthConfig
from hpmcore.extraction.features import build_feature_encoders, encode_batch
from hpmcore.extraction.video import decode_dive, probe
from hpmcore.models.i3d import build_i3d_encoder
from hpmcore.models.static import build_static_encoder


def best_time(fn: Callable[[], object], repeats: int) -> float:
    """Best wall time of ``repeats`` calls after one warm-up call."""
    fn()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return min(times)


def flops(fn: Callable[[], object]) -> int:
    counter = FlopCounterMode(display=False)
    with counter:
        fn()
    return counter.get_total_flops()


# --------------------------------------------------------------------------------------------------
# Decoders: each returns the number of frames decoded.


def decode_decord(paths: list[Path], width: int = -1, height: int = -1) -> int:
    import decord

    n = 0
    for path in paths:
        reader = decord.VideoReader(str(path), width=width, height=height)
        n += reader.get_batch(list(range(len(reader)))).shape[0]
    return n


def decode_pyav(paths: list[Path]) -> int:
    import av

    n = 0
    for path in paths:
        with av.open(str(path)) as container:
            for frame in container.decode(video=0):
                frame.to_ndarray(format="rgb24")
                n += 1
    return n


def decode_opencv(paths: list[Path]) -> int:
    import cv2

    n = 0
    for path in paths:
        cap = cv2.VideoCapture(str(path))
        while True:
            ok, frame = cap.read()
            if not ok:
                break
            cv2.cvtColor(frame, cv2.COLOR_BGR2RGB)
            n += 1
        cap.release()
    return n


def decode_stage(paths: list[Path], cfg: DecodeConfig) -> int:
    for path in paths:
        decode_dive(path, 0, probe(path).num_frames - 1, cfg)
    return len(paths) * cfg.num_frames


def find_videos(folder: Path | None, count: int, tmp: Path) -> list[Path]:
    folder = folder or Path("data/synth/videos")
    videos = sorted(folder.glob("*.mp4")) if folder.is_dir() else []
    if not videos:
        from hpmcore.data.synth import generate_dataset

        print(f"no videos in {folder}: generating {count} synthetic dives")
        generate_dataset(dataclasses.replace(SynthConfig(), num_dives=count), tmp / "synth", progress=False)
        videos = sorted((tmp / "synth" / "videos").glob("*.mp4"))
    return videos[:count]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--videos", type=Path, default=None, help="folder of mp4 files")
    parser.add_argument("--num-videos", type=int, default=24)
    parser.add_argument("--sizes", type=int, nargs="+", default=[32, 64, 112], help="frame sizes (px)")
    parser.add_argument("--threads", type=int, default=torch.get_num_threads())
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--batch-videos", type=int, default=4, help="videos per features-stage batch")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    decode_cfg = DecodeConfig()
    print(
        f"machine: {platform.processor() or platform.machine()}, torch {torch.__version__}, "
        f"{args.threads} intra-op threads; decode default {decode_cfg.width}x{decode_cfg.height}, "
        f"T={decode_cfg.num_frames}"
    )

    with tempfile.TemporaryDirectory(prefix="extraction-bench-") as tmp:
        videos = find_videos(args.videos, args.num_videos, Path(tmp))
        info = probe(videos[0])
        total = sum(probe(v).num_frames for v in videos)
        print(f"videos: {len(videos)} mp4, {info.width}x{info.height}, {total} frames in all\n")

        print(f"{'decoder':<44} {'frames/s':>10}")
        decoders: list[tuple[str, Callable[[], int]]] = [
            ("decord get_batch, native size", lambda: decode_decord(videos)),
            (
                f"decord get_batch, resized in decoder to {decode_cfg.width}x{decode_cfg.height}",
                lambda: decode_decord(videos, decode_cfg.width, decode_cfg.height),
            ),
            ("PyAV decode + to_ndarray(rgb24), native size", lambda: decode_pyav(videos)),
        ]
        try:
            import cv2  # noqa: F401

            decoders.append(("OpenCV VideoCapture + BGR2RGB, native size", lambda: decode_opencv(videos)))
        except ImportError:
            print("(OpenCV not installed: skipped)")
        decoders.append(
            (
                f"decode stage: decode_dive T={decode_cfg.num_frames} {decode_cfg.width}x{decode_cfg.height}",
                lambda: decode_stage(videos, decode_cfg),
            )
        )
        for name, fn in decoders:
            frames = fn()
            seconds = best_time(fn, args.repeats)
            print(f"{name:<44} {frames / seconds:>10.0f}")

        decoded = [decode_dive(v, 0, probe(v).num_frames - 1, decode_cfg).frames for v in videos]

    columns = ("GFLOP/item", "items/s", "items/s CL", "GFLOP/s CL")
    header = f"{'encoder':<13} {'size':>5} " + " ".join(f"{c:>11}" for c in columns)
    print(f"\n{header}")
    i3d = build_i3d_encoder(weights=None).eval()
    i3d_cl = copy.deepcopy(i3d).to(memory_format=torch.channels_last_3d)
    static = build_static_encoder(weights=None, temporal="none").eval()
    static_cl = copy.deepcopy(static).to(memory_format=torch.channels_last)
    with torch.inference_mode():
        for size in args.sizes:
            clips = torch.randn(9, 3, 16, size, size)  # one video's 9 clips
            per_clip = flops(lambda c=clips: i3d.backbone(c[:1]))
            plain = best_time(lambda c=clips: i3d.backbone(c), args.repeats)
            clips_cl = clips.contiguous(memory_format=torch.channels_last_3d)
            cl = best_time(lambda c=clips_cl: i3d_cl.backbone(c), args.repeats)
            print(
                f"{'I3D clips':<13} {size:>5} {per_clip / 1e9:>11.2f} {9 / plain:>11.1f} {9 / cl:>11.1f} "
                f"{9 * per_clip / cl / 1e9:>11.1f}"
            )
        for size in args.sizes:
            frames = torch.randn(96, 3, size, size)  # one video's frames
            per_frame = flops(lambda f=frames: static.encode_frames(f[:1]))
            plain = best_time(lambda f=frames: static.encode_frames(f), args.repeats)
            cl = best_time(lambda f=frames: static_cl.encode_frames(f), args.repeats)
            print(
                f"{'RegNet frames':<13} {size:>5} {per_frame / 1e9:>11.3f} {96 / plain:>11.0f} "
                f"{96 / cl:>11.0f} {96 * per_frame / cl / 1e9:>11.1f}"
            )

    encoders = build_feature_encoders(FeaturesConfig(device="cpu"))
    batch = torch.stack(decoded[: args.batch_videos])  # (B, T, H, W, 3) uint8
    stage_flops = flops(lambda: encode_batch(encoders, batch))
    stage_seconds = best_time(lambda: encode_batch(encoders, batch), args.repeats)
    a, b = torch.randn(2048, 2048), torch.randn(2048, 2048)
    matmul_seconds = best_time(lambda: a @ b, max(args.repeats, 5))
    matmul_gflops = 2 * 2048**3 / matmul_seconds / 1e9
    stage_gflops = stage_flops / stage_seconds / 1e9
    n = batch.shape[0]
    print(
        f"\nfeatures stage (encode_batch, {n} videos of {tuple(batch.shape[1:4])}, both encoders): "
        f"{stage_flops / n / 1e9:.1f} GFLOP/video, {n / stage_seconds:.2f} videos/s, "
        f"{stage_gflops:.1f} GFLOP/s"
    )
    print(f"matmul 2048x2048 fp32: {matmul_gflops:.1f} GFLOP/s")
    print(f"features stage / matmul: {stage_gflops / matmul_gflops:.0%}")
    print(f"=> the default dataset (240 dives): about {240 * stage_seconds / n:.0f} s of encoder compute")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
