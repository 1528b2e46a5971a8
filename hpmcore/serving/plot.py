"""The picture of a scored dive (``hpmcore score --plot OUT.png``): the skeleton and the stage boundaries
over a few key frames, and the three stages on a time line with their contributions.

Key frames are sampled frames (where the pose is known): the first frame, the last frame before each
predicted boundary and the first after it (the boundary frames, framed in red), the middle of the flight
and the last frame; each is decoded from the source at its own resolution
(:func:`hpmcore.extraction.video.read_frames`) with the skeleton drawn in source pixels (joints with
confidence 0, e.g. under water, are left out).
"""

from __future__ import annotations

from pathlib import Path

from hpmcore.extraction.video import read_frames
from hpmcore.io import atomic_path
from hpmcore.serving.score import STAGES, ScoreResult

__all__ = ["MPII_BONES", "key_frames", "plot_score"]

MPII_BONES: tuple[tuple[int, int], ...] = (
    (0, 1),
    (1, 2),
    (2, 6),
    (3, 6),
    (3, 4),
    (4, 5),
    (6, 7),
    (7, 8),
    (8, 9),
    (10, 11),
    (11, 12),
    (12, 7),
    (13, 7),
    (13, 14),
    (14, 15),
)
"""Bones between the 16 MPII joints (``hpmcore.data.canonical.MPII_JOINTS``): legs, pelvis–thorax–neck–
head, arms."""
STAGE_COLOURS = ("tab:blue", "tab:orange", "tab:green")
MAX_SIDE = 640
"""Key frames larger than this (px, longer side) are drawn downscaled."""


def key_frames(num_frames: int, transitions: tuple[int, int]) -> list[int]:
    """Sampled indices to draw: first, the frames around both boundaries, mid-flight, last (sorted,
    distinct)."""
    st, ed = transitions
    wanted = [0, st - 1, st, (st + ed) // 2, ed - 1, ed, num_frames - 1]
    return sorted({min(max(t, 0), num_frames - 1) for t in wanted})


def _stage_of(t: int, transitions: tuple[int, int]) -> int:
    st, ed = transitions
    return 0 if t < st else (1 if t < ed else 2)


def plot_score(result: ScoreResult, out: Path) -> Path:
    """Draw ``result`` (see the module docstring) into the PNG ``out`` (written atomically).

    Raises:
        VideoError: the video can no longer be read.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    doc, source = result.document, result.source
    frames_t = key_frames(len(result.indices), result.transitions)
    numbers = result.indices[frames_t]
    scale = min(1.0, MAX_SIDE / max(source.width, source.height))
    width, height = max(16, round(source.width * scale)), max(16, round(source.height * scale))
    images = read_frames(source.path, numbers, width, height)  # (K, h, w, 3)

    k = len(frames_t)
    fig = plt.figure(figsize=(2.4 * k, 4.2), dpi=100)
    grid = fig.add_gridspec(2, k, height_ratios=[4, 1])
    boundaries = {b["sampled_index"] for b in doc["boundaries"]}
    for col, (t, number, image) in enumerate(zip(frames_t, numbers, images, strict=True)):
        ax = fig.add_subplot(grid[0, col])
        ax.imshow(image)
        stage = _stage_of(t, result.transitions)
        if result.skeleton is not None:
            xy = result.skeleton.xy[t] * scale  # (16, 2) in the drawn frame's pixels
            seen = result.skeleton.confidence[t] > 0
            for a, b in MPII_BONES:
                if seen[a] and seen[b]:
                    ax.plot(xy[[a, b], 0], xy[[a, b], 1], color=STAGE_COLOURS[stage], linewidth=1.5)
            ax.scatter(xy[seen, 0], xy[seen, 1], s=8, color="white", edgecolors="black", linewidths=0.5)
        seconds = source.seconds(int(number))
        at = f" · {seconds:.2f} s" if seconds is not None else ""
        ax.set_title(f"frame {int(number)}{at}\n{STAGES[stage]}", fontsize=8)
        ax.set_xticks([])
        ax.set_yticks([])
        if t in boundaries:
            for spine in ax.spines.values():
                spine.set_edgecolor("red")
                spine.set_linewidth(2.5)

    line = fig.add_subplot(grid[1, :])
    for stage, colour in zip(doc["stages"], STAGE_COLOURS, strict=True):
        if stage["start_frame"] is None:  # an empty stage
            continue
        start, end = stage["start_frame"], stage["end_frame"] + 1
        line.axvspan(start, end, color=colour, alpha=0.35)
        line.text(
            (start + end) / 2,
            0.5,
            f"{stage['name']} {stage['contribution']:+.2f}",
            ha="center",
            va="center",
            fontsize=8,
        )
    for b in doc["boundaries"]:
        line.axvline(b["frame"], color="red", linewidth=1.5)
    line.set_xlim(source.first_frame, source.last_frame + 1)
    line.set_yticks([])
    line.set_xlabel("source frame")
    fig.suptitle(
        f"{Path(doc['video']).name}: dive {doc['dive_number']} (DD {doc['difficulty']:g}), predicted "
        f"{doc['score']:.2f} = baseline {doc['baseline']:.2f} + stages",
        fontsize=9,
    )
    fig.tight_layout()
    with atomic_path(Path(out)) as tmp:
        fig.savefig(tmp, format="png")
    plt.close(fig)
    return Path(out)
