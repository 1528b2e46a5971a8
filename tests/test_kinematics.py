"""Body kinematics of the ``skeleton_kinematics`` skip: centring, angle values and flip behaviour."""

from __future__ import annotations

import math

import pytest
import torch

from hpmcore.config import ConfigError, ModelConfig
from hpmcore.models.hpmcore import HPMCoRe
from hpmcore.models.kinematics import NUM_ANGLE_CHANNELS, body_kinematics

# channel offsets after the 32 coordinates
TRUNK_SIN, TRUNK_COS, SPEED = 32, 33, 34
RIGHT_KNEE, LEFT_KNEE, KNEE_DIFF = 35, 36, 37


def _standing(t: int = 3) -> torch.Tensor:
    """(1, 2, T, 16, 1): an upright body, legs straight, arms down, y up, pelvis at (10, 20)."""
    xy = {
        0: (9, 0), 1: (9, 10), 2: (9, 20), 3: (11, 20), 4: (11, 10), 5: (11, 0),
        6: (10, 20), 7: (10, 35), 8: (10, 38), 9: (10, 42),
        10: (7, 18), 11: (7, 26), 12: (8, 34), 13: (12, 34), 14: (13, 26), 15: (13, 18),
    }  # fmt: skip
    joints = torch.tensor([xy[j] for j in range(16)], dtype=torch.float64)  # (16, 2)
    return joints.T[None, :, None, :, None].expand(1, 2, t, 16, 1).clone()


def test_coordinates_are_pelvis_centred_and_translation_invariant() -> None:
    sk = _standing()
    out = body_kinematics(sk)
    assert out.shape == (1, 32 + NUM_ANGLE_CHANNELS, 3)
    coords = out[0, :32, 0].reshape(16, 2)
    assert torch.equal(coords[6], torch.zeros(2))  # the pelvis itself
    assert coords[9].tolist() == [0.0, 22.0]  # head top 22 above the pelvis
    moved = sk.clone()
    moved[:, 0] += 17.0
    moved[:, 1] -= 5.0
    torch.testing.assert_close(body_kinematics(moved), out)


def test_straight_knees_and_a_right_angle_bend_give_the_expected_cosines() -> None:
    sk = _standing()
    out = body_kinematics(sk)
    assert out[0, RIGHT_KNEE, 0].item() == pytest.approx(-1.0)  # 180 degrees: a straight leg
    bent = sk.clone()
    bent[0, :, :, 0, 0] = torch.tensor([19.0, 10.0], dtype=torch.float64)[:, None]  # right ankle forward
    out = body_kinematics(bent)
    assert out[0, RIGHT_KNEE, 0].item() == pytest.approx(0.0, abs=1e-12)  # 90 degrees
    assert out[0, KNEE_DIFF, 0].item() == pytest.approx(1.0)  # right − left = 0 − (−1)
    assert out[0, TRUNK_COS, 0].item() == pytest.approx(1.0)  # trunk along +y
    assert out[0, TRUNK_SIN, 0].item() == pytest.approx(0.0)


def test_a_horizontal_flip_keeps_the_joint_angles_and_mirrors_the_trunk() -> None:
    sk = _standing()
    sk[0, :, :, 0, 0] = torch.tensor([19.0, 10.0], dtype=torch.float64)[:, None]
    # tilt the trunk so its sine is not zero
    sk[0, 0, :, 7, 0] += 6.0
    flipped = sk.clone()
    flipped[:, 0] = 64.0 - flipped[:, 0]
    a, b = body_kinematics(sk), body_kinematics(flipped)
    torch.testing.assert_close(b[:, 35:], a[:, 35:])  # interior angles and asymmetries: unchanged
    torch.testing.assert_close(b[:, TRUNK_SIN], -a[:, TRUNK_SIN])
    torch.testing.assert_close(b[:, TRUNK_COS], a[:, TRUNK_COS])


def test_rotation_speed_is_the_wrapped_change_of_trunk_orientation() -> None:
    angles = torch.tensor([3.0, -3.0, -2.5], dtype=torch.float64)  # crosses ±π between frames 0 and 1
    sk = torch.zeros(1, 2, 3, 16, 1, dtype=torch.float64)
    sk[0, 0, :, 7, 0] = torch.sin(angles)
    sk[0, 1, :, 7, 0] = torch.cos(angles)
    speed = body_kinematics(sk)[0, SPEED]
    want = [0.0, 2 * math.pi - 6.0, 0.5]
    assert speed.tolist() == pytest.approx(want)
    assert torch.isfinite(body_kinematics(torch.zeros(2, 2, 4, 16, 1))).all()  # degenerate bones


def test_the_model_appends_the_kinematics_to_the_skip_and_needs_the_skip() -> None:
    cfg = ModelConfig.tiny(
        skeleton_skip=True, skeleton_kinematics=True, pose_fusion="tokens", segmenter_input="static+skeleton"
    )
    model = HPMCoRe(cfg)
    assert model.skeleton_skip_bn is not None
    assert model.skeleton_skip_bn.num_features == 32 + NUM_ANGLE_CHANNELS
    assert HPMCoRe.skeleton_dim(cfg) == 2 * cfg.skeleton_channels + 32 + NUM_ANGLE_CHANNELS
    with pytest.raises(ConfigError, match=r"skeleton_kinematics needs model\.skeleton_skip"):
        ModelConfig.tiny(skeleton_kinematics=True, skeleton_skip=False).validate()
