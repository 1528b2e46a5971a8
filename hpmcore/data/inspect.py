"""Dataset inspection: read any supported format, summarise it and flag suspicious content.

Backs ``hpmcore data inspect --format F PATH… [--json]``.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, Literal, NamedTuple

import pyarrow as pa

from hpmcore.data.canonical import SPLITS, DatasetError, read_annotations
from hpmcore.data.finediving import read_finediving
from hpmcore.data.mtl_aqa import read_mtl_aqa
from hpmcore.data.split_files import report_bad_transitions

DatasetFormat = Literal["finediving", "mtl-aqa", "canonical"]
SCORE_TOLERANCE = 0.05
"""Largest |official score − score recomputed from the judges| counted as consistent (rounding)."""
MAX_LISTED = 10


class DatasetRead(NamedTuple):
    """What :func:`read_dataset` gives."""

    table: pa.Table
    """The canonical annotation table."""
    problems: list[str]
    """Soft problems the reader reported (e.g. dropped keys, dives with unusable step labels)."""
    bad_transitions: dict[str, str]
    """Dive id → ``"<file>: key …: <reason>"`` for the dives kept with missing (null) transitions."""


def read_dataset(fmt: DatasetFormat, paths: Sequence[Path]) -> DatasetRead:
    """Read a dataset into the canonical annotation table.

    Args:
        fmt: ``"finediving"`` / ``"mtl-aqa"`` (dataset root or explicit files, see the readers) or
            ``"canonical"`` (one ``annotations.parquet`` or a folder containing it).
        paths: the inputs.

    One bad record never makes a dataset unreadable because of its step labels: such a dive is kept
    with null transitions and listed in ``bad_transitions`` (``prepare`` then applies
    ``data.bad_transitions``).

    Raises:
        DatasetError: unreadable or malformed input.
        ValueError: unknown format.
    """
    problems: list[str] = []
    bad: dict[str, str] = {}
    paths = [Path(p) for p in paths]
    match fmt:
        case "finediving":
            table = read_finediving(paths, problems, bad)
        case "mtl-aqa":
            table = read_mtl_aqa(paths, problems)
        case "canonical":
            if len(paths) != 1:
                raise DatasetError(f"canonical format takes one path (file or folder), got {len(paths)}")
            path = paths[0] / "annotations.parquet" if paths[0].is_dir() else paths[0]
            table = read_annotations(path, bad_transitions=bad)
            report_bad_transitions(problems, bad)
        case _:
            raise ValueError(f"unknown dataset format {fmt!r}; expected finediving, mtl-aqa or canonical")
    return DatasetRead(table, problems, bad)


def fina_scores(judges: Sequence[float], difficulty: float) -> list[float]:
    """Scores the FINA rules give for these judges' marks and DD (empty if the count is not 7/5/3).

    7 judges: drop the two highest and two lowest, sum the middle three, × DD. 5 judges: drop the
    highest and lowest, sum three, × DD — or, as FineDiving stores synchronised dives (the five
    marks kept out of eleven), sum × 3/5 × DD. 3 judges: sum × DD.
    """
    marks = sorted(judges)
    match len(marks):
        case 7:
            return [sum(marks[2:5]) * difficulty]
        case 5:
            return [sum(marks[1:4]) * difficulty, sum(marks) * 0.6 * difficulty]
        case 3:
            return [sum(marks) * difficulty]
        case _:
            return []


def _listing(items: Sequence[Any]) -> str:
    shown = ", ".join(str(i) for i in items[:MAX_LISTED])
    return shown + (f", … ({len(items) - MAX_LISTED} more)" if len(items) > MAX_LISTED else "")


def _range(values: list[float] | list[int]) -> dict[str, Any]:
    return {"min": min(values), "max": max(values)} if values else {"min": None, "max": None}


def summarize(
    table: pa.Table, problems: Sequence[str], bad_transitions: Mapping[str, str] | None = None
) -> dict:
    """Counts, value ranges and problems of a canonical annotation table (JSON-serialisable).

    Checks added to ``problems``: final scores that no FINA rule reproduces from 7/5/3 judges and
    the DD (tolerance :data:`SCORE_TOLERANCE`); completeness (score / DD) outside [0, 30]; test
    dive numbers absent from train; dives without step labels. ``bad_transitions`` (dive id →
    reason, from :func:`read_dataset`) is listed as ``bad_transitions`` (``[{"id", "reason"}]``);
    ``dives_without_transitions`` counts the table's dives whose transitions are null.
    """
    rows = table.to_pylist()
    found = list(problems)
    splits = Counter(r["split"] for r in rows)
    dive_numbers = Counter(r["dive_number"] for r in rows)
    judges = Counter(len(r["judge_scores"]) for r in rows)

    inconsistent = []
    for r in rows:
        expected = fina_scores(r["judge_scores"], r["difficulty"])
        if expected and min(abs(e - r["final_score"]) for e in expected) > SCORE_TOLERANCE:
            shown = " or ".join(f"{e:.2f}" for e in expected)
            inconsistent.append(f"{r['id']} ({r['final_score']} vs {shown})")
    if inconsistent:
        found.append(
            f"{len(inconsistent)} dive(s) have a final score inconsistent with the judges' marks × DD "
            f"(FINA rule, tolerance {SCORE_TOLERANCE}): {_listing(inconsistent)}"
        )
    out_of_range = [
        r["id"] for r in rows if r["difficulty"] <= 0 or not 0 <= r["final_score"] / r["difficulty"] <= 30
    ]
    if out_of_range:
        found.append(f"{len(out_of_range)} dive(s) have score / DD outside [0, 30]: {_listing(out_of_range)}")
    train_numbers = {r["dive_number"] for r in rows if r["split"] == "train"}
    unseen = sorted({r["dive_number"] for r in rows if r["split"] == "test"} - train_numbers)
    if unseen:
        found.append(f"{len(unseen)} test dive number(s) absent from train: {_listing(unseen)}")
    unlabelled = [r["id"] for r in rows if r["frame_labels"] == []]
    if unlabelled:
        found.append(
            f"{len(unlabelled)} dive(s) have no step labels (no segmentation supervision): "
            f"{_listing(unlabelled)}"
        )

    return {
        "num_dives": len(rows),
        "splits": {split: splits.get(split, 0) for split in SPLITS},
        "num_dive_numbers": len(dive_numbers),
        "dive_numbers": dict(sorted(dive_numbers.items(), key=lambda item: (-item[1], item[0]))),
        "difficulty_values": sorted({r["difficulty"] for r in rows}),
        "final_score": _range([r["final_score"] for r in rows]),
        "num_frames": _range([r["num_frames"] for r in rows]),
        "judges_per_dive": {str(n): c for n, c in sorted(judges.items())},
        "dives_with_step_labels": sum(1 for r in rows if r["frame_labels"]),
        "dives_without_transitions": sum(1 for r in rows if r["transitions"] is None),
        "bad_transitions": [{"id": i, "reason": reason} for i, reason in (bad_transitions or {}).items()],
        "problems": found,
    }


def format_summary(summary: dict) -> str:
    """Human-readable text of :func:`summarize`'s output."""
    splits = summary["splits"]
    score, frames = summary["final_score"], summary["num_frames"]
    numbers = ", ".join(f"{dn}×{count}" for dn, count in summary["dive_numbers"].items())
    lines = [
        f"dives:            {summary['num_dives']} "
        f"(train {splits['train']}, val {splits['val']}, test {splits['test']})",
        f"dive numbers:     {summary['num_dive_numbers']}: {numbers}",
        f"DD values:        {len(summary['difficulty_values'])}: "
        + ", ".join(f"{dd:g}" for dd in summary["difficulty_values"]),
        f"final score:      {score['min']} .. {score['max']}",
        f"frames per dive:  {frames['min']} .. {frames['max']}",
        "judges per dive:  "
        + (", ".join(f"{n} judges × {c}" for n, c in summary["judges_per_dive"].items()) or "-"),
        f"step labels:      {summary['dives_with_step_labels']} of {summary['num_dives']} dives"
        + (
            f" ({summary['dives_without_transitions']} with unusable ones: transitions missing)"
            if summary["dives_without_transitions"]
            else ""
        ),
    ]
    problems = summary["problems"]
    lines.append(f"problems:         {len(problems) or 'none'}")
    lines += [f"  - {p}" for p in problems]
    return "\n".join(lines)
