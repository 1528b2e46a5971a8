"""Tiny outputs of the stages before training (prepare, decode, pose, features) written directly, and a
tiny params.yaml, for tests of the feature bank and of the model stages (used by test_train.py and
test_runs.py). Features: I3D (3 clips, 16 wide), static (T = 12, 12 wide), clip stride 4; a dive's score
is carried by I3D channel 0, so a model can learn it."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import torch
import yaml

from hpmcore.data.canonical import annotation_table
from hpmcore.data.finediving import linspace_indices
from hpmcore.extraction.cache import FAILURE_SCHEMA, Entry, save_entry
from hpmcore.extraction.decode import DECODE_MANIFEST_SCHEMA
from hpmcore.extraction.features import FEATURES_MANIFEST_SCHEMA
from hpmcore.extraction.pose.table import DiveSkeleton, skeleton_table

T, START, N, CLIPS, I3D, STATIC, STRIDE = 12, 5, 20, 3, 16, 12, 4
LABELS = [0] * 6 + [1] * 8 + [2] * 6
"""Steps change at dive frames 6 and 14: at the T sampled frames 0,1,3,5,6,8,10,12,13,15,17,19 stage 2
starts at sample 4, stage 3 at sample 9."""
STAGES = ("decode", "pose", "features")

TINY_PARAMS = {
    "seed": 0,
    "data": {"root": "root"},
    "model": {
        "dim": 16,
        "heads": 2,
        "decoder_depth": 1,
        "mlp_ratio": 2,
        "reducer_extra": 8,
        "fix_size": 2,
        "gru_hidden": 8,
        "dn_classes": 5,
        "skeleton_channels": 8,
        "input_norm": True,
    },
    "train": {
        "epochs": 2,
        "batch_size": 4,
        "pairing": "any",
        "val_exemplars": 2,
        "val_exemplar_mode": "any",
        "device": "cpu",
    },
    "eval": {"exemplars": 3, "exemplar_mode": "any", "num_voter_draws": 2, "device": "cpu"},
}
"""A tiny HP-MCoRe run on CPU (the feature sizes come from the features, not from here)."""


@dataclass(frozen=True)
class Dive:
    """One dive of the tiny dataset."""

    id: str
    split: str
    labels: bool = True
    """False: null transitions/frame_labels (unusable step labels, kept by ``prepare``)."""
    failed: str | None = None
    """An extraction stage (decode, pose, features) that recorded this dive as failed: it is missing
    from that stage's outputs and the later ones, with a failures-table row."""
    missing: bool = False
    """Missing from the features manifest with no failures row (an inconsistent pipeline)."""


def dives(train: int = 8, val: int = 3, test: int = 4) -> list[Dive]:
    """Dives ``<split>/<n>`` of ``train``, ``val`` and ``test``."""
    return [
        Dive(f"{s}/{n}", s)
        for s, count in (("train", train), ("val", val), ("test", test))
        for n in range(count)
    ]


def write_stage_outputs(
    root: Path, spec: list[Dive], *, seed: int = 0, frames: bool = False
) -> dict[str, Path]:
    """Write ``dives.parquet`` and the ``decoded``, ``pose``, ``features`` folders (manifests, caches,
    failures tables) under ``root``; returns their paths (``dives``, ``decoded``, ``pose``, ``features``).
    ``frames``: also the decode cache entries, uint8 ``(T, 32, 32, 3)`` frames whose brightness follows
    the score (for end-to-end training)."""
    g = torch.Generator().manual_seed(seed)
    indices = (linspace_indices(START, START + N - 1, T) + START).tolist()
    paths = {
        "dives": root / "dives.parquet",
        "decoded": root / "decoded",
        "pose": root / "pose",
        "features": root / "features",
    }
    rows, decode, features, poses = [], [], [], []
    failures: dict[str, list[dict]] = {s: [] for s in STAGES}
    for k, d in enumerate(spec):
        i3d = torch.randn(CLIPS, I3D, generator=g)
        rows.append(
            dict(
                id=d.id,
                video_name=d.id.split("/")[0],
                dive_index=int(d.id.split("/")[1]),
                video_path=f"{d.id.split('/')[0]}.mp4",
                start_frame=START,
                end_frame=START + N - 1,
                num_frames=N,
                dive_number=("101a", "201b")[k % 2],
                difficulty=(2.0, 3.0)[k % 2],
                judge_scores=[],
                final_score=round(60.0 + 10.0 * float(i3d[:, 0].mean()), 3),
                transitions=[5, 13] if d.labels else None,
                frame_labels=LABELS if d.labels else None,
                split=d.split,
            )
        )
        stage_index = STAGES.index(d.failed) if d.failed else len(STAGES)
        if d.failed:
            failures[d.failed].append(
                {"stage": d.failed, "id": d.id, "source": "v.mp4", "key": None, "reason": f"{d.id}: broken"}
            )
        if stage_index > 0 and frames:
            level = 255 * torch.sigmoid(i3d[:, 0].mean())  # brighter for a higher score
            noise = torch.rand(T, 32, 32, 3, generator=g) * 60
            pixels = (level * 0.7 + noise).clamp(0, 255).to(torch.uint8)
            save_entry(
                Entry({"frames": pixels, "indices": torch.tensor(indices)}, {"key": f"dk{k}"}),
                paths["decoded"] / "cache" / f"dk{k}.safetensors.zst",
            )
        if stage_index > 0:
            decode.append(
                dict(
                    id=d.id,
                    source_path="v.mp4",
                    source_hash="sha256:0",
                    start_frame=START,
                    end_frame=START + N - 1,
                    source_num_frames=40,
                    fps=25.0,
                    indices=indices,
                    num_frames=T,
                    height=32,
                    width=32,
                    key=f"dk{k}",
                    path=f"cache/dk{k}.safetensors.zst",
                )
            )
        if stage_index > 1:
            xy = torch.rand(T, 16, 2, generator=g).numpy() * np.array([64, 48], dtype=np.float32)
            poses.append(DiveSkeleton(d.id, np.array(indices), xy, np.ones((T, 16), np.float32), 64, 48))
        if stage_index > 2 and not d.missing:
            static = torch.randn(T, STATIC, generator=g)
            save_entry(
                Entry(
                    {"i3d": i3d, "static": static, "clip_starts": torch.arange(CLIPS) * STRIDE},
                    {"key": f"fk{k}"},
                ),
                paths["features"] / "cache" / f"fk{k}.safetensors",
            )
            features.append(
                dict(
                    id=d.id,
                    source_path="v.mp4",
                    decode_key=f"dk{k}",
                    num_frames=T,
                    num_clips=CLIPS,
                    i3d_encoder="i3d",
                    i3d_weights=None,
                    i3d_weights_sha256="random-init",
                    static_encoder="regnet",
                    static_weights=None,
                    static_weights_sha256="random-init",
                    device="cpu",
                    precision="fp32",
                    params=json.dumps({"clip_len": 4, "clip_stride": STRIDE}),
                    key=f"fk{k}",
                    path=f"cache/fk{k}.safetensors",
                )
            )
    for folder in ("decoded", "pose", "features"):
        paths[folder].mkdir(parents=True, exist_ok=True)
    pq.write_table(annotation_table(rows), paths["dives"])
    pq.write_table(
        pa.Table.from_pylist(decode, schema=DECODE_MANIFEST_SCHEMA), paths["decoded"] / "manifest.parquet"
    )
    pq.write_table(
        pa.Table.from_pylist(features, schema=FEATURES_MANIFEST_SCHEMA),
        paths["features"] / "manifest.parquet",
    )
    pq.write_table(
        skeleton_table(poses, {"normalize": "frame", "num_frames": T}), paths["pose"] / "skeletons.parquet"
    )
    for stage, folder in zip(STAGES, ("decoded", "pose", "features"), strict=True):
        pq.write_table(
            pa.Table.from_pylist(failures[stage], schema=FAILURE_SCHEMA), paths[folder] / "failures.parquet"
        )
    return paths


def write_params(path: Path, **sections: dict) -> Path:
    """:data:`TINY_PARAMS` with ``sections`` merged in, as ``path`` (a params.yaml); ``data.root`` is
    created beside it."""
    params = {k: dict(v) if isinstance(v, dict) else v for k, v in TINY_PARAMS.items()}
    for name, values in sections.items():
        params.setdefault(name, {}).update(values)
    path.write_text(yaml.safe_dump(params, sort_keys=False))
    (path.parent / params["data"]["root"]).mkdir(exist_ok=True)
    return path
