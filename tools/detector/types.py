"""What the instrument detector returns: boxes, per-frame detections and the instrument timeline.

Boxes come in pixels of the case's frames and as fractions 0-1, and print in both SurgVLM
answer styles (``[x1, y1, x2, y2]`` fractions; ``name (x1,y1),(x2,y2)`` on a 0-1000 scale).
`build_timeline` turns tracked samples into per-instrument intervals. `DetectionsResult` and
`TimelineResult` are what the planner tools return.

    timeline = build_timeline(frames, case_id="c1", class_names=["Clipper"], fps=1.0, ...)
    timeline.first_seen("clipper"), timeline.visible_at(65.0)
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, Field

from surgagent.tools.base import Evidence, ToolResult, format_time
from surgagent.tools.errors import ToolInputError, suggest

__all__ = [
    "BoxTuple",
    "Detection",
    "DetectionsResult",
    "FrameDetections",
    "InstrumentInterval",
    "InstrumentTimeline",
    "TimelineResult",
    "box_iou",
    "build_timeline",
    "resolve_instrument",
]

BoxTuple = tuple[float, float, float, float]


class Detection(BaseModel):
    """One instrument found in one frame."""

    name: str = Field(description="instrument class")
    class_id: int
    confidence: float
    box: BoxTuple = Field(description="x1, y1, x2, y2 in pixels of the case's frames")
    box_norm: BoxTuple = Field(description="x1, y1, x2, y2 as fractions 0-1 of width/height")
    track_id: int | None = Field(None, description="the track it belongs to (tracking only)")

    def box_surgvlm(self) -> list[float]:
        """The box as SurgVLM v1 writes it: ``[x1, y1, x2, y2]`` fractions, 3 decimals."""
        return [round(v, 3) for v in self.box_norm]

    def box_surgsigma(self) -> str:
        """The box as SurgSigma-DB writes it: ``name (x1,y1),(x2,y2)`` on a 0-1000 scale."""
        x1, y1, x2, y2 = (min(1000, max(0, round(v * 1000))) for v in self.box_norm)
        return f"{self.name} ({x1},{y1}),({x2},{y2})"


class FrameDetections(BaseModel):
    """The instruments found in one frame of a case."""

    time: float = Field(description="seconds from the start of the case")
    index: int = Field(description="frame number in the video (0-based)")
    width: int = Field(description="the case's frame width in pixels")
    height: int = Field(description="the case's frame height in pixels")
    frame: Path | None = Field(None, description="the frame image analysed, where kept")
    detections: list[Detection] = []


class InstrumentInterval(BaseModel):
    """A stretch of time during which one instrument is visible."""

    instrument: str
    start: float = Field(description="first sample (seconds) it is seen in")
    end: float = Field(description="last sample (seconds) it is seen in")
    frames: int = Field(description="samples it is seen in")
    mean_confidence: float
    max_confidence: float
    best_time: float = Field(description="the sample with its most confident detection")
    best_box: BoxTuple = Field(description="that detection's box, fractions 0-1")
    track_ids: list[int] = []
    frame: Path | None = Field(None, description="image of the best sample, where kept")


def _norm(name: str) -> str:
    return "".join(ch for ch in name.lower() if ch.isalnum())


def resolve_instrument(name: str, class_names: Sequence[str]) -> str:
    """The class name ``name`` refers to, ignoring case, spaces, ``_`` and ``-``.

    Raises:
        ToolInputError: If it names no class of the detector; lists the valid ones.
    """
    for known in class_names:
        if _norm(known) == _norm(name):
            return known
    raise ToolInputError(
        f"{name!r} is not an instrument the detector knows; use one of "
        f"{', '.join(class_names)}.{suggest(name, list(class_names))}"
    )


class InstrumentTimeline(BaseModel):
    """When each instrument is visible in (a stretch of) a case, from tracked detections."""

    case_id: str
    model_id: str = Field(description="the detector weights and settings that made it")
    fps: float = Field(description="samples per second")
    start: float
    end: float
    samples: int
    class_names: list[str]
    intervals: list[InstrumentInterval] = Field(description="sorted by start time")
    frames: list[FrameDetections] = Field([], description="the tracked detections per sample")

    def resolve(self, name: str) -> str:
        """The class name ``name`` refers to (see `resolve_instrument`)."""
        return resolve_instrument(name, self.class_names)

    def intervals_of(self, name: str) -> list[InstrumentInterval]:
        """The intervals of one instrument, in time order."""
        known = self.resolve(name)
        return [i for i in self.intervals if i.instrument == known]

    def visible_at(self, t: float) -> list[str]:
        """The instruments visible at ``t`` (within half a sample of an interval)."""
        slack = 0.5 / self.fps
        found = {i.instrument for i in self.intervals if i.start - slack <= t <= i.end + slack}
        return [name for name in self.class_names if name in found]

    def first_seen(self, name: str) -> float | None:
        """When the instrument is first seen, or None if never."""
        found = self.intervals_of(name)
        return found[0].start if found else None

    def last_seen(self, name: str) -> float | None:
        """When the instrument is last seen, or None if never."""
        found = self.intervals_of(name)
        return found[-1].end if found else None

    def seen(self) -> list[str]:
        """The instruments seen at least once, in class order."""
        found = {i.instrument for i in self.intervals}
        return [name for name in self.class_names if name in found]


def box_iou(a: BoxTuple, b: BoxTuple) -> float:
    """Intersection over union of two ``x1, y1, x2, y2`` boxes."""
    w = min(a[2], b[2]) - max(a[0], b[0])
    h = min(a[3], b[3]) - max(a[1], b[1])
    if w <= 0 or h <= 0:
        return 0.0
    inter = w * h
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return inter / union if union > 0 else 0.0


def _interval(name: str, seen: list[tuple[float, Detection]]) -> InstrumentInterval:
    best_time, best = max(seen, key=lambda item: item[1].confidence)
    confidences = [det.confidence for _, det in seen]
    ids = sorted({det.track_id for _, det in seen if det.track_id is not None})
    return InstrumentInterval(
        instrument=name,
        start=seen[0][0],
        end=seen[-1][0],
        frames=len(seen),
        mean_confidence=round(sum(confidences) / len(confidences), 4),
        max_confidence=round(best.confidence, 4),
        best_time=best_time,
        best_box=best.box_norm,
        track_ids=ids,
    )


def build_timeline(
    frames: Sequence[FrameDetections],
    *,
    case_id: str,
    class_names: Sequence[str],
    fps: float,
    start: float,
    end: float,
    model_id: str,
    max_gap: int = 1,
) -> InstrumentTimeline:
    """Group per-sample detections into per-instrument intervals.

    Args:
        frames: The samples, in time order (their detections already tracked).
        case_id: The case they come from.
        class_names: The detector's classes.
        fps: Samples per second.
        start: Where the sampled stretch starts (seconds).
        end: Where it ends.
        model_id: The detector that made them.
        max_gap: Runs of at most this many samples without the instrument are bridged
            (a missed detection or a brief occlusion does not split an interval).

    Returns:
        The timeline; ``intervals`` are sorted by start, then class order.
    """
    intervals: list[InstrumentInterval] = []
    for name in class_names:
        runs: list[list[tuple[float, Detection]]] = []
        last = -(10**9)
        for position, frame in enumerate(frames):
            found = [det for det in frame.detections if det.name == name]
            if not found:
                continue
            best = max(found, key=lambda det: det.confidence)
            if position - last > max_gap + 1:
                runs.append([])
            runs[-1].append((frame.time, best))
            last = position
        intervals += [_interval(name, run) for run in runs]
    order = {name: k for k, name in enumerate(class_names)}
    intervals.sort(key=lambda i: (i.start, order[i.instrument]))
    return InstrumentTimeline(
        case_id=case_id,
        model_id=model_id,
        fps=fps,
        start=start,
        end=end,
        samples=len(frames),
        class_names=list(class_names),
        intervals=intervals,
        frames=list(frames),
    )


def format_span(start: float, end: float) -> str:
    return (
        format_time(start, tenths=True)
        if abs(end - start) < 0.05
        else f"{format_time(start, tenths=True)}-{format_time(end, tenths=True)}"
    )


class DetectionsResult(ToolResult):
    """Instruments found in frames of a case (`instruments_at`, ``detector predict``)."""

    kind: Literal["detections"] = "detections"
    case_id: str
    model_id: str
    class_names: list[str]
    frames: list[FrameDetections]

    def evidence(self) -> list[Evidence]:
        """One detection item per instrument found (or one saying none was)."""
        items = []
        for frame in self.frames:
            image = str(frame.frame) if frame.frame else None
            if not frame.detections:
                items.append(
                    Evidence(
                        kind="detection",
                        tool="instruments_at",
                        time=frame.time,
                        frame=image,
                        summary="no instruments detected at "
                        + format_time(frame.time, tenths=True),
                    )
                )
            items += [
                Evidence(
                    kind="detection",
                    tool="instruments_at",
                    time=frame.time,
                    frame=image,
                    summary=f"{det.name} at {format_time(frame.time, tenths=True)} (confidence "
                    f"{det.confidence:.2f}), box {det.box_surgvlm()}",
                )
                for det in frame.detections
            ]
        return items


_SHOWN_PER_INSTRUMENT = 4  # intervals listed per instrument: the first ones and the last


def shown_intervals(intervals: Sequence[InstrumentInterval]) -> list[InstrumentInterval]:
    """The intervals a reply lists: all, or the first few and the last."""
    if len(intervals) <= _SHOWN_PER_INSTRUMENT:
        return list(intervals)
    return [*intervals[: _SHOWN_PER_INSTRUMENT - 1], intervals[-1]]


class TimelineResult(ToolResult):
    """When instruments are visible in a case (`instrument_timeline`)."""

    kind: Literal["timeline"] = "timeline"
    case_id: str
    instrument: str | None = Field(description="the one instrument asked about, if any")
    fps: float
    start: float
    end: float
    class_names: list[str]
    intervals: list[InstrumentInterval]

    def by_instrument(self) -> dict[str, list[InstrumentInterval]]:
        """The intervals grouped per instrument (in class order; unseen ones left out)."""
        groups: dict[str, list[InstrumentInterval]] = {}
        for name in self.class_names:
            found = [i for i in self.intervals if i.instrument == name]
            if found:
                groups[name] = found
        return groups

    def evidence(self) -> list[Evidence]:
        """One detection item per interval listed in the reply."""
        items = [
            Evidence(
                kind="detection",
                tool="instrument_timeline",
                time=i.start,
                end=i.end,
                frame=str(i.frame) if i.frame else None,
                summary=f"{i.instrument} visible {format_span(i.start, i.end)} ({i.frames} sampled "
                f"frames, best confidence {i.max_confidence:.2f} at "
                f"{format_time(i.best_time, tenths=True)})",
            )
            for group in self.by_instrument().values()
            for i in shown_intervals(group)
        ]
        if not items:
            what = f"{self.instrument} not" if self.instrument else "no instrument"
            items.append(
                Evidence(
                    kind="tool_output",
                    tool="instrument_timeline",
                    time=self.start,
                    end=self.end,
                    summary=f"{what} seen in {format_span(self.start, self.end)}",
                )
            )
        return items
