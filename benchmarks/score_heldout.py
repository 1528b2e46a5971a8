"""How well ``hpmcore score`` does on held-out synthetic videos: score error and stage-boundary error
against the generator's ground truth.

The videos are generated with the model's own synthetic-data settings (recorded in the model version)
but **another generator seed**, so no dive was trained, validated or tested on; each is scored through
:class:`hpmcore.serving.score.Scorer` (the code ``hpmcore score`` runs) with its ground-truth skeleton as
``--pose`` (a one-dive Parquet, what the model's pose stage imported) and its voters drawn for its id
(``--id``: the same draws for the mp4 and the JPEG form). Measured per dive:

- score: predicted − true final score → MAE, RMSE, mean signed error, Spearman ρ; for reference the
  same for the DD-only predictor (DD × the exemplar pool's mean score / DD, no video);
- boundaries: |predicted − true| first source frame of flight and of entry (the true ones from the
  per-frame labels, :func:`hpmcore.models.segmentation.gt_transitions`), in source frames; a prediction
  can only fall on a sampled frame, so the sampling step (source frames / T) is reported beside it;
- the JPEG form: the first ``--frame-folders`` dives are also written as FineDiving-style JPEG frame
  folders (``<frame:05d>.jpg``, numbered from 0 like the mp4's frames) with an MPII-style JSON pose list
  (one entry per frame) and scored that way: the largest |score difference| to the mp4 form and how
  many boundaries agree (JPEG re-compression is the only difference).

Usage (from the project root, after ``make run``)::

    .venv/bin/python benchmarks/score_heldout.py --model hpmcore@champion --seed 7 --num-dives 60

Writes ``--out`` (default ``/tmp/hpmcore-heldout``): the generated dataset (``dataset/videos/*.mp4``),
the one-dive pose files (``poses/<video stem>.parquet``), ``dives.csv`` (``video,dive_number``: the batch
form's ``--dives``), the frame folders and their JSON pose lists (``frames/<video stem>/``,
``frames/<video stem>.json``), ``scores.csv`` (one row per dive) and ``summary.json``; prints the
summary as a Markdown table. Exit status 2 (nothing written) for the model's own generator seed or a
model not trained on synthetic dives.
"""

from __future__ import annotations

import argparse
import csv
import dataclasses
import json
import logging
import shutil
import sys
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
from PIL import Image
from scipy.stats import spearmanr
from tqdm import tqdm

from hpmcore.config import SynthConfig, from_dict
from hpmcore.data.canonical import read_annotations
from hpmcore.data.synth import generate_dataset
from hpmcore.extraction.video import probe, read_frames
from hpmcore.logs import setup_logging
from hpmcore.models.segmentation import gt_transitions
from hpmcore.serving.command import load_bundle
from hpmcore.serving.score import SCORING_ERRORS, Scorer, ScoringError

log = logging.getLogger("benchmarks.score_heldout")


def held_out_dataset(synth: SynthConfig, seed: int, num_dives: int, out: Path) -> Path:
    """Generate ``num_dives`` dives with ``synth``'s settings and generator seed ``seed`` into ``out``.

    Raises:
        ScoringError: ``seed`` is the seed the model's dataset was generated with.
    """
    if seed == synth.seed:
        raise ScoringError(f"--seed {seed} is the model's own generator seed: choose another (held-out) one")
    cfg = dataclasses.replace(synth, seed=seed, num_dives=num_dives)
    generate_dataset(cfg, out, render=True, progress=True, workers=1)
    return out


def frame_folder(video: Path, dive_skeleton: pa.Table, folder: Path) -> Path:
    """Write ``video`` as a FineDiving-style JPEG frame folder (``<frame:05d>.jpg`` from 0) and its
    skeleton as an MPII-style JSON list (``<folder>.json``, one entry per frame); returns the JSON."""
    rows = dive_skeleton.sort_by([("frame", "ascending"), ("joint", "ascending")])
    x, y = rows["x"].to_numpy().reshape(-1, 16), rows["y"].to_numpy().reshape(-1, 16)  # (N, 16)
    visible = rows["confidence"].to_numpy().reshape(-1, 16) > 0
    info = probe(video)
    frames = read_frames(video, np.arange(len(x)), info.width, info.height)  # (N, H, W, 3)
    folder.mkdir(parents=True, exist_ok=True)
    for i, frame in enumerate(frames):
        Image.fromarray(frame).save(folder / f"{i:05d}.jpg", quality=95)
    entries = [
        {
            "image": f"{i:05d}.jpg",
            "joints": np.stack([x[i], y[i]], 1).tolist(),
            "joints_vis": visible[i].astype(int).tolist(),
        }
        for i in range(len(x))
    ]
    path = folder.with_suffix(".json")
    path.write_text(json.dumps(entries))
    return path


def measure(
    scorer: Scorer, dataset: Path, out: Path, frame_folders: int = 0
) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """Score every dive of a generated dataset (poses and frame folders written under ``out``); per-dive
    rows and the summary (module docstring)."""
    dives = read_annotations(dataset / "annotations.parquet").to_pylist()
    skeletons = pq.read_table(dataset / "skeletons.parquet")
    pool = scorer.bundle.exemplars.to_pylist()
    completeness = float(np.mean([r["final_score"] / r["difficulty"] for r in pool]))
    pose_dir = out / "poses"
    for stale in (pose_dir, out / "frames"):  # of an earlier run: other dives, other frame counts
        shutil.rmtree(stale, ignore_errors=True)
    pose_dir.mkdir(parents=True)
    rows, skipped, jpeg = [], [], []
    for dive in tqdm(dives, desc="score", unit="dive"):
        video = dataset / dive["video_path"]
        pose = pose_dir / f"{video.stem}.parquet"
        dive_skeleton = skeletons.filter(pc.equal(skeletons["id"], dive["id"]))
        pq.write_table(dive_skeleton, pose)
        try:
            result = scorer.score(video, dive["dive_number"], pose=pose, query_id=dive["id"])
        except ScoringError as exc:  # a dive number the model never saw
            skipped.append({"id": dive["id"], "reason": str(exc)})
            continue
        doc = result.document
        if len(jpeg) < frame_folders:  # the same dive as JPEGs + an MPII JSON pose list
            folder = out / "frames" / video.stem
            json_pose = frame_folder(video, dive_skeleton, folder)
            other = scorer.score(folder, dive["dive_number"], pose=json_pose, query_id=dive["id"])
            jpeg.append(
                {
                    "id": dive["id"],
                    "score_diff": other.score - result.score,
                    "same_boundaries": [b["frame"] for b in other.document["boundaries"]]
                    == [b["frame"] for b in doc["boundaries"]],
                }
            )
        truth = gt_transitions(np.asarray(dive["frame_labels"]))  # first frame of flight, of entry
        predicted = [b["frame"] - dive["start_frame"] for b in doc["boundaries"]]
        rows.append(
            {
                "id": dive["id"],
                "video": video.name,
                "dive_number": dive["dive_number"],
                "difficulty": dive["difficulty"],
                "num_frames": dive["num_frames"],
                "true_score": dive["final_score"],
                "predicted_score": doc["score"],
                "dd_only_score": dive["difficulty"] * completeness,
                "true_flight_start": int(truth[0]),
                "predicted_flight_start": predicted[0],
                "true_entry_start": int(truth[1]),
                "predicted_entry_start": predicted[1],
            }
        )
    if not rows:
        raise ScoringError("no held-out dive could be scored (every dive number unknown to the model?)")
    true = np.array([r["true_score"] for r in rows])
    summary: dict[str, Any] = {"dives": len(rows), "skipped": skipped}
    for name in ("predicted", "dd_only"):
        err = np.array([r[f"{name}_score"] for r in rows]) - true
        summary[name] = {
            "mae": float(np.abs(err).mean()),
            "rmse": float(np.sqrt((err**2).mean())),
            "mean_signed_error": float(err.mean()),
            "spearman_rho": float(spearmanr([r[f"{name}_score"] for r in rows], true).statistic)
            if name == "predicted"
            else float(spearmanr([r["difficulty"] for r in rows], true).statistic),
        }
    for boundary in ("flight_start", "entry_start"):
        err = np.abs(np.array([r[f"predicted_{boundary}"] - r[f"true_{boundary}"] for r in rows]))
        summary[boundary] = {
            "mean_abs_frames": float(err.mean()),
            "median_abs_frames": float(np.median(err)),
            "max_abs_frames": int(err.max()),
        }
    summary["frame_folders"] = {
        "dives": len(jpeg),
        "max_abs_score_diff": max((abs(j["score_diff"]) for j in jpeg), default=None),
        "same_boundaries": sum(j["same_boundaries"] for j in jpeg),
    }
    t = scorer.decode.num_frames
    summary["sampling_step_frames"] = float(np.mean([(r["num_frames"] - 1) / (t - 1) for r in rows]))
    return rows, summary


def markdown(summary: dict[str, Any]) -> str:
    """The summary as a Markdown table."""
    p, d = summary["predicted"], summary["dd_only"]
    f, e = summary["flight_start"], summary["entry_start"]
    return "\n".join(
        [
            f"| held-out dives | {summary['dives']} (skipped {len(summary['skipped'])}) |",
            "|---|---|",
            f"| score MAE / RMSE (points) | {p['mae']:.2f} / {p['rmse']:.2f} (DD only: {d['mae']:.2f} / "
            f"{d['rmse']:.2f}) |",
            f"| score mean signed error | {p['mean_signed_error']:+.2f} |",
            f"| Spearman ρ (predicted, true) | {p['spearman_rho']:.3f} (DD only: {d['spearman_rho']:.3f}) |",
            "| take-off → flight boundary, mean / median abs error (source frames) | "
            f"{f['mean_abs_frames']:.1f} / {f['median_abs_frames']:.1f} |",
            "| flight → entry boundary, mean / median abs error (source frames) | "
            f"{e['mean_abs_frames']:.1f} / {e['median_abs_frames']:.1f} |",
            "| sampling step (source frames between sampled frames) | "
            f"{summary['sampling_step_frames']:.2f} |",
            *(
                [
                    f"| JPEG frame folder + MPII JSON vs mp4 ({j['dives']} dives): max abs score difference, "
                    f"same boundaries | {j['max_abs_score_diff']:.3f}, {j['same_boundaries']}/{j['dives']} |"
                ]
                if (j := summary["frame_folders"])["dives"]
                else []
            ),
        ]
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument(
        "--model", default="hpmcore@champion", help="NAME@ALIAS, NAME/VERSION, run id or folder"
    )
    parser.add_argument("--tracking-uri", default=None, help="MLflow store (default: the project's)")
    parser.add_argument("--project-dir", type=Path, default=Path("."))
    parser.add_argument("--seed", type=int, default=7, help="generator seed of the held-out dives")
    parser.add_argument("--num-dives", type=int, default=60)
    parser.add_argument("--out", type=Path, default=Path("/tmp/hpmcore-heldout"))
    parser.add_argument(
        "--frame-folders", type=int, default=3, help="also score this many dives as JPEG folders + MPII JSON"
    )
    parser.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"])
    args = parser.parse_args(argv)
    setup_logging()
    try:
        with tempfile.TemporaryDirectory(prefix="hpmcore-heldout-") as tmp:
            bundle, ref = load_bundle(
                args.model, tracking_uri=args.tracking_uri, project_dir=args.project_dir, tmp=Path(tmp)
            )
            data = bundle.settings["data"]
            if data["data"]["format"] != "synthetic":
                raise ScoringError(
                    f"model {ref} was trained on {data['data']['format']} data, not synthetic dives"
                )
            synth = from_dict(SynthConfig, dict(data["synth"]), "synth")
            dataset = held_out_dataset(synth, args.seed, args.num_dives, args.out / "dataset")
            scorer = Scorer(bundle, device=args.device, project_dir=args.project_dir, ref=ref)
            rows, summary = measure(scorer, dataset, args.out, args.frame_folders)
    except SCORING_ERRORS as exc:
        print(f"score_heldout: error: {exc}", file=sys.stderr)
        return 2
    summary = {"model": ref, "seed": args.seed, "trained_on_seed": synth.seed, **summary}
    with open(args.out / "scores.csv", "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]), lineterminator="\n")
        writer.writeheader()
        writer.writerows(rows)
    with open(args.out / "dives.csv", "w", newline="") as f:  # hpmcore score <videos> --dives dives.csv
        writer = csv.writer(f, lineterminator="\n")
        writer.writerow(["video", "dive_number"])
        writer.writerows([r["video"], r["dive_number"]] for r in rows)  # the dives scored
    (args.out / "summary.json").write_text(json.dumps(summary, indent=2))
    print(f"model {ref}; held-out generator seed {args.seed} (trained on seed {synth.seed})")
    print(markdown(summary))
    return 0


if __name__ == "__main__":
    sys.exit(main())
