"""The synthetic diving dataset: labels, skeletons, FINA scores, determinism, videos and signal."""

from __future__ import annotations

import dataclasses
import math
import re
from pathlib import Path

import decord
import numpy as np
import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest
from scipy.stats import spearmanr

from hpmcore.config import ConfigError, SynthConfig, from_dict
from hpmcore.data import canonical
from hpmcore.data.synth import (
    DIVE_TABLE,
    ENTRY_LABEL,
    LATENT_SCHEMA,
    SynthDive,
    fina_score,
    flight_label,
    generate_dataset,
    generate_dive,
    takeoff_label,
)

TINY = SynthConfig(seed=3, num_dives=6, width=64, height=48, min_frames=24, max_frames=40, num_judges=7)


@pytest.fixture(scope="module")
def rendered(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("synth") / "data"
    summary = generate_dataset(TINY, out, progress=False)
    assert summary.num_dives == TINY.num_dives and summary.rendered
    return out


def _direct_fina(judges: list[float], dd: float) -> float:
    """The FINA rule written out: trim 2+2 of 7, 1+1 of 5, none of 3; sum × DD."""
    marks = sorted(judges)
    trimmed = {7: marks[2:5], 5: marks[1:4], 3: marks}[len(marks)]
    return round(sum(trimmed) * dd, 2)


# --- dive numbers, sub-actions and transitions -------------------------------------------------------


def test_dive_table_is_fina_like() -> None:
    pattern = re.compile(r"^(?:[1-4]0[1-9]|5[1-4][1-9][1-9])[abc]$")
    for dive in DIVE_TABLE:
        assert pattern.match(dive.number), dive.number
        assert 1.2 <= dive.difficulty <= 4.1 and round(dive.difficulty, 1) == dive.difficulty
        assert dive.half_somersaults % 2 == 1  # head-first entry
    assert 15 <= len({d.number for d in DIVE_TABLE}) == len(DIVE_TABLE) <= 25
    assert {d.group for d in DIVE_TABLE} >= {1, 2, 3, 4}
    assert flight_label(7, "c") == 25 and takeoff_label(4) == 4  # FineDiving's ('01', 1): 407c


@pytest.mark.parametrize("cfg", [TINY, SynthConfig(seed=11, min_frames=60, max_frames=130)])
def test_transitions_lie_inside_the_clip_and_match_the_frame_labels(cfg: SynthConfig) -> None:
    for index in range(40):
        dive = generate_dive(cfg, index)
        labels, (t0, t1) = dive.frame_labels, dive.transitions
        n = dive.num_frames
        assert cfg.min_frames <= n <= cfg.max_frames and len(labels) == n
        assert 0 <= t0 < t1 < n - 1
        # the label changes exactly right after each transition frame, and nowhere else
        assert np.flatnonzero(np.diff(labels)).tolist() == [t0, t1]
        dt = dive.dive_type
        assert labels[0] == takeoff_label(dt.direction)
        assert labels[t0 + 1] == flight_label(dt.half_somersaults, dt.position)
        assert labels[-1] == ENTRY_LABEL


def test_annotation_table_is_canonical(rendered: Path) -> None:
    table = canonical.read_annotations(rendered / "annotations.parquet")
    assert table.schema.equals(canonical.ANNOTATION_SCHEMA)
    rows = table.to_pylist()
    assert [r["id"] for r in rows] == [generate_dive(TINY, i).id for i in range(TINY.num_dives)]
    for i, row in enumerate(rows):
        dive = generate_dive(TINY, i)
        assert row["id"] == canonical.dive_id(f"synth_{i // 20:03d}", i % 20 + 1)
        assert row["video_path"] == f"videos/synth_{i // 20:03d}_{i % 20 + 1}.mp4"
        assert (row["start_frame"], row["end_frame"]) == (0, dive.num_frames - 1)
        assert row["transitions"] == list(dive.transitions)
        assert row["frame_labels"] == dive.frame_labels.tolist()
    splits = [r["split"] for r in rows]
    assert 1 <= splits.count("test") <= round(TINY.test_fraction * TINY.num_dives)
    assert {r["dive_number"] for r in rows if r["split"] == "test"} <= {
        r["dive_number"] for r in rows if r["split"] == "train"
    }
    latents = pq.read_table(rendered / "latents.parquet")
    assert latents.schema.equals(LATENT_SCHEMA, check_metadata=False)
    assert latents.column("id").to_pylist() == [r["id"] for r in rows]


# --- skeleton -------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "cfg",
    [TINY, SynthConfig(seed=5), SynthConfig(seed=8, width=64, height=128, min_frames=24, max_frames=200)],
)
def test_every_joint_in_view_lies_inside_the_frame(cfg: SynthConfig) -> None:
    for index in range(60):
        dive = generate_dive(cfg, index)
        xy, conf = dive.joints, dive.confidence  # (T, 16, 2), (T, 16)
        assert xy.shape == (dive.num_frames, canonical.NUM_JOINTS, 2)
        assert np.all((conf >= 0) & (conf <= 1))
        in_view = conf > 0
        x, y = xy[..., 0][in_view], xy[..., 1][in_view]
        assert np.all((x >= 0) & (x <= cfg.width - 1) & (y >= 0) & (y <= cfg.height - 1)), index
        # in view <=> above the (jittered) water surface; on the platform and in the air the
        # whole athlete is in view, and by the end of the entry it is under water
        np.testing.assert_allclose(xy[in_view], dive.body[in_view], atol=1e-3)  # not clipped
        surface = dive.scene.water_y + dive.scene.jitter[:, 1]  # (T,)
        np.testing.assert_array_equal(in_view, dive.body[..., 1] < surface[:, None])
        assert in_view[: dive.transitions[1] + 1].all()
        assert not in_view[-1].any()
        # the skeleton follows the scene: feet on the platform at the start
        ankles_y = xy[0, [0, 5], 1] - dive.scene.jitter[0, 1]
        np.testing.assert_allclose(ankles_y, dive.scene.platform_y, atol=1e-3)


def test_skeleton_table_holds_every_frame(rendered: Path) -> None:
    table = pq.read_table(rendered / "skeletons.parquet")
    assert table.schema.equals(canonical.SKELETON_SCHEMA, check_metadata=False)
    dive = generate_dive(TINY, 2)
    rows = table.filter(pc.equal(table.column("id"), dive.id))
    assert rows.num_rows == dive.num_frames * canonical.NUM_JOINTS
    x = np.asarray(rows.column("x")).reshape(dive.num_frames, canonical.NUM_JOINTS)
    np.testing.assert_array_equal(x, dive.joints[..., 0])
    assert table.num_rows == sum(
        generate_dive(TINY, i).num_frames * canonical.NUM_JOINTS for i in range(TINY.num_dives)
    )


def _trunk_tilt_deg(dive: SynthDive) -> float:
    """Angle of pelvis → thorax from straight down at the first entry frame, degrees."""
    v = dive.body[dive.scene.entry_frame, 7] - dive.body[dive.scene.entry_frame, 6]  # (2,) y down
    return math.degrees(math.atan2(abs(v[0]), v[1]))


def test_latent_factors_are_visible_in_the_skeleton() -> None:
    cfg = SynthConfig(seed=21)
    dives = [generate_dive(cfg, i) for i in range(80)]
    lift = [d.latents.takeoff_height for d in dives]
    apex = [  # highest point of the pelvis above the platform, body heights
        (d.scene.platform_y - d.body[: d.scene.entry_frame, 6, 1].min()) / d.scene.scale for d in dives
    ]
    assert spearmanr(lift, apex)[0] > 0.8
    tilt = [_trunk_tilt_deg(d) for d in dives]
    np.testing.assert_allclose(tilt, [abs(d.latents.entry_angle_error) for d in dives], atol=1.0)
    assert min(apex) > 0.5 and max(apex) < 2.0


# --- scores -----------------------------------------------------------------------------------------------


def test_fina_score_examples() -> None:
    # MTL-AQA (1, 1): 407C, DD 3.2, 88.0
    assert fina_score([9.5, 9, 9.5, 9, 8.5, 9.5, 8.5], 3.2) == 88.0
    assert fina_score([7.5, 9.0, 8.0, 8.0, 8.5], 3.3) == round((8.0 + 8.0 + 8.5) * 3.3, 2)
    assert fina_score([6.0, 7.0, 6.5], 2.0) == 39.0
    with pytest.raises(ValueError, match="3, 5 or 7"):
        fina_score([6.0, 7.0, 6.5, 6.0], 2.0)


@pytest.mark.parametrize("judges", [7, 5, 3])
def test_scores_follow_the_fina_rule(tmp_path: Path, judges: int) -> None:
    cfg = SynthConfig(
        seed=4, num_dives=30, width=32, height=32, min_frames=24, max_frames=30, num_judges=judges
    )
    generate_dataset(cfg, tmp_path / "d", render=False, progress=False)
    rows = canonical.read_annotations(tmp_path / "d" / "annotations.parquet").to_pylist()
    assert len(rows) == 30
    for row in rows:
        marks = row["judge_scores"]
        assert len(marks) == judges
        assert all(0 <= m <= 10 and m * 2 == int(m * 2) for m in marks)
        assert row["final_score"] == _direct_fina(marks, row["difficulty"])
    assert len({tuple(r["judge_scores"]) for r in rows}) > 10


def test_same_seed_gives_byte_identical_annotations(tmp_path: Path) -> None:
    cfg = SynthConfig(seed=9, num_dives=12, width=32, height=32, min_frames=24, max_frames=40)
    for name, c in (("a", cfg), ("b", cfg), ("c", dataclasses.replace(cfg, seed=10))):
        generate_dataset(c, tmp_path / name, render=False, progress=False)
    data = {n: (tmp_path / n / "annotations.parquet").read_bytes() for n in "abc"}
    assert data["a"] == data["b"]
    assert data["a"] != data["c"]
    # a dive does not depend on how many dives the dataset has
    more = generate_dive(dataclasses.replace(cfg, num_dives=500), 7)
    assert more.final_score == generate_dive(cfg, 7).final_score
    np.testing.assert_array_equal(more.joints, generate_dive(cfg, 7).joints)


def test_score_carries_visible_signal(tmp_path: Path) -> None:
    cfg = SynthConfig()  # the default dataset: 240 dives
    generate_dataset(cfg, tmp_path / "d", render=False, progress=False)
    rows = canonical.read_annotations(tmp_path / "d" / "annotations.parquet").to_pylist()
    latents = pq.read_table(tmp_path / "d" / "latents.parquet").to_pylist()
    score = np.array([r["final_score"] for r in rows])
    dd = np.array([r["difficulty"] for r in rows])
    train = np.array([r["split"] == "train" for r in rows])
    assert (~train).sum() == round(cfg.test_fraction * cfg.num_dives)
    factors = np.array(
        [
            [
                lat["takeoff_height"],
                lat["shape_error"],
                lat["rotation_unsteadiness"],
                abs(lat["entry_angle_error"]),
                lat["splash"],
            ]
            for lat in latents
        ]
    )  # (N, 5)
    features = np.column_stack([np.ones_like(dd), dd, factors, dd[:, None] * factors])  # (N, 12)
    weights, *_ = np.linalg.lstsq(features[train], score[train], rcond=None)
    rho_latent = spearmanr(features[~train] @ weights, score[~train])[0]
    numbers = [r["dive_number"] for r in rows]
    means = {n: score[train][[m == n for m in np.array(numbers)[train]]].mean() for n in set(numbers)}
    rho_number = spearmanr([means[numbers[i]] for i in np.flatnonzero(~train)], score[~train])[0]
    print(f"\nSpearman rho on test: latent factors + DD {rho_latent:.3f}, dive-number mean {rho_number:.3f}")
    assert rho_latent >= 0.9
    assert rho_number <= rho_latent - 0.15
    assert score.min() >= 10 and score.max() <= 120 and score.max() - score.min() >= 50
    assert all(numbers.count(n) >= 2 for n in numbers)  # dive numbers repeat


# --- videos and failures ---------------------------------------------------------------------------------


def test_videos_decode_to_the_recorded_frame_count(rendered: Path) -> None:
    rows = canonical.read_annotations(rendered / "annotations.parquet").to_pylist()
    assert len(list((rendered / "videos").glob("*.mp4"))) == len(rows)
    for row in rows:
        reader = decord.VideoReader(str(rendered / row["video_path"]))
        assert len(reader) == row["num_frames"]
        frames = reader.get_batch(list(range(len(reader)))).asnumpy()  # (T, H, W, 3)
        assert frames.shape == (row["num_frames"], TINY.height, TINY.width, 3)
        assert frames.std(axis=0).mean() > 1.0  # the picture changes over time
        changed = np.abs(np.diff(frames.astype(np.int16), axis=0)).reshape(len(frames) - 1, -1).max(1) > 0
        assert changed.mean() > 0.5


def test_zero_dives_raise_and_write_nothing(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="num_dives"):
        from_dict(SynthConfig, {"num_dives": 0}, "synth")
    with pytest.raises(ConfigError, match="num_dives"):
        generate_dataset(SynthConfig(num_dives=0), tmp_path / "out", progress=False)
    assert list(tmp_path.iterdir()) == []


def test_a_failure_leaves_nothing_with_the_final_name(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import hpmcore.data.render as render

    calls = []

    def broken(*args: object, **kwargs: object) -> None:
        calls.append(1)
        if len(calls) == 3:
            raise OSError("disk full")

    monkeypatch.setattr(render, "render_dive", broken)
    with pytest.raises(OSError, match="disk full"):
        generate_dataset(TINY, tmp_path / "out", progress=False)
    assert list(tmp_path.iterdir()) == []
