"""The synthetic diving dataset: the project's embedded default dataset.

Every dive is a pure function of ``(cfg.seed, index)``: its randomness comes from
``np.random.default_rng([cfg.seed, index])`` (the judge panel of its "competition" from
``default_rng([cfg.seed, index // 20, 1])``), so a dive does not depend on ``cfg.num_dives``.

One dive, step by step (:func:`generate_dive`):

1. **Dive number and DD.** Drawn from :data:`DIVE_TABLE`, 20 FINA dive numbers with a fixed degree of
   difficulty each and a competition frequency.
2. **Timing.** ``num_frames`` in ``[cfg.min_frames, cfg.max_frames]`` split into take-off, flight and
   entry; ``frame_labels`` carry FineDiving-style sub-action ids (:func:`takeoff_label`,
   :func:`flight_label`, :data:`ENTRY_LABEL`) and ``transitions`` the last frame of take-off and of
   flight (spec §12.1), so the label changes right after each transition frame.
3. **Latent execution quality** (:class:`Latents`): take-off height, body-shape error, rotation
   unsteadiness, entry-angle error and splash size. :func:`true_quality` turns them into a mark
   q ∈ [0, 10]; ``cfg.num_judges`` judges see q with a per-judge bias and noise and give half
   points; :func:`fina_score` applies the FINA rule and DD.
4. **Skeleton.** A planar articulated body (16 MPII joints, spec §1.4) in world units of one
   standing body height: it stands on the platform (arm swing, crouch, extension), flies on a
   ballistic path (rise, then fall under gravity) while rotating ``half_somersaults × 180°`` in the
   tuck/pike/straight shape of its position letter, comes out and enters the water head first,
   arms overhead, and keeps going below the surface. Every latent factor changes the motion
   (apex height and crouch depth; joint angles of the shape; uneven rotation and scissoring
   limbs; tilted entry; splash occluding joints and, in :mod:`hpmcore.data.render`, the picture).
5. **Camera.** World → pixels: ``x = platform_x + scale·x_w``, ``y = water_y − scale·y_w``, with the
   scale shrunk where needed so the whole visible body stays inside the frame, plus a small
   integer camera jitter per frame (applied to the skeleton and to the rendered scene alike).

**In view.** A joint is *in view* iff it is above the water surface of its frame; exactly those
joints have confidence > 0 (lower while moving fast or inside the splash), and every in-view joint
lies inside the frame, at least one pixel from the border. Joints under water have confidence 0;
their coordinates are clipped into the frame.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, fields
from pathlib import Path

import numpy as np
import pyarrow as pa
from tqdm import tqdm

from hpmcore.config import SynthConfig
from hpmcore.data import canonical
from hpmcore.io import atomic_path, write_parquet

log = logging.getLogger(__name__)

DIVES_PER_VIDEO = 20
"""Dives per synthetic competition video: ``video_name = f"synth_{index // 20:03d}"``,
``dive_index = index % 20 + 1``; the judge panel is shared within a video."""

ENTRY_LABEL = 36
"""Sub-action id of the entry (FineDiving's id for "Entry")."""

POSITIONS = "abc"
POSITION_NAMES = {"a": "straight", "b": "pike", "c": "tuck"}
DIRECTION_NAMES = {1: "forward", 2: "back", 3: "reverse", 4: "inward"}

# ---------------------------------------------------------------------------------------------------
# Dive numbers and degree of difficulty
# ---------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class DiveType:
    """A FINA dive number with its degree of difficulty and how often it is drawn."""

    number: str
    difficulty: float
    weight: float

    @property
    def group(self) -> int:
        """FINA group: 1 forward, 2 back, 3 reverse, 4 inward, 5 twisting."""
        return int(self.number[0])

    @property
    def direction(self) -> int:
        """Take-off direction 1..4 (for group 5 the second digit)."""
        return int(self.number[1]) if self.group == 5 else self.group

    @property
    def half_somersaults(self) -> int:
        """Number of half somersaults (third digit); odd, so every dive enters head first."""
        return int(self.number[2])

    @property
    def half_twists(self) -> int:
        """Number of half twists (fourth digit of group-5 dives, else 0)."""
        return int(self.number[3]) if self.group == 5 else 0

    @property
    def position(self) -> str:
        """``"a"`` straight, ``"b"`` pike or ``"c"`` tuck."""
        return self.number[-1]


DIVE_TABLE: tuple[DiveType, ...] = (
    DiveType("103b", 1.6, 0.5),
    DiveType("105c", 2.2, 0.5),
    DiveType("105b", 2.4, 0.8),
    DiveType("107c", 2.8, 1.0),
    DiveType("107b", 3.0, 2.0),
    DiveType("109c", 3.7, 1.0),
    DiveType("109b", 4.1, 0.4),
    DiveType("205b", 2.9, 1.0),
    DiveType("207c", 3.3, 1.5),
    DiveType("207b", 3.6, 2.0),
    DiveType("305c", 2.8, 1.0),
    DiveType("307c", 3.4, 1.8),
    DiveType("405b", 3.0, 0.8),
    DiveType("405c", 2.7, 1.0),
    DiveType("407c", 3.2, 2.2),
    DiveType("409c", 3.7, 0.6),
    DiveType("5154b", 3.2, 1.0),
    DiveType("5156b", 3.9, 0.6),
    DiveType("5253b", 3.2, 1.8),
    DiveType("5255b", 3.6, 1.0),
)
"""The dive numbers of the synthetic dataset, their degree of difficulty (DD) and frequency.

The DD values are approximately those of the FINA 10 m platform table (realistic, not an
authoritative copy): DD grows with the half somersaults (third digit) and half twists (fourth
digit of group 5), and pike ≥ tuck for the same dive::

    forward   103b 1.6   105c 2.2   105b 2.4   107c 2.8   107b 3.0   109c 3.7   109b 4.1
    back      205b 2.9   207c 3.3   207b 3.6
    reverse   305c 2.8   307c 3.4
    inward    405c 2.7   405b 3.0   407c 3.2   409c 3.7
    twisting  5154b 3.2  5156b 3.9  5253b 3.2  5255b 3.6

They span 1.6–4.1 like FineDiving's 1.5–4.1. ``weight`` is the relative frequency: common
competition dives (``107b``, ``207b``, ``407c``, ``5253b``) repeat most; in a dataset of a few
hundred dives every dive number repeats. Every third digit is odd, so every dive enters head first.
"""

_DIVE_WEIGHTS = np.array([d.weight for d in DIVE_TABLE]) / sum(d.weight for d in DIVE_TABLE)


def takeoff_label(direction: int) -> int:
    """Sub-action id of the take-off: 1 forward, 2 back, 3 reverse, 4 inward (FineDiving's ids)."""
    return int(direction)


def flight_label(half_somersaults: int, position: str) -> int:
    """Sub-action id of the flight: ``2 + 3·half_somersaults + {a: 0, b: 1, c: 2}[position]``.

    This gives FineDiving's id 25 for "3.5 Soms.Tuck" (``7, "c"``); ids stay in 5..31, distinct from
    the take-off ids and from :data:`ENTRY_LABEL`.
    """
    return 2 + 3 * int(half_somersaults) + POSITIONS.index(position)


# ---------------------------------------------------------------------------------------------------
# Scores
# ---------------------------------------------------------------------------------------------------


def fina_score(judge_scores: Sequence[float], difficulty: float) -> float:
    """The official dive score from the judges' marks and the degree of difficulty.

    FINA rule: with 7 judges drop the two highest and the two lowest marks, with 5 the highest and
    the lowest, with 3 keep all; the sum of the three remaining marks × DD, rounded to 2 decimals.

    Raises:
        ValueError: for a panel that is not 3, 5 or 7 judges.
    """
    marks = sorted(float(s) for s in judge_scores)
    drop = {3: 0, 5: 1, 7: 2}.get(len(marks))
    if drop is None:
        raise ValueError(f"FINA scoring needs 3, 5 or 7 judge scores, got {len(marks)}")
    kept = marks[drop : len(marks) - drop]
    return round(math.fsum(kept) * float(difficulty), 2)


@dataclass(frozen=True)
class Latents:
    """Latent execution-quality factors of one dive: what a judge sees (plus one nuisance factor)."""

    takeoff_height: float
    """Rise of the centre of mass above its standing height, in body heights (0.25–0.75); higher
    is better. Visible as a deeper crouch on the platform and a higher apex."""
    shape_error: float
    """0 (perfect) … 1: looseness of the tuck/pike/straight shape (open tuck, bent knees in pike,
    piked hips in straight dives) and bent knees at entry."""
    rotation_unsteadiness: float
    """0 … 1: uneven rotation speed, scissoring legs and flailing arms during the flight."""
    entry_angle_error: float
    """Signed over (+) / under (−) rotation at entry, degrees from vertical (|·| ≤ 30)."""
    splash: float
    """0 (rip entry) … 1 (big splash): height and width of the splash and its spray."""
    board_distance: float
    """Nuisance (no effect on quality): horizontal distance of the entry from the platform edge,
    body heights."""


QUALITY_WEIGHTS: dict[str, float] = {
    "takeoff_height": 3.2,
    "shape_error": 3.0,
    "rotation_unsteadiness": 1.6,
    "entry_angle_error": 1.6,
    "splash": 2.4,
}
"""Points a judge takes off for the worst value of each factor (see :func:`true_quality`)."""


def true_quality(latents: Latents) -> float:
    """The judge "true quality" q ∈ [0, 10] of a dive: 10 minus one linear penalty per factor.

    ``q = 10 − 3.2·(0.75 − takeoff_height)/0.5 − 3.0·shape_error − 1.6·rotation_unsteadiness
    − 1.6·|entry_angle_error|/30 − 2.4·splash`` (:data:`QUALITY_WEIGHTS`), clipped to [0, 10].
    Over the default dataset q is about 6.4 ± 1.2; the judges' marks scatter around it.
    """
    w = QUALITY_WEIGHTS
    q = (
        10.0
        - w["takeoff_height"] * (0.75 - latents.takeoff_height) / 0.5
        - w["shape_error"] * latents.shape_error
        - w["rotation_unsteadiness"] * latents.rotation_unsteadiness
        - w["entry_angle_error"] * abs(latents.entry_angle_error) / 30.0
        - w["splash"] * latents.splash
    )
    return float(np.clip(q, 0.0, 10.0))


JUDGE_BIAS_SD = 0.25
"""Standard deviation of a judge's bias (fixed per judge and competition video), points."""
JUDGE_NOISE_SD = 0.3
"""Standard deviation of a judge's per-dive error, points (marks are then rounded to halves)."""


def _draw_latents(rng: np.random.Generator) -> Latents:
    entry_angle = float(np.clip(rng.normal(0.0, 9.0), -30.0, 30.0))
    rip = float(rng.beta(1.6, 3.4))
    return Latents(
        takeoff_height=0.25 + 0.5 * float(rng.beta(2.0, 1.5)),
        shape_error=float(rng.beta(1.1, 3.4)),
        rotation_unsteadiness=float(rng.beta(1.2, 3.4)),
        entry_angle_error=entry_angle,
        splash=float(np.clip(0.55 * abs(entry_angle) / 25.0 + 0.55 * rip, 0.0, 1.0)),
        board_distance=float(rng.uniform(0.45, 1.05)),
    )


def _judge_scores(cfg: SynthConfig, index: int, q: float, rng: np.random.Generator) -> tuple[float, ...]:
    panel = np.random.default_rng([cfg.seed, index // DIVES_PER_VIDEO, 1])
    bias = panel.normal(0.0, JUDGE_BIAS_SD, size=cfg.num_judges)
    raw = q + bias + rng.normal(0.0, JUDGE_NOISE_SD, size=cfg.num_judges)
    return tuple(float(v) for v in np.clip(np.round(raw * 2.0) / 2.0, 0.0, 10.0))


# ---------------------------------------------------------------------------------------------------
# Planar articulated body (world units: one standing body height; x forward, y up)
# ---------------------------------------------------------------------------------------------------

L_SHIN, L_THIGH, L_TRUNK, L_NECK, L_HEAD = 0.25, 0.25, 0.29, 0.06, 0.15  # ankle → head top = 1.0
L_UPPER_ARM, L_FOREARM = 0.17, 0.16
HIP_HALF, SHOULDER_HALF = 0.06, 0.11
PLATFORM_HEIGHT = 1.6
"""Platform surface above the water, body heights (a compressed 10 m: the camera would follow)."""
STAND_X = -0.08
"""Ankles' x on the platform (the edge is x = 0; the water is at x > 0)."""

# Joint weights for the centre of mass (MPII order): legs, trunk, head, arms.
_COM_WEIGHTS = np.array(
    [0.04, 0.08, 0.08, 0.08, 0.08, 0.04, 0.15, 0.15, 0.04, 0.06, 0.02, 0.03, 0.04, 0.04, 0.03, 0.02]
)
_COM_WEIGHTS = _COM_WEIGHTS / _COM_WEIGHTS.sum()

_DEG = math.pi / 180.0


@dataclass(frozen=True)
class _Pose:
    """Joint angles per frame, degrees. Side arrays are ``(T, 2)`` = (right, left); others ``(T,)``.

    ``beta``: trunk orientation from upright, positive = rotating forward (head toward +x).
    ``hip``: hip flexion (0 = thigh in line with the trunk, + = knee forward/up).
    ``knee``: knee flexion (+ = shin folds back). ``shoulder``: 0 = arm down along the trunk,
    180 = overhead, + = forward. ``elbow``: flexion. ``neck``: head tilt forward.
    ``width``: lateral projection factor of hips and shoulders in [−1, 1] (twist).
    """

    beta: np.ndarray
    hip: np.ndarray
    knee: np.ndarray
    shoulder: np.ndarray
    elbow: np.ndarray
    neck: np.ndarray
    width: np.ndarray


def _unit(angle: np.ndarray) -> np.ndarray:
    """Unit vector at ``angle`` radians clockwise from up (y up): ``(..., 2)``."""
    return np.stack([np.sin(angle), np.cos(angle)], axis=-1)


def _body(pose: _Pose) -> np.ndarray:
    """Joint coordinates relative to the pelvis, body facing +x, y up: ``(T, 16, 2)``."""
    beta = pose.beta * _DEG  # (T,)
    t = beta.shape[0]
    out = np.zeros((t, canonical.NUM_JOINTS, 2))
    thorax = L_TRUNK * _unit(beta)
    head_dir = _unit(beta + pose.neck * _DEG)
    neck = thorax + L_NECK * head_dir
    lateral = pose.width[:, None] * _unit(beta + math.pi / 2)  # (T, 2)
    out[:, 6] = 0.0
    out[:, 7] = thorax
    out[:, 8] = neck
    out[:, 9] = neck + L_HEAD * head_dir
    down = beta + math.pi
    for side, sign, (hip_j, knee_j, ankle_j, sh_j, el_j, wr_j) in (
        (0, 1.0, (2, 1, 0, 12, 11, 10)),
        (1, -1.0, (3, 4, 5, 13, 14, 15)),
    ):
        hip = sign * HIP_HALF * lateral
        thigh = down - pose.hip[:, side] * _DEG
        knee = hip + L_THIGH * _unit(thigh)
        ankle = knee + L_SHIN * _unit(thigh + pose.knee[:, side] * _DEG)
        shoulder = thorax + sign * SHOULDER_HALF * lateral
        upper = down - pose.shoulder[:, side] * _DEG
        elbow = shoulder + L_UPPER_ARM * _unit(upper)
        wrist = elbow + L_FOREARM * _unit(upper - pose.elbow[:, side] * _DEG)
        out[:, hip_j], out[:, knee_j], out[:, ankle_j] = hip, knee, ankle
        out[:, sh_j], out[:, el_j], out[:, wr_j] = shoulder, elbow, wrist
    return out


def _com(joints: np.ndarray) -> np.ndarray:
    """Centre of mass of ``(T, 16, 2)`` joints: ``(T, 2)``."""
    return np.einsum("tjc,j->tc", joints, _COM_WEIGHTS)


def _ease(tau: np.ndarray, keys: Sequence[float], values: Sequence[float]) -> np.ndarray:
    """Cosine-eased interpolation of ``values`` at ``keys`` (increasing), evaluated at ``tau``."""
    keys_a, values_a = np.asarray(keys, float), np.asarray(values, float)
    seg = np.clip(np.searchsorted(keys_a, tau, side="right") - 1, 0, len(keys_a) - 2)
    k0, k1 = keys_a[seg], keys_a[seg + 1]
    u = np.clip((tau - k0) / np.maximum(k1 - k0, 1e-9), 0.0, 1.0)
    u = 0.5 - 0.5 * np.cos(math.pi * u)
    return values_a[seg] + (values_a[seg + 1] - values_a[seg]) * u


def _smoothstep(x: np.ndarray, lo: float, hi: float) -> np.ndarray:
    u = np.clip((x - lo) / (hi - lo), 0.0, 1.0)
    return u * u * (3.0 - 2.0 * u)


def _sides(values: np.ndarray, asym: np.ndarray) -> np.ndarray:
    """``(T,)`` angle and ``(T,)`` asymmetry → ``(T, 2)`` (right = +asym, left = −asym)."""
    return np.stack([values + asym, values - asym], axis=-1)


def _shape_pose(position: str, e: float) -> dict[str, float]:
    """Flight shape joint angles (degrees) of a position letter with body-shape error ``e``."""
    if position == "c":  # tuck: knees to the chest, hands on the shins; error opens the tuck
        return {"hip": 135 - 50 * e, "knee": 140 - 60 * e, "shoulder": 45, "elbow": 60, "neck": 20}
    if position == "b":  # pike: legs straight and folded at the hips; error bends the knees
        return {"hip": 150 - 40 * e, "knee": 55 * e, "shoulder": 115, "elbow": 10, "neck": 15}
    # straight: a slight arch; error pikes at the hips and bends the knees
    return {"hip": -10 + 50 * e, "knee": 45 * e, "shoulder": 15, "elbow": 10, "neck": 0}


_ROTATION_GAIN = {"a": 0.7, "b": 1.7, "c": 2.4}
"""Extra rotation speed while in shape (relative to the open body): tuck > pike > straight."""


@dataclass(frozen=True)
class _Motion:
    world: np.ndarray  # (T, 16, 2) world coordinates
    entry_hand_x: float  # x where the hands meet the water
    entry_frame: int  # first frame of the entry


def _simulate(
    dive: DiveType, lat: Latents, n_take: int, n_flight: int, n_entry: int, rng: np.random.Generator
) -> _Motion:
    """Joint world coordinates of a whole dive: ``(n_take + n_flight + n_entry, 16, 2)``."""
    sigma = 1.0 if dive.direction in (1, 4) else -1.0  # forward somersault (+) or backward (−)
    face = 1.0 if dive.direction in (1, 3) else -1.0  # facing the water (+x) or the platform
    e, u = lat.shape_error, lat.rotation_unsteadiness
    crouch = 0.6 + 0.8 * (lat.takeoff_height - 0.25) / 0.5
    beta0 = sigma * 12.0

    # --- take-off: arm swing, crouch, extension; ankles stay on the platform ---
    tau = np.linspace(0.0, 1.0, n_take)
    shift = float(rng.uniform(-0.05, 0.05))  # nuisance: arm-swing timing
    zero = np.zeros(n_take)
    take_pose = _Pose(
        beta=_ease(tau, [0, 0.35, 0.7, 1], [0, 0, 18 * crouch, beta0]),
        hip=_sides(_ease(tau, [0, 0.35, 0.7, 1], [0, 5, 50 * crouch, 5]), zero),
        knee=_sides(_ease(tau, [0, 0.35, 0.7, 1], [0, 5, 70 * crouch, 5]), zero),
        shoulder=_sides(_ease(tau, [0, 0.3 + shift, 0.62 + shift, 1], [10, 175, -35, 180]), zero),
        elbow=_sides(_ease(tau, [0, 0.3, 0.62, 1], [10, 5, 20, 0]), zero),
        neck=zero,
        width=np.full(n_take, math.sin(0.35)),
    )
    take = _body(take_pose)
    take[..., 0] *= face
    ankles = take[:, [0, 5]].mean(axis=1, keepdims=True)  # (T, 1, 2)
    take = take - ankles + np.array([STAND_X, PLATFORM_HEIGHT])

    # --- flight: t = 1 .. n_flight frames after the take-off; hands reach the water at t_e ---
    t_e = n_flight + 0.5
    t = np.arange(1, n_flight + 1, dtype=float)
    tau = t / t_e
    shape = _shape_pose(dive.position, e)
    s_in = float(rng.uniform(0.12, 0.2))
    s_out = float(rng.uniform(0.7, 0.8))
    blend = _smoothstep(tau, 0.02, s_in) * (1.0 - _smoothstep(tau, s_out, s_out + 0.12))
    entry_knee = 30.0 * e
    start = {"hip": 5.0, "knee": 5.0, "shoulder": 180.0, "elbow": 0.0, "neck": 0.0}
    end = {"hip": 10.0 * e, "knee": entry_knee, "shoulder": 180.0, "elbow": 0.0, "neck": 0.0}

    def angle(name: str) -> np.ndarray:
        open_body = start[name] + (end[name] - start[name]) * tau
        return open_body + (shape[name] - open_body) * blend

    freq = float(rng.choice([2.0, 3.0]))
    phases = rng.uniform(0.0, 2 * math.pi, size=4)
    wobble = np.sin(2 * math.pi * freq * tau + phases[0])
    scissor = 22.0 * u * np.sin(2 * math.pi * 2.0 * tau + phases[1]) * blend
    flail = 30.0 * u * np.sin(2 * math.pi * 2.5 * tau + phases[2])

    # rotation: faster in shape, uneven with unsteadiness, total = half_somersaults·180° ± error
    grid = np.linspace(0.0, 1.0, 801)
    grid_blend = _smoothstep(grid, 0.02, s_in) * (1.0 - _smoothstep(grid, s_out, s_out + 0.12))
    rate = (1.0 + _ROTATION_GAIN[dive.position] * grid_blend) * (
        1.0 + 0.6 * u * np.sin(2 * math.pi * freq * grid + phases[0])
    )
    turned = np.concatenate([[0.0], np.cumsum(0.5 * (rate[1:] + rate[:-1]))])
    turned /= turned[-1]
    beta_end = sigma * (180.0 * dive.half_somersaults + lat.entry_angle_error)
    beta = beta0 + (beta_end - beta0) * np.interp(tau, grid, turned)

    twist = 0.35 + math.pi * dive.half_twists * _smoothstep(tau, 0.25, 0.75)
    flight_pose = _Pose(
        beta=beta,
        hip=_sides(angle("hip"), scissor),
        knee=_sides(angle("knee"), 0.5 * scissor),
        shoulder=_sides(angle("shoulder"), flail * blend),
        elbow=_sides(angle("elbow"), np.abs(flail) * blend * 0.5),
        neck=angle("neck") + 12.0 * u * wobble * blend,
        width=np.sin(twist),
    )
    flight_rel = _body(flight_pose)
    flight_rel -= _com(flight_rel)[:, None]
    flight_rel[..., 0] *= face

    entry_pose = _Pose(
        beta=np.full(1, beta_end),
        hip=np.full((1, 2), end["hip"]),
        knee=np.full((1, 2), entry_knee),
        shoulder=np.full((1, 2), 180.0),
        elbow=np.zeros((1, 2)),
        neck=np.zeros(1),
        width=np.full(1, math.sin(0.35 + math.pi * dive.half_twists)),
    )
    entry_rel = _body(entry_pose)
    entry_rel -= _com(entry_rel)[:, None]
    entry_rel[..., 0] *= face

    # ballistic centre of mass: rise takeoff_height, land with the lowest joint at the surface
    com0 = _com(take[-1:])[0]
    lift = lat.takeoff_height
    y_e = -float(entry_rel[0, :, 1].min())
    drop = float(com0[1]) - y_e
    g = ((math.sqrt(2 * lift) + math.sqrt(2 * (lift + drop))) / t_e) ** 2
    v0 = math.sqrt(2 * g * lift)
    x_e = lat.board_distance
    vx = (x_e - float(com0[0])) / t_e
    com_flight = np.stack([com0[0] + vx * t, com0[1] + v0 * t - 0.5 * g * t * t], axis=-1)
    flight = flight_rel + com_flight[:, None]

    # --- entry: straight body at the entry angle, slowing down under water ---
    v_down = g * t_e - v0  # > 0: falling at the surface
    dt = np.arange(n_flight + 1, n_flight + n_entry + 1, dtype=float) - t_e
    decay = max(6.0, 2.5 / v_down)
    travel = 1.0 - np.exp(-dt / decay)
    com_entry = np.stack([x_e + vx * decay * travel, y_e - v_down * decay * travel], axis=-1)
    entry = entry_rel + com_entry[:, None]

    world = np.concatenate([take, flight, entry], axis=0)
    return _Motion(
        world=world,
        entry_hand_x=x_e + float(entry_rel[0, [10, 15], 0].mean()),
        entry_frame=n_take + n_flight,
    )


# ---------------------------------------------------------------------------------------------------
# Scene, camera and the dive record
# ---------------------------------------------------------------------------------------------------

Color = tuple[int, int, int]


@dataclass(frozen=True, eq=False)
class Scene:
    """Where things are drawn, in pixels of the un-jittered frame, plus per-dive colours.

    The frame ``t`` shows the scene displaced by ``jitter[t]`` (integer pixels): a point at
    ``(x, y)`` appears at ``(x, y) + jitter[t]``; the water surface of frame ``t`` is at
    ``water_y + jitter[t, 1]``.
    """

    width: int
    height: int
    scale: float
    """Pixels per body height."""
    platform_x: float
    """x of the platform edge (the platform spans x ≤ platform_x)."""
    platform_y: float
    """y of the platform surface."""
    water_y: float
    """y of the water surface."""
    entry_x: float
    """x where the hands meet the water."""
    entry_frame: int
    """First frame of the entry (hands under water)."""
    jitter: np.ndarray
    """``(T, 2)`` int: camera jitter, pixels."""
    max_jitter: int
    splash_height: np.ndarray
    """``(T,)`` pixels: height of the splash crown above the surface (0 before the entry)."""
    splash_width: np.ndarray
    """``(T,)`` pixels: width of the splash crown."""
    sky_top: Color
    sky_bottom: Color
    water: Color
    platform: Color
    skin: Color
    suit: Color


@dataclass(frozen=True, eq=False)
class SynthDive:
    """One generated dive: annotation fields, latent factors, skeleton and scene.

    ``joints`` ``(T, 16, 2)`` float32 and ``confidence`` ``(T, 16)`` float32 are the ground-truth
    skeleton written to ``skeletons.parquet`` (under-water joints clipped into the frame);
    ``body`` ``(T, 16, 2)`` is the same skeleton unclipped, which the renderer draws.
    """

    seed: int
    index: int
    video_name: str
    dive_index: int
    dive_type: DiveType
    num_frames: int
    transitions: tuple[int, int]
    frame_labels: np.ndarray
    latents: Latents
    true_quality: float
    judge_scores: tuple[float, ...]
    final_score: float
    joints: np.ndarray
    confidence: np.ndarray
    body: np.ndarray
    scene: Scene

    @property
    def id(self) -> str:
        """The canonical id ``"<video_name>/<dive_index>"``."""
        return canonical.dive_id(self.video_name, self.dive_index)

    @property
    def dive_number(self) -> str:
        """FINA dive number, e.g. ``"407c"``."""
        return self.dive_type.number

    @property
    def difficulty(self) -> float:
        """Degree of difficulty (DD)."""
        return self.dive_type.difficulty

    @property
    def video_path(self) -> str:
        """The mp4 path relative to the dataset root."""
        return f"videos/{self.video_name}_{self.dive_index}.mp4"

    def annotation_row(self, split: str) -> dict:
        """The dive's row of the canonical annotation table."""
        return {
            "id": self.id,
            "video_name": self.video_name,
            "dive_index": self.dive_index,
            "video_path": self.video_path,
            "start_frame": 0,
            "end_frame": self.num_frames - 1,
            "num_frames": self.num_frames,
            "dive_number": self.dive_number,
            "difficulty": self.difficulty,
            "judge_scores": list(self.judge_scores),
            "final_score": self.final_score,
            "transitions": list(self.transitions),
            "frame_labels": self.frame_labels.tolist(),
            "split": split,
        }


def _stage_lengths(rng: np.random.Generator, n: int) -> tuple[int, int, int]:
    """Take-off, flight and entry frame counts summing to ``n`` (each ≥ 4)."""
    n_take = max(4, round(float(rng.uniform(0.08, 0.22)) * n))
    n_flight = max(8, round(float(rng.uniform(0.38, 0.55)) * n))
    n_entry = n - n_take - n_flight
    if n_entry < 4:  # only for very short dives; min_frames >= 24 keeps this rare
        n_flight -= 4 - n_entry
        n_entry = 4
    return n_take, n_flight, n_entry


def _jitter(rng: np.random.Generator, n: int, amplitude: int) -> np.ndarray:
    """Smooth integer camera shake in ``[-amplitude, amplitude]``: ``(n, 2)``."""
    t = np.arange(n, dtype=float)[:, None]
    freq = rng.uniform(0.03, 0.12, size=(2, 2))
    phase = rng.uniform(0.0, 2 * math.pi, size=(2, 2))
    wave = 0.6 * np.sin(2 * math.pi * freq[0] * t + phase[0]) + 0.4 * np.sin(
        2 * math.pi * freq[1] * t + phase[1]
    )
    return np.clip(np.round(amplitude * wave), -amplitude, amplitude).astype(np.int64)


def _fit_scale(
    world: np.ndarray, visible: np.ndarray, cfg: SynthConfig, anchor: tuple[float, float], margin: int
) -> float:
    """Largest scale ≤ the nominal one keeping every visible joint ``margin`` px inside the frame."""
    ax, ay = anchor
    scale = 0.21 * min(cfg.width, cfg.height)
    x, y = world[..., 0][visible], world[..., 1][visible]
    y = np.append(y, PLATFORM_HEIGHT)  # the platform surface stays in the picture too
    right, left = x[x > 0], x[x < 0]
    if right.size:
        scale = min(scale, (cfg.width - 1 - margin - ax) / float(right.max()))
    if left.size:
        scale = min(scale, (ax - margin) / float(-left.min()))
    up = y[y > 0]
    if up.size:
        scale = min(scale, (ay - margin) / float(up.max()))
    return scale


def _color(rng: np.random.Generator, base: Color, spread: int) -> Color:
    values = np.clip(np.asarray(base) + rng.integers(-spread, spread + 1, size=3), 0, 255)
    return (int(values[0]), int(values[1]), int(values[2]))


def generate_dive(cfg: SynthConfig, index: int) -> SynthDive:
    """Generate dive ``index`` of the dataset ``cfg``: a pure function of ``(cfg.seed, index)``.

    Raises:
        ValueError: for a negative ``index``.
    """
    if index < 0:
        raise ValueError(f"dive index must be >= 0, got {index}")
    rng = np.random.default_rng([cfg.seed, index])
    dive_type = DIVE_TABLE[int(rng.choice(len(DIVE_TABLE), p=_DIVE_WEIGHTS))]
    n = int(rng.integers(cfg.min_frames, cfg.max_frames + 1))
    n_take, n_flight, n_entry = _stage_lengths(rng, n)
    labels = np.concatenate(
        [
            np.full(n_take, takeoff_label(dive_type.direction)),
            np.full(n_flight, flight_label(dive_type.half_somersaults, dive_type.position)),
            np.full(n_entry, ENTRY_LABEL),
        ]
    ).astype(np.int64)
    latents = _draw_latents(rng)
    q = true_quality(latents)
    judges = _judge_scores(cfg, index, q, rng)
    motion = _simulate(dive_type, latents, n_take, n_flight, n_entry, rng)
    world = motion.world  # (T, 16, 2)

    # camera: world → pixels, scale fitted so that every joint above the water is in the frame
    max_jitter = max(1, round(0.01 * min(cfg.width, cfg.height)))
    margin = max_jitter + 1
    anchor = (0.32 * cfg.width, 0.86 * cfg.height)
    visible = world[..., 1] > 0.0  # (T, 16): above the water surface
    scale = _fit_scale(world, visible, cfg, anchor, margin)
    jitter = _jitter(rng, n, max_jitter)
    body = np.stack([anchor[0] + scale * world[..., 0], anchor[1] - scale * world[..., 1]], axis=-1)
    body = body + jitter[:, None, :]  # (T, 16, 2)

    # splash crown: rises and falls after the entry; size follows the splash latent
    sp = latents.splash
    after = np.arange(n, dtype=float) - motion.entry_frame  # frames since the hands went in
    peak = 3.0 + 3.0 * sp
    a = np.clip(after, 0.0, None)
    splash_h = np.where(after >= 0, (0.15 + 1.1 * sp) * (a / peak) * np.exp(1.0 - a / peak), 0.0)
    splash_w = np.where(after >= 0, (0.25 + 0.6 * sp) * (1.0 + 0.06 * a), 0.0)
    entry_x = anchor[0] + scale * motion.entry_hand_x

    # confidence: 0 under water; lower when moving fast or inside the splash
    speed = np.linalg.norm(np.gradient(world, axis=0), axis=-1)  # (T, 16) body heights / frame
    conf = 0.98 - 0.45 * np.clip(speed / 0.5, 0.0, 1.0) + rng.normal(0.0, 0.02, size=speed.shape)
    in_splash = (np.abs(world[..., 0] - motion.entry_hand_x) < splash_w[:, None] / 2) & (
        world[..., 1] < splash_h[:, None]
    )
    conf = np.clip(np.where(in_splash, 0.6 * conf, conf), 0.1, 1.0)
    conf = np.where(visible, conf, 0.0).astype(np.float32)
    clipped = np.stack(
        [np.clip(body[..., 0], 0.0, cfg.width - 1.0), np.clip(body[..., 1], 0.0, cfg.height - 1.0)], axis=-1
    )
    joints = np.where(visible[..., None], body, clipped)  # only joints under water are clipped

    look = np.random.default_rng([cfg.seed, index, 2])
    scene = Scene(
        width=cfg.width,
        height=cfg.height,
        scale=scale,
        platform_x=anchor[0],
        platform_y=anchor[1] - scale * PLATFORM_HEIGHT,
        water_y=anchor[1],
        entry_x=entry_x,
        entry_frame=motion.entry_frame,
        jitter=jitter,
        max_jitter=max_jitter,
        splash_height=scale * splash_h,
        splash_width=scale * splash_w,
        sky_top=_color(look, (120, 165, 215), 25),
        sky_bottom=_color(look, (200, 215, 230), 20),
        water=_color(look, (30, 95, 160), 20),
        platform=_color(look, (190, 185, 175), 20),
        skin=_color(look, (225, 170, 130), 20),
        suit=_color(look, (40, 40, 120), 40),
    )
    return SynthDive(
        seed=cfg.seed,
        index=index,
        video_name=f"synth_{index // DIVES_PER_VIDEO:03d}",
        dive_index=index % DIVES_PER_VIDEO + 1,
        dive_type=dive_type,
        num_frames=n,
        transitions=(n_take - 1, n_take + n_flight - 1),
        frame_labels=labels,
        latents=latents,
        true_quality=q,
        judge_scores=judges,
        final_score=fina_score(judges, dive_type.difficulty),
        joints=joints.astype(np.float32),
        confidence=conf,
        body=body,
        scene=scene,
    )


# ---------------------------------------------------------------------------------------------------
# The dataset
# ---------------------------------------------------------------------------------------------------

LATENT_SCHEMA = pa.schema(
    [pa.field("id", pa.string(), nullable=False)]
    + [pa.field(f.name, pa.float64(), nullable=False) for f in fields(Latents)]
    + [pa.field("true_quality", pa.float64(), nullable=False)]
)
"""``latents.parquet``: the dive id, every :class:`Latents` factor and the true quality q."""


@dataclass(frozen=True)
class SynthSummary:
    """What :func:`generate_dataset` produced."""

    num_dives: int
    num_train: int
    num_test: int
    num_dive_numbers: int
    score_min: float
    score_max: float
    frames_min: int
    frames_max: int
    rendered: bool
    seconds: float
    dives_per_second: float

    def __str__(self) -> str:
        return (
            f"{self.num_dives} dives ({self.num_train} train, {self.num_test} test, "
            f"{self.num_dive_numbers} dive numbers), scores {self.score_min:.2f}–{self.score_max:.2f}, "
            f"{self.frames_min}–{self.frames_max} frames, {'with' if self.rendered else 'no'} video, "
            f"{self.seconds:.1f} s ({self.dives_per_second:.1f} dives/s)"
        )


def assign_splits(dive_numbers: Sequence[str], test_fraction: float, seed: int) -> list[str]:
    """``"train"``/``"test"`` per dive, stratified by dive number and seeded.

    ``round(test_fraction · N)`` dives go to test, shared among the dive numbers by largest
    remainder of ``test_fraction · n`` (at most ``n − 1`` each, so every dive number of the test
    split also occurs in train); which dives of a dive number go to test is a seeded shuffle.
    """
    rng = np.random.default_rng([seed, 7])
    order = rng.permutation(len(dive_numbers))
    groups: dict[str, list[int]] = {}
    for i in order:
        groups.setdefault(dive_numbers[i], []).append(int(i))
    names = sorted(groups)
    sizes = np.array([len(groups[g]) for g in names])
    exact = test_fraction * sizes
    quota = np.minimum(np.floor(exact).astype(int), sizes - 1)
    spare = round(test_fraction * len(dive_numbers)) - int(quota.sum())
    tiebreak = rng.random(len(names))
    for g in sorted(range(len(names)), key=lambda g: (quota[g] - exact[g], tiebreak[g])):
        if spare <= 0:
            break
        if quota[g] < sizes[g] - 1:
            quota[g] += 1
            spare -= 1
    splits = ["train"] * len(dive_numbers)
    for g, name in enumerate(names):
        for i in groups[name][: quota[g]]:
            splits[i] = "test"
    return splits


def _make_dive(cfg: SynthConfig, index: int, video_dir: Path | None) -> SynthDive:
    dive = generate_dive(cfg, index)
    if video_dir is not None:
        from hpmcore.data.render import render_dive  # PyAV only when rendering

        render_dive(dive, video_dir / Path(dive.video_path).name, fps=cfg.fps)
    return dive


def _skeleton_table(dives: Sequence[SynthDive]) -> pa.Table:
    ids, frames, joints, xs, ys, confs = [], [], [], [], [], []
    for d in dives:
        t, v = d.confidence.shape
        ids.append(np.full(t * v, d.id, dtype=object))
        frames.append(np.repeat(np.arange(t, dtype=np.int32), v))
        joints.append(np.tile(np.arange(v, dtype=np.int8), t))
        xs.append(d.joints[..., 0].reshape(-1))
        ys.append(d.joints[..., 1].reshape(-1))
        confs.append(d.confidence.reshape(-1))
    columns = [np.concatenate(c) for c in (ids, frames, joints, xs, ys, confs)]
    return pa.Table.from_arrays(
        [pa.array(c, type=f.type) for c, f in zip(columns, canonical.SKELETON_SCHEMA, strict=True)],
        schema=canonical.SKELETON_SCHEMA,
    )


def _latent_table(dives: Sequence[SynthDive]) -> pa.Table:
    rows = [
        {
            "id": d.id,
            **{f.name: getattr(d.latents, f.name) for f in fields(Latents)},
            "true_quality": d.true_quality,
        }
        for d in dives
    ]
    return pa.Table.from_pylist(rows, schema=LATENT_SCHEMA)


def generate_dataset(
    cfg: SynthConfig,
    out_dir: Path,
    *,
    render: bool = True,
    progress: bool = True,
    workers: int = 1,
) -> SynthSummary:
    """Generate the whole synthetic dataset into ``out_dir`` (replaced atomically).

    Writes ``annotations.parquet`` (canonical annotation table, rows in index order),
    ``skeletons.parquet`` (canonical skeleton table), ``latents.parquet`` (:data:`LATENT_SCHEMA`)
    and, when ``render``, ``videos/<video_name>_<dive_index>.mp4``. ``workers`` > 1 generates and
    renders dives in that many processes (the output does not depend on it).

    Raises:
        ConfigError: for an invalid ``cfg`` (nothing is written).
    """
    cfg.validate()
    if workers < 1:
        raise ValueError(f"workers must be >= 1, got {workers}")
    out_dir = Path(out_dir)
    start = time.perf_counter()
    with atomic_path(out_dir) as tmp:
        tmp.mkdir()
        video_dir = tmp / "videos" if render else None
        if video_dir is not None:
            video_dir.mkdir()
        indices = range(cfg.num_dives)
        bar = tqdm(total=cfg.num_dives, desc="synth", unit="dive", disable=not progress)
        dives: list[SynthDive] = []
        if workers == 1:
            for i in indices:
                dives.append(_make_dive(cfg, i, video_dir))
                bar.update()
        else:
            with ProcessPoolExecutor(max_workers=workers) as pool:
                for dive in pool.map(
                    _make_dive, [cfg] * len(indices), indices, [video_dir] * len(indices), chunksize=4
                ):
                    dives.append(dive)
                    bar.update()
        bar.close()
        splits = assign_splits([d.dive_number for d in dives], cfg.test_fraction, cfg.seed)
        annotations = canonical.annotation_table(
            [d.annotation_row(s) for d, s in zip(dives, splits, strict=True)]
        )
        write_parquet(annotations, tmp / "annotations.parquet")
        write_parquet(_skeleton_table(dives), tmp / "skeletons.parquet")
        write_parquet(_latent_table(dives), tmp / "latents.parquet")
    seconds = time.perf_counter() - start
    scores = [d.final_score for d in dives]
    frames = [d.num_frames for d in dives]
    summary = SynthSummary(
        num_dives=len(dives),
        num_train=splits.count("train"),
        num_test=splits.count("test"),
        num_dive_numbers=len({d.dive_number for d in dives}),
        score_min=min(scores),
        score_max=max(scores),
        frames_min=min(frames),
        frames_max=max(frames),
        rendered=render,
        seconds=seconds,
        dives_per_second=len(dives) / seconds if seconds > 0 else float("inf"),
    )
    log.info("synthetic dataset %s: %s", out_dir, summary)
    return summary
