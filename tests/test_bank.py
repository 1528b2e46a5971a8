"""The feature bank from the stages' outputs: tensors, ground-truth transitions at the sampled frames,
pose normalisation, feature sizes from the manifest, dives left out after ``on_error: skip`` (and an
error for any other missing dive), dives without transitions, splash targets."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import torch
from stage_outputs import dives, write_stage_outputs

from hpmcore.data.canonical import DatasetError, read_annotations
from hpmcore.extraction.cache import ManifestError, read_manifest
from hpmcore.extraction.decode import DECODE_MANIFEST_SCHEMA
from hpmcore.extraction.pose.table import dive_skeletons
from hpmcore.training.bank import BankDims, FeatureBankError, SkippedDive, load_feature_bank, pipeline_bank


def _args(paths: dict[str, Path]) -> tuple[Path, Path, Path, Path]:
    return paths["dives"], paths["decoded"], paths["features"], paths["pose"]


def test_bank_from_stage_outputs(tmp_path: Path) -> None:
    paths = write_stage_outputs(tmp_path, dives(train=2, val=1, test=1))
    bank = pipeline_bank(*_args(paths))
    assert sorted(bank.videos) == ["test/0", "train/0", "train/1", "val/0"] and bank.split_ids("test") == [
        "test/0"
    ]
    v = bank.get("train/1")
    assert v.i3d.shape == (3, 16) and v.static.shape == (12, 12) and v.skeleton.shape == (2, 12, 16, 1)
    # Sampled dive frames 0,1,3,5,6,8,10,12,13,15,17,19: stage 2 starts at sample 4, stage 3 at sample 9.
    assert v.transitions.tolist() == [4, 9]
    xy = dive_skeletons(pq.read_table(paths["pose"] / "skeletons.parquet"))["train/1"].xy
    torch.testing.assert_close(
        v.skeleton[0, :, :, 0], torch.from_numpy((xy[..., 0] - 32) / 32)
    )  # "frame" norm
    torch.testing.assert_close(v.skeleton[1, :, :, 0], torch.from_numpy((xy[..., 1] - 24) / 32))
    row = read_annotations(paths["dives"]).to_pylist()[1]
    assert (v.score, v.difficulty, v.dive_number) == (
        row["final_score"],
        row["difficulty"],
        row["dive_number"],
    )
    # What the features are comes from the manifest (params column) and the tensors: never from params.yaml.
    assert bank.dims == BankDims(i3d_dim=16, static_dim=12, num_frames=12, num_clips=3, clip_stride=4)
    assert bank.skipped == ()


def test_dives_failed_in_extraction_are_left_out_and_listed(tmp_path: Path) -> None:
    """on_error: skip upstream: the dive is in a failures table and missing downstream → out of the bank
    (table, pools, splits) and listed with its stage and reason."""
    spec = dives(train=4, val=2, test=2)
    spec[1] = replace(spec[1], failed="features")  # train/1
    spec[5] = replace(spec[5], failed="pose")  # val/1
    spec[6] = replace(spec[6], failed="decode")  # test/0
    bank = pipeline_bank(*_args(write_stage_outputs(tmp_path, spec)))
    assert bank.skipped == (
        SkippedDive("train/1", "train", "features", "train/1: broken"),
        SkippedDive("val/1", "val", "pose", "val/1: broken"),
        SkippedDive("test/0", "test", "decode", "test/0: broken"),
    )
    assert bank.split_ids("train") == ["train/0", "train/2", "train/3"] and bank.split_ids("test") == [
        "test/1"
    ]
    assert "train/1" not in bank.pool("train").ids and bank.table.num_rows == 5
    report = bank.skipped_report(("train", "val"))
    assert report["count"] == 2 and [d["id"] for d in report["dives"]] == ["train/1", "val/1"]
    json.dumps(report)


def test_a_dive_missing_for_another_reason_is_an_error_naming_the_manifest(tmp_path: Path) -> None:
    spec = dives(train=3, val=1, test=1)
    spec[2] = replace(spec[2], missing=True)  # not in the features manifest, in no failures table
    paths = write_stage_outputs(tmp_path, spec)
    with pytest.raises(
        FeatureBankError,
        match=r"features/manifest\.parquet: no features for dive 'train/2'.*no extraction stage recorded it",
    ):
        pipeline_bank(*_args(paths))
    # A failure recorded by another dive does not excuse this one.
    other = write_stage_outputs(tmp_path / "b", [*spec[:1], replace(spec[1], failed="features"), *spec[2:]])
    with pytest.raises(FeatureBankError, match=r"'train/2'"):
        pipeline_bank(*_args(other))
    # Without pose for a dive (no failures row): named too.
    (paths["pose"] / "skeletons.parquet").unlink()
    with pytest.raises(DatasetError, match=r"skeletons\.parquet"):
        pipeline_bank(*_args(paths))


def test_dives_without_transitions_stay_with_no_ground_truth(tmp_path: Path) -> None:
    spec = dives(train=3, val=1, test=2)
    spec[1] = replace(spec[1], labels=False)
    spec[5] = replace(spec[5], labels=False)
    bank = pipeline_bank(*_args(write_stage_outputs(tmp_path, spec)))
    assert bank.get("train/1").transitions is None and bank.get("test/1").transitions is None
    assert bank.get("train/0").transitions.tolist() == [4, 9]
    assert bank.without_transitions("train") == ["train/1"] and bank.without_transitions("test") == ["test/1"]


def test_features_of_another_decode_or_other_settings_are_refused(tmp_path: Path) -> None:
    paths = write_stage_outputs(tmp_path, dives(train=2, val=0, test=1))
    dives_table = read_annotations(paths["dives"])
    decode = read_manifest(paths["decoded"] / "manifest.parquet", DECODE_MANIFEST_SCHEMA)
    other = decode.set_column(decode.schema.get_field_index("key"), "key", [["dk0", "dkX", "dk2"]])
    with pytest.raises(FeatureBankError, match=r"dive 'train/1'.*another decode"):
        load_feature_bank(dives_table, paths["features"], decode_manifest=other)
    manifest = pq.read_table(paths["features"] / "manifest.parquet")
    params = manifest.column("params").to_pylist()
    params[2] = json.dumps({"clip_len": 4, "clip_stride": 5})
    pq.write_table(
        manifest.set_column(
            manifest.schema.get_field_index("params"), manifest.schema.field("params"), [params]
        ),
        paths["features"] / "manifest.parquet",
    )
    with pytest.raises(
        FeatureBankError, match=r"manifest\.parquet: dives were computed with different settings"
    ):
        load_feature_bank(dives_table, paths["features"], decode_manifest=decode)


def test_pipeline_bank_reads_files_and_splash_targets(tmp_path: Path) -> None:
    """The stages' bank: files by path (a missing one named), splash sizes from the synthetic latents."""
    paths = write_stage_outputs(tmp_path, dives(train=2, val=0, test=1))
    root = tmp_path / "root"
    root.mkdir()
    bank = pipeline_bank(*_args(paths), data_root=root)  # no latents: no splash targets
    assert all(v.splash is None for v in bank.videos.values())
    pq.write_table(pa.table({"id": ["train/0", "train/1"], "splash": [0.25, 0.75]}), root / "latents.parquet")
    bank = pipeline_bank(*_args(paths), data_root=root)
    assert [bank.get(i).splash for i in ("train/0", "train/1", "test/0")] == [0.25, 0.75, None]
    assert bank.dims is not None and bank.get("train/1").skeleton is not None
    with pytest.raises(ManifestError, match=r"decoded/manifest\.parquet"):
        pipeline_bank(paths["dives"], tmp_path / "nowhere" / "decoded", paths["features"], paths["pose"])
    (paths["features"] / "failures.parquet").unlink()
    with pytest.raises(DatasetError, match=r"features/failures\.parquet"):
        pipeline_bank(*_args(paths))
