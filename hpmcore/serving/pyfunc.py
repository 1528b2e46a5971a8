"""The registered model as MLflow users load and serve it: a ``python_function`` model whose data is the
scoring bundle (:mod:`hpmcore.serving.bundle`) and whose loader is this module.

MLflow calls :func:`_load_pyfunc` with the bundle folder (``mlflow.pyfunc.load_model``, ``mlflow models
serve``); the returned :class:`VideoScoringModel` scores one video per input row with
:class:`~hpmcore.serving.score.Scorer`, the code ``hpmcore score`` runs. This module imports no MLflow:
:func:`hpmcore.tracking.mlflow.log_pyfunc_model` stores it, with :data:`INPUT_COLUMNS` and
:data:`OUTPUT_COLUMNS` as the signature.

A request to ``mlflow models serve`` (``POST /invocations``)::

    {"dataframe_records": [{"video": "<the mp4's bytes, base64>", "dive_number": "407c",
                            "pose": "<a pose file's bytes, base64>", "pose_format": "parquet"}]}

or ``video_path`` / ``pose_path`` naming files the server can read (a JPEG frame folder only this way).
The answer holds one row per input row: :data:`OUTPUT_COLUMNS`, ``result`` being the whole JSON
document of ``hpmcore score --json`` (:data:`~hpmcore.serving.score.SCORE_JSON_SCHEMA`).
"""

from __future__ import annotations

import json
import math
import os
import tempfile
from pathlib import Path
from typing import Any

from hpmcore.serving.bundle import ScoringBundle
from hpmcore.serving.score import POSE_FORMATS, Scorer, ScoreResult, ScoringError

__all__ = [
    "INPUT_COLUMNS",
    "LOADER_MODULE",
    "OUTPUT_COLUMNS",
    "REQUIREMENTS",
    "VideoScoringModel",
    "output_row",
]

LOADER_MODULE = __name__
INPUT_COLUMNS: tuple[tuple[str, str, bool], ...] = (
    ("video", "binary", False),
    ("video_path", "string", False),
    ("dive_number", "string", True),
    ("difficulty", "double", False),
    ("pose", "binary", False),
    ("pose_format", "string", False),
    ("pose_path", "string", False),
    ("fps", "double", False),
    ("query_id", "string", False),
)
"""Input columns ``(name, MLflow type, required)``: ``video`` (an mp4's bytes) or ``video_path`` (an mp4 or
a JPEG frame folder the server can read); ``dive_number``; optional ``difficulty``; optional pose as
``pose`` bytes with ``pose_format`` (``parquet`` | ``npz`` | ``json``) or ``pose_path``; ``fps`` of a frame
folder; ``query_id`` (seeds the voter draws; default the video's content hash)."""
OUTPUT_COLUMNS: tuple[tuple[str, str], ...] = (
    ("score", "double"),
    ("score_std", "double"),
    ("difficulty", "double"),
    ("baseline", "double"),
    ("flight_start_frame", "long"),
    ("entry_start_frame", "long"),
    ("flight_start_s", "double"),
    ("entry_start_s", "double"),
    ("takeoff_contribution", "double"),
    ("flight_contribution", "double"),
    ("entry_contribution", "double"),
    ("result", "string"),
)
"""Output columns ``(name, MLflow type)``; ``result`` is the JSON document of ``hpmcore score --json``."""
REQUIREMENTS = (
    "torch",
    "torchvision",
    "numpy",
    "decord",
    "av",
    "pyarrow",
    "pillow",
    "safetensors",
    "timm",
    "scipy",
    "pyyaml",
    "tqdm",
    "pandas",
)
"""Distributions the served model imports (pinned to the installed versions when it is logged)."""


def output_row(result: ScoreResult) -> dict[str, Any]:
    """One output row (:data:`OUTPUT_COLUMNS`) of a scored video."""
    d = result.document
    nan = float("nan")
    stages = {s["name"]: s for s in d["stages"]}
    flight, entry = d["boundaries"]
    return {
        "score": d["score"],
        "score_std": nan if d["score_std"] is None else d["score_std"],
        "difficulty": d["difficulty"],
        "baseline": d["baseline"],
        "flight_start_frame": flight["frame"],
        "entry_start_frame": entry["frame"],
        "flight_start_s": nan if flight["seconds"] is None else flight["seconds"],
        "entry_start_s": nan if entry["seconds"] is None else entry["seconds"],
        "takeoff_contribution": stages["take-off"]["contribution"],
        "flight_contribution": stages["flight"]["contribution"],
        "entry_contribution": stages["entry"]["contribution"],
        "result": json.dumps(d, sort_keys=True),
    }


def _value(row: Any, name: str) -> Any:
    """A row's value, ``None`` for an absent or null one."""
    value = row.get(name) if hasattr(row, "get") else None
    if value is None:
        return None
    if isinstance(value, float) and math.isnan(value):
        return None
    return value


class VideoScoringModel:
    """What :func:`_load_pyfunc` returns: ``predict`` scores the video of each input row."""

    def __init__(self, scorer: Scorer) -> None:
        self.scorer = scorer

    def predict(self, model_input: Any, params: dict[str, Any] | None = None) -> Any:
        """Score each row of ``model_input`` (a pandas DataFrame with :data:`INPUT_COLUMNS`).

        Returns:
            A DataFrame with :data:`OUTPUT_COLUMNS`, one row per input row.

        Raises:
            ScoringError: a row without ``video`` or ``video_path`` (or with both), a pose without its
                format; and whatever :meth:`Scorer.score` raises for a bad video or pose.
        """
        import pandas as pd

        frame = model_input if isinstance(model_input, pd.DataFrame) else pd.DataFrame(model_input)
        rows = []
        for n, row in enumerate(frame.to_dict(orient="records")):
            with tempfile.TemporaryDirectory(prefix="hpmcore-serve-") as tmp:
                rows.append(output_row(self._score_row(n, row, Path(tmp))))
        return pd.DataFrame(rows, columns=[name for name, _ in OUTPUT_COLUMNS])

    def _score_row(self, n: int, row: dict[str, Any], tmp: Path) -> ScoreResult:
        data, path = _value(row, "video"), _value(row, "video_path")
        if (data is None) == (path is None):
            raise ScoringError(f"input row {n}: give exactly one of video (the mp4's bytes) and video_path")
        video = Path(path) if path is not None else tmp / "video.mp4"
        if data is not None:
            video.write_bytes(bytes(data))
        pose_data, pose_path = _value(row, "pose"), _value(row, "pose_path")
        pose = Path(pose_path) if pose_path is not None else None
        if pose_data is not None:
            fmt = _value(row, "pose_format")
            suffix = f".{fmt}".lower() if fmt else None
            if suffix not in POSE_FORMATS:
                raise ScoringError(
                    f"input row {n}: pose bytes need pose_format parquet, npz or json, got {fmt!r}"
                )
            pose = tmp / f"pose{suffix}"
            pose.write_bytes(bytes(pose_data))
        difficulty, fps = _value(row, "difficulty"), _value(row, "fps")
        return self.scorer.score(
            video,
            str(_value(row, "dive_number")),
            pose=pose,
            difficulty=None if difficulty is None else float(difficulty),
            query_id=_value(row, "query_id"),
            fps=None if fps is None else float(fps),
        )


def _load_pyfunc(data_path: str) -> VideoScoringModel:
    """MLflow's entry point: the model of the scoring bundle at ``data_path`` (device:
    ``$HPMCORE_SCORE_DEVICE``, default ``auto``)."""
    bundle = ScoringBundle.load(Path(data_path))
    return VideoScoringModel(Scorer(bundle, device=os.environ.get("HPMCORE_SCORE_DEVICE", "auto")))
