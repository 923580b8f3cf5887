"""The case report as markdown: tables and text, with figures and frames as linked files.

Text from a session or a case's notes is data: ``<``, ``>`` and ``&`` are written as
entities, so a markdown viewer shows an answer's ``<script>`` instead of running it.

    text = render_markdown(report, assets="report_files")
    for name, data in markdown_assets(report).items(): (folder / name).write_bytes(data)
"""

from __future__ import annotations

import html

from surgagent.reports.model import SURGEON_MARK, CaseReport, Ref, Statement
from surgagent.tools.base import format_time

__all__ = ["markdown_assets", "render_markdown"]

_DISCLAIMER = (
    "Draft made by SurgAgent from its tools' outputs and a review session. Every sentence "
    "names its evidence in brackets, or is marked **{mark}**. It is not a clinical record until "
    "the surgeon has checked, completed and signed it."
)


def _text(value: str) -> str:
    """Session or document text, made inert for markdown viewers (one line)."""
    return html.escape(" ".join(value.split()), quote=False)


def _time(report: CaseReport, start: float, end: float | None = None) -> str:
    label = format_time(start) + (f"-{format_time(end)}" if end is not None else "")
    link = report.case.link(start)
    return f"[{label}]({link})" if link else label


def _ref(report: CaseReport, ref: Ref) -> str:
    if ref.time is None:
        return _text(ref.label)
    label = _text(ref.label)
    span = format_time(ref.time) + (f"-{format_time(ref.end)}" if ref.end is not None else "")
    link = report.case.link(ref.time)
    return label.replace(span, f"[{span}]({link})", 1) if link and span in label else label


def _statement(report: CaseReport, statement: Statement) -> str:
    line = f"- {_text(statement.text)}"
    if statement.refs:
        line += " \u2014 " + "; ".join(f"[{_ref(report, r)}]" for r in statement.refs)
    if statement.surgeon:
        line += f" **{SURGEON_MARK}**"
    return line


def markdown_assets(report: CaseReport) -> dict[str, bytes]:
    """The figure and frame files a markdown report links to, by file name."""
    files = {f"{f.name}.png": f.png for f in report.figures if f.png}
    files.update({f"{k.name}.jpg": k.jpeg for k in report.key_frames if k.jpeg})
    return files


def _meta(report: CaseReport) -> list[str]:
    case = report.case
    engines = ", ".join(
        f"{e.role}: {e.model_id}" if e.model_id else f"{e.role}: {e.note}" for e in report.engines
    )
    return [
        f"- Case: `{case.id}` ({case.kind} {_text(case.source)})",
        f"- Length: {format_time(case.duration)} at {case.fps:g} fps, {case.width}x{case.height}",
        f"- Content hash: `{case.content_hash}`",
        f"- Session: {_text(report.session_id) if report.session_id else 'none'}",
        f"- Engines: {_text(engines)}",
        f"- Made {report.created} by surgagent {report.version}",
    ]


def _tables(report: CaseReport, assets: str | None) -> list[str]:
    lines = ["## Timelines", ""]
    for figure in report.figures:
        if figure.png and assets is not None:
            lines += [f"![{figure.title}]({assets}/{figure.name}.png)", ""]
        elif figure.missing:
            lines += [f"*{_text(figure.missing)}*", ""]
    if report.phases is not None:
        lines += ["| phase | start | end | duration | confidence |", "|---|---|---|---|---|"]
        lines += [
            f"| {_text(p.phase)} | {_time(report, p.start)} | {_time(report, p.end)} | "
            f"{format_time(p.end - p.start)} | {p.confidence:.2f} |"
            for p in report.phases
        ]
        lines.append("")
    if report.instruments is not None:
        lines += ["| instrument | from | to | samples | max confidence |", "|---|---|---|---|---|"]
        lines += [
            f"| {_text(i.instrument)} | {_time(report, i.start)} | {_time(report, i.end)} | "
            f"{i.frames} | {i.max_confidence:.2f} |"
            for i in report.instruments
        ]
        lines.append("")
    return lines


def _frames(report: CaseReport, assets: str | None) -> list[str]:
    lines = ["## Key frames", ""]
    if not report.key_frames:
        lines += ["*No key frames: no engine output or session evidence points at a moment.*", ""]
    for frame in report.key_frames:
        found = frame.found()
        lines.append(
            f"- {_time(report, frame.time)}: {_text('; '.join(frame.reasons))} ({_text(found)})"
        )
        if frame.problem:
            lines.append(f"  *{_text(frame.problem)}*")
        elif frame.jpeg and assets is not None:
            lines.append(f"  ![frame at {format_time(frame.time)}]({assets}/{frame.name}.jpg)")
    return [*lines, ""] if report.key_frames else lines


def _session(report: CaseReport) -> list[str]:
    lines = ["## Review session", ""]
    if not report.turns:
        return [*lines, "*No session was given (--session).*", ""]
    for item in report.turns:
        lines += [f"### Turn {item.turn}: {_text(item.question)}", ""]
        lines += [f"> {html.escape(line, quote=False)}" for line in item.answer.splitlines()]
        lines += ["", f"Status: {item.status or 'not saved'}", ""]
        lines += [f"> **Unsupported:** {_text(w)}" for w in item.warnings]
        if item.evidence:
            lines += ["Evidence:", ""]
            for e in item.evidence:
                where = _time(report, e.time, e.end) if e.time is not None else e.tool
                lines.append(f"- {where} {_text(e.summary)}")
            lines.append("")
        if item.citations:
            lines += ["Guidelines cited:", ""]
            for c in item.citations:
                where = ", ".join(str(x) for x in (c.source, c.year) if x)
                lines.append(f"- `{_text(c.passage_id)}` {_text(c.title)} ({_text(where)})")
            lines.append("")
    return lines


def render_markdown(report: CaseReport, *, assets: str | None = None) -> str:
    """The report as markdown.

    Args:
        report: The report.
        assets: The folder (relative to the markdown file) holding `markdown_assets`; None
            leaves the pictures out (the tables carry the same times).
    """
    lines = [f"# {_text(report.title)}", "", *_meta(report), ""]
    lines += [f"> {_DISCLAIMER.format(mark=SURGEON_MARK)}", "", "## Operative note (draft)", ""]
    for section in report.note:
        lines += [f"### {section.title}", ""]
        lines += [_statement(report, s) for s in section.statements]
        lines.append("")
    lines += _tables(report, assets)
    lines += _frames(report, assets)
    lines += _session(report)
    return "\n".join(lines).rstrip() + "\n"
