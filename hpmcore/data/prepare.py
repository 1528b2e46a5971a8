"""Index the selected dataset into the canonical table with a stratified validation split."""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc

from hpmcore.config import DataConfig
from hpmcore.data.canonical import DatasetError
from hpmcore.data.inspect import read_dataset, summarize
from hpmcore.data.split_files import few
from hpmcore.data.splits import carve_validation

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Prepared:
    """The prepared dataset: the canonical table (train/val/test) and its summary."""

    table: pa.Table
    summary: dict[str, Any]

    @property
    def counts(self) -> dict[str, int]:
        """``{"dives", "train", "val", "test", "bad_transitions"}`` (the DVC metrics of ``prepare``):
        ``bad_transitions`` counts the dives with unusable step labels, kept or skipped."""
        return {
            "dives": self.summary["num_dives"],
            **self.summary["splits"],
            "bad_transitions": len(self.summary["bad_transitions"]),
        }


def apply_bad_transitions(table: pa.Table, bad: Mapping[str, str], policy: str) -> pa.Table:
    """Apply ``data.bad_transitions`` to the dives of ``bad`` (id → reason, from the reader).

    ``keep``: the table as it is (their transitions are null); ``skip``: without them; ``fail``: an
    error listing them.

    Raises:
        DatasetError: with ``fail`` and at least one such dive (the reasons name the files and keys).
    """
    if not bad:
        return table
    listing = few(list(bad.values()), quote=False)
    match policy:
        case "keep":
            log.warning(
                "prepare: %d dive(s) with unusable step labels kept for scoring, transitions missing "
                "(data.bad_transitions: keep): %s",
                len(bad),
                listing,
            )
            return table
        case "skip":
            log.warning(
                "prepare: %d dive(s) with unusable step labels skipped (data.bad_transitions: skip): %s",
                len(bad),
                listing,
            )
            return table.filter(pc.invert(pc.is_in(table.column("id"), value_set=pa.array(list(bad)))))
        case "fail":
            raise DatasetError(
                f"{len(bad)} dive(s) have unusable step labels (data.bad_transitions: fail; keep or skip "
                f"them instead): {listing}"
            )
        case _:
            raise ValueError(f"unknown bad_transitions policy {policy!r}")


def prepare_dataset(cfg: DataConfig, seed: int, project_dir: Path = Path(".")) -> Prepared:
    """Read the dataset ``cfg`` selects and carve the validation split from its train split.

    ``cfg.root`` is resolved against ``project_dir`` when relative. ``"synthetic"`` datasets are read
    as canonical ones (the generator writes the canonical form). Dives with unusable step labels are
    kept, skipped or refused as ``cfg.bad_transitions`` says (:func:`apply_bad_transitions`). A dataset
    that already has a ``"val"`` split keeps it; otherwise ``cfg.val_fraction`` of train becomes val
    (spec §11.4).

    Raises:
        DatasetError: when the dataset files are missing or malformed (message names the file).
    """
    root = cfg.root_path(project_dir)
    fmt = "canonical" if cfg.format == "synthetic" else cfg.format
    table, problems, bad = read_dataset(fmt, [root])
    table = apply_bad_transitions(table, bad, cfg.bad_transitions)
    if table.num_rows == 0:
        raise DatasetError(f"{root}: no dives left to prepare")
    if "val" not in table.column("split").to_pylist():
        table = carve_validation(table, cfg.val_fraction, seed)
    summary = summarize(table, problems, bad)
    summary["bad_transitions_policy"] = cfg.bad_transitions
    return Prepared(table=table, summary=summary)
