"""Dive decoding (``hpmcore.extraction.video``): real decord decodes of PyAV-written mp4s and JPEG folders.

The synthetic videos (``tests/conftest.py``) give every frame a distinct flat colour, so
``SyntheticVideo.identify`` tells which source frame a decoded frame is: a wrong index fails exactly.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import av
import decord
import numpy as np
import pytest
import torch
from PIL import Image

from hpmcore.config import DecodeConfig
from hpmcore.extraction.video import DecodedDive, VideoError, VideoInfo, decode_dive, probe, sample_indices

if TYPE_CHECKING:
    from conftest import SyntheticVideo

MAKE = Callable[..., Any]
"""``make_video`` fixture: returns a ``SyntheticVideo``."""
SMALL = DecodeConfig(num_frames=16, width=32, height=32, min_source_frames=8)
SAME_CONTENT_MAE = 5.0
"""Mean abs error (grey levels) allowed between two decodes of the same content (H.264/JPEG loss,
decoder scaler vs PIL bilinear); measured ~2.4. Neighbouring frames differ by ~12, other videos by ~64."""


def _mae(a: np.ndarray | torch.Tensor, b: np.ndarray | torch.Tensor) -> float:
    return float(np.abs(np.asarray(a, dtype=np.float64) - np.asarray(b, dtype=np.float64)).mean())


def _spec_indices(s: int, e: int, num: int = 96) -> list[int]:
    """Spec §1.1, written out literally."""
    return [int(np.linspace(s, e, num)[i]) - s for i in range(num)]


# --------------------------------------------------------------------------------------------------
# Sampling (spec §1.1).


@pytest.mark.parametrize(
    ("s", "n"), [(0, 85), (7377, 85), (0, 273), (16160, 273), (3095, 101), (0, 63), (5, 96)]
)
def test_sample_indices_match_spec(s: int, n: int) -> None:
    e = s + n - 1
    idx = sample_indices(s, e, 96)
    assert idx.shape == (96,)
    assert idx.tolist() == _spec_indices(s, e)
    assert idx[0] == 0 and idx[-1] == n - 1
    assert (np.diff(idx) >= 0).all()
    # short dives repeat frames and use every one; long dives skip frames and repeat none
    assert len(np.unique(idx)) == min(n, 96)


def test_sample_indices_known_values() -> None:
    # FineDiving ('01', 1): frames 7377..7461 (85 frames), hand-checked against np.linspace
    idx = sample_indices(7377, 7461, 96)
    assert idx[:12].tolist() == [0, 0, 1, 2, 3, 4, 5, 6, 7, 7, 8, 9]
    assert idx[-4:].tolist() == [81, 82, 83, 84]
    assert sample_indices(0, 272, 96)[:5].tolist() == [0, 2, 5, 8, 11]


# --------------------------------------------------------------------------------------------------
# mp4 decoding.


def test_decode_mp4_returns_the_sampled_frames(synthetic_mp4: SyntheticVideo) -> None:
    dive = decode_dive(synthetic_mp4.path, 0, 29, SMALL)
    assert isinstance(dive, DecodedDive)
    assert dive.frames.dtype == torch.uint8 and dive.frames.shape == (16, 32, 32, 3)
    assert dive.indices.tolist() == _spec_indices(0, 29, 16)
    assert dive.source_num_frames == 30 and dive.fps == pytest.approx(25.0)
    frames = dive.frames.numpy()
    assert synthetic_mp4.identify(frames).tolist() == dive.indices.tolist()
    assert _mae(frames, synthetic_mp4.resized(dive.indices, 32, 32)) < SAME_CONTENT_MAE
    # the check has teeth: the neighbouring frames are far off
    assert (
        _mae(frames, synthetic_mp4.resized(np.minimum(dive.indices + 1, 29), 32, 32)) > 2 * SAME_CONTENT_MAE
    )


@pytest.mark.parametrize(("total", "start", "end"), [(120, 30, 114), (273, 0, 272), (60, 59 - 20, 59)])
def test_decode_cuts_the_range_out_of_a_longer_video(
    make_video: MAKE, total: int, start: int, end: int
) -> None:
    video = make_video(total, width=32, height=32)
    cfg = DecodeConfig(num_frames=96, width=32, height=32, min_source_frames=16)
    dive = decode_dive(video.path, start, end, cfg)
    expected = [start + i for i in _spec_indices(start, end)]
    assert dive.indices.tolist() == expected
    assert video.identify(dive.frames.numpy()).tolist() == expected  # n=85: repeats; n=273: skips
    assert dive.source_num_frames == total
    assert _mae(dive.frames, video.resized(dive.indices, 32, 32)) < SAME_CONTENT_MAE


@pytest.mark.parametrize(
    ("width", "height"),
    [
        (32, 32),
        (112, 200),  # upscaling, spec §1.2 size
        (48, 32),  # decord pads rows at widths 16, 24, 48, 72 (returns (H, W, 4) or (H, W, 6))
        (16, 16),
        (72, 40),
    ],
)
def test_decoded_size_follows_cfg(
    synthetic_mp4: SyntheticVideo, make_frame_folder: Callable[..., Path], width: int, height: int
) -> None:
    cfg = DecodeConfig(num_frames=16, width=width, height=height, min_source_frames=8)
    folder = make_frame_folder(synthetic_mp4.frames)
    for path in (synthetic_mp4.path, folder):
        dive = decode_dive(path, 2, 27, cfg)
        assert dive.frames.shape == (16, height, width, 3) and dive.frames.dtype == torch.uint8
        assert dive.frames.is_contiguous()
        assert synthetic_mp4.identify(dive.frames.numpy()).tolist() == dive.indices.tolist()
        assert _mae(dive.frames, synthetic_mp4.resized(dive.indices, width, height)) < SAME_CONTENT_MAE


def test_torch_bridge_elsewhere_does_not_break_decoding(synthetic_mp4: SyntheticVideo) -> None:
    decord.bridge.set_bridge("torch")
    try:
        dive = decode_dive(synthetic_mp4.path, 0, 29, SMALL)
    finally:
        decord.bridge.reset_bridge()
    assert synthetic_mp4.identify(dive.frames.numpy()).tolist() == dive.indices.tolist()


# --------------------------------------------------------------------------------------------------
# Frame folders.


def test_frame_folder_and_mp4_of_the_same_content_agree(
    make_video: MAKE, make_frame_folder: Callable[..., Path]
) -> None:
    video = make_video(40)
    folder = make_frame_folder(video.frames, "01/1", first_number=7377)  # frames 7377..7416
    other = make_video(40, first=100)  # same motion, other colours
    cfg = DecodeConfig(num_frames=96, width=40, height=56, min_source_frames=16)

    from_mp4 = decode_dive(video.path, 5, 34, cfg)
    from_folder = decode_dive(folder, 7382, 7411, cfg)
    from_other = decode_dive(other.path, 5, 34, cfg)

    assert from_folder.indices.tolist() == (7377 + from_mp4.indices).tolist()
    assert from_folder.source_num_frames == 40 and from_folder.fps is None
    assert video.identify(from_folder.frames.numpy()).tolist() == from_mp4.indices.tolist()
    assert _mae(from_folder.frames, from_mp4.frames) < SAME_CONTENT_MAE
    assert _mae(from_other.frames, from_folder.frames) > 6 * SAME_CONTENT_MAE


def test_frame_folder_ignores_other_files_and_accepts_unpadded_names(
    synthetic_mp4: SyntheticVideo, tmp_path: Path
) -> None:
    folder = tmp_path / "dive"
    folder.mkdir()
    for i, frame in enumerate(synthetic_mp4.frames[:20]):
        Image.fromarray(frame).save(folder / f"{i}.JPG", quality=95)
    (folder / "notes.txt").write_text("not a frame")
    dive = decode_dive(folder, 0, 19, SMALL)
    assert synthetic_mp4.identify(dive.frames.numpy()).tolist() == dive.indices.tolist()


# --------------------------------------------------------------------------------------------------
# probe.


def test_probe_mp4_and_folder(synthetic_mp4: SyntheticVideo, make_frame_folder: Callable[..., Path]) -> None:
    info = probe(synthetic_mp4.path)
    assert info == VideoInfo(synthetic_mp4.path, 30, pytest.approx(25.0), 64, 48, first_frame=0)
    folder = make_frame_folder(synthetic_mp4.frames[:12], first_number=100)
    assert probe(folder) == VideoInfo(folder, 12, None, 64, 48, first_frame=100)


# --------------------------------------------------------------------------------------------------
# Bad inputs: each is a VideoError naming the file and the reason.


def _faststart_copy(src: Path, dst: Path) -> Path:
    """Remux ``src`` with the ``moov`` index before the media data (as streaming mp4s are)."""
    with av.open(str(src)) as inp, av.open(str(dst), "w", options={"movflags": "faststart"}) as out:
        stream = out.add_stream_from_template(inp.streams.video[0])
        for packet in inp.demux(inp.streams.video[0]):
            if packet.dts is None:  # the demuxer's final flush packet
                continue
            packet.stream = stream
            out.mux(packet)
    assert dst.read_bytes()[4:64].find(b"moov") >= 0
    return dst


def _truncated(src: Path, dst: Path, keep: int) -> Path:
    data = src.read_bytes()
    dst.write_bytes(data[: keep if keep >= 0 else len(data) + keep])
    return dst


BadInput = Callable[[Any, Path, Callable[..., Path], MAKE], tuple[Path, int, int]]
"""(synthetic_mp4, tmp_path, make_frame_folder, make_video) → (path, start_frame, end_frame)."""

BAD_INPUTS: dict[str, tuple[BadInput, str]] = {
    "missing file": (lambda v, d, f, m: (d / "missing.mp4", 0, 20), "file not found"),
    "zero-byte mp4": (
        lambda v, d, f, m: (_truncated(v.path, d / "zero.mp4", 0), 0, 20),
        "empty file",
    ),
    "first half of an mp4 (no moov)": (
        lambda v, d, f, m: (_truncated(v.path, d / "half.mp4", v.path.stat().st_size // 2), 0, 20),
        "cannot open",
    ),
    "first half of a faststart mp4": (
        lambda v, d, f, m: (
            _truncated(_faststart_copy(v.path, d / "fs.mp4"), d / "fs_half.mp4", v.path.stat().st_size // 2),
            0,
            20,
        ),
        "cannot open",
    ),
    "faststart mp4 missing its last bytes": (
        lambda v, d, f, m: (_truncated(_faststart_copy(v.path, d / "fs.mp4"), d / "fs_cut.mp4", -10), 0, 29),
        "cannot decode frame",
    ),
    "text file renamed .mp4": (
        lambda v, d, f, m: (_write(d / "text.mp4", b"not a video\n" * 50), 0, 20),
        "cannot open",
    ),
    "5-frame video": (
        lambda v, d, f, m: (m(5, name="five.mp4").path, 0, 4),
        "too short: the video has 5 frames",
    ),
    "dive shorter than min_source_frames": (lambda v, d, f, m: (v.path, 10, 13), "too short"),
    "range past the end of the video": (lambda v, d, f, m: (v.path, 10, 30), "outside"),
    "negative start": (lambda v, d, f, m: (v.path, -1, 20), "outside"),
    "end before start": (lambda v, d, f, m: (v.path, 20, 10), "empty"),
    "folder with a missing frame": (
        lambda v, d, f, m: (_without(f(v.frames, "gap"), "00012.jpg"), 0, 29),
        "no file for frame(s) 12",
    ),
    "folder without JPEGs": (lambda v, d, f, m: (_empty_folder(d / "empty"), 0, 20), "no JPEG frames"),
    "folder range outside its frames": (
        lambda v, d, f, m: (f(v.frames, "late", first_number=100), 90, 120),
        "outside",
    ),
    "text renamed .jpg": (
        lambda v, d, f, m: (_replace(f(v.frames, "text"), "00007.jpg", b"not a jpeg\n"), 0, 29),
        "unreadable JPEG",
    ),
    "truncated JPEG": (
        lambda v, d, f, m: (_truncate_file(f(v.frames, "cut"), "00015.jpg"), 0, 29),
        "unreadable JPEG",
    ),
    "JPEG not named by a number": (
        lambda v, d, f, m: (_replace(f(v.frames, "named"), "frame_x.jpg", b""), 0, 29),
        "not named by a frame number",
    ),
}


def _write(path: Path, data: bytes) -> Path:
    path.write_bytes(data)
    return path


def _without(folder: Path, name: str) -> Path:
    (folder / name).unlink()
    return folder


def _empty_folder(folder: Path) -> Path:
    folder.mkdir()
    (folder / "readme.txt").write_text("no frames here")
    return folder


def _replace(folder: Path, name: str, data: bytes) -> Path:
    (folder / name).write_bytes(data)
    return folder


def _truncate_file(folder: Path, name: str) -> Path:
    data = (folder / name).read_bytes()
    (folder / name).write_bytes(data[: len(data) // 2])
    return folder


@pytest.mark.parametrize("case", list(BAD_INPUTS))
def test_bad_input_raises_video_error_naming_the_file(
    case: str,
    synthetic_mp4: SyntheticVideo,
    tmp_path: Path,
    make_frame_folder: Callable[..., Path],
    make_video: MAKE,
) -> None:
    build, reason = BAD_INPUTS[case]
    path, start, end = build(synthetic_mp4, tmp_path, make_frame_folder, make_video)
    with pytest.raises(VideoError, match=re.escape(reason)) as info:
        decode_dive(path, start, end, SMALL)
    message = str(info.value)
    assert path.name in message, message


@pytest.mark.parametrize(
    "case",
    [
        "missing file",
        "zero-byte mp4",
        "first half of an mp4 (no moov)",
        "text file renamed .mp4",
        "folder with a missing frame",
        "folder without JPEGs",
    ],
)
def test_probe_bad_input_raises_video_error(
    case: str,
    synthetic_mp4: SyntheticVideo,
    tmp_path: Path,
    make_frame_folder: Callable[..., Path],
    make_video: MAKE,
) -> None:
    build, _ = BAD_INPUTS[case]
    path, _, _ = build(synthetic_mp4, tmp_path, make_frame_folder, make_video)
    with pytest.raises(VideoError, match=re.escape(path.name)):
        probe(path)


def test_min_source_frames_boundary(make_video: MAKE) -> None:
    video = make_video(8, width=32, height=32)
    cfg = DecodeConfig(num_frames=16, width=32, height=32, min_source_frames=8)
    dive = decode_dive(video.path, 0, 7, cfg)  # exactly min_source_frames: accepted, repeats frames
    assert video.identify(dive.frames.numpy()).tolist() == dive.indices.tolist()
    assert sorted(set(dive.indices.tolist())) == list(range(8))
