"""Decode one dive to a uint8 frame tensor, from an mp4 file (decord) or a JPEG frame folder.

A dive is the frame range ``start_frame .. end_frame`` (inclusive) of a *source*:

* an **mp4 file** (any container decord reads): frames are 0-based indices in display order, so a long
  broadcast video (MTL-AQA, coarse FineDiving) is cut by frame range. Decoded with
  ``decord.VideoReader(path, width=W, height=H)``, i.e. resized by the decoder's scaler.
* a **frame folder** of ``<frame_no>.jpg`` files (FineDiving layout, spec §12.3): frames are the
  integer file names (zero-padded or not). Loaded with PIL and resized bilinearly to W×H (spec §1.2).

The dive is sampled uniformly to ``cfg.num_frames`` frames, both end frames included, with repeats
for dives shorter than that (spec §1.1, :func:`sample_indices`). An mp4 and a frame folder of the
same content give the same tensor up to JPEG/H.264 loss.

decord 0.6.0 quirks handled here (measured, see ``tests/test_video.py``):

* **Padded rows.** For some output widths (16, 24, 48 and 72 px, whatever the source) decord
  returns frames whose rows are padded, reported as shape ``(H, W, 4)`` or ``(H, W, 6)`` instead of
  ``(H, W, 3)``, and ``get_batch`` then fails with "DECORDArrayCopyFromTo: The size must exactly
  match" (decord issues #93, #336). Frames are therefore read one by one (as fast as ``get_batch``
  for sorted indices) and the row padding is cut off (:func:`_unpad`).
* **Errors.** On bad files decord raises ``decord.DECORDError`` or a bare ``RuntimeError``
  ("Error reading <file>...") and its bundled FFmpeg prints the real reason to stderr; a
  ``VideoReader`` that opens may still fail on a later frame (an mp4 truncated near its end). No
  input tried (missing, empty, truncated, corrupted, text renamed ``.mp4``) crashed the process, so
  no PyAV pre-check is needed; PyAV is only asked for a readable reason once decord has failed.
* **Bridge.** ``decord.bridge.set_bridge("torch")`` elsewhere in the process makes decord return
  torch tensors instead of ``decord.nd.NDArray``; both are accepted.
"""

from __future__ import annotations

import logging
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import av
import decord
import numpy as np
import torch
from PIL import Image

from hpmcore.config import DecodeConfig
from hpmcore.data.finediving import linspace_indices as sample_indices

__all__ = [
    "DecodedDive",
    "VideoError",
    "VideoInfo",
    "decode_dive",
    "probe",
    "read_frames",
    "sample_indices",
]

log = logging.getLogger(__name__)

FRAME_SUFFIXES = (".jpg", ".jpeg")
"""File suffixes (any case) of the frames of a frame folder."""

# Bad inputs show up as any of these from decord (AssertionError: "Invalid frame count" in
# VideoReader.__init__; IndexError: an index decord thinks is out of range).
_DECORD_ERRORS = (decord.DECORDError, RuntimeError, AssertionError, IndexError)


class VideoError(ValueError):
    """A video or frame folder cannot be decoded as asked; the message names the file and the reason."""


@dataclass(frozen=True)
class VideoInfo:
    """What :func:`probe` learns about a source without decoding all of it."""

    path: Path
    num_frames: int
    """Frames in the source (mp4: as the container reports; folder: number of JPEG files)."""
    fps: float | None
    """Average frame rate of an mp4; ``None`` for a frame folder (JPEGs carry no frame rate)."""
    width: int
    """Width of the source frames in pixels (a folder: of its first frame)."""
    height: int
    """Height of the source frames in pixels (a folder: of its first frame)."""
    first_frame: int = 0
    """Number of the first frame: 0 for an mp4, the smallest file number for a frame folder."""


@dataclass(frozen=True)
class DecodedDive:
    """One dive, sampled and resized."""

    frames: torch.Tensor
    """uint8 ``(T, H, W, 3)`` RGB, T = ``cfg.num_frames``, H×W = ``cfg.height``×``cfg.width``."""
    indices: np.ndarray
    """int64 ``(T,)``: the source frame number of each sampled frame (``start_frame + offset``)."""
    source_num_frames: int
    """Frames in the whole source (video or folder), not only in the dive."""
    fps: float | None
    """Average frame rate of an mp4 source; ``None`` for a frame folder."""


# --------------------------------------------------------------------------------------------------
# Public API.


def probe(path: Path) -> VideoInfo:
    """Frame count, frame rate and frame size of an mp4 file or a frame folder.

    An mp4 is opened with decord (which reads the whole packet index) and its first frame decoded;
    a frame folder is listed and its first JPEG's header read.

    Raises:
        VideoError: a missing path, an empty or unreadable video, a folder without JPEGs, with a
            file not named by a frame number, or with a gap in its frame numbering.
    """
    path = Path(path)
    if path.is_dir():
        files = _list_frames(path)
        numbers = sorted(files)
        missing = _missing(numbers, numbers[0], numbers[-1])
        if missing:
            raise VideoError(f"{path}: frame folder has a gap, no file for frame(s) {_few(missing)}")
        width, height = _jpeg_size(files[numbers[0]])
        return VideoInfo(path, len(numbers), None, width, height, first_frame=numbers[0])
    reader = _open_mp4(path)
    first = _read_frame(reader, path, 0)
    return VideoInfo(path, len(reader), _fps(reader, path), first.shape[1], first.shape[0])


def decode_dive(path: Path, start_frame: int, end_frame: int, cfg: DecodeConfig) -> DecodedDive:
    """Decode frames ``start_frame .. end_frame`` (inclusive) of an mp4 or a frame folder.

    The range is sampled at ``start_frame + sample_indices(start_frame, end_frame, cfg.num_frames)``
    (spec §1.1) and each sampled frame resized to ``cfg.width`` × ``cfg.height``: by decord's scaler
    for an mp4, by PIL bilinear for a frame folder. Each distinct frame is decoded once.

    Args:
        path: an mp4 file (frames numbered 0 .. N-1) or a folder of ``<frame_no>.jpg`` (frames
            numbered by their file names).
        start_frame: first frame of the dive.
        end_frame: last frame of the dive (inclusive).
        cfg: number of frames, output size and the shortest accepted source.

    Returns:
        :class:`DecodedDive` with ``frames`` uint8 ``(cfg.num_frames, cfg.height, cfg.width, 3)``.

    Raises:
        VideoError: naming the file for a missing, empty, truncated or non-video file; a source or
            dive with fewer than ``cfg.min_source_frames`` frames ("too short"); a frame range
            outside the source; a frame folder without JPEGs or with a missing frame in the range;
            an unreadable JPEG.
        ConfigError: for an invalid ``cfg``.
    """
    cfg.validate()
    path = Path(path)
    start, end = int(start_frame), int(end_frame)
    if end < start:
        raise VideoError(f"{path}: frame range {start}..{end} is empty (end before start)")
    if path.is_dir():
        return _decode_folder(path, start, end, cfg)
    return _decode_mp4(path, start, end, cfg)


def read_frames(path: Path, frames: np.ndarray, width: int, height: int) -> np.ndarray:
    """The source frames numbered ``frames`` of an mp4 or a frame folder, resized to ``width`` ×
    ``height`` as :func:`decode_dive` resizes (decord's scaler / PIL bilinear), e.g. at the source's
    own size (:func:`probe`) for pose estimation on the sampled frames of the decode stage.

    Args:
        frames: int ``(N,)`` frame numbers (mp4: 0-based; folder: the JPEGs' numbers), sorted or not.

    Returns:
        uint8 ``(N, height, width, 3)`` RGB; each distinct frame is decoded once.

    Raises:
        VideoError: naming the file for an unreadable source or a frame it does not have.
    """
    path = Path(path)
    numbers = np.asarray(frames, dtype=np.int64)
    unique, inverse = np.unique(numbers, return_inverse=True)  # sorted: sequential decode
    if path.is_dir():
        files = _list_frames(path)
        missing = [int(n) for n in unique if int(n) not in files]
        if missing:
            raise VideoError(f"{path}: frame folder has no file for frame(s) {_few(missing)}")
        decoded = [_load_jpeg(files[int(n)], width, height) for n in unique]
    else:
        reader = _open_mp4(path, width, height)
        outside = [int(n) for n in unique if not 0 <= n < len(reader)]
        if outside:
            raise VideoError(
                f"{path}: frame(s) {_few(outside)} outside the video's frames 0..{len(reader) - 1}"
            )
        decoded = [_read_frame(reader, path, int(n), width, height) for n in unique]
    if not decoded:
        return np.zeros((0, height, width, 3), dtype=np.uint8)
    return np.stack(decoded)[inverse]


# --------------------------------------------------------------------------------------------------
# mp4 via decord.


def _decode_mp4(path: Path, start: int, end: int, cfg: DecodeConfig) -> DecodedDive:
    reader = _open_mp4(path, cfg.width, cfg.height)
    total = len(reader)
    _check_length(path, total, start, end, cfg, last_frame=total - 1)
    offsets = sample_indices(start, end, cfg.num_frames)  # (T,) in 0 .. end - start
    unique, inverse = np.unique(offsets + start, return_inverse=True)  # sorted: sequential decode
    decoded = np.stack([_read_frame(reader, path, int(i), cfg.width, cfg.height) for i in unique])
    frames = decoded[inverse]  # (T, H, W, 3)
    log.debug("%s: frames %d..%d → %s", path, start, end, frames.shape)
    return DecodedDive(torch.from_numpy(frames), unique[inverse], total, _fps(reader, path))


def _open_mp4(path: Path, width: int = -1, height: int = -1) -> decord.VideoReader:
    """A decord reader resizing to ``width`` × ``height`` (-1: native size), or ``VideoError``."""
    if not path.exists():
        raise VideoError(f"{path}: file not found")
    if not path.is_file():
        raise VideoError(f"{path}: not a file or a frame folder")
    if path.stat().st_size == 0:
        raise VideoError(f"{path}: empty file (0 bytes)")
    try:
        reader = decord.VideoReader(str(path), width=width, height=height)
    except _DECORD_ERRORS as exc:
        raise VideoError(
            f"{path}: cannot open as a video (truncated, corrupted or not a video file): {_reason(path, exc)}"
        ) from None
    if len(reader) <= 0:
        raise VideoError(f"{path}: video has no frames")
    return reader


def _read_frame(
    reader: decord.VideoReader, path: Path, index: int, width: int | None = None, height: int | None = None
) -> np.ndarray:
    """Frame ``index`` as uint8 ``(H, W, 3)``; its size is checked when ``width``/``height`` given."""
    try:
        frame = _unpad(_to_numpy(reader[index]))
    except _DECORD_ERRORS as exc:
        raise VideoError(
            f"{path}: cannot decode frame {index} of {len(reader)} (truncated or corrupted video): "
            f"{_reason(path, exc)}"
        ) from None
    except ValueError as exc:
        raise VideoError(f"{path}: frame {index}: {exc}") from None
    if width is not None and height is not None and frame.shape[:2] != (height, width):
        raise VideoError(
            f"{path}: decoder returned frame {index} of {frame.shape[1]}x{frame.shape[0]} px, "
            f"asked for {width}x{height}"
        )
    return frame


def _to_numpy(frame: Any) -> np.ndarray:
    """A decord ``NDArray`` (native bridge) or a torch tensor (torch bridge) → numpy."""
    if isinstance(frame, torch.Tensor):
        return frame.numpy()
    return frame.asnumpy()


def _unpad(frame: np.ndarray) -> np.ndarray:
    """Undo decord's row padding: ``(H, W, C)`` with C ≠ 3 holds rows of ``W·C`` bytes, the first
    ``W·3`` of which are the RGB pixels (decord issues #93, #336).

    Returns:
        uint8 ``(H, W, 3)``.
    """
    if frame.dtype != np.uint8 or frame.ndim != 3 or frame.shape[2] < 3:
        raise ValueError(f"decoder returned an array of {frame.dtype} {frame.shape}, expected (H, W, 3)")
    if frame.shape[2] == 3:
        return frame
    height, width, channels = frame.shape
    rows = np.ascontiguousarray(frame).reshape(height, width * channels)  # (H, row bytes)
    return rows[:, : width * 3].reshape(height, width, 3).copy()


def _fps(reader: decord.VideoReader, path: Path) -> float:
    try:
        return float(reader.get_avg_fps())
    except _DECORD_ERRORS as exc:
        raise VideoError(f"{path}: cannot read the frame rate: {_reason(path, exc)}") from None


def _reason(path: Path, exc: BaseException) -> str:
    """A one-line reason for a decord failure.

    decord's own message is often useless ("Error reading <file>...") because its FFmpeg prints the
    cause to stderr; PyAV, opened on the same file, returns that cause as an exception.
    """
    try:
        with av.open(str(path)) as container:
            if not container.streams.video:
                return "no video stream"
            next(container.decode(video=0))
    except av.FFmpegError as av_exc:
        return re.sub(r"^\[Errno -?\d+\] ", "", str(av_exc))
    except StopIteration:
        return "no decodable frame"
    except Exception:  # diagnosis only: fall back to decord's message
        pass
    # decord: "[hh:mm:ss] /…/file.cc:NNN: " (repeated when re-raised) + message + C++ stack trace.
    lines = str(exc).strip().splitlines()
    first = lines[0] if lines else type(exc).__name__
    return re.sub(r"^(\[[\d:]+\] \S+?:\d+: )+", "", first)


# --------------------------------------------------------------------------------------------------
# Frame folders via PIL.


def _decode_folder(folder: Path, start: int, end: int, cfg: DecodeConfig) -> DecodedDive:
    files = _list_frames(folder)
    numbers = sorted(files)
    _check_length(folder, len(numbers), start, end, cfg, last_frame=numbers[-1], first_frame=numbers[0])
    missing = _missing(numbers, start, end)
    if missing:
        raise VideoError(f"{folder}: frame folder has a gap, no file for frame(s) {_few(missing)}")
    offsets = sample_indices(start, end, cfg.num_frames)  # (T,) in 0 .. end - start
    unique, inverse = np.unique(offsets + start, return_inverse=True)
    decoded = np.stack([_load_jpeg(files[int(n)], cfg.width, cfg.height) for n in unique])
    frames = decoded[inverse]  # (T, H, W, 3)
    log.debug("%s: frames %d..%d → %s", folder, start, end, frames.shape)
    return DecodedDive(torch.from_numpy(frames), unique[inverse], len(numbers), None)


def _list_frames(folder: Path) -> dict[int, Path]:
    """``{frame number: file}`` of the JPEGs in ``folder`` (other files are ignored)."""
    files: dict[int, Path] = {}
    try:
        entries = list(os.scandir(folder))
    except OSError as exc:
        raise VideoError(f"{folder}: cannot list the frame folder ({exc.strerror})") from None
    for entry in entries:
        stem, suffix = os.path.splitext(entry.name)
        if suffix.lower() not in FRAME_SUFFIXES:
            continue
        if not stem.isdigit():
            raise VideoError(f"{folder}: frame file {entry.name!r} is not named by a frame number")
        number = int(stem)
        if number in files:
            raise VideoError(f"{folder}: frame {number} twice ({files[number].name!r} and {entry.name!r})")
        files[number] = Path(entry.path)
    if not files:
        raise VideoError(f"{folder}: no JPEG frames ({'/'.join(FRAME_SUFFIXES)}) in the frame folder")
    return files


def _jpeg_size(path: Path) -> tuple[int, int]:
    try:
        with Image.open(path) as image:
            return image.size
    except (OSError, ValueError, Image.DecompressionBombError) as exc:
        raise VideoError(f"{path}: unreadable JPEG ({exc})") from None


def _load_jpeg(path: Path, width: int, height: int) -> np.ndarray:
    """One frame as uint8 ``(height, width, 3)`` RGB, resized with PIL bilinear (spec §1.2)."""
    try:
        with Image.open(path) as image:
            rgb = image.convert("RGB")  # decodes the whole file: truncated data fails here
    except (OSError, ValueError, Image.DecompressionBombError) as exc:
        raise VideoError(f"{path}: unreadable JPEG ({exc})") from None
    if rgb.size != (width, height):
        rgb = rgb.resize((width, height), Image.Resampling.BILINEAR)
    return np.asarray(rgb, dtype=np.uint8)


# --------------------------------------------------------------------------------------------------
# Shared checks.


def _check_length(
    path: Path,
    total: int,
    start: int,
    end: int,
    cfg: DecodeConfig,
    *,
    last_frame: int,
    first_frame: int = 0,
) -> None:
    """Too short a source or dive, or a range outside ``first_frame .. last_frame`` → VideoError."""
    if total < cfg.min_source_frames:
        raise VideoError(
            f"{path}: too short: the video has {total} frames, fewer than "
            f"decode.min_source_frames={cfg.min_source_frames}"
        )
    if start < first_frame or end > last_frame:
        raise VideoError(
            f"{path}: frame range {start}..{end} outside the video's frames {first_frame}..{last_frame}"
        )
    if end - start + 1 < cfg.min_source_frames:
        raise VideoError(
            f"{path}: too short: the dive {start}..{end} has {end - start + 1} frames, fewer than "
            f"decode.min_source_frames={cfg.min_source_frames}"
        )


def _missing(numbers: list[int], start: int, end: int) -> list[int]:
    """The frame numbers of ``start .. end`` absent from the sorted ``numbers``."""
    present = np.asarray(numbers, dtype=np.int64)
    present = present[(present >= start) & (present <= end)]
    if len(present) == end - start + 1:
        return []
    return sorted(set(range(start, end + 1)) - set(present.tolist()))


def _few(items: list[int], limit: int = 10) -> str:
    shown = ", ".join(str(i) for i in items[:limit])
    return shown + (f", … ({len(items) - limit} more)" if len(items) > limit else "")
