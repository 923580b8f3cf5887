"""Grounding checks on an answer: cited times, presence claims, and tool disagreements.

An answer may cite moments (``[01:05]``, ``[1:02:03]``, ``[01:05–01:30]``). Each must fall
inside what the session's tools looked at; a sentence that says an instrument or phase is
present at its cited times must agree with the detector or phase segmenter where they
looked at those times; and where this turn's tools disagree (perception against the
detector or segmenter), the answer must say so. Each failed check is one warning sentence.
The checks read the tool messages' typed results (`read_result`) and call no model.

    warnings = check_grounding(session_messages, turn_messages, result.answer)
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from langchain_core.messages import AnyMessage

from surgagent.tools.answers import norm_label, parse_labels
from surgagent.tools.base import format_time, parse_time
from surgagent.tools.results import (
    DetectionsResult,
    FramesResult,
    GuidelineSearchResult,
    PerceptionResult,
    PhaseAtResult,
    PhaseSegmentsResult,
    TimelineResult,
    ToolOutput,
    read_result,
)
from surgagent.tools.vocabulary import CHOLEC80_PHASES

__all__ = ["CitedTime", "check_grounding", "cited_times"]

# A cited moment is supported by a frame this close to it: answers write whole seconds,
# frames fall anywhere between them.
TOLERANCE_S = 1.0

_CLOCK = r"(?:\d+:)?\d{1,2}:\d{2}(?:\.\d+)?"
# [01:05], [1:02:03], [01:05-01:30], [01:05–01:30], [01:05 to 01:30], and the evidence
# labels the planner reads ([01:05 frame], [00:10-00:42 segment], [frame 01:05]).
_CITED = re.compile(
    rf"\[(?:frame\s+)?({_CLOCK})(?:\s*(?:-|–|—|to)\s*({_CLOCK}))?(?:\s+[a-z_ ]+)?\]",
    re.IGNORECASE,
)
_SENTENCE_END = re.compile(r"(?<=[.!?])\s+|\n+")
# Words by which an answer owns up to a disagreement between its sources.
_ACKNOWLEDGED = re.compile(
    r"\b(?:disagree\w*|conflict\w*|discrepan\w*|inconsisten\w*|contradict\w*|differ\w*|"
    r"mismatch\w*|do(?:es)?\s+not\s+agree|(?:do|does)n['’]t\s+agree|uncertain\w*|unclear)\b",
    re.IGNORECASE,
)


@dataclass(frozen=True)
class CitedTime:
    """A moment (``start == end``) or stretch the answer cites, as written and in seconds."""

    text: str
    start: float
    end: float


@dataclass(frozen=True)
class _Span:
    start: float
    end: float

    def holds(self, cited: CitedTime) -> bool:
        return self.start - TOLERANCE_S <= cited.start and cited.end <= self.end + TOLERANCE_S


def _supported(cited: CitedTime, spans: Sequence[_Span]) -> bool:
    """Whether the tools looked at the cited moment, or at both ends of the cited stretch."""
    ends = (CitedTime(cited.text, t, t) for t in (cited.start, cited.end))
    return any(span.holds(cited) for span in spans) or all(
        any(span.holds(end) for span in spans) for end in ends
    )


def cited_times(text: str) -> list[CitedTime]:
    """The moments and stretches ``text`` cites in square brackets, in order."""
    found = []
    for match in _CITED.finditer(text):
        start = parse_time(match.group(1))
        end = parse_time(match.group(2)) if match.group(2) else start
        found.append(CitedTime(match.group(0), min(start, end), max(start, end)))
    return found


def _results(messages: Iterable[AnyMessage]) -> list[ToolOutput]:
    return [result for message in messages if (result := read_result(message)) is not None]


def _looked_at(results: Sequence[ToolOutput]) -> list[_Span]:
    """The moments and stretches the tools looked at."""
    spans: list[_Span] = []
    for result in results:
        if isinstance(result, FramesResult | DetectionsResult):
            spans += [_Span(frame.time, frame.time) for frame in result.frames]
        elif isinstance(result, PerceptionResult):
            spans += [_Span(t, t) for t in result.times]
        elif isinstance(result, TimelineResult):
            spans.append(_Span(result.start, result.end))  # sampled throughout at its fps
        elif isinstance(result, PhaseAtResult):
            spans += [_Span(result.time, result.time)]
            spans.append(_Span(result.segment.start, result.segment.end))
        elif isinstance(result, PhaseSegmentsResult):
            spans += [_Span(s.start, s.end) for s in result.segments]
        elif not isinstance(result, GuidelineSearchResult):  # a result kind added later
            spans += [
                _Span(item.time, item.end if item.end is not None else item.time)
                for item in result.evidence()
                if item.time is not None
            ]
    return spans


def _instrument_verdict(results: Sequence[ToolOutput], name: str, cited: CitedTime) -> bool | None:
    """Whether the detector saw ``name`` at ``cited`` (None where it did not look there)."""
    low, high = cited.start - TOLERANCE_S, cited.end + TOLERANCE_S
    verdicts: list[bool] = []
    for result in results:
        if isinstance(result, DetectionsResult) and name in result.class_names:
            frames = [f for f in result.frames if low <= f.time <= high]
            seen = any(d.name == name for f in frames for d in f.detections)
            if seen or (frames and cited.start == cited.end):
                verdicts.append(seen)
        elif (
            isinstance(result, TimelineResult)
            and name in result.class_names
            and result.instrument in (None, name)
        ):
            slack = 0.5 / result.fps
            seen = any(
                i.instrument == name and i.start - slack <= high and low <= i.end + slack
                for i in result.intervals
            )
            if seen or _Span(result.start, result.end).holds(cited):
                verdicts.append(seen)
    return any(verdicts) if verdicts else None


def _phase_verdict(results: Sequence[ToolOutput], phase: str, cited: CitedTime) -> bool | None:
    """Whether the segmenter puts ``phase`` at ``cited`` (None where it says nothing there)."""
    low, high = cited.start - TOLERANCE_S, cited.end + TOLERANCE_S
    verdicts: list[bool] = []
    for result in results:
        if isinstance(result, PhaseAtResult):
            segments, complete_for = [result.segment], None
        elif isinstance(result, PhaseSegmentsResult):
            segments, complete_for = result.segments, result.phase
        else:
            continue
        wanted = norm_label(phase)
        overlapping = [s for s in segments if s.start <= high and low <= s.end]
        if any(norm_label(s.phase) == wanted for s in overlapping):
            verdicts.append(True)
        elif (complete_for is not None and norm_label(complete_for) == wanted) or any(
            s.start <= cited.start and cited.end <= s.end for s in segments
        ):
            verdicts.append(False)  # all of the phase listed, or another phase holds the time
    return any(verdicts) if verdicts else None


def _labels(sentence: str, vocabulary: Sequence[str]) -> list[str]:
    """The labels a sentence names as present (denied ones, "no clipper", left out)."""
    if not vocabulary:
        return []
    parsed = parse_labels(_CITED.sub(" ", sentence), vocabulary)
    return list(parsed.value or []) if parsed.ok else []


def _claim_warnings(answer: str, results: Sequence[ToolOutput]) -> list[str]:
    """Sentences naming an instrument or phase at cited times the engines contradict.

    A sentence may cite several times and name several things; a name is contradicted only
    where the engine looked at every time the sentence cites and found it at none of them.
    A sentence that reports a disagreement ("perception names a hook, the detector does not")
    claims nothing itself.
    """
    instruments = sorted(
        {
            name
            for r in results
            if isinstance(r, DetectionsResult | TimelineResult)
            for name in r.class_names
        }
    )
    phases = {r.phase for r in results if isinstance(r, PhaseAtResult)}
    phases |= {s.phase for r in results if isinstance(r, PhaseSegmentsResult) for s in r.segments}
    vocabulary = sorted(phases | set(CHOLEC80_PHASES)) if phases else []
    warnings = []
    for sentence in _SENTENCE_END.split(answer):
        times = cited_times(sentence)
        if not times or _ACKNOWLEDGED.search(sentence):
            continue
        where = ", ".join(c.text for c in times)
        for name in _labels(sentence, instruments):
            verdicts = [_instrument_verdict(results, name, c) for c in times]
            if verdicts and all(v is False for v in verdicts):
                warnings.append(
                    f"The answer says {name} is present at {where}, but the detector did not "
                    "see it there."
                )
        for phase in _labels(sentence, vocabulary):
            verdicts = [_phase_verdict(results, phase, c) for c in times]
            if verdicts and all(v is False for v in verdicts):
                warnings.append(
                    f"The answer places phase {phase} at {where}, but the phase segmenter does not."
                )
    return warnings


def _detector_at(results: Sequence[ToolOutput], t: float) -> set[str] | None:
    """The instruments the detector found at ``t`` (None where it did not look)."""
    for result in results:
        if isinstance(result, DetectionsResult):
            for frame in result.frames:
                if abs(frame.time - t) <= TOLERANCE_S:
                    return {norm_label(d.name) for d in frame.detections}
        if isinstance(result, TimelineResult) and result.instrument is None:
            if result.start - TOLERANCE_S <= t <= result.end + TOLERANCE_S:
                slack = 0.5 / result.fps
                return {
                    norm_label(i.instrument)
                    for i in result.intervals
                    if i.start - slack <= t <= i.end + slack
                }
    return None


def _perception_notes(perception: PerceptionResult, results: Sequence[ToolOutput]) -> list[str]:
    """Disagreements of a perception answer with the run's detector or segmenter results."""
    if perception.disagreements:
        return list(perception.disagreements)
    if perception.parsed is None or perception.parse_error is not None:
        return []
    notes = []
    if perception.task == "instrument_recognition" and isinstance(perception.parsed, list):
        named = {norm_label(str(name)) for name in perception.parsed}
        found = {t: _detector_at(results, t) for t in perception.times}
        anywhere = set().union(*(f for f in found.values() if f is not None))
        for t, here in found.items():
            if here is not None and (here - named or named - anywhere):
                notes.append(
                    f"at {format_time(t)} perception names {', '.join(sorted(named)) or 'none'} "
                    f"but the detector finds {', '.join(sorted(here)) or 'none'}."
                )
    elif perception.task == "phase":
        parsed = perception.parsed
        said = parsed if isinstance(parsed, str) else (parsed[0] if parsed else None)
        for t in perception.times if said else []:
            moment = CitedTime(format_time(t), t, t)
            if _phase_verdict(results, str(said), moment) is False:
                notes.append(
                    f"at {format_time(t)} perception says {said} but the phase segmenter does not."
                )
    return notes


def _disagreement_warnings(answer: str, turn: Sequence[ToolOutput]) -> list[str]:
    """Disagreements between this turn's tools that the answer does not mention."""
    notes: list[str] = []
    for result in turn:
        if isinstance(result, PerceptionResult):
            notes += _perception_notes(result, turn)
    if not notes or _ACKNOWLEDGED.search(answer):
        return []
    return [f"The tools disagree and the answer does not say so: {note}" for note in notes]


def check_grounding(
    session: Sequence[AnyMessage], turn: Sequence[AnyMessage], answer: str
) -> list[str]:
    """Warnings, one sentence each, for what the answer claims beyond its evidence.

    Args:
        session: The session's messages (tool results of earlier turns support citations
            too: the planner still reads them).
        turn: The messages of the turn being answered (its disagreements must be named).
        answer: The answer's text.

    Returns:
        Cited times no tool looked at, presence claims the detector or segmenter contradict,
        and unmentioned disagreements between this turn's tools; empty when grounded.
    """
    if not answer:
        return []
    results = _results(session)
    spans = _looked_at(results)
    warnings = [
        f"The answer cites {cited.text}, but no tool in this session looked at that time."
        for cited in cited_times(answer)
        if not _supported(cited, spans)
    ]
    warnings += _claim_warnings(answer, results)
    warnings += _disagreement_warnings(answer, _results(turn))
    return list(dict.fromkeys(warnings))
