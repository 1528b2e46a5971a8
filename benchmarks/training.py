"""Training steps/s and evaluation queries/s of HP-MCoRe: on cached features, or end to end from frames.

Usage: ``python benchmarks/training.py [--mode cached|end_to_end] [--steps 3] [--batch-size 8]
[--devices cpu cuda] [--configs pipeline reference] [--amp] ...``

``--mode cached`` (the default). For each model config — ``pipeline`` (the ``params.yaml`` default,
``ModelConfig.cpu_default()``), ``reference`` (the paper's sizes, ~16.1 M parameters) or ``tiny`` (the
test config, a smoke check) — on a bank of random features with the real layout — I3D ``(J=9, 1024)``,
static ``(T=96, 368)``, pose ``(2, 96, 16, 1)`` — and per device (``cuda`` only when available; the card
is printed):

* **training**: :func:`hpmcore.training.train.train` for one epoch of ``--steps`` steps of
  ``--batch-size`` pairs (after a one-step warm-up run), timed by the trainer itself (forward, losses,
  backward, Adam; no validation, checkpoint writes excluded) → steps/s and pairs/s;
* **evaluation**: :func:`hpmcore.training.evaluate.evaluate_model` on ``--queries`` test queries with
  ``--exemplars`` voters each (every video encoded once, the pair heads per pair, spec §10.2), wall
  time → queries/s.

With both devices, the CUDA/CPU speed-up of each measure is printed from the same run.

``--mode end_to_end``: the end-to-end model (:mod:`hpmcore.models.end_to_end`: I3D + RegNetY-002/GSM,
randomly initialised, + the heads of each ``--configs`` entry) trained by the same trainer in
``train.mode: end_to_end`` on in-memory random uint8 frames (the data pipeline included: the DataLoader
with ``--workers`` processes, the §1.2 augmentation, uint8 → device), per device and per ``--sizes``
entry: ``paper`` — 96 frames decoded at 112 wide × 200 tall and cropped to 112² (spec §1.2), ``default``
— the pipeline's 96 × 32² (no crop). Each measure runs in its own process: steps/s (one epoch of
``--steps`` steps after a one-step warm-up run, timed by the trainer) and the **peak memory** — on CUDA
``torch.cuda.max_memory_allocated`` (and reserved) of the timed run, on the CPU the process's peak RSS.
``--amp`` (CUDA: bf16 autocast) and ``--activation-checkpointing`` apply. Needs neither decord, PyAV,
MLflow, Prefect, DVC nor zstandard: run it from the repository root with ``PYTHONPATH=.``.
"""

from __future__ import annotations

import argparse
import logging
import tempfile
import time
from pathlib import Path

import torch

from hpmcore.config import EvalConfig
from hpmcore.models.hpmcore import ModelConfig, build_hpmcore
from hpmcore.training.bank import synthetic_feature_bank
from hpmcore.training.evaluate import evaluate_model
from hpmcore.training.train import TrainConfig, train


def _shapes(cfg: ModelConfig, tiny: bool) -> dict[str, int]:
    clips = 3 if tiny else 9  # 96 frames, 16-frame clips every 10 frames → 9 (spec §2.3)
    return dict(i3d_dim=cfg.i3d_dim, static_dim=cfg.static_dim, num_frames=cfg.num_frames, num_clips=clips)


def bench_training(
    cfg: ModelConfig, device: str, *, steps: int, batch_size: int, amp: bool, tiny: bool
) -> dict:
    """One epoch of ``steps`` steps (after a one-step warm-up run) → steps/s."""
    tcfg = TrainConfig(epochs=1, batch_size=batch_size, device=device, amp=amp, pairing="any")  # type: ignore[arg-type]
    results = {}
    with tempfile.TemporaryDirectory(prefix="bench-train-") as tmp:
        for name, n_steps in (("warmup", 1), ("timed", steps)):
            bank = synthetic_feature_bank({"train": n_steps * batch_size}, **_shapes(cfg, tiny), seed=1)
            model = build_hpmcore(cfg, seed=0)
            res = train(model, bank, tcfg, seed=0, checkpoint_dir=Path(tmp) / name, progress=False)
            results[name] = res.train_seconds
    seconds = results["timed"]
    return {
        "steps": steps,
        "seconds": seconds,
        "steps_per_s": steps / seconds,
        "pairs_per_s": steps * batch_size / seconds,
    }


def bench_evaluation(cfg: ModelConfig, device: str, *, queries: int, exemplars: int, tiny: bool) -> dict:
    """``queries`` test queries with ``exemplars`` voters each (one draw) → queries/s."""
    bank = synthetic_feature_bank(
        {"train": exemplars + 1, "test": queries}, dive_numbers=("101a",), **_shapes(cfg, tiny), seed=2
    )
    model = build_hpmcore(cfg, seed=0).to(device)
    ecfg = EvalConfig(exemplars=exemplars, num_voter_draws=1, device=device)  # type: ignore[arg-type]
    evaluate_model(model, bank, "test", ecfg, seed=0)  # warm-up (allocator, kernels)
    if device == "cuda":
        torch.cuda.synchronize()
    t0 = time.perf_counter()
    ev = evaluate_model(model, bank, "test", ecfg, seed=0)
    if device == "cuda":
        torch.cuda.synchronize()
    seconds = time.perf_counter() - t0
    pairs = queries * exemplars
    assert ev.metrics["num_queries"] == queries
    return {
        "queries": queries,
        "videos_encoded": queries + exemplars + 1,
        "pairs": pairs,
        "seconds": seconds,
        "queries_per_s": queries / seconds,
        "pairs_per_s": pairs / seconds,
    }


# ---------------------------------------------------------------------------------------------------------
# End to end

SIZES = {"paper": (96, 200, 112, 112), "default": (96, 32, 32, None)}
"""``--sizes``: (T, decoded height, decoded width, crop)."""


def bench_end_to_end(
    config_name: str,
    size: str,
    device: str,
    *,
    steps: int,
    batch_size: int,
    amp: bool,
    checkpointing: bool,
    workers: int,
    threads: int | None,
) -> dict:
    """One epoch of ``steps`` end-to-end steps (after a one-step warm-up) → steps/s and peak memory.
    Runs in a child process (see :func:`_in_child`)."""
    import resource

    from hpmcore.models.end_to_end import build_end_to_end
    from hpmcore.training.frames import synthetic_frame_bank

    if threads:
        torch.set_num_threads(threads)
    t, h, w, crop = SIZES[size]
    heads = _configs()[config_name]
    tcfg = TrainConfig(
        epochs=1,
        batch_size=batch_size,
        device=device,  # type: ignore[arg-type]
        amp=amp,
        pairing="any",
        mode="end_to_end",
        num_workers=workers,
        activation_checkpointing=checkpointing,
    )
    seconds, params = 0.0, 0
    with tempfile.TemporaryDirectory(prefix="bench-e2e-") as tmp:
        for name, n_steps in (("warmup", 1), ("timed", steps)):
            bank = synthetic_frame_bank(
                {"train": n_steps * batch_size},
                num_frames=t,
                height=h,
                width=w,
                clip_len=16,
                clip_stride=10,
                crop_size=crop,
                seed=1,
            )
            model = build_end_to_end(bank.model_config(heads), i3d_weights=None, static_weights=None)
            params = sum(p.numel() for p in model.parameters())
            if device == "cuda":
                torch.cuda.synchronize()
                torch.cuda.reset_peak_memory_stats()
            res = train(model, bank, tcfg, seed=0, checkpoint_dir=Path(tmp) / name, progress=False)
            seconds = res.train_seconds
    out = {
        "config": config_name,
        "size": size,
        "device": device,
        "frames": f"{t}x{crop or h}x{crop or w}",
        "params": params,
        "steps": steps,
        "seconds": seconds,
        "steps_per_s": steps / seconds,
        "pairs_per_s": steps * batch_size / seconds,
        "peak_rss_gib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20,
    }
    if device == "cuda":
        out["name"] = torch.cuda.get_device_name()
        out["peak_allocated_gib"] = torch.cuda.max_memory_allocated() / 2**30
        out["peak_reserved_gib"] = torch.cuda.max_memory_reserved() / 2**30
    else:
        out["name"] = f"CPU, {torch.get_num_threads()} threads"
    return out


def _child(queue: object, kwargs: dict) -> None:
    logging.basicConfig(level=logging.ERROR)
    try:
        queue.put(bench_end_to_end(**kwargs))  # type: ignore[attr-defined]
    except Exception as exc:  # reported by the parent
        queue.put({"error": f"{type(exc).__name__}: {exc}"})  # type: ignore[attr-defined]


def _in_child(**kwargs: object) -> dict:
    """:func:`bench_end_to_end` in a fresh process, so its peak memory is its own."""
    import multiprocessing

    ctx = multiprocessing.get_context("spawn")
    queue = ctx.Queue()
    proc = ctx.Process(target=_child, args=(queue, kwargs))
    proc.start()
    result = queue.get()
    proc.join()
    return result


def main_end_to_end(args: argparse.Namespace) -> int:
    print(
        f"end-to-end training: batch {args.batch_size} pairs, {args.steps} timed steps, {args.workers} "
        f"loader workers{', amp' if args.amp else ''}"
        f"{', activation checkpointing' if args.activation_checkpointing else ''}; torch {torch.__version__}"
    )
    for device in args.devices:
        if device == "cuda" and not torch.cuda.is_available():
            print("  cuda: not available, skipped")
            continue
        for config_name in args.configs:
            for size in args.sizes:
                r = _in_child(
                    config_name=config_name,
                    size=size,
                    device=device,
                    steps=args.steps,
                    batch_size=args.batch_size,
                    amp=args.amp and device == "cuda",
                    checkpointing=args.activation_checkpointing,
                    workers=args.workers,
                    threads=args.threads,
                )
                if "error" in r:
                    print(f"  [{device}] {config_name} heads, {size}: FAILED {r['error']}")
                    continue
                memory = (
                    f"peak allocated {r['peak_allocated_gib']:.2f} GiB "
                    f"(reserved {r['peak_reserved_gib']:.2f})"
                    if device == "cuda"
                    else f"peak RSS {r['peak_rss_gib']:.2f} GiB"
                )
                print(
                    f"  [{device}: {r['name']}] {config_name} heads ({r['params'] / 1e6:.1f} M params), "
                    f"{size} {r['frames']}: {r['steps_per_s']:.3f} steps/s ({r['pairs_per_s']:.2f} pairs/s; "
                    f"{r['steps']} steps in {r['seconds']:.1f} s), {memory}"
                )
    return 0


def _configs() -> dict[str, ModelConfig]:
    return {"pipeline": ModelConfig.cpu_default(), "reference": ModelConfig(), "tiny": ModelConfig.tiny()}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--mode", choices=["cached", "end_to_end"], default="cached")
    parser.add_argument(
        "--sizes", nargs="+", default=["paper", "default"], choices=list(SIZES), help="end_to_end frames"
    )
    parser.add_argument("--workers", type=int, default=2, help="end_to_end: DataLoader workers")
    parser.add_argument("--activation-checkpointing", action="store_true", help="end_to_end only")
    parser.add_argument("--steps", type=int, default=3, help="timed training steps")
    parser.add_argument("--batch-size", type=int, default=8, help="pairs per step (spec: 8)")
    parser.add_argument("--queries", type=int, default=8, help="evaluated queries")
    parser.add_argument("--exemplars", type=int, default=10, help="voters per query (spec: 10)")
    parser.add_argument("--devices", nargs="+", default=["cpu", "cuda"], choices=["cpu", "cuda"])
    parser.add_argument("--amp", action="store_true", help="mixed precision for training on CUDA")
    parser.add_argument(
        "--configs", nargs="+", default=["pipeline", "reference"], choices=["pipeline", "reference", "tiny"]
    )
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING)
    # "no validation split" is intended here
    logging.getLogger("hpmcore.training.train").setLevel(logging.ERROR)
    if args.mode == "end_to_end":
        return main_end_to_end(args)
    if args.threads:
        torch.set_num_threads(args.threads)
    configs = _configs()
    for config_name in args.configs:
        cfg, tiny = configs[config_name], config_name == "tiny"
        n_params = sum(p.numel() for p in build_hpmcore(cfg).parameters())
        print(
            f"model: {config_name} ModelConfig, {n_params:,} parameters; batch {args.batch_size} pairs; "
            f"{args.exemplars} voters/query; torch {torch.__version__}"
        )
        measured = {}
        for device in args.devices:
            if device == "cuda" and not torch.cuda.is_available():
                print("  cuda: not available, skipped")
                continue
            measured[device] = _bench_device(cfg, device, args, tiny=tiny)
        if len(measured) == 2:
            tr = measured["cuda"][0]["steps_per_s"] / measured["cpu"][0]["steps_per_s"]
            ev = measured["cuda"][1]["queries_per_s"] / measured["cpu"][1]["queries_per_s"]
            print(f"  cuda/cpu speed-up: training x{tr:.1f}, evaluation x{ev:.1f}")
    return 0


def _bench_device(
    cfg: ModelConfig, device: str, args: argparse.Namespace, *, tiny: bool
) -> tuple[dict, dict]:
    """Train and evaluation measures of one config on one device, printed."""
    name = torch.cuda.get_device_name() if device == "cuda" else f"CPU, {torch.get_num_threads()} threads"
    amp = args.amp and device == "cuda"
    tr = bench_training(cfg, device, steps=args.steps, batch_size=args.batch_size, amp=amp, tiny=tiny)
    ev = bench_evaluation(cfg, device, queries=args.queries, exemplars=args.exemplars, tiny=tiny)
    print(f"  [{device}: {name}{', amp' if amp else ''}]")
    print(
        f"    training:   {tr['steps_per_s']:.3f} steps/s ({tr['pairs_per_s']:.2f} pairs/s; "
        f"{tr['steps']} steps in {tr['seconds']:.1f} s)"
    )
    print(
        f"    evaluation: {ev['queries_per_s']:.3f} queries/s ({ev['pairs_per_s']:.2f} pairs/s; "
        f"{ev['queries']} queries x {args.exemplars} voters, {ev['videos_encoded']} videos encoded, "
        f"{ev['seconds']:.1f} s)"
    )
    return tr, ev


if __name__ == "__main__":
    raise SystemExit(main())
