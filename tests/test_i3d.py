"""I3D dynamic encoder (spec §2): layer geometry, 96 frames → 9 clips, parameter count, strict loading."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest
import torch

from hpmcore.models.checkpoints import CheckpointError
from hpmcore.models.i3d import (
    I3DVideoEncoder,
    InceptionI3d,
    build_i3d_encoder,
    clip_starts,
    load_i3d_weights,
)

# The checkpoint layout of spec §2.4, written out here independently of the model code:
# (unit prefix, in channels, out channels, cubic kernel size).
_STEM = [("conv3d_1a_7x7", 3, 64, 7), ("conv3d_2b_1x1", 64, 64, 1), ("conv3d_2c_3x3", 64, 192, 3)]
_MIXED_TABLE = {  # spec §2.2: name → (input channels, [b0, b1a, b1b, b2a, b2b, b3])
    "mixed_3b": (192, [64, 96, 128, 16, 32, 32]),
    "mixed_3c": (256, [128, 128, 192, 32, 96, 64]),
    "mixed_4b": (480, [192, 96, 208, 16, 48, 64]),
    "mixed_4c": (512, [160, 112, 224, 24, 64, 64]),
    "mixed_4d": (512, [128, 128, 256, 24, 64, 64]),
    "mixed_4e": (512, [112, 144, 288, 32, 64, 64]),
    "mixed_4f": (528, [256, 160, 320, 32, 128, 128]),
    "mixed_5b": (832, [256, 160, 320, 32, 128, 128]),
    "mixed_5c": (832, [384, 192, 384, 48, 128, 128]),
}


def _documented_units() -> list[tuple[str, int, int, int]]:
    units = list(_STEM)
    for name, (cin, (b0, b1a, b1b, b2a, b2b, b3)) in _MIXED_TABLE.items():
        units += [
            (f"{name}.branch_0", cin, b0, 1),
            (f"{name}.branch_1.0", cin, b1a, 1),
            (f"{name}.branch_1.1", b1a, b1b, 3),
            (f"{name}.branch_2.0", cin, b2a, 1),
            (f"{name}.branch_2.1", b2a, b2b, 3),
            (f"{name}.branch_3.1", cin, b3, 1),
        ]
    return units


def _kinetics_state(*, with_counters: bool = False) -> dict[str, torch.Tensor]:
    """A fake ``model_rgb.pth``: 285 backbone tensors + 2 logits tensors, laid out as spec §2.4."""
    g = torch.Generator().manual_seed(1)
    state: dict[str, torch.Tensor] = {}
    for prefix, cin, cout, k in _documented_units():
        state[f"{prefix}.conv3d.weight"] = torch.randn(cout, cin, k, k, k, generator=g) * 0.01
        state[f"{prefix}.batch3d.weight"] = torch.ones(cout)  # the TF model had no BN scale
        state[f"{prefix}.batch3d.bias"] = torch.randn(cout, generator=g)
        state[f"{prefix}.batch3d.running_mean"] = torch.randn(cout, generator=g)
        state[f"{prefix}.batch3d.running_var"] = torch.rand(cout, generator=g) + 0.5
        if with_counters:
            state[f"{prefix}.batch3d.num_batches_tracked"] = torch.tensor(7)
    state["conv3d_0c_1x1.conv3d.weight"] = torch.randn(400, 1024, 1, 1, 1, generator=g)
    state["conv3d_0c_1x1.conv3d.bias"] = torch.randn(400, generator=g)
    return state


@pytest.fixture(scope="module")
def backbone() -> InceptionI3d:
    torch.manual_seed(0)
    return InceptionI3d().eval()


def test_clip_starts_cover_96_frames_with_9_clips() -> None:
    starts = clip_starts(96, 16, 10)
    assert starts == [0, 10, 20, 30, 40, 50, 60, 70, 80]
    assert clip_starts() == starts
    assert starts[-1] + 16 == 96
    with pytest.raises(ValueError, match="clip_len=16"):
        clip_starts(15)


def test_parameter_count_matches_spec(backbone: InceptionI3d) -> None:
    assert sum(p.numel() for p in backbone.parameters()) == 12_287_264
    with_logits = InceptionI3d(with_logits=True)
    assert sum(p.numel() for p in with_logits.parameters()) == 12_287_264 + 410_000
    assert sum(p.numel() for p in with_logits.backbone_parameters()) == 12_287_264
    tensors = [k for k in backbone.state_dict() if not k.endswith("num_batches_tracked")]
    assert len(tensors) == 285


def test_layer_shapes_at_112_follow_the_spec_table() -> None:
    with torch.device("meta"):  # shapes only, no compute
        model = InceptionI3d()
    x = torch.empty(1, 3, 16, 112, 112, device="meta")
    expected = {
        "conv3d_1a_7x7": (64, 8, 56, 56),
        "maxPool3d_2a_3x3": (64, 8, 28, 28),
        "conv3d_2c_3x3": (192, 8, 28, 28),
        "maxPool3d_3a_3x3": (192, 8, 14, 14),
        "mixed_3c": (480, 8, 14, 14),
        "maxPool3d_4a_3x3": (480, 4, 7, 7),
        "mixed_4e": (528, 4, 7, 7),
        "mixed_4f": (832, 4, 7, 7),
        "maxPool3d_5a_2x2": (832, 2, 4, 4),
        "mixed_5c": (1024, 2, 4, 4),
    }
    seen: dict[str, tuple[int, ...]] = {}
    for name in expected:
        getattr(model, name).register_forward_hook(
            lambda _m, _i, out, name=name: seen.__setitem__(name, tuple(out.shape[1:]))
        )
    assert model(x).shape == (1, 1024)
    assert seen == expected


def test_video_gives_nine_clip_features_in_temporal_order(backbone: InceptionI3d) -> None:
    encoder = I3DVideoEncoder(backbone)
    video = torch.randn(3, 96, 32, 32)  # (C, T, H, W), small spatial size for speed
    with torch.no_grad():
        feats = encoder(video)
        assert feats.shape == (9, 1024)
        last = backbone(video[None, :, 80:96])  # (1, 1024): the last clip on its own
    torch.testing.assert_close(feats[8:], last, rtol=1e-4, atol=1e-5)


def test_bad_input_shapes_raise_value_error_with_the_shape(backbone: InceptionI3d) -> None:
    encoder = I3DVideoEncoder(backbone)
    with pytest.raises(ValueError, match=r"\(2, 96, 32, 32\)"):
        encoder(torch.zeros(2, 96, 32, 32))  # 2 channels
    with pytest.raises(ValueError, match=r"\(1, 3, 12, 32, 32\)"):
        encoder(torch.zeros(1, 3, 12, 32, 32))  # fewer frames than one clip
    with pytest.raises(ValueError, match=r"\(3, 16, 32, 32\)"):
        backbone(torch.zeros(3, 16, 32, 32))  # clip without batch axis


@pytest.mark.parametrize("with_counters", [False, True])
def test_strict_loading_accepts_the_documented_layout(tmp_path: Path, with_counters: bool) -> None:
    state = _kinetics_state(with_counters=with_counters)
    path = tmp_path / "model_rgb.pth"
    torch.save(state, path)
    encoder = build_i3d_encoder(weights=path)
    loaded = encoder.backbone.state_dict()
    for key, value in state.items():
        if key.startswith("conv3d_0c_1x1."):
            assert key not in loaded  # logits are unused and not built by default
        else:
            assert torch.equal(loaded[key], value), key

    with_logits = InceptionI3d(with_logits=True)
    report = load_i3d_weights(with_logits, path)
    assert report.loaded == 287
    assert torch.equal(with_logits.conv3d_0c_1x1.conv3d.bias, state["conv3d_0c_1x1.conv3d.bias"])


@pytest.mark.parametrize(
    ("change", "key"),
    [
        ("missing", "mixed_4d.branch_2.1.conv3d.weight"),
        ("misshaped", "mixed_5c.branch_3.1.batch3d.running_mean"),
        ("unexpected", "mixed_5c.branch_4.conv3d.weight"),
        ("misshaped", "conv3d_0c_1x1.conv3d.weight"),
    ],
)
def test_strict_loading_rejects_a_mismatch_and_names_the_key(
    tmp_path: Path, backbone: InceptionI3d, change: str, key: str
) -> None:
    state = _kinetics_state()
    match change:
        case "missing":
            del state[key]
        case "misshaped":
            state[key] = torch.zeros(3)
        case "unexpected":
            state[key] = torch.zeros(1)
    path = tmp_path / "model_rgb.pth"
    torch.save(state, path)
    with pytest.raises(CheckpointError, match=change.replace("shaped", "-shaped")) as err:
        load_i3d_weights(InceptionI3d(), path)
    assert key in str(err.value)
    assert str(path) in str(err.value)


def test_missing_file_is_a_checkpoint_error_naming_it(tmp_path: Path) -> None:
    path = tmp_path / "nowhere" / "model_rgb.pth"
    with pytest.raises(CheckpointError, match="does not exist") as err:
        build_i3d_encoder(weights=path)
    assert str(path) in str(err.value)
    assert isinstance(err.value, ValueError)


def test_random_init_is_seeded_and_logged(caplog: pytest.LogCaptureFixture) -> None:
    state = torch.get_rng_state()
    with caplog.at_level(logging.WARNING):
        a = build_i3d_encoder(weights=None, seed=3)
    assert "NO PRETRAINED WEIGHTS" in caplog.text
    assert torch.equal(torch.get_rng_state(), state)  # global RNG untouched
    b = build_i3d_encoder(weights=None, seed=3)
    w = "mixed_4b.branch_1.1.conv3d.weight"
    assert torch.equal(a.backbone.state_dict()[w], b.backbone.state_dict()[w])
