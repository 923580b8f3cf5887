"""Case reports: one typed model of a reviewed case, rendered as markdown, HTML or PDF.

The report holds the phase and instrument timelines (figures), key frames with detections,
the session's questions and answers with their evidence and citations, and an operative-note
draft whose every sentence names its evidence or is marked for the surgeon.

    report = build_report(agent, "video.mp4", thread_id="review-1")
    Path("report.pdf").write_bytes(render_pdf(report))
"""

from surgagent.reports.build import build_report
from surgagent.reports.html import render_html
from surgagent.reports.markdown import markdown_assets, render_markdown
from surgagent.reports.model import CaseReport, NoteSection, Ref, Statement
from surgagent.reports.pdf import render_pdf

__all__ = [
    "CaseReport",
    "NoteSection",
    "Ref",
    "Statement",
    "build_report",
    "markdown_assets",
    "render_html",
    "render_markdown",
    "render_pdf",
]
