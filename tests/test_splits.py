"""Validation carve-out (stratified, seeded) and exemplar selection (seeded per query, distinct)."""

from __future__ import annotations

from collections import Counter

import pyarrow as pa
import pytest

from hpmcore.data.canonical import DatasetError, annotation_table
from hpmcore.data.splits import ExemplarPool, carve_validation, select_exemplars, split_counts


def _table(groups: dict[str, int], test_per_group: int = 1) -> pa.Table:
    rows = []
    for g, (dn, n) in enumerate(groups.items()):
        for i in range(n + test_per_group):
            rows.append(
                {
                    "id": f"v{g}/{i + 1}",
                    "video_name": f"v{g}",
                    "dive_index": i + 1,
                    "video_path": f"videos/v{g}_{i + 1}.mp4",
                    "start_frame": 0,
                    "end_frame": 9,
                    "num_frames": 10,
                    "dive_number": dn,
                    "difficulty": 2.0 + 0.1 * g,
                    "judge_scores": [],
                    "final_score": 50.0 + i,
                    "transitions": [2, 6],
                    "frame_labels": [1] * 3 + [2] * 4 + [3] * 3,
                    "split": "test" if i >= n else "train",
                }
            )
    return annotation_table(rows)


def test_validation_is_stratified_and_keeps_one_train_dive_per_dive_number() -> None:
    table = _table({"107b": 40, "205c": 30, "407c": 2, "5253b": 1, "305a": 9})
    carved = carve_validation(table, 0.1, seed=0)
    counts = split_counts(carved)
    assert counts["test"] == split_counts(table)["test"], "test dives must never move"
    assert 7 <= counts["val"] <= 12, counts  # ~10% of 82 train dives
    per_dn = Counter(
        (r["dive_number"], r["split"]) for r in carved.select(["dive_number", "split"]).to_pylist()
    )
    for dn in ("107b", "205c", "407c", "5253b", "305a"):
        assert per_dn[(dn, "train")] >= 1, f"{dn} lost all its train dives"
    assert per_dn[("5253b", "val")] == 0, "a single train dive must stay in train"
    assert per_dn[("107b", "val")] >= 2 and per_dn[("205c", "val")] >= 1


def test_validation_is_seeded() -> None:
    table = _table({"107b": 40, "205c": 30})
    a = carve_validation(table, 0.2, seed=1).column("split")
    b = carve_validation(table, 0.2, seed=1).column("split")
    c = carve_validation(table, 0.2, seed=2).column("split")
    assert a.equals(b)
    assert not a.equals(c)
    assert carve_validation(table, 0.0, seed=1).column("split").equals(table.column("split"))


def test_exemplars_by_dive_number_are_distinct_seeded_and_exclude_the_query() -> None:
    table = _table({"107b": 20, "205c": 5})
    pool = ExemplarPool.from_table(table)
    picks = select_exemplars(pool, "v0/3", "107b", 2.0, mode="dive_number", k=10, seed=7)
    assert len(picks) == 10 and len(set(picks)) == 10
    assert "v0/3" not in picks
    assert all(p.startswith("v0/") for p in picks)
    assert picks == select_exemplars(pool, "v0/3", "107b", 2.0, mode="dive_number", k=10, seed=7)
    assert picks != select_exemplars(pool, "v0/3", "107b", 2.0, mode="dive_number", k=10, seed=8)
    # a query's draw does not depend on other queries (seeded per query id)
    other = select_exemplars(pool, "v0/4", "107b", 2.0, mode="dive_number", k=10, seed=7)
    assert other != picks


def test_exemplars_when_few_candidates_and_other_modes() -> None:
    table = _table({"107b": 20, "205c": 3})
    pool = ExemplarPool.from_table(table)
    few = select_exemplars(pool, "v1/99", "205c", 2.1, mode="dive_number", k=10, seed=0)
    assert sorted(few) == ["v1/1", "v1/2", "v1/3"], "all distinct candidates, no padding"
    by_dd = select_exemplars(pool, "q", "999z", 2.1, mode="difficulty", k=2, seed=0)
    assert all(p.startswith("v1/") for p in by_dd)
    anyone = select_exemplars(pool, "q", "999z", 9.9, mode="any", k=23, seed=0)
    assert len(set(anyone)) == 23


def test_no_exemplar_for_dive_number_is_a_clear_error() -> None:
    pool = ExemplarPool.from_table(_table({"107b": 3}))
    with pytest.raises(DatasetError, match=r"query 'x/1': no exemplar with dive number '405b'"):
        select_exemplars(pool, "x/1", "405b", 3.0, mode="dive_number", k=10, seed=0)
