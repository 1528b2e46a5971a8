"""Shared test fixtures.

Synthetic videos (``synthetic_mp4``, ``make_video``, ``make_frame_folder``): every frame ``i`` has a
flat background in palette colour ``first + i`` (343 distinct colours, 37 grey levels apart per
channel, so a frame survives H.264/JPEG loss and resizing recognisably) and a white square that
moves right by 3 px per frame (spatial structure for resize checks).
:meth:`SyntheticVideo.identify` maps decoded frames back to their frame numbers.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image


@pytest.fixture(autouse=True, scope="session")
def _torch_one_thread() -> Iterator[None]:
    """One intra-op thread: on a 2-core machine shared with other work, two threads thrash
    (tiny forwards measured 10-100x slower); one is fast and results do not depend on it."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


PALETTE_LEVELS = np.arange(16, 239, 37)
"""Per-channel grey levels of the palette: 16, 53, …, 238 (7 levels → 343 colours)."""
PALETTE_SIZE = len(PALETTE_LEVELS) ** 3


def palette_colour(index: int) -> np.ndarray:
    """Palette colour ``index`` (mod 343) as uint8 (3,) RGB; neighbours differ by 37 in one channel."""
    k = index % PALETTE_SIZE
    n = len(PALETTE_LEVELS)
    return PALETTE_LEVELS[[k % n, (k // n) % n, (k // n**2) % n]].astype(np.uint8)


def synthetic_frames(num_frames: int, height: int, width: int, first: int = 0) -> np.ndarray:
    """uint8 ``(T, H, W, 3)``: frame ``i`` is palette colour ``first + i`` with a moving white square."""
    side = max(2, min(height, width) // 4)
    frames = np.empty((num_frames, height, width, 3), dtype=np.uint8)
    for i in range(num_frames):
        frames[i] = palette_colour(first + i)
        x = (3 * i) % (width - side)
        frames[i, height // 4 : height // 4 + side, x : x + side] = 255
    return frames


@dataclass(frozen=True)
class SyntheticVideo:
    """A written synthetic video and the exact frames that went into it."""

    path: Path
    frames: np.ndarray
    """uint8 ``(T, H, W, 3)`` RGB as written (before H.264/JPEG loss)."""
    fps: int
    first: int
    """Palette index of frame 0."""

    def identify(self, decoded: np.ndarray) -> np.ndarray:
        """Frame numbers (0-based in this video) of decoded frames ``(N, h, w, 3)``, by their median colour.

        Returns:
            int64 ``(N,)``; a frame not of this video (or not recognisable) gives -1.
        """
        decoded = np.asarray(decoded)
        colours = np.median(decoded.reshape(len(decoded), -1, 3), axis=1)  # (N, 3)
        step = PALETTE_LEVELS[1] - PALETTE_LEVELS[0]
        levels = np.rint((colours - PALETTE_LEVELS[0]) / step)  # (N, 3)
        ok = (np.abs(colours - (PALETTE_LEVELS[0] + step * levels)) < step / 3).all(axis=1)
        ok &= ((levels >= 0) & (levels < len(PALETTE_LEVELS))).all(axis=1)
        n = len(PALETTE_LEVELS)
        k = levels[:, 0] + n * levels[:, 1] + n * n * levels[:, 2]
        index = (k.astype(np.int64) - self.first) % PALETTE_SIZE
        index[~ok | (index >= len(self.frames))] = -1
        return index

    def resized(self, indices: np.ndarray, width: int, height: int) -> np.ndarray:
        """The written frames at ``indices`` resized with PIL bilinear: uint8 ``(N, height, width, 3)``."""
        return np.stack(
            [
                np.asarray(Image.fromarray(self.frames[i]).resize((width, height), Image.Resampling.BILINEAR))
                for i in indices
            ]
        )


@pytest.fixture
def make_video(tmp_path: Path) -> Callable[..., SyntheticVideo]:
    """Factory: ``make_video(num_frames, name=, width=, height=, fps=, first=)`` writes a synthetic
    H.264 mp4 (PyAV, via :func:`hpmcore.data.render.write_mp4`) under ``tmp_path``."""
    from hpmcore.data.render import write_mp4

    def make(
        num_frames: int = 30,
        *,
        name: str | None = None,
        width: int = 64,
        height: int = 48,
        fps: int = 25,
        first: int = 0,
    ) -> SyntheticVideo:
        frames = synthetic_frames(num_frames, height, width, first)
        path = tmp_path / (name or f"video_{num_frames}_{first}_{width}x{height}.mp4")
        written = write_mp4(iter(frames), path, fps=fps)
        assert written == num_frames
        return SyntheticVideo(path=path, frames=frames, fps=fps, first=first)

    return make


@pytest.fixture
def synthetic_mp4(make_video: Callable[..., SyntheticVideo]) -> SyntheticVideo:
    """A 30-frame 64×48 25-fps synthetic mp4 (see the module docstring) and its frames."""
    return make_video(30)


@pytest.fixture
def make_frame_folder(tmp_path: Path) -> Callable[..., Path]:
    """Factory: ``make_frame_folder(frames, name, first_number=0)`` writes ``frames`` (T, H, W, 3) as
    ``<first_number + i:05d>.jpg`` (FineDiving layout, JPEG quality 95) into ``tmp_path / name``."""

    def make(frames: np.ndarray, name: str = "frames", first_number: int = 0) -> Path:
        folder = tmp_path / name
        folder.mkdir(parents=True)
        for i, frame in enumerate(frames):
            Image.fromarray(frame).save(folder / f"{first_number + i:05d}.jpg", quality=95)
        return folder

    return make
