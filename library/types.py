"""The rows the case library keeps, as typed models: one field per column.

A `CaseIndex` is everything indexing learned about one case; the store writes it in one
transaction and reads it back whole.

    record = CaseRecord(id="video01-1a2b3c4d", path=Path("/data/video01.mp4"), ...)
    CaseIndex(case=record, phases=[PhaseSegmentRow(phase="Preparation", start_s=0, end_s=42)])
"""

from __future__ import annotations

from datetime import datetime
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, Field

__all__ = [
    "CaseIndex",
    "CaseRecord",
    "CaseStatus",
    "DetectionSecond",
    "InstrumentIntervalRow",
    "PerceptionAnswerRow",
    "PhaseSegmentRow",
    "SessionRow",
]

CaseStatus = Literal["indexed", "failed"]


class CaseRecord(BaseModel):
    """One case of the library (a row of ``cases``)."""

    id: str = Field(description="case id, <name>-<first 8 hex of the content hash>")
    path: Path = Field(description="the video file or frame folder (resolved)")
    kind: str = Field("", description="'video' or 'frames'; empty when it could not be read")
    content_hash: str | None = None
    stamp: str = Field(description="size and modification times when indexed (change check)")
    index_key: str = Field("", description="what indexing ran (frame rate, engines' weights)")
    procedure: str | None = None
    date: str | None = Field(None, description="ISO date of the operation, from the notes")
    notes: str | None = None
    duration: float | None = Field(None, description="seconds")
    fps: float | None = None
    width: int | None = None
    height: int | None = None
    frames: int | None = Field(None, description="frames sampled into the case cache")
    frames_fps: float | None = Field(None, description="frames sampled per second")
    detector_model: str | None = None
    detector_fps: float | None = Field(None, description="detector samples per second")
    phase_model: str | None = None
    status: CaseStatus
    indexed_at: datetime = Field(description="when this row was written (UTC)")
    index_seconds: float | None = Field(None, description="how long indexing took")
    error: str | None = Field(None, description="why a failed case could not be indexed")


class PhaseSegmentRow(BaseModel):
    """One stretch of a case in one phase (a row of ``phase_segments``)."""

    phase: str
    start_s: float
    end_s: float = Field(description="the segment covers [start_s, end_s)")
    confidence: float | None = None


class InstrumentIntervalRow(BaseModel):
    """A stretch during which one instrument is visible (a row of ``instrument_intervals``)."""

    instrument: str
    start_s: float = Field(description="first sample it is seen in")
    end_s: float = Field(description="last sample it is seen in")
    samples: int = Field(description="samples it is seen in")
    mean_score: float
    best_time_s: float = Field(description="the sample with its most confident detection")
    best_score: float
    best_box: tuple[float, float, float, float] = Field(
        description="x1, y1, x2, y2 of that detection, fractions 0-1"
    )


class DetectionSecond(BaseModel):
    """Detections of one instrument within one second (a row of ``detections_per_second``)."""

    second: int = Field(description="whole seconds from the start: [second, second + 1)")
    instrument: str
    count: int = Field(description="boxes of the instrument over that second's samples")
    max_score: float


class SessionRow(BaseModel):
    """A chat session that discussed a case (a row of ``sessions``)."""

    thread_id: str
    case_id: str
    first_at: datetime = Field(description="its first turn on the case (UTC)")
    last_at: datetime = Field(description="its latest turn on the case (UTC)")
    turns: int = Field(description="questions asked about the case in it")


class PerceptionAnswerRow(BaseModel):
    """A perception answer a session obtained (a row of ``perception_answers``)."""

    case_id: str
    start_s: float
    end_s: float
    task: str
    question: str
    answer: str
    parsed: str | None = Field(None, description="the parsed value, as JSON")
    model: str | None = None
    thread_id: str | None = None
    created_at: datetime


class CaseIndex(BaseModel):
    """Everything the library holds about one case.

    Indexing writes the case and its phases, instruments and detections (`LibraryStore.save`);
    ``sessions`` and ``answers`` are filled by review sessions and only read back here.
    """

    case: CaseRecord
    phases: list[PhaseSegmentRow] = []
    instruments: list[InstrumentIntervalRow] = []
    detections: list[DetectionSecond] = []
    sessions: list[SessionRow] = Field(default=[], description="sessions that discussed it")
    answers: list[PerceptionAnswerRow] = Field(
        default=[], description="perception answers those sessions obtained"
    )
