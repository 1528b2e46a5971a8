"""Training checkpoints: written by the trainer, read by the trainer (resume) and by evaluation.

Two files per run, in a checkpoint folder:

- :data:`LAST` (``last.pt``), after every epoch: model, optimizer, scheduler, grad scaler, every global
  RNG state, the epoch, the history and the best-so-far selection — what an exact resume needs;
- :data:`BEST` (``best.pt``): the weights of the epoch with the best validation ρ and its validation
  metrics.

Both carry ``config``, the run's fingerprint (model kind and config, training config, seed, data), so a
checkpoint is refused by a run of another configuration, naming the differing keys, and a model can be
rebuilt from the file alone (:func:`model_from_checkpoint`). **Identical state → identical bytes**: the
file holds no timings or paths, and is serialised in memory (``torch.save`` into a file would name the
archive after the temporary file) then written atomically, so a retrain that reproduces the same
weights leaves the DVC hash (and everything downstream) unchanged.

Every read is checked (:func:`read_checkpoint`): the format, the keys, the fingerprint's layout, and
that every floating-point weight is finite — a ``best.pt`` with NaN/inf weights is refused. A bad
RNG state is refused when a resume restores it (:func:`restore_rng_state`). Each refusal is a
:class:`~hpmcore.models.checkpoints.CheckpointError` naming the file (the stages exit 2).
"""

from __future__ import annotations

import hashlib
import io
import json
import random
import sys
from collections import OrderedDict
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from hpmcore.config import ConfigError, CoReConfig, ModelConfig, flatten, from_dict
from hpmcore.io import atomic_path
from hpmcore.models.checkpoints import CheckpointError
from hpmcore.models.end_to_end import EndToEndConfig, EndToEndHPMCoRe
from hpmcore.models.hpmcore import build_hpmcore
from hpmcore.training.core_baseline import build_core_baseline
from hpmcore.training.protocol import PairModel

__all__ = [
    "BEST",
    "CHECKPOINTS",
    "CHECKPOINT_FORMAT",
    "LAST",
    "CheckpointError",
    "CheckpointInfo",
    "code_digest",
    "compare_fingerprints",
    "digest",
    "load_model_state",
    "load_weights",
    "model_fingerprint",
    "model_from_checkpoint",
    "read_checkpoint",
    "restore_rng_state",
    "rng_state",
    "save_checkpoint",
]

CHECKPOINTS = "checkpoints"
"""Sub-folder of the train stage's output (``data/model``) with :data:`LAST` and :data:`BEST`."""
LAST = "last.pt"
"""Training state after the last complete epoch."""
BEST = "best.pt"
"""Weights of the epoch with the best validation ρ."""
CHECKPOINT_FORMAT = "hpmcore-checkpoint/1"
BEST_KEYS = ("format", "config", "epoch", "model", "val")
LAST_KEYS = (
    *BEST_KEYS[:4],
    "optimizer",
    "scheduler",
    "scaler",
    "rng",
    "history",
    "best_epoch",
    "best_val_rho",
    "best_val",
)
FINGERPRINT_KEYS = ("model", "train", "seed", "data")

MODEL_KINDS: dict[str, tuple[type, Any]] = {
    "HPMCoRe": (ModelConfig, build_hpmcore),
    "CoReBaseline": (CoReConfig, build_core_baseline),
    "EndToEndHPMCoRe": (EndToEndConfig, EndToEndHPMCoRe.from_config),
}
"""Model class name (as :func:`model_fingerprint` records it) → its config class and seeded builder."""


def digest(obj: Any) -> str:
    """SHA-256 of ``obj`` as canonical JSON (sorted keys)."""
    return hashlib.sha256(json.dumps(obj, sort_keys=True, default=str).encode()).hexdigest()


TRAINING_CODE = ("models", "training", "runtime.py", "data/splits.py")
"""What a training run computes with, relative to the ``hpmcore`` package: the modules of the models and
the trainer, the seed scheme and the exemplar draws."""


def code_digest() -> str:
    """SHA-256 of the source of :data:`TRAINING_CODE` (every ``.py`` file's package path and bytes).

    Part of the run fingerprint, so that a checkpoint written by other model or trainer code is not
    resumed: the train stage's checkpoint folder persists across reruns, and after a code change DVC
    reruns the stage, which must then retrain rather than reuse the weights the old code produced."""
    root = Path(__file__).resolve().parents[1]
    files: list[Path] = []
    for part in TRAINING_CODE:
        path = root / part
        files.extend(sorted(path.rglob("*.py")) if path.is_dir() else [path])
    h = hashlib.sha256()
    for path in sorted(files):
        h.update(path.relative_to(root).as_posix().encode() + b"\0" + path.read_bytes() + b"\0")
    return h.hexdigest()


def model_fingerprint(model: PairModel) -> dict[str, Any]:
    """What identifies a model's architecture: its class name and its config dataclass."""
    return {"kind": type(model).__name__, "config": asdict(model.config)}


def compare_fingerprints(
    path: Path, stored: Mapping[str, Any], current: Mapping[str, Any], what: str
) -> None:
    """Raise :class:`CheckpointError` naming ``path`` and the differing keys unless equal."""
    if digest(stored) == digest(current):
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


def _canonical(obj: Any) -> Any:
    """A copy of ``obj``'s containers with every string interned: pickle writes a repeated object as a
    reference, so equal values must be shared the same way whether they were computed in this process
    or loaded from a checkpoint (a resumed run), or the bytes would differ."""
    if isinstance(obj, str):
        return sys.intern(obj)
    if isinstance(obj, dict):
        out = type(obj)() if type(obj) in (dict, OrderedDict) else dict()
        for key, value in obj.items():
            out[_canonical(key)] = _canonical(value)
        metadata = getattr(obj, "_metadata", None)  # a torch state dict's module versions
        if metadata is not None:
            out._metadata = _canonical(metadata)  # type: ignore[attr-defined]
        return out
    if isinstance(obj, list):
        return [_canonical(v) for v in obj]
    if isinstance(obj, tuple):
        return tuple(_canonical(v) for v in obj)
    return obj


def save_checkpoint(state: Mapping[str, Any], path: Path) -> None:
    """Write ``state`` (a :data:`BEST` or :data:`LAST` dict) atomically; the same state gives the same
    bytes (whether it was computed in this process or partly restored from a checkpoint)."""
    buffer = io.BytesIO()
    torch.save(_canonical(dict(state)), buffer)
    with atomic_path(Path(path)) as tmp:
        tmp.write_bytes(buffer.getvalue())


def _non_finite(weights: Mapping[str, Any]) -> list[str]:
    return [
        k
        for k, t in weights.items()
        if isinstance(t, torch.Tensor) and t.is_floating_point() and not bool(torch.isfinite(t).all())
    ]


def read_checkpoint(path: Path, *, training_state: bool = False) -> dict[str, Any]:
    """Read and check a checkpoint (every key of :data:`BEST`, or of :data:`LAST` with ``training_state``).

    Raises:
        CheckpointError: naming ``path``: missing, unreadable (no pickle is ever executed:
            ``weights_only``), another format, missing keys, a malformed fingerprint, or NaN/inf weights.
    """
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"checkpoint {path}: file does not exist")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # any unpickling problem means a bad checkpoint
        raise CheckpointError(f"checkpoint {path}: unreadable ({type(exc).__name__}: {exc})") from None
    if not isinstance(state, dict) or state.get("format") != CHECKPOINT_FORMAT:
        raise CheckpointError(f"checkpoint {path}: not an hpmcore training checkpoint ({CHECKPOINT_FORMAT})")
    missing = [k for k in (LAST_KEYS if training_state else BEST_KEYS) if k not in state]
    if missing:
        raise CheckpointError(f"checkpoint {path}: missing key(s) {missing}")
    config = state["config"]
    if (
        not isinstance(config, dict)
        or any(k not in config for k in FINGERPRINT_KEYS)
        or not isinstance(config["model"], dict)
        or not isinstance(config["model"].get("config"), dict)
        or not isinstance(config["train"], dict)
    ):
        raise CheckpointError(
            f"checkpoint {path}: 'config' must hold the run fingerprint ({', '.join(FINGERPRINT_KEYS)})"
        )
    if not isinstance(state["model"], dict) or not all(
        isinstance(t, torch.Tensor) for t in state["model"].values()
    ):
        raise CheckpointError(f"checkpoint {path}: 'model' is not a state dict of tensors")
    bad = _non_finite(state["model"])
    if bad:
        raise CheckpointError(
            f"checkpoint {path}: non-finite (NaN/inf) weights in {len(bad)} tensor(s), e.g. {bad[:3]}"
        )
    return state


@dataclass(frozen=True)
class CheckpointInfo:
    """What a checkpoint says about itself (its weights aside)."""

    path: Path
    epoch: int
    """The epoch the weights are from."""
    val: dict[str, Any] | None
    """Validation metrics of that epoch (``None`` without a validation split)."""
    config: dict[str, Any]
    """The run fingerprint: ``model`` (``kind``, ``config``), ``train``, ``seed``, ``data``."""

    @property
    def kind(self) -> str:
        """The model class name (``HPMCoRe``, ``CoReBaseline``)."""
        return str(self.config["model"]["kind"])

    @property
    def dd_mode(self) -> bool:
        """Whether the model regresses completeness (score / DD): evaluation votes in that mode."""
        return bool(self.config["train"].get("dd_mode", False))


def _info(path: Path, state: Mapping[str, Any]) -> CheckpointInfo:
    return CheckpointInfo(
        path=Path(path), epoch=int(state["epoch"]), val=state.get("val"), config=state["config"]
    )


def load_model_state(path: Path, model: nn.Module, weights: Mapping[str, Any]) -> None:
    """``model.load_state_dict(weights)`` (strict), a mismatch being a :class:`CheckpointError` naming
    ``path``."""
    try:
        model.load_state_dict(weights)
    except (RuntimeError, ValueError, KeyError) as exc:
        raise CheckpointError(
            f"checkpoint {path}: weights do not fit the model ({' '.join(str(exc).split())})"
        ) from None


def load_weights(path: Path, model: PairModel) -> CheckpointInfo:
    """Load the weights of a ``best.pt``/``last.pt`` into ``model`` (built with the same config).

    Raises:
        CheckpointError: the file is missing, unreadable or bad (see :func:`read_checkpoint`), or was
            written for another model configuration (naming the file and the differing keys).
    """
    state = read_checkpoint(path)
    compare_fingerprints(
        Path(path), state["config"]["model"], model_fingerprint(model), "model configuration"
    )
    load_model_state(Path(path), model, state["model"])  # type: ignore[arg-type]
    return _info(path, state)


def model_from_checkpoint(path: Path) -> tuple[PairModel, CheckpointInfo]:
    """The model a checkpoint was trained as (its kind and config, as recorded), holding its weights.

    Raises:
        CheckpointError: a bad checkpoint (:func:`read_checkpoint`), or an unknown model kind or an
            invalid recorded config (naming the file).
    """
    state = read_checkpoint(path)
    fingerprint = state["config"]["model"]
    kind = fingerprint.get("kind")
    if kind not in MODEL_KINDS:
        raise CheckpointError(
            f"checkpoint {path}: unknown model kind {kind!r} (known: {sorted(MODEL_KINDS)})"
        )
    config_cls, build = MODEL_KINDS[kind]
    try:
        config = from_dict(config_cls, dict(fingerprint["config"]), "model")
    except ConfigError as exc:
        raise CheckpointError(f"checkpoint {path}: its model config is invalid ({exc})") from None
    model = build(config)
    load_model_state(Path(path), model, state["model"])
    return model, _info(path, state)


# ---------------------------------------------------------------------------------------------------------
# Global RNG states (exact resume)


def rng_state() -> dict[str, Any]:
    """Every global RNG state (Python, numpy, torch, CUDA), in types ``weights_only`` loading accepts."""
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


def restore_rng_state(state: Any, path: Path) -> None:
    """Set every global RNG from :func:`rng_state`'s dict, after checking all of it.

    Raises:
        CheckpointError: naming ``path`` when any part is malformed (nothing is set then).
    """
    try:
        version, internal, gauss = state["python"]
        py = (int(version), tuple(int(x) for x in internal), gauss)
        random.Random().setstate(py)
        npst = state["numpy"]
        keys = npst["keys"]
        if not isinstance(keys, torch.Tensor) or tuple(keys.shape) != (624,):
            raise ValueError("numpy keys must be 624 integers")
        nps = (
            "MT19937",
            keys.numpy().astype(np.uint32),
            int(npst["pos"]),
            int(npst["has_gauss"]),
            float(npst["cached_gaussian"]),
        )
        np.random.RandomState().set_state(nps)
        torch_state = state["torch"]
        torch.Generator().set_state(torch_state)
        cuda = list(state["cuda"])
    except Exception as exc:
        raise CheckpointError(f"checkpoint {path}: bad RNG state ({type(exc).__name__}: {exc})") from None
    random.setstate(py)
    np.random.set_state(nps)
    torch.set_rng_state(torch_state)
    if cuda and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(cuda)
