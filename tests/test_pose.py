"""Skeleton extraction (``hpmcore.extraction.pose``): imported annotations and mmpose estimation.

The annotation tests write skeletons whose values are a known function of (frame, joint), so a wrong
frame, joint or interpolation fails exactly. The mmpose tests build RTMPose-t (the smallest bundled
RTMPose) with random weights: they check the plumbing (boxes, mapping, table), not the accuracy.
Every test runs the stage (:func:`~hpmcore.extraction.pose.stage.extract_pose`) on a real decode
manifest (the frames are decode's), through the per-video cache; the stage tests check what is
computed and what reused, failures and the stage script, as the decode stage's tests do.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import torch
from conftest import synthetic_frames

from hpmcore.config import ConfigError, DecodeConfig, PoseConfig, SynthConfig, from_dict
from hpmcore.data.canonical import NUM_JOINTS, DatasetError, annotation_table, read_annotations
from hpmcore.data.finediving import POSE_DIR, linspace_indices
from hpmcore.data.render import write_mp4
from hpmcore.data.synth import generate_dataset
from hpmcore.extraction.cache import FAILURE_SCHEMA, ExtractionFailed, ManifestError, sha256_file
from hpmcore.extraction.decode import decode_videos
from hpmcore.extraction.pose.annotations import MPII_JSON_DIR
from hpmcore.extraction.pose.mmpose import COCO_KEYPOINTS, coco_to_mpii, track_box
from hpmcore.extraction.pose.stage import extract_pose
from hpmcore.extraction.pose.table import (
    SAMPLED_SKELETON_SCHEMA,
    SKELETONS,
    DiveSkeleton,
    dive_skeletons,
    normalize_skeleton,
    pose_metadata,
    skeleton_table,
)
from hpmcore.extraction.video import decode_dive, probe
from hpmcore.models.checkpoints import CheckpointError

RTMPOSE_T = "body_2d_keypoint/rtmpose/coco/rtmpose-t_8xb256-420e_coco-256x192.py"
"""The smallest bundled RTMPose (mmpose/.mim/configs)."""


def _dives(*rows: tuple[str, int, str, int, int]) -> pa.Table:
    """A canonical dive table from ``(video_name, dive_index, video_path, start_frame, end_frame)``."""
    return annotation_table(
        [
            {
                "id": f"{name}/{index}",
                "video_name": name,
                "dive_index": index,
                "video_path": path,
                "start_frame": start,
                "end_frame": end,
                "num_frames": end - start + 1,
                "dive_number": "407c",
                "difficulty": 3.2,
                "judge_scores": [],
                "final_score": 80.0,
                "transitions": [],
                "frame_labels": [],
                "split": "train",
            }
            for name, index, path, start, end in rows
        ]
    )


def _frame_folder(root: Path, rel: str, first: int, count: int, width: int = 40, height: int = 30) -> None:
    """``count`` grey JPEGs named ``<first + i:05d>.jpg`` (FineDiving layout) in ``root / rel``."""
    from PIL import Image

    folder = root / rel
    folder.mkdir(parents=True)
    image = Image.new("RGB", (width, height), (90, 90, 90))
    for i in range(count):
        image.save(folder / f"{first + i:05d}.jpg")


def _by_dive(table: pa.Table) -> dict[str, DiveSkeleton]:
    assert table.schema.equals(SAMPLED_SKELETON_SCHEMA, check_metadata=False)
    return dive_skeletons(table)


def _pose(
    dives: pa.Table,
    root: Path,
    out: Path,
    cfg: PoseConfig | None = None,
    *,
    decode_cfg: DecodeConfig | None = None,
    decoded: pa.Table | None = None,
    **kw: Any,
) -> Any:
    """The pose stage on ``dives``: on ``decoded`` (a decode manifest), or else on the manifest of the
    decode stage run with ``decode_cfg`` (16 frames by default; 16×16 px, ``on_error: skip``) next to
    ``out``."""
    if decoded is None:
        decode_cfg = dataclasses.replace(
            decode_cfg or DecodeConfig(num_frames=16), width=16, height=16, on_error="skip"
        )
        folder = out.parent / f"decoded-{decode_cfg.num_frames}-{decode_cfg.min_source_frames}"
        decoded = decode_videos(dives, decode_cfg, root=root, out_dir=folder, progress=False).manifest
    return extract_pose(
        dives, cfg or PoseConfig(), root=root, decoded=decoded, out_dir=out, progress=False, **kw
    )


def _skeletons(
    dives: pa.Table, root: Path, cfg: PoseConfig, *, num_frames: int, **kw: Any
) -> tuple[pa.Table, pa.Table]:
    """``(skeleton table, failures)`` of :func:`_pose` in a fresh folder beside ``root``."""
    kw.setdefault("decode_cfg", DecodeConfig(num_frames=num_frames))
    result = _pose(dives, root, Path(tempfile.mkdtemp(prefix="pose-", dir=root.parent)) / "pose", cfg, **kw)
    return result.manifest, result.failures


# --------------------------------------------------------------------------------------------------
# annotations backend


@pytest.mark.parametrize("num_frames", [16, 96])
def test_annotations_round_trip_synthetic_ground_truth(tmp_path: Path, num_frames: int) -> None:
    out = tmp_path / "synth"
    generate_dataset(
        SynthConfig(num_dives=3, width=64, height=64, min_frames=30, max_frames=40), out, progress=False
    )
    dives = read_annotations(out / "annotations.parquet")
    table, failures = _skeletons(dives, out, PoseConfig(), num_frames=num_frames)

    assert failures.num_rows == 0 and failures.schema.equals(FAILURE_SCHEMA)
    assert table.num_rows == 3 * num_frames * NUM_JOINTS
    assert table.column("id").to_pylist()[:: num_frames * NUM_JOINTS] == dives.column("id").to_pylist()
    gt = pq.read_table(out / "skeletons.parquet").to_pandas().set_index(["id", "frame", "joint"])
    got = _by_dive(table)
    for row in dives.to_pylist():
        offsets = linspace_indices(row["start_frame"], row["end_frame"], num_frames)
        sk = got[row["id"]]
        expected = gt.loc[row["id"]]
        xs = expected["x"].to_numpy().reshape(row["num_frames"], NUM_JOINTS)[offsets]
        ys = expected["y"].to_numpy().reshape(row["num_frames"], NUM_JOINTS)[offsets]
        conf = expected["confidence"].to_numpy().reshape(row["num_frames"], NUM_JOINTS)[offsets]
        np.testing.assert_array_equal(sk.xy[..., 0], xs)
        np.testing.assert_array_equal(sk.xy[..., 1], ys)
        np.testing.assert_array_equal(sk.confidence, conf)
        assert (sk.width, sk.height) == (64, 64)
        # the same frames the decode stage samples
        decoded = decode_dive(
            out / row["video_path"],
            row["start_frame"],
            row["end_frame"],
            DecodeConfig(num_frames=num_frames, width=32, height=32),
        )
        np.testing.assert_array_equal(sk.source_frames, decoded.indices)
    assert table.column("frame").to_pylist()[: 2 * NUM_JOINTS] == [0] * NUM_JOINTS + [1] * NUM_JOINTS
    meta = pose_metadata(table)
    assert meta["backend"] == "annotations" and meta["source"] == "skeletons"
    assert meta["normalize"] == "none" and meta["num_frames"] == num_frames


def test_metadata_survives_parquet(tmp_path: Path) -> None:
    table = skeleton_table([], {"backend": "annotations", "normalize": "frame"})
    pq.write_table(table, tmp_path / "s.parquet")
    assert pose_metadata(pq.read_table(tmp_path / "s.parquet"))["normalize"] == "frame"


def _npz_dataset(tmp_path: Path, channels: int) -> tuple[Path, pa.Table, np.ndarray]:
    """A FineDiving-layout dive (frames 1000..1079) with a pose file whose x is linear in the frame."""
    root = tmp_path / "fd"
    start, end = 1000, 1079
    _frame_folder(root, "FINADiving_MTL_256s/vid/3", start, end - start + 1)
    at = linspace_indices(start, end, 96)  # (96,) offsets of the npz frames
    joints = np.arange(NUM_JOINTS)
    pred = np.zeros((96, NUM_JOINTS, channels), dtype=np.float32)
    pred[..., 0] = 2.0 * at[:, None] + joints  # x = 2·offset + joint
    pred[..., 1] = 100.0 - joints - 0.5 * at[:, None]  # y = 100 − joint − offset/2
    if channels == 3:
        pred[..., 2] = (joints % 4) / 4
    (root / POSE_DIR / "vid").mkdir(parents=True)
    np.savez(root / POSE_DIR / "vid" / "pred_comp_3.npz", pred=pred)
    return root, _dives(("vid", 3, "FINADiving_MTL_256s/vid/3", start, end)), pred


@pytest.mark.parametrize("channels", [2, 3])
def test_annotations_finediving_npz_96_frames_exact(tmp_path: Path, channels: int) -> None:
    root, dives, pred = _npz_dataset(tmp_path, channels)
    cfg = PoseConfig(source="finediving-npz")
    table, failures = _skeletons(dives, root, cfg, num_frames=96)
    assert failures.num_rows == 0 and table.num_rows == 96 * NUM_JOINTS
    sk = _by_dive(table)["vid/3"]
    np.testing.assert_array_equal(sk.xy, pred[..., :2])
    expected_conf = pred[..., 2] if channels == 3 else np.ones((96, NUM_JOINTS))
    np.testing.assert_array_equal(sk.confidence, expected_conf)
    np.testing.assert_array_equal(sk.source_frames, 1000 + linspace_indices(1000, 1079, 96))
    assert (sk.width, sk.height) == (40, 30)


def test_annotations_finediving_npz_resampled_to_other_t(tmp_path: Path) -> None:
    root, dives, _ = _npz_dataset(tmp_path, 3)
    table, _ = _skeletons(dives, root, PoseConfig(source="finediving-npz"), num_frames=24)
    sk = _by_dive(table)["vid/3"]
    offsets = linspace_indices(1000, 1079, 24).astype(np.float64)
    joints = np.arange(NUM_JOINTS)
    # x and y are linear in the frame number, so interpolation between npz frames is exact
    np.testing.assert_allclose(sk.xy[..., 0], 2.0 * offsets[:, None] + joints, atol=1e-4)
    np.testing.assert_allclose(sk.xy[..., 1], 100.0 - joints - 0.5 * offsets[:, None], atol=1e-4)
    np.testing.assert_allclose(sk.confidence, np.broadcast_to((joints % 4) / 4, (24, NUM_JOINTS)))
    np.testing.assert_array_equal(sk.source_frames, 1000 + linspace_indices(1000, 1079, 24))


def test_annotations_npz_wrong_shape_names_the_file(tmp_path: Path) -> None:
    root, dives, _ = _npz_dataset(tmp_path, 2)
    bad = root / POSE_DIR / "vid" / "pred_comp_3.npz"
    np.savez(bad, pred=np.zeros((95, NUM_JOINTS, 2), dtype=np.float32))
    with pytest.raises(ExtractionFailed, match=r"pred_comp_3\.npz.*\(95, 16, 2\)"):
        _skeletons(dives, root, PoseConfig(source="finediving-npz"), num_frames=96)

    # on_error: skip → the dive is in the failures table, the good dive is kept
    _frame_folder(root, "FINADiving_MTL_256s/vid/4", 0, 50)
    np.savez(root / POSE_DIR / "vid" / "pred_comp_4.npz", pred=np.ones((96, NUM_JOINTS, 2), np.float32))
    both = pa.concat_tables([dives, _dives(("vid", 4, "FINADiving_MTL_256s/vid/4", 0, 49))])
    cfg = PoseConfig(source="finediving-npz", on_error="skip")
    table, failures = _skeletons(both, root, cfg, num_frames=96)
    assert failures.column("id").to_pylist() == ["vid/3"]
    assert str(bad) in failures.column("reason")[0].as_py()
    assert set(table.column("id").to_pylist()) == {"vid/4"} and table.num_rows == 96 * NUM_JOINTS


def _npz_declaring(path: Path, shape: tuple[int, ...]) -> None:
    """A few-hundred-byte ``.npz`` whose ``pred.npy`` header declares ``shape`` float32 (a size bomb:
    ``np.load`` would allocate all of it)."""
    import io
    import zipfile

    header = io.BytesIO()
    np.lib.format.write_array_header_2_0(header, {"descr": "<f4", "fortran_order": False, "shape": shape})
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as archive:
        archive.writestr("pred.npy", header.getvalue() + bytes(64))


def test_an_npz_declaring_1e11_frames_is_refused_from_its_header(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    root, dives, _ = _npz_dataset(tmp_path, 2)
    _frame_folder(root, "FINADiving_MTL_256s/vid/7", 0, 50)
    bomb = root / POSE_DIR / "vid" / "pred_comp_7.npz"
    _npz_declaring(bomb, (10**11, NUM_JOINTS, 2))
    both = pa.concat_tables([dives, _dives(("vid", 7, "FINADiving_MTL_256s/vid/7", 0, 49))])

    # on_error: skip completes the stage without that dive
    table, failures = _skeletons(
        both, root, PoseConfig(source="finediving-npz", on_error="skip"), num_frames=96
    )
    assert set(table.column("id").to_pylist()) == {"vid/3"}
    (failure,) = failures.to_pylist()
    assert failure["id"] == "vid/7"
    assert failure["reason"].startswith(f"{bomb}: 'pred' declares shape (100000000000, 16, 2) of float32")

    # the stage script with on_error: fail: exit 2 naming the file, no table
    import yaml

    from stages.decode import main as decode_main
    from stages.pose import main as pose_main

    params = tmp_path / "params.yaml"
    settings = {"data": {"root": "fd"}, "decode": {"num_frames": 96}, "pose": {"source": "finediving-npz"}}
    params.write_text(yaml.safe_dump(settings))
    pq.write_table(both, tmp_path / "dives.parquet")
    decoded, out = tmp_path / "decoded", tmp_path / "pose"
    common = ["--params", str(params), "--dives", str(tmp_path / "dives.parquet")]
    assert decode_main([*common, "--out", str(decoded)]) == 0
    with caplog.at_level(logging.ERROR):
        assert pose_main([*common, "--decoded", str(decoded), "--out", str(out)]) == 2
    assert f"{bomb}: 'pred' declares shape (100000000000, 16, 2)" in caplog.text
    assert not (out / SKELETONS).exists()


def test_annotations_missing_pose_file_and_a_dive_decode_left_out(tmp_path: Path) -> None:
    root, dives, _ = _npz_dataset(tmp_path, 2)
    (root / POSE_DIR / "vid" / "pred_comp_3.npz").unlink()
    with pytest.raises(ExtractionFailed, match=r"pred_comp_3\.npz: pose file not found"):
        _skeletons(dives, root, PoseConfig(source="finediving-npz"), num_frames=96)
    # a dive too short for decode is decode's failure: pose never sees it (no pose failure either)
    short = _dives(("vid", 3, "FINADiving_MTL_256s/vid/3", 1000, 1009))
    decode_cfg = DecodeConfig(num_frames=16, width=16, height=16, min_source_frames=16, on_error="skip")
    decoded = decode_videos(short, decode_cfg, root=root, out_dir=tmp_path / "decoded", progress=False)
    assert "too short" in decoded.failures.column("reason")[0].as_py()
    table, failures = _skeletons(
        short, root, PoseConfig(source="finediving-npz"), num_frames=16, decoded=decoded.manifest
    )
    assert table.num_rows == 0 and failures.num_rows == 0


def test_annotations_mpii_json(tmp_path: Path) -> None:
    root = tmp_path / "fd"
    start, end = 7, 46  # 40 frames
    _frame_folder(root, "frames/v/1", start, end - start + 1)
    entries = []
    for f in range(end - start + 1):
        joints = [[10.0 * f + j, 200.0 - j] for j in range(NUM_JOINTS)]
        visible = [int((f + j) % 3 != 0) for j in range(NUM_JOINTS)]
        entries.append(
            {
                "image": f"finediv{f:05d}.jpg",
                "joints": joints,
                "joints_vis": visible,
                "center": [0, 0],
                "scale": 1,
            }
        )
    (root / MPII_JSON_DIR / "v").mkdir(parents=True)
    (root / MPII_JSON_DIR / "v" / "1.json").write_text(json.dumps(entries))
    dives = _dives(("v", 1, "frames/v/1", start, end))
    table, _ = _skeletons(dives, root, PoseConfig(source="mpii-json"), num_frames=96)
    sk = _by_dive(table)["v/1"]
    offsets = linspace_indices(start, end, 96)
    joints = np.arange(NUM_JOINTS)
    np.testing.assert_array_equal(sk.xy[..., 0], 10.0 * offsets[:, None] + joints)
    np.testing.assert_array_equal(sk.xy[..., 1], np.broadcast_to(200.0 - joints, (96, NUM_JOINTS)))
    np.testing.assert_array_equal(sk.confidence, ((offsets[:, None] + joints) % 3 != 0).astype(np.float32))
    np.testing.assert_array_equal(sk.source_frames, start + offsets)

    # one entry too few for the dive → error naming the file
    (root / MPII_JSON_DIR / "v" / "1.json").write_text(json.dumps(entries[:-1]))
    with pytest.raises(ExtractionFailed, match=r"1\.json: 39 entries, but dive 'v/1' has 40 frames"):
        _skeletons(dives, root, PoseConfig(source="mpii-json"), num_frames=96)


def test_annotations_dive_without_skeleton_rows(tmp_path: Path) -> None:
    out = tmp_path / "synth"
    generate_dataset(
        SynthConfig(num_dives=1, width=64, height=64, min_frames=30, max_frames=40), out, progress=False
    )
    dives = read_annotations(out / "annotations.parquet")
    gt = pq.read_table(out / "skeletons.parquet")
    pq.write_table(gt.filter(pa.compute.not_equal(gt.column("frame"), 0)), out / "partial.parquet")
    cfg = PoseConfig(annotations_path=str(out / "partial.parquet"))
    with pytest.raises(
        ExtractionFailed, match=r"partial\.parquet: dive 'synth_000/1' lacks joints at sampled frame"
    ):
        _skeletons(dives, out, cfg, num_frames=16)


# --------------------------------------------------------------------------------------------------
# COCO → MPII, normalisation, config


def test_coco_to_mpii_hand_made_skeleton() -> None:
    kp = np.zeros((17, 2))
    sc = np.full(17, 0.9)
    c = {name: i for i, name in enumerate(COCO_KEYPOINTS)}
    kp[c["left_shoulder"]], kp[c["right_shoulder"]] = (60, 40), (40, 40)  # thorax (50, 40)
    kp[c["left_hip"]], kp[c["right_hip"]] = (56, 80), (44, 84)  # pelvis (50, 82)
    kp[c["left_elbow"]], kp[c["right_elbow"]] = (70, 55), (30, 55)
    kp[c["left_wrist"]], kp[c["right_wrist"]] = (72, 70), (28, 70)
    kp[c["left_knee"]], kp[c["right_knee"]] = (56, 100), (44, 100)
    kp[c["left_ankle"]], kp[c["right_ankle"]] = (56, 120), (44, 120)
    # face: nose (50, 22), eyes (48, 18)/(52, 18), ears (46, 20)/(54, 20)
    kp[c["nose"]], kp[c["left_eye"]], kp[c["right_eye"]] = (50, 22), (52, 18), (48, 18)
    kp[c["left_ear"]], kp[c["right_ear"]] = (54, 20), (46, 20)
    sc[c["right_ear"]] = 0.0  # an occluded ear: no weight in the head centre
    sc[c["left_hip"]] = 0.5
    sc[c["nose"]], sc[c["left_eye"]], sc[c["right_eye"]], sc[c["left_ear"]] = 0.4, 0.2, 0.2, 0.2
    xy, conf = coco_to_mpii(kp, sc)
    # head centre = (0.4·(50,22) + 0.2·(52,18) + 0.2·(48,18) + 0.2·(54,20)) / 1.0 = (50.8, 20.0)
    expected = {
        "right_ankle": (44, 120),
        "right_knee": (44, 100),
        "right_hip": (44, 84),
        "left_hip": (56, 80),
        "left_knee": (56, 100),
        "left_ankle": (56, 120),
        "pelvis": (50, 82),
        "thorax": (50, 40),
        "upper_neck": (50.4, 30.0),  # thorax + 0.5 · ((50.8, 20) − (50, 40))
        "head_top": (51.4, 5.0),  # head centre + 0.75 · (0.8, −20)
        "right_wrist": (28, 70),
        "right_elbow": (30, 55),
        "right_shoulder": (40, 40),
        "left_shoulder": (60, 40),
        "left_elbow": (70, 55),
        "left_wrist": (72, 70),
    }
    from hpmcore.data.canonical import MPII_JOINTS

    np.testing.assert_allclose(xy, np.array([expected[n] for n in MPII_JOINTS]), atol=1e-5)
    expected_conf = np.full(16, 0.9)
    expected_conf[MPII_JOINTS.index("left_hip")] = 0.5
    expected_conf[MPII_JOINTS.index("pelvis")] = 0.5  # min of the hips
    expected_conf[MPII_JOINTS.index("upper_neck")] = 0.4  # min(thorax 0.9, best face score 0.4)
    expected_conf[MPII_JOINTS.index("head_top")] = 0.4
    np.testing.assert_allclose(conf, expected_conf, atol=1e-6)

    # batched input (T, 17, 2) maps frame by frame; all face scores 0 → plain mean of the face points
    xy2, _ = coco_to_mpii(np.stack([kp, kp]), np.stack([sc, np.where(np.arange(17) < 5, 0.0, sc)]))
    np.testing.assert_allclose(xy2[0], xy, atol=1e-5)
    head = kp[:5].mean(axis=0)  # (50, 19.6)
    np.testing.assert_allclose(
        xy2[1, MPII_JOINTS.index("head_top")], head + 0.75 * (head - (50, 40)), atol=1e-5
    )
    with pytest.raises(ValueError, match=r"\(\.\.\., 17, 2\)"):
        coco_to_mpii(np.zeros((16, 2)), np.zeros(16))


def test_normalize_skeleton() -> None:
    xy = np.array([[[0.0, 0.0], [200.0, 100.0], [100.0, 50.0]]])  # (1, 3, 2)
    np.testing.assert_array_equal(normalize_skeleton(xy, 200, 100, "none"), xy)
    np.testing.assert_allclose(
        normalize_skeleton(xy, 200, 100, "frame"), [[[-1.0, -0.5], [1.0, 0.5], [0.0, 0.0]]]
    )
    with pytest.raises(ValueError, match="unknown skeleton normalisation"):
        normalize_skeleton(xy, 200, 100, "box")


def test_pose_config_validation() -> None:
    assert from_dict(PoseConfig, {"backend": "annotations", "source": "mpii-json"}).source == "mpii-json"
    with pytest.raises(ConfigError, match=r"pose\.checkpoint is required"):
        from_dict(PoseConfig, {"backend": "mmpose"})
    with pytest.raises(ConfigError, match="mutually exclusive"):
        PoseConfig(backend="mmpose", checkpoint="a.pth", random_init=True).validate()
    with pytest.raises(ConfigError, match="unknown key"):
        from_dict(PoseConfig, {"backend": "mmpose", "chekpoint": "a.pth"}, "pose")
    with pytest.raises(ConfigError, match="keypoint_score"):
        PoseConfig(keypoint_score=1.5).validate()


def test_track_box_from_previous_keypoints() -> None:
    kp = np.array([[20.0, 30.0], [40.0, 70.0], [90.0, 5.0]])
    sc = np.array([0.9, 0.8, 0.1])  # the third keypoint is not confident
    # box (20, 30)-(40, 70), size (20, 40), grown by 0.25 of its size per side: (15, 20)-(45, 80)
    assert track_box(kp, sc, 0.3, 0.25, 100, 100) == (15.0, 20.0, 45.0, 80.0)
    assert track_box(kp, sc, 0.3, 0.25, 100, 75) == (15.0, 20.0, 45.0, 75.0)  # clipped to the frame
    assert track_box(kp, sc, 0.85, 0.25, 100, 100) == (0.0, 0.0, 100.0, 100.0)  # < 2 confident: whole
    # a degenerate box is widened to 16 px before the margin
    assert track_box(np.array([[50.0, 50.0], [52.0, 50.0]]), np.ones(2), 0.3, 0.0, 100, 100) == (
        43.0,
        42.0,
        59.0,
        58.0,
    )


# --------------------------------------------------------------------------------------------------
# mmpose backend


def test_mmpose_missing_checkpoint_names_the_path(tmp_path: Path) -> None:
    cfg = PoseConfig(backend="mmpose", checkpoint="weights/rtmpose.pth")
    dives = _dives(("v", 1, "v.mp4", 0, 29))
    with pytest.raises(
        CheckpointError, match=rf"checkpoint {tmp_path / 'weights/rtmpose.pth'}: file does not exist"
    ):
        _skeletons(dives, tmp_path, cfg, num_frames=16, project_dir=tmp_path)


@pytest.fixture(scope="module")
def mmpose_apis() -> Any:
    pytest.importorskip("mmpose.apis", reason="pose stack (mmcv/mmdet/mmpose) not installed")
    import mmpose.apis

    return mmpose.apis


@pytest.mark.slow
def test_mmpose_random_init_rtmpose_well_formed_table(
    mmpose_apis: Any, make_video: Callable[..., Any], caplog: pytest.LogCaptureFixture, tmp_path: Path
) -> None:
    video = make_video(30, name="clip.mp4", width=64, height=48)
    dives = _dives(("v", 1, "clip.mp4", 2, 27), ("v", 2, "clip.mp4", 0, 9))  # second dive < T frames
    cfg = PoseConfig(backend="mmpose", config=RTMPOSE_T, random_init=True, device="cpu")
    with caplog.at_level(logging.WARNING, logger="hpmcore.extraction.pose"):
        table, failures = _skeletons(
            dives,
            video.path.parent,
            cfg,
            num_frames=16,
            decode_cfg=DecodeConfig(num_frames=16, min_source_frames=8),
        )
    assert "NO CHECKPOINT" in caplog.text
    assert failures.num_rows == 0
    assert table.num_rows == 2 * 16 * NUM_JOINTS
    got = _by_dive(table)
    for dive_id, start, end in (("v/1", 2, 27), ("v/2", 0, 9)):
        sk = got[dive_id]
        assert sk.xy.shape == (16, NUM_JOINTS, 2) and np.isfinite(sk.xy).all()
        assert (sk.xy[..., 0] >= 0).all() and (sk.xy[..., 0] <= 63).all()
        assert (sk.xy[..., 1] >= 0).all() and (sk.xy[..., 1] <= 47).all()
        assert (sk.confidence >= 0).all() and (sk.confidence <= 1).all()
        np.testing.assert_array_equal(sk.source_frames, start + linspace_indices(start, end, 16))
        assert (sk.width, sk.height) == (64, 48)
    # a repeated source frame (short dive) gets the same skeleton
    repeats = got["v/2"].source_frames
    same = np.flatnonzero(repeats[1:] == repeats[:-1])
    assert len(same) > 0
    np.testing.assert_array_equal(got["v/2"].xy[same], got["v/2"].xy[same + 1])
    meta = pose_metadata(table)
    assert meta["backend"] == "mmpose" and meta["model"]["random_init"] is True
    assert meta["model"]["keypoints"] == "coco17->mpii16" and meta["model"]["config"].endswith(RTMPOSE_T)


@pytest.mark.slow
def test_mmpose_checkpoint_loads_strictly(
    mmpose_apis: Any, make_video: Callable[..., Any], tmp_path: Path
) -> None:
    import mmpose

    video = make_video(20, name="clip.mp4", width=64, height=48)
    dives = _dives(("v", 1, "clip.mp4", 0, 19))
    config = Path(mmpose.__file__).parent / ".mim" / "configs" / RTMPOSE_T
    torch.manual_seed(123)
    model = mmpose_apis.init_model(str(config), None, device="cpu")
    state = {k: v.clone() for k, v in model.state_dict().items()}
    ckpt = tmp_path / "rtmpose-t.pth"
    torch.save({"state_dict": state, "meta": {"epoch": 420}}, ckpt)  # OpenMMLab layout, weights-only-safe
    cfg = PoseConfig(backend="mmpose", config=str(config), checkpoint=str(ckpt), device="cpu")
    decode = DecodeConfig(num_frames=16, min_source_frames=8)
    table, _ = _skeletons(dives, video.path.parent, cfg, num_frames=16, decode_cfg=decode)
    assert pose_metadata(table)["model"]["checkpoint"] == str(ckpt)
    assert pose_metadata(table)["model"]["checkpoint_sha256"] == sha256_file(ckpt)
    # the same weights run in-process on the first sampled frame give the same keypoints
    frame = decode_dive(video.path, 0, 19, DecodeConfig(num_frames=16, width=64, height=48)).frames[0].numpy()
    model.eval()
    result = mmpose_apis.inference_topdown(
        model, np.ascontiguousarray(frame[:, :, ::-1]), np.array([[0, 0, 64, 48]])
    )
    kp = result[0].pred_instances.keypoints[0]
    sc = result[0].pred_instances.keypoint_scores[0]
    xy, _ = coco_to_mpii(kp, sc)
    xy[..., 0], xy[..., 1] = np.clip(xy[..., 0], 0, 63), np.clip(xy[..., 1], 0, 47)
    np.testing.assert_allclose(_by_dive(table)["v/1"].xy[0], xy, atol=1e-4)

    # one tensor missing → strict error naming the file and the key
    missing_key = next(iter(state))
    torch.save({"state_dict": {k: v for k, v in state.items() if k != missing_key}}, ckpt)
    with pytest.raises(
        CheckpointError, match=rf"{ckpt.name} does not match \w+:\n  missing \(1\): {missing_key}"
    ):
        _skeletons(dives, video.path.parent, cfg, num_frames=16, decode_cfg=decode)


# --------------------------------------------------------------------------------------------------
# The pose stage: cached per dive (extract_pose), failures, the stage script, the DVC stage


def _synth(tmp_path: Path, num_dives: int = 3) -> tuple[Path, pa.Table]:
    out = tmp_path / "synth"
    generate_dataset(
        SynthConfig(num_dives=num_dives, width=64, height=64, min_frames=30, max_frames=40),
        out,
        progress=False,
    )
    return out, read_annotations(out / "annotations.parquet")


def _logged(caplog: pytest.LogCaptureFixture, fn: Callable[[], Any]) -> tuple[Any, str]:
    with caplog.at_level(logging.INFO, logger="hpmcore.extraction.cache"):
        caplog.clear()
        result = fn()
    return result, caplog.text


def test_extract_pose_reuses_entries_and_recomputes_only_a_changed_skeleton(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    root, dives = _synth(tmp_path)
    out = tmp_path / "pose"
    first, log = _logged(caplog, lambda: _pose(dives, root, out))
    assert "pose: computed 3, reused 0 (failed 0, removed 0 stale)" in log
    assert pose_metadata(first.manifest)["source"] == "skeletons"
    assert first.failures.num_rows == 0 and first.failures.schema.equals(FAILURE_SCHEMA)
    assert (first.stats["computed"], first.stats["reused"], first.stats["videos"]) == (3, 0, 3)
    assert first.timings["frames_per_s"] > 0
    entries = sorted(p.name for p in (out / "cache").iterdir())
    assert len(entries) == 3 and all(e.endswith(".safetensors") for e in entries)

    second, log = _logged(caplog, lambda: _pose(dives, root, out))
    assert "pose: computed 0, reused 3 (failed 0, removed 0 stale)" in log
    assert second.manifest.equals(first.manifest)

    # the rows of the skeleton file in another order: same content, nothing recomputed
    skeletons = pq.read_table(root / "skeletons.parquet")
    pq.write_table(skeletons.take(np.arange(skeletons.num_rows)[::-1]), root / "skeletons.parquet")
    _, log = _logged(caplog, lambda: _pose(dives, root, out))
    assert "pose: computed 0, reused 3" in log

    # one dive's skeleton changes: that dive is recomputed, its old entry removed
    changed_id = dives.column("id")[1].as_py()
    mine = pa.compute.equal(skeletons.column("id"), changed_id).to_numpy(zero_copy_only=False)
    x = skeletons.column("x").to_numpy() + np.where(mine, 1.5, 0.0).astype(np.float32)
    pq.write_table(
        skeletons.set_column(skeletons.schema.get_field_index("x"), "x", pa.array(x, pa.float32())),
        root / "skeletons.parquet",
    )
    third, log = _logged(caplog, lambda: _pose(dives, root, out))
    assert "pose: computed 1, reused 2 (failed 0, removed 1 stale)" in log
    before, after = dive_skeletons(first.manifest), dive_skeletons(third.manifest)
    for dive_id in dives.column("id").to_pylist():
        shift = 1.5 if dive_id == changed_id else 0.0
        np.testing.assert_array_equal(after[dive_id].xy[..., 0], before[dive_id].xy[..., 0] + shift)
        np.testing.assert_array_equal(after[dive_id].xy[..., 1], before[dive_id].xy[..., 1])
    assert len(list((out / "cache").iterdir())) == 3

    # the normalisation is recorded, not applied: no recompute; T changes every key
    normalized, log = _logged(caplog, lambda: _pose(dives, root, out, PoseConfig(normalize="frame")))
    assert "pose: computed 0, reused 3" in log and pose_metadata(normalized.manifest)["normalize"] == "frame"
    longer, log = _logged(caplog, lambda: _pose(dives, root, out, decode_cfg=DecodeConfig(num_frames=24)))
    assert "pose: computed 3, reused 0 (failed 0, removed 3 stale)" in log
    assert longer.manifest.num_rows == 3 * 24 * NUM_JOINTS


def test_extract_pose_follows_the_decode_manifest(tmp_path: Path) -> None:
    root, dives = _synth(tmp_path)
    decode_cfg = DecodeConfig(num_frames=16, on_error="skip")
    broken = dives.column("video_path")[0].as_py()
    original = (root / broken).read_bytes()
    (root / broken).write_bytes(b"")  # decode skips this dive
    decoded = decode_videos(dives, decode_cfg, root=root, out_dir=tmp_path / "decoded", progress=False)
    assert decoded.failures.num_rows == 1
    out = tmp_path / "pose"
    result = _pose(dives, root, out, decoded=decoded.manifest)
    assert result.failures.num_rows == 0  # not a pose failure: decode's, and left out downstream
    ids = dives.column("id").to_pylist()
    assert sorted(set(result.manifest.column("id").to_pylist())) == ids[1:]
    for row in decoded.manifest.to_pylist():  # the frames of the features
        np.testing.assert_array_equal(
            dive_skeletons(result.manifest)[row["id"]].source_frames, row["indices"]
        )

    # the repaired video is back, another one is re-encoded with other content: those two are computed
    (root / broken).write_bytes(original)
    edited = root / dives.column("video_path")[2].as_py()
    write_mp4(iter(synthetic_frames(probe(edited).num_frames, 64, 64)), edited, fps=25)
    decoded = decode_videos(dives, decode_cfg, root=root, out_dir=tmp_path / "decoded", progress=False)
    assert (decoded.stats["computed"], decoded.stats["reused"]) == (2, 1)
    updated = _pose(dives, root, out, decoded=decoded.manifest)
    assert (updated.stats["computed"], updated.stats["reused"], updated.stats["removed"]) == (2, 1, 1)
    assert sorted(set(updated.manifest.column("id").to_pylist())) == ids

    # pose takes decode's frame numbers as they are: a manifest with other sampled frames gives the
    # skeleton of those frames (a new key: the frame numbers are part of the input)
    rows = decoded.manifest.to_pylist()
    rows[0]["indices"][1] += 1
    other = pa.Table.from_pylist(rows, schema=decoded.manifest.schema)
    moved = _pose(dives, root, tmp_path / "pose2", decoded=other)
    assert dive_skeletons(moved.manifest)[rows[0]["id"]].source_frames.tolist() == rows[0]["indices"]

    # a manifest that does not match the dive table, or mixes T, is refused
    rows = decoded.manifest.to_pylist()
    rows[0]["start_frame"] += 1
    with pytest.raises(ManifestError, match="disagrees with the dive table"):
        _pose(dives, root, out, decoded=pa.Table.from_pylist(rows, schema=decoded.manifest.schema))
    rows = decoded.manifest.to_pylist()
    rows[0]["indices"] = rows[0]["indices"][:-1]
    with pytest.raises(ManifestError, match=r"T=\[15, 16\]"):
        _pose(dives, root, out, decoded=pa.Table.from_pylist(rows, schema=decoded.manifest.schema))


def test_extract_pose_failures_are_recorded_with_skip_and_stop_the_stage_with_fail(tmp_path: Path) -> None:
    root, good, _ = _npz_dataset(tmp_path, 3)
    _frame_folder(root, "FINADiving_MTL_256s/vid/4", 0, 50)
    np.savez(root / POSE_DIR / "vid" / "pred_comp_4.npz", pred=np.zeros((95, NUM_JOINTS, 2), np.float32))
    _frame_folder(root, "FINADiving_MTL_256s/vid/5", 0, 50)  # no pose file
    _frame_folder(root, "FINADiving_MTL_256s/vid/6", 0, 10)  # too short: decode's failure, not pose's
    np.savez(root / POSE_DIR / "vid" / "pred_comp_6.npz", pred=np.ones((96, NUM_JOINTS, 2), np.float32))
    dives = pa.concat_tables(
        [
            good,
            _dives(("vid", 4, "FINADiving_MTL_256s/vid/4", 0, 49)),
            _dives(("vid", 5, "FINADiving_MTL_256s/vid/5", 0, 49)),
            _dives(("vid", 6, "FINADiving_MTL_256s/vid/6", 0, 9)),
        ]
    )
    cfg = PoseConfig(source="finediving-npz", on_error="skip")
    decode_cfg = DecodeConfig(num_frames=96, min_source_frames=16)
    out = tmp_path / "pose"
    result = _pose(dives, root, out, cfg, decode_cfg=decode_cfg)

    assert set(result.manifest.column("id").to_pylist()) == {"vid/3"}
    assert result.failures.schema.equals(FAILURE_SCHEMA)
    failures = {f["id"]: f for f in result.failures.to_pylist()}
    assert sorted(failures) == ["vid/4", "vid/5"]
    assert {f["stage"] for f in failures.values()} == {"pose"}
    assert failures["vid/4"]["source"] == "FINADiving_MTL_256s/vid/4" and failures["vid/4"]["key"]
    assert str(root / POSE_DIR / "vid" / "pred_comp_4.npz") in failures["vid/4"]["reason"]
    assert "(95, 16, 2)" in failures["vid/4"]["reason"]
    assert failures["vid/5"]["key"] is None  # its input could not even be hashed
    assert (
        failures["vid/5"]["reason"] == f"{root / POSE_DIR / 'vid' / 'pred_comp_5.npz'}: pose file not found"
    )
    assert (result.stats["computed"], result.stats["failed"]) == (1, 2)
    assert len(list((out / "cache").iterdir())) == 1  # nothing stored for a failed dive

    # failures are not cached: a rerun tries them again and reuses the good one
    again = _pose(dives, root, out, cfg, decode_cfg=decode_cfg)
    assert (again.stats["computed"], again.stats["reused"], again.stats["failed"]) == (0, 1, 2)

    with pytest.raises(ExtractionFailed) as info:
        _pose(dives.slice(0, 2), root, out, PoseConfig(source="finediving-npz"), decode_cfg=decode_cfg)
    message = str(info.value)
    assert message.startswith("pose: FINADiving_MTL_256s/vid/4 (dive vid/4) failed: ")
    assert "pred_comp_4.npz" in message and "pose.on_error: skip" in message


def test_extract_pose_missing_skeleton_table_stops_before_writing(tmp_path: Path) -> None:
    root, dives = _synth(tmp_path, 1)
    cfg = PoseConfig(annotations_path=str(tmp_path / "nope.parquet"), on_error="skip")
    with pytest.raises(DatasetError, match=r"nope\.parquet: skeleton table not found"):
        _pose(dives, root, tmp_path / "pose", cfg)
    assert not (tmp_path / "pose").exists()


def test_pose_stage_script_writes_outputs_or_nothing(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    import yaml

    from stages.decode import main as decode_main
    from stages.pose import main as pose_main

    _synth(tmp_path)
    params = tmp_path / "params.yaml"
    settings = {"data": {"root": "synth"}, "decode": {"num_frames": 16}, "pose": {"normalize": "frame"}}
    params.write_text(yaml.safe_dump(settings))
    dives = tmp_path / "synth" / "annotations.parquet"
    decoded, out = tmp_path / "decoded", tmp_path / "pose"
    assert decode_main(["--params", str(params), "--dives", str(dives), "--out", str(decoded)]) == 0
    args = ["--params", str(params), "--dives", str(dives), "--decoded", str(decoded), "--out", str(out)]
    assert pose_main(args) == 0
    assert sorted(p.name for p in out.iterdir()) == [
        "cache",
        "failures.parquet",
        "skeletons.parquet",
        "stats.json",
        "timings.json",
    ]
    stats = json.loads((out / "stats.json").read_text())
    assert (stats["computed"], stats["reused"], stats["failed"]) == (3, 0, 0)
    table = pq.read_table(out / SKELETONS)
    assert table.num_rows == 3 * 16 * NUM_JOINTS and len(dive_skeletons(table)) == 3
    assert pose_metadata(table)["normalize"] == "frame" and pose_metadata(table)["num_frames"] == 16
    assert pq.read_table(out / "failures.parquet").num_rows == 0

    # a missing skeleton table: exit 2, nothing written
    settings["pose"]["annotations_path"] = "missing.parquet"
    params.write_text(yaml.safe_dump(settings))
    shutil.rmtree(out)
    with caplog.at_level(logging.ERROR):
        assert pose_main(args) == 2
    assert "missing.parquet: skeleton table not found" in caplog.text and not out.exists()

    # a broken annotation for one dive with on_error: fail (the default): exit 2, no table
    del settings["pose"]["annotations_path"]
    params.write_text(yaml.safe_dump(settings))
    gt = pq.read_table(tmp_path / "synth" / "skeletons.parquet")
    first = gt.column("id")[0].as_py()
    pq.write_table(
        gt.filter(pa.compute.not_equal(gt.column("id"), first)), tmp_path / "synth" / "skeletons.parquet"
    )
    caplog.clear()
    with caplog.at_level(logging.ERROR):
        assert pose_main(args) == 2
    assert f"no skeleton rows for dive {first!r}" in caplog.text and not (out / SKELETONS).exists()


def test_pose_is_a_dvc_stage_between_decode_and_training_reported_by_the_flow() -> None:
    import yaml

    from flows.pipeline import stage_order, stage_reports

    project = Path(__file__).resolve().parents[1]
    order = stage_order(project)
    assert order.index("decode") < order.index("pose")
    reports = stage_reports(project)["pose"]
    assert reports == {
        "metrics": [project / "data/pose/stats.json"],
        "failures": [project / "data/pose/failures.parquet"],
        "timings": [project / "data/pose/timings.json"],
    }
    stages = yaml.safe_load((project / "dvc.yaml").read_text())["stages"]
    pose = stages["pose"]
    deps = {"stages/pose.py", "hpmcore/extraction/pose", "${decoded_dir}/manifest.parquet"}
    assert deps <= set(pose["deps"])
    listed = set(pose["params"])
    assert {f"pose.{f.name}" for f in dataclasses.fields(PoseConfig)} <= listed
    assert {"persist": True} in [o.get("${pose_dir}/cache") for o in pose["outs"] if isinstance(o, dict)]
    assert not any("pose" in str(d) for d in stages["features"]["deps"])  # features does not need pose


@pytest.mark.slow
def test_mmpose_backend_through_the_cache(
    mmpose_apis: Any, make_video: Callable[..., Any], tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    make_video(20, name="clip.mp4", width=64, height=48)
    dives = _dives(("v", 1, "clip.mp4", 0, 19))
    cfg = PoseConfig(backend="mmpose", config=RTMPOSE_T, random_init=True, device="cpu")
    decode_cfg = DecodeConfig(num_frames=16, min_source_frames=8)
    out = tmp_path / "pose"
    first, log = _logged(caplog, lambda: _pose(dives, tmp_path, out, cfg, decode_cfg=decode_cfg))
    assert "pose: computed 1, reused 0" in log
    sk = dive_skeletons(first.manifest)["v/1"]
    assert sk.xy.shape == (16, NUM_JOINTS, 2) and np.isfinite(sk.xy).all()
    assert pose_metadata(first.manifest)["model"]["random_init"] is True
    _, log = _logged(caplog, lambda: _pose(dives, tmp_path, out, cfg, decode_cfg=decode_cfg))
    assert "pose: computed 0, reused 1" in log
    # a param of the box tracking changes the result: recomputed
    moved = dataclasses.replace(cfg, box_margin=0.5)
    _, log = _logged(caplog, lambda: _pose(dives, tmp_path, out, moved, decode_cfg=decode_cfg))
    assert "pose: computed 1, reused 0 (failed 0, removed 1 stale)" in log
