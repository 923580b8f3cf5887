"""The case report as one typed model, built once and rendered as markdown, HTML or PDF.

Every sentence of the operative-note draft is a `Statement`: it names its evidence (`Ref`:
a moment or span of the case, a tool output, a guideline passage, a session turn) or is
marked for the surgeon to complete; a statement with neither does not validate.

    Statement(text="ClippingCutting 00:20-00:28", refs=[Ref(kind="time", label="...")])
    Statement(text="Indication.", surgeon=True)
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from surgagent.tools.base import format_time

__all__ = [
    "SURGEON_MARK",
    "AnswerItem",
    "CaseInfo",
    "CaseReport",
    "CitationItem",
    "EngineInfo",
    "EvidenceItem",
    "Figure",
    "InstrumentRow",
    "KeyFrame",
    "NoteSection",
    "PhaseRow",
    "Ref",
    "Statement",
]

SURGEON_MARK = "[surgeon to complete]"
# Pictures are bytes in Python and base64 text in JSON (``--format json``).
_PICTURES = ConfigDict(ser_json_bytes="base64", val_json_bytes="base64")


class Ref(BaseModel):
    """Where a statement comes from, shown next to it.

    ``time``/``end`` place it in the video (the HTML links there); ``label`` is the text
    shown, e.g. ``00:20-00:28 phase segmenter`` or ``passage sages-cvs-2``.
    """

    kind: Literal["time", "tool", "passage", "session"]
    label: str
    time: float | None = None
    end: float | None = None


class Statement(BaseModel):
    """One sentence of the draft: traceable to ``refs`` or marked for the surgeon."""

    text: str
    refs: list[Ref] = Field(default_factory=list)
    surgeon: bool = Field(False, description="needs the surgeon's input (shown with a mark)")

    @model_validator(mode="after")
    def _traceable(self) -> Statement:
        if not self.refs and not self.surgeon:
            raise ValueError(
                f"the statement {self.text!r} names no evidence; give it refs or mark it "
                "surgeon=True"
            )
        return self


class NoteSection(BaseModel):
    """A section of the operative-note draft (procedure, findings, phases, ...)."""

    title: str
    statements: list[Statement]


class EngineInfo(BaseModel):
    """A perception engine the report draws on, or why it could not."""

    role: Literal["detector", "segmenter"]
    model_id: str | None = Field(description="None where the engine is not configured")
    note: str = Field("", description="why there is no output, where there is none")


class PhaseRow(BaseModel):
    """One phase segment, as the segmenter found it."""

    phase: str
    start: float
    end: float
    confidence: float


class InstrumentRow(BaseModel):
    """One interval during which the detector sees an instrument."""

    instrument: str
    start: float
    end: float
    frames: int
    max_confidence: float


class Figure(BaseModel):
    """A figure (PNG), or the sentence saying why there is none."""

    model_config = _PICTURES

    name: str = Field(description="file-safe name, e.g. phase-timeline")
    title: str
    png: bytes | None = None
    missing: str | None = None


class KeyFrame(BaseModel):
    """A frame worth seeing, why it was picked, and what the detector found there."""

    model_config = _PICTURES

    time: float
    reasons: list[str]
    jpeg: bytes | None = None
    detections: list[str] | None = Field(
        None, description="``Name 0.87`` each; None where no detector is configured"
    )
    problem: str | None = Field(None, description="why the frame could not be shown")

    def found(self) -> str:
        """What the detector found here, in words."""
        if self.detections is None:
            return "no detector configured"
        return ", ".join(self.detections) or "no instrument detected"

    @property
    def name(self) -> str:
        """A file-safe name, e.g. ``frame-00m21s``."""
        minutes, seconds = divmod(int(round(self.time)), 60)
        return f"frame-{minutes:02d}m{seconds:02d}s"


class EvidenceItem(BaseModel):
    """One evidence item an answer rested on."""

    kind: str = Field(description="frame, segment, detection or tool_output")
    label: str
    summary: str
    tool: str
    time: float | None = None
    end: float | None = None


class CitationItem(BaseModel):
    """A guideline passage an answer cites."""

    passage_id: str
    title: str = ""
    source: str = ""
    year: int | None = None
    url: str = ""


class AnswerItem(BaseModel):
    """A question of the session, its answer, and what the answer rests on."""

    turn: int = Field(description="1-based")
    question: str
    answer: str
    status: str | None = Field(description="None where the answer was never saved")
    evidence: list[EvidenceItem] = Field(default_factory=list)
    citations: list[CitationItem] = Field(default_factory=list)
    warnings: list[str] = Field(default_factory=list)


class CaseInfo(BaseModel):
    """The case as probed: source, size, timing and content hash."""

    id: str
    source: str
    kind: Literal["video", "frames"]
    duration: float
    fps: float
    width: int
    height: int
    content_hash: str
    video_uri: str | None = Field(description="file URI timestamps link to (videos only)")

    def link(self, seconds: float) -> str | None:
        """The URI that opens the video at ``seconds`` (a media fragment), if a video."""
        if self.video_uri is None:
            return None
        return f"{self.video_uri}#t={seconds:.1f}"


class CaseReport(BaseModel):
    """Everything a case report shows, in the order the renderers show it."""

    title: str
    created: str = Field(description="ISO time the report was made")
    version: str = Field(description="surgagent version that made it")
    case: CaseInfo
    session_id: str | None
    engines: list[EngineInfo]
    note: list[NoteSection]
    figures: list[Figure]
    phases: list[PhaseRow] | None = Field(description="None without a phase segmenter")
    instruments: list[InstrumentRow] | None = Field(description="None without a detector")
    key_frames: list[KeyFrame]
    turns: list[AnswerItem]

    def facts(self) -> list[tuple[str, str]]:
        """The report's heading table: the case, its source, length, hash, session, engines."""
        case = self.case
        engines = "; ".join(
            f"{e.role}: {e.model_id}" if e.model_id else f"{e.role}: {e.note}" for e in self.engines
        )
        return [
            ("Case", f"{case.id} ({case.kind})"),
            ("Source", case.source),
            (
                "Length",
                f"{format_time(case.duration)} at {case.fps:g} fps, {case.width}x{case.height}",
            ),
            ("Content hash", case.content_hash),
            ("Session", self.session_id or "none"),
            ("Engines", engines),
            ("Made", f"{self.created} by surgagent {self.version}"),
        ]

    def span(self, start: float, end: float | None = None) -> str:
        """``mm:ss`` or ``mm:ss-mm:ss``."""
        text = format_time(start)
        return f"{text}-{format_time(end)}" if end is not None else text
