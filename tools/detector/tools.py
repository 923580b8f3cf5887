"""The detector's planner tools: `instruments_at` and `instrument_timeline`.

Both read the engine, case and cache from the run context (``runtime.context.detector``,
``.case``, ``.cache``), answer in a few bounded lines, and return the full result (with
evidence: detections with their time and frame) as the artifact.

    tools = make_detector_tools()  # bind to the planner; RunContext.detector must be set
    text, result = instruments_at.func(runtime, time="01:05")  # what ToolNode does
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any, Protocol

from langchain_core.tools import BaseTool, tool
from langgraph.prebuilt import ToolRuntime
from pydantic import BaseModel, Field, field_validator

from surgagent.tools.base import TIME_HELP, format_time, parse_time
from surgagent.tools.cache import Case, CaseCache
from surgagent.tools.detector.types import (
    Detection,
    DetectionsResult,
    TimelineResult,
    format_span,
    resolve_instrument,
    shown_intervals,
)
from surgagent.tools.errors import ToolInputError
from surgagent.tools.video.engine import sample_frames

if TYPE_CHECKING:
    from surgagent.tools.detector.engine import InstrumentDetector

__all__ = [
    "DetectorContext",
    "InstrumentTimelineArgs",
    "InstrumentsAtArgs",
    "instrument_timeline",
    "instruments_at",
    "make_detector_tools",
]


class DetectorContext(Protocol):
    """What the detector tools need from the run context (the graph's ``RunContext``)."""

    @property
    def detector(self) -> InstrumentDetector | None:
        """The detector engine, or None where no weights are configured."""
        ...

    @property
    def case(self) -> Case:
        """The case the run is about."""
        ...

    @property
    def cache(self) -> CaseCache:
        """Where work on the case is cached."""
        ...


class InstrumentsAtArgs(BaseModel):
    """Arguments of `instruments_at`."""

    time: str = Field(description=f"The moment to check, {TIME_HELP}.")

    @field_validator("time", mode="before")
    @classmethod
    def _number_as_text(cls, value: Any) -> Any:
        return str(value) if isinstance(value, int | float) else value


class InstrumentTimelineArgs(BaseModel):
    """Arguments of `instrument_timeline`."""

    instrument: str | None = Field(
        None,
        description="One instrument to report, e.g. 'Clipper' (the detector's classes; for "
        "Cholec80 weights: Grasper, Bipolar, Hook, Scissors, Clipper, Irrigator, "
        "SpecimenBag). Leave empty to report every instrument.",
    )


def _engine(ctx: DetectorContext) -> InstrumentDetector:
    detector = ctx.detector
    if detector is None:
        raise ToolInputError(
            "no instrument detector is configured for this run; look at frames instead."
        )
    return detector


_MAX_LISTED = 12  # detections listed in one reply (most confident first)


def _describe(det: Detection) -> str:
    box = ", ".join(f"{v:.3f}" for v in det.box_surgvlm())
    return f"- {det.name} (confidence {det.confidence:.2f}): [{box}] = {det.box_surgsigma()}"


_AT_DESCRIPTION = (
    "Detect the surgical instruments visible at one moment of the case video, with their "
    "boxes ([x1, y1, x2, y2] as fractions of the frame, and 'name (x1,y1),(x2,y2)' on a "
    "0-1000 scale) and confidences. Use it for 'which instruments are visible at ...' and "
    "'where is the ... at ...'."
)


@tool(
    "instruments_at",
    description=_AT_DESCRIPTION,
    args_schema=InstrumentsAtArgs,
    response_format="content_and_artifact",
)
def instruments_at(
    runtime: ToolRuntime[DetectorContext, Any], time: str
) -> tuple[str, DetectionsResult]:
    """Detect instruments at one moment (the description above is what the planner reads)."""
    ctx = runtime.context
    detector = _engine(ctx)
    frame = detector.detect(ctx.case, [parse_time(time)], ctx.cache)[0]
    head = f"At {format_time(frame.time, tenths=True)} (frame {frame.index})"
    if not frame.detections:
        text = f"{head}: no instruments detected (confidence >= {detector.conf:g})."
    else:
        noun = "instrument" if len(frame.detections) == 1 else "instruments"
        lines = [f"{head}: {len(frame.detections)} {noun}."]
        lines += [_describe(det) for det in frame.detections[:_MAX_LISTED]]
        if len(frame.detections) > _MAX_LISTED:
            lines.append(f"- and {len(frame.detections) - _MAX_LISTED} more, less confident")
        text = "\n".join(lines)
    result = DetectionsResult(
        case_id=ctx.case.id,
        model_id=detector.model_id,
        class_names=detector.class_names,
        frames=[frame],
    )
    return text, result


def _timeline_text(result: TimelineResult, samples: int) -> str:
    span = format_span(result.start, result.end)
    groups = result.by_instrument()
    if result.instrument and not groups:
        return f"{result.instrument} is not seen in {span} (checked {samples} frames)."
    lines = [f"Instrument timeline of {span} ({result.fps:g} frames/s, {samples} checked):"]
    for name, group in groups.items():
        shown = [
            f"{format_span(i.start, i.end)} ({i.frames} frames, conf {i.max_confidence:.2f})"
            for i in shown_intervals(group)
        ]
        if len(group) > len(shown):
            shown.insert(-1, f"... {len(group) - len(shown)} more ...")
        lines.append(
            f"- {name}: first seen {format_time(group[0].start, tenths=True)}, "
            f"last seen {format_time(group[-1].end, tenths=True)}; "
            f"{len(group)} interval{'s' if len(group) > 1 else ''}: " + ", ".join(shown)
        )
    unseen = [n for n in result.class_names if n not in groups]
    if unseen and not result.instrument:
        lines.append(f"Not seen: {', '.join(unseen)}.")
    return "\n".join(lines)


def _progress_events(runtime: ToolRuntime[Any, Any]) -> Callable[[int, int], None]:
    """Tracking progress as custom stream events (about 20 per run) for UIs that listen."""
    last = [-1]

    def report(done: int, total: int) -> None:
        writer = getattr(runtime, "stream_writer", None)
        if writer is not None and (done == total or done - last[0] >= max(1, total // 20)):
            last[0] = done
            writer(
                {"tool": "instrument_timeline", "stage": "tracking", "done": done, "total": total}
            )

    return report


_TIMELINE_DESCRIPTION = (
    "When each surgical instrument is visible over the whole case (tracked detections): "
    "its intervals, first and last appearance. Use it for 'when is the clipper first/last "
    "used', 'how long is the hook used', 'which instruments are used'. Give an instrument "
    "to get only that one."
)


@tool(
    "instrument_timeline",
    description=_TIMELINE_DESCRIPTION,
    args_schema=InstrumentTimelineArgs,
    response_format="content_and_artifact",
)
def instrument_timeline(
    runtime: ToolRuntime[DetectorContext, Any], instrument: str | None = None
) -> tuple[str, TimelineResult]:
    """Report instrument intervals (the description above is what the planner reads)."""
    ctx = runtime.context
    detector = _engine(ctx)
    if instrument is not None and not instrument.strip():
        instrument = None
    if instrument is not None:  # refuse a bad name before any tracking work
        resolve_instrument(instrument, detector.class_names)
    timeline = detector.track(ctx.case, ctx.cache, progress=_progress_events(runtime))
    name = timeline.resolve(instrument) if instrument else None
    intervals = timeline.intervals_of(name) if name else timeline.intervals
    result = TimelineResult(
        case_id=ctx.case.id,
        instrument=name,
        fps=timeline.fps,
        start=timeline.start,
        end=timeline.end,
        class_names=timeline.class_names,
        intervals=intervals,
    )
    shown = [i for group in result.by_instrument().values() for i in shown_intervals(group)]
    if shown:
        frames = sample_frames(
            ctx.case, [i.best_time for i in shown], ctx.cache, max_side=detector.imgsz
        )
        paths = {(i.instrument, i.start): f.path for i, f in zip(shown, frames, strict=True)}
        result.intervals = [
            i.model_copy(update={"frame": paths.get((i.instrument, i.start))})
            for i in result.intervals
        ]
    return _timeline_text(result, timeline.samples), result


def make_detector_tools() -> list[BaseTool]:
    """The planner tools this module provides."""
    return [instruments_at, instrument_timeline]
