"""Deterministic video encoding (:func:`hpmcore.data.render.write_mp4`) and synthetic datasets.

The same frames must give the same mp4 bytes on every run, whatever ``OMP_NUM_THREADS`` says and
whatever the process's heap holds, and the same bytes as the committed SHA-256 below, so that a CI
machine with another CPU catches a platform difference. The committed hashes hold for x86-64 with the
pinned PyAV wheel (``requirements/constraints.txt``), where x264 runs its SSE2 code; other machines
(x264's C code, ``X264_ASM = "0"``) have no committed hash yet.

Measured (issue 8): the same hashes on a 2-core and a 16-core Intel Xeon (both AVX-512), numpy 2.4.6 and
2.5.2, ``OMP_NUM_THREADS`` unset/1/2/16, 1/2/4 workers. ``SYNTH_SHA256`` also covers the Parquet files,
whose bytes name the pyarrow version (pinned).

``SYNTH_SHA256`` depends on the synthetic scene and renderer (``hpmcore/data/synth.py``,
``render.py``) and on the canonical schema (``canonical.py``): a change there must update it (the
failure message prints the new value);
``FRAMES_MP4_SHA256`` / ``FRAMES_DECODED_SHA256`` depend only on the encoder settings.
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path

import av
import numpy as np
import pytest

from hpmcore.data.render import X264_ASM, write_mp4

PROJECT = Path(__file__).resolve().parents[1]

FRAMES_MP4_SHA256 = "919f761f548ca161e9131a3588310a400e13e069b1ce77f94a695deb2ec0c09f"
"""SHA-256 of :func:`write_mp4` of :func:`_fixed_frames` (x86-64, ``asm=SSE2``, PyAV 18.1.0)."""
FRAMES_DECODED_SHA256 = "81bc6af2c205eba47f335ae899bfa8cb04d2244a39c1033f73b97a607d27bd0f"
"""SHA-256 of the decoded yuv420p planes of that mp4: survives container-level changes (muxer version),
changes only when x264's coding decisions do."""
SYNTH_SHA256 = "bc5dde0d9abe2fba73ff63af296e159c7c988185425c950d261b560cd63cf0b4"
"""SHA-256 over the names and bytes of :data:`SYNTH_CODE`'s files; update when the synthetic
generator or renderer changes (issue 9)."""

SYNTH_CODE = """
import hashlib, json, sys
from pathlib import Path
from hpmcore.config import SynthConfig
from hpmcore.data.synth import generate_dataset
cfg = SynthConfig(seed=11, num_dives=4, width=112, height=64, min_frames=24, max_frames=30)
out = Path(sys.argv[1])
generate_dataset(cfg, out, progress=False, workers=int(sys.argv[2]))
print(json.dumps({p.relative_to(out).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
                  for p in sorted(out.rglob("*")) if p.is_file()}))
"""
"""4 small synthetic dives, 112 px wide (a chroma width of 56, not a multiple of 16: the case where
x264's AVX2 code read uninitialised bytes)."""


def _fixed_frames(num_frames: int = 24, height: int = 64, width: int = 112) -> np.ndarray:
    """uint8 ``(T, H, W, 3)``: gradients that move and a white block: a fixed input for the encoder."""
    yy, xx = np.mgrid[0:height, 0:width]
    frames = np.empty((num_frames, height, width, 3), dtype=np.uint8)
    for t in range(num_frames):
        frames[t, ..., 0] = (xx * 2 + 3 * t) % 256
        frames[t, ..., 1] = (yy * 3 + t) % 256
        frames[t, ..., 2] = (xx * yy // 40 + 5 * t) % 256
        frames[t, 20:36, (4 * t) % 90 : (4 * t) % 90 + 16] = 255
    return frames


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _decoded_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with av.open(str(path)) as container:
        for frame in container.decode(video=0):
            digest.update(frame.to_ndarray(format="yuv420p").tobytes())
    return digest.hexdigest()


def _dirty_heap(width: int, height: int) -> None:
    """Leave random bytes in freed frame buffers: what made the old encoder's output vary."""
    rng = np.random.default_rng()
    for _ in range(4):
        noise = rng.integers(0, 256, (height, width, 3), dtype=np.uint8)
        av.VideoFrame.from_ndarray(noise, format="rgb24").reformat(format="yuv420p")


def _platform_note() -> str:
    return f"x264 asm={X264_ASM}, PyAV {av.__version__}, libraries {av.library_versions}"


def test_same_frames_give_the_same_bytes(tmp_path: Path) -> None:
    frames = _fixed_frames()
    paths = []
    for i in range(3):
        _dirty_heap(112, 64)
        paths.append(tmp_path / f"v{i}.mp4")
        assert write_mp4(iter(frames), paths[-1], fps=25) == len(frames)
    hashes = {_sha256(p) for p in paths}
    assert len(hashes) == 1, f"write_mp4 gave {len(hashes)} different files for the same frames"
    assert b"Lavf" not in paths[0].read_bytes()  # +bitexact: no muxer version string


def test_bytes_match_the_committed_hash(tmp_path: Path) -> None:
    if X264_ASM != "SSE2":
        pytest.skip(f"committed hashes are for x86-64 (x264 asm=SSE2); this machine: {_platform_note()}")
    path = tmp_path / "fixed.mp4"
    write_mp4(iter(_fixed_frames()), path, fps=25)
    mp4, decoded = _sha256(path), _decoded_sha256(path)
    if mp4 != FRAMES_MP4_SHA256:
        kind = (
            "the container or SEI bytes differ but the decoded frames are the same (another muxer or "
            "x264 version string?)"
            if decoded == FRAMES_DECODED_SHA256
            else "the decoded frames differ too: x264 coded them differently (another x264 build, "
            "instruction set or settings)"
        )
        pytest.fail(
            f"mp4 SHA-256 {mp4} != committed {FRAMES_MP4_SHA256} (decoded {decoded}): {kind}; "
            f"{_platform_note()}"
        )
    assert decoded == FRAMES_DECODED_SHA256


def _synth(out: Path, workers: int, omp: str | None) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k != "OMP_NUM_THREADS"}
    env["PYTHONPATH"] = os.pathsep.join([str(PROJECT), env.get("PYTHONPATH", "")])  # this checkout
    if omp is not None:
        env["OMP_NUM_THREADS"] = omp
    proc = subprocess.run(
        [sys.executable, "-c", SYNTH_CODE, str(out), str(workers)],
        cwd=out.parent,
        env=env,
        capture_output=True,
        text=True,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout.splitlines()[-1])


def test_synthetic_dataset_is_byte_identical_across_runs_and_threads(tmp_path: Path) -> None:
    runs = [
        _synth(tmp_path / "a", workers=1, omp=None),
        _synth(tmp_path / "b", workers=1, omp="1"),
        _synth(tmp_path / "c", workers=2, omp="2"),
    ]
    videos = [name for name in runs[0] if name.endswith(".mp4")]
    assert len(videos) == 4
    for other in runs[1:]:
        differ = sorted(name for name in runs[0] if runs[0][name] != other.get(name))
        assert runs[0].keys() == other.keys() and not differ, f"files differ between runs: {differ}"
    combined = hashlib.sha256("".join(f"{k} {v}\n" for k, v in sorted(runs[0].items())).encode()).hexdigest()
    if X264_ASM == "SSE2":
        assert combined == SYNTH_SHA256, (
            f"the synthetic dataset's SHA-256 is {combined}, committed {SYNTH_SHA256}: update SYNTH_SHA256 "
            f"if the synthetic generator or renderer changed on purpose; else a platform difference "
            f"({_platform_note()})"
        )
