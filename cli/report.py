"""``surgagent report``: a case report as markdown, self-contained HTML, PDF or JSON.

Markdown, HTML and JSON go to stdout unless ``--out`` names a file; a PDF goes to ``--out``
or, without it, to ``<case id>-report.pdf`` in the current folder. A markdown file written
with ``--out`` gets its figures and frames in a folder beside it (``<name>_files/``).

surgagent report video.mp4 --session review-1 --format html --out review-1.html
surgagent report video.mp4 --format pdf
"""

from __future__ import annotations

import sys
from enum import StrEnum
from pathlib import Path
from typing import Annotated

import typer

from surgagent.cli._shared import err_console

__all__ = ["ReportFormat", "report"]


class ReportFormat(StrEnum):
    """Formats of ``surgagent report``."""

    md = "md"
    html = "html"
    pdf = "pdf"
    json = "json"


def _write(path: Path, data: bytes) -> None:
    from surgagent.agent.errors import UserError
    from surgagent.tools.cache import atomic_write_bytes

    try:
        atomic_write_bytes(path, data)
    except OSError as error:
        reason = error.strerror or str(error)
        raise UserError(f"cannot write {path} ({reason}); choose another --out file") from error


def report(
    case: Annotated[str, typer.Argument(help="A video file, a frame folder or a case id.")],
    session: Annotated[
        str | None,
        typer.Option("--session", "-s", help="A saved session about the case (chat --session)."),
    ] = None,
    format: Annotated[
        ReportFormat, typer.Option("--format", "-f", help="md, html (one file), pdf or json.")
    ] = ReportFormat.md,
    out: Annotated[
        Path | None,
        typer.Option("--out", "-o", help="Write here (default stdout; pdf: <case>-report.pdf)."),
    ] = None,
    frames: Annotated[int, typer.Option("--frames", min=0, help="Most key frames shown.")] = 8,
) -> None:
    """Write a case report: timelines, key frames, the session's answers, a note draft.

    Phases and instruments come from the configured engines (phase.weights, detector.weights).

    Where an engine is not configured, the report says so instead of showing its figure.

    Every sentence of the operative-note draft names its evidence or is marked for the surgeon.

    Example: surgagent report video.mp4 --session review-1 --format pdf --out review-1.pdf
    """
    from surgagent.agent.api import SurgicalAgent
    from surgagent.agent.settings import get_settings
    from surgagent.reports import build_report, markdown_assets, render_html, render_markdown

    agent = SurgicalAgent.from_settings(get_settings(), sessions="sqlite", check=False)
    made = build_report(agent, case, thread_id=session, max_frames=frames)
    if format is ReportFormat.pdf:
        from surgagent.reports import render_pdf

        target = out or Path(f"{made.case.id}-report.pdf")
        _write(target, render_pdf(made))
        err_console.print(f"wrote {target}", highlight=False, markup=False)
        return
    if format is ReportFormat.json:
        text = made.model_dump_json(indent=2) + "\n"
    elif format is ReportFormat.html:
        text = render_html(made)
    else:
        assets = f"{out.stem}_files" if out is not None else None
        text = render_markdown(made, assets=assets)
        if out is not None:
            for name, data in markdown_assets(made).items():
                _write(out.parent / f"{out.stem}_files" / name, data)
    if out is None:
        sys.stdout.write(text)
        return
    _write(out, text.encode("utf-8"))
    err_console.print(f"wrote {out}", highlight=False, markup=False)
