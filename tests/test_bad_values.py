"""Bad values in annotation files (issue 8, case 5): NaN / negative / infinite scores, DD <= 0, numbers
too large for int64, a lone surrogate or a path in a video name. Before, some were tracebacks and some
passed ``prepare`` and failed only at ``train``, after all extraction. Each is reproduced in a file and
run through ``hpmcore data inspect`` (a subprocess) and the ``prepare`` stage's ``main``: exit status 2
and a message naming the file and the key, nothing written."""

from __future__ import annotations

import importlib.util
import logging
import pickle
import re
import subprocess
import sys
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from test_readers import DIVES, MTL, _aqa, _coarse, write_finediving, write_mtl_aqa

from hpmcore.data.canonical import ANNOTATION_SCHEMA
from hpmcore.data.finediving import read_finediving

PROJECT = Path(__file__).resolve().parents[1]
HPMCORE = Path(sys.executable).parent / "hpmcore"
_spec = importlib.util.spec_from_file_location("stage_prepare", PROJECT / "stages/prepare.py")
stage_prepare = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(stage_prepare)
AQA = "fine-grained_annotation_aqa.pkl"
COARSE = "FineDiving_coarse_annotation.pkl"
FIRST = DIVES[0]["key"]  # ('01', 1)


def _aqa_with(**changes: object) -> dict:
    """The aqa entries with dive ('01', 1)'s items replaced (item names as in spec §12.1)."""
    entries = {d["key"]: _aqa(d) for d in DIVES}
    items = dict(zip(("dn", "score", "dd", "transits", "labels"), entries[FIRST], strict=True))
    entries[FIRST] = [changes.get(k, v) for k, v in items.items()]
    return entries


def _coarse_with(**changes: object) -> dict:
    entries = {d["key"]: _coarse(d) for d in DIVES}
    entries[FIRST] = {**entries[FIRST], **changes}
    return entries


def _renamed(name: str) -> dict:
    """The aqa entries with dive ('01', 1) under the video name ``name`` (and a split file naming it)."""
    entries = {d["key"]: _aqa(d) for d in DIVES}
    entries[(name, 1)] = entries.pop(FIRST)
    return entries


# file name → entries, and what the message must say after "<file>: key <key>"
NAME_PROBLEM = r"has a NUL or control character or a lone surrogate"
INT64 = r"does not fit a 64-bit integer"
CASES = {
    "nan-score": (AQA, _aqa_with(score=float("nan")), r"final score \(item 2\) is nan, not a finite number"),
    "inf-score": (AQA, _aqa_with(score=float("inf")), r"final score \(item 2\) is inf"),
    "negative-score": (AQA, _aqa_with(score=-3.5), r"final score \(item 2\) is -3.5, below 0"),
    "huge-score": (AQA, _aqa_with(score=10**400),
                   r"final score \(item 2\) is too large \(an integer of 1329 bits"),
    "dd-zero": (AQA, _aqa_with(dd=0.0), r"DD \(item 3\) is 0.0, not > 0"),
    "dd-nan": (AQA, _aqa_with(dd=float("nan")), r"DD \(item 3\) is nan"),
    "dd-negative": (COARSE, _coarse_with(difficulty=-1), r"difficulty is -1.0, not > 0"),
    "judge-nan": (COARSE, _coarse_with(judge_scores=[9.0, float("nan"), 8.0]), r"judge_scores\[1\] is nan"),
    "judge-negative": (COARSE, _coarse_with(judge_scores=[9.0, -1.0, 8.0]), r"judge_scores\[1\] is -1.0"),
    "start-frame-int64": (COARSE, _coarse_with(start_frame=2**70),
                          rf"start_frame \(1180591620717411303424\) {INT64}"),
    "start-frame-negative": (COARSE, _coarse_with(start_frame=-4), r"start_frame is -4, below 0"),
    "dive-index-int64": (AQA, {**_aqa_with(), ("01", 2**70): _aqa(DIVES[1])}, rf"dive_index \(.*\) {INT64}"),
    "surrogate-name": (AQA, _renamed("FINA\ud800"), rf"video_name 'FINA\\ud800' {NAME_PROBLEM}"),
    "parent-path-name": (AQA, _renamed("../../etc"), r"video_name '\.\./\.\./etc' contains a path separator"),
    "slash-name": (AQA, _renamed("a/b"), r"video_name 'a/b' contains a path separator"),
    "dotdot-name": (AQA, _renamed(".."), r"video_name '\.\.' is a relative path"),
    "nul-name": (AQA, _renamed("a\x00b"), rf"video_name 'a\\x00b' {NAME_PROBLEM}"),
    "empty-name": (AQA, _renamed(""), r"video_name is empty"),
    "control-dive-number": (AQA, _aqa_with(dn="40\x007c"),
                            r"dive number \(item 1\): dive number '40\\x007c' has control"),
}  # fmt: skip


def _root(tmp_path: Path, case: str) -> tuple[Path, Path]:
    name, entries, _ = CASES[case]
    root = write_finediving(tmp_path / "FineDiving")
    path = root / "Annotations" / name
    path.write_bytes(pickle.dumps(entries, protocol=4))
    if case.endswith("-name"):  # the renamed key must be in a split to be read
        (root / "Annotations/train_split.pkl").write_bytes(pickle.dumps(list(entries), protocol=4))
        (root / "Annotations/test_split.pkl").write_bytes(pickle.dumps([], protocol=4))
        (root / "Annotations" / COARSE).unlink()
        (root / "Annotations/FineDiving_fine-grained_annotation.pkl").unlink()
    return root, path


@pytest.mark.parametrize("case", sorted(CASES))
def test_bad_value_through_inspect(tmp_path: Path, case: str) -> None:
    root, path = _root(tmp_path, case)
    proc = subprocess.run(
        [str(HPMCORE), "data", "inspect", "--format", "finediving", str(root)],
        capture_output=True,
        text=True,
        check=False,
    )
    assert proc.returncode == 2, proc.stderr
    assert "Traceback" not in proc.stderr
    assert re.search(rf"{re.escape(str(path))}: key .*: {CASES[case][2]}", proc.stderr), proc.stderr


@pytest.mark.parametrize("case", sorted(CASES))
def test_bad_value_stops_prepare(tmp_path: Path, case: str, caplog: pytest.LogCaptureFixture) -> None:
    root, path = _root(tmp_path, case)
    params = tmp_path / "params.yaml"
    params.write_text(f"data:\n  format: finediving\n  root: {root}\n")
    with caplog.at_level(logging.ERROR):
        assert stage_prepare.main(["--params", str(params), "--out", str(tmp_path / "prepared")]) == 2
    assert re.search(rf"{re.escape(str(path))}: key .*: {CASES[case][2]}", caplog.text), caplog.text
    assert not (tmp_path / "prepared").exists()


def test_mtl_aqa_bad_values(tmp_path: Path) -> None:
    for k, (changes, message) in enumerate(
        [
            ({"final_score": float("nan")}, r"key \(1, 2\): final_score is nan"),
            ({"difficulty": 0.0}, r"key \(1, 2\): difficulty \(DD\) 0\.0 is not a finite number > 0"),
            ({"judge_scores": [9.0, -2.0]}, r"key \(1, 2\): judge_scores\[1\] is -2\.0, below 0"),
            ({"start_frame": 2**64}, r"key \(1, 2\): start_frame \(18446744073709551616\) does not fit"),
        ]
    ):
        annotations = {**MTL, (1, 2): {**MTL[(1, 2)], **changes}}
        root = write_mtl_aqa(tmp_path / str(k), train=[(1, 1), (1, 2)], test=[], annotations=annotations)
        proc = subprocess.run(
            [str(HPMCORE), "data", "inspect", "--format", "mtl-aqa", str(root)],
            capture_output=True,
            text=True,
            check=False,
        )
        assert proc.returncode == 2 and re.search(rf"with_dive_number\.pkl: {message}", proc.stderr), (
            proc.stderr
        )
    big_key = {**MTL, (2**70, 1): MTL[(1, 1)]}
    root = write_mtl_aqa(tmp_path / "key", train=[(1, 1)], test=[], annotations=big_key)
    cmd = [str(HPMCORE), "data", "inspect", "--format", "mtl-aqa", str(root)]
    proc = subprocess.run(cmd, capture_output=True, text=True, check=False)
    assert proc.returncode == 2 and "video_id (1180591620717411303424) does not fit" in proc.stderr, (
        proc.stderr
    )


@pytest.mark.parametrize(
    ("column", "value", "message"),
    [
        ("final_score", float("nan"), r"final_score nan is not a finite number >= 0"),
        ("difficulty", 0.0, r"difficulty \(DD\) 0\.0 is not a finite number > 0"),
        ("video_name", "../x", r"video_name '\.\./x' contains a path separator"),
    ],
)
def test_canonical_bad_values(tmp_path: Path, column: str, value: object, message: str) -> None:
    """A canonical table written without the readers' checks."""
    rows = read_finediving([write_finediving(tmp_path / "fd")]).to_pylist()
    rows[0][column] = value
    if column == "video_name":
        rows[0]["id"] = f"{value}/{rows[0]['dive_index']}"
    path = tmp_path / "canon" / "annotations.parquet"
    path.parent.mkdir()
    pq.write_table(pa.Table.from_pylist(rows, schema=ANNOTATION_SCHEMA), path)
    cmd = [str(HPMCORE), "data", "inspect", "--format", "canonical", str(path)]
    proc = subprocess.run(cmd, capture_output=True, text=True, check=False)
    assert proc.returncode == 2 and re.search(rf"{re.escape(str(path))}: dive .*: {message}", proc.stderr)
