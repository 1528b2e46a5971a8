"""What a registered model version keeps so that a new video can be scored: the scoring bundle.

A bundle is a folder, written at registration (:func:`write_bundle`) from the pipeline's outputs and
stored as the data of the version's MLflow model (:mod:`hpmcore.serving.pyfunc`); scoring reads it back
(:meth:`ScoringBundle.load`) and never reads today's ``params.yaml``:

=============================  ====================================================================
file                           content
=============================  ====================================================================
``scoring.json``               the settings the model was made with: ``decode`` (T, frame size, as
                               the decode manifest records them), ``features`` (clip length and
                               stride, crop, init seed, precision, the encoders' weights SHA-256,
                               as the features manifest records them), ``pose`` (the pose stage's
                               params and its table's metadata: backend, source or mmpose model and
                               checkpoint hash, ``normalize``), ``eval`` and ``seed`` (the voters:
                               k, mode, draws), ``model`` (kind, training mode, DD mode, epoch,
                               checkpoint SHA-256), ``dive_numbers`` (each dive number of the
                               exemplar pool with its DDs), ``data`` (the dataset's params, e.g. the
                               synthetic generator's seed), ``probe`` (see below)
``checkpoint.pt``              the train stage's ``best.pt``
``exemplars.parquet``          the exemplar pool (the train split): ``id, dive_number, difficulty,
                               final_score``, one row per encoding, ids sorted
``exemplars.safetensors``      the pool's per-video encodings (:class:`~hpmcore.models.hpmcore.
                               VideoEncoding` fields: ``fused``, ``static`` ``(N, 3F, D)``,
                               ``transitions``, ``predicted`` …), computed once here as the
                               evaluation computes them (eval mode, ground truth with
                               ``exemplar_gt_at_test``)
``probe.safetensors``          one train dive's decoded frames ``(T, H, W, 3)``, its pose
                               ``(2, T, 16, 1)`` and the encoding the pipeline's inputs give it
                               (decoded transitions): scoring re-encodes these frames through its
                               own path and must find the same encoding (:mod:`hpmcore.serving.score`)
``encoders/{i3d,static}.pth``  cached mode with weights files: copies of them (SHA-256 checked
                               against the features manifest); random-init encoders are rebuilt
                               from ``init_seed`` and checked with the probe
=============================  ====================================================================

The library function here knows nothing of MLflow; :mod:`hpmcore.tracking.mlflow` stores the folder.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import shutil
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
import torch
from safetensors.torch import load_file, save_file

from hpmcore.config import (
    DecodeConfig,
    EvalConfig,
    FeaturesConfig,
    Params,
    PoseConfig,
    from_dict,
    project_path,
)
from hpmcore.data.splits import ExemplarPool
from hpmcore.extraction.cache import MANIFEST, read_manifest, sha256_file
from hpmcore.extraction.decode import DECODE_MANIFEST_SCHEMA, load_decoded
from hpmcore.extraction.features import FEATURES_MANIFEST_SCHEMA, RANDOM_INIT
from hpmcore.extraction.pose.table import SKELETONS, pose_metadata
from hpmcore.io import atomic_path, write_json, write_parquet
from hpmcore.models.end_to_end import EndToEndHPMCoRe
from hpmcore.models.hpmcore import HPMCoRe, VideoEncoding
from hpmcore.training.bank import FeatureBank, pipeline_bank
from hpmcore.training.checkpoints import CheckpointError, model_from_checkpoint
from hpmcore.training.frames import encoder_init, pipeline_frame_bank

__all__ = [
    "BUNDLE_FORMAT",
    "BUNDLE_VERSION",
    "SCORING_BUNDLE",
    "BundleError",
    "ScoringBundle",
    "heads_of",
    "load_encoding",
    "save_encoding",
    "write_bundle",
]

log = logging.getLogger(__name__)

BUNDLE_FORMAT = "hpmcore.scoring-bundle"
BUNDLE_VERSION = 1
SCORING_BUNDLE = "scoring"
"""The bundle's folder name inside a logged model (``<model>/data/scoring``)."""
SETTINGS = "scoring.json"
CHECKPOINT = "checkpoint.pt"
EXEMPLARS = "exemplars.parquet"
ENCODINGS = "exemplars.safetensors"
PROBE = "probe.safetensors"
ENCODERS_DIR = "encoders"
EXEMPLAR_SCHEMA = pa.schema(
    [
        pa.field("id", pa.string(), nullable=False),
        pa.field("dive_number", pa.string(), nullable=False),
        pa.field("difficulty", pa.float64(), nullable=False),
        pa.field("final_score", pa.float64(), nullable=False),
    ]
)
"""The exemplar table of a bundle, one row per stored encoding (in that order)."""


class BundleError(ValueError):
    """A scoring bundle cannot be written or read; the message names the file and the reason."""


def heads_of(model: Any) -> HPMCoRe:
    """The :class:`HPMCoRe` heads of a model the train stage writes (cached: the model itself; end to
    end: its ``heads``).

    Raises:
        BundleError: another kind of model (e.g. the CoRe-style baseline of the comparison).
    """
    if isinstance(model, EndToEndHPMCoRe):
        return model.heads
    if isinstance(model, HPMCoRe):
        return model
    raise BundleError(f"only HP-MCoRe models can be scored on a new video, not {type(model).__name__}")


def save_encoding(encoding: VideoEncoding, path: Path, prefix: str = "") -> dict[str, torch.Tensor]:
    """The tensors of ``encoding`` (fields that are not ``None``) named ``<prefix><field>``; written to
    ``path`` as safetensors unless ``path`` is ``None``."""
    tensors = {
        f"{prefix}{f.name}": t.detach().cpu().contiguous()
        for f in dataclasses.fields(VideoEncoding)
        if (t := getattr(encoding, f.name)) is not None
    }
    if path is not None:
        save_file(tensors, str(path))
    return tensors


def load_encoding(tensors: dict[str, torch.Tensor], prefix: str = "") -> VideoEncoding:
    """A :class:`VideoEncoding` from :func:`save_encoding`'s tensors (absent fields are ``None``)."""
    return VideoEncoding(
        **{f.name: tensors.get(f"{prefix}{f.name}") for f in dataclasses.fields(VideoEncoding)}
    )


@torch.inference_mode()
def _encode(model: Any, bank: FeatureBank, ids: Sequence[str], *, use_gt: bool, batch: int) -> VideoEncoding:
    """Encodings of ``ids`` as the evaluation computes them: the bank's inputs (cached features, or the
    frames' test view), ``model.encode`` in eval mode, ``batch`` videos at a time."""
    spec = model.input_spec("exemplar")
    videos = bank.require(list(ids), spec)
    parts = []
    for i in range(0, len(videos), batch):
        inputs = bank.stack(videos[i : i + batch], spec)
        parts.append(model.encode(inputs, use_gt=use_gt).detach())
    return VideoEncoding.cat(parts)


def _decode_settings(decoded_dir: Path) -> DecodeConfig:
    """The decode settings the decode manifest records (``hpmcore.decode`` metadata)."""
    path = Path(decoded_dir) / MANIFEST
    manifest = read_manifest(path, DECODE_MANIFEST_SCHEMA)
    raw = (manifest.schema.metadata or {}).get(b"hpmcore.decode")
    if raw is None:
        raise BundleError(f"{path}: no hpmcore.decode metadata (rerun stage decode)")
    return from_dict(DecodeConfig, dict(json.loads(raw)["params"]), "decode")


def _copy_weights(src: str | None, sha256: str, project_dir: Path, dst: Path, what: str) -> str | None:
    """Copy a weights file of the features manifest into the bundle (its SHA-256 checked); the name
    relative to the bundle, or ``None`` for a random initialisation."""
    if sha256 == RANDOM_INIT or src is None:
        return None
    path = project_path(src, project_dir)
    if not path.is_file() or sha256_file(path) != sha256:
        raise BundleError(
            f"features.{what}: {path} is missing or not the file the features were computed with ({sha256})"
        )
    dst.parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(path, dst)
    return f"{ENCODERS_DIR}/{dst.name}"


def write_bundle(
    out_dir: Path,
    *,
    checkpoint: Path,
    dives: Path,
    decoded: Path,
    pose: Path,
    features: Path,
    params: Params,
    project_dir: Path,
) -> Path:
    """Write the scoring bundle of ``checkpoint`` (the train stage's ``best.pt``) to ``out_dir``
    (replaced atomically), from the pipeline's outputs the model was trained on.

    Args:
        out_dir: the bundle folder to write.
        checkpoint: the model (cached HP-MCoRe or end to end; rebuilt from the file alone).
        dives, decoded, pose, features: the ``prepare`` table and the extraction stages' folders.
        params: the parameters that produced them (the ``pose`` section, ``eval``, ``seed``, ``data``;
            the decode and features settings are taken from the manifests, which record what ran).
        project_dir: relative paths in ``params`` (weights files, data root) are relative to it.

    Returns:
        ``out_dir``.

    Raises:
        BundleError: a model that is not HP-MCoRe, outputs that disagree with ``params`` (the pose
            stage ran with another backend or normalisation: rerun the pipeline), a weights file that
            changed since the features were computed.
        CheckpointError, DatasetError, ManifestError: unreadable inputs (naming the file).
    """
    model, info = model_from_checkpoint(Path(checkpoint))
    heads = heads_of(model)
    end_to_end = isinstance(model, EndToEndHPMCoRe)
    project_dir = Path(project_dir)
    root = params.data.root_path(project_dir)
    load = pipeline_frame_bank if end_to_end else pipeline_bank
    bank = load(Path(dives), Path(decoded), Path(features), Path(pose), data_root=root)
    dims = bank.require_dims()
    if (dims.num_frames, dims.clip_stride) != (heads.config.num_frames, heads.config.clip_stride):
        raise CheckpointError(
            f"checkpoint {checkpoint} was trained on T={heads.config.num_frames}, clip stride "
            f"{heads.config.clip_stride}; the features have T={dims.num_frames}, stride {dims.clip_stride}"
        )

    decode = _decode_settings(Path(decoded))
    features_manifest = read_manifest(Path(features) / MANIFEST, FEATURES_MANIFEST_SCHEMA)
    used = set(bank.videos)
    kept = features_manifest.filter(pa.array([i in used for i in features_manifest.column("id").to_pylist()]))
    init = encoder_init(kept, Path(features) / MANIFEST)
    precision = sorted(set(kept.column("precision").to_pylist()))
    skeleton_schema = pq.read_schema(Path(pose) / SKELETONS)
    pose_meta = pose_metadata(skeleton_schema)
    if pose_meta.get("backend") != params.pose.backend or pose_meta.get("normalize") != params.pose.normalize:
        raise BundleError(
            f"{Path(pose) / SKELETONS} was made with pose backend {pose_meta.get('backend')!r}, normalize "
            f"{pose_meta.get('normalize')!r}; params.yaml says {params.pose.backend!r}, "
            f"{params.pose.normalize!r} (rerun the pipeline)"
        )

    pool = bank.pool("train")
    model.eval()
    eval_cfg: EvalConfig = params.eval
    with atomic_path(Path(out_dir)) as tmp:
        tmp.mkdir()
        shutil.copyfile(checkpoint, tmp / CHECKPOINT)
        i3d_file = static_file = None
        if not end_to_end:
            i3d_file = _copy_weights(
                init.i3d_weights,
                init.i3d_weights_sha256,
                project_dir,
                tmp / ENCODERS_DIR / "i3d.pth",
                "i3d_weights",
            )
            static_file = _copy_weights(
                init.static_weights,
                init.static_weights_sha256,
                project_dir,
                tmp / ENCODERS_DIR / "static.pth",
                "static_weights",
            )
        features_cfg = dataclasses.replace(
            params.features,
            i3d_weights=i3d_file,
            static_weights=static_file,
            init_seed=init.init_seed,
            clip_len=init.clip_len,
            clip_stride=init.clip_stride,
            crop_size=init.crop_size,
        )
        # the pool's encodings, as the evaluation computes them
        encodings = _encode(
            model, bank, pool.ids, use_gt=model.exemplar_uses_gt(), batch=eval_cfg.encode_batch_size
        )
        save_encoding(encodings, tmp / ENCODINGS)
        labels = [bank.label(i) for i in pool.ids]
        write_parquet(
            pa.Table.from_pylist(
                [{k: lab[k] for k in EXEMPLAR_SCHEMA.names} for lab in labels], schema=EXEMPLAR_SCHEMA
            ),
            tmp / EXEMPLARS,
        )
        # the probe: one dive's decoded frames and what the pipeline's inputs give it
        probe_id = pool.ids[0]
        decode_rows = {
            r["id"]: r for r in read_manifest(Path(decoded) / MANIFEST, DECODE_MANIFEST_SCHEMA).to_pylist()
        }
        frames = load_decoded(Path(decoded), decode_rows[probe_id])  # (T, H, W, 3)
        probe = {"frames": frames.contiguous()}
        video = bank.get(probe_id)
        if video.skeleton is not None:
            probe["skeleton"] = video.skeleton.float().contiguous()  # (2, T, 16, 1)
        probe_encoding = _encode(model, bank, [probe_id], use_gt=False, batch=1)
        probe.update(save_encoding(probe_encoding, None, prefix="encoding."))
        save_file(probe, str(tmp / PROBE))

        dive_numbers: dict[str, list[float]] = {}
        for dn, dd in zip(pool.dive_numbers, pool.difficulties, strict=True):
            dive_numbers.setdefault(dn, [])
            if dd not in dive_numbers[dn]:
                dive_numbers[dn].append(dd)
        settings = {
            "format": BUNDLE_FORMAT,
            "version": BUNDLE_VERSION,
            "model": {
                "kind": info.kind,
                "train_mode": "end_to_end" if end_to_end else "cached",
                "dd_mode": info.dd_mode,
                "epoch": info.epoch,
                "val": info.val,
                "checkpoint_sha256": sha256_file(Path(checkpoint)),
                "num_frames": heads.config.num_frames,
                "clip_stride": heads.config.clip_stride,
            },
            "decode": dataclasses.asdict(decode),
            "features": dataclasses.asdict(features_cfg),
            "encoders": {
                "i3d_weights": init.i3d_weights,
                "i3d_weights_sha256": init.i3d_weights_sha256,
                "static_weights": init.static_weights,
                "static_weights_sha256": init.static_weights_sha256,
                "precision": precision,
            },
            "pose": dataclasses.asdict(params.pose),
            "pose_metadata": pose_meta,
            "eval": dataclasses.asdict(eval_cfg),
            "seed": params.seed,
            "dive_numbers": {dn: sorted(dds) for dn, dds in sorted(dive_numbers.items())},
            "exemplars": {"count": len(pool.ids), "use_gt": model.exemplar_uses_gt()},
            "probe": {"id": probe_id},
            "data": {"data": dataclasses.asdict(params.data), "synth": dataclasses.asdict(params.synth)},
        }
        write_json(settings, tmp / SETTINGS)
    log.info(
        "scoring bundle %s: %s (%s), %d exemplars, T=%d, %dx%d",
        out_dir,
        info.kind,
        settings["model"]["train_mode"],
        len(pool.ids),
        decode.num_frames,
        decode.width,
        decode.height,
    )
    return Path(out_dir)


@dataclass(frozen=True)
class ScoringBundle:
    """A bundle read back (see the module docstring)."""

    path: Path
    settings: dict[str, Any]
    exemplars: pa.Table
    """``id, dive_number, difficulty, final_score``, rows in encoding order."""
    encodings: VideoEncoding
    probe: dict[str, torch.Tensor]

    @classmethod
    def load(cls, path: Path) -> ScoringBundle:
        """Read a bundle folder.

        Raises:
            BundleError: a missing or malformed file, or a bundle of another format or version.
        """
        path = Path(path)
        try:
            settings = json.loads((path / SETTINGS).read_text())
        except (OSError, ValueError) as exc:
            raise BundleError(f"{path / SETTINGS}: not a scoring bundle ({exc})") from None
        if settings.get("format") != BUNDLE_FORMAT or settings.get("version") != BUNDLE_VERSION:
            raise BundleError(
                f"{path / SETTINGS}: format {settings.get('format')!r} version {settings.get('version')!r}, "
                f"this code reads {BUNDLE_FORMAT!r} version {BUNDLE_VERSION}"
            )
        try:
            exemplars = pq.read_table(path / EXEMPLARS)
            encodings = load_encoding(load_file(str(path / ENCODINGS)))
            probe = load_file(str(path / PROBE))
        except (OSError, ValueError, RuntimeError) as exc:
            raise BundleError(f"{path}: unreadable scoring bundle ({exc})") from None
        if exemplars.schema.names != EXEMPLAR_SCHEMA.names or exemplars.num_rows != len(encodings):
            raise BundleError(f"{path / EXEMPLARS}: does not match {ENCODINGS} ({len(encodings)} encodings)")
        return cls(path, settings, exemplars, encodings, probe)

    @property
    def checkpoint(self) -> Path:
        """The model's ``best.pt``."""
        return self.path / CHECKPOINT

    @property
    def decode(self) -> DecodeConfig:
        """The decode settings the model was trained with (T, frame size)."""
        return from_dict(DecodeConfig, {**self.settings["decode"], "on_error": "fail"}, "decode")

    def features(self, device: str = "auto") -> FeaturesConfig:
        """The features settings (weights files inside the bundle; ``device`` for the encoders)."""
        raw = dict(self.settings["features"])
        for key in ("i3d_weights", "static_weights"):
            if raw[key] is not None:
                raw[key] = str(self.path / raw[key])
        return from_dict(FeaturesConfig, {**raw, "device": device}, "features")

    @property
    def pose(self) -> PoseConfig:
        """The pose stage's params the model was trained with."""
        return from_dict(PoseConfig, dict(self.settings["pose"]), "pose")

    @property
    def eval(self) -> EvalConfig:
        """The evaluation's voters (k, mode, draws) the model was evaluated with."""
        return from_dict(EvalConfig, dict(self.settings["eval"]), "eval")

    @property
    def seed(self) -> int:
        """The voter seed (``params.seed``)."""
        return int(self.settings["seed"])

    @property
    def dd_mode(self) -> bool:
        """Whether the model regresses completeness (votes in DD mode)."""
        return bool(self.settings["model"]["dd_mode"])

    @property
    def end_to_end(self) -> bool:
        """Whether the model holds its own encoders (``train.mode: end_to_end``)."""
        return self.settings["model"]["train_mode"] == "end_to_end"

    @property
    def dive_numbers(self) -> dict[str, list[float]]:
        """Each dive number of the exemplar pool with its DDs."""
        return {k: list(v) for k, v in self.settings["dive_numbers"].items()}

    def pool(self) -> ExemplarPool:
        """The exemplar pool (ids sorted, as :meth:`FeatureBank.pool` builds it)."""
        rows = self.exemplars.to_pylist()
        return ExemplarPool(
            ids=tuple(r["id"] for r in rows),
            dive_numbers=tuple(r["dive_number"] for r in rows),
            difficulties=tuple(float(r["difficulty"]) for r in rows),
        )
