"""Static encoder (spec §3): RegNetY-002 trunk, GSM / TSM, per-frame independence, strict loading."""

from __future__ import annotations

import logging
import math
from pathlib import Path

import pytest
import timm
import torch
from safetensors.torch import save_file
from torch import nn

from hpmcore.models.checkpoints import CheckpointError
from hpmcore.models.gsm import GateShift, TemporalShift, gsm_channels
from hpmcore.models.static import StaticEncoder, build_static_encoder, load_static_weights

T = 4  # frames per video in these tests (96 in HP-MCoRe)
HW = 32  # spatial size in these tests (112 in HP-MCoRe)


def _shift_params(encoder: StaticEncoder) -> int:
    return sum(p.numel() for m in encoder.temporal_modules() for p in m.parameters())


def _make_live(encoder: StaticEncoder) -> StaticEncoder:
    """Non-degenerate weights: timm zero-inits each block's last BN scale and GSM zero-inits its gate."""
    g = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for m in encoder.modules():
            if isinstance(m, nn.modules.batchnorm._BatchNorm):
                m.weight.copy_(torch.rand(m.weight.shape, generator=g) + 0.5)
            if isinstance(m, GateShift):
                m.conv3d.weight.copy_(torch.randn(m.conv3d.weight.shape, generator=g))
                m.conv3d.bias.copy_(torch.randn(2, generator=g))
    return encoder.eval()


def test_parameter_counts_match_spec() -> None:
    plain = StaticEncoder(temporal="none")
    assert sum(p.numel() for p in plain.parameters()) == 2_793_996
    gsm = StaticEncoder(temporal="gsm")
    modules = gsm.temporal_modules()
    assert len(modules) == 13
    assert [m.channels for m in modules] == [8, 8, 16, 40, 40, 40, 40, 92, 92, 92, 92, 92, 92]
    assert _shift_params(gsm) == 21_602
    assert sum(p.numel() for p in gsm.parameters()) == 2_793_996 + 21_602
    tsm = StaticEncoder(temporal="tsm")
    assert len(tsm.temporal_modules()) == 13
    assert sum(p.numel() for p in tsm.parameters()) == 2_793_996
    assert [gsm_channels(c) for c in (32, 24, 56, 152, 368)] == [8, 8, 16, 40, 92]


@pytest.mark.parametrize("temporal", ["none", "gsm", "tsm"])
def test_output_shapes(temporal: str) -> None:
    encoder = StaticEncoder(temporal=temporal, num_frames=T).eval()
    with torch.no_grad():
        assert encoder(torch.randn(3, T, HW, HW)).shape == (T, 368)
        assert encoder(torch.randn(2, 3, T, HW, HW)).shape == (2, T, 368)


@pytest.mark.parametrize("temporal", ["none", "gsm", "tsm"])
def test_only_none_is_per_frame(temporal: str) -> None:
    encoder = _make_live(StaticEncoder(temporal=temporal, num_frames=T))
    torch.manual_seed(0)
    video = torch.randn(1, 3, T, HW, HW)
    perm = torch.tensor([2, 0, 3, 1])
    with torch.no_grad():
        out = encoder(video)[0]  # (T, 368)
        out_shuffled = encoder(video[:, :, perm])[0]
    gap = (out_shuffled - out[perm]).abs().max().item()
    if temporal == "none":
        assert gap < 1e-4  # shuffling frames just permutes the features
    else:
        assert gap > 1e-2  # neighbouring frames are mixed


def test_tsm_shift_on_a_hand_made_tensor() -> None:
    n, c = 2, 16  # fold = 2
    x = torch.tensor([[[1000.0 * v + 100 * t + ch for ch in range(c)] for t in range(T)] for v in range(n)])
    x = x.reshape(n * T, c, 1, 1)  # (N·T, C, 1, 1)
    before = x.clone()
    out = TemporalShift(c, T)(x).reshape(n, T, c)
    assert torch.equal(x, before)  # out-of-place
    for v in range(n):
        for t in range(T):
            for ch in range(c):
                if ch < 2:
                    want = 1000.0 * v + 100 * (t + 1) + ch if t + 1 < T else 0.0
                elif ch < 4:
                    want = 1000.0 * v + 100 * (t - 1) + ch if t > 0 else 0.0
                else:
                    want = 1000.0 * v + 100 * t + ch
                assert out[v, t, ch].item() == want, (v, t, ch)


@pytest.mark.parametrize("gates", [(0.0, 0.0), (1.0, 1.0), (0.5, -0.3)])
def test_gsm_on_a_hand_made_tensor(gates: tuple[float, float]) -> None:
    n, c = 2, 32  # f = 8: halves of 4 channels, interleaved as (2, 2) → transpose
    x = torch.tensor(
        [[[1000.0 * v + 100 * t + ch + 1 for ch in range(c)] for t in range(T)] for v in range(n)],
        dtype=torch.float64,  # no fp32 / CUDA assumptions
    )
    module = GateShift(c, T).to(torch.float64).eval()
    with torch.no_grad():  # constant gates: zero conv weight, bias = atanh(gate)
        bias = [math.atanh(g) if abs(g) < 1 else 20.0 for g in gates]
        module.conv3d.bias.copy_(torch.tensor(bias, dtype=torch.float64))
    before = x.clone()
    out = module(x.reshape(n * T, c, 1, 1)).reshape(n, T, c)
    assert torch.equal(x, before)

    g0, g1 = gates
    want = x.clone()
    for v in range(n):
        for t in range(T):
            nxt = x[v, t + 1, 0:4] if t + 1 < T else torch.zeros(4, dtype=torch.float64)
            prv = x[v, t - 1, 4:8] if t > 0 else torch.zeros(4, dtype=torch.float64)
            half1 = g0 * nxt + (1 - g0) * x[v, t, 0:4]
            half2 = g1 * prv + (1 - g1) * x[v, t, 4:8]
            for a in range(2):
                for b in range(2):  # old index a·f/4 + b → new index 2b + a
                    want[v, t, 2 * b + a] = half1[2 * a + b]
                    want[v, t, 4 + 2 * b + a] = half2[2 * a + b]
    torch.testing.assert_close(out, want, rtol=1e-12, atol=1e-9)


def test_gsm_backward_runs() -> None:
    x = torch.randn(2 * T, 24, 3, 3, requires_grad=True)
    module = GateShift(24, T)
    module(x).sum().backward()
    assert x.grad is not None and module.conv3d.weight.grad is not None


def test_batchnorm_stays_frozen_in_train_mode() -> None:
    encoder = StaticEncoder(temporal="gsm", num_frames=T).train()
    bns = [m for m in encoder.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    assert len(bns) > 13 and not any(m.training for m in bns)
    assert encoder.trunk.training
    loose = StaticEncoder(temporal="none", freeze_bn=False).train()
    assert all(m.training for m in loose.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm))


def test_short_video_is_zero_padded_and_trimmed() -> None:
    encoder = StaticEncoder(temporal="tsm", num_frames=T).eval()
    video = torch.randn(3, T - 1, HW, HW)
    with torch.no_grad():
        out = encoder(video)
        padded = encoder(torch.cat([video, torch.zeros(3, 1, HW, HW)], dim=1))
    assert out.shape == (T - 1, 368)
    torch.testing.assert_close(out, padded[: T - 1])


def test_bad_shapes_raise_value_error_with_the_shape() -> None:
    encoder = StaticEncoder(temporal="gsm", num_frames=T)
    with pytest.raises(ValueError, match=r"\(2, 4, 32, 32\)"):
        encoder(torch.zeros(2, T, HW, HW))
    with pytest.raises(ValueError, match=r"\(1, 3, 5, 32, 32\)"):
        encoder(torch.zeros(1, 3, T + 1, HW, HW))  # more frames than the temporal modules are built for
    with pytest.raises(ValueError, match=r"\(6, 32, 8, 8\)"):
        GateShift(32, T)(torch.zeros(6, 32, 8, 8))  # 6 frames are not whole videos of 4
    with pytest.raises(ValueError, match="temporal"):
        StaticEncoder(temporal="xyz")  # type: ignore[arg-type]


def _timm_state() -> dict[str, torch.Tensor]:
    """An ImageNet-style file: timm's own regnety_002 with its 1000-class head, random values."""
    torch.manual_seed(5)
    model = timm.create_model("regnety_002", pretrained=False)
    return {k: v.clone() for k, v in model.state_dict().items()}


@pytest.mark.parametrize("suffix", [".pth", ".safetensors"])
def test_strict_loading_accepts_timm_layout(tmp_path: Path, suffix: str) -> None:
    state = _timm_state()
    assert "head.fc.weight" in state
    path = tmp_path / f"regnety_002{suffix}"
    if suffix == ".pth":
        torch.save(state, path)
    else:
        save_file(state, str(path))
    encoder = build_static_encoder(weights=path, temporal="gsm", num_frames=T)
    loaded = encoder.trunk.state_dict()
    for key, value in state.items():
        if not key.startswith("head.fc."):
            assert torch.equal(loaded[key], value), key
    assert all(torch.count_nonzero(m.conv3d.weight) == 0 for m in encoder.temporal_modules())


@pytest.mark.parametrize(
    ("change", "key"), [("missing", "s3.b2.conv2.conv.weight"), ("mis-shaped", "s4.b7.se.fc1.bias")]
)
def test_strict_loading_rejects_a_mismatch_and_names_the_key(tmp_path: Path, change: str, key: str) -> None:
    state = _timm_state()
    if change == "missing":
        del state[key]
    else:
        state[key] = torch.zeros(3)
    path = tmp_path / "regnety_002.pth"
    torch.save(state, path)
    with pytest.raises(CheckpointError, match=change) as err:
        load_static_weights(StaticEncoder(temporal="none"), path)
    assert key in str(err.value) and str(path) in str(err.value)


def test_missing_file_and_random_init(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    path = tmp_path / "absent.safetensors"
    with pytest.raises(CheckpointError, match="does not exist") as err:
        build_static_encoder(weights=path, temporal="none")
    assert str(path) in str(err.value)
    with caplog.at_level(logging.WARNING):
        a = build_static_encoder(weights=None, temporal="none", seed=2)
    assert "NO PRETRAINED WEIGHTS" in caplog.text
    b = build_static_encoder(weights=None, temporal="none", seed=2)
    assert torch.equal(a.trunk.s2.b1.conv2.conv.weight, b.trunk.s2.b1.conv2.conv.weight)
