"""HTML and images the review page shows: phase ribbon, instrument timeline, answers, evidence.

Pure functions of the agent's public results, so they are tested without a browser. Every
element that stands for a moment carries ``data-seek="<seconds>"`` (in chat answers, whose
HTML is sanitised, a ``#t=<seconds>`` link instead); one script in the page (`SEEK_SCRIPT`)
makes a click on either seek the case video.

    html = phase_ribbon(prediction.segments, duration=prediction.duration)
    markdown = answer_markdown("Clipping starts at [12:05].")
"""

from __future__ import annotations

import html
import re
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from surgagent.tools.base import format_time, parse_time

if TYPE_CHECKING:
    from surgagent.agent.api import AnswerResult

__all__ = [
    "SEEK_SCRIPT",
    "STYLE",
    "answer_markdown",
    "banner",
    "citations_html",
    "evidence_html",
    "instrument_timeline",
    "phase_ribbon",
    "tools_status",
    "trace_markdown",
]

# Cholec80's seven phases get fixed colours; other vocabularies cycle through the palette.
PALETTE = ["#4e79a7", "#f28e2b", "#e15759", "#76b7b2", "#59a14f", "#edc948", "#b07aa1", "#9c755f"]

SEEK_SCRIPT = """
<script>
document.addEventListener("click", (event) => {
  const target = event.target.closest('[data-seek], a[href^="#t="]');
  if (!target) return;
  const video = document.querySelector("#case-video video");
  if (!video) return;
  event.preventDefault();
  event.stopPropagation();
  const seconds = target.dataset.seek ?? target.getAttribute("href").slice(3);
  video.currentTime = parseFloat(seconds);
  document.querySelectorAll(".seek-active").forEach((e) => e.classList.remove("seek-active"));
  target.classList.add("seek-active");
}, true);
</script>
"""

STYLE = """
.ribbon { display: flex; width: 100%; height: 28px; border-radius: 4px; overflow: hidden; }
.ribbon .segment { height: 100%; cursor: pointer; color: white; font-size: 11px;
  overflow: hidden; white-space: nowrap; padding: 6px 4px; box-sizing: border-box; }
.ribbon .segment:hover, .timeline .bar:hover { filter: brightness(1.2); }
.timeline { width: 100%; font-size: 11px; }
.timeline .row { display: flex; align-items: center; height: 18px; margin: 2px 0; }
.timeline .name { width: 90px; flex: none; }
.timeline .track { position: relative; flex: 1; height: 12px; background: #eee; }
.timeline .bar { position: absolute; top: 0; height: 100%; cursor: pointer; }
.seek { color: #1f6feb; cursor: pointer; text-decoration: underline; }
.unavailable { color: #888; font-style: italic; }
.banner { background: #ffe8e6; border: 1px solid #e15759; padding: 8px; border-radius: 4px; }
.tool-on { color: #2e7d32; } .tool-off { color: #888; }
"""

_TIMESTAMP = re.compile(
    r"\[(?:frame )?((?:\d+:)?\d{1,2}:\d{2})(?:-((?:\d+:)?\d{1,2}:\d{2}))?[^\]]*\]"
)


def colour(index: int) -> str:
    """The colour of label ``index``."""
    return PALETTE[index % len(PALETTE)]


def phase_ribbon(segments: Sequence[Any], *, duration: float, vocabulary: Sequence[str]) -> str:
    """Coloured phase segments across the case; a click seeks to the segment's start."""
    if not segments or duration <= 0:
        return '<div class="unavailable">No phases for this case.</div>'
    parts = []
    for segment in segments:
        width = max(0.0, (segment.end - segment.start) / duration * 100)
        index = list(vocabulary).index(segment.phase) if segment.phase in vocabulary else 0
        title = (
            f"{segment.phase} {format_time(segment.start)}-{format_time(segment.end)} "
            f"(confidence {segment.confidence:.2f})"
        )
        label = html.escape(segment.phase) if width > 12 else ""
        parts.append(
            f'<div class="segment" style="width:{width:.3f}%;background:{colour(index)}" '
            f'data-seek="{segment.start:.2f}" data-phase="{html.escape(segment.phase)}" '
            f'title="{html.escape(title)}">{label}</div>'
        )
    return f'<div class="ribbon">{"".join(parts)}</div>'


def instrument_timeline(timeline: Any, *, duration: float) -> str:
    """One row per instrument with a bar per visible interval; a click seeks to its best frame."""
    if timeline is None or duration <= 0:
        return '<div class="unavailable">No instrument timeline for this case.</div>'
    rows = []
    for index, name in enumerate(timeline.class_names):
        bars = []
        for interval in timeline.intervals_of(name):
            left = interval.start / duration * 100
            width = max(0.4, (interval.end - interval.start) / duration * 100)
            title = f"{name} {format_time(interval.start)}-{format_time(interval.end)}"
            bars.append(
                f'<div class="bar" style="left:{left:.3f}%;width:{width:.3f}%;'
                f'background:{colour(index)}" data-seek="{interval.best_time:.2f}" '
                f'data-instrument="{html.escape(name)}" title="{html.escape(title)}"></div>'
            )
        if bars:
            rows.append(
                f'<div class="row"><div class="name">{html.escape(name)}</div>'
                f'<div class="track">{"".join(bars)}</div></div>'
            )
    if not rows:
        return '<div class="unavailable">No instruments detected in this case.</div>'
    return f'<div class="timeline">{"".join(rows)}</div>'


def answer_markdown(text: str) -> str:
    """The answer with every ``[mm:ss]`` (or span, or frame reference) made a seek link."""

    def link(match: re.Match[str]) -> str:
        start = parse_time(match.group(1))
        return f'<a class="seek" href="#t={start:.2f}">{html.escape(match.group(0))}</a>'

    return _TIMESTAMP.sub(link, text)


def evidence_html(result: AnswerResult | None) -> str:
    """The answer's evidence: clickable moments with what each tool found there."""
    if result is None or not result.evidence:
        return '<div class="unavailable">No evidence yet.</div>'
    items = []
    for item in result.evidence:
        if item.kind == "passage":
            continue
        when = ""
        if item.time is not None:
            label = html.escape(item.label())
            when = f'<span class="seek" data-seek="{item.time:.2f}">{label}</span> '
        items.append(f"<li>{when}<b>{html.escape(item.tool)}</b>: {html.escape(item.summary)}</li>")
    return f"<ul>{''.join(items)}</ul>" if items else '<div class="unavailable">No evidence.</div>'


def citations_html(result: AnswerResult | None) -> str:
    """The guideline passages the answer cites, with source and the passage itself."""
    if result is None or not result.citations:
        return '<div class="unavailable">No guideline citations.</div>'
    blocks = []
    for c in result.citations:
        where = ", ".join(str(x) for x in (c.source, c.year, c.section) if x)
        blocks.append(
            f"<details><summary><b>[{html.escape(c.passage_id)}]</b> {html.escape(c.title)} "
            f"<i>({html.escape(where)})</i></summary><p>{html.escape(c.text)}</p></details>"
        )
    warnings = "".join(f"<p class='unavailable'>{html.escape(w)}</p>" for w in result.warnings)
    return "".join(blocks) + warnings


def trace_markdown(result: AnswerResult | None) -> str:
    """The planner's reasoning and every step with its timing, for the collapsible panel."""
    if result is None:
        return "_No answer yet._"
    lines = ["| step | tool | args | seconds | error |", "|---|---|---|---|---|"]
    for step in result.trace:
        args = html.escape(str(step.args or ""))[:120]
        error = html.escape(step.error or "")
        lines.append(
            f"| {step.node} | {step.tool or ''} | {args} | {step.duration_s:.2f} | {error} |"
        )
    reasoning = "\n\n".join(f"> {html.escape(r)}" for r in result.reasoning) or "_none_"
    usage = result.usage
    return (
        "**Reasoning**\n\n" + reasoning + "\n\n**Steps**\n\n" + "\n".join(lines) + "\n\n"
        f"Tokens: {usage.prompt_tokens} in, {usage.completion_tokens} out; "
        f"images: {usage.images}; status: {result.status}"
    )


def tools_status(available: dict[str, bool]) -> str:
    """Which tools this server offers; missing ones are shown as unavailable, not errors."""
    parts = []
    for name, on in available.items():
        mark = "tool-on" if on else "tool-off"
        state = "available" if on else "unavailable (not configured)"
        parts.append(f'<span class="{mark}" data-tool="{name}">{html.escape(name)}: {state}</span>')
    return " &nbsp;|&nbsp; ".join(parts)


def banner(message: str | None) -> str:
    """A visible warning line (a model endpoint that is down, a bad upload), or nothing."""
    return f'<div class="banner" role="alert">{html.escape(message)}</div>' if message else ""


def draw_boxes(frame: Path, boxes: Sequence[tuple[str, tuple[float, float, float, float]]]) -> Any:
    """The frame with labelled boxes (normalised 0-1 corners) drawn on it, as a PIL image."""
    from PIL import Image, ImageDraw

    image = Image.open(frame).convert("RGB")
    draw = ImageDraw.Draw(image)
    width, height = image.size
    for index, (label, (x1, y1, x2, y2)) in enumerate(boxes):
        corners = (x1 * width, y1 * height, x2 * width, y2 * height)
        draw.rectangle(corners, outline=colour(index), width=max(2, width // 200))
        draw.text((corners[0] + 3, corners[1] + 2), label, fill=colour(index))
    return image
