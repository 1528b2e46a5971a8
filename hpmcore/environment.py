"""The environment fingerprint: what a run's numbers may depend on beyond code, data and params.

Bit-identical results need the same CPU instruction set (float kernels pick AVX2/AVX-512 paths), thread
count, torch/CUDA/cuDNN builds and — for the synthetic videos — the same libx264 and FFmpeg libraries.
:func:`environment_fingerprint` collects them as one JSON-safe dict; the tracking code logs it with
every MLflow run (``environment/fingerprint.json`` plus a few ``env.*`` tags), so two runs that
disagree can be told apart by their environments first.

Nothing here is slow (a 16×16 one-frame H.264 encode to read libx264's build string; no GPU work).
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import platform
import sys
from importlib import metadata
from pathlib import Path
from typing import Any

__all__ = ["KEY_PACKAGES", "environment_fingerprint", "environment_tags", "fingerprint_digest"]

KEY_PACKAGES = (
    "hpmcore",
    "torch",
    "torchvision",
    "numpy",
    "scipy",
    "av",
    "decord",
    "pyarrow",
    "safetensors",
    "timm",
    "dvc",
    "prefect",
    "mlflow",
    "mmcv",
    "mmengine",
    "mmdet",
    "mmpose",
)
"""Packages whose versions are recorded (those that compute, decode or store results)."""

ISA_FLAGS = (
    "sse4_1",
    "sse4_2",
    "avx",
    "avx2",
    "fma",
    "f16c",
    "avx512f",
    "avx512bw",
    "avx512vl",
    "avx512dq",
    "avx512cd",
    "avx512_vnni",
    "avx512_bf16",
    "avx512_fp16",
    "avx_vnni",
    "amx_bf16",
    "amx_int8",
    "amx_tile",
    "neon",
    "asimd",
    "sve",
)
"""CPU flags (``/proc/cpuinfo``) that select float kernels in torch / oneDNN / MKL / FFmpeg."""

THREAD_VARIABLES = ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS", "CUBLAS_WORKSPACE_CONFIG")
"""Environment variables that change thread counts or kernel choice."""


def _cpuinfo() -> dict[str, str]:
    """The first processor block of ``/proc/cpuinfo`` (empty where there is none)."""
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return {}
    info: dict[str, str] = {}
    for line in text.splitlines():
        if not line.strip():
            if info:
                break
            continue
        key, _, value = line.partition(":")
        info.setdefault(key.strip(), value.strip())
    return info


def _cpu() -> dict[str, Any]:
    info = _cpuinfo()
    flags = set((info.get("flags") or info.get("Features") or "").split())
    try:
        affinity = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        affinity = None
    return {
        "model": info.get("model name") or info.get("Hardware") or platform.processor() or "unknown",
        "vendor": info.get("vendor_id"),
        "family": info.get("cpu family"),
        "model_id": info.get("model"),
        "stepping": info.get("stepping"),
        "microcode": info.get("microcode"),
        "isa_flags": sorted(flags & set(ISA_FLAGS)),
        "logical_cpus": os.cpu_count(),
        "usable_cpus": affinity,
    }


def _torch() -> dict[str, Any]:
    import torch

    cuda = torch.cuda.is_available()
    cudnn = torch.backends.cudnn.version() if torch.backends.cudnn.is_available() else None
    return {
        "version": torch.__version__,
        "cuda": torch.version.cuda,
        "cudnn": cudnn,
        "cuda_available": cuda,
        "gpus": [torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())] if cuda else [],
        "cpu_capability": torch.backends.cpu.get_cpu_capability(),
        "num_threads": torch.get_num_threads(),
        "num_interop_threads": torch.get_num_interop_threads(),
        "mkldnn": torch.backends.mkldnn.is_available(),
        "deterministic_algorithms": torch.are_deterministic_algorithms_enabled(),
    }


def x264_build() -> str | None:
    """libx264's build string (e.g. ``"x264 - core 165"``) as PyAV's FFmpeg links it, read from the SEI
    message of a one-frame 16×16 encode; ``None`` when libx264 is not available."""
    import av
    import numpy as np

    buf = io.BytesIO()
    try:
        with av.open(buf, "w", format="h264") as container:
            stream = container.add_stream("libx264", rate=1)
            stream.width, stream.height, stream.pix_fmt = 16, 16, "yuv420p"
            frame = av.VideoFrame.from_ndarray(np.zeros((16, 16, 3), np.uint8), format="rgb24")
            for packet in [*stream.encode(frame), *stream.encode()]:
                container.mux(packet)
    except (av.error.FFmpegError, ValueError):  # no libx264 in this FFmpeg build
        return None
    data = buf.getvalue()
    start = data.find(b"x264 - core")
    if start < 0:
        return None
    return data[start : data.find(b" - H.264", start)].decode("ascii", "replace")


def _video() -> dict[str, Any]:
    import av

    return {
        "pyav": av.__version__,
        "ffmpeg": getattr(av, "ffmpeg_version_info", None),
        "ffmpeg_libraries": {name: ".".join(map(str, v)) for name, v in sorted(av.library_versions.items())},
        "libx264": x264_build(),
    }


def _packages() -> dict[str, str | None]:
    out: dict[str, str | None] = {}
    for name in KEY_PACKAGES:
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            out[name] = None
    return out


def environment_fingerprint() -> dict[str, Any]:
    """Everything about this process's environment that can change a result bit for bit.

    Returns:
        A JSON-safe dict: ``cpu`` (model, vendor/family/stepping, ISA flags, logical and usable CPUs),
        ``torch`` (version, CUDA, cuDNN, GPUs, the CPU kernel level torch dispatches to, intra/inter-op
        thread counts), ``video`` (PyAV, FFmpeg and its library versions, libx264 build), ``python``,
        ``platform`` (OS, kernel, machine, libc), ``threads`` (the thread-count environment variables)
        and ``packages`` (versions of :data:`KEY_PACKAGES`, ``None`` when not installed).
    """
    libc, libc_version = platform.libc_ver()
    return {
        "cpu": _cpu(),
        "torch": _torch(),
        "video": _video(),
        "python": {
            "version": platform.python_version(),
            "implementation": platform.python_implementation(),
            "compiler": platform.python_compiler(),
            "executable": sys.executable,
        },
        "platform": {
            "system": platform.system(),
            "release": platform.release(),
            "machine": platform.machine(),
            "platform": platform.platform(),
            "libc": f"{libc} {libc_version}".strip() or None,
        },
        "threads": {name: os.environ.get(name) for name in THREAD_VARIABLES},
        "packages": _packages(),
    }


def fingerprint_digest(fingerprint: dict[str, Any]) -> str:
    """SHA-256 (hex, first 16 characters) of a fingerprint's canonical JSON, leaving out the
    interpreter path (the same environment in another checkout has the same digest)."""
    stable = {**fingerprint, "python": {k: v for k, v in fingerprint["python"].items() if k != "executable"}}
    text = json.dumps(stable, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def environment_tags(fingerprint: dict[str, Any]) -> dict[str, str]:
    """The few ``env.*`` tags that make runs searchable by environment (the full record is the JSON)."""
    t, cpu, video = fingerprint["torch"], fingerprint["cpu"], fingerprint["video"]
    return {
        "env.digest": fingerprint_digest(fingerprint),
        "env.cpu": str(cpu["model"]),
        "env.cpu_capability": str(t["cpu_capability"]),
        "env.torch": str(t["version"]),
        "env.cuda": str(t["cuda"]),
        "env.cudnn": str(t["cudnn"]),
        "env.threads": str(t["num_threads"]),
        "env.libx264": str(video["libx264"]),
        "env.ffmpeg": str(video["ffmpeg_libraries"].get("libavcodec")),
        "env.python": fingerprint["python"]["version"],
    }
