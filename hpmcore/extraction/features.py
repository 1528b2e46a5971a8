"""Cached encoder features of the decoded dives: I3D clip features and RegNetY-002 per-frame features.

For every dive of the decode manifest (:data:`hpmcore.extraction.decode.DECODE_MANIFEST_SCHEMA`), one cache
entry ``<features dir>/cache/<key>.safetensors`` holding

* ``i3d``: float32 ``(num_clips, 1024)`` — InceptionI3d (spec §2) on clips of ``clip_len`` frames
  starting every ``clip_stride`` frames (T = 96 → 9 clips, spec §2.3);
* ``static``: float32 ``(T, 368)`` — RegNetY-002 with no temporal module (``temporal="none"``, a pure
  per-frame encoder, spec §3.1), so per-frame features can be cached;
* ``clip_starts``: int64 ``(num_clips,)``;

and a manifest (:data:`FEATURES_MANIFEST_SCHEMA`) recording per dive the encoders, their weights'
SHA-256 (or ``random-init`` when params give no weights file), the input params and the decode
manifest row it came from (``decode_key``).

Input pipeline, the same for both encoders (spec §1.2, test time): uint8 RGB → [0, 1] → optional
centre crop (``crop_size``) → ImageNet mean/std → ``(B, 3, T, H, W)``.

The cache key covers the decode entry's key (itself a content hash of the source video), the params
that change the numbers, both weights' hashes (the init seed for a random init), the precision, the
torch/timm versions and :data:`FEATURES_CACHE_VERSION` (bumped when the encoders' code or this
preprocessing changes the features; see "Cache versions" in :mod:`hpmcore.extraction.cache`). The
device is recorded but not part of the key (CPU and CUDA fp32 agree to float rounding); AMP is, as
``precision``.

Runs batched under ``torch.inference_mode()`` on ``device`` (``auto``: CUDA when available), both
encoders channels-last (``channels_last_3d`` for I3D) on every device — on this 2-core CPU that was
1.3-2.5x faster than the default layout for both (``benchmarks/extraction.py``), with results equal
to float rounding — and with ``amp`` on CUDA under autocast (bf16 where supported, else fp16).
Non-finite features are never written: the dive fails.
"""

from __future__ import annotations

import json
import logging
import os
from contextlib import nullcontext
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pyarrow as pa
import torch

from hpmcore.config import ConfigError, FeaturesConfig, project_path
from hpmcore.extraction.cache import (
    CACHE_DIR,
    MANIFEST,
    SUFFIX,
    Compute,
    Entry,
    Extraction,
    Item,
    ItemError,
    Outcome,
    digest,
    failures_table,
    load_entry,
    read_manifest,
    run_cached,
    sha256_file,
)
from hpmcore.extraction.decode import DECODE_MANIFEST_SCHEMA, load_decoded
from hpmcore.extraction.executor import ComputeTask, Executor, LocalExecutor
from hpmcore.models.checkpoints import CheckpointError
from hpmcore.models.i3d import clip_starts
from hpmcore.runtime import resolve_device

__all__ = [
    "FEATURES_CACHE_VERSION",
    "FEATURES_MANIFEST_SCHEMA",
    "IMAGENET_MEAN",
    "IMAGENET_STD",
    "RANDOM_INIT",
    "EncoderInfo",
    "FeatureEncoders",
    "build_feature_encoders",
    "encode_batch",
    "extract_features",
    "feature_precision",
    "features_compute",
    "load_features",
    "preprocess",
]

log = logging.getLogger(__name__)

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
RANDOM_INIT = "random-init"
"""The weights hash recorded for an encoder built without a weights file."""
I3D_NAME = "InceptionI3d (Kinetics-400 RGB layout, spec §2)"
STATIC_NAME = "timm regnety_002, temporal=none (spec §3.1)"

FEATURES_MANIFEST_SCHEMA = pa.schema(
    [
        pa.field("id", pa.string(), nullable=False),
        pa.field("source_path", pa.string(), nullable=False),
        pa.field("decode_key", pa.string(), nullable=False),
        pa.field("num_frames", pa.int64(), nullable=False),
        pa.field("num_clips", pa.int64(), nullable=False),
        pa.field("i3d_encoder", pa.string(), nullable=False),
        pa.field("i3d_weights", pa.string()),
        pa.field("i3d_weights_sha256", pa.string(), nullable=False),
        pa.field("static_encoder", pa.string(), nullable=False),
        pa.field("static_weights", pa.string()),
        pa.field("static_weights_sha256", pa.string(), nullable=False),
        pa.field("device", pa.string(), nullable=False),
        pa.field("precision", pa.string(), nullable=False),
        pa.field("params", pa.string(), nullable=False),
        pa.field("key", pa.string(), nullable=False),
        pa.field("path", pa.string(), nullable=False),
    ]
)
"""Features manifest, one row per dive in decode-manifest order:

=====================  ========  =============================================================================
column                 type      meaning
=====================  ========  =============================================================================
id                     string    dive id
source_path            string    the dive's video (as in the decode manifest)
decode_key             string    key of the decode manifest row / entry the features were computed from
num_frames             int64     T (rows of ``static``)
num_clips              int64     rows of ``i3d``
i3d_encoder            string    what produced ``i3d``
i3d_weights            string    the weights file as given in params (null: random init)
i3d_weights_sha256     string    ``sha256:<hex>`` of that file, or ``random-init``
static_encoder         string    what produced ``static``
static_weights         string    as for I3D
static_weights_sha256  string    as for I3D
device                 string    where it was computed (``cpu``, ``cuda:0``)
precision              string    ``fp32``, ``amp-bf16`` or ``amp-fp16``
params                 string    JSON: clip geometry, crop, normalisation, init seed, decoded frame size
key                    string    cache key of the entry
path                   string    the entry relative to the manifest's folder: ``cache/<key>.safetensors``
=====================  ========  =============================================================================
"""


@dataclass(frozen=True)
class EncoderInfo:
    """Which encoder and weights produced a feature."""

    name: str
    weights: str | None
    """The weights path as given in params; ``None``: random initialisation."""
    weights_sha256: str
    """``sha256:<hex>`` of the weights file, or :data:`RANDOM_INIT`."""


@dataclass
class FeatureEncoders:
    """Both encoders, in eval mode on ``device``, and how they were built."""

    i3d: torch.nn.Module
    """:class:`hpmcore.models.i3d.I3DVideoEncoder`: ``(B, 3, T, H, W)`` → ``(B, J, 1024)``."""
    static: torch.nn.Module
    """:class:`hpmcore.models.static.StaticEncoder` (temporal none): ``(B, 3, T, H, W)`` → ``(B, T, 368)``."""
    device: torch.device
    precision: str
    """``fp32``, ``amp-bf16`` or ``amp-fp16``."""
    i3d_info: EncoderInfo
    static_info: EncoderInfo


def _weights(path: str | None, what: str, project_dir: Path) -> tuple[Path | None, str]:
    """The resolved weights path and its hash (``random-init`` for ``None``).

    Raises:
        CheckpointError: the file does not exist (the message names the param and the path).
    """
    if path is None:
        return None, RANDOM_INIT
    resolved = project_path(path, project_dir)
    if not resolved.is_file():
        raise CheckpointError(f"features.{what}: checkpoint {resolved}: file does not exist")
    return resolved, sha256_file(resolved)


def _check_finite(module: torch.nn.Module, path: Path | None) -> None:
    bad = [
        name for name, t in module.state_dict().items() if t.is_floating_point() and not t.isfinite().all()
    ]
    if bad:
        raise CheckpointError(f"checkpoint {path}: non-finite values (NaN/inf) in {', '.join(bad[:10])}")


def feature_precision(cfg: FeaturesConfig) -> str:
    """``fp32``, or ``amp-bf16`` / ``amp-fp16`` on CUDA with ``cfg.amp`` (bf16 where supported), for the
    device ``cfg.device`` resolves to here (part of every cache key)."""
    device = resolve_device(cfg.device, param="features.device")
    if device.type == "cuda" and cfg.amp:
        return "amp-bf16" if torch.cuda.is_bf16_supported() else "amp-fp16"
    return "fp32"


def build_feature_encoders(cfg: FeaturesConfig, *, project_dir: Path = Path(".")) -> FeatureEncoders:
    """Build both encoders from ``cfg`` (weights paths relative to ``project_dir``).

    A ``None`` weights path means a seeded random init (``cfg.init_seed``), logged as a warning here
    and by the builders. Weights are loaded strictly (:mod:`hpmcore.models.checkpoints`) and must be
    finite.

    Raises:
        CheckpointError: a weights file is missing, does not match or holds NaN/inf (names the file).
        ConfigError: ``device: cuda`` without a GPU.
    """
    from hpmcore.models.i3d import build_i3d_encoder
    from hpmcore.models.static import build_static_encoder

    device = resolve_device(cfg.device, param="features.device")
    i3d_path, i3d_hash = _weights(cfg.i3d_weights, "i3d_weights", project_dir)
    static_path, static_hash = _weights(cfg.static_weights, "static_weights", project_dir)
    for what, path in (("i3d_weights", i3d_path), ("static_weights", static_path)):
        if path is None:
            log.warning(
                "features: features.%s is null - %s features come from a RANDOMLY INITIALISED encoder "
                "(seed %d), recorded as %r in the manifest; they are not pretrained features",
                what,
                "I3D" if what == "i3d_weights" else "RegNetY-002",
                cfg.init_seed,
                RANDOM_INIT,
            )
    i3d = build_i3d_encoder(
        weights=i3d_path, seed=cfg.init_seed, clip_len=cfg.clip_len, clip_stride=cfg.clip_stride
    ).eval()
    static = build_static_encoder(weights=static_path, temporal="none", seed=cfg.init_seed).eval()
    _check_finite(i3d, i3d_path)
    _check_finite(static, static_path)
    i3d = i3d.to(device, memory_format=torch.channels_last_3d)
    static = static.to(device, memory_format=torch.channels_last)
    return FeatureEncoders(
        i3d=i3d,
        static=static,
        device=device,
        precision=feature_precision(cfg),
        i3d_info=EncoderInfo(I3D_NAME, cfg.i3d_weights, i3d_hash),
        static_info=EncoderInfo(STATIC_NAME, cfg.static_weights, static_hash),
    )


def preprocess(frames: torch.Tensor, crop_size: int | None = None) -> torch.Tensor:
    """uint8 RGB ``(B, T, H, W, 3)`` → normalised float32 ``(B, 3, T, h, w)`` (spec §1.2, test time).

    Scale to [0, 1], centre-crop to ``crop_size``² (offsets ``(H - c) // 2``, ``(W - c) // 2``: a
    112x200 frame cropped to 112 gives x 0, y 44 as in the spec), normalise with the ImageNet mean/std.

    Raises:
        ValueError: not uint8 ``(B, T, H, W, 3)``, or a crop larger than the frame.
    """
    if frames.dim() != 5 or frames.shape[-1] != 3 or frames.dtype != torch.uint8:
        raise ValueError(f"frames: expected uint8 (B, T, H, W, 3), got {frames.dtype} {tuple(frames.shape)}")
    h, w = frames.shape[2:4]
    if crop_size is not None:
        if crop_size > h or crop_size > w:
            raise ValueError(f"crop_size {crop_size} larger than the {w}x{h} frames")
        y0, x0 = (h - crop_size) // 2, (w - crop_size) // 2
        frames = frames[:, :, y0 : y0 + crop_size, x0 : x0 + crop_size]
    x = frames.permute(0, 4, 1, 2, 3).float().div_(255.0)  # (B, 3, T, h, w)
    mean = torch.tensor(IMAGENET_MEAN, device=x.device).view(1, 3, 1, 1, 1)
    std = torch.tensor(IMAGENET_STD, device=x.device).view(1, 3, 1, 1, 1)
    return (x - mean) / std


def encode_batch(
    encoders: FeatureEncoders, frames: torch.Tensor, crop_size: int | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """Features of a batch of decoded videos.

    Args:
        frames: uint8 ``(B, T, H, W, 3)`` (on any device).

    Returns:
        ``(i3d, static)``: float32 CPU tensors ``(B, num_clips, 1024)`` and ``(B, T, 368)``.
    """
    x = preprocess(frames.to(encoders.device, non_blocking=True), crop_size)  # (B, 3, T, h, w)
    amp = (
        torch.autocast("cuda", dtype=torch.bfloat16 if encoders.precision == "amp-bf16" else torch.float16)
        if encoders.precision.startswith("amp")
        else nullcontext()
    )
    with torch.inference_mode(), amp:
        i3d = encoders.i3d(x.contiguous(memory_format=torch.channels_last_3d))  # (B, J, 1024)
        static = encoders.static(x)  # (B, T, 368)
    # copies made outside inference mode are ordinary tensors (callers may edit them in place)
    return i3d.to("cpu", torch.float32, copy=True), static.to("cpu", torch.float32, copy=True)


FEATURES_CACHE_VERSION = 1
"""Cache version of the features stage's entries: bump it when a change to the encoders
(:mod:`hpmcore.models.i3d`, :mod:`hpmcore.models.static`, :mod:`hpmcore.models.gsm`), to
:func:`preprocess` or :func:`encode_batch` changes the features or the metadata of an entry for the
same decoded frames, weights and params."""


def features_compute(
    cfg: FeaturesConfig, project_dir: Path, decoded_dir: Path, params: dict[str, Any], precision: str
) -> Compute:
    """The features stage's compute function: builds both encoders (where it runs: on a Dask worker,
    on that worker's device) and turns batches of decode-manifest rows into entries.

    Raises:
        CheckpointError, ConfigError: as :func:`build_feature_encoders`.
        RuntimeError: the encoders run at another precision than ``precision`` (the keys').
    """
    encoders = build_feature_encoders(cfg, project_dir=project_dir)
    if encoders.precision != precision:
        raise RuntimeError(
            f"features: encoders on {encoders.device} run at {encoders.precision}, but the cache keys were "
            f"made for {precision} (workers with different devices?)"
        )
    common_meta = {
        "i3d_encoder": encoders.i3d_info.name,
        "i3d_weights": json.dumps(encoders.i3d_info.weights),
        "i3d_weights_sha256": encoders.i3d_info.weights_sha256,
        "static_encoder": encoders.static_info.name,
        "static_weights": json.dumps(encoders.static_info.weights),
        "static_weights_sha256": encoders.static_info.weights_sha256,
        "device": str(encoders.device),
        "precision": encoders.precision,
    }

    def compute(batch: list[Item]) -> list[Outcome]:
        outcomes: dict[int, Outcome] = {}
        loaded: dict[tuple[int, ...], list[tuple[int, torch.Tensor]]] = {}  # frames grouped by shape
        for i, item in enumerate(batch):
            try:
                frames = load_decoded(decoded_dir, item.payload)  # (T, H, W, 3)
            except ValueError as exc:
                outcomes[i] = ItemError(f"cannot read the decoded frames: {exc}")
                continue
            loaded.setdefault(tuple(frames.shape), []).append((i, frames))
        for group in loaded.values():
            i3d, static = encode_batch(encoders, torch.stack([f for _, f in group]), cfg.crop_size)
            for (i, frames), f_i3d, f_static in zip(group, i3d, static, strict=True):
                outcomes[i] = _entry(batch[i], frames, f_i3d, f_static, params, common_meta)
        return [outcomes[i] for i in range(len(batch))]

    return compute


def extract_features(
    decoded_dir: Path,
    cfg: FeaturesConfig,
    *,
    out_dir: Path,
    project_dir: Path = Path("."),
    progress: bool = True,
    executor: Executor | None = None,
) -> Extraction:
    """Compute (or reuse) the features of every dive in ``decoded_dir/manifest.parquet``.

    Weights files are hashed here and the encoders built where they run (``executor``, see
    :mod:`hpmcore.extraction.executor`; ``None``: in this process) before anything is written. Entries
    go to ``out_dir/cache``; the caller writes the rest (:meth:`~hpmcore.extraction.cache.Extraction.write`).

    Raises:
        CheckpointError: a weights file is missing, mismatched or non-finite (nothing is written).
        ConfigError: clips longer than the decoded videos; ``device: cuda`` without a GPU.
        ManifestError: the decode manifest is missing or malformed.
        ExtractionFailed: ``cfg.on_error == "fail"`` and a dive failed (unreadable decoded frames,
            non-finite features).
    """
    import timm

    executor = executor if executor is not None else LocalExecutor()
    # absolute: the workers of a cluster may run elsewhere
    decoded_dir, project_dir = Path(os.path.abspath(decoded_dir)), Path(os.path.abspath(project_dir))
    decoded = read_manifest(decoded_dir / MANIFEST, DECODE_MANIFEST_SCHEMA)
    rows = decoded.to_pylist()
    short = [r["id"] for r in rows if r["num_frames"] < cfg.clip_len]
    if short:
        raise ConfigError(
            f"features.clip_len={cfg.clip_len} is longer than the decoded videos "
            f"(decode.num_frames={rows[0]['num_frames']})"
        )
    _, i3d_hash = _weights(cfg.i3d_weights, "i3d_weights", project_dir)
    _, static_hash = _weights(cfg.static_weights, "static_weights", project_dir)
    precision = executor.run_once(feature_precision, cfg)  # where the encoders run
    log.info(
        "features: %d videos, %s executor (%s); I3D weights %s, RegNet weights %s",
        len(rows),
        executor.name,
        precision,
        i3d_hash,
        static_hash,
    )
    params = {
        "clip_len": cfg.clip_len,
        "clip_stride": cfg.clip_stride,
        "crop_size": cfg.crop_size,
        "mean": IMAGENET_MEAN,
        "std": IMAGENET_STD,
        "init_seed": cfg.init_seed,
    }
    fixed = {
        "stage": "features",
        "version": FEATURES_CACHE_VERSION,
        "params": params,
        "i3d_weights": i3d_hash,
        "static_weights": static_hash,
        "precision": precision,
        "torch": torch.__version__,
        "timm": timm.__version__,
    }
    if RANDOM_INIT not in (i3d_hash, static_hash):
        fixed["params"] = {k: v for k, v in params.items() if k != "init_seed"}
    items = [Item(r["id"], r["source_path"], digest({**fixed, "decode_key": r["key"]}), r) for r in rows]
    run = run_cached(
        items,
        Path(out_dir) / CACHE_DIR,
        ComputeTask(features_compute, (cfg, project_dir, decoded_dir, params, precision)),
        stage="features",
        on_error=cfg.on_error,
        batch_size=cfg.batch_size,
        progress=progress,
        executor=executor,
    )
    out_rows = []
    for item in run.ok:
        meta = run.metas[item.key]  # type: ignore[index]
        out_rows.append(
            {
                "id": item.id,
                "source_path": item.source,
                "decode_key": item.payload["key"],
                "num_frames": int(meta["num_frames"]),
                "num_clips": int(meta["num_clips"]),
                "i3d_encoder": meta["i3d_encoder"],
                "i3d_weights": json.loads(meta["i3d_weights"]),
                "i3d_weights_sha256": meta["i3d_weights_sha256"],
                "static_encoder": meta["static_encoder"],
                "static_weights": json.loads(meta["static_weights"]),
                "static_weights_sha256": meta["static_weights_sha256"],
                "device": meta["device"],
                "precision": meta["precision"],
                "params": meta["params"],
                "key": item.key,
                "path": f"{CACHE_DIR}/{item.key}{SUFFIX}",
            }
        )
    manifest = pa.Table.from_pylist(out_rows, schema=FEATURES_MANIFEST_SCHEMA)
    timings = run.timings()
    if "videos_per_s" in timings:
        computed = [run.metas[i.key] for i in run.computed if i.key is not None]
        timings["clips_per_s"] = round(sum(int(m["num_clips"]) for m in computed) / run.compute_seconds, 2)
        timings["frames_per_s"] = round(sum(int(m["num_frames"]) for m in computed) / run.compute_seconds, 1)
    return Extraction(manifest, failures_table(run.failures), run.stats(), timings, run)


def _entry(
    item: Item,
    frames: torch.Tensor,
    i3d: torch.Tensor,
    static: torch.Tensor,
    params: dict[str, Any],
    common_meta: dict[str, str],
) -> Entry | ItemError:
    """The cache entry of one video, or an ``ItemError`` when a feature is not finite."""
    bad = {name: int((~t.isfinite()).sum()) for name, t in (("i3d", i3d), ("static", static))}
    if any(bad.values()):
        return ItemError(
            f"non-finite features (NaN/inf: {bad['i3d']} of {i3d.numel()} I3D values, "
            f"{bad['static']} of {static.numel()} RegNet values); nothing written"
        )
    t, h, w, _ = frames.shape
    starts = torch.tensor(clip_starts(t, params["clip_len"], params["clip_stride"]), dtype=torch.int64)
    meta = {
        **common_meta,
        "num_frames": str(t),
        "num_clips": str(i3d.shape[0]),
        "decode_key": item.payload["key"],
        "params": json.dumps({**params, "decoded_height": h, "decoded_width": w}, sort_keys=True),
    }
    return Entry({"i3d": i3d, "static": static, "clip_starts": starts}, meta)


def load_features(features_dir: Path, row: dict[str, Any]) -> tuple[torch.Tensor, torch.Tensor]:
    """``(i3d (num_clips, 1024), static (T, 368))`` float32 of one features-manifest row.

    Raises:
        ValueError: the entry is unreadable or does not match the row.
    """
    path = Path(features_dir) / row["path"]
    entry = load_entry(path)
    if entry.meta.get("key") != row["key"]:
        raise ValueError(f"{path}: holds key {entry.meta.get('key')!r}, the manifest says {row['key']!r}")
    i3d, static = entry.tensors.get("i3d"), entry.tensors.get("static")
    if (
        i3d is None
        or static is None
        or i3d.shape[0] != row["num_clips"]
        or static.shape[0] != row["num_frames"]
    ):
        raise ValueError(f"{path}: tensors do not match the manifest row of {row['id']}")
    return i3d, static
