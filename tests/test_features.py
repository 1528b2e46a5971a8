"""The features stage: shapes, weights provenance, clear errors, incremental cache, no NaN ever written."""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pyarrow.parquet as pq
import pytest
import torch
import yaml
from safetensors.torch import save_file

from hpmcore.config import ConfigError, DecodeConfig, FeaturesConfig
from hpmcore.data.canonical import annotation_table
from hpmcore.extraction.cache import ExtractionFailed, load_entry, sha256_file
from hpmcore.extraction.decode import decode_videos, load_decoded
from hpmcore.extraction.features import (
    IMAGENET_MEAN,
    IMAGENET_STD,
    RANDOM_INIT,
    build_feature_encoders,
    encode_batch,
    extract_features,
    load_features,
    preprocess,
)
from hpmcore.io import write_parquet
from hpmcore.models.checkpoints import CheckpointError
from hpmcore.models.i3d import InceptionI3d
from hpmcore.models.static import StaticEncoder
from hpmcore.runtime import resolve_device

MAKE = Callable[..., Any]
CFG = FeaturesConfig(device="cpu")


def _decoded(
    tmp_path: Path, make_video: MAKE | None, n: int = 3, num_frames: int = 32, size: int = 32
) -> Path:
    """Decode ``v0.mp4 .. v{n-1}.mp4`` (written first by ``make_video`` unless it is ``None``) into
    ``tmp_path/decoded`` (cache + manifest) and return that folder."""
    rows = []
    for i in range(n):
        if make_video is not None:
            make_video(30, name=f"v{i}.mp4", first=50 * i)
        rows.append(
            {
                "id": f"v/{i}",
                "video_name": "v",
                "dive_index": i,
                "video_path": f"v{i}.mp4",
                "start_frame": 0,
                "end_frame": 29,
                "num_frames": 30,
                "dive_number": "107b",
                "difficulty": 3.0,
                "judge_scores": [],
                "final_score": 50.0,
                "transitions": [],
                "frame_labels": [],
                "split": "train",
            }
        )
    out = tmp_path / "decoded"
    cfg = DecodeConfig(num_frames=num_frames, width=size, height=size, min_source_frames=8)
    result = decode_videos(annotation_table(rows), cfg, root=tmp_path, out_dir=out, progress=False)
    write_parquet(result.manifest, out / "manifest.parquet")
    return out


def _frames(decoded: Path, index: int) -> torch.Tensor:
    row = pq.read_table(decoded / "manifest.parquet").to_pylist()[index]
    return load_decoded(decoded, row)


def test_shapes_for_96_frames_and_manifest_records_random_init(
    make_video: MAKE, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    decoded = _decoded(tmp_path, make_video, n=1, num_frames=96)
    with caplog.at_level(logging.WARNING):
        result = extract_features(decoded, CFG, out_dir=tmp_path / "features", progress=False)
    assert "features.i3d_weights is null" in caplog.text and "RANDOMLY INITIALISED" in caplog.text
    assert "features.static_weights is null" in caplog.text
    (row,) = result.manifest.to_pylist()
    i3d, static = load_features(tmp_path / "features", row)
    assert tuple(i3d.shape) == (9, 1024) and tuple(static.shape) == (96, 368)
    assert i3d.dtype == static.dtype == torch.float32
    assert torch.isfinite(i3d).all() and torch.isfinite(static).all()
    assert (row["num_clips"], row["num_frames"]) == (9, 96)
    assert row["i3d_weights"] is None and row["i3d_weights_sha256"] == RANDOM_INIT
    assert row["static_weights"] is None and row["static_weights_sha256"] == RANDOM_INIT
    assert (row["device"], row["precision"]) == ("cpu", "fp32")
    decode_row = pq.read_table(decoded / "manifest.parquet").to_pylist()[0]
    assert row["decode_key"] == decode_row["key"] and row["source_path"] == decode_row["source_path"]
    params = json.loads(row["params"])
    assert params["clip_len"] == 16 and params["clip_stride"] == 10 and params["init_seed"] == 0
    assert params["mean"] == list(IMAGENET_MEAN) and params["decoded_width"] == 32
    assert load_entry(tmp_path / "features" / row["path"]).tensors["clip_starts"].tolist() == list(
        range(0, 81, 10)
    )


def test_features_are_those_of_the_encoders_and_batching_does_not_mix_videos(
    make_video: MAKE, tmp_path: Path
) -> None:
    decoded = _decoded(tmp_path, make_video, n=3, num_frames=32)
    batched = extract_features(
        decoded, FeaturesConfig(device="cpu", batch_size=3), out_dir=tmp_path / "f3", progress=False
    )
    single = extract_features(
        decoded, FeaturesConfig(device="cpu", batch_size=1), out_dir=tmp_path / "f1", progress=False
    )
    assert batched.manifest.column("key").equals(single.manifest.column("key"))  # batch size: no key part
    encoders = build_feature_encoders(CFG)
    for row, decode_row in zip(
        batched.manifest.to_pylist(), pq.read_table(decoded / "manifest.parquet").to_pylist(), strict=True
    ):
        a = load_features(tmp_path / "f3", row)
        b = load_features(tmp_path / "f1", row)
        direct = encode_batch(encoders, load_decoded(decoded, decode_row)[None])
        for x, y, z in zip(a, b, direct, strict=True):
            torch.testing.assert_close(x, y, rtol=1e-4, atol=1e-6 * float(z.abs().max()))
            torch.testing.assert_close(x, z[0], rtol=1e-4, atol=1e-6 * float(z.abs().max()))
    i3d = torch.stack([load_features(tmp_path / "f3", r)[0] for r in batched.manifest.to_pylist()])
    assert (i3d[0] - i3d[1]).abs().max() > 0  # different videos, different features


def test_rerun_reuses_and_only_changed_videos_are_recomputed(
    make_video: MAKE, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    decoded = _decoded(tmp_path, make_video, n=3)
    out = tmp_path / "features"

    def run(cfg: FeaturesConfig = CFG) -> str:
        caplog.clear()
        with caplog.at_level(logging.INFO, logger="hpmcore.extraction.cache"):
            extract_features(decoded, cfg, out_dir=out, progress=False)
        return caplog.text

    assert "features: computed 3, reused 0" in run()
    assert "features: computed 0, reused 3 (failed 0, removed 0 stale)" in run()
    assert "features: computed 0, reused 3" in run(FeaturesConfig(device="cpu", batch_size=2, amp=False))
    make_video(30, name="v1.mp4", first=222)  # one source changes → one decode entry → one features entry
    _decoded(tmp_path, None, n=3)
    assert "features: computed 1, reused 2 (failed 0, removed 1 stale)" in run()
    assert "features: computed 3, reused 0 (failed 0, removed 3 stale)" in run(
        FeaturesConfig(device="cpu", init_seed=1)
    )


def _i3d_checkpoint(path: Path, *, poison: bool = False) -> Path:
    torch.manual_seed(1)
    state = InceptionI3d(with_logits=True).state_dict()
    state = {k: v for k, v in state.items() if not k.endswith("num_batches_tracked")}
    if poison:
        state["mixed_4b.branch_0.conv3d.weight"][0, 0, 0, 0, 0] = float("nan")
    torch.save(state, path)
    return path


def _static_checkpoint(path: Path) -> Path:
    torch.manual_seed(2)
    save_file(StaticEncoder(temporal="none").trunk.state_dict(), str(path))
    return path


def test_manifest_records_the_weights_hashes(make_video: MAKE, tmp_path: Path) -> None:
    decoded = _decoded(tmp_path, make_video, n=1, num_frames=16)
    i3d = _i3d_checkpoint(tmp_path / "model_rgb.pth")
    static = _static_checkpoint(tmp_path / "regnety_002.safetensors")
    cfg = FeaturesConfig(device="cpu", i3d_weights="model_rgb.pth", static_weights=str(static))
    result = extract_features(
        decoded, cfg, out_dir=tmp_path / "features", project_dir=tmp_path, progress=False
    )
    (row,) = result.manifest.to_pylist()
    assert row["i3d_weights"] == "model_rgb.pth" and row["i3d_weights_sha256"] == sha256_file(i3d)
    assert row["static_weights"] == str(static) and row["static_weights_sha256"] == sha256_file(static)
    assert "init_seed" in json.loads(row["params"])  # recorded, though not part of the key here
    random = extract_features(decoded, CFG, out_dir=tmp_path / "f2", progress=False)
    assert random.manifest.column("key")[0].as_py() != row["key"]  # the weights are part of the key


@pytest.mark.parametrize("which", ["i3d_weights", "static_weights"])
def test_missing_checkpoint_is_a_clear_error_and_nothing_is_written(
    which: str, make_video: MAKE, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    from stages.features import main

    decoded = _decoded(tmp_path, make_video, n=1, num_frames=16)
    cfg = FeaturesConfig(device="cpu", **{which: "weights/nope.pth"})
    with pytest.raises(
        CheckpointError, match=rf"features\.{which}: checkpoint .*weights/nope\.pth: file does not"
    ):
        extract_features(decoded, cfg, out_dir=tmp_path / "features", project_dir=tmp_path, progress=False)
    assert not (tmp_path / "features").exists()

    params = tmp_path / "params.yaml"
    params.write_text(yaml.safe_dump({"features": {"device": "cpu", which: "weights/nope.pth"}}))
    with caplog.at_level(logging.ERROR):
        code = main(["--params", str(params), "--decoded", str(decoded), "--out", str(tmp_path / "out")])
    assert code == 2 and "weights/nope.pth: file does not exist" in caplog.text
    assert not (tmp_path / "out").exists()


def test_nan_weights_are_refused_before_anything_is_written(make_video: MAKE, tmp_path: Path) -> None:
    decoded = _decoded(tmp_path, make_video, n=1, num_frames=16)
    _i3d_checkpoint(tmp_path / "bad.pth", poison=True)
    cfg = FeaturesConfig(device="cpu", i3d_weights="bad.pth")
    with pytest.raises(CheckpointError, match=r"bad\.pth: non-finite values .*mixed_4b\.branch_0\.conv3d"):
        extract_features(decoded, cfg, out_dir=tmp_path / "features", project_dir=tmp_path, progress=False)
    assert not (tmp_path / "features").exists()


@pytest.mark.parametrize("on_error", ["skip", "fail"])
def test_non_finite_features_are_never_written(
    on_error: str, make_video: MAKE, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import hpmcore.extraction.features as features

    decoded = _decoded(tmp_path, make_video, n=3)
    real = features.encode_batch
    v1 = _frames(decoded, 1)

    def poisoned(encoders: Any, frames: torch.Tensor, crop_size: Any = None) -> Any:
        i3d, static = real(encoders, frames, crop_size)
        for b in range(frames.shape[0]):
            if torch.equal(frames[b], v1):
                static[b, 3, 7] = float("nan")  # one value of video v/1
        return i3d, static

    monkeypatch.setattr(features, "encode_batch", poisoned)
    cfg = FeaturesConfig(device="cpu", batch_size=1, on_error=on_error)  # type: ignore[arg-type]
    out = tmp_path / "features"
    if on_error == "fail":
        with pytest.raises(ExtractionFailed, match=r"v1\.mp4 \(dive v/1\) failed: non-finite features"):
            extract_features(decoded, cfg, out_dir=out, progress=False)
        assert len(list((out / "cache").iterdir())) == 1  # v/0 only: nothing for v/1
        return
    result = extract_features(decoded, cfg, out_dir=out, progress=False)
    (failure,) = result.failures.to_pylist()
    assert failure["id"] == "v/1" and failure["stage"] == "features"
    assert (
        "non-finite features (NaN/inf: 0 of 2048 I3D values, 1 of 11776 RegNet values)" in failure["reason"]
    )
    assert result.manifest.column("id").to_pylist() == ["v/0", "v/2"]
    assert len(list((out / "cache").iterdir())) == 2
    for row in result.manifest.to_pylist():
        assert all(torch.isfinite(t).all() for t in load_features(out, row))


def test_unreadable_decoded_entry_is_a_failure(make_video: MAKE, tmp_path: Path) -> None:
    decoded = _decoded(tmp_path, make_video, n=2)
    row = pq.read_table(decoded / "manifest.parquet").to_pylist()[0]
    (decoded / row["path"]).write_bytes(b"garbage")
    cfg = FeaturesConfig(device="cpu", on_error="skip")
    result = extract_features(decoded, cfg, out_dir=tmp_path / "features", progress=False)
    (failure,) = result.failures.to_pylist()
    assert failure["id"] == "v/0" and "cannot read the decoded frames" in failure["reason"]
    assert row["path"] in failure["reason"]
    assert result.manifest.column("id").to_pylist() == ["v/1"]


def test_preprocess_crops_like_the_spec_and_normalises() -> None:
    frames = torch.zeros(1, 2, 200, 112, 3, dtype=torch.uint8)
    frames[:, :, 44:156] = 255  # only the rows the spec's test-time crop keeps are white
    x = preprocess(frames, crop_size=112)
    assert tuple(x.shape) == (1, 3, 2, 112, 112)
    white = (1 - torch.tensor(IMAGENET_MEAN)) / torch.tensor(IMAGENET_STD)
    torch.testing.assert_close(x.amax(dim=(2, 3, 4)), white[None])
    torch.testing.assert_close(x.amin(dim=(2, 3, 4)), white[None])
    assert tuple(preprocess(frames).shape) == (1, 3, 2, 200, 112)
    with pytest.raises(ValueError, match="expected uint8"):
        preprocess(frames.float())
    with pytest.raises(ValueError, match="crop_size 128 larger"):
        preprocess(frames, crop_size=128)


def test_clip_longer_than_the_videos_and_cuda_without_gpu_are_config_errors(
    make_video: MAKE, tmp_path: Path
) -> None:
    decoded = _decoded(tmp_path, make_video, n=1, num_frames=16)
    with pytest.raises(ConfigError, match="clip_len=20 is longer than the decoded videos"):
        extract_features(decoded, FeaturesConfig(device="cpu", clip_len=20), out_dir=tmp_path / "f")
    if not torch.cuda.is_available():
        with pytest.raises(ConfigError, match=r"features\.device is 'cuda'"):
            resolve_device("cuda", param="features.device")
    assert resolve_device("cpu") == torch.device("cpu")


def test_features_stage_without_a_decode_manifest_is_a_clear_error(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    from stages.features import main

    params = tmp_path / "params.yaml"
    params.write_text(yaml.safe_dump({"features": {"device": "cpu"}}))
    with caplog.at_level(logging.ERROR):
        code = main(["--params", str(params), "--decoded", f"{tmp_path}/nope", "--out", f"{tmp_path}/o"])
    assert code == 2 and "nope/manifest.parquet: manifest not found" in caplog.text
    assert not (tmp_path / "o").exists()
