"""The case report as PDF, laid out from the report model with reportlab's platypus.

Text is set in DejaVu Sans (the copy matplotlib ships), so answers in any Latin, Greek or
Cyrillic script print; every text is escaped for reportlab's paragraph markup.

    Path("report.pdf").write_bytes(render_pdf(report))
"""

from __future__ import annotations

import html
import io
import logging
from collections.abc import Sequence
from functools import cache
from pathlib import Path
from typing import Any

from surgagent.reports.model import SURGEON_MARK, CaseReport, KeyFrame, Ref, Statement
from surgagent.tools.base import format_time

__all__ = ["render_pdf"]

log = logging.getLogger(__name__)

_MARGIN_MM = 16
_DISCLAIMER = (
    "Draft made by SurgAgent from its tools' outputs and a review session. Every sentence "
    "names its evidence in grey, or is marked {mark}. It is not a clinical record until the "
    "surgeon has checked, completed and signed it."
)


def _x(value: object) -> str:
    """Text escaped for a reportlab paragraph."""
    return html.escape(str(value), quote=True)


@cache
def _fonts() -> tuple[str, str]:
    """Regular and bold font names: DejaVu Sans where matplotlib ships it, else Helvetica."""
    import matplotlib
    from reportlab.pdfbase import pdfmetrics
    from reportlab.pdfbase.ttfonts import TTFError, TTFont

    folder = Path(matplotlib.get_data_path()) / "fonts" / "ttf"
    faces = {
        "DejaVuSans": "DejaVuSans.ttf",
        "DejaVuSans-Bold": "DejaVuSans-Bold.ttf",
        "DejaVuSans-Oblique": "DejaVuSans-Oblique.ttf",
        "DejaVuSans-BoldOblique": "DejaVuSans-BoldOblique.ttf",
    }
    try:
        for name, file in faces.items():
            pdfmetrics.registerFont(TTFont(name, str(folder / file)))
    except (TTFError, OSError) as error:
        log.warning("DejaVu Sans not usable (%s); the PDF falls back to Helvetica", error)
        return "Helvetica", "Helvetica-Bold"
    # <b> and <i> in paragraphs pick these faces
    pdfmetrics.registerFontFamily(
        "DejaVuSans",
        normal="DejaVuSans",
        bold="DejaVuSans-Bold",
        italic="DejaVuSans-Oblique",
        boldItalic="DejaVuSans-BoldOblique",
    )
    return "DejaVuSans", "DejaVuSans-Bold"


def _styles() -> dict[str, Any]:
    from reportlab.lib.colors import HexColor
    from reportlab.lib.styles import ParagraphStyle

    regular, bold = _fonts()
    base = ParagraphStyle("body", fontName=regular, fontSize=9.5, leading=12.5, spaceAfter=3)
    return {
        "body": base,
        "title": ParagraphStyle("title", base, fontName=bold, fontSize=17, leading=21),
        "h2": ParagraphStyle(
            "h2", base, fontName=bold, fontSize=13, leading=16, spaceBefore=10, keepWithNext=1
        ),
        "h3": ParagraphStyle(
            "h3", base, fontName=bold, fontSize=10.5, leading=13, spaceBefore=6, keepWithNext=1
        ),
        "item": ParagraphStyle("item", base, leftIndent=10, bulletIndent=0),
        "small": ParagraphStyle("small", base, fontSize=8, leading=10),
        "note": ParagraphStyle(
            "note", base, backColor=HexColor("#fff8e1"), borderPadding=4, spaceAfter=8
        ),
        "bold": ParagraphStyle("bold", base, fontName=bold),
    }


def _time(report: CaseReport, start: float, end: float | None = None) -> str:
    label = format_time(start) + (f"-{format_time(end)}" if end is not None else "")
    link = report.case.link(start)
    return f'<a href="{_x(link)}" color="#1a56b0">{_x(label)}</a>' if link else _x(label)


def _ref(report: CaseReport, ref: Ref) -> str:
    if ref.time is None:
        return _x(ref.label)
    span = format_time(ref.time) + (f"-{format_time(ref.end)}" if ref.end is not None else "")
    rest = ref.label.replace(span, "", 1).strip()
    return f"{_time(report, ref.time, ref.end)} {_x(rest)}".strip()


def _statement(report: CaseReport, statement: Statement) -> str:
    text = _x(statement.text)
    if statement.surgeon:
        text += f' <font color="#b00020"><b>{_x(SURGEON_MARK)}</b></font>'
    if statement.refs:
        refs = "; ".join(_ref(report, r) for r in statement.refs)
        text += f' <font color="#666666" size="8">[{refs}]</font>'
    return text


def _image(data: bytes, width: float) -> Any:
    from reportlab.lib.utils import ImageReader
    from reportlab.platypus import Image

    w, h = ImageReader(io.BytesIO(data)).getSize()
    return Image(io.BytesIO(data), width=width, height=width * h / w)


def _table(rows: list[list[Any]], widths: list[float] | None = None, header: bool = True) -> Any:
    from reportlab.lib.colors import HexColor
    from reportlab.platypus import Table, TableStyle

    table = Table(rows, colWidths=widths, repeatRows=1 if header else 0, hAlign="LEFT")
    style = [
        ("GRID", (0, 0), (-1, -1), 0.4, HexColor("#cccccc")),
        ("VALIGN", (0, 0), (-1, -1), "TOP"),
    ]
    if header:
        style.append(("BACKGROUND", (0, 0), (-1, 0), HexColor("#f0f0f3")))
    table.setStyle(TableStyle(style))
    return table


def _meta(report: CaseReport, s: dict[str, Any], width: float) -> list[Any]:
    from reportlab.lib.styles import ParagraphStyle
    from reportlab.lib.units import mm
    from reportlab.platypus import Paragraph, Spacer

    rows = report.facts()
    label = ParagraphStyle("label", s["small"], fontName=_fonts()[1])
    cells = [[Paragraph(_x(k), label), Paragraph(_x(v), s["small"])] for k, v in rows]
    return [_table(cells, [26 * mm, width - 26 * mm], header=False), Spacer(1, 8)]


def _timelines(report: CaseReport, s: dict[str, Any], width: float) -> list[Any]:
    from reportlab.platypus import Paragraph, Spacer

    out: list[Any] = [Paragraph("Timelines", s["h2"])]
    for figure in report.figures:
        if figure.png:
            out += [_image(figure.png, width), Spacer(1, 4)]
        else:
            out.append(Paragraph(f"<i>{_x(figure.missing)}</i>", s["body"]))
    widths = [width * f for f in (0.4, 0.15, 0.15, 0.15, 0.15)]
    if report.phases:
        rows = [("phase", "start", "end", "duration", "confidence")]
        rows += [
            (_x(r.phase), _time(report, r.start), _time(report, r.end),
             format_time(r.end - r.start), f"{r.confidence:.2f}")
            for r in report.phases
        ]  # fmt: skip
        out += [_cells(rows, s, widths), Spacer(1, 6)]
    if report.instruments:
        rows = [("instrument", "from", "to", "samples", "max confidence")]
        rows += [
            (_x(r.instrument), _time(report, r.start), _time(report, r.end), str(r.frames),
             f"{r.max_confidence:.2f}")
            for r in report.instruments
        ]  # fmt: skip
        out.append(_cells(rows, s, widths))
    return out


def _cells(rows: Sequence[Sequence[str]], s: dict[str, Any], widths: list[float]) -> Any:
    """A table of paragraph markup, the first row its header."""
    from reportlab.platypus import Paragraph

    head, *body = rows
    cells = [[Paragraph(f"<b>{h}</b>", s["small"]) for h in head]]
    cells += [[Paragraph(text, s["small"]) for text in row] for row in body]
    return _table(cells, widths)


def _frame_cell(report: CaseReport, frame: KeyFrame, s: dict[str, Any], width: float) -> list[Any]:
    from reportlab.platypus import Paragraph

    found = frame.found()
    caption = f"{_time(report, frame.time)} {_x('; '.join(frame.reasons))}<br/>{_x(found)}"
    picture = (
        _image(frame.jpeg, width)
        if frame.jpeg
        else Paragraph(f"<i>{_x(frame.problem or 'not shown')}</i>", s["small"])
    )
    return [picture, Paragraph(caption, s["small"])]


def _key_frames(report: CaseReport, s: dict[str, Any], width: float) -> list[Any]:
    from reportlab.platypus import Paragraph, Table

    out: list[Any] = [Paragraph("Key frames", s["h2"])]
    if not report.key_frames:
        return [*out, Paragraph("<i>No key frames.</i>", s["body"])]
    per_row = 3
    cell = width / per_row - 6
    cells = [_frame_cell(report, f, s, cell) for f in report.key_frames]
    for k in range(0, len(cells), per_row):  # one table a row: rows break across pages
        row = cells[k : k + per_row]
        row += [[]] * (per_row - len(row))
        out.append(Table([row], colWidths=[cell + 6] * per_row, hAlign="LEFT"))
    return out


def _session(report: CaseReport, s: dict[str, Any]) -> list[Any]:
    from reportlab.platypus import Paragraph

    out: list[Any] = [Paragraph("Review session", s["h2"])]
    if not report.turns:
        return [*out, Paragraph("<i>No session was given (--session).</i>", s["body"])]
    for item in report.turns:
        out.append(Paragraph(f"Turn {item.turn}: {_x(item.question)}", s["h3"]))
        answer = "<br/>".join(_x(line) for line in item.answer.splitlines())
        out.append(Paragraph(answer or "<i>no answer</i>", s["body"]))
        out.append(Paragraph(f"status: {_x(item.status or 'not saved')}", s["small"]))
        for warning in item.warnings:
            text = f'<font color="#8a4b00">Unsupported: {_x(warning)}</font>'
            out.append(Paragraph(text, s["small"]))
        if item.evidence:
            out.append(Paragraph("<b>Evidence</b>", s["small"]))
        for e in item.evidence:
            where = _time(report, e.time, e.end) if e.time is not None else _x(e.tool)
            out.append(Paragraph(f"{where} {_x(e.summary)}", s["item"], bulletText="\u2022"))
        if item.citations:
            out.append(Paragraph("<b>Guidelines cited</b>", s["small"]))
        for c in item.citations:
            where = ", ".join(str(x) for x in (c.source, c.year) if x)
            text = f"passage {_x(c.passage_id)}: {_x(c.title)} ({_x(where)})"
            out.append(Paragraph(text, s["item"], bulletText="\u2022"))
    return out


def render_pdf(report: CaseReport) -> bytes:
    """The report as a PDF document (A4), returned as bytes."""
    from reportlab.lib.pagesizes import A4
    from reportlab.lib.units import mm
    from reportlab.platypus import Paragraph, SimpleDocTemplate

    s = _styles()
    regular, _ = _fonts()
    buffer = io.BytesIO()
    doc = SimpleDocTemplate(
        buffer,
        pagesize=A4,
        leftMargin=_MARGIN_MM * mm,
        rightMargin=_MARGIN_MM * mm,
        topMargin=_MARGIN_MM * mm,
        bottomMargin=_MARGIN_MM * mm,
        title=report.title,
        author=f"surgagent {report.version}",
        subject="case report draft",
    )
    width = doc.width
    story: list[Any] = [Paragraph(_x(report.title), s["title"]), *_meta(report, s, width)]
    story.append(Paragraph(_x(_DISCLAIMER.format(mark=SURGEON_MARK)), s["note"]))
    story.append(Paragraph("Operative note (draft)", s["h2"]))
    for section in report.note:
        story.append(Paragraph(_x(section.title), s["h3"]))
        story += [
            Paragraph(_statement(report, st), s["item"], bulletText="\u2022")
            for st in section.statements
        ]
    story += _timelines(report, s, width)
    story += _key_frames(report, s, width)
    story += _session(report, s)

    def footer(canvas: Any, document: Any) -> None:
        canvas.saveState()
        canvas.setFont(regular, 7.5)
        canvas.setFillGray(0.4)
        text = f"{report.title} \u2014 draft for the surgeon's review \u2014 page {document.page}"
        canvas.drawString(_MARGIN_MM * mm, 9 * mm, text)
        canvas.restoreState()

    doc.build(story, onFirstPage=footer, onLaterPages=footer)
    return buffer.getvalue()
