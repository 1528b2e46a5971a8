"""Dataset readers (FineDiving, MTL-AQA, poses, MPII JSON), safe unpickling and inspection.

The test files are built in the documented formats (spec §12) from the real example entries.
"""

from __future__ import annotations

import codecs
import copyreg
import io
import json
import os
import pickle
import re
import struct
import subprocess
from pathlib import Path
from typing import ClassVar

import numpy as np
import pytest

from hpmcore.data.canonical import DatasetError, annotation_table
from hpmcore.data.finediving import (
    linspace_indices,
    read_finediving,
    read_finediving_pose,
    read_mpii_json,
)
from hpmcore.data.inspect import fina_scores, format_summary, read_dataset, summarize
from hpmcore.data.mtl_aqa import read_mtl_aqa
from hpmcore.data.safe_pickle import safe_load
from hpmcore.io import write_parquet

SYNCHRO = "FINAWorldChampionships2019_Men10mSynchronised_final_r4"
SEMI = "FINADivingWorldCup2021_Men3m_semifinal_r5"


def _labels(*runs: tuple[int, int]) -> list[int]:
    return [label for label, count in runs for _ in range(count)]


# FineDiving dives: the real example entries of spec §12.1-§12.2, completed where the spec is silent
# (coarse frames/judges of the '01' and semifinal keys, step labels of the synchronised keys) with
# values that keep every documented invariant (labels = end - start + 1; FINA rule × DD = score).
DIVES = [
    dict(key=("01", 1), dn="407c", score=88.0, dd=3.2, transits=[2, 34],
         labels=_labels((4, 3), (25, 32), (36, 50)), start=7377, end=7461,
         judges=[9.5, 9.0, 9.5, 9.0, 8.5, 9.5, 8.5], split="train"),
    dict(key=("01", 2), dn="407c", score=86.4, dd=3.2, transits=[11, 47],
         labels=_labels((4, 12), (25, 36), (36, 41)), start=8649, end=8737,
         judges=[9.0, 8.5, 9.0, 9.0, 9.0, 9.0, 9.0], split="test"),
    dict(key=("01", 3), dn="5253b", score=75.2, dd=3.2, transits=[9, 25, 44],
         labels=_labels((2, 10), (31, 16), (15, 19), (36, 15)), start=100, end=159,
         judges=[8.0, 8.0, 7.5, 8.0, 7.5, 8.0, 7.5], split="train"),
    dict(key=(SYNCHRO, 1), dn="207c", score=81.18, dd=3.3, transits=[20, 70],
         labels=_labels((1, 21), (20, 50), (36, 30)), start=3095, end=3195,
         judges=[7.5, 9.0, 8.0, 8.0, 8.5], split="train"),
    dict(key=(SYNCHRO, 9), dn="207b", score=65.88, dd=3.6, transits=[30, 80],
         labels=_labels((1, 31), (21, 50), (36, 20)), start=16160, end=16260,
         judges=[4.5, 5.5, 7.0, 7.0, 6.5], split="test"),
    dict(key=(SEMI, 12), dn="407c", score=73.1, dd=3.4, transits=[21, 54],
         labels=_labels((4, 22), (25, 33), (36, 47)), start=500, end=601,
         judges=[7.0, 7.0, 7.5, 7.0, 7.5, 7.0, 7.5], split="train"),
    dict(key=("02", 5), dn="305c", score=60.0, dd=3.0, transits=[5, 20],
         labels=_labels((6, 6), (7, 15), (36, 9)), start=0, end=29,
         judges=[6.5, 7.0, 6.5, 6.5, 7.0, 6.5, 7.5], split=None),  # in no split: dropped
]  # fmt: skip
IN_SPLIT = [d for d in DIVES if d["split"]]


class _Py2Pickler(pickle._Pickler):
    """Writes ``bytes`` as Python 2 ``str`` (SHORT_BINSTRING/BINSTRING): how Python 2 pickled numpy data."""

    dispatch: ClassVar[dict] = dict(pickle._Pickler.dispatch)

    def save_py2_str(self, obj: bytes) -> None:
        n = len(obj)
        self.write(
            pickle.SHORT_BINSTRING + bytes([n]) if n < 256 else pickle.BINSTRING + struct.pack("<i", n)
        )
        self.write(obj)
        self.memoize(obj)

    dispatch[bytes] = save_py2_str


def _dump(path: Path, obj: object, protocol: int = 4, *, writer: str = "py3") -> Path:
    """Pickle ``obj`` as a Python 3 writer (``"py3"``), one with numpy 1.x (``"numpy1"``: module
    ``numpy.core``) or Python 2 with numpy 1.x (``"py2"``: protocol 2, data as py2 ``str``)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    if writer == "py2":
        buffer = io.BytesIO()
        _Py2Pickler(buffer, protocol=2).dump(obj)
        data = buffer.getvalue()
    else:
        data = pickle.dumps(obj, protocol=protocol)
    if writer in ("py2", "numpy1"):
        assert protocol <= 3  # text GLOBAL opcodes: renaming keeps the pickle valid
        data = data.replace(b"cnumpy._core.multiarray\n", b"cnumpy.core.multiarray\n")
        assert b"numpy._core" not in data
    path.write_bytes(data)
    return path


def _aqa(d: dict) -> list:
    return [d["dn"], d["score"], d["dd"], np.array(d["transits"], np.int64), np.array(d["labels"], np.int64)]


def _fine(d: dict) -> dict:
    return {
        "action_type": d["dn"],
        "dive_score": d["score"],
        "difficulty": d["dd"],
        "steps_transit_frames": np.array(d["transits"], np.int64),
        "frames_labels": np.array(d["labels"], np.int64),
        "sub-action_types": {4: "Inward", 25: "3.5 Soms.Tuck", 36: "Entry"},
    }


def _coarse(d: dict) -> dict:
    return {
        "action_type": d["dn"],
        "start_frame": d["start"],
        "end_frame": d["end"],
        "dive_score": d["score"],
        "difficulty": d["dd"],
        "judge_scores": list(d["judges"]),
    }


def write_finediving(root: Path, dives: list[dict] = DIVES) -> Path:
    """A FineDiving root with all three annotation variants and both split files."""
    ann = root / "Annotations"
    _dump(ann / "fine-grained_annotation_aqa.pkl", {d["key"]: _aqa(d) for d in dives}, 3, writer="numpy1")
    _dump(ann / "FineDiving_fine-grained_annotation.pkl", {d["key"]: _fine(d) for d in dives})
    _dump(ann / "FineDiving_coarse_annotation.pkl", {d["key"]: _coarse(d) for d in dives})
    _dump(ann / "train_split.pkl", [d["key"] for d in dives if d["split"] == "train"])
    _dump(ann / "test_split.pkl", [d["key"] for d in dives if d["split"] == "test"])
    return root


def _splits(root: Path) -> list[Path]:
    return [root / "Annotations/train_split.pkl", root / "Annotations/test_split.pkl"]


@pytest.fixture
def fd_root(tmp_path: Path) -> Path:
    return write_finediving(tmp_path / "FineDiving")


def test_read_finediving_root_combines_fine_and_coarse(fd_root: Path) -> None:
    problems: list[str] = []
    table = read_finediving([fd_root], problems)
    rows = {r["id"]: r for r in table.to_pylist()}
    assert list(rows) == ["01/1", "01/2", "01/3", f"{SYNCHRO}/1", f"{SYNCHRO}/9", f"{SEMI}/12"]
    assert rows["01/1"] == {
        "id": "01/1",
        "video_name": "01",
        "dive_index": 1,
        "video_path": "FINADiving_MTL_256s/01/1",
        "start_frame": 7377,
        "end_frame": 7461,
        "num_frames": 85,
        "dive_number": "407c",
        "difficulty": 3.2,
        "judge_scores": [9.5, 9.0, 9.5, 9.0, 8.5, 9.5, 8.5],
        "final_score": 88.0,
        "transitions": [2, 34],
        "frame_labels": [4] * 3 + [25] * 32 + [36] * 50,
        "split": "train",
    }
    assert rows[f"{SYNCHRO}/9"]["judge_scores"] == [4.5, 5.5, 7.0, 7.0, 6.5]
    assert (rows[f"{SYNCHRO}/9"]["start_frame"], rows[f"{SYNCHRO}/9"]["end_frame"]) == (16160, 16260)
    assert [rows[dive_key]["split"] for dive_key in rows] == [
        "train",
        "test",
        "train",
        "train",
        "test",
        "train",
    ]
    assert len(problems) == 1 and "('02', 5)" in problems[0] and "dropped" in problems[0]


def test_three_variants_agree_where_they_overlap(fd_root: Path) -> None:
    ann = fd_root / "Annotations"
    aqa = read_finediving([ann / "fine-grained_annotation_aqa.pkl", *_splits(fd_root)]).to_pylist()
    fine = read_finediving([ann / "FineDiving_fine-grained_annotation.pkl", *_splits(fd_root)]).to_pylist()
    coarse = read_finediving([ann / "FineDiving_coarse_annotation.pkl", *_splits(fd_root)]).to_pylist()
    both = read_finediving([fd_root]).to_pylist()
    assert aqa == fine
    for a, c, b, d in zip(aqa, coarse, both, IN_SPLIT, strict=True):
        for col in ("id", "dive_number", "final_score", "difficulty", "split", "video_path"):
            assert a[col] == c[col] == b[col]
        # step labels only from the fine-grained files, frames from the labels there
        assert a["transitions"] == b["transitions"] == d["transits"] and c["transitions"] == []
        assert a["frame_labels"] == b["frame_labels"] == d["labels"] and c["frame_labels"] == []
        assert (a["start_frame"], a["end_frame"]) == (0, len(d["labels"]) - 1)
        # broadcast frames and judges only from the coarse file
        assert (
            (c["start_frame"], c["end_frame"]) == (b["start_frame"], b["end_frame"]) == (d["start"], d["end"])
        )
        assert a["judge_scores"] == [] and c["judge_scores"] == b["judge_scores"] == d["judges"]


def test_frame_folder_gives_start_and_end(fd_root: Path) -> None:
    folder = fd_root / "FINADiving_MTL_256s" / SYNCHRO / "1"
    folder.mkdir(parents=True)
    for frame in range(3000, 3101):  # 101 frames, numbered differently from the coarse file
        (folder / f"{frame:05d}.jpg").touch()
    (folder / "notes.txt").touch()
    rows = {r["id"]: r for r in read_finediving([fd_root]).to_pylist()}
    assert (rows[f"{SYNCHRO}/1"]["start_frame"], rows[f"{SYNCHRO}/1"]["end_frame"]) == (3000, 3100)
    assert (rows["01/1"]["start_frame"], rows["01/1"]["end_frame"]) == (7377, 7461)  # no folder: coarse

    (folder / "03101.jpg").touch()  # now 102 frames for 101 labels: kept, transitions missing
    bad: dict[str, str] = {}
    rows = {r["id"]: r for r in read_finediving([fd_root], bad_transitions=bad).to_pylist()}
    assert rows[f"{SYNCHRO}/1"]["transitions"] is None and rows[f"{SYNCHRO}/1"]["frame_labels"] is None
    assert list(bad) == [f"{SYNCHRO}/1"]
    assert re.search(
        r"fine-grained_annotation_aqa\.pkl: key .*: 101 frames_labels for 102 frames", bad[f"{SYNCHRO}/1"]
    )


def test_explicit_files_and_root_from_annotations_folder(fd_root: Path) -> None:
    folder = fd_root / "FINADiving_MTL_256s" / "01" / "3"
    folder.mkdir(parents=True)
    for frame in range(40, 100):
        (folder / f"{frame}.jpg").touch()
    table = read_finediving([fd_root / "Annotations/fine-grained_annotation_aqa.pkl", *_splits(fd_root)])
    row = table.to_pylist()[2]
    assert row["id"] == "01/3" and (row["start_frame"], row["end_frame"]) == (40, 99)


def test_disagreeing_sources_are_reported(tmp_path: Path) -> None:
    root = write_finediving(tmp_path)
    coarse = {d["key"]: _coarse(d) for d in DIVES}
    coarse[("01", 1)]["dive_score"] = 87.0
    _dump(root / "Annotations/FineDiving_coarse_annotation.pkl", coarse)
    problems: list[str] = []
    table = read_finediving([root], problems)
    assert table.to_pylist()[0]["final_score"] == 88.0  # the fine-grained file wins
    assert any("('01', 1)" in p and "final_score" in p and "87.0" in p for p in problems)


# --------------------------------------------------------------------------------------------------
# Bad input: a DatasetError that names the file.


def test_truncated_pickle(fd_root: Path) -> None:
    path = fd_root / "Annotations/FineDiving_coarse_annotation.pkl"
    path.write_bytes(path.read_bytes()[:-40])
    with pytest.raises(DatasetError, match=r"FineDiving_coarse_annotation\.pkl: not a readable pickle"):
        read_finediving([fd_root])
    path.write_bytes(b"")
    with pytest.raises(DatasetError, match=r"FineDiving_coarse_annotation\.pkl: not a readable pickle"):
        safe_load(path)


class _Exploit:
    """Pickles as a call of ``func(*args)``: what a hostile annotation file would contain."""

    def __init__(self, func: object, *args: object) -> None:
        self.func, self.args = func, args

    def __reduce__(self) -> tuple:
        return self.func, self.args


@pytest.mark.parametrize("protocol", [0, 2, 4])
def test_unsafe_global_is_refused_and_not_executed(tmp_path: Path, protocol: int) -> None:
    marker = tmp_path / "pwned"
    cases = [
        (_Exploit(os.system, f"touch {marker}"), "system"),
        (_Exploit(eval, f"open({str(marker)!r}, 'w')"), "eval"),
        (_Exploit(subprocess.call, ["touch", str(marker)]), ".call"),  # commands.call at protocol < 3
        (_Exploit(copyreg._reconstructor, object, object, None), "_reconstructor"),
        (_Exploit(codecs.encode, "text", "rot13"), None),  # _codecs.encode, but not latin-1
    ]
    for i, (exploit, name) in enumerate(cases):
        # hidden inside an otherwise valid annotation value
        path = _dump(tmp_path / f"evil{i}.pkl", {("01", 1): ["407c", 88.0, 3.2, [2], exploit]}, protocol)
        with pytest.raises(DatasetError, match=rf"evil{i}\.pkl") as info:
            safe_load(path)
        if name is not None:
            assert "refused global" in str(info.value) and name in str(info.value)
        else:
            assert "latin1" in str(info.value)
    assert not marker.exists()


@pytest.mark.parametrize("protocol", [0, 2, 3, 4, 5])
def test_safe_load_reads_numpy_and_containers(tmp_path: Path, protocol: int) -> None:
    obj = {
        ("01", 1): [
            "407c",
            88.0,
            np.float64(3.2),
            np.array([2, 34], np.int64),
            np.arange(85, dtype=np.int64),
        ],
        (1, 2): {"judge_scores": np.array([9.0, 8.5]), "n": np.int64(7), "raw": b"\x00\xff", "s": {1, 2}},
        "f": frozenset({"a"}),
        "arrays": (
            np.array([True, False]),
            np.arange(6, dtype=">f4").reshape(2, 3),
            np.asfortranarray(np.arange(6, dtype=np.uint16).reshape(2, 3)),
            np.zeros((0, 3), np.int8),
        ),
        "dtype": np.dtype("<i4"),
        "strings": (np.str_("407C"), np.array(["a", "bcd"]), np.bytes_(b"5253B")),
    }
    loaded = safe_load(_dump(tmp_path / "ok.pkl", obj, protocol), encoding="latin1")
    as_numpy_loads = pickle.loads(pickle.dumps(obj["arrays"], protocol))  # '>f4' comes back native < 5
    for got, want in zip(loaded["arrays"], as_numpy_loads, strict=True):
        assert type(got) is np.ndarray and got.dtype == want.dtype and np.array_equal(got, want)
        assert got.flags.f_contiguous == want.flags.f_contiguous
    assert type(loaded[("01", 1)][3]) is np.ndarray and loaded["dtype"] == np.dtype("<i4")
    assert loaded["strings"][0] == "407C" and loaded["strings"][1].tolist() == ["a", "bcd"]
    assert loaded["strings"][2] == b"5253B"
    assert loaded[("01", 1)][:3] == ["407c", 88.0, 3.2]
    assert loaded[("01", 1)][3].dtype == np.int64 and loaded[("01", 1)][3].tolist() == [2, 34]
    assert loaded[("01", 1)][4].tolist() == list(range(85))
    assert loaded[(1, 2)]["judge_scores"].tolist() == [9.0, 8.5] and loaded[(1, 2)]["n"] == 7
    assert loaded[(1, 2)]["raw"] == b"\x00\xff" and loaded[(1, 2)]["s"] == {1, 2}
    assert loaded["f"] == frozenset({"a"})


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(DatasetError, match=r"nope\.pkl: file not found"):
        read_finediving([tmp_path / "nope.pkl"])
    with pytest.raises(DatasetError, match=r"nope\.pkl: file not found"):
        safe_load(tmp_path / "nope.pkl")
    with pytest.raises(DatasetError, match="no FineDiving annotation pickle"):
        read_finediving([tmp_path])
    with pytest.raises(DatasetError, match="no FineDiving split file"):
        read_finediving([_dump(tmp_path / "x.pkl", {("01", 1): _aqa(DIVES[0])})])


def test_split_key_missing_from_annotations(fd_root: Path) -> None:
    _dump(fd_root / "Annotations/test_split.pkl", [("01", 2), ("99", 1)])
    with pytest.raises(DatasetError, match=r"test_split\.pkl: split key \('99', 1\) is in no annotation"):
        read_finediving([fd_root])


def test_key_in_both_splits(fd_root: Path) -> None:
    _dump(fd_root / "Annotations/test_split.pkl", [("01", 2), ("01", 1)])
    with pytest.raises(DatasetError, match=r"test_split\.pkl: key \('01', 1\) is in both"):
        read_finediving([fd_root])


@pytest.mark.parametrize(
    ("name", "value", "message"),
    [
        ("fine-grained_annotation_aqa.pkl", ["407c", "88.0", 3.2, [2, 34], [4] * 85], "final score.*str"),
        ("fine-grained_annotation_aqa.pkl", ["407c", 88.0, 3.2, [2, 34]], "5-item list, got 4"),
        ("fine-grained_annotation_aqa.pkl", {"frames_labels": []}, "5-item list, got dict"),
        (
            "fine-grained_annotation_aqa.pkl",
            ["407c", 88.0, 3.2, [2, 34], np.zeros((85, 2), int)],
            "1-D integer",
        ),
        ("FineDiving_coarse_annotation.pkl", {"start_frame": 1}, r"missing field\(s\)"),
        ("FineDiving_coarse_annotation.pkl", {**_coarse(DIVES[0]), "judge_scores": 9.0}, "judge_scores"),
        ("FineDiving_fine-grained_annotation.pkl", {**_fine(DIVES[0]), "action_type": 407}, "action_type"),
    ],
)
def test_wrong_value_type(fd_root: Path, name: str, value: object, message: str) -> None:
    builders = {
        "fine-grained_annotation_aqa.pkl": _aqa,
        "FineDiving_fine-grained_annotation.pkl": _fine,
        "FineDiving_coarse_annotation.pkl": _coarse,
    }
    entries = {d["key"]: builders[name](d) for d in DIVES}
    entries[("01", 2)] = value
    path = _dump(fd_root / "Annotations" / name, entries)
    with pytest.raises(DatasetError, match=rf"{re.escape(name)}: key \('01', 2\).*{message}"):
        read_finediving([path, *_splits(fd_root)])


def test_bad_key_and_unknown_structure(tmp_path: Path, fd_root: Path) -> None:
    path = _dump(tmp_path / "a.pkl", {"01/1": _aqa(DIVES[0])})
    with pytest.raises(DatasetError, match=r"a\.pkl: key '01/1' is not a \(video_name"):
        read_finediving([path, *_splits(fd_root)])
    path = _dump(tmp_path / "b.pkl", {("01", 1): {"score": 1.0}})
    with pytest.raises(DatasetError, match=r"b\.pkl: not a FineDiving annotation file"):
        read_finediving([path, *_splits(fd_root)])
    path = _dump(tmp_path / "train_split.pkl", {("01", 1): 1})
    with pytest.raises(DatasetError, match=r"train_split\.pkl: expected a list"):
        read_finediving([fd_root / "Annotations/fine-grained_annotation_aqa.pkl", path])


# --------------------------------------------------------------------------------------------------
# Spec §1.1 sampling.


def test_linspace_indices_matches_spec_bit_for_bit() -> None:
    for start, n in [(0, 85), (7377, 85), (3095, 273), (0, 273), (16160, 63), (12345, 96), (5, 1)]:
        end = start + n - 1
        idx = linspace_indices(start, end)
        direct = [int(v) - start for v in np.linspace(start, end, 96)]
        assert idx.dtype == np.int64 and idx.shape == (96,) and idx.tolist() == direct
        assert idx[0] == 0 and idx[-1] == n - 1 and (np.diff(idx) >= 0).all()
    short = linspace_indices(0, 84)  # 85 frames: steps of 84/95 < 1 repeat frames
    assert short[:4].tolist() == [0, 0, 1, 2]  # 0, .884, 1.768, 2.653
    assert len(set(short.tolist())) == 85
    long = linspace_indices(0, 272)  # steps of 272/95 = 2.863
    assert long[:4].tolist() == [0, 2, 5, 8] and len(set(long.tolist())) == 96
    assert linspace_indices(10, 14, num=4).tolist() == [0, 1, 2, 4]  # 10, 11.33, 12.67, 14
    with pytest.raises(ValueError, match="before start"):
        linspace_indices(5, 4)


# --------------------------------------------------------------------------------------------------
# Poses.


def test_read_finediving_pose(tmp_path: Path) -> None:
    pred = np.random.default_rng(0).uniform(0, 455, (96, 16, 2)).astype(np.float32)
    np.savez(tmp_path / "pred_comp_1.npz", pred=pred)
    assert np.array_equal(read_finediving_pose(tmp_path / "pred_comp_1.npz"), pred)
    np.savez(tmp_path / "flat.npz", pred=pred.reshape(96, 32))
    assert np.array_equal(read_finediving_pose(tmp_path / "flat.npz"), pred)
    conf = np.concatenate([pred, np.ones((96, 16, 1), np.float32)], axis=-1)
    np.savez(tmp_path / "conf.npz", pred=conf)
    assert read_finediving_pose(tmp_path / "conf.npz").shape == (96, 16, 3)

    np.savez(tmp_path / "short.npz", pred=pred[:95])
    with pytest.raises(DatasetError, match=r"short\.npz: 'pred' has shape \(95, 16, 2\)"):
        read_finediving_pose(tmp_path / "short.npz")
    np.savez(tmp_path / "joints.npz", pred=np.zeros((96, 17, 2)))
    with pytest.raises(DatasetError, match=r"joints\.npz: 'pred' has shape \(96, 17, 2\)"):
        read_finediving_pose(tmp_path / "joints.npz")
    np.savez(tmp_path / "other.npz", poses=pred)
    with pytest.raises(DatasetError, match=r"other\.npz: no 'pred'"):
        read_finediving_pose(tmp_path / "other.npz")
    with pytest.raises(DatasetError, match=r"missing\.npz: pose file not found"):
        read_finediving_pose(tmp_path / "missing.npz")
    (tmp_path / "bad.npz").write_bytes(b"PK\x03\x04 not a zip")
    with pytest.raises(DatasetError, match=r"bad\.npz: not a readable"):
        read_finediving_pose(tmp_path / "bad.npz")


MPII_EXAMPLE = [
    {
        "image": "finediv00000.jpg",
        "center": [200.8, 113.7],
        "scale": 1.1129,
        "joints_vis": [1] * 16,
        "joints": [
            [228.8, 204.4], [219.2, 159.2], [214.2, 130.3], [215.2, 130.3], [220.2, 159.6], [229.2, 203.4],
            [214.5, 129.7], [193.9, 80.8], [190.6, 76.5], [182.6, 62.2], [194.6, 7.7], [190.3, 36.0],
            [193.6, 63.9], [194.6, 63.5], [190.6, 34.6], [193.9, 7.4],
        ],
    },
    {
        "image": "finediv00001.jpg",
        "center": [202.4, 110.2],
        "scale": 1.098,
        "joints_vis": [1] * 15 + [0],
        "joints": [[225.2, 200.4]] + [[219.5, 119.4]] * 5 + [[219.5, 119.4], [194.3, 73.2]]
        + [[190.0, 70.0], [177.3, 52.6], [180.7, 2.4]] + [[185.0, 30.0]] * 4 + [[181.0, 2.4]],
    },
]  # fmt: skip


def test_read_mpii_json(tmp_path: Path) -> None:
    path = tmp_path / "example.json"
    path.write_text(json.dumps(MPII_EXAMPLE))
    joints, visible = read_mpii_json(path)
    assert joints.shape == (2, 16, 2) and visible.shape == (2, 16) and visible.dtype == bool
    assert joints[0, 0].tolist() == [228.8, 204.4]  # right ankle
    assert joints[0, 7].tolist() == [193.9, 80.8]  # thorax
    assert joints[0, 15].tolist() == [193.9, 7.4]  # left wrist
    assert joints[1, 6].tolist() == [219.5, 119.4] and joints[1, 9].tolist() == [177.3, 52.6]
    assert visible[0].all() and visible[1, :15].all() and not visible[1, 15]

    bad = [MPII_EXAMPLE[0], {**MPII_EXAMPLE[1], "joints": MPII_EXAMPLE[1]["joints"][:15]}]
    path.write_text(json.dumps(bad))
    with pytest.raises(DatasetError, match=r"example\.json: entry 1 \('finediv00001\.jpg'\).*\(15, 2\)"):
        read_mpii_json(path)
    path.write_text("[{")
    with pytest.raises(DatasetError, match=r"example\.json: not readable JSON"):
        read_mpii_json(path)
    with pytest.raises(DatasetError, match=r"none\.json: file not found"):
        read_mpii_json(tmp_path / "none.json")


# --------------------------------------------------------------------------------------------------
# MTL-AQA.

MTL = {
    (1, 1): dict(primary_view=0, start_frame=7377, end_frame=7462, position=2, difficulty=3.2, armstand=0,
                 rotation_type=2, ss_no=7, tw_no=0, final_score=88.0,
                 judge_scores=np.array([9.5, 9, 9.5, 9, 8.5, 9.5, 8.5]), dive_number="407C"),
    (1, 2): dict(primary_view=0, start_frame=8649, end_frame=8738, position=2, difficulty=3.2, armstand=0,
                 rotation_type=2, ss_no=7, tw_no=0, final_score=86.4,
                 judge_scores=np.array([9, 8.5, 9, 9, 9, 9, 9]), dive_number="407C"),
    (18, 67): dict(primary_view=1, start_frame=100, end_frame=180, position=1, difficulty=2.0, armstand=0,
                   rotation_type=1, ss_no=4, tw_no=0, final_score=48.0,
                   judge_scores=np.array([8.0, 8.0, 8.0, 8.0, 8.0, 8.0, 8.0]), dive_number="105B"),
    (26, 4): dict(primary_view=0, start_frame=5, end_frame=70, position=4, difficulty=3.4, armstand=1,
                  rotation_type=4, ss_no=5, tw_no=3, final_score=74.8,
                  judge_scores=np.array([7.5, 7.5, 7.0, 7.5, 7.0, 7.0, 7.5]), dive_number="6245D"),
}  # fmt: skip


def write_mtl_aqa(root: Path, train: list, test: list, annotations: dict = MTL) -> Path:
    """The CoRe layout: ``info/`` holds Python 2 pickles (protocol 2, numpy 1.x arrays)."""
    info = root / "info"
    _dump(info / "final_annotations_dict_with_dive_number.pkl", annotations, protocol=2, writer="py2")
    _dump(info / "train_split_0.pkl", train, protocol=2)
    _dump(info / "test_split_0.pkl", test, protocol=2)
    return root


def test_read_mtl_aqa(tmp_path: Path) -> None:
    root = write_mtl_aqa(tmp_path / "MTL-AQA", train=[(18, 67), (1, 1), (1, 2)], test=[(26, 4)])
    table = read_mtl_aqa([root])
    rows = table.to_pylist()
    assert [r["id"] for r in rows] == ["01/1", "01/2", "18/67", "26/4"]
    assert rows[0] == {
        "id": "01/1",
        "video_name": "01",
        "dive_index": 1,
        "video_path": "01",
        "start_frame": 7377,
        "end_frame": 7462,
        "num_frames": 86,
        "dive_number": "407c",
        "difficulty": 3.2,
        "judge_scores": [9.5, 9.0, 9.5, 9.0, 8.5, 9.5, 8.5],
        "final_score": 88.0,
        "transitions": [],
        "frame_labels": [],
        "split": "train",
    }
    assert rows[3]["dive_number"] == "6245d" and rows[3]["split"] == "test"
    explicit = read_mtl_aqa(sorted((root / "info").iterdir()))
    assert explicit.equals(table)


def test_mtl_aqa_and_finediving_agree_on_shared_dives(tmp_path: Path, fd_root: Path) -> None:
    """FineDiving '01' = MTL-AQA video 1 (spec §12.5): same dive number, score and DD."""
    mtl = read_mtl_aqa([write_mtl_aqa(tmp_path / "m", train=[(1, 1), (1, 2)], test=[])]).to_pylist()
    fd = read_finediving([fd_root]).to_pylist()
    for m, f in zip(mtl, fd[:2], strict=True):
        assert m["id"] == f["id"]
        assert (m["dive_number"], m["final_score"], m["difficulty"]) == (
            f["dive_number"],
            f["final_score"],
            f["difficulty"],
        )


def test_mtl_aqa_errors(tmp_path: Path) -> None:
    root = write_mtl_aqa(tmp_path / "a", train=[(1, 1), (2, 2)], test=[])
    with pytest.raises(DatasetError, match=r"train_split_0\.pkl: split key \(2, 2\) is not in"):
        read_mtl_aqa([root])
    root = write_mtl_aqa(tmp_path / "b", train=[(1, 1), (1, 2)], test=[(1, 2)])
    with pytest.raises(DatasetError, match=r"test_split_0\.pkl: key \(1, 2\) is in both"):
        read_mtl_aqa([root])
    bad = {**MTL, (1, 2): {**MTL[(1, 2)], "judge_scores": "9 8.5 9"}}
    root = write_mtl_aqa(tmp_path / "c", train=[(1, 1)], test=[], annotations=bad)
    with pytest.raises(DatasetError, match=r"with_dive_number\.pkl: key \(1, 2\): judge_scores"):
        read_mtl_aqa([root])
    bad = {**MTL, (1, 2): {k: v for k, v in MTL[(1, 2)].items() if k != "end_frame"}}
    root = write_mtl_aqa(tmp_path / "d", train=[(1, 1)], test=[], annotations=bad)
    with pytest.raises(DatasetError, match=r"key \(1, 2\): missing field\(s\) \['end_frame'\]"):
        read_mtl_aqa([root])
    bad = {("1", 2): MTL[(1, 2)]}
    root = write_mtl_aqa(tmp_path / "e", train=[], test=[], annotations=bad)
    with pytest.raises(DatasetError, match=r"with_dive_number\.pkl: key \('1', 2\) is not a \(video_id"):
        read_mtl_aqa([root])
    with pytest.raises(DatasetError, match=r"no final_annotations_dict_with_dive_number\.pkl"):
        read_mtl_aqa([tmp_path])


# --------------------------------------------------------------------------------------------------
# Inspection.


def test_fina_scores_reproduce_the_real_examples() -> None:
    assert fina_scores([9.5, 9, 9.5, 9, 8.5, 9.5, 8.5], 3.2) == pytest.approx([88.0])
    assert fina_scores([7.5, 9.0, 8.0, 8.0, 8.5], 3.3)[1] == pytest.approx(81.18)  # synchronised
    assert fina_scores([4.5, 5.5, 7.0, 7.0, 6.5], 3.6)[1] == pytest.approx(65.88)
    assert fina_scores([7, 8, 9], 2.0) == pytest.approx([48.0])
    assert fina_scores([7, 8], 2.0) == []


def test_inspect_finediving(fd_root: Path) -> None:
    table, problems, bad = read_dataset("finediving", [fd_root])
    assert bad == {}
    summary = summarize(table, problems, bad)
    assert summary["num_dives"] == 6
    assert summary["splits"] == {"train": 4, "val": 0, "test": 2}
    assert summary["dive_numbers"] == {"407c": 3, "207b": 1, "207c": 1, "5253b": 1}
    assert summary["num_dive_numbers"] == 4
    assert summary["difficulty_values"] == [3.2, 3.3, 3.4, 3.6]
    assert summary["final_score"] == {"min": 65.88, "max": 88.0}
    assert summary["num_frames"] == {"min": 60, "max": 102}
    assert summary["dives_with_step_labels"] == 6
    assert summary["dives_without_transitions"] == 0 and summary["bad_transitions"] == []
    found = summary["problems"]
    assert len(found) == 2, found  # every score is consistent with its judges
    assert "dropped" in found[0]
    assert found[1] == "1 test dive number(s) absent from train: 207b"
    text = format_summary(summary)
    assert "6 (train 4, val 0, test 2)" in text and "407c×3" in text and "207b" in text
    json.dumps(summary)

    rows = table.to_pylist()
    rows[0]["final_score"] = 90.0
    found = summarize(annotation_table(rows), [])["problems"]
    assert any(
        "1 dive(s) have a final score inconsistent" in p and "01/1 (90.0 vs 88.00)" in p for p in found
    )


def test_inspect_mtl_aqa_and_canonical(tmp_path: Path) -> None:
    root = write_mtl_aqa(tmp_path / "m", train=[(1, 1), (26, 4)], test=[(18, 67)])
    table, problems, _ = read_dataset("mtl-aqa", [root])
    assert problems == ["1 annotation key(s) are in no split and were dropped: (1, 2)"]
    summary = summarize(table, problems)
    assert summary["judges_per_dive"] == {"7": 3} and summary["dives_with_step_labels"] == 0
    assert any("3 dive(s) have no step labels" in p for p in summary["problems"])
    assert any("test dive number(s) absent from train: 105b" in p for p in summary["problems"])

    write_parquet(table, tmp_path / "canon" / "annotations.parquet")
    for path in (tmp_path / "canon", tmp_path / "canon" / "annotations.parquet"):
        again, found, bad = read_dataset("canonical", [path])
        assert again.equals(table) and found == [] and bad == {}
    with pytest.raises(DatasetError, match="annotation table not found"):
        read_dataset("canonical", [tmp_path])
    with pytest.raises(ValueError, match="unknown dataset format"):
        read_dataset("kinetics", [root])  # type: ignore[arg-type]
