"""The report's pictures: phase and instrument timelines (matplotlib, Agg) and annotated frames.

matplotlib and Pillow are imported inside the functions, so importing the reports costs
nothing until a figure is drawn.

    png = phase_timeline_png(rows, vocabulary, duration=40.0)
    jpeg = annotated_frame_jpeg(Path("frame.jpg"), [("Clipper", 0.91, (0.4, 0.2, 0.7, 0.6))])
"""

from __future__ import annotations

import io
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from surgagent.reports.model import InstrumentRow, PhaseRow
from surgagent.tools.base import format_time

if TYPE_CHECKING:
    from matplotlib.axes import Axes

__all__ = ["BoxLabel", "annotated_frame_jpeg", "instrument_timeline_png", "phase_timeline_png"]

BoxLabel = tuple[str, float, tuple[float, float, float, float]]  # name, confidence, 0-1 box

_DPI = 130
_WIDTH_IN = 8.0
_BOX_COLOURS = ["#ffd400", "#00e5ff", "#ff4fd8", "#7CFC00", "#ff8c00", "#ffffff", "#ff3b3b"]


def _colours(count: int) -> list[Any]:
    from matplotlib import colormaps

    palette = colormaps["tab10" if count <= 10 else "tab20"]
    return [palette(k % palette.N) for k in range(count)]


def _time_axis(ax: Axes, duration: float) -> None:
    from matplotlib.ticker import FuncFormatter, MaxNLocator

    ax.set_xlim(0, max(duration, 1e-3))
    ax.xaxis.set_major_locator(MaxNLocator(nbins=10, steps=[1, 2, 3, 5, 6, 10]))
    ax.xaxis.set_major_formatter(FuncFormatter(lambda value, _: format_time(value)))
    ax.tick_params(labelsize=8)
    ax.grid(axis="x", color="#dddddd", linewidth=0.6)
    ax.set_axisbelow(True)
    for side in ("top", "right"):
        ax.spines[side].set_visible(False)


def _png(figure: Any) -> bytes:
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    FigureCanvasAgg(figure)
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=_DPI, bbox_inches="tight")
    return buffer.getvalue()


def phase_timeline_png(
    rows: Sequence[PhaseRow], vocabulary: Sequence[str], *, duration: float
) -> bytes:
    """A ribbon of phases over the case, one colour per phase of the vocabulary.

    Args:
        rows: The phase segments, in time order.
        vocabulary: Every phase the segmenter knows (fixes each phase's colour).
        duration: The case's length in seconds.

    Returns:
        The figure as PNG bytes.
    """
    from matplotlib.figure import Figure
    from matplotlib.patches import Patch

    colours = dict(zip(vocabulary, _colours(len(vocabulary)), strict=True))
    figure = Figure(figsize=(_WIDTH_IN, 1.1))
    ax = figure.subplots()
    for row in rows:
        ax.broken_barh(
            [(row.start, row.end - row.start)],
            (0, 1),
            facecolors=colours.get(row.phase, "#999999"),
            edgecolor="white",
            linewidth=0.8,
        )
    _time_axis(ax, duration)
    ax.set_ylim(0, 1)
    ax.set_yticks([])
    ax.set_title("Phases (phase segmenter)", fontsize=9, loc="left")
    shown = [name for name in vocabulary if any(row.phase == name for row in rows)]
    ax.legend(
        handles=[Patch(facecolor=colours[name], label=name) for name in shown],
        loc="upper center",
        bbox_to_anchor=(0.5, -0.45),
        ncol=min(4, max(1, len(shown))),
        fontsize=7.5,
        frameon=False,
    )
    return _png(figure)


def instrument_timeline_png(
    rows: Sequence[InstrumentRow], class_names: Sequence[str], *, duration: float
) -> bytes:
    """One lane per instrument class, a bar wherever the detector sees it.

    Args:
        rows: The instrument intervals.
        class_names: Every class the detector knows (one lane each, in this order).
        duration: The case's length in seconds.

    Returns:
        The figure as PNG bytes.
    """
    from matplotlib.figure import Figure

    lanes = list(class_names) or sorted({row.instrument for row in rows})
    colours = dict(zip(lanes, _colours(len(lanes)), strict=True))
    figure = Figure(figsize=(_WIDTH_IN, 0.6 + 0.32 * max(1, len(lanes))))
    ax = figure.subplots()
    for lane, name in enumerate(lanes):
        spans = [(r.start, max(r.end - r.start, 0.25)) for r in rows if r.instrument == name]
        if spans:
            ax.broken_barh(spans, (lane - 0.35, 0.7), facecolors=colours[name])
    _time_axis(ax, duration)
    ax.set_ylim(len(lanes) - 0.5, -0.5)
    ax.set_yticks(range(len(lanes)), lanes, fontsize=8)
    ax.set_title("Instruments (detector)", fontsize=9, loc="left")
    return _png(figure)


def annotated_frame_jpeg(
    image_path: Path, boxes: Sequence[BoxLabel], *, max_side: int = 480
) -> bytes:
    """A frame with the detector's boxes and labels drawn on it, as JPEG bytes.

    Args:
        image_path: The frame image (a cached frame of the case).
        boxes: ``(name, confidence, (x1, y1, x2, y2))`` with the box in fractions 0-1.
        max_side: The image is scaled down to fit this side.

    Raises:
        OSError: If the image cannot be read.
    """
    from PIL import Image, ImageDraw, ImageFont

    with Image.open(image_path) as opened:
        image = opened.convert("RGB")
    image.thumbnail((max_side, max_side))
    draw = ImageDraw.Draw(image)
    font = ImageFont.load_default(size=max(10, image.width // 40))
    width, height = image.size
    for k, (name, confidence, (x1, y1, x2, y2)) in enumerate(boxes):
        colour = _BOX_COLOURS[k % len(_BOX_COLOURS)]
        box = (x1 * width, y1 * height, x2 * width, y2 * height)
        draw.rectangle(box, outline=colour, width=2)
        label = f"{name} {confidence:.2f}"
        left, top, right, bottom = draw.textbbox((0, 0), label, font=font)
        y = box[1] - (bottom - top) - 4 if box[1] > (bottom - top) + 4 else box[1]
        draw.rectangle((box[0], y, box[0] + right - left + 4, y + bottom - top + 4), fill=colour)
        draw.text((box[0] + 2, y + 2 - top), label, fill="black", font=font)
    buffer = io.BytesIO()
    image.save(buffer, format="JPEG", quality=85)
    return buffer.getvalue()
