"""The ``hpmcore`` command line.

hpmcore data inspect --format {finediving,mtl-aqa,canonical} PATH... [--json]
hpmcore synth --out DIR [--num-dives N] [--seed S] [--params params.yaml] [--no-render]
hpmcore tune --trials N [--objective exec_rho|rho] [--seeds S] [--study NAME] [--space FILE] [--restart]
(tune: validation split only; see hpmcore.training.tune and `hpmcore tune --help`)
hpmcore lineage show --model NAME@ALIAS|NAME/VERSION|RUN_ID [--json]
hpmcore lineage verify --model NAME@ALIAS|NAME/VERSION|RUN_ID [--json]
hpmcore lineage models --video DIVE_ID [--json]
(lineage: --tracking-uri URI, default the project's store .hpmcore/mlflow.db; --project-dir DIR, default .)
hpmcore score PATH --dive-number 407c [--pose FILE] [--model hpmcore@champion] [--json] [--plot OUT.png]
(score: PATH an mp4, a JPEG frame folder or a folder of them; see hpmcore.serving.command)
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import sys
from pathlib import Path

from hpmcore.config import ConfigError, SynthConfig, load_params
from hpmcore.data.canonical import DatasetError
from hpmcore.logs import setup_logging

log = logging.getLogger("hpmcore")


def _inspect(args: argparse.Namespace) -> int:
    from hpmcore.data.inspect import format_summary, read_dataset, summarize

    table, problems, bad_transitions = read_dataset(args.format, args.paths)
    summary = summarize(table, problems, bad_transitions)
    print(json.dumps(summary, indent=2, sort_keys=True) if args.json else format_summary(summary))
    return 0


def _export_finediving(args: argparse.Namespace) -> int:
    import pyarrow.parquet as pq

    from hpmcore.data.canonical import read_annotations
    from hpmcore.data.finediving import export_finediving

    if args.out.exists():
        raise DatasetError(f"{args.out}: already exists; choose a new output folder")
    skeleton_path = args.dataset / "skeletons.parquet"
    if not skeleton_path.is_file():
        raise DatasetError(f"{skeleton_path}: skeleton table not found (needed for FineDiving-Pose files)")
    annotations = read_annotations(args.dataset / "annotations.parquet")
    export_finediving(annotations, pq.read_table(skeleton_path), args.dataset, args.out)
    print(f"exported {annotations.num_rows} dives to {args.out}")
    return 0


def _synth(args: argparse.Namespace) -> int:
    from hpmcore.data.synth import generate_dataset

    base = load_params(args.params).synth if args.params else SynthConfig()
    overrides = {"num_dives": args.num_dives, "seed": args.seed}
    cfg = dataclasses.replace(base, **{k: v for k, v in overrides.items() if v is not None})
    cfg.validate()
    if args.out.exists() and not args.overwrite:
        raise ConfigError(f"{args.out}: already exists (pass --overwrite to replace it)")
    summary = generate_dataset(cfg, args.out, render=not args.no_render)
    print(json.dumps(dataclasses.asdict(summary), indent=2, default=str))
    return 0


def _lineage(args: argparse.Namespace) -> int:
    from hpmcore.tracking import default_state_dir, lineage
    from hpmcore.tracking.mlflow import Registry, tracking_uri

    uri = args.tracking_uri or tracking_uri(default_state_dir(args.project_dir))
    registry = Registry(uri)
    try:
        if args.lineage_command == "show":
            found = lineage.show(registry, args.model)
            print(json.dumps(found, indent=2, sort_keys=True) if args.json else lineage.format_show(found))
            return 0
        if args.lineage_command == "verify":
            result = lineage.verify(registry, args.model, args.project_dir)
            report = {**dataclasses.asdict(result), "ok": result.ok}
            text = json.dumps(report, indent=2) if args.json else None
            print(text or lineage.format_verification(result))
            return 0 if result.ok else 1
        rows = lineage.models_for_video(registry, args.video)
    except lineage.LineageError as exc:
        print(f"hpmcore: error: {exc}", file=sys.stderr)
        return 2
    if args.json:
        print(json.dumps(rows, indent=2))
    elif not rows:
        print(f"no registered model version was trained, validated or evaluated on {args.video}")
    for row in [] if args.json else rows:
        aliases = f" (@{', @'.join(row['aliases'])})" if row["aliases"] else ""
        print(f"{row['model']}{aliases}  {row['role']} ({row['split']} split)  run {row['run_id']}")
    return 0


def _add_lineage(sub: argparse._SubParsersAction) -> None:
    lineage = sub.add_parser("lineage", help="what a registered model was made from, checked")
    commands = lineage.add_subparsers(dest="lineage_command", required=True)
    show = commands.add_parser("show", help="git commit, params, dvc.lock, dataset, manifests, checkpoint")
    verify = commands.add_parser("verify", help="check the record against the workspace and the DVC cache")
    models = commands.add_parser("models", help="the registered versions that used a dive")
    for cmd in (show, verify):
        cmd.add_argument("--model", required=True, help="NAME@ALIAS, NAME/VERSION or an MLflow run id")
    models.add_argument("--video", required=True, help="a dive id (as in the dive table)")
    for cmd in (show, verify, models):
        cmd.add_argument("--json", action="store_true", help="print JSON")
        cmd.add_argument("--tracking-uri", default=None, help="MLflow store (default: the project's)")
        cmd.add_argument("--project-dir", type=Path, default=Path("."), help="the project root (default: .)")
        cmd.set_defaults(func=_lineage)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="hpmcore", description="HP-MCoRe action quality assessment tools")
    sub = parser.add_subparsers(dest="command", required=True)

    data = sub.add_parser("data", help="dataset tools").add_subparsers(dest="data_command", required=True)
    inspect = data.add_parser("inspect", help="read a dataset and print counts, ranges and problems")
    inspect.add_argument("--format", required=True, choices=["finediving", "mtl-aqa", "canonical"])
    inspect.add_argument("paths", nargs="+", type=Path, help="dataset root folder or annotation/split files")
    inspect.add_argument("--json", action="store_true", help="print the summary as JSON")
    inspect.set_defaults(func=_inspect)

    export = data.add_parser(
        "export-finediving", help="write a canonical dataset (e.g. a synthetic one) in FineDiving's layout"
    )
    export.add_argument("dataset", type=Path, help="folder with annotations.parquet and skeletons.parquet")
    export.add_argument("out", type=Path, help="output folder (must not exist)")
    export.set_defaults(func=_export_finediving)

    synth = sub.add_parser("synth", help="generate a synthetic diving dataset")
    synth.add_argument("--out", type=Path, required=True, help="output folder (must not exist)")
    synth.add_argument("--num-dives", type=int, default=None)
    synth.add_argument("--seed", type=int, default=None)
    synth.add_argument("--params", type=Path, default=None, help="take the other synth values from here")
    synth.add_argument("--no-render", action="store_true", help="annotations and skeletons only, no mp4")
    synth.add_argument("--overwrite", action="store_true", help="replace an existing output folder")
    synth.set_defaults(func=_synth)
    # `tune` has its own parser (hpmcore.training.tune.main, which main() calls before this one), so
    # that other commands do not import torch and optuna; listed here for `hpmcore --help`
    sub.add_parser("tune", help="search model/train params on the validation split only (Optuna, MLflow)")
    _add_lineage(sub)
    from hpmcore.serving.command import add_score_parser  # light; scoring itself imports torch

    add_score_parser(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["tune"]:
        from hpmcore.training.tune import main as tune_main

        return tune_main(argv[1:])
    args = build_parser().parse_args(argv)
    setup_logging()
    try:
        return args.func(args)
    except (ConfigError, DatasetError) as exc:
        print(f"hpmcore: error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
