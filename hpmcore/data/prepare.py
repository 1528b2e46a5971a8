"""Index the selected dataset into the canonical table with a stratified validation split."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pyarrow as pa

from hpmcore.config import DataConfig
from hpmcore.data.inspect import read_dataset, summarize
from hpmcore.data.splits import carve_validation


@dataclass(frozen=True)
class Prepared:
    """The prepared dataset: the canonical table (train/val/test) and its summary."""

    table: pa.Table
    summary: dict[str, Any]

    @property
    def counts(self) -> dict[str, int]:
        """``{"dives": n, "train": n, "val": n, "test": n}`` (the DVC metrics of ``prepare``)."""
        return {"dives": self.summary["num_dives"], **self.summary["splits"]}


def prepare_dataset(cfg: DataConfig, seed: int, project_dir: Path = Path(".")) -> Prepared:
    """Read the dataset ``cfg`` selects and carve the validation split from its train split.

    ``cfg.root`` is resolved against ``project_dir`` when relative. ``"synthetic"`` datasets are read
    as canonical ones (the generator writes the canonical form). A dataset that already has a
    ``"val"`` split keeps it; otherwise ``cfg.val_fraction`` of train becomes val (spec §11.4).

    Raises:
        DatasetError: when the dataset files are missing or malformed (message names the file).
    """
    root = cfg.root_path(project_dir)
    fmt = "canonical" if cfg.format == "synthetic" else cfg.format
    table, problems = read_dataset(fmt, [root])
    if "val" not in table.column("split").to_pylist():
        table = carve_validation(table, cfg.val_fraction, seed)
    return Prepared(table=table, summary=summarize(table, problems))
