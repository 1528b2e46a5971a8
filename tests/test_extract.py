"""The per-video extraction cache and the decode stage: reuse counts, stale entries, failures, DVC."""

from __future__ import annotations

import json
import logging
import os
import shutil
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pyarrow.parquet as pq
import pytest
import torch
import yaml
from conftest import SyntheticVideo, synthetic_frames
from pipeline_project import PROJECT, TINY_EVAL, TINY_TRAIN, copy_pipeline, repro, run_ok, set_params

from hpmcore.config import DecodeConfig
from hpmcore.data.canonical import annotation_table
from hpmcore.extraction.cache import (
    CACHE_DIR,
    FAILURE_SCHEMA,
    Entry,
    ExtractionFailed,
    Failure,
    Item,
    ItemError,
    digest,
    failures_table,
    load_entry,
    read_entry_meta,
    run_cached,
    save_entry,
    source_hash,
)
from hpmcore.extraction.decode import DECODE_MANIFEST_SCHEMA, decode_videos, load_decoded
from hpmcore.extraction.executor import ComputeTask
from hpmcore.extraction.video import decode_dive

SMALL = DecodeConfig(num_frames=16, width=32, height=32, min_source_frames=8)
MAKE = Callable[..., SyntheticVideo]


def _dives(rows: list[tuple[str, str, int, int]]) -> Any:
    """A canonical dive table from ``(id, video_path, start_frame, end_frame)`` rows."""
    full = []
    for i, (dive_id, path, start, end) in enumerate(rows):
        name, index = dive_id.split("/")
        full.append(
            {
                "id": dive_id,
                "video_name": name,
                "dive_index": int(index),
                "video_path": path,
                "start_frame": start,
                "end_frame": end,
                "num_frames": end - start + 1,
                "dive_number": "107b",
                "difficulty": 3.0,
                "judge_scores": [],
                "final_score": 50.0 + i,
                "transitions": [],
                "frame_labels": [],
                "split": "train",
            }
        )
    return annotation_table(full)


def _cache_files(out: Path) -> list[str]:
    return sorted(p.name for p in (out / CACHE_DIR).iterdir())


@pytest.fixture
def three_videos(make_video: MAKE) -> list[SyntheticVideo]:
    return [make_video(30, name=f"v{i}.mp4", first=40 * i) for i in range(3)]


def _three_dives(videos: list[SyntheticVideo]) -> Any:
    return _dives([(f"v/{i}", v.path.name, 0, 29) for i, v in enumerate(videos)])


# --------------------------------------------------------------------------------------------------
# Decode through the cache.


def test_decoded_frames_are_decode_dive_output_and_the_manifest_describes_them(
    three_videos: list[SyntheticVideo], tmp_path: Path
) -> None:
    out = tmp_path / "decoded"
    result = decode_videos(_three_dives(three_videos), SMALL, root=tmp_path, out_dir=out, progress=False)
    assert result.manifest.schema.remove_metadata().equals(DECODE_MANIFEST_SCHEMA)
    rows = result.manifest.to_pylist()
    assert [r["id"] for r in rows] == ["v/0", "v/1", "v/2"]
    for video, row in zip(three_videos, rows, strict=True):
        frames = load_decoded(out, row)
        expected = decode_dive(video.path, 0, 29, SMALL)
        assert frames.dtype == torch.uint8 and tuple(frames.shape) == (16, 32, 32, 3)
        assert torch.equal(frames, expected.frames)
        # the pixels are the frames written: background colour identifies the sampled frame numbers
        assert video.identify(frames.numpy()).tolist() == expected.indices.tolist() == row["indices"]
        assert row["source_path"] == video.path.name
        assert row["source_hash"] == source_hash(video.path)
        assert (row["source_num_frames"], row["fps"], row["num_frames"]) == (30, 25.0, 16)
        assert (row["height"], row["width"]) == (32, 32)
        assert row["path"] == f"cache/{row['key']}.safetensors.zst"
    assert result.failures.num_rows == 0 and result.failures.schema.equals(FAILURE_SCHEMA)
    assert result.stats["computed"] == 3 and result.stats["reused"] == 0 and result.stats["videos"] == 3
    assert result.stats == {"videos": 3, "computed": 3, "reused": 0, "failed": 0, "removed": 0}
    assert result.timings["frames_per_s"] > 0 and result.timings["seconds"] > 0
    meta = json.loads(result.manifest.schema.metadata[b"hpmcore.decode"])
    assert meta["params"] == {"num_frames": 16, "width": 32, "height": 32, "min_source_frames": 8}


def test_rerun_touch_modify_add_and_remove_recompute_only_what_changed(
    three_videos: list[SyntheticVideo],
    make_video: MAKE,
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
) -> None:
    out = tmp_path / "decoded"
    dives = _three_dives(three_videos)

    def run(table: Any = dives, cfg: DecodeConfig = SMALL) -> Any:
        with caplog.at_level(logging.INFO, logger="hpmcore.extraction.cache"):
            caplog.clear()
            result = decode_videos(table, cfg, root=tmp_path, out_dir=out, progress=False)
        return result, caplog.text

    first, _ = run()
    keys = first.manifest.column("key").to_pylist()

    second, log = run()
    assert "decode: computed 0, reused 3 (failed 0, removed 0 stale)" in log
    assert second.manifest.equals(first.manifest)

    # touching a video (same bytes, new mtime) changes nothing: the key is a content hash
    os.utime(three_videos[1].path, (1_000_000_000, 1_000_000_000))
    _, log = run()
    assert "computed 0, reused 3" in log

    # re-encoding one video with other content recomputes that one only, and drops its old entry
    make_video(30, name="v1.mp4", first=200)
    changed, log = run()
    assert "decode: computed 1, reused 2 (failed 0, removed 1 stale)" in log
    new_keys = changed.manifest.column("key").to_pylist()
    assert new_keys[0] == keys[0] and new_keys[2] == keys[2] and new_keys[1] != keys[1]
    assert _cache_files(out) == sorted(f"{k}.safetensors.zst" for k in new_keys)
    assert three_videos[1].identify(load_decoded(out, changed.manifest.to_pylist()[1]).numpy())[0] != 0

    # a new dive is the only one computed (a second dive of an existing video: a new frame range)
    more = make_video(30, name="v3.mp4", first=300)
    bigger = _dives(
        [(f"v/{i}", v.path.name, 0, 29) for i, v in enumerate(three_videos)]
        + [("v/3", more.path.name, 0, 29), ("v/4", "v0.mp4", 5, 25)]
    )
    added, log = run(bigger)
    assert "decode: computed 2, reused 3 (failed 0, removed 0 stale)" in log
    assert added.manifest.column("id").to_pylist() == ["v/0", "v/1", "v/2", "v/3", "v/4"]

    # a removed dive's entry is stale and deleted
    _, log = run(bigger.slice(1))
    assert "computed 0, reused 4 (failed 0, removed 1 stale)" in log
    assert len(_cache_files(out)) == 4

    # a decode param changes every key: all recomputed, all old entries deleted
    _, log = run(bigger.slice(1), DecodeConfig(num_frames=16, width=16, height=16, min_source_frames=8))
    assert "computed 4, reused 0 (failed 0, removed 4 stale)" in log
    assert len(_cache_files(out)) == 4


def test_dives_sharing_an_input_share_one_entry(three_videos: list[SyntheticVideo], tmp_path: Path) -> None:
    v = three_videos[0].path.name
    dives = _dives([("a/1", v, 0, 29), ("b/1", v, 0, 29), ("c/1", v, 2, 29)])
    result = decode_videos(dives, SMALL, root=tmp_path, out_dir=tmp_path / "d", progress=False)
    assert (result.stats["computed"], result.stats["reused"]) == (2, 1)
    keys = result.manifest.column("key").to_pylist()
    assert keys[0] == keys[1] != keys[2]
    assert len(_cache_files(tmp_path / "d")) == 2


def test_frame_folders_go_through_the_cache_like_videos(
    make_frame_folder: Callable[..., Path], make_video: MAKE, tmp_path: Path
) -> None:
    video = make_video(30, name="clip.mp4", width=32, height=32)
    make_frame_folder(video.frames, "folder", first_number=100)  # FineDiving: frames named by number
    dives = _dives([("f/1", "folder", 100, 129), ("m/1", "clip.mp4", 0, 29)])
    out = tmp_path / "decoded"
    result = decode_videos(dives, SMALL, root=tmp_path, out_dir=out, progress=False)
    folder_row, mp4_row = result.manifest.to_pylist()
    assert folder_row["fps"] is None and folder_row["source_num_frames"] == 30
    assert folder_row["indices"] == [100 + i for i in mp4_row["indices"]]
    folder_frames, mp4_frames = load_decoded(out, folder_row), load_decoded(out, mp4_row)
    assert torch.equal(folder_frames, decode_dive(tmp_path / "folder", 100, 129, SMALL).frames)
    assert (folder_frames.float() - mp4_frames.float()).abs().mean() < 5  # same content (JPEG vs H.264)

    (tmp_path / "folder" / "00107.jpg").write_bytes((tmp_path / "folder" / "00108.jpg").read_bytes())
    again = decode_videos(dives, SMALL, root=tmp_path, out_dir=out, progress=False)
    assert (again.stats["computed"], again.stats["reused"], again.stats["removed"]) == (1, 1, 1)


def test_unreadable_entry_is_recomputed_and_temp_leftovers_are_removed(
    three_videos: list[SyntheticVideo], tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    out = tmp_path / "decoded"
    dives = _three_dives(three_videos)
    first = decode_videos(dives, SMALL, root=tmp_path, out_dir=out, progress=False)
    row = first.manifest.to_pylist()[2]
    entry = out / row["path"]
    entry.write_bytes(entry.read_bytes()[:7])  # corrupted on disk
    (out / CACHE_DIR / f".{row['key']}.safetensors.zst.abc.tmp").write_bytes(b"half")  # killed write
    (out / CACHE_DIR / "README").write_text("not an entry: left alone")
    with caplog.at_level(logging.WARNING):
        again = decode_videos(dives, SMALL, root=tmp_path, out_dir=out, progress=False)
    assert "unreadable cache entry" in caplog.text and "recomputing" in caplog.text
    assert (again.stats["computed"], again.stats["reused"], again.stats["removed"]) == (1, 2, 1)
    assert torch.equal(load_decoded(out, row), decode_dive(three_videos[2].path, 0, 29, SMALL).frames)
    entries = [Path(r["path"]).name for r in again.manifest.to_pylist()]
    assert _cache_files(out) == sorted(["README", *entries])


# --------------------------------------------------------------------------------------------------
# Failures: recorded (skip) or fatal (fail), never a zero tensor.


def _zero_byte(d: Path, make_video: MAKE, make_folder: Callable[..., Path]) -> tuple[str, int, int]:
    (d / "zero.mp4").write_bytes(b"")
    return "zero.mp4", 0, 20


def _truncated(d: Path, make_video: MAKE, make_folder: Callable[..., Path]) -> tuple[str, int, int]:
    data = make_video(30, name="full.mp4").path.read_bytes()
    (d / "half.mp4").write_bytes(data[: len(data) // 2])
    return "half.mp4", 0, 20


def _text(d: Path, make_video: MAKE, make_folder: Callable[..., Path]) -> tuple[str, int, int]:
    (d / "text.mp4").write_bytes(b"not a video\n" * 50)
    return "text.mp4", 0, 20


def _five_frames(d: Path, make_video: MAKE, make_folder: Callable[..., Path]) -> tuple[str, int, int]:
    make_video(5, name="five.mp4")
    return "five.mp4", 0, 4


def _folder_gap(d: Path, make_video: MAKE, make_folder: Callable[..., Path]) -> tuple[str, int, int]:
    folder = make_folder(synthetic_frames(30, 32, 32), "gap")
    (folder / "00012.jpg").unlink()
    return "gap", 0, 29


def _missing(d: Path, make_video: MAKE, make_folder: Callable[..., Path]) -> tuple[str, int, int]:
    return "missing.mp4", 0, 20


BAD_INPUTS = {
    "zero-byte mp4": (_zero_byte, "empty file (0 bytes)"),
    "truncated mp4": (_truncated, "cannot open as a video"),
    "text file renamed .mp4": (_text, "cannot open as a video"),
    "5-frame video": (_five_frames, "too short: the video has 5 frames"),
    "frame folder with a missing frame": (_folder_gap, "no file for frame(s) 12"),
    "missing file": (_missing, "file not found"),
}


@pytest.mark.parametrize("case", list(BAD_INPUTS))
def test_bad_video_is_recorded_with_skip_and_excluded(
    case: str,
    three_videos: list[SyntheticVideo],
    make_video: MAKE,
    make_frame_folder: Callable[..., Path],
    tmp_path: Path,
) -> None:
    build, reason = BAD_INPUTS[case]
    bad_path, start, end = build(tmp_path, make_video, make_frame_folder)
    good = [(f"v/{i}", v.path.name, 0, 29) for i, v in enumerate(three_videos)]
    dives = _dives([good[0], ("bad/1", bad_path, start, end), *good[1:]])
    out = tmp_path / "decoded"
    cfg = DecodeConfig(num_frames=16, width=32, height=32, min_source_frames=8, on_error="skip")
    result = decode_videos(dives, cfg, root=tmp_path, out_dir=out, progress=False)

    (failure,) = result.failures.to_pylist()
    assert failure["stage"] == "decode" and failure["id"] == "bad/1" and failure["source"] == bad_path
    assert reason in failure["reason"] and str(tmp_path / bad_path) in failure["reason"]
    assert (failure["key"] is None) == (case == "missing file")
    assert result.manifest.column("id").to_pylist() == ["v/0", "v/1", "v/2"]
    assert (result.stats["computed"], result.stats["failed"]) == (3, 1)
    assert len(_cache_files(out)) == 3  # nothing stored for the bad one
    for row in result.manifest.to_pylist():  # and the good ones are real frames, not zeros
        assert load_decoded(out, row).float().mean() > 10

    # a rerun tries the failed one again (failures are not cached) and reuses the rest
    again = decode_videos(dives, cfg, root=tmp_path, out_dir=out, progress=False)
    assert (again.stats["computed"], again.stats["reused"], again.stats["failed"]) == (0, 3, 1)


@pytest.mark.parametrize("case", list(BAD_INPUTS))
def test_bad_video_fails_the_stage_naming_the_file_with_fail(
    case: str,
    three_videos: list[SyntheticVideo],
    make_video: MAKE,
    make_frame_folder: Callable[..., Path],
    tmp_path: Path,
) -> None:
    build, reason = BAD_INPUTS[case]
    bad_path, start, end = build(tmp_path, make_video, make_frame_folder)
    dives = _dives([("v/0", three_videos[0].path.name, 0, 29), ("bad/1", bad_path, start, end)])
    with pytest.raises(ExtractionFailed) as info:
        decode_videos(dives, SMALL, root=tmp_path, out_dir=tmp_path / "decoded", progress=False)
    message = str(info.value)
    assert message.startswith(f"decode: {bad_path} (dive bad/1) failed: ")
    assert reason in message and str(tmp_path / bad_path) in message
    assert "decode.on_error: skip" in message


def test_decode_stage_script_writes_outputs_or_fails_without_a_manifest(
    three_videos: list[SyntheticVideo], tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    from stages.decode import main

    params = tmp_path / "params.yaml"
    params.write_text(
        yaml.safe_dump(
            {
                "data": {"root": "."},
                "decode": {"num_frames": 16, "width": 32, "height": 32, "min_source_frames": 8},
            }
        )
    )
    dives = tmp_path / "dives.parquet"
    pq.write_table(_three_dives(three_videos), dives)
    out = tmp_path / "decoded"
    assert main(["--params", str(params), "--dives", str(dives), "--out", str(out)]) == 0
    assert sorted(p.name for p in out.iterdir()) == [
        "cache",
        "failures.parquet",
        "manifest.parquet",
        "stats.json",
        "timings.json",
    ]
    stats = json.loads((out / "stats.json").read_text())
    assert stats == {"videos": 3, "computed": 3, "reused": 0, "failed": 0, "removed": 0}  # no timings
    assert json.loads((out / "timings.json").read_text())["videos_per_s"] > 0
    assert (stats["computed"], stats["reused"], stats["failed"]) == (3, 0, 0)
    assert pq.read_table(out / "manifest.parquet").num_rows == 3

    (tmp_path / "v2.mp4").write_bytes(b"")  # now one video is broken, on_error: fail (default)
    shutil.rmtree(out)
    with caplog.at_level(logging.ERROR):
        assert main(["--params", str(params), "--dives", str(dives), "--out", str(out)]) == 2
    assert "v2.mp4" in caplog.text and "empty file" in caplog.text
    assert not (out / "manifest.parquet").exists() and not (out / "stats.json").exists()


# --------------------------------------------------------------------------------------------------
# Inputs that would escape the dataset root or never end (issue 8).


def test_video_paths_leaving_the_root_are_refused_unless_allowed(
    make_video: MAKE, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    root, outside = tmp_path / "root", tmp_path / "outside"
    root.mkdir(), outside.mkdir()
    make_video(30, name="root/in.mp4")
    make_video(30, name="outside/out.mp4", first=50)
    (root / "link.mp4").symlink_to(outside / "out.mp4")  # a symlink out of the root
    (root / "alias.mp4").symlink_to(root / "in.mp4")  # a symlink that stays inside: fine
    rows = [
        ("in/1", "in.mp4", 0, 29),
        ("abs/1", str(outside / "out.mp4"), 0, 29),
        ("up/1", "../outside/out.mp4", 0, 29),
        ("link/1", "link.mp4", 0, 29),
        ("alias/1", "alias.mp4", 0, 29),
    ]
    cfg = DecodeConfig(num_frames=16, width=32, height=32, min_source_frames=8, on_error="skip")
    result = decode_videos(_dives(rows), cfg, root=root, out_dir=tmp_path / "d1", progress=False)
    assert result.manifest.column("id").to_pylist() == ["in/1", "alias/1"]
    failures = {f["id"]: f for f in result.failures.to_pylist()}
    assert sorted(failures) == ["abs/1", "link/1", "up/1"]
    assert all(f["key"] is None and "outside data.root" in f["reason"] for f in failures.values())
    assert failures["abs/1"]["reason"].startswith(f"{outside / 'out.mp4'}: absolute video_path")
    assert failures["up/1"]["reason"].startswith(f"{root / '../outside/out.mp4'}: resolves to {outside}")
    assert failures["link/1"]["reason"].startswith(f"{root / 'link.mp4'}: resolves to {outside}")
    assert "decode.allow_outside_root: true" in failures["link/1"]["reason"]

    allowed = decode_videos(
        _dives(rows),
        DecodeConfig(num_frames=16, width=32, height=32, min_source_frames=8, allow_outside_root=True),
        root=root,
        out_dir=tmp_path / "d2",
        progress=False,
    )
    assert allowed.manifest.num_rows == 5 and allowed.failures.num_rows == 0

    # the stage script with on_error: fail: exit 2 naming the path, no manifest
    from stages.decode import main

    params = tmp_path / "params.yaml"
    params.write_text(yaml.safe_dump({"data": {"root": "root"}, "decode": {"num_frames": 16}}))
    pq.write_table(_dives(rows[:3]), tmp_path / "dives.parquet")
    out = tmp_path / "decoded"
    with caplog.at_level(logging.ERROR):
        assert (
            main(["--params", str(params), "--dives", str(tmp_path / "dives.parquet"), "--out", str(out)])
            == 2
        )
    assert f"{outside / 'out.mp4'}: absolute video_path, outside data.root" in caplog.text
    assert not (out / "manifest.parquet").exists()


@pytest.mark.skipif(
    not Path("/dev/zero").exists() or not hasattr(os, "mkfifo"), reason="needs /dev/zero, mkfifo"
)
def test_devices_and_fifos_are_refused_before_they_are_opened(
    three_videos: list[SyntheticVideo], tmp_path: Path
) -> None:
    """/dev/zero as a video hung the decode stage forever (hashing an endless file), a FIFO blocks on
    open: both are refused by their file type, even with allow_outside_root. The stage runs in a
    subprocess with a timeout, so a regression fails instead of hanging the suite."""
    from pipeline_project import project_env

    os.mkfifo(tmp_path / "fifo.mp4")
    folder = tmp_path / "frames"
    folder.mkdir()
    os.mkfifo(folder / "00000.jpg")  # a frame of a frame folder
    rows = [
        ("v/0", three_videos[0].path.name, 0, 29),
        ("zero/1", "/dev/zero", 0, 29),
        ("fifo/1", "fifo.mp4", 0, 29),
        ("folder/1", "frames", 0, 0),
    ]
    pq.write_table(_dives(rows), tmp_path / "dives.parquet")
    params = tmp_path / "params.yaml"

    def stage(on_error: str) -> subprocess.CompletedProcess[str]:
        decode = {"num_frames": 16, "width": 32, "height": 32, "min_source_frames": 8}
        decode.update(on_error=on_error, allow_outside_root=True)
        params.write_text(yaml.safe_dump({"data": {"root": "."}, "decode": decode}))
        cmd = [sys.executable, str(PROJECT / "stages/decode.py"), "--params", str(params)]
        cmd += ["--dives", str(tmp_path / "dives.parquet"), "--out", str(tmp_path / f"out-{on_error}")]
        env = project_env(tmp_path)
        return subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300, check=False)

    skipped = stage("skip")
    assert skipped.returncode == 0, skipped.stderr
    failures = {
        f["id"]: f["reason"] for f in pq.read_table(tmp_path / "out-skip/failures.parquet").to_pylist()
    }
    assert failures == {
        "zero/1": "/dev/zero: not a regular file but a character device",
        "fifo/1": f"{tmp_path / 'fifo.mp4'}: not a regular file but a FIFO",
        "folder/1": f"{folder / '00000.jpg'}: not a regular file but a FIFO",
    }
    assert pq.read_table(tmp_path / "out-skip/manifest.parquet").column("id").to_pylist() == ["v/0"]

    failed = stage("fail")
    assert failed.returncode == 2
    assert "decode: /dev/zero (dive zero/1) failed: /dev/zero: not a regular file" in failed.stderr
    assert not (tmp_path / "out-fail/manifest.parquet").exists()


# --------------------------------------------------------------------------------------------------
# The engine itself.


def test_run_cached_batches_entries_and_reports_item_errors(tmp_path: Path) -> None:
    calls: list[list[str]] = []

    def compute(batch: list[Item]) -> list[Entry | ItemError]:
        calls.append([i.id for i in batch])
        return [
            ItemError(f"{i.source}: odd") if i.payload % 2 else Entry({"x": torch.full((2,), i.payload)}, {})
            for i in batch
        ]

    items = [Item(f"d/{n}", f"s{n}", digest(n), n) for n in range(5)]
    run = run_cached(
        items,
        tmp_path,
        ComputeTask(lambda: compute),
        stage="t",
        on_error="skip",
        batch_size=2,
        progress=False,
    )
    assert calls == [["d/0", "d/1"], ["d/2", "d/3"], ["d/4"]]
    assert [i.id for i in run.ok] == ["d/0", "d/2", "d/4"]
    assert [(f.id, f.reason) for f in run.failures] == [("d/1", "s1: odd"), ("d/3", "s3: odd")]
    entry = load_entry(tmp_path / f"{digest(4)}.safetensors")
    assert entry.tensors["x"].tolist() == [4, 4] and entry.meta == {"key": digest(4)}
    assert read_entry_meta(tmp_path / f"{digest(4)}.safetensors") == {"key": digest(4)}

    calls.clear()
    run = run_cached(
        items,
        tmp_path,
        ComputeTask(lambda: compute),
        stage="t",
        on_error="skip",
        batch_size=2,
        progress=False,
    )
    assert calls == [["d/1", "d/3"]] and len(run.reused) == 3 and not run.computed


def test_entries_round_trip_and_a_truncated_uncompressed_entry_is_detected(tmp_path: Path) -> None:
    entry = Entry({"a": torch.arange(6, dtype=torch.uint8).view(2, 3), "b": torch.ones(4)}, {"k": "v"})
    for name in ("e.safetensors", "e.safetensors.zst"):
        save_entry(entry, tmp_path / name)
        back = load_entry(tmp_path / name)
        assert torch.equal(back.tensors["a"], entry.tensors["a"]) and back.meta == {"k": "v"}
        assert read_entry_meta(tmp_path / name) == {"k": "v"}
    data = (tmp_path / "e.safetensors").read_bytes()
    (tmp_path / "e.safetensors").write_bytes(data[:-3])
    with pytest.raises(ValueError, match=r"e\.safetensors: unreadable cache entry"):
        read_entry_meta(tmp_path / "e.safetensors")
    with pytest.raises(ValueError, match="unreadable cache entry"):
        load_entry(tmp_path / "e.safetensors")


def test_frame_folder_hash_covers_names_and_bytes_of_frames_only(
    make_frame_folder: Callable[..., Path],
) -> None:
    folder = make_frame_folder(synthetic_frames(6, 16, 16), "f")
    h = source_hash(folder)
    (folder / "notes.txt").write_text("ignored")
    assert source_hash(folder) == h
    (folder / "00003.jpg").rename(folder / "00009.jpg")
    assert source_hash(folder) != h
    with pytest.raises(ItemError, match="file not found"):
        source_hash(folder / "nope.mp4")


# --------------------------------------------------------------------------------------------------
# DVC: synth → prepare → decode → features, incremental.

TINY = {
    "synth": {"seed": 5, "num_dives": 6, "width": 64, "height": 64, "min_frames": 30, "max_frames": 40},
    "decode": {"num_frames": 32, "width": 32, "height": 32},
    "features": {"batch_size": 4},
    "train": TINY_TRAIN,
    "eval": TINY_EVAL,
}


@pytest.mark.slow
def test_dvc_repro_extracts_incrementally(tmp_path: Path) -> None:
    from hpmcore.data.render import write_mp4
    from hpmcore.extraction.video import probe

    project = copy_pipeline(tmp_path / "project", **TINY)

    ran, out = repro(project)
    assert {"synth", "prepare", "decode", "features"} <= ran
    assert "decode: computed 6, reused 0" in out and "features: computed 6, reused 0" in out
    features = pq.read_table(project / "data/features/manifest.parquet")
    assert features.num_rows == 6
    assert set(features.column("i3d_weights_sha256").to_pylist()) == {"random-init"}

    ran, out = repro(project)
    assert ran == set() and "Data and pipelines are up to date" in out

    # Editing a video inside data/synth edits an output of the synth stage, not a source: DVC sees
    # synth's output modified and, as synth's deps and params are unchanged, restores the output from
    # its cache (run-cache); the edit is undone and nothing downstream runs.
    video = project / "data/synth/videos" / sorted(os.listdir(project / "data/synth/videos"))[0]
    original = video.read_bytes()
    n = probe(video).num_frames
    write_mp4(iter(synthetic_frames(n, 64, 64)), video, fps=25)
    assert video.read_bytes() != original
    ran, out = repro(project)
    assert ran == set() and "Stage 'synth' is cached - skipping run, checking out outputs" in out, out
    assert video.read_bytes() == original

    # One more dive: the others are byte-identical (a dive does not depend on num_dives), so only
    # the new one is decoded and encoded.
    set_params(project, synth={"num_dives": 7})
    ran, out = repro(project)
    assert {"synth", "prepare", "decode", "features"} <= ran
    assert "decode: computed 1, reused 6 (failed 0, removed 0 stale)" in out
    assert "features: computed 1, reused 6 (failed 0, removed 0 stale)" in out

    # A dataset that is a source, not a DVC output (e.g. a FineDiving copy): the same videos under
    # another root reuse every entry (content-addressed) ...
    shutil.copytree(project / "data/synth", project / "raw")
    set_params(project, data={"root": "raw"})
    ran, out = repro(project)
    assert "decode: computed 0, reused 7 (failed 0, removed 0 stale)" in out
    assert "features" not in ran  # identical decode outputs: DVC skips features

    # ... and re-encoding one source video reruns decode and features for that video only.
    source = project / "raw/videos" / video.name
    write_mp4(iter(synthetic_frames(n, 64, 64)), source, fps=25)
    ran, out = repro(project)
    assert {"decode", "features"} <= ran
    assert "decode: computed 1, reused 6 (failed 0, removed 1 stale)" in out
    assert "features: computed 1, reused 6 (failed 0, removed 1 stale)" in out
    assert len(os.listdir(project / "data/decoded/cache")) == 7
    stats = json.loads((project / "data/features/stats.json").read_text())
    assert (stats["computed"], stats["reused"], stats["failed"]) == (1, 6, 0)
    ran, out = repro(project)
    assert ran == set(), out
    metrics = run_ok([sys.executable, "-m", "dvc", "metrics", "show", "--json"], project)
    assert '"computed": 1' in metrics


def test_flow_logs_stage_counts_throughput_and_failures_to_mlflow(tmp_path: Path) -> None:
    from flows.pipeline import log_stage_reports, stage_reports
    from hpmcore.tracking import mlflow as tracking

    reports = stage_reports(PROJECT)  # read from dvc.yaml: no repro needed
    assert reports["decode"]["metrics"] == [PROJECT / "data/decoded/stats.json"]
    assert reports["decode"]["failures"] == [PROJECT / "data/decoded/failures.parquet"]
    assert reports["decode"]["timings"] == [PROJECT / "data/decoded/timings.json"]
    assert reports["features"]["failures"] == [PROJECT / "data/features/failures.parquet"]

    stats = tmp_path / "stats.json"
    stats.write_text(json.dumps({"videos": 4, "computed": 1, "reused": 2, "failed": 1}))
    timings = tmp_path / "timings.json"
    timings.write_text(json.dumps({"seconds": 2.0, "videos_per_s": 3.5}))
    failures = tmp_path / "failures.parquet"
    pq.write_table(
        failures_table([Failure("decode", "v/9", "v9.mp4", None, "v9.mp4: empty file (0 bytes)")]), failures
    )
    state = tmp_path / "state"
    with tracking.start_run(state, "t", run_name="r") as run:
        logged = log_stage_reports(
            "decode", {"metrics": [stats], "failures": [failures], "timings": [timings]}
        )
    assert logged["decode.failed"] == 1 and logged["decode.videos_per_s"] == 3.5
    finished = tracking.client(state).get_run(run.info.run_id)
    assert finished.data.metrics["decode.computed"] == 1 and finished.data.metrics["decode.reused"] == 2
    rows = json.loads(tracking.read_artifact_text(state, run.info.run_id, "failures/decode.json"))
    assert rows == [
        {
            "stage": "decode",
            "id": "v/9",
            "source": "v9.mp4",
            "key": None,
            "reason": "v9.mp4: empty file (0 bytes)",
        }
    ]


def test_entry_bytes_depend_only_on_content(tmp_path: Path) -> None:
    """safetensors writes its header from hash maps (key order varies between processes); entries are
    DVC outputs, so the same content must give the same bytes, in this process and in another."""
    import sys

    code = (
        "import sys, torch; from pathlib import Path\n"
        "from hpmcore.extraction.cache import Entry, save_entry\n"
        "meta = {f'key{i}': str(i) for i in range(12)}\n"
        "tensors = {n: torch.arange(6, dtype=torch.float32) * i for i, n in enumerate('abcdef')}\n"
        "save_entry(Entry(tensors, meta), Path(sys.argv[1]))\n"
    )
    paths = [tmp_path / f"e{i}.safetensors" for i in range(4)]
    for path in paths:
        subprocess.run([sys.executable, "-c", code, str(path)], check=True)
    contents = {path.read_bytes() for path in paths}
    assert len(contents) == 1
    entry = load_entry(paths[0])
    assert entry.meta == {f"key{i}": str(i) for i in range(12)}
    assert torch.equal(entry.tensors["c"], torch.arange(6, dtype=torch.float32) * 2)
