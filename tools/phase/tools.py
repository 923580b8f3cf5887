"""The phase segmenter's planner tools: `phase_at` and `phase_segments`.

Both read the segmenter, case and cache from the run context and return the segments
they used as evidence.

    tools = make_phase_tools()  # bind to the planner; RunContext.phase must be set
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Any, Protocol

from langchain_core.tools import BaseTool, tool
from langgraph.prebuilt import ToolRuntime
from pydantic import BaseModel, Field, field_validator

from surgagent.tools.base import format_time, parse_time
from surgagent.tools.cache import Case, CaseCache
from surgagent.tools.errors import ToolInputError, suggest
from surgagent.tools.phase.engine import PhaseEngine
from surgagent.tools.phase.types import (
    PhaseAtResult,
    PhasePrediction,
    PhaseSegmentsResult,
)

__all__ = [
    "PhaseAtArgs",
    "PhaseContext",
    "PhaseSegmentsArgs",
    "make_phase_tools",
    "phase_at",
    "phase_segments",
]
_MAX_LISTED = 12


class PhaseContext(Protocol):
    """What the phase tools need from the run context (``surgagent.graphs.context.RunContext``)."""

    @property
    def case(self) -> Case:
        """The case the run is about."""
        ...

    @property
    def cache(self) -> CaseCache:
        """Where work on it is cached."""
        ...

    @property
    def segmenter(self) -> PhaseEngine | None:
        """The phase segmenter, or None where no weights are configured."""
        ...


def _prediction(runtime: ToolRuntime[PhaseContext, Any]) -> tuple[Case, PhasePrediction]:
    ctx = runtime.context
    if ctx.segmenter is None:
        raise ToolInputError(
            "no phase model is configured for this run; answer from the frames instead."
        )
    return ctx.case, ctx.segmenter.predict(ctx.case, ctx.cache)


def _key(name: str) -> str:
    return re.sub(r"[^a-z0-9]", "", name.lower())


def _phase_name(value: str, vocabulary: Sequence[str]) -> str:
    by_key = {_key(name): name for name in vocabulary}
    if _key(value) in by_key:
        return by_key[_key(value)]
    raise ToolInputError(
        f"unknown phase {value!r}.{suggest(value, vocabulary)} The phases are: "
        f"{', '.join(vocabulary)}."
    )


class PhaseAtArgs(BaseModel):
    """Arguments of `phase_at`."""

    time: str = Field(
        description="The moment to ask about: seconds (75) or a clock time mm:ss / hh:mm:ss "
        "(01:15), within the case."
    )

    @field_validator("time", mode="before")
    @classmethod
    def _number_as_text(cls, value: Any) -> Any:
        return str(value) if isinstance(value, int | float) else value


class PhaseSegmentsArgs(BaseModel):
    """Arguments of `phase_segments`."""

    phase: str | None = Field(
        None,
        description="Only this phase's segments, by name (e.g. CalotTriangleDissection, "
        "ClippingCutting; spaces and case do not matter). Leave empty for the whole timeline.",
    )


@tool(
    "phase_at",
    description="Which surgical phase is under way at a moment of the case, from the phase "
    "recognition model: the phase, the model's confidence, and the start and end of that "
    "phase segment. Use it for 'what is happening at 12:30?'.",
    args_schema=PhaseAtArgs,
    response_format="content_and_artifact",
)
def phase_at(runtime: ToolRuntime[PhaseContext, Any], time: str) -> tuple[str, PhaseAtResult]:
    """Tell the planner the phase at one moment (the description above is what it reads)."""
    moment = parse_time(time)
    case, prediction = _prediction(runtime)
    case.check_time(moment)
    index = prediction.index_at(moment)
    label = prediction.labels[index]
    segment = prediction.segment_at(moment)
    confidence = prediction.probabilities[index][label]
    text = (
        f"At {format_time(moment)} the phase is {segment.phase} (confidence {confidence:.2f}); "
        f"this segment runs {format_time(segment.start)}-{format_time(segment.end)} "
        f"({format_time(segment.duration)} long)."
    )
    result = PhaseAtResult(
        case_id=case.id, time=moment, phase=segment.phase, confidence=confidence, segment=segment
    )
    return text, result


@tool(
    "phase_segments",
    description="The case's surgical phase timeline from the phase recognition model: each "
    "phase segment's start, end and duration. Give a phase to list only its segments (when "
    "did it start or end, how long did it last); leave it empty for the whole timeline.",
    args_schema=PhaseSegmentsArgs,
    response_format="content_and_artifact",
)
def phase_segments(
    runtime: ToolRuntime[PhaseContext, Any], phase: str | None = None
) -> tuple[str, PhaseSegmentsResult]:
    """Tell the planner the phase timeline (the description above is what it reads)."""
    case, prediction = _prediction(runtime)
    name = _phase_name(phase, prediction.vocabulary) if phase else None
    segments = [s for s in prediction.segments if name is None or s.phase == name]
    result = PhaseSegmentsResult(
        case_id=case.id, phase=name, duration=case.duration, segments=segments
    )
    length = format_time(case.duration)
    if name is not None and not segments:
        return f"{name} was not recognised anywhere in this case ({length} long).", result
    listed = "; ".join(segment.describe() for segment in segments[:_MAX_LISTED])
    if len(segments) > _MAX_LISTED:
        listed += f"; and {len(segments) - _MAX_LISTED} more"
    total = sum(segment.duration for segment in segments)
    if name is None:
        head = f"{len(segments)} phase segments in the case ({length} long): "
    else:
        head = f"{name}: {len(segments)} segment(s), {format_time(total)} in all: "
    return head + listed + ".", result


def make_phase_tools() -> list[BaseTool]:
    """The planner tools this module provides."""
    return [phase_at, phase_segments]
