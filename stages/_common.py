"""Arguments shared by the model stages (train, evaluate, compare): the pipeline folders they read."""

from __future__ import annotations

import argparse
from pathlib import Path

from hpmcore.config import ConfigError, Params
from hpmcore.data.canonical import DatasetError
from hpmcore.extraction.cache import ManifestError
from hpmcore.models.checkpoints import CheckpointError
from hpmcore.training.bank import FeatureBank, pipeline_bank
from hpmcore.training.frames import pipeline_frame_bank

INPUT_ERRORS = (ConfigError, DatasetError, ManifestError, CheckpointError)
"""Bad params, tables, manifests, features or checkpoints: the model stages exit 2 with the message."""


def add_bank_arguments(parser: argparse.ArgumentParser) -> None:
    """``--params --dives --decoded --pose --features``."""
    parser.add_argument("--params", type=Path, default=Path("params.yaml"))
    parser.add_argument("--dives", type=Path, required=True, help="dives.parquet of the prepare stage")
    parser.add_argument("--decoded", type=Path, required=True, help="output folder of the decode stage")
    parser.add_argument("--pose", type=Path, required=True, help="output folder of the pose stage")
    parser.add_argument("--features", type=Path, required=True, help="output folder of the features stage")


def load_bank(
    args: argparse.Namespace, params: Params, *, splash: bool = True, frames: bool = False
) -> FeatureBank:
    """The feature bank of the folders named by :func:`add_bank_arguments`; ``splash``: with the splash
    sizes of ``<data.root>/latents.parquet`` when it exists (training targets, not needed to evaluate);
    ``frames``: the frame bank (decoded frames, for ``train.mode: end_to_end``) instead."""
    load = pipeline_frame_bank if frames else pipeline_bank
    return load(
        args.dives,
        args.decoded,
        args.features,
        args.pose,
        data_root=params.data.root_path(args.params.parent) if splash else None,
    )
