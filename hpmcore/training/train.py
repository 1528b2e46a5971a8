"""Training of pair models on cached features (spec §9) with the honest protocol of §11.4.

:func:`train` trains a model (HP-MCoRe or a baseline of :mod:`hpmcore.training.baselines`) in place:

- **Pairs** (§9.1): every train video is a query once per epoch, paired with one exemplar from the
  train pool drawn with :func:`hpmcore.data.splits.select_exemplars` — same dive number (w/ DN), same DD,
  or any (w/o DN) — never itself, except a video alone in its group, which pairs with itself (target
  Δ = 0). A new exemplar every epoch: the draw is seeded by ``(seed, epoch)`` (:func:`derive_seed`),
  as is the per-epoch shuffle, so an epoch's batches do not depend on what ran before it.
- **Targets**: raw scores, or completeness ``score / DD`` in DD mode (§10.3).
- **Batches** of ``batch_size`` pairs, the last one smaller (§9.2).
- **Optimizer**: Adam over the model's *named* parameter groups (``parameter_groups()``); a group named
  ``static_trunk`` (the RegNet+GSM trunk, end-to-end mode only) gets ``static_trunk_lr_factor × lr``.
- **Schedule**, stepped once per epoch (:func:`lr_factor`): ``cyclic`` is the reference
  ``CosineAnnealingLR(T_max=20)`` continued past ``T_max``, ``lr(t) = lr·½(1 + cos(πt/T_max))``, zero at
  epochs 20, 60, … (§9.4, §13 item 16); ``monotone`` — **a deviation from the reference** — is one
  cosine over the run, ``lr·½(1 + cos(πt/epochs))``; ``constant`` keeps ``lr``.
- **Seeds everywhere**: one ``seed`` from the caller seeds Python ``random``, numpy and torch at the start,
  the pairing, the shuffle and the validation voters; the RNG states are saved in every checkpoint.
- **Device**: ``auto`` (CUDA when available), AMP on CUDA only (bf16 where supported, else fp16 with a
  grad scaler); ``amp`` is ignored on the CPU.
- **Checkpoints**, written atomically after every epoch to ``checkpoint_dir``: ``last.pt`` (model,
  optimizer, scheduler, scaler, RNG states, epoch, history, best val ρ, config) and ``best.pt`` (the
  weights of the epoch with the best **validation** ρ, §11.4 — the test split is never looked at).
  Running :func:`train` again with the same arguments resumes after the last complete epoch and ends
  with exactly the weights and metrics of an uninterrupted run (bit-identical on the CPU). Each
  checkpoint stores a fingerprint of the model config, the training config, the seed and the data
  (train/val ids and labels); a checkpoint from another configuration is refused with an error naming
  the file and the differing keys, before anything is written.
- **Validation** every epoch through :func:`hpmcore.training.evaluate.evaluate_model` (one voter draw of
  ``val_exemplars`` exemplars, fixed across epochs); the caller's ``on_epoch(epoch, metrics)`` gets the
  losses, val metrics and lr (MLflow logging stays with the caller).

:func:`load_checkpoint` loads ``best.pt`` (or ``last.pt``) into a freshly built model for evaluation,
refusing a checkpoint written for another model configuration.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import random
import time
from collections import Counter, defaultdict
from collections.abc import Callable, Mapping, Sequence
from contextlib import nullcontext
from dataclasses import asdict, dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import torch
from torch import nn
from tqdm import tqdm

from hpmcore.config import TrainConfig, flatten
from hpmcore.data.canonical import DatasetError
from hpmcore.data.splits import ExemplarMode, ExemplarPool, select_exemplars
from hpmcore.extraction.cache import MANIFEST, read_manifest
from hpmcore.extraction.features import FEATURES_MANIFEST_SCHEMA, load_features
from hpmcore.extraction.pose.table import dive_skeletons, normalize_skeleton, pose_metadata
from hpmcore.io import atomic_path
from hpmcore.models.checkpoints import CheckpointError
from hpmcore.models.hpmcore import HPMCoRe, VideoInputs, pair_losses
from hpmcore.models.segmentation import gt_transitions
from hpmcore.runtime import derive_seed, resolve_device, seed_everything
from hpmcore.training.evaluate import (
    FeatureBank,
    FeatureBankError,
    VideoFeatures,
    evaluate_model,
    input_spec,
    plan_evaluation,
    stack_videos,
)
from hpmcore.training.losses import LossTerms, LossWeights
from hpmcore.training.metrics import rho_for_selection

__all__ = [
    "BEST",
    "LAST",
    "STATIC_TRUNK_GROUP",
    "TrainConfig",
    "TrainResult",
    "build_optimizer",
    "draw_pairs",
    "load_checkpoint",
    "load_feature_bank",
    "lr_factor",
    "model_fingerprint",
    "run_fingerprint",
    "train",
]

log = logging.getLogger(__name__)

LAST = "last.pt"
"""Training state after the last complete epoch."""
BEST = "best.pt"
"""Weights of the epoch with the best validation ρ."""
STATIC_TRUNK_GROUP = "static_trunk"
"""Parameter group trained at ``static_trunk_lr_factor × lr`` (spec §9.3)."""
CHECKPOINT_FORMAT = "hpmcore-checkpoint/1"
BETAS = (0.9, 0.999)
EPS = 1e-8

EpochCallback = Callable[[int, dict[str, float]], None]


# ---------------------------------------------------------------------------------------------------------
# Configuration


_NOT_FINGERPRINTED = ("device",)


def lr_factor(epoch: int, *, schedule: str = "cyclic", t_max: int = 20, epochs: int = 201) -> float:
    """The learning-rate multiplier during ``epoch`` (0-based).

    ``cyclic``: ``½(1 + cos(π·epoch/t_max))`` (the reference; period ``2·t_max``, zero at ``t_max``,
    ``3·t_max``, …); ``monotone``: ``½(1 + cos(π·epoch/epochs))`` (decreasing, > 0 in every epoch);
    ``constant``: 1.
    """
    match schedule:
        case "cyclic":
            return 0.5 * (1.0 + math.cos(math.pi * epoch / t_max))
        case "monotone":
            return 0.5 * (1.0 + math.cos(math.pi * epoch / epochs))
        case "constant":
            return 1.0
        case _:
            raise ValueError(f"unknown schedule {schedule!r}")


def _rng_state() -> dict[str, Any]:
    """Every global RNG state, in types ``torch.load(weights_only=True)`` accepts."""
    _, keys, pos, has_gauss, cached = np.random.get_state()
    version, internal, gauss = random.getstate()
    return {
        "python": [version, list(internal), gauss],
        "numpy": {
            "keys": torch.from_numpy(np.asarray(keys, dtype=np.int64)),
            "pos": int(pos),
            "has_gauss": int(has_gauss),
            "cached_gaussian": float(cached),
        },
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
    }


def _set_rng_state(state: Mapping[str, Any]) -> None:
    version, internal, gauss = state["python"]
    random.setstate((int(version), tuple(int(x) for x in internal), gauss))
    npst = state["numpy"]
    np.random.set_state(
        (
            "MT19937",
            npst["keys"].numpy().astype(np.uint32),
            npst["pos"],
            npst["has_gauss"],
            npst["cached_gaussian"],
        )
    )
    torch.set_rng_state(state["torch"])
    if state["cuda"] and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


# ---------------------------------------------------------------------------------------------------------
# Pairing (§9.1)


def draw_pairs(pool: ExemplarPool, query_ids: Sequence[str], *, mode: ExemplarMode, seed: int) -> list[str]:
    """One training exemplar per query (every query must be in ``pool``), seeded per query by ``seed``.

    ``dive_number``/``difficulty``: a uniform draw among the pool's other dives with the same dive number
    / DD; ``any``: among all other dives. A query alone in its group is paired with itself (§9.1).
    """
    position = {vid: n for n, vid in enumerate(pool.ids)}
    match mode:
        case "dive_number":
            keys: Sequence[object] = pool.dive_numbers
        case "difficulty":
            keys = [round(d, 6) for d in pool.difficulties]
        case "any":
            keys = [None] * len(pool.ids)
        case _:
            raise ValueError(f"unknown pairing mode {mode!r}")
    group_size = Counter(keys)
    partners = []
    for q in query_ids:
        n = position.get(q)
        if n is None:
            raise DatasetError(f"training query {q!r} is not in the exemplar pool")
        if group_size[keys[n]] == 1:
            partners.append(q)
            continue
        (e,) = select_exemplars(
            pool, q, pool.dive_numbers[n], pool.difficulties[n], mode=mode, k=1, seed=seed
        )
        partners.append(e)
    return partners


# ---------------------------------------------------------------------------------------------------------
# Fingerprints and checkpoints


def _digest(obj: Any) -> str:
    return hashlib.sha256(json.dumps(obj, sort_keys=True, default=str).encode()).hexdigest()


def model_fingerprint(model: nn.Module) -> dict[str, Any]:
    """What identifies a model's architecture: its class name and its config dataclass."""
    config = getattr(model, "config", None)
    return {"kind": type(model).__name__, "config": asdict(config) if config is not None else None}


def run_fingerprint(model: nn.Module, cfg: TrainConfig, seed: int, bank: FeatureBank) -> dict[str, Any]:
    """What a training run's result is a function of (except the device): model, training config, seed
    and the train/val data (ids, dive numbers, DDs, scores)."""

    def data(split: str) -> str:
        return _digest(
            [
                [r[k] for k in ("id", "dive_number", "difficulty", "final_score")]
                for r in map(bank.label, bank.split_ids(split))
            ]
        )

    return {
        "model": model_fingerprint(model),
        "train": {k: v for k, v in asdict(cfg).items() if k not in _NOT_FINGERPRINTED},
        "seed": int(seed),
        "data": {"train": data("train"), "val": data("val")},
    }


def _read(path: Path) -> dict[str, Any]:
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # any unpickling problem means a bad checkpoint
        raise CheckpointError(f"checkpoint {path}: unreadable ({type(exc).__name__}: {exc})") from None
    if not isinstance(state, dict) or state.get("format") != CHECKPOINT_FORMAT:
        raise CheckpointError(f"checkpoint {path}: not an hpmcore training checkpoint ({CHECKPOINT_FORMAT})")
    return state


def _compare(path: Path, stored: Mapping[str, Any], current: Mapping[str, Any], what: str) -> None:
    if _digest(stored) == _digest(current):
        return
    a, b = (
        flatten(json.loads(json.dumps(stored, default=str))),
        flatten(json.loads(json.dumps(current, default=str))),
    )
    keys = sorted(set(a) | set(b), key=lambda k: (k.count("."), k))  # "seed", "model.kind" before details
    diffs = [f"{k}: {a.get(k)!r} in the checkpoint, {b.get(k)!r} now" for k in keys if a.get(k) != b.get(k)]
    raise CheckpointError(
        f"checkpoint {path} was written for another {what} ({'; '.join(diffs[:8])}"
        f"{'; …' if len(diffs) > 8 else ''}); use a matching configuration or remove the checkpoint"
    )


def _save(obj: dict[str, Any], path: Path) -> None:
    with atomic_path(path) as tmp:
        torch.save(obj, tmp)


def load_checkpoint(path: Path, model: nn.Module) -> dict[str, Any]:
    """Load the weights of a ``best.pt``/``last.pt`` into ``model`` (built with the same config).

    Returns:
        The checkpoint's metadata: ``epoch``, ``val`` (validation metrics, ``best.pt``) and ``config``
        (the run fingerprint).

    Raises:
        CheckpointError: the file is missing or unreadable, or was written for another model
            configuration (naming the file and the differing keys).
    """
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"checkpoint {path}: file does not exist")
    state = _read(path)
    _compare(path, state["config"]["model"], model_fingerprint(model), "model configuration")
    model.load_state_dict(state["model"])
    return {k: state[k] for k in ("epoch", "config") if k in state} | {"val": state.get("val")}


# ---------------------------------------------------------------------------------------------------------
# Optimizer


def build_optimizer(model: nn.Module, cfg: TrainConfig) -> torch.optim.Adam:
    """Adam over the model's named parameter groups (each group dict carries its ``name``)."""
    groups = model.parameter_groups()
    seen = {id(p) for params in groups.values() for p in params}
    trainable = [p for p in model.parameters() if p.requires_grad]
    if len(seen) != sum(len(v) for v in groups.values()) or seen != {id(p) for p in trainable}:
        raise ValueError("parameter_groups() must list every trainable parameter exactly once")
    return torch.optim.Adam(
        [
            {
                "name": name,
                "params": params,
                "lr": cfg.lr * (cfg.static_trunk_lr_factor if name == STATIC_TRUNK_GROUP else 1.0),
            }
            for name, params in groups.items()
        ],
        lr=cfg.lr,
        betas=BETAS,
        eps=EPS,
        weight_decay=cfg.weight_decay,
    )


# ---------------------------------------------------------------------------------------------------------
# Training


@dataclass(frozen=True)
class TrainResult:
    """What :func:`train` did; the model it was given now holds the ``best.pt`` weights."""

    best_epoch: int
    """Epoch of ``best.pt`` (best validation ρ; the last epoch when there is no validation split)."""
    best_val: dict[str, Any] | None
    """Validation metrics of that epoch (``None`` without a validation split)."""
    history: list[dict[str, float]]
    """Per-epoch metrics (also given to ``on_epoch``), all epochs including resumed ones."""
    best_checkpoint: Path
    last_checkpoint: Path
    train_seconds: float
    """Wall time of all epochs, summed over resumed runs."""
    resumed_from: int | None = None
    """The last complete epoch found in ``last.pt``, when the run resumed."""
    device: str = "cpu"


@dataclass
class _Data:
    """The train split stacked once on the device, with targets and optional labels."""

    ids: list[str]
    inputs: VideoInputs
    targets: torch.Tensor  # (N,) score or completeness
    dn_labels: torch.Tensor | None = None  # (N,) class ids
    splash: torch.Tensor | None = None  # (N,)
    index: dict[str, int] = field(default_factory=dict)

    def select(self, rows: torch.Tensor) -> VideoInputs:
        v = self.inputs
        return VideoInputs(
            i3d=v.i3d[rows],
            static=None if v.static is None else v.static[rows],
            skeleton=None if v.skeleton is None else v.skeleton[rows],
            transitions=None if v.transitions is None else v.transitions[rows],
        )


def _train_data(
    model: nn.Module, videos: list[VideoFeatures], cfg: TrainConfig, device: torch.device
) -> _Data:
    spec = input_spec(model, "train")
    inputs = stack_videos(videos, spec).to(device)
    scores = torch.tensor([v.score for v in videos], dtype=torch.float32)
    if cfg.dd_mode:
        dds = torch.tensor([v.difficulty for v in videos], dtype=torch.float32)
        if bool((dds <= 0).any()):
            bad = videos[int((dds <= 0).nonzero()[0])].id
            raise FeatureBankError(f"DD mode: video {bad!r} has difficulty <= 0")
        scores = scores / dds
    dn_labels = None
    if isinstance(model, HPMCoRe) and model.skeleton is not None:
        classes = {dn: i for i, dn in enumerate(sorted({v.dive_number for v in videos}))}
        if len(classes) <= model.config.dn_classes:
            dn_labels = torch.tensor([classes[v.dive_number] for v in videos], device=device)
        elif model.config.dive_number_weight > 0:
            raise DatasetError(
                f"{len(classes)} dive numbers in train but the dive-number head has "
                f"{model.config.dn_classes} classes (dive_number_weight > 0)"
            )
    splash = None
    if spec.splash:
        splash = torch.tensor([float(v.splash) for v in videos], dtype=torch.float32, device=device)  # type: ignore[arg-type]
    ids = [v.id for v in videos]
    return _Data(ids, inputs, scores.to(device), dn_labels, splash, {i: n for n, i in enumerate(ids)})


def _losses(model: nn.Module, out: Any, data: _Data, qi: torch.Tensor, ei: torch.Tensor) -> LossTerms:
    custom = getattr(model, "pair_loss", None)
    if custom is not None:
        return custom(out, score_q=data.targets[qi], score_e=data.targets[ei])
    return pair_losses(
        out,
        score_q=data.targets[qi],
        score_e=data.targets[ei],
        weights=LossWeights.of(model.config),
        dn_labels=None if data.dn_labels is None else torch.cat([data.dn_labels[qi], data.dn_labels[ei]]),
        splash_target=None if data.splash is None else torch.cat([data.splash[qi], data.splash[ei]]),
    )


def _amp(cfg: TrainConfig, device: torch.device) -> tuple[Any, torch.amp.GradScaler]:
    """Autocast context factory and grad scaler (enabled for fp16 only)."""
    if not cfg.amp or device.type != "cuda":
        if cfg.amp:
            log.info("amp requested but the device is %s: training in fp32", device)
        return nullcontext, torch.amp.GradScaler(device.type, enabled=False)
    dtype = torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    return (
        partial(torch.autocast, device_type="cuda", dtype=dtype),
        torch.amp.GradScaler("cuda", enabled=dtype == torch.float16),
    )


def _nan(x: Any) -> float:
    return math.nan if x is None else float(x)


def train(
    model: nn.Module,
    bank: FeatureBank,
    cfg: TrainConfig,
    *,
    seed: int,
    checkpoint_dir: Path,
    on_epoch: EpochCallback | None = None,
    resume: bool = True,
    restart_on_mismatch: bool = False,
    progress: bool = True,
) -> TrainResult:
    """Train ``model`` in place on the bank's train split, selecting the epoch on its val split.

    Args:
        model: a freshly built (seeded) model: :class:`HPMCoRe` or a baseline pair model.
        bank: features of every train and val video (test videos are never touched).
        cfg: the training config.
        seed: the one seed (global RNGs, pairing, shuffling, validation voters).
        checkpoint_dir: where ``last.pt`` and ``best.pt`` go.
        on_epoch: called after each epoch's checkpoint with ``(epoch, metrics)``: ``lr``, ``loss`` and
            ``loss_<term>``, ``val_rho``, ``val_l2``, ``val_rl2``, ``val_rl2_x100``, ``val_tiou``,
            ``val_aiou_50``, ``val_aiou_75``, ``best_epoch``, ``best_val_rho``, ``epoch_seconds``.
        resume: continue from ``last.pt`` when present (False: start over, overwriting it).
        restart_on_mismatch: checkpoints in ``checkpoint_dir`` written for another configuration are
            deleted (with a warning naming them) and training starts over, instead of an error — for a
            pipeline stage whose checkpoint folder persists across parameter changes.
        progress: show a progress bar.

    Returns:
        :class:`TrainResult`; ``model`` holds the ``best.pt`` weights, in eval mode.

    Raises:
        FeatureBankError: a train/val video (or a val query's exemplar) is missing or has NaN/mis-shaped
            features (named); nothing is written.
        DatasetError: no train videos, or a val query without an exemplar in the pool (named).
        CheckpointError: a checkpoint in ``checkpoint_dir`` is from another configuration (named).
        FloatingPointError: the loss became non-finite (the last complete epoch's checkpoint stays).
    """
    cfg.validate()
    checkpoint_dir = Path(checkpoint_dir)
    last_path, best_path = checkpoint_dir / LAST, checkpoint_dir / BEST
    train_ids = bank.split_ids("train")
    if not train_ids:
        raise DatasetError("training needs videos in the train split, found none")
    videos = bank.require(train_ids, input_spec(model, "train"))
    pool = bank.pool("train")
    val_cfg = cfg.val_eval_config()
    val_plan = None
    if bank.split_ids("val"):
        val_plan = plan_evaluation(bank, "val", val_cfg, seed=seed, model=model)
    else:
        log.warning("no validation split: best.pt will be the last epoch (no model selection)")
    fingerprint = run_fingerprint(model, cfg, seed, bank)

    state = None
    for path in (last_path, best_path):
        if path.exists():
            stored = _read(path)
            try:
                _compare(path, stored["config"], fingerprint, "configuration")
            except CheckpointError as exc:
                if not restart_on_mismatch:
                    raise
                log.warning("%s; deleting it and starting over", exc)
                last_path.unlink(missing_ok=True)
                best_path.unlink(missing_ok=True)
                state = None
                break
            if path == last_path and resume:
                state = stored

    device = resolve_device(cfg.device, param="train.device")
    model.to(device)
    autocast, scaler = _amp(cfg, device)
    optimizer = build_optimizer(model, cfg)
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimizer, partial(lr_factor, schedule=cfg.schedule, t_max=cfg.t_max, epochs=cfg.epochs)
    )
    history: list[dict[str, float]] = []
    best_epoch, best_rho, best_val, start, seconds = -1, math.nan, None, 0, 0.0
    resumed_from = None
    if state is not None:
        model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        scheduler.load_state_dict(state["scheduler"])
        scaler.load_state_dict(state["scaler"])
        history = list(state["history"])
        best_epoch, best_rho, best_val = state["best_epoch"], state["best_val_rho"], state["best_val"]
        seconds = state["train_seconds"]
        start = resumed_from = state["epoch"] + 1
        _set_rng_state(state["rng"])
        log.info("resuming from %s after epoch %d of %d", last_path, state["epoch"], cfg.epochs)
    else:
        seed_everything(seed)
    data = _train_data(model, videos, cfg, device)
    fit_input_norm = getattr(model, "fit_input_norm", None)
    if state is None and fit_input_norm is not None:
        fit_input_norm(data.inputs)  # train-split statistics; restored from last.pt on resume
    n = len(train_ids)
    partner_rows = torch.empty(n, dtype=torch.long)

    bar = tqdm(total=cfg.epochs, initial=start, desc="train", unit="epoch", disable=not progress)
    for epoch in range(start, cfg.epochs):
        t0 = time.perf_counter()
        lr = cfg.lr * lr_factor(epoch, schedule=cfg.schedule, t_max=cfg.t_max, epochs=cfg.epochs)
        order = torch.from_numpy(np.random.default_rng(derive_seed(seed, "shuffle", epoch)).permutation(n))
        partners = draw_pairs(pool, train_ids, mode=cfg.pairing, seed=derive_seed(seed, "pairs", epoch))
        partner_rows[:] = torch.tensor([data.index[p] for p in partners])
        model.train()
        sums: dict[str, float] = defaultdict(float)
        for step, i in enumerate(range(0, n, cfg.batch_size)):
            qi = order[i : i + cfg.batch_size]
            ei = partner_rows[qi]
            qd, ed = qi.to(device), ei.to(device)
            with autocast():
                out = model(data.select(qd), data.select(ed))
                terms = _losses(model, out, data, qd, ed)
            if not bool(torch.isfinite(terms.total)):
                raise FloatingPointError(f"non-finite training loss at epoch {epoch}, step {step}")
            optimizer.zero_grad(set_to_none=True)
            scaler.scale(terms.total).backward()
            scaler.step(optimizer)
            scaler.update()
            for name, value in terms.scalars().items():
                sums[name] += value * len(qi)
        scheduler.step()
        metrics: dict[str, float] = {"epoch": float(epoch), "lr": lr}
        for name, total in sums.items():
            metrics["loss" if name == "total" else f"loss_{name}"] = total / n
        val = None
        if val_plan is not None:
            val = evaluate_model(model, bank, "val", val_cfg, seed=seed, plan=val_plan).metrics
            for key in ("rho", "l2", "rl2", "rl2_x100", "tiou", "aiou_50", "aiou_75"):
                metrics[f"val_{key}"] = _nan(val.get(key))
        val_rho = metrics.get("val_rho", math.nan)
        improved = val is None or best_epoch < 0 or rho_for_selection(val_rho) > rho_for_selection(best_rho)
        if improved:
            best_epoch, best_rho, best_val = epoch, val_rho, val
        seconds += time.perf_counter() - t0
        metrics.update(
            best_epoch=float(best_epoch), best_val_rho=best_rho, epoch_seconds=time.perf_counter() - t0
        )
        history.append(metrics)
        meta = {"format": CHECKPOINT_FORMAT, "config": fingerprint, "epoch": epoch}
        if improved:
            _save({**meta, "model": model.state_dict(), "val": val}, best_path)
        _save(
            {
                **meta,
                "model": model.state_dict(),
                "optimizer": optimizer.state_dict(),
                "scheduler": scheduler.state_dict(),
                "scaler": scaler.state_dict(),
                "rng": _rng_state(),
                "history": history,
                "best_epoch": best_epoch,
                "best_val_rho": best_rho,
                "best_val": best_val,
                "train_seconds": seconds,
            },
            last_path,
        )
        log.info(
            "epoch %d/%d: loss %.4f, val rho %.4f (best %.4f @ %d), lr %.3g, %.1f s",
            epoch,
            cfg.epochs - 1,
            metrics.get("loss", math.nan),
            val_rho,
            best_rho,
            best_epoch,
            lr,
            metrics["epoch_seconds"],
        )
        bar.update(1)
        bar.set_postfix(loss=f"{metrics.get('loss', math.nan):.3f}", val_rho=f"{val_rho:.3f}")
        if on_epoch is not None:
            on_epoch(epoch, dict(metrics))
    bar.close()
    if start >= cfg.epochs:
        log.info("%s: training already complete (%d epochs)", last_path, cfg.epochs)
    load_checkpoint(best_path, model)
    model.eval()
    return TrainResult(
        best_epoch=best_epoch,
        best_val=best_val,
        history=history,
        best_checkpoint=best_path,
        last_checkpoint=last_path,
        train_seconds=seconds,
        resumed_from=resumed_from,
        device=str(device),
    )


# ---------------------------------------------------------------------------------------------------------
# The feature bank from the pipeline's outputs


def load_feature_bank(
    dives: pa.Table,
    features_dir: Path,
    *,
    decode_manifest: pa.Table,
    skeletons: pa.Table | None = None,
    drop_missing: bool = False,
) -> FeatureBank:
    """Assemble a :class:`~hpmcore.training.evaluate.FeatureBank` from the stages' outputs.

    Args:
        dives: the canonical annotation table with splits (stage ``prepare``).
        features_dir: output folder of stage ``features`` (``manifest.parquet`` + ``cache/``): I3D
            ``(J, 1024)`` and static ``(T, 368)`` per dive.
        decode_manifest: the decode stage's manifest; its sampled source frames (``indices``) pick the
            dive's ``frame_labels`` from which the ground-truth transitions are computed (spec §5.2), and
            its keys must be the ones the features were computed from.
        skeletons: the pose stage's sampled skeleton table, normalised as its metadata says
            (:func:`normalize_skeleton`) → ``(2, T, 16, 1)``; ``None``: no pose (a model
            with the skeleton branch then fails naming the first video).
        drop_missing: leave dives without features (or without pose, when ``skeletons`` is given) out of
            the bank's table — e.g. after ``on_error: skip`` upstream — instead of failing.

    Dives without frame labels (MTL-AQA), or whose sampled labels have fewer than 3 steps, get no
    ground-truth transitions (a model that needs them then fails naming the video).

    Raises:
        ValueError: an unreadable manifest or cache entry (naming the file).
        FeatureBankError: a dive of ``dives`` without features or pose (naming it and the file), a
            features entry computed from another decode, or inconsistent frame counts (naming the dive).
    """
    features_dir = Path(features_dir)
    manifest_path = features_dir / MANIFEST
    feature_rows = {r["id"]: r for r in read_manifest(manifest_path, FEATURES_MANIFEST_SCHEMA).to_pylist()}
    decode_rows = {r["id"]: r for r in decode_manifest.select(["id", "indices", "key"]).to_pylist()}
    poses, norm = None, "none"
    if skeletons is not None:
        poses = dive_skeletons(skeletons)
        norm = pose_metadata(skeletons).get("normalize", "none")
    ids = dives.column("id").to_pylist()
    missing = {
        i: "features" if i not in feature_rows else "pose"
        for i in ids
        if i not in feature_rows or (poses is not None and i not in poses)
    }
    if missing and not drop_missing:
        first = next(iter(missing))
        raise FeatureBankError(
            f"{manifest_path if missing[first] == 'features' else 'skeleton table'}: no {missing[first]} for "
            f"dive {first!r}" + (f" (and {len(missing) - 1} more dives)" if len(missing) > 1 else "")
        )
    if missing:
        log.warning(
            "feature bank: %d dives without features or pose left out: %s", len(missing), list(missing)[:5]
        )
        dives = dives.filter(pa.array([i not in missing for i in ids]))
    videos, no_gt = {}, 0
    for row in dives.to_pylist():
        vid = row["id"]
        frow, drow = feature_rows[vid], decode_rows.get(vid)
        if drow is None or drow["key"] != frow["decode_key"]:
            raise FeatureBankError(
                f"dive {vid!r}: the features in {manifest_path} were computed from another decode "
                f"(decode key {frow['decode_key'][:12]}…) than the decode manifest holds"
            )
        i3d, static = load_features(features_dir, frow)
        offsets = np.asarray(drow["indices"], dtype=np.int64) - row["start_frame"]
        if len(offsets) != static.shape[0] or offsets.min() < 0 or offsets.max() >= row["num_frames"]:
            raise FeatureBankError(
                f"dive {vid!r}: decoded frames {drow['indices'][:3]}… do not fit the dive's frames "
                f"{row['start_frame']}..{row['end_frame']} or the {static.shape[0]} static feature rows"
            )
        transitions = None
        if row["frame_labels"]:
            try:
                transitions = torch.tensor(gt_transitions(np.asarray(row["frame_labels"])[offsets]))
            except ValueError:
                no_gt += 1
        skeleton = None
        if poses is not None:
            pose = poses[vid]
            if pose.xy.shape[0] != static.shape[0]:
                raise FeatureBankError(
                    f"dive {vid!r}: {pose.xy.shape[0]} skeleton frames but {static.shape[0]} static "
                    "feature rows"
                )
            xy = normalize_skeleton(pose.xy, pose.width, pose.height, norm)  # (T, 16, 2)
            skeleton = torch.from_numpy(np.ascontiguousarray(xy.transpose(2, 0, 1)))[
                ..., None
            ]  # (2, T, 16, 1)
        videos[vid] = VideoFeatures(
            id=vid,
            i3d=i3d.float(),
            static=static.float(),
            skeleton=skeleton,
            transitions=transitions,
            score=float(row["final_score"]),
            difficulty=float(row["difficulty"]),
            dive_number=row["dive_number"],
        )
    if no_gt:
        log.warning(
            "feature bank: %d dives have fewer than 3 sampled steps: no ground-truth transitions", no_gt
        )
    return FeatureBank(videos, dives)
