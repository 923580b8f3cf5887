"""What the phase segmenter returns: segments, a whole-case prediction, tool results.

prediction.phase_at(65.0)  # "CalotTriangleDissection"
prediction.segments[0]  # PhaseSegment(phase="Preparation", start=0.0, end=42.0, ...)
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, Field, computed_field

from surgagent.tools.base import Evidence, ToolResult, format_time

__all__ = [
    "PhaseAtResult",
    "PhasePrediction",
    "PhaseSegment",
    "PhaseSegmentsResult",
]


class PhaseSegment(BaseModel):
    """One stretch of the case in a single phase."""

    phase: str
    start: float = Field(description="seconds from the start of the case")
    end: float = Field(description="seconds; the segment covers [start, end)")
    confidence: float = Field(description="mean probability of the phase over the segment")

    @computed_field  # type: ignore[prop-decorator]
    @property
    def duration(self) -> float:
        """Length in seconds."""
        return self.end - self.start

    def describe(self) -> str:
        """``Name 05:10-20:45 (15:35, conf 0.91)``."""
        return (
            f"{self.phase} {format_time(self.start)}-{format_time(self.end)} "
            f"({format_time(self.duration)}, conf {self.confidence:.2f})"
        )


class PhasePrediction(BaseModel):
    """A case's phases: segments plus the per-sample labels and probabilities behind them."""

    case_id: str
    model_id: str
    vocabulary: list[str]
    fps: float = Field(description="samples per second of labels and probabilities")
    duration: float
    smoothed: bool = Field(description="whether Viterbi decoding with the transition prior ran")
    segments: list[PhaseSegment]
    labels: list[int] = Field(description="phase index per sample (sample k: k / fps s)")
    probabilities: list[list[float]] = Field(description="per sample, one value per phase")

    def index_at(self, t: float) -> int:
        """The sample covering time ``t`` (clamped to the case)."""
        return max(0, min(len(self.labels) - 1, int(t * self.fps + 1e-9)))

    def segment_at(self, t: float) -> PhaseSegment:
        """The segment covering time ``t`` (the last one from its end on)."""
        for segment in self.segments:
            if t < segment.end:
                return segment
        return self.segments[-1]


def segment_evidence(tool_name: str, segment: PhaseSegment, case_id: str) -> Evidence:
    """One segment as evidence, named by the tool that reported it."""
    return Evidence(
        kind="segment",
        tool=tool_name,
        time=segment.start,
        end=segment.end,
        summary=f"phase {segment.describe()} in case {case_id}",
    )


class PhaseAtResult(ToolResult):
    """The phase under way at one moment."""

    kind: Literal["phase_at"] = "phase_at"
    case_id: str
    time: float
    phase: str
    confidence: float = Field(description="the model's probability of the phase at that time")
    segment: PhaseSegment

    def evidence(self) -> list[Evidence]:
        """The segment holding the moment."""
        return [segment_evidence("phase_at", self.segment, self.case_id)]


class PhaseSegmentsResult(ToolResult):
    """A case's phase segments (all, or one phase's)."""

    kind: Literal["phase_segments"] = "phase_segments"
    case_id: str
    phase: str | None
    duration: float
    segments: list[PhaseSegment]

    def evidence(self) -> list[Evidence]:
        """One segment item per segment."""
        return [segment_evidence("phase_segments", s, self.case_id) for s in self.segments]
