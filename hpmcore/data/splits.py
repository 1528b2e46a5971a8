"""Validation split and exemplar selection (spec §9.1, §10.1, §11.4).

All randomness is seeded: the validation carve-out by ``seed``, each query's exemplar draw by
``(seed, query id)`` so that evaluation is repeatable whatever order queries are processed in.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

import numpy as np
import pyarrow as pa

from hpmcore.config import ExemplarMode
from hpmcore.data.canonical import DatasetError
from hpmcore.runtime import derive_rng


def carve_validation(table: pa.Table, fraction: float, seed: int) -> pa.Table:
    """Move about ``fraction`` of the train dives to ``"val"``, stratified by dive number.

    Per dive number with ``n`` train dives, ``floor(fraction * n + u)`` dives go to val, where ``u`` is
    a seeded uniform draw (stochastic rounding keeps the overall fraction right even when every group
    is small), capped at ``n - 1`` so that every dive number with at least 2 train dives keeps at least
    one in train (spec §11.4). A dive number with a single train dive stays in train.

    Args:
        table: canonical annotation table; only rows with split ``"train"`` are considered.
        fraction: in [0, 1).
        seed: the project seed.

    Returns:
        The same table with a new ``split`` column.
    """
    if not 0.0 <= fraction < 1.0:
        raise ValueError(f"validation fraction must be in [0, 1), got {fraction}")
    ids = table.column("id").to_pylist()
    splits = table.column("split").to_pylist()
    dive_numbers = table.column("dive_number").to_pylist()
    groups: dict[str, list[int]] = defaultdict(list)
    for row, (split, dn) in enumerate(zip(splits, dive_numbers, strict=True)):
        if split == "train":
            groups[dn].append(row)
    rng = derive_rng(seed, "validation")
    new_splits = list(splits)
    for dn in sorted(groups):
        rows = sorted(groups[dn], key=lambda r: ids[r])
        n = len(rows)
        n_val = min(int(np.floor(fraction * n + rng.random())), n - 1)
        for r in rng.permutation(rows)[:n_val]:
            new_splits[int(r)] = "val"
    index = table.schema.get_field_index("split")
    return table.set_column(index, table.schema.field("split"), pa.array(new_splits, pa.string()))


def query_rng(seed: int, query_id: str) -> np.random.Generator:
    """A generator seeded by ``(seed, query id)``; independent of processing order."""
    return derive_rng(seed, "query", query_id)


@dataclass(frozen=True)
class ExemplarPool:
    """The dives exemplars are drawn from (the reduced train split, spec §11.4)."""

    ids: tuple[str, ...]
    dive_numbers: tuple[str, ...]
    difficulties: tuple[float, ...]

    @classmethod
    def from_table(cls, table: pa.Table, split: str = "train") -> ExemplarPool:
        """The pool of all dives of ``split`` in a canonical annotation table."""
        rows = table.select(["id", "dive_number", "difficulty", "split"]).to_pylist()
        rows = sorted((r for r in rows if r["split"] == split), key=lambda r: r["id"])
        if not rows:
            raise DatasetError(f"exemplar pool: no dives in split {split!r}")
        return cls(
            ids=tuple(r["id"] for r in rows),
            dive_numbers=tuple(r["dive_number"] for r in rows),
            difficulties=tuple(float(r["difficulty"]) for r in rows),
        )


def select_exemplars(
    pool: ExemplarPool,
    query_id: str,
    dive_number: str,
    difficulty: float,
    *,
    mode: ExemplarMode,
    k: int,
    seed: int,
) -> list[str]:
    """Draw up to ``k`` distinct exemplars for one query, never the query itself.

    Modes (spec §9.1, §10.1): ``"dive_number"`` same dive number (w/ DN), ``"difficulty"`` same DD,
    ``"any"`` any dive of the pool (w/o DN). When fewer than ``k`` candidates exist, all of them are
    returned (distinct; no padding with duplicates, spec §13 item 14).

    Raises:
        DatasetError: if no candidate exists, naming the query and what it needed.
    """
    if k <= 0:
        raise ValueError(f"k must be > 0, got {k}")
    match mode:
        case "dive_number":
            candidates = [i for i, d in zip(pool.ids, pool.dive_numbers, strict=True) if d == dive_number]
            wanted = f"dive number {dive_number!r}"
        case "difficulty":
            candidates = [
                i for i, d in zip(pool.ids, pool.difficulties, strict=True) if abs(d - difficulty) < 1e-6
            ]
            wanted = f"difficulty {difficulty}"
        case "any":
            candidates = list(pool.ids)
            wanted = "any dive"
        case _:
            raise ValueError(f"unknown exemplar mode {mode!r}")
    candidates = [c for c in candidates if c != query_id]
    if not candidates:
        raise DatasetError(f"query {query_id!r}: no exemplar with {wanted} in the exemplar pool")
    chosen = query_rng(seed, query_id).choice(len(candidates), size=min(k, len(candidates)), replace=False)
    return [candidates[int(i)] for i in chosen]


def split_counts(table: pa.Table) -> dict[str, int]:
    """Number of dives per split, every split named (zero when absent)."""
    splits: Sequence[str] = table.column("split").to_pylist()
    return {s: sum(1 for x in splits if x == s) for s in ("train", "val", "test")}
