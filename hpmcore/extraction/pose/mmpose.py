"""The ``mmpose`` pose backend: top-down estimation on the decode stage's sampled frames.

``mmpose.apis.init_model`` + ``inference_topdown`` run on each distinct sampled frame (the decode
manifest's ``indices``), decoded at the source resolution (the decode stage's frames, 32×32 px by
default, are too small for pose estimation). The person box of a frame is the best ``person``
detection of the optional detector (mmdet ``init_detector`` + ``inference_detector``); without a
detector, or when it finds nobody, the box of the previous frame's confident keypoints grown by
``box_margin`` per side (:func:`track_box`), and the whole frame for the first frame (or after a frame
with fewer than 2 confident keypoints).

Models with 17 COCO keypoints are mapped to the 16 MPII joints by :func:`coco_to_mpii`; models with 16
keypoints are taken to be in MPII order already (mmpose's MPII datasets use it). Checkpoints are local
files loaded strictly (:func:`hpmcore.models.checkpoints.load_strict`, every tensor by name and shape);
``pose.random_init`` runs on seeded random weights (tests only).

``pose.config`` (and ``pose.detector_config``) is Python that mmengine executes: point it only at files
you trust, as ``pose.trust_checkpoint`` allows a full unpickle of a checkpoint.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import numpy as np
import torch

from hpmcore.config import PoseConfig, project_path
from hpmcore.data.canonical import MPII_JOINTS, NUM_JOINTS
from hpmcore.extraction.cache import sha256_file
from hpmcore.extraction.pose.table import PIXEL_SPACE, DiveSkeleton, PoseError
from hpmcore.extraction.video import probe, read_frames
from hpmcore.models.checkpoints import CheckpointError, load_strict, read_state_dict
from hpmcore.runtime import resolve_device

__all__ = [
    "COCO_KEYPOINTS",
    "HEAD_TOP_EXTENSION",
    "RANDOM_INIT",
    "UPPER_NECK_FRACTION",
    "MMPose",
    "coco_to_mpii",
    "track_box",
]

log = logging.getLogger(__name__)

RANDOM_INIT = "random-init"
"""What the cache key and the table's metadata record for a model without a checkpoint."""

COCO_KEYPOINTS: tuple[str, ...] = (
    "nose",
    "left_eye",
    "right_eye",
    "left_ear",
    "right_ear",
    "left_shoulder",
    "right_shoulder",
    "left_elbow",
    "right_elbow",
    "left_wrist",
    "right_wrist",
    "left_hip",
    "right_hip",
    "left_knee",
    "right_knee",
    "left_ankle",
    "right_ankle",
)
_COCO = {name: i for i, name in enumerate(COCO_KEYPOINTS)}
_MPII = {name: i for i, name in enumerate(MPII_JOINTS)}
_COCO_DIRECT = {
    name: _COCO[name]
    for name in MPII_JOINTS
    if name in _COCO  # ankles, knees, hips, wrists, elbows, shoulders: the same joint in both layouts
}
_FACE = [_COCO[n] for n in ("nose", "left_eye", "right_eye", "left_ear", "right_ear")]
UPPER_NECK_FRACTION = 0.5
"""upper_neck = thorax + 0.5 · (head_centre − thorax)."""
HEAD_TOP_EXTENSION = 0.75
"""head_top = head_centre + 0.75 · (head_centre − thorax)."""
_MIN_TRACK_KEYPOINTS = 2
_MIN_BOX_SIDE = 16.0


def coco_to_mpii(keypoints: np.ndarray, scores: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Map COCO-17 keypoints to the 16 MPII joints of spec §1.4.

    * ankles, knees, hips, wrists, elbows, shoulders: the same COCO keypoint, same score;
    * pelvis = mean of the two hips; thorax = mean of the two shoulders; score = the smaller one;
    * head_centre = mean of nose, eyes and ears weighted by their scores (clipped at 0; plain mean
      when all are 0); head score = the largest of those five scores;
    * upper_neck = thorax + 0.5 · (head_centre − thorax) (:data:`UPPER_NECK_FRACTION`);
    * head_top = head_centre + 0.75 · (head_centre − thorax) (:data:`HEAD_TOP_EXTENSION`);
    * upper_neck and head_top score = min(thorax score, head score).

    Args:
        keypoints: ``(..., 17, 2)`` (x, y) in COCO order (:data:`COCO_KEYPOINTS`).
        scores: ``(..., 17)``.

    Returns:
        ``(xy (..., 16, 2), scores (..., 16))`` float32 in MPII order (``MPII_JOINTS``).
    """
    kp = np.asarray(keypoints, dtype=np.float64)
    sc = np.asarray(scores, dtype=np.float64)
    if kp.shape[-2:] != (len(COCO_KEYPOINTS), 2) or sc.shape != kp.shape[:-1]:
        raise ValueError(f"expected keypoints (..., 17, 2) and scores (..., 17), got {kp.shape}, {sc.shape}")
    out = np.zeros((*kp.shape[:-2], NUM_JOINTS, 2))
    conf = np.zeros((*kp.shape[:-2], NUM_JOINTS))
    for name, c in _COCO_DIRECT.items():
        out[..., _MPII[name], :] = kp[..., c, :]
        conf[..., _MPII[name]] = sc[..., c]

    def mid(a: str, b: str) -> tuple[np.ndarray, np.ndarray]:
        i, j = _COCO[a], _COCO[b]
        return (kp[..., i, :] + kp[..., j, :]) / 2, np.minimum(sc[..., i], sc[..., j])

    pelvis, pelvis_conf = mid("left_hip", "right_hip")
    thorax, thorax_conf = mid("left_shoulder", "right_shoulder")
    face, face_sc = kp[..., _FACE, :], np.clip(sc[..., _FACE], 0, None)  # (..., 5, 2), (..., 5)
    total = face_sc.sum(axis=-1, keepdims=True)  # (..., 1)
    weights = np.where(total > 0, face_sc / np.where(total > 0, total, 1), 1 / len(_FACE))
    head = (weights[..., None] * face).sum(axis=-2)  # (..., 2)
    neck_conf = np.minimum(thorax_conf, sc[..., _FACE].max(axis=-1))
    out[..., _MPII["pelvis"], :], conf[..., _MPII["pelvis"]] = pelvis, pelvis_conf
    out[..., _MPII["thorax"], :], conf[..., _MPII["thorax"]] = thorax, thorax_conf
    out[..., _MPII["upper_neck"], :] = thorax + UPPER_NECK_FRACTION * (head - thorax)
    out[..., _MPII["head_top"], :] = head + HEAD_TOP_EXTENSION * (head - thorax)
    conf[..., _MPII["upper_neck"]] = neck_conf
    conf[..., _MPII["head_top"]] = neck_conf
    return out.astype(np.float32), conf.astype(np.float32)


def track_box(
    kp: np.ndarray, sc: np.ndarray, min_score: float, margin: float, width: int, height: int
) -> tuple[float, ...]:
    """Next frame's person box (x1, y1, x2, y2): the box of the keypoints scoring ≥ ``min_score``
    grown by ``margin`` × its size on each side (at least 16 px a side), clipped to the frame; the
    whole frame when fewer than 2 keypoints are confident.

    Args:
        kp: ``(K, 2)`` keypoints (x, y) in pixels; ``sc``: ``(K,)`` their scores.
    """
    good = kp[sc >= min_score]
    if len(good) < _MIN_TRACK_KEYPOINTS:
        return _whole(width, height)
    lo, hi = good.min(axis=0), good.max(axis=0)  # (2,)
    size = np.maximum(hi - lo, _MIN_BOX_SIDE)
    centre = (lo + hi) / 2
    half = size * (0.5 + margin)
    x1, y1 = np.maximum(centre - half, 0)
    x2, y2 = np.minimum(centre + half, [width, height])
    if x2 - x1 < 1 or y2 - y1 < 1:  # confident keypoints all outside the frame
        return _whole(width, height)
    return (float(x1), float(y1), float(x2), float(y2))


class MMPose:
    """Top-down mmpose estimation with an optional mmdet person detector."""

    def __init__(self, cfg: PoseConfig, project_dir: Path) -> None:
        self.cfg = cfg
        self.device = str(resolve_device(cfg.device, param="pose.device"))
        # Checkpoints first: a missing or unreadable file fails before the slow mmpose import.
        self.checkpoint = None if cfg.checkpoint is None else project_path(cfg.checkpoint, project_dir)
        state = self._read_checkpoint(self.checkpoint, "pose")
        self.detector_checkpoint = (
            None if cfg.detector_checkpoint is None else project_path(cfg.detector_checkpoint, project_dir)
        )
        det_state = None
        if cfg.detector_config is not None:
            det_state = self._read_checkpoint(self.detector_checkpoint, "detector")
        self.checkpoint_sha256 = None if self.checkpoint is None else sha256_file(self.checkpoint)
        self.detector_checkpoint_sha256 = (
            None if self.detector_checkpoint is None else sha256_file(self.detector_checkpoint)
        )

        import mmpose
        from mmpose.apis import inference_topdown, init_model

        self._inference_topdown = inference_topdown
        self.config = _find_config(cfg.config, mmpose, project_dir)
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(0)  # random_init is reproducible
            model = init_model(str(self.config), None, device="cpu")
        self.model = _load(model, state, self.checkpoint).to(self.device)
        self.num_keypoints = int(self.model.dataset_meta["num_keypoints"])
        if self.num_keypoints not in (len(COCO_KEYPOINTS), NUM_JOINTS):
            raise PoseError(
                f"pose model {self.config} predicts {self.num_keypoints} keypoints; only COCO-17 "
                f"(mapped to MPII) and MPII-16 models are supported"
            )
        self.detector = None
        if cfg.detector_config is not None:
            import mmdet
            from mmdet.apis import inference_detector, init_detector

            self._inference_detector = inference_detector
            self.detector_config = _find_config(cfg.detector_config, mmdet, project_dir)
            with torch.random.fork_rng(devices=[]):
                torch.manual_seed(0)
                detector = init_detector(str(self.detector_config), None, device="cpu")
            self.detector = _load(detector, det_state, self.detector_checkpoint).to(self.device)
            # mmpose's inference_topdown switches the registry scope to mmpose; prefix the detector's
            # test pipeline with "mmdet." or its transforms are not found ("PackDetInputs is not in
            # the mmpose::transform registry").
            from mmpose.utils import adapt_mmdet_pipeline

            self.detector.cfg = adapt_mmdet_pipeline(self.detector.cfg)
            classes = [str(c).lower() for c in self.detector.dataset_meta.get("classes", ())]
            self.person_label = classes.index("person") if "person" in classes else 0
        log.info(
            "pose model %s (%d keypoints) on %s, detector %s",
            self.config,
            self.num_keypoints,
            self.device,
            self.detector_config if self.detector is not None else "none (keypoint tracking)",
        )

    def key_params(self) -> dict[str, Any]:
        """The backend's part of every cache key: config and weights hashes, box params, versions."""
        import mmpose

        params: dict[str, Any] = {
            "backend": "mmpose",
            "config": sha256_file(self.config),
            "checkpoint": self.checkpoint_sha256 or RANDOM_INIT,
            "keypoint_score": self.cfg.keypoint_score,
            "box_margin": self.cfg.box_margin,
            "mmpose": mmpose.__version__,
            "torch": torch.__version__,
        }
        if self.detector is not None:
            import mmdet

            params["detector"] = {
                "config": sha256_file(self.detector_config),
                "checkpoint": self.detector_checkpoint_sha256 or RANDOM_INIT,
                "score": self.cfg.detector_score,
                "mmdet": mmdet.__version__,
            }
        return params

    def input_hash(self, row: dict) -> None:
        """``None``: the frames are all the input (the video's hash is in the key)."""
        return None

    def metadata(self) -> dict[str, Any]:
        """What produced the skeletons (the table's ``hpmcore.pose`` metadata)."""
        detector = self.detector is not None
        return {
            "backend": "mmpose",
            "model": {
                "config": str(self.config),
                "checkpoint": _str(self.checkpoint),
                "checkpoint_sha256": self.checkpoint_sha256,
                "random_init": self.cfg.random_init,
                "keypoints": "coco17->mpii16" if self.num_keypoints == 17 else "mpii16",
                "detector_config": str(self.detector_config) if detector else None,
                "detector_checkpoint": _str(self.detector_checkpoint) if detector else None,
                "detector_checkpoint_sha256": self.detector_checkpoint_sha256 if detector else None,
                "box_margin": self.cfg.box_margin,
                "keypoint_score": self.cfg.keypoint_score,
                "detector_score": self.cfg.detector_score,
            },
            "normalize": self.cfg.normalize,
            "pixel_space": PIXEL_SPACE,
        }

    def _read_checkpoint(self, path: Path | None, what: str) -> dict[str, torch.Tensor] | None:
        if path is None:
            log.warning(
                "%s model: NO CHECKPOINT - random_init: true, using randomly initialised weights; "
                "the skeletons are meaningless (tests only)",
                what,
            )
            return None
        try:
            return read_state_dict(path, trust=self.cfg.trust_checkpoint)
        except CheckpointError as exc:
            if self.cfg.trust_checkpoint or "cannot be read" not in str(exc):
                raise
            raise CheckpointError(
                f"{exc} — if it is an OpenMMLab checkpoint with pickled metadata and you trust the file, "
                "set pose.trust_checkpoint: true, or save only its state_dict"
            ) from exc

    def dive(self, row: dict, video: Path, frames: np.ndarray) -> DiveSkeleton:
        """The skeleton of one dive (a row of the dive table) at the source frames ``frames`` (T,).

        Raises:
            VideoError: the video cannot be decoded at those frames.
            PoseError: the model returned non-finite keypoints.
        """
        frames = np.asarray(frames, dtype=np.int64)
        info = probe(video)
        width, height = info.width, info.height
        # Each distinct source frame once, in order (short dives repeat frames).
        unique, inverse = np.unique(frames, return_inverse=True)
        images = read_frames(video, unique, width, height)  # (U, H, W, 3) RGB uint8
        xy = np.zeros((len(unique), NUM_JOINTS, 2), dtype=np.float32)
        conf = np.zeros((len(unique), NUM_JOINTS), dtype=np.float32)
        box = _whole(width, height)
        with torch.inference_mode():
            for u in range(len(unique)):
                bgr = np.ascontiguousarray(images[u, :, :, ::-1])  # mmpose/mmdet expect BGR (cv2)
                if self.detector is not None:
                    box = self._detect(bgr) or box
                kp, sc = self._estimate(bgr, box)  # (K, 2), (K,)
                if not (np.isfinite(kp).all() and np.isfinite(sc).all()):
                    raise PoseError(
                        f"{video}: pose model returned non-finite keypoints at frame {int(unique[u])}"
                    )
                box = track_box(kp, sc, self.cfg.keypoint_score, self.cfg.box_margin, width, height)
                if self.num_keypoints == len(COCO_KEYPOINTS):
                    xy[u], conf[u] = coco_to_mpii(kp, sc)
                else:
                    xy[u], conf[u] = kp, sc
        xy[..., 0] = np.clip(xy[..., 0], 0, width - 1)
        xy[..., 1] = np.clip(xy[..., 1], 0, height - 1)
        return DiveSkeleton(
            id=row["id"],
            source_frames=frames,
            xy=xy[inverse],
            confidence=np.clip(conf, 0.0, 1.0)[inverse],
            width=width,
            height=height,
        )

    def _estimate(self, bgr: np.ndarray, box: tuple[float, ...]) -> tuple[np.ndarray, np.ndarray]:
        results = self._inference_topdown(self.model, bgr, np.array([box], dtype=np.float32), "xyxy")
        pred = results[0].pred_instances
        return np.asarray(pred.keypoints[0], dtype=np.float64), np.asarray(
            pred.keypoint_scores[0], np.float64
        )

    def _detect(self, bgr: np.ndarray) -> tuple[float, ...] | None:
        pred = self._inference_detector(self.detector, bgr).pred_instances
        labels = pred.labels.cpu().numpy()
        scores = pred.scores.cpu().numpy()
        keep = (labels == self.person_label) & (scores >= self.cfg.detector_score)
        if not keep.any():
            return None
        best = np.flatnonzero(keep)[np.argmax(scores[keep])]
        return tuple(float(v) for v in pred.bboxes[best].cpu().numpy())


def _load(
    model: torch.nn.Module, state: dict[str, torch.Tensor] | None, path: Path | None
) -> torch.nn.Module:
    """``model`` with the checkpoint ``state`` (read from ``path``) loaded strictly, in eval mode."""
    if state is not None:
        assert path is not None
        load_strict(model, path, state=state)
    return model.eval()


def _find_config(name: str, package: Any, project_dir: Path) -> Path:
    """``name`` as a file (absolute or relative to ``project_dir``), else in the package's bundled
    configs (``<package>/.mim/configs/<name>``)."""
    path = project_path(name, project_dir)
    if path.is_file():
        return path
    bundled = Path(package.__file__).parent / ".mim" / "configs" / name
    if bundled.is_file():
        return bundled
    raise PoseError(
        f"{package.__name__} config {name!r} not found: neither {path} nor the bundled {bundled} exists"
    )


def _str(path: Path | None) -> str | None:
    return None if path is None else str(path)


def _whole(width: int, height: int) -> tuple[float, ...]:
    return (0.0, 0.0, float(width), float(height))
