"""Generate the synthetic sample case: a stylised laparoscopic cholecystectomy clip and its notes.

Everything here is drawn from numbers (no real patient, no dataset frames): a reddish tissue
background whose colour and texture shift through four Cholec80-style phases, simple instrument
shapes (grasper, hook, clipper, scissors) entering and leaving at known times, clips appearing
on a pale duct and the duct being cut. The same timeline writes the notes file.

    python examples/make_sample_case.py                 # writes examples/sample_case/
    python examples/make_sample_case.py --out /tmp/case --duration 20
"""

from __future__ import annotations

import argparse
import json
import math
from dataclasses import dataclass
from pathlib import Path

import av
import numpy as np
from PIL import Image, ImageDraw, ImageFilter

WIDTH, HEIGHT, FPS = 320, 240, 25
NAME = "sample_lapchole"

# (phase, start s, end s, base RGB of the tissue, RGB of the texture's light patches)
PHASES = [
    ("Preparation", 0.0, 8.0, (176, 72, 70), (226, 190, 120)),
    ("CalotTriangleDissection", 8.0, 20.0, (160, 52, 52), (214, 150, 120)),
    ("ClippingCutting", 20.0, 28.0, (150, 48, 50), (200, 140, 128)),
    ("GallbladderDissection", 28.0, 40.0, (120, 50, 46), (150, 160, 96)),
]
# (instrument, enters s, leaves s, side it comes from)
INSTRUMENTS = [
    ("Grasper", 2.0, 38.0, "left"),
    ("Hook", 9.0, 19.5, "right"),
    ("Clipper", 21.0, 25.5, "right"),
    ("Scissors", 26.0, 27.8, "right"),
    ("Hook", 29.0, 38.0, "right"),
]
CLIP_TIMES = (22.0, 23.2, 24.4)
CUT_TIME = 27.0
ENTRY_S = 0.8  # seconds an instrument takes to slide in or out


@dataclass(frozen=True)
class Tool:
    """How one instrument is drawn: shaft width, colours and tip shape."""

    width: int
    shade: tuple[int, int, int]
    tip: str


TOOLS = {
    "Grasper": Tool(13, (150, 152, 158), "jaws"),
    "Hook": Tool(8, (170, 170, 176), "hook"),
    "Clipper": Tool(15, (140, 142, 150), "clip"),
    "Scissors": Tool(10, (160, 160, 168), "blades"),
}


def smooth_noise(
    rng: np.random.Generator, shape: tuple[int, int], scales: tuple[int, ...]
) -> np.ndarray:
    """Sum of upsampled random grids: a cloudy texture in [0, 1]."""
    height, width = shape
    total = np.zeros(shape, dtype=np.float32)
    for weight, cells in enumerate(scales, start=1):
        grid = rng.random((height // cells + 2, width // cells + 2)).astype(np.float32)
        image = Image.fromarray((grid * 255).astype(np.uint8)).resize(
            (width + 2 * cells, height + 2 * cells), Image.Resampling.BICUBIC
        )
        total += np.asarray(image, dtype=np.float32)[:height, :width] / 255 / weight
    total -= total.min()
    return total / max(float(total.max()), 1e-6)


def phase_at(t: float) -> int:
    return next((i for i, (_, start, end, *_rest) in enumerate(PHASES) if start <= t < end), 3)


def blend_colors(t: float) -> tuple[np.ndarray, np.ndarray]:
    """Base and patch colours at ``t``, easing over the first second of each phase."""
    i = phase_at(t)
    _, start, _, base, patch = PHASES[i]
    prev = PHASES[max(0, i - 1)]
    mix = min(1.0, (t - start) / 1.0) if i else 1.0
    base_rgb = np.array(prev[3]) * (1 - mix) + np.array(base) * mix
    patch_rgb = np.array(prev[4]) * (1 - mix) + np.array(patch) * mix
    return base_rgb.astype(np.float32), patch_rgb.astype(np.float32)


def endoscope_mask() -> np.ndarray:
    """A round field of view with a soft, dark rim."""
    ys, xs = np.mgrid[0:HEIGHT, 0:WIDTH].astype(np.float32)
    r = np.hypot((xs - WIDTH / 2) / (WIDTH * 0.6), (ys - HEIGHT / 2) / (HEIGHT * 0.66))
    return np.clip(1.6 - r * 1.2, 0, 1) ** 0.8


def presence(t: float, enter: float, leave: float) -> float:
    """0 outside the interval, 1 inside, ramping over ENTRY_S at both ends."""
    if t < enter or t > leave:
        return 0.0
    return min(1.0, (t - enter) / ENTRY_S, (leave - t) / ENTRY_S)


def draw_tool(draw: ImageDraw.ImageDraw, name: str, side: str, t: float, amount: float) -> None:
    tool = TOOLS[name]
    wobble = 6 * math.sin(t * 1.3 + len(name))
    if side == "left":
        entry, tip = np.array([-30.0, 20.0]), np.array([118 + wobble, 98 + wobble / 2])
    else:
        entry, tip = np.array([WIDTH + 30.0, HEIGHT - 10.0]), np.array([196 + wobble, 128 - wobble])
    tip = entry + (tip - entry) * amount
    dark = tuple(int(c * 0.55) for c in tool.shade)
    draw.line([tuple(entry), tuple(tip)], fill=dark, width=tool.width + 4)
    draw.line([tuple(entry), tuple(tip)], fill=tool.shade, width=tool.width)
    shine = tuple(min(255, c + 60) for c in tool.shade)
    draw.line([tuple(entry), tuple(tip)], fill=shine, width=max(2, tool.width // 4))
    direction = (tip - entry) / max(float(np.linalg.norm(tip - entry)), 1e-6)
    normal = np.array([-direction[1], direction[0]])
    x, y = tip
    if tool.tip == "jaws":
        open_by = 5 + 3 * math.sin(t * 2)
        for sign in (-1, 1):
            end = tip + direction * 16 + normal * sign * open_by
            draw.line([(x, y), tuple(end)], fill=dark, width=5)
    elif tool.tip == "hook":
        bend = tip + direction * 10
        draw.line([(x, y), tuple(bend)], fill=(200, 200, 205), width=3)
        draw.line([tuple(bend), tuple(bend + normal * 7)], fill=(200, 200, 205), width=3)
    elif tool.tip == "clip":
        box = [tip + direction * 14 + normal * s * 6 for s in (-1, 1)]
        draw.polygon([(x, y), tuple(box[0]), tuple(box[1])], fill=(205, 195, 120))
    else:
        for sign in (-1, 1):
            draw.line([(x, y), tuple(tip + direction * 18 + normal * sign * 4)], fill=dark, width=3)


def draw_structures(draw: ImageDraw.ImageDraw, t: float) -> None:
    """The pale duct exposed during Calot dissection, its clips, and the cut."""
    visible = min(1.0, max(0.0, (t - 10.0) / 8.0)) if t < 28.0 else max(0.0, 1 - (t - 28.0) / 3)
    if visible <= 0:
        return
    tone = tuple(int(150 + 80 * visible * f) for f in (1.0, 0.9, 0.75))
    if t < CUT_TIME:
        draw.line([(150, 150), (260, 120)], fill=tone, width=9)
    else:
        draw.line([(150, 150), (198, 137)], fill=tone, width=9)
        draw.line([(214, 133), (260, 120)], fill=tone, width=9)
    for i, when in enumerate(CLIP_TIMES):
        if t >= when:
            cx = 178 + 11 * i + (30 if i == 2 else 0)
            cy = 143 - 3 * i - (8 if i == 2 else 0)
            draw.rectangle([cx - 2, cy - 8, cx + 2, cy + 8], fill=(225, 225, 230))


def render_frame(t: float, texture: np.ndarray, mask: np.ndarray) -> np.ndarray:
    base, patch = blend_colors(t)
    dx = int(20 + 16 * math.sin(t * 0.21))
    dy = int(16 + 10 * math.cos(t * 0.17))
    local = texture[dy : dy + HEIGHT, dx : dx + WIDTH, None]
    rgb = base * (1 - local) + patch * local
    if t >= PHASES[3][1]:  # the gallbladder's greenish wall fills the upper view
        rows = np.arange(HEIGHT, dtype=np.float32)[:, None, None]
        wall = np.clip((HEIGHT * 0.55 - rows) / 40, 0, 1) * 0.5
        rgb = rgb * (1 - wall) + np.array([96, 120, 70], dtype=np.float32) * wall
    image = Image.fromarray(np.clip(rgb * mask[..., None], 0, 255).astype(np.uint8))
    draw = ImageDraw.Draw(image)
    draw_structures(draw, t)
    for name, enter, leave, side in INSTRUMENTS:
        amount = presence(t, enter, leave)
        if amount > 0:
            draw_tool(draw, name, side, t, amount)
    image = image.filter(ImageFilter.GaussianBlur(0.6))
    return np.asarray(image)


def write_video(path: Path, duration: float) -> None:
    rng = np.random.default_rng(80)
    texture = smooth_noise(rng, (HEIGHT + 48, WIDTH + 64), (48, 20, 8, 3))
    mask = endoscope_mask()
    with av.open(str(path), mode="w", options={"movflags": "faststart"}) as container:
        codec = "libx264" if "libx264" in av.codecs_available else "mpeg4"
        stream = container.add_stream(codec, FPS, options={"crf": "26", "preset": "slow"})
        stream.width, stream.height, stream.pix_fmt = WIDTH, HEIGHT, "yuv420p"
        for index in range(round(duration * FPS)):
            pixels = render_frame(index / FPS, texture, mask)
            container.mux(stream.encode(av.VideoFrame.from_ndarray(pixels, format="rgb24")))
        container.mux(stream.encode(None))


def clock(seconds: float) -> str:
    whole, tenths = divmod(round(seconds * 10), 10)
    text = f"{whole // 60:02d}:{whole % 60:02d}"
    return f"{text}.{tenths}" if tenths else text


def notes_text(duration: float) -> str:
    phases = "\n".join(
        f"| {clock(start)} | {clock(min(end, duration))} | {name} |"
        for name, start, end, *_ in PHASES
        if start < duration
    )
    tools = "\n".join(
        f"| {name} | {clock(enter)} | {clock(min(leave, duration))} |"
        for name, enter, leave, _ in INSTRUMENTS
        if enter < duration
    )
    clips = ", ".join(clock(t) for t in CLIP_TIMES)
    return f"""# Operative note: sample_lapchole (SYNTHETIC)

**This case is synthetic.** The video was drawn by `examples/make_sample_case.py` from simple
shapes and noise; it shows no patient and no real operation. The note below imitates the
structure of a laparoscopic cholecystectomy note so the tools have something to read.

- Procedure: laparoscopic cholecystectomy (stylised, {duration:.0f} s, {FPS} fps, {WIDTH}x{HEIGHT})
- Indication: none (synthetic demonstration case)
- Findings: a pale cystic duct is exposed during Calot's triangle dissection, clipped three
  times ({clips}) and divided at {clock(CUT_TIME)}; the gallbladder is then dissected from
  the liver bed. No bleeding, no bile spill (nothing here is real).

## Phase timeline (Cholec80 phase names)

| start | end | phase |
|---|---|---|
{phases}

## Instruments on screen

| instrument | enters | leaves |
|---|---|---|
{tools}

Instruments slide in and out over {ENTRY_S} s at each end of their interval.
"""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path(__file__).parent / "sample_case")
    parser.add_argument("--duration", type=float, default=40.0)
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    video = args.out / f"{NAME}.mp4"
    write_video(video, args.duration)
    (args.out / f"{NAME}.md").write_text(notes_text(args.duration))
    timeline = {
        "synthetic": True,
        "phases": [{"phase": n, "start": s, "end": e} for n, s, e, *_ in PHASES],
        "instruments": [{"instrument": n, "start": s, "end": e} for n, s, e, _ in INSTRUMENTS],
        "events": [{"event": "clip", "time": t} for t in CLIP_TIMES]
        + [{"event": "cut", "time": CUT_TIME}],
    }
    (args.out / f"{NAME}.json").write_text(json.dumps({"timeline": timeline}, indent=1) + "\n")
    print(f"wrote {video} ({video.stat().st_size / 1e6:.2f} MB) and its notes")


if __name__ == "__main__":
    main()
