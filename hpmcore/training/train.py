"""Training of pair models on cached features (spec §9) with the honest protocol of §11.4.

:func:`train` trains a :class:`~hpmcore.training.protocol.PairModel` (HP-MCoRe or the CoRe-style
baseline) in place:

- **Pairs** (§9.1): every train video is a query once per epoch, paired with one exemplar from the
  train pool drawn with :func:`hpmcore.data.splits.select_exemplars` — same dive number (w/ DN), same DD,
  or any (w/o DN) — never itself, except a video alone in its group, which pairs with itself (target
  Δ = 0). A new exemplar every epoch: the draw is the stream ``("pairs", epoch)`` of the seed
  (:func:`~hpmcore.runtime.derive_seed`), the shuffle ``("shuffle", epoch)``, so an epoch's batches do
  not depend on what ran before it.
- **Targets** (:class:`~hpmcore.training.protocol.PairTargets`): raw scores, or completeness
  ``score / DD`` in DD mode (§10.3); dive-number labels and splash sizes when the model's losses use
  them (its :meth:`~hpmcore.training.protocol.PairModel.input_spec`). The model computes its own loss
  (:meth:`~hpmcore.training.protocol.PairModel.pair_loss`).
- **Missing ground truth**: a train dive without transitions is pooled with its decoded transitions
  and left out of ``L_tas``; a model that uses ground truth needs it for at least one train dive.
- **Batches** of ``batch_size`` pairs, the last one smaller (§9.2).
- **Optimizer**: Adam over the model's *named* parameter groups (``parameter_groups()``); a group named
  ``static_trunk`` (the RegNet+GSM trunk, end-to-end mode only) gets ``static_trunk_lr_factor × lr``.
- **Schedule**, stepped once per epoch (:func:`lr_factor`): ``cyclic`` is the reference
  ``CosineAnnealingLR(T_max=20)`` continued past ``T_max``, ``lr(t) = lr·½(1 + cos(πt/T_max))``, zero at
  epochs 20, 60, … (§9.4, §13 item 16); ``monotone`` — **a deviation from the reference** — is one
  cosine over the run, ``lr·½(1 + cos(πt/epochs))``; ``constant`` keeps ``lr``.
- **Seeds everywhere**: one ``seed`` from the caller seeds Python ``random``, numpy and torch at the
  start (:func:`~hpmcore.runtime.seed_everything`), the pairing, the shuffle and the validation voters;
  the RNG states are saved in every checkpoint.
- **Device**: ``auto`` (CUDA when available, :func:`~hpmcore.runtime.resolve_device`), AMP on CUDA only
  (bf16 where supported, else fp16 with a grad scaler); ``amp`` is ignored on the CPU.
- **Checkpoints** (:mod:`hpmcore.training.checkpoints`), written atomically after every epoch to
  ``checkpoint_dir``: ``last.pt`` (everything an exact resume needs) and ``best.pt`` (the weights of the
  epoch with the best **validation** ρ, §11.4 — selection never looks at the test split). Running
  :func:`train` again with the same arguments resumes after the last complete epoch and ends with
  exactly the weights and metrics of an uninterrupted run (bit-identical on the CPU). Each checkpoint
  stores a fingerprint of the model config, the training config, the seed and the data (train/val
  labels and feature tensors); a checkpoint from another configuration is refused with an error naming
  the file and the differing keys, before anything is written. Checkpoints hold no timings: the same
  run gives the same bytes.
- **Validation** every epoch through :func:`hpmcore.training.evaluate.evaluate_model` (one voter draw of
  ``val_exemplars`` exemplars, fixed across epochs); the caller's ``on_epoch(epoch, metrics)`` gets the
  losses, val metrics, lr and the epoch's wall time (MLflow logging stays with the caller).
- **Modes** (``train.mode``): ``cached`` trains a model on a :class:`~hpmcore.training.bank.FeatureBank`
  of cached features, the whole train split stacked once on the device; ``end_to_end`` trains an
  :class:`~hpmcore.models.end_to_end.EndToEndHPMCoRe` on a :class:`~hpmcore.training.frames.FrameBank`:
  each step's pairs are read from the decode cache and augmented (spec §1.2,
  :mod:`hpmcore.training.augment`; the views are drawn per pair from the seed) by a DataLoader with
  ``num_workers`` seeded workers, the encoders run in the step, the RegNet+GSM trunk learns at
  ``static_trunk_lr_factor × lr``, the input standardiser (``model.input_norm``) is fitted on the
  initial encoders' features, validation re-encodes the frames with the current encoders, and
  ``activation_checkpointing`` trades compute for memory. Resume is exact in both modes.
- **Data parallel** (:mod:`hpmcore.training.distributed`, under ``torchrun``): every rank draws the same
  epoch; each global batch is sharded over the ranks, ``DistributedDataParallel`` averages the gradients
  (each rank's loss weighted by its share of the batch); validation shards the queries and gathers;
  only rank 0 writes the checkpoints, which hold every rank's RNG states (exact resume with the same
  number of processes). The result equals the single-process run's up to float rounding when no term
  couples the pairs of a batch — BatchNorm in training mode (HD-GCN, I3D) and the contrastive loss see
  each rank's shard only, as in any DDP without synchronised BatchNorm.
"""

from __future__ import annotations

import logging
import math
import time
from collections import Counter, defaultdict
from collections.abc import Callable, Iterator, Sequence
from contextlib import nullcontext
from dataclasses import asdict, dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

import torch
from torch import nn
from torch.nn.parallel import DistributedDataParallel
from tqdm import tqdm

from hpmcore.config import ConfigError, EvalConfig, TrainConfig
from hpmcore.data.canonical import DatasetError
from hpmcore.data.splits import ExemplarMode, ExemplarPool, select_exemplars
from hpmcore.models.end_to_end import EndToEndHPMCoRe
from hpmcore.models.hpmcore import VideoInputs
from hpmcore.runtime import derive_rng, derive_seed, resolve_device, seed_everything
from hpmcore.training.bank import FeatureBank, FeatureBankError, VideoFeatures, stack_videos
from hpmcore.training.checkpoints import (
    BEST,
    CHECKPOINT_FORMAT,
    LAST,
    CheckpointError,
    code_digest,
    compare_fingerprints,
    load_model_state,
    load_weights,
    model_fingerprint,
    read_checkpoint,
    restore_rng_state,
    rng_state,
    save_checkpoint,
)
from hpmcore.training.distributed import World, current_world
from hpmcore.training.evaluate import EvalPlan, evaluate_model, plan_evaluation
from hpmcore.training.frames import FrameBank, PairFrames, VideoFrames, pair_loader, view_batches
from hpmcore.training.losses import LossTerms
from hpmcore.training.metrics import rho_for_selection
from hpmcore.training.protocol import InputSpec, PairModel, PairTargets, check_pair_model

__all__ = [
    "STATIC_TRUNK_GROUP",
    "TrainConfig",
    "TrainResult",
    "build_optimizer",
    "draw_pairs",
    "lr_factor",
    "run_fingerprint",
    "train",
]

log = logging.getLogger(__name__)

STATIC_TRUNK_GROUP = "static_trunk"
"""Parameter group trained at ``static_trunk_lr_factor × lr`` (spec §9.3)."""
BETAS = (0.9, 0.999)
EPS = 1e-8
VAL_KEYS = ("rho", "l2", "rl2", "rl2_x100", "tiou", "aiou_50", "aiou_75")
"""Validation metrics reported per epoch as ``val_<key>``."""
_NOT_FINGERPRINTED = ("device", "num_workers", "activation_checkpointing")
"""Training keys that change how fast a run goes (or where), not what it computes."""
_END_TO_END_ONLY = ("mode", "augment", "flip_pose")
"""Training keys that only an end-to-end run records (a cached run's fingerprint, hence its checkpoints,
stays what it was before they existed)."""

EpochCallback = Callable[[int, dict[str, float]], None]


# ---------------------------------------------------------------------------------------------------------
# Schedule, pairing, optimizer


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


def build_optimizer(model: PairModel, cfg: TrainConfig) -> torch.optim.Adam:
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
# What a run is a function of


def run_fingerprint(model: PairModel, cfg: TrainConfig, seed: int, bank: FeatureBank) -> dict[str, Any]:
    """What a training run's result is a function of (except the device and speed-only keys): model,
    training config, seed, the train/val data (labels and feature tensors, or the decoded frames'
    content keys; :meth:`~hpmcore.training.bank.FeatureBank.digest`) and the training code
    (:func:`~hpmcore.training.checkpoints.code_digest`)."""
    skip = _NOT_FINGERPRINTED + (_END_TO_END_ONLY if cfg.mode == "cached" else ())
    return {
        "model": model_fingerprint(model),
        "train": {k: v for k, v in asdict(cfg).items() if k not in skip},
        "seed": int(seed),
        "data": {"train": bank.digest("train"), "val": bank.digest("val")},
        "code": code_digest(),
    }


# ---------------------------------------------------------------------------------------------------------
# The train split on the device


@dataclass
class _Data:
    """The train split's targets and optional labels on the device, and in cached mode its inputs."""

    ids: list[str]
    inputs: VideoInputs | None
    """Cached mode: the whole train split stacked once; end to end: ``None`` (frames are read per step)."""
    targets: torch.Tensor  # (N,) score or completeness
    dn_labels: torch.Tensor | None = None  # (N,) class ids
    splash: torch.Tensor | None = None  # (N,)
    index: dict[str, int] = field(default_factory=dict)

    def select(self, rows: torch.Tensor) -> VideoInputs:
        v = self.inputs
        assert v is not None  # cached mode
        return VideoInputs(
            i3d=v.i3d[rows],
            static=None if v.static is None else v.static[rows],
            skeleton=None if v.skeleton is None else v.skeleton[rows],
            transitions=None if v.transitions is None else v.transitions[rows],
        )

    def targets_of(self, qi: torch.Tensor, ei: torch.Tensor) -> PairTargets:
        """The targets of the pairs ``(qi[b], ei[b])`` (rows of this split)."""

        def both(t: torch.Tensor | None) -> torch.Tensor | None:
            return None if t is None else torch.cat([t[qi], t[ei]])

        return PairTargets(
            score_q=self.targets[qi],
            score_e=self.targets[ei],
            dive_number=both(self.dn_labels),
            splash=both(self.splash),
        )


def _dive_number_labels(videos: list[VideoFeatures], spec: InputSpec) -> torch.Tensor | None:
    """Class ids of the train dive numbers (sorted), when the model's head has room for them."""
    if spec.dive_number_classes is None:
        return None
    classes = {dn: i for i, dn in enumerate(sorted({v.dive_number for v in videos}))}
    if len(classes) <= spec.dive_number_classes:
        return torch.tensor([classes[v.dive_number] for v in videos])
    if spec.dive_number_required:
        raise DatasetError(
            f"{len(classes)} dive numbers in train but the dive-number head has "
            f"{spec.dive_number_classes} classes (dive_number_weight > 0)"
        )
    return None


def _train_data(
    model: PairModel, videos: list[Any], cfg: TrainConfig, device: torch.device, *, frames: bool = False
) -> _Data:
    """Targets of the train split (and its stacked inputs in cached mode), checked (DD > 0 in DD mode;
    some ground truth when the model uses it)."""
    spec = model.input_spec("train")
    inputs = None if frames else stack_videos(videos, spec).to(device)
    scores = torch.tensor([v.score for v in videos], dtype=torch.float32)
    if cfg.dd_mode:
        dds = torch.tensor([v.difficulty for v in videos], dtype=torch.float32)
        if bool((dds <= 0).any()):
            bad = videos[int((dds <= 0).nonzero()[0])].id
            raise FeatureBankError(f"DD mode: video {bad!r} has difficulty <= 0")
        scores = scores / dds
    if spec.transitions:
        without = [v.id for v in videos if v.transitions is None]
        if len(without) == len(videos):
            raise DatasetError(
                "no train dive has ground-truth transitions, which the segmenter learns from "
                "(set model.use_segmentation: false for a dataset without step labels)"
            )
        if without:
            log.warning(
                "%d train dives without ground-truth transitions (e.g. %s): pooled with their decoded "
                "transitions, left out of L_tas",
                len(without),
                without[0],
            )
    dn = _dive_number_labels(videos, spec)
    splash = None
    if spec.splash:
        splash = torch.tensor([float(v.splash) for v in videos], dtype=torch.float32, device=device)  # type: ignore[arg-type]
    ids = [v.id for v in videos]
    return _Data(
        ids,
        inputs,
        scores.to(device),
        None if dn is None else dn.to(device),
        splash,
        {i: n for n, i in enumerate(ids)},
    )


def _losses(model: PairModel, out: Any, data: _Data, qi: torch.Tensor, ei: torch.Tensor) -> LossTerms:
    return model.pair_loss(out, data.targets_of(qi, ei))


class _PairStep(nn.Module):
    """One training forward: the pair model on a batch and its loss → ``(total, {term: value})``.

    The loss is computed inside the module so that, under ``DistributedDataParallel``, the graph DDP
    follows from its output reaches exactly the parameters the loss depends on (outputs the loss does not
    use, e.g. dive-number logits with β = 0, would otherwise leave gradients DDP waits for)."""

    def __init__(self, model: PairModel) -> None:
        super().__init__()
        self.model = model

    def forward(
        self,
        query: Any,
        exemplar: Any,
        data: _Data,
        qi: torch.Tensor,
        ei: torch.Tensor,
        local: tuple[torch.Tensor, torch.Tensor] | None = None,
    ) -> tuple[torch.Tensor, dict[str, float]]:
        if local is None:
            out = self.model(query, exemplar)
        else:  # in-batch pairs: ``query`` holds the batch's videos, each encoded once
            encoded = self.model.encode(query)
            out = self.model.forward_pair(encoded.select(local[0]), encoded.select(local[1]))
        terms = _losses(self.model, out, data, qi, ei)
        return terms.total, terms.scalars()


@dataclass(frozen=True)
class _Batch:
    """This rank's share of one global batch of pairs, on the device."""

    qi: torch.Tensor
    """``(b,)`` rows (of the train split) of the queries."""
    ei: torch.Tensor
    """``(b,)`` rows of their exemplars."""
    query: Any
    """:class:`VideoInputs` (cached) or :class:`~hpmcore.models.end_to_end.FrameInputs` of the queries."""
    exemplar: Any
    weight: float
    """Loss weight: this rank's share of the batch × world size (1.0 in one process)."""
    count: int
    """Pairs of the batch this rank accounts for (0 for a rank left without any)."""
    local: tuple[torch.Tensor, torch.Tensor] | None = None
    """``pair_scheme: in_batch``: each pair's query and exemplar as positions in ``query`` (the batch's
    videos; ``exemplar`` is then ``None``)."""


def _epoch_batches(
    data: _Data,
    order: torch.Tensor,
    partner_rows: torch.Tensor,
    cfg: TrainConfig,
    world: World,
    device: torch.device,
    frames: _FrameEpoch | None,
) -> Iterator[_Batch]:
    """The epoch's batches: pair ``p`` of the epoch is query ``order[p]`` with exemplar
    ``partner_rows[order[p]]``; global batches of ``cfg.batch_size`` consecutive pairs, sharded over the
    ranks (:meth:`World.shard`)."""
    n = len(data.ids)
    shards = [world.shard(torch.arange(i, min(i + cfg.batch_size, n))) for i in range(0, n, cfg.batch_size)]
    if frames is None:
        for pos, weight, count in shards:
            qi = order[pos]
            qd, ed = qi.to(device), partner_rows[qi].to(device)
            yield _Batch(qd, ed, data.select(qd), data.select(ed), weight, count)
        return
    dataset = frames.dataset(order, partner_rows)
    loader = pair_loader(
        dataset,
        [pos.tolist() for pos, _, _ in shards],
        workers=cfg.num_workers,
        pin_memory=device.type == "cuda",
    )
    for (pos, query, exemplar), (_, weight, count) in zip(loader, shards, strict=True):
        qi = order[pos]
        qd, ed = qi.to(device), partner_rows[qi].to(device)
        yield _Batch(qd, ed, query.to(device), exemplar.to(device), weight, count)


def _pair_keys(data: _Data, pool: ExemplarPool, mode: ExemplarMode) -> list[object]:
    """What two train videos must share to be a pair under ``mode`` (``None`` for ``any``), per row."""
    position = {vid: n for n, vid in enumerate(pool.ids)}
    match mode:
        case "dive_number":
            return [pool.dive_numbers[position[i]] for i in data.ids]
        case "difficulty":
            return [round(pool.difficulties[position[i]], 6) for i in data.ids]
        case _:
            return [None] * len(data.ids)


def _in_batch_batches(
    data: _Data, order: torch.Tensor, keys: Sequence[object], cfg: TrainConfig, device: torch.device
) -> Iterator[_Batch]:
    """``pair_scheme: in_batch``: the epoch's videos (``order``) in batches of ``cfg.batch_size``; the pairs
    of a batch are every ordered pair of two of its videos with equal ``keys`` (row ``i`` then ``j``,
    ``i ≠ j``). A batch without such a pair is skipped."""
    for start in range(0, len(order), cfg.batch_size):
        rows = order[start : start + cfg.batch_size]
        local = [
            (i, j)
            for i in range(len(rows))
            for j in range(len(rows))
            if i != j and keys[int(rows[i])] == keys[int(rows[j])]
        ]
        if not local:
            continue
        qa, ea = (torch.tensor(side, dtype=torch.long) for side in zip(*local, strict=True))
        rows_d = rows.to(device)
        yield _Batch(
            rows_d[qa.to(device)],
            rows_d[ea.to(device)],
            data.select(rows_d),
            None,
            1.0,
            len(local),
            (qa.to(device), ea.to(device)),
        )


@dataclass(frozen=True)
class _FrameEpoch:
    """End-to-end mode: how an epoch's training views are made."""

    bank: FrameBank
    videos: list[VideoFrames]
    """The train split, in data order."""
    spec: InputSpec
    seed: int
    epoch: int
    cfg: TrainConfig

    def dataset(self, order: torch.Tensor, partner_rows: torch.Tensor) -> PairFrames:
        rows = order.tolist()
        return PairFrames(
            self.bank,
            [self.videos[r] for r in rows],
            [self.videos[int(partner_rows[r])] for r in rows],
            seed=self.seed,
            epoch=self.epoch,
            spec=self.spec,
            augment=self.cfg.augment,
            flip_pose=self.cfg.flip_pose,
        )


# ---------------------------------------------------------------------------------------------------------
# One run: plan, resume, optimisation state, epochs


@dataclass(frozen=True)
class TrainResult:
    """What :func:`train` did; the model it was given now holds the ``best.pt`` weights."""

    best_epoch: int
    """Epoch of ``best.pt`` (best validation ρ; the last epoch when there is no validation split)."""
    best_val: dict[str, Any] | None
    """Validation metrics of that epoch (``None`` without a validation split)."""
    history: list[dict[str, float]]
    """Per-epoch metrics, all epochs including resumed ones (no timings: they are in no output)."""
    best_checkpoint: Path
    last_checkpoint: Path
    train_seconds: float
    """Wall time of the epochs this call ran (validation included, checkpoint writes excluded); not
    stored anywhere, so a resumed run counts only its own epochs."""
    resumed_from: int | None = None
    """The first epoch this call ran after resuming from ``last.pt`` (``None``: started fresh)."""
    device: str = "cpu"


@dataclass(frozen=True)
class _Plan:
    """Everything checked before anything is written."""

    train_ids: list[str]
    videos: list[Any]
    """The train split's :class:`VideoFeatures` (cached) or :class:`VideoFrames` (end to end)."""
    pool: ExemplarPool
    val_cfg: EvalConfig
    val_plan: EvalPlan | None
    fingerprint: dict[str, Any]


def _check_mode(model: PairModel, bank: FeatureBank, cfg: TrainConfig) -> bool:
    """Whether the run reads frames (end to end); the model, the bank and ``train.mode`` must agree."""
    frames = isinstance(bank, FrameBank)
    model_frames = model.input_spec("train").num_frames is not None
    if cfg.mode == "end_to_end" and not (frames and model_frames):
        raise ConfigError(
            "train.mode is end_to_end: it needs a frame bank (hpmcore.training.frames) and a model that "
            f"reads frames, got {type(bank).__name__} and {type(model).__name__}"
        )
    if cfg.mode == "cached" and (frames or model_frames):
        raise ConfigError(
            f"train.mode is cached: it needs cached features and a model on them, got {type(bank).__name__} "
            f"and {type(model).__name__} (set train.mode: end_to_end)"
        )
    return frames


def _plan(model: PairModel, bank: FeatureBank, cfg: TrainConfig, seed: int) -> _Plan:
    train_ids = bank.split_ids("train")
    if not train_ids:
        raise DatasetError("training needs videos in the train split, found none")
    videos = bank.require(train_ids, model.input_spec("train"))
    val_cfg = cfg.val_eval_config()
    val_plan = None
    if bank.split_ids("val"):
        val_plan = plan_evaluation(bank, "val", val_cfg, seed=seed, dd_mode=cfg.dd_mode, model=model)
    else:
        log.warning("no validation split: best.pt will be the last epoch (no model selection)")
    return _Plan(
        train_ids, videos, bank.pool("train"), val_cfg, val_plan, run_fingerprint(model, cfg, seed, bank)
    )


def _resume_state(
    folder: Path, fingerprint: dict[str, Any], *, resume: bool, restart_on_mismatch: bool
) -> dict[str, Any] | None:
    """The ``last.pt`` state to resume from (``None``: start over), after checking both checkpoints
    against ``fingerprint``; with ``restart_on_mismatch`` checkpoints of another configuration are
    deleted instead of refused."""
    last, best = folder / LAST, folder / BEST
    state = None
    for path in (last, best):
        if not path.exists():
            continue
        stored = read_checkpoint(path, training_state=path == last)
        try:
            compare_fingerprints(path, stored["config"], fingerprint, "configuration")
        except CheckpointError as exc:
            if not restart_on_mismatch:
                raise
            log.warning("%s; deleting it and starting over", exc)
            last.unlink(missing_ok=True)
            best.unlink(missing_ok=True)
            return None
        if path == last and resume:
            state = stored
    return state


def _resume_state_everywhere(
    world: World, folder: Path, fingerprint: dict[str, Any], *, resume: bool, restart_on_mismatch: bool
) -> dict[str, Any] | None:
    """:func:`_resume_state` decided by rank 0 (which alone deletes mismatched checkpoints); the other
    ranks then read the same ``last.pt``, or raise rank 0's error."""
    if not world.distributed:
        return _resume_state(folder, fingerprint, resume=resume, restart_on_mismatch=restart_on_mismatch)
    state, outcome = None, None
    if world.is_main:
        try:
            state = _resume_state(folder, fingerprint, resume=resume, restart_on_mismatch=restart_on_mismatch)
            outcome = state is not None
        except Exception as exc:  # re-raised on every rank
            outcome = exc
    outcome = world.broadcast(outcome)
    if isinstance(outcome, Exception):
        raise outcome
    if outcome and not world.is_main:
        state = read_checkpoint(folder / LAST, training_state=True)
    return state


@dataclass
class _Optimization:
    optimizer: torch.optim.Adam
    scheduler: torch.optim.lr_scheduler.LambdaLR
    scaler: torch.amp.GradScaler
    autocast: Callable[[], Any]

    @classmethod
    def build(cls, model: PairModel, cfg: TrainConfig, device: torch.device) -> _Optimization:
        """Adam over the named groups, the per-epoch schedule, and AMP (fp16 scaler) on CUDA only."""
        optimizer = build_optimizer(model, cfg)
        scheduler = torch.optim.lr_scheduler.LambdaLR(
            optimizer, partial(lr_factor, schedule=cfg.schedule, t_max=cfg.t_max, epochs=cfg.epochs)
        )
        autocast: Callable[[], Any] = nullcontext
        scaler = torch.amp.GradScaler(device.type, enabled=False)
        if cfg.amp and device.type == "cuda":
            dtype = torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
            autocast = partial(torch.autocast, device_type="cuda", dtype=dtype)
            scaler = torch.amp.GradScaler("cuda", enabled=dtype == torch.float16)
        elif cfg.amp:
            log.info("amp requested but the device is %s: training in fp32", device)
        return cls(optimizer, scheduler, scaler, autocast)

    def state(self) -> dict[str, Any]:
        return {
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict(),
            "scaler": self.scaler.state_dict(),
        }

    def restore(self, state: dict[str, Any], path: Path) -> None:
        try:
            self.optimizer.load_state_dict(state["optimizer"])
            self.scheduler.load_state_dict(state["scheduler"])
            self.scaler.load_state_dict(state["scaler"])
        except (KeyError, TypeError, ValueError, RuntimeError) as exc:
            raise CheckpointError(
                f"checkpoint {path}: bad optimizer state ({type(exc).__name__}: {exc})"
            ) from None


@dataclass
class _Selection:
    """The history and the best epoch so far (validation ρ; NaN ranks last)."""

    history: list[dict[str, float]] = field(default_factory=list)
    best_epoch: int = -1
    best_rho: float = math.nan
    best_val: dict[str, Any] | None = None

    def record(self, metrics: dict[str, float], val: dict[str, Any] | None) -> bool:
        """Add an epoch's metrics; whether it is the new best (always, without validation)."""
        epoch, val_rho = int(metrics["epoch"]), metrics.get("val_rho", math.nan)
        improved = (
            val is None
            or self.best_epoch < 0
            or rho_for_selection(val_rho) > rho_for_selection(self.best_rho)
        )
        if improved:
            self.best_epoch, self.best_rho, self.best_val = epoch, val_rho, val
        metrics.update(best_epoch=float(self.best_epoch), best_val_rho=self.best_rho)
        self.history.append(metrics)
        return improved


def _restore(
    model: PairModel, optimization: _Optimization, state: dict[str, Any], path: Path, world: World
) -> tuple[_Selection, int]:
    """Model, optimisation state, RNG states (this rank's) and selection from ``last.pt``; the next epoch."""
    load_model_state(path, model, state["model"])
    optimization.restore(state, path)
    ranks = state.get("rng_ranks")
    if world.distributed and isinstance(ranks, list) and len(ranks) == world.size:
        restore_rng_state(ranks[world.rank], path)
    else:
        if (world.distributed or ranks is not None) and world.is_main:
            log.warning(
                "%s was written by %d process(es), resuming with %d: every rank restores rank 0's RNG "
                "state, so the run is not the one it would have been uninterrupted",
                path,
                len(ranks) if isinstance(ranks, list) else 1,
                world.size,
            )
        restore_rng_state(state["rng"], path)
    selection = _Selection(
        list(state["history"]), state["best_epoch"], state["best_val_rho"], state["best_val"]
    )
    log.info("resuming from %s after epoch %d", path, state["epoch"])
    return selection, int(state["epoch"]) + 1


def _train_epoch(
    step_module: nn.Module,
    model: PairModel,
    data: _Data,
    plan: _Plan,
    optimization: _Optimization,
    cfg: TrainConfig,
    world: World,
    *,
    seed: int,
    epoch: int,
    frames: _FrameEpoch | None,
) -> dict[str, float]:
    """One pass over the train split in batches of pairs; the mean of each loss term (over all ranks)."""
    n, device = len(data.ids), data.targets.device
    order = torch.from_numpy(derive_rng(seed, "shuffle", epoch).permutation(n))
    if cfg.pair_scheme == "in_batch":
        batches = _in_batch_batches(data, order, _pair_keys(data, plan.pool, cfg.pairing), cfg, device)
    else:
        partners = draw_pairs(
            plan.pool, plan.train_ids, mode=cfg.pairing, seed=derive_seed(seed, "pairs", epoch)
        )
        partner_rows = torch.tensor([data.index[p] for p in partners], dtype=torch.long)
        batches = _epoch_batches(data, order, partner_rows, cfg, world, device, frames)
    model.train()
    sums: dict[str, float] = defaultdict(float)
    pairs = 0
    for step, batch in enumerate(batches):
        with optimization.autocast():
            total, scalars = step_module(batch.query, batch.exemplar, data, batch.qi, batch.ei, batch.local)
        if not world.all_true(bool(torch.isfinite(total))):
            raise FloatingPointError(f"non-finite training loss at epoch {epoch}, step {step}")
        optimization.optimizer.zero_grad(set_to_none=True)
        loss = total if batch.weight == 1.0 else total * batch.weight
        optimization.scaler.scale(loss).backward()
        optimization.scaler.step(optimization.optimizer)
        optimization.scaler.update()
        for name, value in scalars.items():
            sums[name] += value * batch.count
        pairs += batch.count
    optimization.scheduler.step()
    names = list(sums)
    *totals, count = world.sum([sums[name] for name in names] + [float(pairs)])
    return {
        "loss" if name == "total" else f"loss_{name}": t / max(count, 1.0)
        for name, t in zip(names, totals, strict=True)
    }


def _validate(
    model: PairModel, bank: FeatureBank, plan: _Plan, cfg: TrainConfig, seed: int
) -> dict[str, Any] | None:
    """The validation metrics of the current weights (``None`` without a validation split)."""
    if plan.val_plan is None:
        return None
    return evaluate_model(
        model, bank, "val", plan.val_cfg, seed=seed, dd_mode=cfg.dd_mode, plan=plan.val_plan
    ).metrics


def _save_epoch(
    folder: Path,
    fingerprint: dict[str, Any],
    epoch: int,
    model: PairModel,
    optimization: _Optimization,
    selection: _Selection,
    world: World,
    *,
    improved: bool,
) -> None:
    """``best.pt`` (when the epoch is the new best), then ``last.pt``, by rank 0 (every rank's RNG states
    in ``rng_ranks`` when distributed); the other ranks wait until they are written."""
    extra: dict[str, Any] = {}
    if world.distributed:
        extra = {"rng_ranks": world.all_gather(rng_state()), "world_size": world.size}
    if not world.is_main:
        world.barrier()
        return
    meta = {"format": CHECKPOINT_FORMAT, "config": fingerprint, "epoch": epoch}
    if improved:
        save_checkpoint({**meta, "model": model.state_dict(), "val": selection.best_val}, folder / BEST)
    save_checkpoint(
        {
            **meta,
            "model": model.state_dict(),
            **optimization.state(),
            "rng": rng_state(),
            "history": selection.history,
            "best_epoch": selection.best_epoch,
            "best_val_rho": selection.best_rho,
            "best_val": selection.best_val,
            **extra,
        },
        folder / LAST,
    )
    world.barrier()


def train(
    model: PairModel,
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
        model: a freshly built (seeded) pair model: :class:`~hpmcore.models.hpmcore.HPMCoRe` or the
            CoRe-style baseline.
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
        DatasetError: no train videos, a val query without an exemplar in the pool (named), no train
            dive with ground-truth transitions for a model with a segmenter.
        CheckpointError: a checkpoint in ``checkpoint_dir`` is from another configuration, or bad
            (unreadable, missing keys, NaN/inf weights, a bad RNG or optimizer state), naming the file.
        FloatingPointError: the loss became non-finite (the last complete epoch's checkpoint stays).
    """
    cfg.validate()
    check_pair_model(model)
    world = current_world()
    if cfg.pair_scheme == "in_batch" and world.distributed:
        raise ConfigError("train.pair_scheme: in_batch runs in one process (use drawn pairs with torchrun)")
    reads_frames = _check_mode(model, bank, cfg)
    folder = Path(checkpoint_dir)
    plan = _plan(model, bank, cfg, seed)
    state = _resume_state_everywhere(
        world, folder, plan.fingerprint, resume=resume, restart_on_mismatch=restart_on_mismatch
    )
    device = resolve_device(cfg.device, param="train.device")
    model.to(device)
    optimization = _Optimization.build(model, cfg, device)
    if state is not None:
        selection, start = _restore(model, optimization, state, folder / LAST, world)
    else:  # each rank its own stream (dropout masks), rank 0 (and a single process) the seed itself
        seed_everything(seed if world.rank == 0 else derive_seed(seed, "rank", world.rank))
        selection, start = _Selection(), 0
    data = _train_data(model, plan.videos, cfg, device, frames=reads_frames)
    spec = model.input_spec("train")
    if state is None:  # train-split statistics; restored from last.pt on resume
        if reads_frames:
            model.fit_input_norm(view_batches(bank, plan.videos, spec, 2 * cfg.batch_size))  # type: ignore[arg-type]
        else:
            model.fit_input_norm(data.inputs)  # type: ignore[arg-type]
    if cfg.activation_checkpointing:
        if isinstance(model, EndToEndHPMCoRe):
            model.set_activation_checkpointing(True)
        else:
            log.info("train.activation_checkpointing: no encoders to checkpoint in cached mode, ignored")
    step_module: nn.Module = _PairStep(model)  # type: ignore[arg-type]
    if world.distributed:
        step_module = DistributedDataParallel(step_module, find_unused_parameters=True)
    main = world.is_main
    seconds = 0.0
    bar = tqdm(total=cfg.epochs, initial=start, desc="train", unit="epoch", disable=not (progress and main))
    for epoch in range(start, cfg.epochs):
        t0 = time.perf_counter()
        lr = cfg.lr * lr_factor(epoch, schedule=cfg.schedule, t_max=cfg.t_max, epochs=cfg.epochs)
        metrics: dict[str, float] = {"epoch": float(epoch), "lr": lr}
        frames = _FrameEpoch(bank, plan.videos, spec, seed, epoch, cfg) if reads_frames else None  # type: ignore[arg-type]
        metrics.update(
            _train_epoch(
                step_module,
                model,
                data,
                plan,
                optimization,
                cfg,
                world,
                seed=seed,
                epoch=epoch,
                frames=frames,
            )
        )
        val = _validate(model, bank, plan, cfg, seed)
        for key in VAL_KEYS if val is not None else ():
            metrics[f"val_{key}"] = math.nan if val.get(key) is None else float(val[key])
        improved = selection.record(metrics, val)
        epoch_seconds = time.perf_counter() - t0
        seconds += epoch_seconds
        _save_epoch(folder, plan.fingerprint, epoch, model, optimization, selection, world, improved=improved)
        if not main:
            continue
        log.info(
            "epoch %d/%d: loss %.4f, val rho %.4f (best %.4f @ %d), lr %.3g, %.1f s",
            epoch,
            cfg.epochs - 1,
            metrics.get("loss", math.nan),
            metrics.get("val_rho", math.nan),
            selection.best_rho,
            selection.best_epoch,
            lr,
            epoch_seconds,
        )
        bar.update(1)
        bar.set_postfix(
            loss=f"{metrics.get('loss', math.nan):.3f}", val_rho=f"{metrics.get('val_rho', math.nan):.3f}"
        )
        if on_epoch is not None:
            on_epoch(epoch, {**metrics, "epoch_seconds": epoch_seconds})
    bar.close()
    if start >= cfg.epochs and world.is_main:
        log.info("%s: training already complete (%d epochs)", folder / LAST, cfg.epochs)
    load_weights(folder / BEST, model)
    model.eval()
    return TrainResult(
        best_epoch=selection.best_epoch,
        best_val=selection.best_val,
        history=selection.history,
        best_checkpoint=folder / BEST,
        last_checkpoint=folder / LAST,
        train_seconds=seconds,
        resumed_from=start if state is not None else None,
        device=str(device),
    )
