"""HTML and images the review page shows: phase ribbon, instrument timeline, answers, evidence.

Pure functions of the agent's public results, so they are tested without a browser. Every
element that stands for a moment carries ``data-seek="<seconds>"`` (in chat answers, whose
HTML is sanitised, a ``#t=<seconds>`` link instead); one script in the page (`SEEK_SCRIPT`)
makes a click on either seek the case video.

    html = phase_ribbon(prediction.segments, duration=prediction.duration)
    markdown = answer_markdown("Clipping starts at [12:05].")
"""

from __future__ import annotations

import hashlib
import html
import re
import statistics
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from surgagent.tools.base import format_time, parse_time

if TYPE_CHECKING:
    from surgagent.agent.api import AnswerResult
    from surgagent.tools.library.types import CohortTable

__all__ = [
    "SEEK_AFTER_OPEN",
    "SEEK_SCRIPT",
    "STYLE",
    "answer_markdown",
    "banner",
    "citations_html",
    "cohort_answer_markdown",
    "cohort_plot",
    "cohort_table",
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
  // A case of the library (a cohort row or point, a [case-id mm:ss] link): ask the server to
  // open it, through the hidden #library-open box; it answers with the time to seek to.
  const opener = event.target.closest('[data-case], a[href^="#case="]');
  if (opener) {
    event.preventDefault();
    event.stopPropagation();
    const asked = opener.dataset.case
      ? `${opener.dataset.case} ${opener.dataset.seek ?? 0}`
      : decodeURIComponent(opener.getAttribute("href").slice(6)).replace("@", " ");
    const shown = document.querySelector("#case-video video");
    window.surgagentOpenedFrom = shown ? shown.currentSrc : "";
    const box = document.querySelector("#library-open textarea, #library-open input");
    if (!box) return;
    box.value = `${asked} ${Date.now()}`;
    box.dispatchEvent(new Event("input", { bubbles: true }));
    return;
  }
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
.cohort-plot .pt { cursor: pointer; stroke: white; stroke-width: 1; }
.cohort-plot .pt:hover { r: 6; }
.cohort-table { border-collapse: collapse; font-size: 12px; width: 100%; }
.cohort-table td, .cohort-table th { padding: 2px 8px; border-bottom: 1px solid #eee;
  text-align: left; }
.cohort-table tr[data-case] { cursor: pointer; }
.cohort-table tr[data-case]:hover { background: #eef4ff; }
#library-open { display: none; }
"""

# Seeks the case video once the case a cohort click opened has loaded (or at once when the
# same video stays): the server answers the click with "<seconds> <nonce>".
SEEK_AFTER_OPEN = """
(asked) => {
  if (!asked) return;
  const seconds = parseFloat(asked);
  const from = window.surgagentOpenedFrom || "";
  const started = Date.now();
  const seek = () => {
    const video = document.querySelector("#case-video video");
    const waited = Date.now() - started;
    const loaded = video && video.readyState >= 1;
    if (loaded && (video.currentSrc !== from || waited > 1500)) {
      video.currentTime = seconds;
      return;
    }
    if (waited < 15000) setTimeout(seek, 100);
  };
  seek();
}
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


# -- the cohort view ---------------------------------------------------------------------------

_LIBRARY_CITATION = re.compile(
    r"\[([A-Za-z0-9][A-Za-z0-9._-]*) ((?:\d+:)?\d{1,2}:\d{2})(?:-(?:\d+:)?\d{1,2}:\d{2})?\]"
)
_PLOT_LABEL_W, _PLOT_W, _ROW_H, _AXIS_H = 190, 520, 34, 26


def cohort_answer_markdown(text: str, case_ids: Sequence[str]) -> str:
    """A library answer with each ``[case-id mm:ss]`` of a known case made a link opening it."""
    known = set(case_ids)

    def link(match: re.Match[str]) -> str:
        if match.group(1) not in known:
            return match.group(0)
        start = parse_time(match.group(2))
        target = f"#case={match.group(1)}@{start:.2f}"
        return f'<a class="seek" href="{html.escape(target)}">{html.escape(match.group(0))}</a>'

    return _LIBRARY_CITATION.sub(link, text)


def _case_attrs(case_id: str, seconds: float | None) -> str:
    return f'data-case="{html.escape(case_id)}" data-seek="{(seconds or 0.0):.2f}"'


def cohort_plot(table: CohortTable) -> str:
    """A horizontal box plot per group (phase or instrument) with a point per case, as SVG.

    Boxes span the quartiles with the median marked and whiskers to the extremes; a click on
    a point opens its case at the row's time.
    """
    drawn = [
        (group.name, [r for r in table.rows if r.group == group.name and r.value is not None])
        for group in table.groups
    ]
    drawn = [(name, rows) for name, rows in drawn if rows]
    if not drawn:
        return '<div class="unavailable">No case of the library has this measure.</div>'
    top = max(r.value or 0.0 for _, rows in drawn for r in rows) or 1.0
    height = len(drawn) * _ROW_H + _AXIS_H

    def x(seconds: float) -> float:
        return _PLOT_LABEL_W + seconds / top * _PLOT_W

    parts = []
    for index, (name, rows) in enumerate(drawn):
        values = sorted(r.value or 0.0 for r in rows)
        q1, median, q3 = _quartiles(values)
        mid = index * _ROW_H + _ROW_H / 2
        ink = colour(index)
        parts.append(
            f'<text x="{_PLOT_LABEL_W - 6}" y="{mid + 4:.1f}" text-anchor="end">'
            f"{html.escape(name)} (n={len(values)})</text>"
            f'<line x1="{x(values[0]):.1f}" x2="{x(values[-1]):.1f}" y1="{mid:.1f}" '
            f'y2="{mid:.1f}" stroke="#888"/>'
            f'<rect x="{x(q1):.1f}" y="{mid - 9:.1f}" width="{max(1.0, x(q3) - x(q1)):.1f}" '
            f'height="18" fill="{ink}" fill-opacity="0.25" stroke="{ink}"/>'
            f'<line x1="{x(median):.1f}" x2="{x(median):.1f}" y1="{mid - 9:.1f}" '
            f'y2="{mid + 9:.1f}" stroke="{ink}" stroke-width="2"/>'
        )
        for row in rows:
            jitter = int(hashlib.sha1(row.case_id.encode()).hexdigest()[:4], 16) / 0xFFFF - 0.5
            title = f"{row.case_id}: {format_time(row.value or 0.0)}"
            if row.span():
                title += f" (at {row.span()})"
            parts.append(
                f'<circle class="pt" cx="{x(row.value or 0.0):.1f}" cy="{mid + jitter * 12:.1f}" '
                f'r="4" fill="{ink}" {_case_attrs(row.case_id, row.start_s)}>'
                f"<title>{html.escape(title)}</title></circle>"
            )
    axis_y = len(drawn) * _ROW_H + 4
    for k in range(5):
        seconds = top * k / 4
        parts.append(
            f'<line x1="{x(seconds):.1f}" x2="{x(seconds):.1f}" y1="0" y2="{axis_y:.1f}" '
            f'stroke="#ddd"/><text x="{x(seconds):.1f}" y="{axis_y + 14:.1f}" '
            f'text-anchor="middle">{format_time(seconds)}</text>'
        )
    width = _PLOT_LABEL_W + _PLOT_W + 30
    return (
        f'<svg class="cohort-plot" viewBox="0 0 {width} {height}" width="100%" '
        f'font-size="11" role="img" aria-label="box plot per case">{"".join(parts)}</svg>'
    )


def _quartiles(values: Sequence[float]) -> tuple[float, float, float]:
    if len(values) == 1:
        return values[0], values[0], values[0]
    q1, median, q3 = statistics.quantiles(values, n=4, method="inclusive")
    return q1, median, q3


def cohort_table(table: CohortTable, *, what: str) -> str:
    """Every case's row, a group (phase or instrument) at a time; a click opens the case there."""
    lines = []
    for group in table.groups:
        name, stats = group.name, group.stats
        rows = [row for row in table.rows if row.group == name]
        summary = f"n={stats.count}"
        if stats.median is not None:
            summary += f", median {format_time(stats.median)}"
        if stats.min is not None and stats.max is not None:
            summary += (
                f", min {format_time(stats.min)} ({stats.min_case}), "
                f"max {format_time(stats.max)} ({stats.max_case})"
            )
        lines.append(
            f'<tr><th colspan="3">{html.escape(name)} <span class="unavailable">'
            f"{html.escape(summary)}</span></th></tr>"
        )
        for row in rows:
            value = format_time(row.value) if row.value is not None else html.escape(row.text or "")
            lines.append(
                f"<tr {_case_attrs(row.case_id, row.start_s)}><td>{html.escape(row.case_id)}</td>"
                f"<td>{value}</td><td>{html.escape(row.span())}</td></tr>"
            )
    if not lines:
        return '<div class="unavailable">No case of the library has this measure.</div>'
    head = f"<tr><th>case</th><th>{html.escape(what)}</th><th>at</th></tr>"
    return f'<table class="cohort-table">{head}{"".join(lines)}</table>'
