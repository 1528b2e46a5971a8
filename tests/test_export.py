"""Export of a canonical dataset in FineDiving's on-disk layout, and its round trip through the reader."""

from __future__ import annotations

import pickle
from pathlib import Path

import av
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest
from PIL import Image

from hpmcore.config import SynthConfig
from hpmcore.data.canonical import SKELETON_SCHEMA, DatasetError, annotation_table
from hpmcore.data.finediving import (
    export_finediving,
    linspace_indices,
    read_finediving,
    read_finediving_pose,
)
from hpmcore.data.safe_pickle import safe_load
from hpmcore.data.synth import generate_dataset

SIZE = 32


def level(frame: int) -> int:
    """Grey level of frame ``frame`` of the test videos: tells frames apart after decoding."""
    return 20 + 5 * frame


def write_mp4(path: Path, num_frames: int) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with av.open(str(path), "w") as container:
        stream = container.add_stream("libx264", rate=25)
        stream.width, stream.height, stream.pix_fmt = SIZE, SIZE, "yuv420p"
        for k in range(num_frames):
            rgb = np.full((SIZE, SIZE, 3), level(k), np.uint8)
            container.mux(stream.encode(av.VideoFrame.from_ndarray(rgb, format="rgb24")))
        container.mux(stream.encode())


def _row(video: str, index: int, path: str, start: int, end: int, dn: str, dd: float, score: float,
         judges: list[float], transitions: list[int], labels: list[int], split: str) -> dict:  # fmt: skip
    return {
        "id": f"{video}/{index}",
        "video_name": video,
        "dive_index": index,
        "video_path": path,
        "start_frame": start,
        "end_frame": end,
        "num_frames": end - start + 1,
        "dive_number": dn,
        "difficulty": dd,
        "judge_scores": judges,
        "final_score": score,
        "transitions": transitions,
        "frame_labels": labels,
        "split": split,
    }


ROWS = [
    _row("vidA", 1, "videos/a.mp4", 3, 20, "407c", 3.2, 88.0, [9.5, 9.0, 9.5, 9.0, 8.5, 9.5, 8.5],
         [4, 10], [4] * 5 + [25] * 6 + [36] * 7, "train"),
    _row("vidA", 2, "videos/a.mp4", 22, 39, "105b", 2.0, 48.0, [8.0] * 7,
         [2, 8], [1] * 3 + [20] * 6 + [36] * 9, "val"),
    _row("vidB", 1, "videos/b.mp4", 0, 24, "5253b", 3.2, 75.2, [], [], [], "test"),  # no labels, no judges
]  # fmt: skip


def skeleton_table(rows: list[dict]) -> pa.Table:
    """x = 100·(dive number in the table) + frame, y = joint + 0.5: every value says where it came from."""
    ids, frames, joints, xs, ys = [], [], [], [], []
    for d, row in enumerate(rows):
        for frame in range(row["num_frames"]):
            for joint in range(16):
                ids.append(row["id"])
                frames.append(frame)
                joints.append(joint)
                xs.append(100.0 * d + frame)
                ys.append(joint + 0.5)
    columns = [ids, frames, joints, xs, ys, [1.0] * len(ids)]
    return pa.Table.from_arrays([pa.array(c, f.type) for c, f in zip(columns, SKELETON_SCHEMA, strict=True)],
                                schema=SKELETON_SCHEMA)  # fmt: skip


@pytest.fixture(scope="module")
def dataset(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("canonical")
    write_mp4(root / "videos/a.mp4", 40)
    write_mp4(root / "videos/b.mp4", 25)
    return root


@pytest.fixture(scope="module")
def exported(dataset: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("export") / "FineDiving"
    export_finediving(annotation_table(ROWS), skeleton_table(ROWS), dataset, out)
    return out


def _as_finediving(rows: list[dict]) -> list[dict]:
    return [
        {
            **r,
            "video_path": f"FINADiving_MTL_256s/{r['video_name']}/{r['dive_index']}",
            "split": "test" if r["split"] == "test" else "train",
        }
        for r in rows
    ]


def test_round_trip_through_read_finediving(exported: Path) -> None:
    problems: list[str] = []
    table = read_finediving([exported], problems)
    assert table.to_pylist() == _as_finediving(ROWS)
    assert problems == []


def test_exported_pickles_have_the_real_files_types(exported: Path) -> None:
    ann = exported / "Annotations"
    aqa = safe_load(ann / "fine-grained_annotation_aqa.pkl")
    fine = safe_load(ann / "FineDiving_fine-grained_annotation.pkl")
    coarse = safe_load(ann / "FineDiving_coarse_annotation.pkl")
    keys = [("vidA", 1), ("vidA", 2), ("vidB", 1)]
    for entries in (aqa, fine, coarse):
        assert type(entries) is dict and list(entries) == keys
        assert all(type(k) is tuple and type(k[0]) is str and type(k[1]) is int for k in entries)
    value = aqa[("vidA", 1)]
    assert type(value) is list and [type(v) for v in value] == [str, float, float, np.ndarray, np.ndarray]
    assert value[:3] == ["407c", 88.0, 3.2] and value[3].dtype == np.int64 and value[3].tolist() == [4, 10]
    assert value[4].dtype == np.int64 and value[4].tolist() == ROWS[0]["frame_labels"]
    assert fine[("vidA", 1)]["sub-action_types"] == {
        4: "sub-action 4",
        25: "sub-action 25",
        36: "sub-action 36",
    }
    assert fine[("vidA", 2)]["steps_transit_frames"].tolist() == [2, 8]
    assert coarse[("vidA", 2)] == {
        "action_type": "105b",
        "start_frame": 22,
        "end_frame": 39,
        "dive_score": 48.0,
        "difficulty": 2.0,
        "judge_scores": [8.0] * 7,
    }
    assert (
        type(coarse[("vidA", 2)]["judge_scores"]) is list and type(coarse[("vidA", 2)]["start_frame"]) is int
    )
    assert safe_load(ann / "train_split.pkl") == [("vidA", 1), ("vidA", 2)]  # val merged into train
    assert safe_load(ann / "test_split.pkl") == [("vidB", 1)]
    with open(ann / "test_split.pkl", "rb") as f:  # the reference code uses plain pickle
        assert pickle.load(f) == [("vidB", 1)]


def test_exported_frames_are_the_dive_frames(exported: Path) -> None:
    for row in ROWS:
        folder = exported / "FINADiving_MTL_256s" / row["video_name"] / str(row["dive_index"])
        names = sorted(p.name for p in folder.iterdir())
        assert names == [f"{k:05d}.jpg" for k in range(row["start_frame"], row["end_frame"] + 1)]
        for name in (names[0], names[-1]):
            with Image.open(folder / name) as image:
                assert image.size == (SIZE, SIZE)
                mean = np.asarray(image.convert("RGB"), np.float64).mean()
            assert abs(mean - level(int(name[:-4]))) < 2.5, (folder / name, mean)  # levels 5 apart


def test_exported_poses_sample_the_skeleton(exported: Path) -> None:
    for d, row in enumerate(ROWS):
        pred = read_finediving_pose(
            exported / "FineDiving-Pose" / row["video_name"] / f"pred_comp_{row['dive_index']}.npz"
        )
        idx = linspace_indices(row["start_frame"], row["end_frame"])  # (96,)
        assert pred.shape == (96, 16, 2)
        assert np.array_equal(pred[:, :, 0], np.broadcast_to(100.0 * d + idx[:, None], (96, 16)))
        assert np.array_equal(pred[:, :, 1], np.broadcast_to(np.arange(16) + 0.5, (96, 16)))
    with np.load(exported / "FineDiving-Pose/vidA/pred_comp_1.npz") as npz:
        assert npz.files == ["pred"]


def test_export_of_a_finediving_layout_reads_back(exported: Path, tmp_path: Path) -> None:
    """A FineDiving-read table (frame folders as video_path) exports again: the folder-copy path."""
    table = read_finediving([exported])
    out = tmp_path / "again"
    export_finediving(table, skeleton_table(table.to_pylist()), exported, out, num_samples=8)
    assert read_finediving([out]).equals(table)
    assert read_finediving_pose(out / "FineDiving-Pose/vidB/pred_comp_1.npz", num_samples=8).shape == (
        8,
        16,
        2,
    )
    src, dst = (p / "FINADiving_MTL_256s/vidA/2/00030.jpg" for p in (exported, out))
    assert src.read_bytes() == dst.read_bytes()


def test_export_is_atomic(dataset: Path, tmp_path: Path) -> None:
    out = tmp_path / "out"
    out.mkdir()
    (out / "stale.txt").write_text("old")
    too_long = [*ROWS[:2], {**ROWS[2], "end_frame": 25, "num_frames": 26}]  # b.mp4 has 25 frames
    with pytest.raises(DatasetError, match=r"b\.mp4: has 25 frames, but dives need frame 25"):
        export_finediving(annotation_table(too_long), skeleton_table(too_long), dataset, out)
    assert [p.name for p in tmp_path.iterdir()] == ["out"] and (out / "stale.txt").read_text() == "old"

    missing = [*ROWS[:2], {**ROWS[2], "video_path": "videos/c.mp4"}]
    with pytest.raises(DatasetError, match=r"c\.mp4: video not found"):
        export_finediving(annotation_table(missing), skeleton_table(missing), dataset, out)
    assert [p.name for p in tmp_path.iterdir()] == ["out"]

    export_finediving(annotation_table(ROWS[2:]), skeleton_table(ROWS[2:]), dataset, out)
    assert sorted(p.name for p in out.iterdir()) == ["Annotations", "FINADiving_MTL_256s", "FineDiving-Pose"]


def test_export_rejects_incomplete_skeleton(dataset: Path, tmp_path: Path) -> None:
    skeleton = skeleton_table(ROWS)
    pairs = zip(skeleton["id"].to_pylist(), skeleton["frame"].to_pylist(), strict=True)
    keep = [not (i == "vidA/2" and f == 17) for i, f in pairs]  # the last frame: always sampled
    with pytest.raises(DatasetError, match=r"dive 'vidA/2' lacks joints at sampled frames"):
        export_finediving(annotation_table(ROWS), skeleton.filter(pa.array(keep)), dataset, tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_synthetic_dataset_round_trip(tmp_path: Path) -> None:
    """The synthetic generator's output (real rendered mp4s) exports and reads back unchanged."""
    cfg = SynthConfig(num_dives=4, min_frames=30, max_frames=40, width=64, height=64)
    generate_dataset(cfg, tmp_path / "synth", progress=False)
    annotations = pq.read_table(tmp_path / "synth/annotations.parquet")
    skeletons = pq.read_table(tmp_path / "synth/skeletons.parquet")
    export_finediving(annotations, skeletons, tmp_path / "synth", tmp_path / "fd")

    rows = annotations.to_pylist()
    assert read_finediving([tmp_path / "fd"]).to_pylist() == _as_finediving(rows)
    row = rows[-1]
    folder = tmp_path / "fd/FINADiving_MTL_256s" / row["video_name"] / str(row["dive_index"])
    assert len(list(folder.glob("*.jpg"))) == row["num_frames"]
    pred = read_finediving_pose(
        tmp_path / f"fd/FineDiving-Pose/{row['video_name']}/pred_comp_{row['dive_index']}.npz"
    )
    one = skeletons.filter(pc.equal(skeletons["id"], row["id"])).sort_by(
        [("frame", "ascending"), ("joint", "ascending")]
    )
    xy = np.stack([one["x"].to_numpy(), one["y"].to_numpy()], axis=-1).reshape(row["num_frames"], 16, 2)
    assert np.array_equal(pred, xy[linspace_indices(row["start_frame"], row["end_frame"])])
