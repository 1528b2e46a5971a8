"""Training steps/s and evaluation queries/s of HP-MCoRe on cached features of the real shapes.

Usage: ``python benchmarks/training.py [--steps 3] [--queries 8] [--exemplars 10] [--devices cpu cuda]
[--configs pipeline reference] [--amp]``

For each model config — ``pipeline`` (the ``params.yaml`` default, ``ModelConfig.cpu_default()``),
``reference`` (the paper's sizes, ~16.1 M parameters) or ``tiny`` (the test config, a smoke check) — on
a bank of random features with the real layout — I3D ``(J=9, 1024)``, static ``(T=96, 368)``, pose
``(2, 96, 16, 1)`` — and per device (``cuda`` only when available; the card is printed):

* **training**: :func:`hpmcore.training.train.train` for one epoch of ``--steps`` steps of
  ``--batch-size`` pairs (after a one-step warm-up run), timed by the trainer itself (forward, losses,
  backward, Adam; no validation, checkpoint writes excluded) → steps/s and pairs/s;
* **evaluation**: :func:`hpmcore.training.evaluate.evaluate_model` on ``--queries`` test queries with
  ``--exemplars`` voters each (every video encoded once, the pair heads per pair, spec §10.2), wall
  time → queries/s.

With both devices, the CUDA/CPU speed-up of each measure is printed from the same run.
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


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
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
    if args.threads:
        torch.set_num_threads(args.threads)
    configs = {"pipeline": ModelConfig.cpu_default(), "reference": ModelConfig(), "tiny": ModelConfig.tiny()}
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
