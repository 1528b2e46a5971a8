"""Strict checkpoint loading shared by the encoders.

The reference code wraps its weight loading in a silent ``try/except`` (spec §13 item 8), so a missing or
wrong file quietly means training from scratch. Here every problem is collected and raised as one
:class:`CheckpointError` that names the file and lists the missing, unexpected and mis-shaped keys.
"""

from __future__ import annotations

import logging
from collections.abc import Collection, Mapping
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

log = logging.getLogger(__name__)

# BatchNorm's step counter: old conversions (PyTorch 0.3) lack it, newer files carry it. It is never
# required and never unexpected.
_OPTIONAL_SUFFIX = "num_batches_tracked"
_MAX_LISTED = 25


class CheckpointError(ValueError):
    """A weights file is missing, unreadable, or does not match the model key for key."""


@dataclass(frozen=True)
class LoadReport:
    """What a strict load did.

    Attributes:
        path: the file that was loaded.
        loaded: number of tensors copied into the model, not counting ``num_batches_tracked``.
        ignored: file keys that were expected to be unused (e.g. a classifier) and were dropped.
        kept_init: model keys that the file did not provide and that were allowed to keep their
            initial values (e.g. GSM gates that do not exist in an ImageNet file).
    """

    path: Path
    loaded: int
    ignored: tuple[str, ...]
    kept_init: tuple[str, ...]


def read_state_dict(path: Path | str, *, trust: bool = False) -> dict[str, torch.Tensor]:
    """Read a flat ``{name: tensor}`` state dict from a ``.safetensors`` or ``torch.save`` file.

    ``torch.load`` runs with ``map_location="cpu", weights_only=True``; ``trust`` allows a full unpickle
    (for trusted files carrying pickled metadata, e.g. OpenMMLab's released checkpoints). A state dict
    nested under ``"state_dict"`` (OpenMMLab, Lightning: ``{"state_dict": …, "meta": …}``) is taken
    from there, and a ``module.`` prefix (``DataParallel``) is dropped from every key.

    Raises:
        CheckpointError: the path does not exist, cannot be read, or does not hold a flat mapping from
            string keys to tensors. The message names the file.
    """
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"checkpoint {path}: file does not exist")
    try:
        if path.suffix == ".safetensors":
            from safetensors.torch import load_file

            obj: object = load_file(str(path), device="cpu")
        else:
            obj = torch.load(path, map_location="cpu", weights_only=not trust)
    except Exception as exc:  # any decoding failure becomes one clear error naming the file
        raise CheckpointError(f"checkpoint {path}: cannot be read ({type(exc).__name__}: {exc})") from exc
    if isinstance(obj, Mapping) and isinstance(obj.get("state_dict"), Mapping):
        obj = obj["state_dict"]
    if not isinstance(obj, Mapping):
        raise CheckpointError(f"checkpoint {path}: expected a flat state_dict, got {type(obj).__name__}")
    bad = [k for k, v in obj.items() if not isinstance(k, str) or not isinstance(v, torch.Tensor)]
    if bad:
        raise CheckpointError(
            f"checkpoint {path}: expected a flat state_dict of tensors; "
            f"non-tensor entries: {_listing([str(k) for k in bad])}"
        )
    return {k.removeprefix("module."): v for k, v in obj.items()}


def load_strict(
    module: nn.Module,
    path: Path | str,
    *,
    ignorable: Mapping[str, tuple[int, ...]] | None = None,
    may_keep_init: Collection[str] = (),
    state: Mapping[str, torch.Tensor] | None = None,
) -> LoadReport:
    """Load ``path`` into ``module``, requiring every tensor to match by name and shape.

    Args:
        module: the model; its ``state_dict()`` keys are the expected layout.
        path: a ``.safetensors`` or ``torch.save`` file holding a flat state dict.
        ignorable: file keys that may be present but are not part of ``module`` (e.g. the unused
            I3D logits), with their documented shapes. Present ones are shape-checked, then dropped.
        may_keep_init: module keys the file may lack; absent ones keep their current values, present
            ones are loaded (and shape-checked) like any other key.
        state: the file's state dict when the caller has read it already (:func:`read_state_dict`,
            e.g. to fail before building a slow model); ``None``: read ``path``.

    ``*.num_batches_tracked`` entries are tolerated both present and absent.

    Returns:
        a :class:`LoadReport`.

    Raises:
        CheckpointError: naming ``path`` and listing every missing, unexpected and mis-shaped key.
    """
    path = Path(path)
    ignorable = dict(ignorable or {})
    state = dict(read_state_dict(path) if state is None else state)
    expected = module.state_dict()
    optional = set(may_keep_init) | {k for k in expected if k.endswith(_OPTIONAL_SUFFIX)}

    missing = [k for k in expected if k not in state and k not in optional]
    unexpected = [
        k for k in state if k not in expected and k not in ignorable and not k.endswith(_OPTIONAL_SUFFIX)
    ]
    misshaped = [
        f"{k}: file {tuple(v.shape)} vs model {tuple(expected[k].shape)}"
        for k, v in state.items()
        if k in expected and v.shape != expected[k].shape
    ]
    misshaped += [
        f"{k}: file {tuple(v.shape)} vs documented {ignorable[k]}"
        for k, v in state.items()
        if k not in expected and k in ignorable and tuple(v.shape) != tuple(ignorable[k])
    ]
    if missing or unexpected or misshaped:
        parts = [f"checkpoint {path} does not match {type(module).__name__}:"]
        if missing:
            parts.append(f"  missing ({len(missing)}): {_listing(missing)}")
        if unexpected:
            parts.append(f"  unexpected ({len(unexpected)}): {_listing(unexpected)}")
        if misshaped:
            parts.append(f"  mis-shaped ({len(misshaped)}): {_listing(misshaped)}")
        raise CheckpointError("\n".join(parts))

    to_load = {k: v for k, v in state.items() if k in expected}
    result = module.load_state_dict(to_load, strict=False)
    # Belt and braces: everything not loaded must be an allowed leftover.
    leftover = [k for k in result.missing_keys if k not in optional]
    if leftover or result.unexpected_keys:
        raise CheckpointError(
            f"checkpoint {path}: load_state_dict left {leftover} missing, {result.unexpected_keys} unexpected"
        )
    ignored = tuple(k for k in state if k in ignorable and k not in expected)
    kept_init = tuple(k for k in expected if k not in state and not k.endswith(_OPTIONAL_SUFFIX))
    loaded = sum(not k.endswith(_OPTIONAL_SUFFIX) for k in to_load)
    log.info(
        "loaded %d tensors from %s (ignored %d unused, %d kept init)",
        loaded,
        path,
        len(ignored),
        len(kept_init),
    )
    return LoadReport(path=path, loaded=loaded, ignored=ignored, kept_init=kept_init)


def _listing(keys: list[str]) -> str:
    shown = ", ".join(keys[:_MAX_LISTED])
    return shown if len(keys) <= _MAX_LISTED else f"{shown}, … and {len(keys) - _MAX_LISTED} more"
