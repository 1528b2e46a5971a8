"""Real annotation files are messier than their documentation (issue 8): FineDiving's published file has
``-1`` in ``steps_transit_frames`` (three of those records with three unsorted values). One bad record
must never make a dataset unreadable: the reader keeps reading, ``hpmcore data inspect`` lists such
records with their key and reason, and ``prepare`` applies ``data.bad_transitions`` (keep | skip | fail)
and counts them."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import pyarrow.parquet as pq
import pytest
from test_readers import DIVES, SYNCHRO, _labels, write_finediving

from hpmcore.data.canonical import DatasetError, annotation_table, read_annotations
from hpmcore.data.finediving import read_finediving
from hpmcore.data.inspect import read_dataset
from hpmcore.io import write_parquet

PROJECT = Path(__file__).resolve().parents[1]
HPMCORE = Path(sys.executable).parent / "hpmcore"
AQA = "fine-grained_annotation_aqa.pkl"


def _dive(key: tuple[str, int], transits: list[int], labels: list[int], start: int = 0, **kw: object) -> dict:
    n = kw.pop("frames", len(labels))
    judges = [8.5, 8.0, 8.5, 8.5, 8.0, 8.5, 8.0]
    return dict(key=key, dn="407c", score=80.0, dd=3.2, transits=transits, labels=labels, start=start,
                end=start + n - 1, judges=judges, split=kw.pop("split", "train"))  # fmt: skip


MESSY = [
    # the published file's cases: -1 first, and three values unsorted
    _dive(("03", 24), [-1, 47], _labels((4, 10), (25, 38), (36, 38))),
    _dive(("03", 25), [-1, 60, 30], _labels((2, 12), (31, 20), (15, 30), (36, 24)), split="test"),
    # frames_labels one frame short of the coarse file's frames
    _dive(("04", 1), [9, 49], _labels((4, 10), (25, 40), (36, 40)), frames=91),
    # two distinct steps cannot give the two transitions of spec §5.2
    _dive(("04", 2), [20], _labels((4, 21), (36, 40))),
    # transitions past the last frame
    _dive(("04", 4), [9, 120], _labels((4, 10), (25, 40), (36, 40))),
]
BAD = {
    "03/24": r"steps_transit_frames \[-1, 47\] outside the dive's frames 0\.\.85",
    "03/25": r"steps_transit_frames \[-1, 60, 30\] are not two or more increasing frames",
    "04/1": r"90 frames_labels for 91 frames \(frames 0\.\.90 from \S*coarse_annotation\.pkl start/end",
    "04/2": r"frames_labels have 2 distinct step\(s\); two transitions need 3",
    "04/4": r"steps_transit_frames \[9, 120\] outside the dive's frames 0\.\.89",
}
DISAGREE = _dive(("04", 3), [5, 40], _labels((4, 10), (25, 31), (36, 40)))  # labels change after 9 and 40
GOOD = [d for d in DIVES if d["split"]]


@pytest.fixture
def messy_root(tmp_path: Path) -> Path:
    return write_finediving(tmp_path / "FineDiving", [*DIVES, *MESSY, DISAGREE])


def test_reader_keeps_reading_and_marks_transitions_missing(messy_root: Path) -> None:
    problems: list[str] = []
    bad: dict[str, str] = {}
    rows = {r["id"]: r for r in read_finediving([messy_root], problems, bad).to_pylist()}
    assert len(rows) == len(GOOD) + len(MESSY) + 1
    assert set(bad) == set(BAD)
    for dive_id, reason in BAD.items():
        video, index = dive_id.split("/")
        key = repr((video, int(index)))
        assert re.search(
            rf"{re.escape(str(messy_root))}/Annotations/\S+\.pkl: key {re.escape(key)}: {reason}",
            bad[dive_id],
        )
        assert rows[dive_id]["transitions"] is None and rows[dive_id]["frame_labels"] is None
        assert rows[dive_id]["final_score"] == 80.0  # still a dive to score
    # a transit field that disagrees with the labels is reported, not dropped (training uses the labels)
    assert rows["04/3"]["transitions"] == [5, 40] and rows["04/3"]["frame_labels"] == DISAGREE["labels"]
    assert any("1 dive(s) have steps_transit_frames other than" in p and "('04', 3)" in p for p in problems)
    assert any(p.startswith("5 dive(s) have unusable step labels") for p in problems)
    assert rows[f"{SYNCHRO}/1"]["transitions"] == [20, 70]  # the good records are untouched

    # the aqa file alone (frames from its labels): only the label problems remain
    alone: dict[str, str] = {}
    splits = [messy_root / "Annotations/train_split.pkl", messy_root / "Annotations/test_split.pkl"]
    read_finediving([messy_root / "Annotations" / AQA, *splits], bad_transitions=alone)
    assert set(alone) == set(BAD) - {"04/1"} and AQA in alone["03/24"]


def test_inspect_lists_the_bad_records(messy_root: Path) -> None:
    proc = subprocess.run(
        [str(HPMCORE), "data", "inspect", "--format", "finediving", str(messy_root), "--json"],
        capture_output=True,
        text=True,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
    summary = json.loads(proc.stdout)
    assert summary["num_dives"] == len(GOOD) + len(MESSY) + 1
    assert summary["dives_without_transitions"] == len(BAD)
    listed = {entry["id"]: entry["reason"] for entry in summary["bad_transitions"]}
    assert listed.keys() == BAD.keys() and all(re.search(BAD[i], listed[i]) for i in BAD)
    assert any("unusable step labels" in p and "('03', 24)" in p for p in summary["problems"])
    text = subprocess.run(
        [str(HPMCORE), "data", "inspect", "--format", "finediving", str(messy_root)],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    assert "(5 with unusable ones: transitions missing)" in text and "key ('03', 25)" in text


def _prepare(tmp_path: Path, root: Path, policy: str) -> tuple[subprocess.CompletedProcess[str], Path]:
    params = tmp_path / "params.yaml"
    params.write_text(f"data:\n  format: finediving\n  root: {root}\n  bad_transitions: {policy}\n")
    out = tmp_path / "prepared"
    cmd = [sys.executable, str(PROJECT / "stages/prepare.py"), "--params", str(params), "--out", str(out)]
    return subprocess.run(cmd, capture_output=True, text=True, check=False), out


@pytest.mark.parametrize("policy", ["keep", "skip", "fail"])
def test_prepare_applies_the_bad_transitions_policy(tmp_path: Path, messy_root: Path, policy: str) -> None:
    proc, out = _prepare(tmp_path, messy_root, policy)
    total = len(GOOD) + len(MESSY) + 1
    if policy == "fail":
        assert proc.returncode == 2
        assert "5 dive(s) have unusable step labels (data.bad_transitions: fail" in proc.stderr
        assert f"{messy_root}/Annotations/" in proc.stderr and "key ('03', 24)" in proc.stderr
        assert not out.exists()
        return
    assert proc.returncode == 0, proc.stderr
    counts = json.loads((out / "counts.json").read_text())
    summary = json.loads((out / "summary.json").read_text())
    table = read_annotations(out / "dives.parquet")  # the pipeline's strict read accepts null transitions
    ids = table.column("id").to_pylist()
    assert counts["bad_transitions"] == 5 and summary["bad_transitions_policy"] == policy
    assert {e["id"] for e in summary["bad_transitions"]} == set(BAD)
    if policy == "keep":
        assert counts["dives"] == total and set(BAD) <= set(ids)
        nulls = {r["id"] for r in table.to_pylist() if r["transitions"] is None}
        assert nulls == set(BAD) and summary["dives_without_transitions"] == 5
        assert "5 dive(s) with unusable step labels kept for scoring, transitions missing" in proc.stderr
    else:
        assert counts["dives"] == total - 5 and not set(BAD) & set(ids)
        assert "5 dive(s) with unusable step labels skipped" in proc.stderr
    assert counts["dives"] == counts["train"] + counts["val"] + counts["test"]
    assert pq.read_schema(out / "dives.parquet").field("transitions").nullable


def test_canonical_input_with_bad_transitions(tmp_path: Path, messy_root: Path) -> None:
    """A canonical table from elsewhere with -1 transitions: importing it marks them missing; a
    pipeline table must not hold them (strict read)."""
    rows = read_finediving([write_finediving(tmp_path / "good", GOOD)]).to_pylist()
    write_parquet(annotation_table(rows), tmp_path / "canon" / "annotations.parquet")
    table = pq.read_table(tmp_path / "canon" / "annotations.parquet")
    broken = table.to_pylist()
    broken[0]["transitions"] = [-1, 5]
    path = tmp_path / "canon" / "annotations.parquet"
    pq.write_table(table.from_pylist(broken, schema=table.schema), path)
    imported, problems, bad = read_dataset("canonical", [tmp_path / "canon"])
    assert list(bad) == ["01/1"] and str(path) in bad["01/1"] and "outside the dive's frames" in bad["01/1"]
    assert imported.to_pylist()[0]["transitions"] is None and any(
        "unusable step labels" in p for p in problems
    )
    with pytest.raises(DatasetError, match=rf"{re.escape(str(path))}: dive '01/1' has transitions \[-1, 5\]"):
        read_annotations(path)
