"""The case report as one self-contained HTML file: figures and frames embedded as data URIs.

Every text that comes from a session, a case or a document is escaped: it is data, never
markup. A content security policy forbids scripts as a second guard. Timestamps link into
the video with media fragments (``video.mp4#t=83.0``).

    Path("report.html").write_text(render_html(report), encoding="utf-8")
"""

from __future__ import annotations

import base64
import html
from importlib import resources

from surgagent.reports.model import SURGEON_MARK, CaseReport, Figure, KeyFrame, Ref, Statement
from surgagent.tools.base import format_time

__all__ = ["render_html"]

_CSP = "default-src 'none'; img-src data:; media-src file: 'self'; style-src 'unsafe-inline'"
_DISCLAIMER = (
    "Draft made by SurgAgent from its tools' outputs and a review session. Every sentence "
    "names its evidence, or is marked {mark}. It is not a clinical record until the surgeon "
    "has checked, completed and signed it."
)


def _e(value: object) -> str:
    return html.escape(str(value), quote=True)


def _time(report: CaseReport, start: float, end: float | None = None) -> str:
    label = format_time(start) + (f"\u2013{format_time(end)}" if end is not None else "")
    link = report.case.link(start)
    if link is None:
        return f'<span class="t">{_e(label)}</span>'
    return f'<a class="t" href="{_e(link)}" title="open the video here">{_e(label)}</a>'


def _ref(report: CaseReport, ref: Ref) -> str:
    if ref.time is None:
        return f'<span class="ref">{_e(ref.label)}</span>'
    span = format_time(ref.time) + (f"-{format_time(ref.end)}" if ref.end is not None else "")
    rest = ref.label.replace(span, "", 1).strip()
    return f'<span class="ref">{_time(report, ref.time, ref.end)} {_e(rest)}</span>'


def _statement(report: CaseReport, statement: Statement) -> str:
    refs = "".join(_ref(report, r) for r in statement.refs)
    mark = f' <span class="surgeon">{_e(SURGEON_MARK)}</span>' if statement.surgeon else ""
    return f"<li>{_e(statement.text)}{mark} {refs}</li>"


def _data_uri(kind: str, data: bytes) -> str:
    return f"data:{kind};base64,{base64.b64encode(data).decode('ascii')}"


def _figure(figure: Figure) -> str:
    if figure.png is None:
        return f'<p class="missing">{_e(figure.missing or "no figure")}</p>'
    return (
        f'<figure class="wide"><img alt="{_e(figure.title)}" '
        f'src="{_data_uri("image/png", figure.png)}"></figure>'
    )


def _meta(report: CaseReport) -> str:
    rows = report.facts()
    cells = "".join(f"<tr><th>{_e(k)}</th><td>{_e(v)}</td></tr>" for k, v in rows)
    return f'<table class="meta">{cells}</table>'


def _tables(report: CaseReport) -> str:
    parts = []
    if report.phases is not None:
        rows = "".join(
            f"<tr><td>{_e(p.phase)}</td><td>{_time(report, p.start)}</td>"
            f"<td>{_time(report, p.end)}</td><td>{format_time(p.end - p.start)}</td>"
            f"<td>{p.confidence:.2f}</td></tr>"
            for p in report.phases
        )
        parts.append(
            "<table><tr><th>phase</th><th>start</th><th>end</th><th>duration</th>"
            f"<th>confidence</th></tr>{rows}</table>"
        )
    if report.instruments is not None:
        rows = "".join(
            f"<tr><td>{_e(i.instrument)}</td><td>{_time(report, i.start)}</td>"
            f"<td>{_time(report, i.end)}</td><td>{i.frames}</td>"
            f"<td>{i.max_confidence:.2f}</td></tr>"
            for i in report.instruments
        )
        parts.append(
            "<table><tr><th>instrument</th><th>from</th><th>to</th><th>samples</th>"
            f"<th>max confidence</th></tr>{rows}</table>"
        )
    return "".join(parts)


def _key_frame(report: CaseReport, frame: KeyFrame) -> str:
    found = frame.found()
    caption = f"{_time(report, frame.time)} {_e('; '.join(frame.reasons))}<br>{_e(found)}"
    if frame.jpeg is None:
        body = f'<p class="missing">{_e(frame.problem or "not shown")}</p>'
    else:
        alt = f"frame at {format_time(frame.time)}"
        body = f'<img alt="{_e(alt)}" src="{_data_uri("image/jpeg", frame.jpeg)}">'
    return f'<figure class="frame">{body}<figcaption>{caption}</figcaption></figure>'


def _link(url: str, text: str) -> str:
    if url.startswith(("https://", "http://")):
        return f'<a href="{_e(url)}" rel="noreferrer">{_e(text)}</a>'
    return _e(text)


def _session(report: CaseReport) -> str:
    if not report.turns:
        return '<p class="missing">No session was given (--session).</p>'
    parts = []
    for item in report.turns:
        warnings = "".join(f'<p class="warning">Unsupported: {_e(w)}</p>' for w in item.warnings)
        evidence = "".join(
            f"<li>{_time(report, ev.time, ev.end) if ev.time is not None else _e(ev.tool)} "
            f"{_e(ev.summary)}</li>"
            for ev in item.evidence
        )
        citations = "".join(
            f"<li><code>{_e(c.passage_id)}</code> {_link(c.url, c.title or c.passage_id)} "
            f"({_e(', '.join(str(x) for x in (c.source, c.year) if x))})</li>"
            for c in item.citations
        )
        parts.append(
            f'<section class="turn"><h3>Turn {item.turn}: {_e(item.question)}</h3>'
            f'<div class="answer">{_e(item.answer)}</div>'
            f'<p class="status">status: {_e(item.status or "not saved")}</p>{warnings}'
            + (f"<h4>Evidence</h4><ul>{evidence}</ul>" if evidence else "")
            + (f"<h4>Guidelines cited</h4><ul>{citations}</ul>" if citations else "")
            + "</section>"
        )
    return "".join(parts)


def render_html(report: CaseReport) -> str:
    """The report as one HTML document, with nothing to fetch but the video it links to."""
    style = resources.files("surgagent.reports").joinpath("report.css").read_text("utf-8")
    note = "".join(
        f'<h3>{_e(s.title)}</h3><ul class="note">'
        + "".join(_statement(report, st) for st in s.statements)
        + "</ul>"
        for s in report.note
    )
    video = ""
    if report.case.video_uri is not None:
        video = (
            f'<video controls preload="metadata" src="{_e(report.case.video_uri)}"></video>'
            '<p class="hint">Times link into the video (media fragments, <code>#t=</code>).</p>'
        )
    frames = "".join(_key_frame(report, f) for f in report.key_frames) or (
        '<p class="missing">No key frames: no engine output or session evidence points at a '
        "moment.</p>"
    )
    body = (
        f"<h1>{_e(report.title)}</h1>{_meta(report)}"
        f'<p class="disclaimer">{_e(_DISCLAIMER.format(mark=SURGEON_MARK))}</p>{video}'
        f"<h2>Operative note (draft)</h2>{note}"
        f"<h2>Timelines</h2>{''.join(_figure(f) for f in report.figures)}{_tables(report)}"
        f'<h2>Key frames</h2><div class="frames">{frames}</div>'
        f"<h2>Review session</h2>{_session(report)}"
    )
    return (
        '<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
        f'<meta http-equiv="Content-Security-Policy" content="{_CSP}">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        f"<title>{_e(report.title)}</title><style>{style}</style></head>"
        f"<body>{body}</body></html>\n"
    )
