"""Where a computation runs and how its randomness is derived: one device resolver, one seed scheme.

Every stage takes one top-level ``seed`` (``params.yaml``); every random stream of the project is a
named child of it, :func:`derive_seed` ``(seed, *keys)`` (e.g. ``("pairs", epoch)``, ``("voters", draw)``,
``("query", dive_id)``), so streams are independent of each other and of the order work is done in.

torch is imported only by the functions that need it, so the seed scheme costs data-only stages (``prepare``)
no torch import.
"""

from __future__ import annotations

import hashlib
import random
from typing import TYPE_CHECKING

import numpy as np

from hpmcore.config import ConfigError

if TYPE_CHECKING:
    import torch

__all__ = ["derive_rng", "derive_seed", "resolve_device", "seed_everything", "seed_worker"]


def resolve_device(choice: str, *, param: str = "device") -> torch.device:
    """``auto`` → CUDA when available, else CPU; ``cpu``; ``cuda`` (an error without a GPU).

    Raises:
        ConfigError: naming ``param`` for ``cuda`` without CUDA or an unknown choice.
    """
    import torch

    match choice:
        case "auto":
            return torch.device("cuda" if torch.cuda.is_available() else "cpu")
        case "cpu":
            return torch.device("cpu")
        case "cuda":
            if not torch.cuda.is_available():
                raise ConfigError(f"{param} is 'cuda' but torch.cuda.is_available() is False")
            return torch.device("cuda")
        case _:
            raise ConfigError(f"{param} must be auto, cpu or cuda, got {choice!r}")


def _word(key: int | str) -> int:
    if isinstance(key, str):
        return int.from_bytes(hashlib.sha256(key.encode("utf-8", "surrogatepass")).digest()[:8], "little")
    if key < 0:
        raise ValueError(f"seed keys must be >= 0, got {key}")
    return int(key)


def derive_seed(seed: int, *keys: int | str) -> int:
    """A 32-bit seed for the stream ``keys`` of ``seed`` (strings are hashed, ints used as they are).

    The same ``(seed, keys)`` always give the same value, on every machine; different keys give
    independent streams (numpy ``SeedSequence`` entropy mixing).
    """
    if seed < 0:
        raise ValueError(f"seed must be >= 0, got {seed}")
    return int(np.random.SeedSequence([int(seed)] + [_word(k) for k in keys]).generate_state(1)[0])


def derive_rng(seed: int, *keys: int | str) -> np.random.Generator:
    """A numpy generator on the stream ``keys`` of ``seed`` (see :func:`derive_seed`)."""
    return np.random.default_rng(derive_seed(seed, *keys))


def seed_everything(seed: int) -> None:
    """Seed Python ``random``, numpy's global generator and torch (CPU and every CUDA device)."""
    import torch

    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def seed_worker(worker_id: int) -> None:
    """``DataLoader(worker_init_fn=...)``: seed a worker's ``random`` and numpy from torch's worker seed
    (which the loader derives from its ``generator``), so augmentation draws are reproducible."""
    import torch

    del worker_id
    base = torch.initial_seed() % 2**32
    random.seed(base)
    np.random.seed(base)
