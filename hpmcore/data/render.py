"""Drawing synthetic dives and encoding them as H.264 mp4 files (PyAV, yuv420p).

A frame shows, from back to front: a sky/wall gradient, the platform on its pillar, the diver drawn
from the skeleton (far-side limbs darker, trunk in the swimsuit colour, head as a disc), the water
(which hides the submerged body), and the splash (a crown whose height and width follow the splash
latent, plus spray droplets and foam). The whole scene moves with the per-frame camera jitter of
:class:`hpmcore.data.synth.Scene`, exactly as the skeleton does.
"""

from __future__ import annotations

import math
import platform
from collections.abc import Iterable, Iterator
from fractions import Fraction
from pathlib import Path

import av
import numpy as np
from PIL import Image, ImageDraw

from hpmcore.data.synth import Color, Scene, SynthDive

_FOAM: Color = (235, 242, 248)
_SPRAY: Color = (215, 230, 242)


def _shade(color: Color, factor: float) -> Color:
    return (int(color[0] * factor), int(color[1] * factor), int(color[2] * factor))


def _background(scene: Scene) -> Image.Image:
    """The static scene on a canvas ``max_jitter`` px larger on every side: ``(H + 2J, W + 2J)``."""
    pad = scene.max_jitter
    w, h = scene.width + 2 * pad, scene.height + 2 * pad
    water_y = scene.water_y + pad
    rows = np.linspace(0.0, 1.0, h)[:, None]
    sky = (1 - rows) * np.asarray(scene.sky_top) + rows * np.asarray(scene.sky_bottom)  # (H, 3)
    depth = np.clip((np.arange(h) - water_y) / max(h - water_y, 1.0), 0.0, 1.0)[:, None]
    water = (1 - 0.45 * depth) * np.asarray(scene.water)
    column = np.where((np.arange(h) >= water_y)[:, None], water, sky)  # (H, 3)
    canvas = np.broadcast_to(column[:, None, :], (h, w, 3)).astype(np.uint8)
    image = Image.fromarray(np.ascontiguousarray(canvas))
    draw = ImageDraw.Draw(image)
    # a back wall band with a darker stripe, well above the water
    wall_y = water_y - 0.55 * scene.scale
    draw.rectangle([0, wall_y - 0.25 * scene.scale, w, wall_y], fill=_shade(scene.sky_bottom, 0.8))
    # platform: slab with a lighter top edge, on a pillar down to the water
    edge_x, top_y = scene.platform_x + pad, scene.platform_y + pad
    thick = max(2.0, 0.12 * scene.scale)
    pillar = 0.35 * scene.scale
    draw.rectangle([0, top_y, edge_x, top_y + thick], fill=scene.platform)
    draw.line([(0, top_y), (edge_x, top_y)], fill=_shade(scene.platform, 1.15), width=1)
    draw.rectangle(
        [edge_x - 1.6 * pillar, top_y + thick, edge_x - 0.6 * pillar, water_y],
        fill=_shade(scene.platform, 0.75),
    )
    # a lane rope far away on the water
    draw.line([(0, water_y + 2), (w, water_y + 2)], fill=_shade(scene.water, 1.3), width=1)
    return image


_LIMBS_FAR = ((3, 4, 5), (13, 14, 15))  # left leg, left arm
_LIMBS_NEAR = ((2, 1, 0), (12, 11, 10))  # right leg, right arm


def _draw_body(draw: ImageDraw.ImageDraw, pts: np.ndarray, scene: Scene) -> None:
    """Draw one skeleton ``pts`` ``(16, 2)`` (frame pixels) as a stick figure with volume."""
    limb = max(2, round(0.075 * scene.scale))
    trunk = max(3, round(0.13 * scene.scale))
    far = _shade(scene.skin, 0.8)

    def poly(ids: tuple[int, ...]) -> list[tuple[float, float]]:
        return [(float(pts[i, 0]), float(pts[i, 1])) for i in ids]

    for ids in _LIMBS_FAR:
        draw.line(poly(ids), fill=far, width=limb, joint="curve")
    draw.line(poly((6, 7)), fill=scene.suit, width=trunk)
    draw.line(poly((2, 3)), fill=scene.suit, width=limb)
    draw.line(poly((12, 13)), fill=scene.skin, width=limb)
    draw.line(poly((7, 8)), fill=scene.skin, width=limb)
    neck, top = pts[8], pts[9]
    centre = (neck + top) / 2
    radius = max(1.5, 0.6 * float(np.linalg.norm(top - neck)))
    draw.ellipse(
        [centre[0] - radius, centre[1] - radius, centre[0] + radius, centre[1] + radius], fill=scene.skin
    )
    for ids in _LIMBS_NEAR:
        draw.line(poly(ids), fill=scene.skin, width=limb, joint="curve")


def _draw_splash(
    draw: ImageDraw.ImageDraw, scene: Scene, frame: int, offset: np.ndarray, spray: np.ndarray
) -> None:
    """Crown, spray droplets and foam of the splash at ``frame`` (nothing before the entry)."""
    after = frame - scene.entry_frame
    if after < 0:
        return
    x = scene.entry_x + float(offset[0])
    y = scene.water_y + float(offset[1])
    height, width = float(scene.splash_height[frame]), float(scene.splash_width[frame])
    foam_w = max(width, 0.3 * scene.scale) * 0.75
    draw.ellipse([x - foam_w, y - 1, x + foam_w, y + max(1.5, 0.06 * scene.scale)], fill=_FOAM)
    if height >= 0.5:
        draw.ellipse([x - width / 2, y - height, x + width / 2, y + 0.25 * height], fill=_SPRAY)
        core = 0.35 * width
        draw.polygon([(x - core, y), (x, y - 1.15 * height), (x + core, y)], fill=_FOAM)
    gravity = 0.03 * scene.scale
    for vx, vy in spray:  # (N, 2) px/frame
        px = x + vx * after
        py = y - (vy * after - 0.5 * gravity * after * after)
        if py < y - 0.5:
            draw.ellipse([px - 0.8, py - 0.8, px + 0.8, py + 0.8], fill=_FOAM)


def render_frames(dive: SynthDive) -> Iterator[np.ndarray]:
    """The dive's frames, one ``(H, W, 3)`` uint8 RGB array per skeleton frame."""
    scene = dive.scene
    pad = scene.max_jitter
    background = _background(scene)
    rng = np.random.default_rng([dive.seed, dive.index, 3])
    n_spray = 2 + round(24 * dive.latents.splash)
    spray = (
        np.stack(
            [
                rng.normal(0.0, 0.05 + 0.05 * dive.latents.splash, n_spray),
                rng.uniform(0.08, 0.12 + 0.25 * dive.latents.splash, n_spray),
            ],
            axis=-1,
        )
        * scene.scale
    )  # (N, 2) px/frame
    for t in range(dive.num_frames):
        offset = scene.jitter[t]
        # the scene moves by +offset in the image: crop the padded canvas at pad − offset
        left, top = pad - int(offset[0]), pad - int(offset[1])
        image = background.crop((left, top, left + scene.width, top + scene.height))
        draw = ImageDraw.Draw(image)
        _draw_body(draw, dive.body[t], scene)
        water_top = math.ceil(scene.water_y + offset[1])
        if water_top < scene.height:  # water in front of the submerged body
            image.paste(
                background.crop((left, top + water_top, left + scene.width, top + scene.height)),
                (0, water_top),
            )
        _draw_splash(draw, scene, t, offset, spray)
        yield np.asarray(image)


X264_ASM = "SSE2" if platform.machine().lower() in ("x86_64", "amd64") else "0"
"""x264's instruction sets (its ``asm`` param): SSE2, the x86-64 baseline every x86-64 CPU has, else none
(the portable C code). By default x264 picks the best set of the CPU it runs on, and its AVX2 code
reads uninitialised padding bytes of its frame buffers into coding decisions (the same frames gave
different bytes from run to run, and the x264 output of one set differs from another's)."""
X264_PARAMS = f"asm={X264_ASM}:threads=1:lookahead-threads=1:sliced-threads=0"
"""x264 parameters of :func:`write_mp4`: a fixed instruction set and one thread, so the bytes depend only
on the frames and the x264 build (the PyAV wheel), not on the machine or on the process's memory."""
_TO_YUV = (
    av.video.reformatter.Interpolation.BILINEAR
    | av.video.reformatter.Interpolation.ACCURATE_RND
    | av.video.reformatter.Interpolation.BITEXACT
)
"""swscale flags of the RGB → yuv420p conversion: its bit-exact C path on every CPU."""


def write_mp4(frames: Iterable[np.ndarray], path: Path, *, fps: int, crf: int = 23) -> int:
    """Encode ``(H, W, 3)`` uint8 RGB frames as H.264 (yuv420p, ``fps``) into ``path``, deterministically.

    libx264 ``preset=veryfast``, ``crf``, one thread and the instruction sets of :data:`X264_ASM`;
    the RGB → yuv420p conversion is swscale's bit-exact one and the mp4 is muxed with ``+bitexact``
    (no library version string in the container). The same frames give the same bytes on every run,
    thread setting (``OMP_NUM_THREADS``) and x86-64 CPU with the same PyAV wheel; the decoded frames
    are the same wherever the bytes are (H.264 decoding is exact). Width and height must be even.

    Returns:
        The number of frames written.

    Raises:
        ValueError: for frames of the wrong shape or odd size, or no frames at all.
    """
    count = 0
    with av.open(str(path), mode="w", options={"fflags": "+bitexact"}) as container:
        stream = None
        for array in frames:
            if array.ndim != 3 or array.shape[2] != 3 or array.dtype != np.uint8:
                raise ValueError(f"expected (H, W, 3) uint8 frames, got {array.shape} {array.dtype}")
            if stream is None:
                height, width = array.shape[:2]
                if width % 2 or height % 2:
                    raise ValueError(f"H.264 yuv420p needs an even frame size, got {width}x{height}")
                stream = container.add_stream("libx264", rate=fps)
                stream.width, stream.height, stream.pix_fmt = width, height, "yuv420p"
                stream.codec_context.thread_count = 1
                stream.codec_context.thread_type = "NONE"
                stream.options = {"crf": str(crf), "preset": "veryfast", "x264-params": X264_PARAMS}
            elif array.shape[:2] != (stream.height, stream.width):
                raise ValueError(
                    f"frame {count} is {array.shape[:2]}, expected {(stream.height, stream.width)}"
                )
            frame = av.VideoFrame.from_ndarray(np.ascontiguousarray(array), format="rgb24").reformat(
                format="yuv420p", interpolation=_TO_YUV, threads=1
            )
            frame.pts = count
            frame.time_base = Fraction(1, fps)
            container.mux(stream.encode(frame))
            count += 1
        if stream is None:
            raise ValueError(f"{path}: no frames to encode")
        container.mux(stream.encode(None))
    return count


def render_dive(dive: SynthDive, path: Path, *, fps: int) -> None:
    """Draw ``dive`` and write it to ``path`` as an H.264 mp4 of ``dive.num_frames`` frames."""
    written = write_mp4(render_frames(dive), path, fps=fps)
    if written != dive.num_frames:  # a bug in render_frames
        raise RuntimeError(f"{path}: wrote {written} frames, expected {dive.num_frames}")
