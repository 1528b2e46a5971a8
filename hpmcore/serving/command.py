"""``hpmcore score``: score one video, or every video of a folder, with a registered model.

::

    hpmcore score PATH --dive-number 407c [--pose FILE] [--model hpmcore@champion] [--json] [--plot OUT.png]
    hpmcore score FOLDER (--dive-number 407c | --dives DIVES.csv) [--pose POSE_DIR] [--json] [--plot OUT_DIR]

PATH is an mp4 or a FineDiving-style JPEG frame folder (a folder holding JPEGs); a folder without JPEGs is
a batch: its ``*.mp4`` files and JPEG sub-folders, sorted by name. In a batch, ``--dives`` is a CSV with
columns ``video`` (the name in the folder), ``dive_number`` and optionally ``difficulty``, ``pose`` (a
file, relative to the CSV's folder) and ``id``; ``--pose DIR`` holds ``<video stem>.parquet|.npz|.json``
per video; ``--plot DIR`` gets ``<video stem>.png`` per video.

``--model`` is ``NAME@ALIAS``, ``NAME/VERSION`` or a run id of the project's MLflow store (``--tracking-uri``
for another), or a local folder: an MLflow model (``MLmodel`` + ``data/scoring``) or a scoring bundle.

Exit status 0; 2 for bad input (an unknown dive number, an unreadable video, a pose file that does not fit
the video, an unknown model), with a message naming the file or value, and nothing written.
"""

from __future__ import annotations

import argparse
import csv
import json
import logging
import sys
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # torch and the models: imported when a command scores, not when `hpmcore` parses
    from hpmcore.serving.bundle import ScoringBundle
    from hpmcore.serving.score import ScoreResult

__all__ = ["add_score_parser", "load_bundle", "main", "score_command"]

log = logging.getLogger(__name__)


def add_score_parser(sub: argparse._SubParsersAction) -> None:
    """The ``score`` sub-command."""
    p = sub.add_parser(
        "score",
        help="score a new video (mp4 or JPEG frame folder) or a folder of them with a registered model",
        description=__doc__.split("\n\n")[0] if __doc__ else None,
    )
    add = p.add_argument
    add("path", type=Path, help="an mp4, a JPEG frame folder, or a folder of videos (batch)")
    add("--dive-number", default=None, help="FINA dive number, e.g. 407c (batch: for every video)")
    add("--dives", type=Path, default=None, help="batch: CSV video,dive_number[,difficulty,pose,id]")
    add("--pose", type=Path, default=None, help="pose file (batch: folder of <stem>.parquet|npz|json)")
    add("--difficulty", type=float, default=None, help="DD (default: the dive number's in training)")
    add("--fps", type=float, default=None, help="frame rate of a JPEG frame folder (for seconds)")
    add("--id", default=None, help="id seeding the voter draws (default: the video's content hash)")
    add("--model", default="hpmcore@champion", help="NAME@ALIAS, NAME/VERSION, run id or folder")
    add("--tracking-uri", default=None, help="MLflow store (default: the project's)")
    add("--project-dir", type=Path, default=Path("."), help="the project root (default: .)")
    add("--device", default="auto", choices=["auto", "cpu", "cuda"])
    add("--json", action="store_true", help="print the result as JSON (a list for a batch)")
    add("--plot", type=Path, default=None, help="PNG of skeleton + stage boundaries (batch: folder)")
    p.set_defaults(func=main)


def load_bundle(
    model: str, *, tracking_uri: str | None, project_dir: Path, tmp: Path
) -> tuple[ScoringBundle, str]:
    """The scoring bundle of ``model`` (a registry reference or a local folder) and its display name.

    Raises:
        ScoringError: nothing by that reference (listing the registered models), a run without a
            registered version, a folder that is no model.
    """
    from hpmcore.serving.bundle import SCORING_BUNDLE, ScoringBundle
    from hpmcore.serving.score import ScoringError

    local = Path(model)
    if local.is_dir():
        for candidate in (local, local / "data" / SCORING_BUNDLE):
            if (candidate / "scoring.json").is_file():
                return ScoringBundle.load(candidate), str(local)
        raise ScoringError(f"{local}: not a scoring bundle, nor an MLflow model with data/{SCORING_BUNDLE}")
    from hpmcore.tracking import default_state_dir, lineage
    from hpmcore.tracking.mlflow import Registry
    from hpmcore.tracking.mlflow import tracking_uri as default_uri

    registry = Registry(tracking_uri or default_uri(default_state_dir(project_dir)))
    try:
        version, run_id = lineage.resolve(registry, model)
    except lineage.LineageError as exc:
        raise ScoringError(str(exc)) from None
    if version is None:
        raise ScoringError(f"run {run_id} registered no model version (give NAME@ALIAS or NAME/VERSION)")
    try:
        folder = registry.download_model(version.name, version.version, tmp)
    except FileNotFoundError as exc:
        raise ScoringError(str(exc)) from None
    bundle = folder / "data" / SCORING_BUNDLE
    if not (bundle / "scoring.json").is_file():
        raise ScoringError(
            f"model {version.ref} has no scoring bundle (registered before `hpmcore score` existed): "
            "rerun the pipeline to register a scorable version"
        )
    return ScoringBundle.load(bundle), version.ref


def _pose_in(folder: Path, stem: str) -> Path | None:
    from hpmcore.serving.score import POSE_FORMATS, ScoringError

    found = [folder / f"{stem}{suffix}" for suffix in POSE_FORMATS if (folder / f"{stem}{suffix}").is_file()]
    if len(found) > 1:
        raise ScoringError(f"{folder}: several pose files for {stem}: {', '.join(p.name for p in found)}")
    return found[0] if found else None


def _jobs(args: argparse.Namespace) -> tuple[list[dict[str, Any]], bool]:
    """The videos to score with their arguments, and whether it is a batch."""
    from hpmcore.serving.score import ScoringError, is_frame_folder, videos_in

    path: Path = args.path
    if not path.exists():
        raise ScoringError(f"{path}: file not found")
    common = {"fps": args.fps}
    if not path.is_dir() or is_frame_folder(path):
        if args.dives is not None:
            raise ScoringError("--dives is for a folder of videos; give --dive-number for one video")
        if args.dive_number is None:
            raise ScoringError("--dive-number is required (the dive's FINA number, e.g. 407c)")
        job = {"video": path, "dive_number": args.dive_number, "pose": args.pose}
        return [{**job, **common, "difficulty": args.difficulty, "query_id": args.id}], False
    if args.id is not None:
        raise ScoringError("--id names one video; in a batch give an id column in --dives")
    if (args.dive_number is None) == (args.dives is None):
        raise ScoringError(f"{path} is a folder of videos: give --dive-number (all alike) or --dives CSV")
    if args.pose is not None and not args.pose.is_dir():
        raise ScoringError(f"{args.pose}: in a batch, --pose is a folder of <video stem>.parquet|.npz|.json")
    videos = videos_in(path)
    rows: dict[str, dict[str, str]] = {}
    if args.dives is not None:
        try:
            with open(args.dives, newline="") as f:
                rows = {r["video"]: r for r in csv.DictReader(f)}
        except (OSError, KeyError, csv.Error) as exc:
            raise ScoringError(f"{args.dives}: not a CSV with columns video,dive_number ({exc})") from None
        unknown = sorted(set(rows) - {v.name for v in videos})
        if unknown:
            raise ScoringError(f"{args.dives}: videos {unknown[:5]} are not in {path}")
        videos = [v for v in videos if v.name in rows]
    jobs = []
    for video in videos:
        row = rows.get(video.name, {})
        pose = _pose_in(args.pose, video.stem) if args.pose is not None else None
        if row.get("pose"):
            pose = args.dives.parent / row["pose"]
        difficulty = float(row["difficulty"]) if row.get("difficulty") else args.difficulty
        dive_number = row.get("dive_number") or args.dive_number
        if not dive_number:
            raise ScoringError(f"{args.dives}: no dive_number for {video.name}")
        jobs.append(
            {
                "video": video,
                "dive_number": dive_number,
                "pose": pose,
                "difficulty": difficulty,
                "query_id": row.get("id") or None,
                **common,
            }
        )
    return jobs, True


def score_command(args: argparse.Namespace) -> tuple[list[ScoreResult], bool]:
    """Resolve the model, score every video of ``args``; nothing is written here.

    Raises:
        see :data:`~hpmcore.serving.score.SCORING_ERRORS`; a batch names the failing video.
    """
    from hpmcore.serving.score import SCORING_ERRORS, Scorer, ScoringError

    jobs, batch = _jobs(args)
    with tempfile.TemporaryDirectory(prefix="hpmcore-score-") as tmp:
        bundle, ref = load_bundle(
            args.model, tracking_uri=args.tracking_uri, project_dir=args.project_dir, tmp=Path(tmp)
        )
        scorer = Scorer(bundle, device=args.device, project_dir=args.project_dir, ref=ref)
        results = []
        for job in jobs:
            try:
                results.append(scorer.score(**job))
            except SCORING_ERRORS as exc:
                if batch and str(job["video"]) not in str(exc):
                    raise ScoringError(f"{job['video']}: {exc}") from None
                raise
    return results, batch


def main(args: argparse.Namespace) -> int:
    """Run ``hpmcore score``; exit status 0, or 2 with the message for bad input (nothing written)."""
    from hpmcore.serving.score import SCORING_ERRORS

    try:
        results, batch = score_command(args)
        if args.plot is not None:
            from hpmcore.serving.plot import plot_score

            if batch:
                for result in results:
                    plot_score(result, args.plot / f"{result.source.path.stem}.png")
            else:
                plot_score(results[0], args.plot)
    except SCORING_ERRORS as exc:
        print(f"hpmcore: error: {exc}", file=sys.stderr)
        return 2
    if args.json:
        docs = [r.document for r in results]
        print(json.dumps(docs if batch else docs[0], indent=2))
    else:
        print("\n\n".join(r.text() for r in results))
    if args.plot is not None:
        log.info("plot%s written to %s", "s" if batch else "", args.plot)
    return 0
