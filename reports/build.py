"""Gather a case report: the engines' outputs, the session's answers, key frames, the draft.

The report reads the agent's configured engines (detector, phase segmenter; their results
are cached per case, so a case reviewed before costs nothing again) and, given a session
id, the session's questions, answers, evidence and perception results.

    agent = SurgicalAgent.from_settings(sessions="sqlite")
    report = build_report(agent, "video.mp4", thread_id="review-1")
"""

from __future__ import annotations

import datetime
import importlib.metadata
import logging
from collections.abc import Iterable
from pathlib import Path
from typing import TYPE_CHECKING

from langchain_core.messages import HumanMessage

from surgagent.agent.errors import UserError
from surgagent.reports.figures import (
    annotated_frame_jpeg,
    instrument_timeline_png,
    phase_timeline_png,
)
from surgagent.reports.model import (
    AnswerItem,
    CaseInfo,
    CaseReport,
    CitationItem,
    EngineInfo,
    EvidenceItem,
    Figure,
    InstrumentRow,
    KeyFrame,
    PhaseRow,
)
from surgagent.reports.note import ReportInputs, draft_note
from surgagent.tools.base import format_time
from surgagent.tools.errors import CaseError
from surgagent.tools.perception.types import PerceptionResult
from surgagent.tools.results import read_result
from surgagent.tools.video.engine import sample_frames

if TYPE_CHECKING:
    from surgagent.agent.api import AnswerResult, SurgicalAgent
    from surgagent.tools.cache import Case

__all__ = ["build_report"]

log = logging.getLogger(__name__)

_FRAME_SIDE = 480  # pixels, the long side of key frames
_SAME_FRAME_S = 1.0  # candidate key frames closer than this are one frame
_CITED_KINDS = ("frame", "detection", "tool_output")


def _case_info(case: Case, video_url: str | None) -> CaseInfo:
    return CaseInfo(
        id=case.id,
        source=str(case.source),
        kind=case.kind,
        duration=case.duration,
        fps=case.fps,
        width=case.width,
        height=case.height,
        content_hash=case.content_hash,
        video_uri=video_url or (case.source.resolve().as_uri() if case.kind == "video" else None),
    )


def _unknown_session(agent: SurgicalAgent, thread_id: str) -> UserError:
    recent = agent.sessions(limit=5)
    listed = "; ".join(f"{s.thread_id} (case {s.case_id or 'none'})" for s in recent)
    known = f"recent sessions: {listed}" if recent else "there are no saved sessions"
    return UserError(
        f"session {thread_id!r} is unknown; {known}. Leave out --session for a report "
        "from the engines alone."
    )


def _answer_item(turn: int, question: str, answer: str, result: AnswerResult | None) -> AnswerItem:
    if result is None:
        return AnswerItem(turn=turn, question=question, answer=answer, status=None)
    return AnswerItem(
        turn=turn,
        question=question,
        answer=result.answer,
        status=result.status,
        evidence=[
            EvidenceItem(
                kind=e.kind, label=e.label(), summary=e.summary, tool=e.tool, time=e.time, end=e.end
            )
            for e in result.evidence
            if e.kind != "passage"
        ],
        citations=[
            CitationItem(
                passage_id=c.passage_id, title=c.title, source=c.source, year=c.year, url=c.url
            )
            for c in result.citations
        ],
        warnings=list(result.warnings),
    )


def _session(
    agent: SurgicalAgent, thread_id: str, case: Case
) -> tuple[list[AnswerItem], list[tuple[int, PerceptionResult]]]:
    """The session's answers and perception results (turns numbered from 1).

    Raises:
        UserError: If the session is unknown or about another case.
    """
    messages = agent.history(thread_id)
    if not messages:
        raise _unknown_session(agent, thread_id)
    state = agent.graph.get_state({"configurable": {"thread_id": thread_id}}).values
    if state.get("case_id") not in (None, case.id):
        raise UserError(
            f"session {thread_id!r} is about case {state['case_id']!r}, not {case.id!r}; "
            f"give that case: surgagent report {state['case_id']} --session {thread_id}"
        )
    turns = agent.turns(thread_id)
    results = agent.turn_results(thread_id)
    items = [
        _answer_item(k, t.question, t.answer, r)
        for k, (t, r) in enumerate(zip(turns, results, strict=True), start=1)
    ]
    perception: list[tuple[int, PerceptionResult]] = []
    turn = 0
    for message in messages:
        if isinstance(message, HumanMessage):
            turn += 1
            continue
        try:
            result = read_result(message)
        except ValueError as error:  # an incompatible old session: say so, keep going
            log.warning("session %s, turn %d: %s", thread_id, turn, error)
            continue
        if isinstance(result, PerceptionResult):
            perception.append((turn, result))
    return items, perception


def _candidates(inputs: ReportInputs) -> list[tuple[float, str, int]]:
    """``(time, reason, priority)`` of frames worth showing; lower priority shows first."""
    found: list[tuple[float, str, int]] = []
    for item in inputs.turns:
        for e in item.evidence:
            if e.time is not None and e.kind in _CITED_KINDS:
                found.append((e.time, f"cited in turn {item.turn}", 0))
    if inputs.timeline is not None:
        for name in inputs.timeline.seen():
            first = inputs.timeline.first_seen(name)
            if first is not None:
                found.append((first, f"{name} first seen", 1))
    if inputs.phases is not None:
        for segment in inputs.phases.segments[1:]:
            found.append((segment.start, f"{segment.phase} begins", 2))
    return found


def _pick_frames(candidates: Iterable[tuple[float, str, int]], limit: int) -> list[KeyFrame]:
    """At most ``limit`` frames, the most important first, reasons merged; in time order."""
    picked: list[KeyFrame] = []
    for time, reason, _ in sorted(candidates, key=lambda c: (c[2], c[0])):
        near = next((f for f in picked if abs(f.time - time) < _SAME_FRAME_S), None)
        if near is not None:
            if reason not in near.reasons:
                near.reasons.append(reason)
        elif len(picked) < limit:
            picked.append(KeyFrame(time=time, reasons=[reason]))
    return sorted(picked, key=lambda f: f.time)


def _draw_frames(agent: SurgicalAgent, case: Case, frames: list[KeyFrame]) -> None:
    """Fill each key frame's image and the detector's findings there (where one is set)."""
    last = max(0.0, case.duration - 1.0 / case.fps)
    for frame in frames:
        at = min(max(frame.time, 0.0), last)
        try:
            (image,) = sample_frames(case, [at], agent.cache, max_side=_FRAME_SIDE)
            boxes = []
            if agent.detector is not None:
                (found,) = agent.detector.detect(case, [at], agent.cache)
                boxes = [(d.name, d.confidence, d.box_norm) for d in found.detections]
            frame.jpeg = annotated_frame_jpeg(image.path, boxes, max_side=_FRAME_SIDE)
            if agent.detector is not None:
                frame.detections = [f"{name} {conf:.2f}" for name, conf, _ in boxes]
        except (CaseError, OSError) as error:  # shown in the report instead of the frame
            frame.problem = f"the frame at {format_time(at)} could not be shown: {error}"
            log.warning("%s", frame.problem)


def _figures(inputs: ReportInputs) -> list[Figure]:
    duration = inputs.case.duration
    phases = Figure(name="phase-timeline", title="Phase timeline")
    if inputs.phases is not None:
        rows = [PhaseRow.model_validate(s, from_attributes=True) for s in inputs.phases.segments]
        phases.png = phase_timeline_png(rows, inputs.phases.vocabulary, duration=duration)
    else:
        phases.missing = "No phase segmenter is configured (set phase.weights), so no phase figure."
    tools = Figure(name="instrument-timeline", title="Instrument timeline")
    if inputs.timeline is not None:
        tools.png = instrument_timeline_png(
            _instrument_rows(inputs), inputs.timeline.class_names, duration=duration
        )
    else:
        tools.missing = (
            "No instrument detector is configured (set detector.weights), so no instrument figure."
        )
    return [phases, tools]


def _instrument_rows(inputs: ReportInputs) -> list[InstrumentRow]:
    if inputs.timeline is None:
        return []
    return [
        InstrumentRow(
            instrument=i.instrument,
            start=i.start,
            end=i.end,
            frames=i.frames,
            max_confidence=i.max_confidence,
        )
        for i in inputs.timeline.intervals
    ]


def build_report(
    agent: SurgicalAgent,
    case: str | Path | Case,
    *,
    thread_id: str | None = None,
    max_frames: int = 8,
    video_url: str | None = None,
) -> CaseReport:
    """Build the report of ``case``, with session ``thread_id``'s questions where given.

    Args:
        agent: The agent whose engines, cache and sessions the report reads.
        case: A video file, frame folder or registered case id.
        thread_id: A saved session about this case, or None for the engines alone.
        max_frames: The most key frames shown.
        video_url: Where timestamps link (``#t=`` is added); default the video's file URI.
            A web app passes the URL it serves the video at.

    Returns:
        The report, ready for `render_markdown`, `render_html` or `render_pdf`.

    Raises:
        CaseError: If the case cannot be opened or decoded.
        UserError: If the session is unknown or about another case.
    """
    opened = agent.open_case(case)
    info = _case_info(opened, video_url)
    inputs = ReportInputs(case=info, metadata=dict(opened.metadata))
    if thread_id is not None:
        inputs.turns, inputs.perception = _session(agent, thread_id, opened)
    engines = []
    if agent.segmenter is not None:
        inputs.phases = agent.segmenter.predict(opened, agent.cache)
        engines.append(EngineInfo(role="segmenter", model_id=inputs.phases.model_id))
    else:
        engines.append(EngineInfo(role="segmenter", model_id=None, note="not configured"))
    if agent.detector is not None:
        inputs.timeline = agent.detector.track(opened, agent.cache)
        engines.append(EngineInfo(role="detector", model_id=inputs.timeline.model_id))
    else:
        engines.append(EngineInfo(role="detector", model_id=None, note="not configured"))
    key_frames = _pick_frames(_candidates(inputs), max_frames)
    _draw_frames(agent, opened, key_frames)
    phases = None
    if inputs.phases is not None:
        phases = [PhaseRow.model_validate(s, from_attributes=True) for s in inputs.phases.segments]
    return CaseReport(
        title=f"Case report: {opened.id}",
        created=datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        version=importlib.metadata.version("surgagent"),
        case=info,
        session_id=thread_id,
        engines=engines,
        note=draft_note(inputs),
        figures=_figures(inputs),
        phases=phases,
        instruments=_instrument_rows(inputs) if inputs.timeline is not None else None,
        key_frames=key_frames,
        turns=inputs.turns,
    )
