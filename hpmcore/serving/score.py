"""Scoring a new video with a registered model: one dive → predicted score, stage boundaries, per-stage
contributions.

:class:`Scorer` reads a scoring bundle (:mod:`hpmcore.serving.bundle`: what the model version recorded)
and runs the **pipeline's own code** on the video, whatever the model's training mode:

1. decode: :func:`hpmcore.extraction.video.decode_dive` with the recorded decode settings (T, frame size;
   the whole video, or the frame folder's frames, is the dive);
2. pose: the skeleton at the sampled frames, from a file (``--pose``: a canonical skeleton Parquet of one
   dive, a FineDiving-Pose ``.npz`` or an MPII-style JSON list with one entry per source frame, read by
   the pose stage's ``annotations`` backend) or, when the model's pose stage ran ``mmpose``, by that
   backend with the recorded model (its checkpoint SHA-256 checked); normalised as recorded;
3. inputs: cached mode — the features stage's encoders (:func:`~hpmcore.extraction.features.
   build_feature_encoders`, weights from the bundle or the recorded ``init_seed``) and
   :func:`~hpmcore.extraction.features.encode_batch`, in a one-video
   :class:`~hpmcore.training.bank.FeatureBank`; end to end — the decoded frames in a one-video
   :class:`~hpmcore.training.frames.FrameBank` (its test view: the recorded centre crop), encoded by the
   model's own encoders; both stacked by the bank as the evaluation stacks them;
4. the model (rebuilt from the bundle's checkpoint): ``encode`` in eval mode (decoded transitions), then
   the pair heads against the **stored exemplar encodings** — ``eval.num_voter_draws`` draws of
   ``eval.exemplars`` voters (:func:`~hpmcore.data.splits.select_exemplars` seeded by
   :func:`~hpmcore.training.evaluate.voter_seed`, per query id), ``ŝ = mean_e (Δ + s_e)``, or in DD mode
   ``DD · mean_e (Δ + s_e / DD_e)``, averaged over draws, as :mod:`hpmcore.training.evaluate` votes.

**Contributions.** HP-MCoRe's Δ is a weighted sum over the three stages (``Δ = Σ_k c_k`` with
``c_k = w_k (δ_fu^k + λ δ_st^k) / (1 + λ)``, the normalised stage weights ``w_k``), so the score splits
exactly into ``baseline + Σ_k contribution_k``: the baseline is the voters' mean score (DD mode:
``DD · mean s_e / DD_e``) and ``contribution_k`` the mean over voters and draws of ``c_k`` (× DD in DD
mode). The parts are checked to add up to the model's own Δ.

**Boundaries.** The model's two transitions are the first sampled frames of flight and of entry; they
are reported as source frame numbers (the sampled frames' numbers in the mp4, or the JPEG numbers of a
frame folder) and in seconds where the frame rate is known (mp4, or ``fps`` given).

**The probe.** On start the scorer re-encodes the bundle's probe (one train dive's decoded frames and
pose) through steps 3–4 and compares the result with the encoding the pipeline's inputs gave that dive
at registration; a difference means scoring would not see what the model was trained on (other encoder
weights, another torch/timm version) and is an error for fp32 features (a warning when the features
were computed under AMP on a GPU).

The JSON document of a result follows :data:`SCORE_JSON_SCHEMA` (``hpmcore score --json``).
"""

from __future__ import annotations

import dataclasses
import logging
import math
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from hpmcore.config import ConfigError, PoseConfig
from hpmcore.data.canonical import DatasetError
from hpmcore.data.finediving import read_finediving_pose, read_mpii_json
from hpmcore.data.splits import select_exemplars
from hpmcore.extraction.cache import ItemError, source_hash
from hpmcore.extraction.features import build_feature_encoders, encode_batch
from hpmcore.extraction.pose.annotations import NPZ_SAMPLES, check_npz_size, read_skeleton_table
from hpmcore.extraction.pose.stage import pose_backend
from hpmcore.extraction.pose.table import DiveSkeleton, PoseError, normalize_skeleton
from hpmcore.extraction.video import FRAME_SUFFIXES, VideoError, decode_dive, probe
from hpmcore.models.decoder import decode_stages
from hpmcore.models.end_to_end import EndToEndHPMCoRe
from hpmcore.models.hpmcore import HPMCoRe, VideoEncoding
from hpmcore.runtime import resolve_device
from hpmcore.serving.bundle import BundleError, ScoringBundle, heads_of, load_encoding
from hpmcore.training.bank import FeatureBank, FeatureBankError, VideoFeatures
from hpmcore.training.checkpoints import CheckpointError, model_from_checkpoint
from hpmcore.training.evaluate import voter_seed
from hpmcore.training.frames import FrameBank, VideoFrames

__all__ = [
    "POSE_FORMATS",
    "SCORE_JSON_SCHEMA",
    "SCORE_SCHEMA_ID",
    "SCORING_ERRORS",
    "STAGES",
    "ScoreResult",
    "Scorer",
    "ScoringError",
    "Source",
    "describe_source",
    "stage_contributions",
    "videos_in",
]

log = logging.getLogger(__name__)

SCORE_SCHEMA_ID = "hpmcore.score/1"
STAGES = ("take-off", "flight", "entry")
POSE_FORMATS = {".parquet": "skeletons", ".npz": "finediving-npz", ".json": "mpii-json"}
"""Pose file suffix → the ``annotations`` backend's source that reads it."""
PROBE_TOLERANCE = {"fp32": 1e-3, "amp": 5e-2}
"""Largest relative difference (max |a − b| / max |b|) of the probe's tokens: fp32 features, or features
computed under AMP (then only a warning above it)."""


class ScoringError(ValueError):
    """A video cannot be scored as asked (unknown dive number, pose that does not fit the video, a model
    without what scoring needs); the message names the file or value and the reason."""


SCORING_ERRORS = (
    ScoringError,
    VideoError,
    DatasetError,
    PoseError,
    BundleError,
    CheckpointError,
    ConfigError,
)
"""What :meth:`Scorer.score` and :class:`Scorer` raise for bad input (the CLI exits 2 on them)."""


def _nullable(kind: str) -> dict[str, Any]:
    return {"type": [kind, "null"]}


_FRAME = {"type": "integer"}
SCORE_JSON_SCHEMA: dict[str, Any] = {
    "$schema": "https://json-schema.org/draft/2020-12/schema",
    "$id": SCORE_SCHEMA_ID,
    "title": "hpmcore score: one scored dive",
    "type": "object",
    "additionalProperties": False,
    "required": [
        "schema",
        "video",
        "source",
        "dive_number",
        "difficulty",
        "score",
        "score_std",
        "baseline",
        "stages",
        "boundaries",
        "voters",
        "pose",
        "model",
        "sampled_frames",
    ],
    "properties": {
        "schema": {"const": SCORE_SCHEMA_ID},
        "video": {"type": "string", "description": "the scored mp4 or JPEG frame folder, as given"},
        "source": {
            "type": "object",
            "additionalProperties": False,
            "required": ["kind", "num_frames", "first_frame", "fps", "width", "height", "sha256"],
            "properties": {
                "kind": {"enum": ["mp4", "frames"]},
                "num_frames": {"type": "integer", "minimum": 1},
                "first_frame": _FRAME,
                "fps": {**_nullable("number"), "description": "mp4: its frame rate; frames: as given"},
                "width": {"type": "integer"},
                "height": {"type": "integer"},
                "sha256": {"type": "string", "pattern": "^sha256:[0-9a-f]{64}$"},
            },
        },
        "dive_number": {"type": "string"},
        "difficulty": {"type": "number", "exclusiveMinimum": 0},
        "score": {"type": "number", "description": "mean over voter draws"},
        "score_std": {**_nullable("number"), "description": "sample std over voter draws (null: 1 draw)"},
        "baseline": {
            "type": "number",
            "description": "the voters' mean score (DD mode: DD x mean score/DD); score = baseline + the "
            "stages' contributions",
        },
        "stages": {
            "type": "array",
            "minItems": 3,
            "maxItems": 3,
            "items": {
                "type": "object",
                "additionalProperties": False,
                "required": ["name", "start_frame", "end_frame", "start_s", "end_s", "contribution"],
                "properties": {
                    "name": {"enum": list(STAGES)},
                    "start_frame": {
                        **_nullable("integer"),
                        "description": "first source frame; null: an empty stage (a boundary at frame 0)",
                    },
                    "end_frame": _nullable("integer"),
                    "start_s": _nullable("number"),
                    "end_s": _nullable("number"),
                    "contribution": {"type": "number", "description": "points this stage adds to baseline"},
                },
            },
        },
        "boundaries": {
            "type": "array",
            "minItems": 2,
            "maxItems": 2,
            "items": {
                "type": "object",
                "additionalProperties": False,
                "required": ["from", "to", "sampled_index", "frame", "seconds"],
                "properties": {
                    "from": {"enum": list(STAGES)},
                    "to": {"enum": list(STAGES)},
                    "sampled_index": {"type": "integer", "minimum": 0},
                    "frame": {**_FRAME, "description": "source frame number of the first frame of `to`"},
                    "seconds": _nullable("number"),
                },
            },
        },
        "voters": {
            "type": "object",
            "additionalProperties": False,
            "required": [
                "exemplars",
                "exemplar_mode",
                "num_voter_draws",
                "seed",
                "query_id",
                "dd_mode",
                "draws",
            ],
            "properties": {
                "exemplars": {"type": "integer"},
                "exemplar_mode": {"enum": ["dive_number", "difficulty", "any"]},
                "num_voter_draws": {"type": "integer"},
                "seed": {"type": "integer"},
                "query_id": {"type": "string"},
                "dd_mode": {"type": "boolean"},
                "draws": {
                    "type": "array",
                    "items": {
                        "type": "object",
                        "additionalProperties": False,
                        "required": ["exemplars", "score"],
                        "properties": {
                            "exemplars": {"type": "array", "items": {"type": "string"}},
                            "score": {"type": "number"},
                        },
                    },
                },
            },
        },
        "pose": {
            "type": "object",
            "additionalProperties": False,
            "required": ["source", "file", "format"],
            "properties": {
                "source": {"enum": ["file", "mmpose", "none"]},
                "file": _nullable("string"),
                "format": {"enum": [*POSE_FORMATS.values(), None]},
            },
        },
        "model": {
            "type": "object",
            "additionalProperties": False,
            "required": ["ref", "kind", "train_mode", "dd_mode", "checkpoint_sha256", "num_frames"],
            "properties": {
                "ref": _nullable("string"),
                "kind": {"type": "string"},
                "train_mode": {"enum": ["cached", "end_to_end"]},
                "dd_mode": {"type": "boolean"},
                "checkpoint_sha256": {"type": "string"},
                "num_frames": {"type": "integer"},
            },
        },
        "sampled_frames": {"type": "array", "items": _FRAME, "description": "the T source frames"},
    },
}
"""JSON Schema of one result of ``hpmcore score --json`` (the batch form prints a list of them)."""


# ---------------------------------------------------------------------------------------------------------
# Sources


@dataclass(frozen=True)
class Source:
    """The video being scored (the whole video, or every frame of the folder, is the dive)."""

    path: Path
    kind: str
    """``mp4`` or ``frames`` (a FineDiving-style JPEG frame folder)."""
    num_frames: int
    first_frame: int
    """0 for an mp4; the smallest JPEG number of a frame folder."""
    fps: float | None
    width: int
    height: int
    sha256: str
    """Content hash of the video (the decode stage's ``source_hash``)."""

    @property
    def last_frame(self) -> int:
        return self.first_frame + self.num_frames - 1

    def seconds(self, frame: int) -> float | None:
        """Time of source frame ``frame`` (frame ``first_frame`` at 0 s), when the frame rate is known."""
        return None if not self.fps else (frame - self.first_frame) / self.fps


def describe_source(path: Path, fps: float | None = None) -> Source:
    """Probe an mp4 or a JPEG frame folder (frame count, size, frame rate) and hash its content.

    Args:
        fps: the frame rate of a frame folder (an mp4's own rate is used for an mp4).

    Raises:
        VideoError: a missing, empty, unreadable or non-video file, or a frame folder without JPEGs or
            with a gap (naming the path).
    """
    path = Path(path)
    if not path.exists():
        raise VideoError(f"{path}: file not found")
    info = probe(path)
    try:
        sha = source_hash(path, FRAME_SUFFIXES)
    except ItemError as exc:
        raise VideoError(str(exc)) from None
    kind = "frames" if path.is_dir() else "mp4"
    rate = info.fps if kind == "mp4" else fps
    return Source(path, kind, info.num_frames, info.first_frame, rate, info.width, info.height, sha)


def videos_in(folder: Path) -> list[Path]:
    """The videos of a batch folder, sorted by name: its ``*.mp4`` files and its sub-folders holding JPEG
    frames.

    Raises:
        ScoringError: the folder holds no video.
    """
    folder = Path(folder)
    found = []
    for entry in sorted(folder.iterdir()):
        if (entry.is_file() and entry.suffix.lower() == ".mp4") or is_frame_folder(entry):
            found.append(entry)
    if not found:
        raise ScoringError(f"{folder}: no videos (*.mp4 files or folders of JPEG frames) to score")
    return found


def is_frame_folder(path: Path) -> bool:
    """Whether ``path`` is a folder holding JPEG frames (one video), as opposed to a batch folder."""
    path = Path(path)
    return path.is_dir() and any(p.suffix.lower() in FRAME_SUFFIXES for p in path.iterdir())


# ---------------------------------------------------------------------------------------------------------
# Contributions


def stage_contributions(heads: HPMCoRe, query: VideoEncoding, exemplar: VideoEncoding) -> torch.Tensor:
    """``(B, 3)`` per-stage parts ``c_k`` of Δ^{qe} for B (query, exemplar) pairs: the pair heads of
    :meth:`HPMCoRe.forward_pair` with the stage-weighted sum left unsummed, so that ``Σ_k c_k = Δ^{qe}``
    (``c_k = s·w_k (δ_fu^k + λ δ_st^k) / (1 + λ)``, ``w`` the normalised stage weights, ``s`` the
    model's ``delta_scale``)."""
    b = len(query)
    w = heads.config.delta_scale * heads.stage_weights.normalized()  # (3,)
    fu = heads.regressors["fu"](decode_stages(heads.decoders["fu"], query.fused, exemplar.fused))[:b] * w
    if not heads.config.use_static:
        return fu  # (B, 3)
    st = heads.regressors["st"](decode_stages(heads.decoders["st"], query.static, exemplar.static))[:b] * w
    lam = heads.config.lam
    return (fu + lam * st) / (1.0 + lam)


# ---------------------------------------------------------------------------------------------------------
# Results


@dataclass(frozen=True)
class ScoreResult:
    """One scored video: the JSON document (:data:`SCORE_JSON_SCHEMA`) and what a plot needs."""

    document: dict[str, Any]
    source: Source
    indices: np.ndarray
    """int64 ``(T,)``: the sampled source frames."""
    skeleton: DiveSkeleton | None
    """The pose at the sampled frames, in source pixels (``None`` for a model without pose and no file)."""
    transitions: tuple[int, int]
    """The predicted transitions as sampled indices (first frame of flight, of entry)."""

    @property
    def score(self) -> float:
        return float(self.document["score"])

    def text(self) -> str:
        """The human-readable report ``hpmcore score`` prints."""
        d, s = self.document, self.source
        rate = f", {s.fps:g} fps" if s.fps else ""
        lines = [
            f"{d['video']}: {s.kind}, {s.num_frames} frames ({s.first_frame}..{s.last_frame}){rate}",
            f"dive {d['dive_number']} (DD {d['difficulty']:g}); "
            f"model {d['model']['ref'] or d['model']['kind']} ({d['model']['train_mode']})",
        ]
        v = d["voters"]
        std = f" ± {d['score_std']:.2f}" if d["score_std"] is not None else ""
        lines.append(
            f"predicted score {d['score']:.2f}{std} ({v['num_voter_draws']} voter draws x {v['exemplars']} "
            f"exemplars, {v['exemplar_mode']})"
        )
        lines.append("stage boundaries:")
        for b in d["boundaries"]:
            at = f" ({b['seconds']:.2f} s)" if b["seconds"] is not None else ""
            lines.append(f"  {b['from']} -> {b['to']}: frame {b['frame']}{at}")
        lines.append("per-stage contributions (score = exemplar baseline + contributions):")
        lines.append(f"  {'exemplar baseline':<22}{d['baseline']:8.2f}")
        for st in d["stages"]:
            span = (
                f"frames {st['start_frame']}-{st['end_frame']}"
                if st["start_frame"] is not None
                else "(empty)"
            )
            lines.append(f"  {st['name']:<9}{span:<13}{st['contribution']:+8.2f}")
        return "\n".join(lines)


# ---------------------------------------------------------------------------------------------------------
# The scorer


class Scorer:
    """Scores videos with the model of a scoring bundle (see the module docstring).

    Args:
        bundle: the model version's scoring bundle.
        device: ``auto`` | ``cpu`` | ``cuda`` for the model and the encoders.
        project_dir: where relative paths of an ``mmpose`` pose config are resolved.
        ref: how the model was named (``hpmcore/3``), for the reports.
        check: re-encode the probe and compare (see the module docstring).

    Raises:
        BundleError, CheckpointError, ConfigError: an unusable bundle, checkpoint or encoder weights.
        ScoringError: the probe's encoding differs from the recorded one (fp32 features).
    """

    def __init__(
        self,
        bundle: ScoringBundle,
        *,
        device: str = "auto",
        project_dir: Path = Path("."),
        ref: str | None = None,
        check: bool = True,
    ) -> None:
        self.bundle = bundle
        self.ref = ref
        self.project_dir = Path(project_dir)
        self.device = resolve_device(device, param="--device")
        model, _ = model_from_checkpoint(bundle.checkpoint)
        self.model = model.to(self.device).eval()
        self.heads = heads_of(self.model)
        self.decode = bundle.decode
        self.crop = bundle.settings["features"]["crop_size"]
        self.encoders = None
        if not isinstance(self.model, EndToEndHPMCoRe):
            self.encoders = build_feature_encoders(bundle.features(self.device.type), project_dir=bundle.path)
        self.exemplars = bundle.encodings.to(self.device)
        rows = bundle.exemplars.to_pylist()
        self._row = {r["id"]: n for n, r in enumerate(rows)}
        self._score = {r["id"]: float(r["final_score"]) for r in rows}
        self._dd = {r["id"]: float(r["difficulty"]) for r in rows}
        self._mmpose = None
        if check:
            self.check_probe()

    # -----------------------------------------------------------------------------------------------------

    def _inputs(self, qid: str, frames: torch.Tensor, skeleton: torch.Tensor | None) -> Any:
        """The model's inputs for one video, stacked by a one-video bank as the evaluation stacks them.
        The bank's labels are placeholders (never read for a query)."""
        spec = self.model.input_spec("query")
        labels = {"score": 0.0, "difficulty": 1.0, "dive_number": "?"}
        if self.encoders is None:  # end to end: the model's own encoders, on the test view
            t, h, w, _ = frames.shape
            video: Any = VideoFrames(
                id=qid, num_frames=t, height=h, width=w, skeleton=skeleton, transitions=None,
                frames=frames, key=qid, **labels,
            )  # fmt: skip
            table = FeatureBank.from_videos([video], {qid: "test"}).table
            bank: FeatureBank = FrameBank({qid: video}, table, crop_size=self.crop)
        else:  # cached: the features stage's encoders and preprocessing
            i3d, static = encode_batch(self.encoders, frames[None], self.crop)  # (1, J, C), (1, T, C_s)
            video = VideoFeatures(
                id=qid, i3d=i3d[0], static=static[0], skeleton=skeleton, transitions=None, **labels
            )
            bank = FeatureBank.from_videos([video], {qid: "test"})
        try:
            checked = bank.require([qid], spec)
        except FeatureBankError as exc:
            raise ScoringError(f"the video does not fit the model: {exc}") from None
        return bank.stack(checked, spec).to(self.device)

    def _skeleton_tensor(self, sk: DiveSkeleton | None) -> torch.Tensor | None:
        """The pose as the feature bank gives it to the model: ``(2, T, 16, 1)``, normalised as recorded."""
        if sk is None:
            return None
        norm = self.bundle.settings["pose_metadata"].get("normalize", "none")
        xy = normalize_skeleton(sk.xy, sk.width, sk.height, norm)  # (T, 16, 2)
        return torch.from_numpy(np.ascontiguousarray(xy.transpose(2, 0, 1))[..., None])  # (2, T, 16, 1)

    @torch.inference_mode()
    def check_probe(self) -> float:
        """Re-encode the bundle's probe through this scorer and compare with the recorded encoding.

        Returns:
            The largest relative difference of the stage tokens.

        Raises:
            ScoringError: above :data:`PROBE_TOLERANCE` for fp32 features.
        """
        probe = self.bundle.probe
        skeleton = probe.get("skeleton")
        inputs = self._inputs("probe", probe["frames"], skeleton)
        got = self.model.encode(inputs, use_gt=False)
        want = load_encoding(probe, "encoding.").to(self.device)
        diff = 0.0
        for name in ("fused", "static"):
            a, b = getattr(got, name), getattr(want, name)
            if a is None or b is None:
                continue
            scale = max(float(b.abs().max()), 1e-12)
            diff = max(diff, float((a.float() - b.float()).abs().max()) / scale)
        precision = self.bundle.settings["encoders"]["precision"]
        amp = any(p != "fp32" for p in precision)
        tolerance = PROBE_TOLERANCE["amp" if amp else "fp32"]
        if diff > tolerance:
            message = (
                f"{self.bundle.path}: re-encoding the probe dive {self.bundle.settings['probe']['id']!r} "
                "gives "
                f"stage tokens {diff:.2e} (relative) away from what the pipeline gave it at registration: "
                "scoring would not see the features the model was trained on (other encoder weights or "
                "library versions?)"
            )
            if not amp:
                raise ScoringError(message)
            log.warning("%s; the features were computed under AMP (%s), so going on", message, precision)
        log.debug("probe: stage tokens within %.2e of the recorded encoding", diff)
        return diff

    # -----------------------------------------------------------------------------------------------------

    def difficulty(self, dive_number: str, difficulty: float | None = None) -> float:
        """The DD of ``dive_number``: ``difficulty`` when given, else its one DD in the exemplar pool.

        Raises:
            ScoringError: a dive number the model does not know (listing the known ones), or one with
                several DDs in the pool and no ``difficulty``.
        """
        known = self.bundle.dive_numbers
        if dive_number not in known:
            listed = ", ".join(f"{dn} (DD {'/'.join(f'{x:g}' for x in dds)})" for dn, dds in known.items())
            raise ScoringError(
                f"unknown dive number {dive_number!r}: the model knows {len(known)} dive numbers: {listed}"
            )
        if difficulty is not None:
            if not (math.isfinite(difficulty) and difficulty > 0):
                raise ScoringError(f"difficulty must be a number > 0, got {difficulty}")
            return float(difficulty)
        dds = known[dive_number]
        if len(dds) != 1:
            raise ScoringError(
                f"dive number {dive_number!r} has DD {', '.join(f'{x:g}' for x in dds)} in the training data "
                "(several heights); give its DD with --difficulty"
            )
        return float(dds[0])

    def _pose(
        self, source: Source, row: dict[str, Any], indices: np.ndarray, pose: Path | None
    ) -> DiveSkeleton:
        """The skeleton at the sampled source frames ``indices`` (see the module docstring)."""
        if pose is not None:
            return _pose_from_file(Path(pose), source, row, indices, self.bundle.pose.normalize)
        cfg = self.bundle.pose
        if cfg.backend != "mmpose":
            raise ScoringError(
                f"the model's skeletons were imported (pose.backend: annotations, source: {cfg.source}), so "
                "there is no pose model to run: give this video's skeleton with --pose FILE (a canonical "
                "skeleton .parquet of one dive, a FineDiving-Pose .npz or an MPII-style .json)"
            )
        if self._mmpose is None:
            backend = pose_backend(cfg, source.path.parent, self.project_dir)
            recorded = self.bundle.settings["pose_metadata"].get("model", {})
            now = backend.metadata().get("model", {})
            for key in ("checkpoint_sha256", "detector_checkpoint_sha256"):
                if recorded.get(key) != now.get(key):
                    raise ScoringError(
                        f"pose model: {key} is {now.get(key)} here, the model was trained on skeletons from "
                        f"{recorded.get(key)} (pose.checkpoint {cfg.checkpoint!r}, "
                        f"relative to {self.project_dir})"
                    )
            self._mmpose = backend
        return self._mmpose.dive(row, source.path, indices)

    @torch.inference_mode()
    def score(
        self,
        video: Path,
        dive_number: str,
        *,
        pose: Path | None = None,
        difficulty: float | None = None,
        query_id: str | None = None,
        fps: float | None = None,
    ) -> ScoreResult:
        """Score one video (an mp4 or a JPEG frame folder; all of it is the dive).

        Args:
            video: the mp4 file or frame folder.
            dive_number: its FINA dive number (must be one the model knows).
            pose: a pose file (:data:`POSE_FORMATS`), else the model's mmpose backend runs.
            difficulty: its DD (default: the dive number's DD in the training data).
            query_id: the id that seeds the voter draws (default: the video's content hash, so the same
                video always meets the same voters; a dataset dive's id reproduces its evaluation).
            fps: the frame rate of a frame folder, for seconds.

        Raises:
            VideoError, ScoringError, DatasetError, PoseError: see :data:`SCORING_ERRORS`.
        """
        source = describe_source(Path(video), fps)
        dd = self.difficulty(dive_number, difficulty)
        qid = query_id or source.sha256
        decoded = decode_dive(source.path, source.first_frame, source.last_frame, self.decode)
        indices = np.asarray(decoded.indices, dtype=np.int64)  # (T,)
        row = {
            "id": qid,
            "video_name": "query",
            "dive_index": 1,
            "video_path": source.path.name,
            "start_frame": source.first_frame,
            "end_frame": source.last_frame,
        }
        spec = self.model.input_spec("query")
        skeleton = None
        if pose is not None or spec.skeleton_frames is not None:
            skeleton = self._pose(source, row, indices, pose)
        inputs = self._inputs(
            qid, decoded.frames, self._skeleton_tensor(skeleton) if spec.skeleton_frames else None
        )
        encoding = self.model.encode(inputs, use_gt=False)
        st, ed = (int(x) for x in encoding.predicted[0].tolist())

        cfg, pool = self.bundle.eval, self.bundle.pool()
        draws = [
            select_exemplars(
                pool,
                qid,
                dive_number,
                dd,
                mode=cfg.exemplar_mode,
                k=cfg.exemplars,
                seed=voter_seed(self.bundle.seed, d),
            )
            for d in range(cfg.num_voter_draws)
        ]
        pairs = list(dict.fromkeys(e for draw in draws for e in draw))
        index = torch.tensor([self._row[e] for e in pairs], device=self.device)
        query = encoding.select(torch.zeros(len(pairs), dtype=torch.long, device=self.device))
        exemplar = self.exemplars.select(index)
        out = self.model.forward_pair(query, exemplar)
        delta = out.delta_qe.double().cpu()  # (P,)
        parts = stage_contributions(self.heads, query, exemplar).double().cpu()  # (P, 3)
        if not torch.allclose(parts.sum(dim=1), delta, rtol=1e-4, atol=1e-5):
            raise RuntimeError(
                "stage contributions do not add up to the model's delta: HPMCoRe.forward_pair changed, "
                "update hpmcore.serving.score.stage_contributions"
            )
        at = {e: n for n, e in enumerate(pairs)}
        scale = dd if self.bundle.dd_mode else 1.0
        preds, bases, contribs = [], [], []
        for draw in draws:
            ref = [self._score[e] / self._dd[e] if self.bundle.dd_mode else self._score[e] for e in draw]
            rows = [at[e] for e in draw]
            preds.append(
                scale * float(np.mean([float(delta[r]) + s for r, s in zip(rows, ref, strict=True)]))
            )
            bases.append(scale * float(np.mean(ref)))
            contribs.append(scale * parts[rows].mean(dim=0).numpy())
        score = float(np.mean(preds))
        std = float(np.std(preds, ddof=1)) if len(preds) > 1 else None
        contribution = np.mean(np.stack(contribs), axis=0)  # (3,)

        first = [int(indices[0]), int(indices[st]), int(indices[ed])]
        last = [int(indices[st]) - 1, int(indices[ed]) - 1, int(indices[-1])]
        document = {
            "schema": SCORE_SCHEMA_ID,
            "video": str(video),
            "source": {
                "kind": source.kind,
                "num_frames": source.num_frames,
                "first_frame": source.first_frame,
                "fps": source.fps,
                "width": source.width,
                "height": source.height,
                "sha256": source.sha256,
            },
            "dive_number": dive_number,
            "difficulty": dd,
            "score": score,
            "score_std": std,
            "baseline": float(np.mean(bases)),
            "stages": [
                {
                    "name": name,
                    "start_frame": a if a <= b else None,  # None: empty (its boundary at its first frame)
                    "end_frame": b if a <= b else None,
                    "start_s": source.seconds(a) if a <= b else None,
                    "end_s": source.seconds(b) if a <= b else None,
                    "contribution": float(c),
                }
                for name, a, b, c in zip(STAGES, first, last, contribution, strict=True)
            ],
            "boundaries": [
                {
                    "from": STAGES[k],
                    "to": STAGES[k + 1],
                    "sampled_index": t,
                    "frame": int(indices[t]),
                    "seconds": source.seconds(int(indices[t])),
                }
                for k, t in enumerate((st, ed))
            ],
            "voters": {
                "exemplars": cfg.exemplars,
                "exemplar_mode": cfg.exemplar_mode,
                "num_voter_draws": cfg.num_voter_draws,
                "seed": self.bundle.seed,
                "query_id": qid,
                "dd_mode": self.bundle.dd_mode,
                "draws": [{"exemplars": list(d), "score": p} for d, p in zip(draws, preds, strict=True)],
            },
            "pose": {
                "source": "file" if pose is not None else ("mmpose" if skeleton is not None else "none"),
                "file": None if pose is None else str(pose),
                "format": None if pose is None else POSE_FORMATS.get(Path(pose).suffix.lower()),
            },
            "model": {
                "ref": self.ref,
                "kind": self.bundle.settings["model"]["kind"],
                "train_mode": self.bundle.settings["model"]["train_mode"],
                "dd_mode": self.bundle.dd_mode,
                "checkpoint_sha256": self.bundle.settings["model"]["checkpoint_sha256"],
                "num_frames": self.decode.num_frames,
            },
            "sampled_frames": [int(i) for i in indices],
        }
        return ScoreResult(document, source, indices, skeleton, (st, ed))

    def score_many(self, jobs: Sequence[dict[str, Any]], *, progress: bool = False) -> list[ScoreResult]:
        """:meth:`score` for each job (keyword arguments of :meth:`score`), in order; the first failure
        raises (naming its video)."""
        from tqdm import tqdm

        return [self.score(**job) for job in tqdm(jobs, desc="score", unit="video", disable=not progress)]


# ---------------------------------------------------------------------------------------------------------
# Pose files


def _pose_from_file(
    path: Path, source: Source, row: dict[str, Any], indices: np.ndarray, normalize: str
) -> DiveSkeleton:
    """The skeleton of one dive from a pose file, read by the pose stage's ``annotations`` backend at the
    sampled frames, after checking that the file fits the video (one entry or frame per source frame).

    Raises:
        ScoringError: an unknown suffix, a file for another number of frames or for several dives.
        DatasetError: a missing or malformed file (naming it).
    """
    fmt = POSE_FORMATS.get(path.suffix.lower())
    if fmt is None:
        raise ScoringError(
            f"{path}: unknown pose file type {path.suffix!r}; use a canonical skeleton .parquet of one dive, "
            "a FineDiving-Pose .npz or an MPII-style .json"
        )
    if not path.is_file():
        raise DatasetError(f"{path}: pose file not found")
    n = source.num_frames
    with tempfile.TemporaryDirectory(prefix="hpmcore-pose-") as tmp:
        annotations = link = path
        if fmt == "skeletons":
            dives = read_skeleton_table(path)
            if len(dives) != 1:
                raise ScoringError(f"{path}: holds the skeletons of {len(dives)} dives, expected one dive")
            ((dive_id, (frame, _, _, _)),) = dives.items()
            frames = np.unique(frame)
            if frames.min() < 0 or frames.max() != n - 1 or len(frames) != n:
                raise ScoringError(
                    f"{path}: skeleton frames {int(frames.min())}..{int(frames.max())} "
                    f"({len(frames)} frames) do not match the video's {n} frames "
                    f"(frames 0..{n - 1}, one per source frame)"
                )
            row = {**row, "id": dive_id}
        else:  # the backend reads <root>/<video_name>/<file name>: link the file there
            linked = Path(tmp) / str(row["video_name"])
            linked.mkdir()
            if fmt == "mpii-json":
                joints, _ = read_mpii_json(path)
                if len(joints) != n:
                    raise ScoringError(
                        f"{path}: {len(joints)} entries, but the video has {n} frames; an MPII-style JSON "
                        "list needs one entry per source frame"
                    )
                link = linked / f"{row['dive_index']}.json"
            else:
                check_npz_size(path)
                read_finediving_pose(path, NPZ_SAMPLES)  # readable, 96 frames (errors name the file)
                link = linked / f"pred_comp_{row['dive_index']}.npz"
            link.symlink_to(path.resolve())
            annotations = Path(tmp)
        cfg = PoseConfig(
            backend="annotations", source=fmt, annotations_path=str(annotations), normalize=normalize
        )  # type: ignore[arg-type]
        backend = pose_backend(cfg, source.path.parent, Path("."))
        try:
            sk = backend.dive(row, source.path, indices)
        except DatasetError as exc:  # name the user's file, not the link
            raise DatasetError(
                str(exc).replace(str(link), str(path)).replace(str(annotations), str(path))
            ) from None
    return dataclasses.replace(sk, id=row["id"])
