"""The operative-note draft: its sections written only from engine outputs and session answers.

Each sentence carries the evidence it comes from (a span the segmenter found, an interval
the detector tracked, a perception answer at a time, a session turn with its evidence and
passages); what nothing supports is left to the surgeon, marked ``[surgeon to complete]``.

    sections = draft_note(inputs)  # [NoteSection(title="Procedure", ...), ...]
"""

from __future__ import annotations

from dataclasses import dataclass, field

from surgagent.reports.model import AnswerItem, CaseInfo, NoteSection, Ref, Statement
from surgagent.tools.base import format_time
from surgagent.tools.detector.types import InstrumentTimeline
from surgagent.tools.perception.types import PerceptionResult
from surgagent.tools.phase.types import PhasePrediction

__all__ = ["ReportInputs", "draft_note"]

_UNSURE = 0.6  # phase segments with a lower mean confidence are listed for review
_CVS = (
    "C1 two and only two structures enter the gallbladder",
    "C2 hepatocystic triangle cleared of fat and fibrous tissue",
    "C3 lower third of the gallbladder separated from the liver bed",
)


@dataclass
class ReportInputs:
    """What the draft is written from: the case, the engines' outputs and the session.

    Attributes:
        case: The case as probed.
        phases: The segmenter's prediction, or None where no segmenter is configured.
        timeline: The detector's instrument timeline, or None where no detector is.
        turns: The session's questions and answers (empty without a session).
        perception: ``(turn, result)`` for every perception answer the session obtained.
        metadata: The case's metadata (notes files found next to it).
    """

    case: CaseInfo
    phases: PhasePrediction | None = None
    timeline: InstrumentTimeline | None = None
    turns: list[AnswerItem] = field(default_factory=list)
    perception: list[tuple[int, PerceptionResult]] = field(default_factory=list)
    metadata: dict[str, object] = field(default_factory=dict)


def _span(start: float, end: float | None = None) -> str:
    return format_time(start) + (f"-{format_time(end)}" if end is not None else "")


def _segment_ref(phases: PhasePrediction, start: float, end: float) -> Ref:
    return Ref(kind="time", label=f"{_span(start, end)} phase segmenter", time=start, end=end)


def _detector_ref(timeline: InstrumentTimeline, start: float, end: float | None = None) -> Ref:
    return Ref(kind="time", label=f"{_span(start, end)} detector", time=start, end=end)


def _surgeon(text: str) -> Statement:
    return Statement(text=text, surgeon=True)


def _procedure(inputs: ReportInputs) -> NoteSection:
    case = inputs.case
    probe = Ref(kind="tool", label=f"video probe, content hash {case.content_hash[:12]}")
    what = "video" if case.kind == "video" else "frame folder"
    statements = [
        Statement(
            text=f"Recording reviewed: {what} {case.id}, {format_time(case.duration)} long, "
            f"{case.fps:g} frames per second, {case.width}x{case.height} pixels.",
            refs=[probe],
        )
    ]
    named = inputs.metadata.get("procedure")
    if isinstance(named, str) and named.strip():
        statements.append(
            Statement(
                text=f"Procedure as recorded with the case: {named.strip()}.",
                refs=[Ref(kind="tool", label="case metadata file")],
            )
        )
    else:
        statements.append(_surgeon("Procedure performed, indication and approach:"))
    statements.append(_surgeon("Surgeon, assistant and anaesthesia:"))
    return NoteSection(title="Procedure", statements=statements)


def _answer_refs(item: AnswerItem) -> list[Ref]:
    refs = [
        Ref(kind="time", label=e.label.strip("[]"), time=e.time, end=e.end)
        if e.time is not None
        else Ref(kind="tool", label=e.tool)
        for e in item.evidence
        if e.tool != "search_guidelines"
    ]
    refs += [Ref(kind="passage", label=f"passage {c.passage_id}") for c in item.citations]
    unique = list({ref.label: ref for ref in refs}.values())  # one per label, in order
    return unique or [Ref(kind="session", label=f"session turn {item.turn}, no evidence gathered")]


def _findings(inputs: ReportInputs) -> NoteSection:
    statements = []
    for item in inputs.turns:
        if item.status not in ("answered", "budget_exhausted") or not item.answer.strip():
            continue
        caveat = " (answered from partial evidence)" if item.status == "budget_exhausted" else ""
        statements.append(
            Statement(
                text=f"Asked \u201c{item.question}\u201d, the assistant answered{caveat}: "
                f"{item.answer}",
                refs=[Ref(kind="session", label=f"session turn {item.turn}"), *_answer_refs(item)],
            )
        )
    if not statements:
        statements.append(_surgeon("No review session is included. Findings:"))
    statements.append(_surgeon("Further findings, specimen and closure:"))
    return NoteSection(title="Findings", statements=statements)


def _phases(inputs: ReportInputs) -> NoteSection:
    phases = inputs.phases
    if phases is None:
        return NoteSection(
            title="Phases",
            statements=[
                _surgeon(
                    "No phase segmenter is configured, so no phase was timed. Phases and times:"
                )
            ],
        )
    statements = [
        Statement(
            text=f"{s.phase}: {_span(s.start, s.end)} ({format_time(s.end - s.start)}; "
            f"mean confidence {s.confidence:.2f}).",
            refs=[_segment_ref(phases, s.start, s.end)],
        )
        for s in phases.segments
    ]
    return NoteSection(title="Phases", statements=statements)


def _cvs_text(result: PerceptionResult) -> str | None:
    parsed = result.parsed
    if not (isinstance(parsed, list) and len(parsed) == 3):
        return None
    met = "; ".join(
        f"{name}: {'yes' if ok else 'no'}" for name, ok in zip(_CVS, parsed, strict=True)
    )
    verdict = "achieved" if all(parsed) else "not achieved"
    return f"the perception model read the critical view as {verdict} ({met})"


def _cvs(inputs: ReportInputs) -> NoteSection:
    clipper = None
    if inputs.timeline is not None and "Clipper" in inputs.timeline.class_names:
        clipper = inputs.timeline.first_seen("Clipper")
    statements = []
    for turn, result in inputs.perception:
        if result.task != "cvs" or not result.times:
            continue
        at = result.times[0]
        refs = [
            Ref(
                kind="time",
                label=f"{format_time(at)} ask_perception {result.model}".strip(),
                time=at,
            ),
            Ref(kind="session", label=f"session turn {turn}"),
        ]
        text = _cvs_text(result)
        if text is None:
            statements.append(
                Statement(
                    text=f"At {format_time(at)} the critical view was asked about, but the "
                    f"answer could not be read ({result.parse_error or 'no criteria named'}).",
                    refs=refs,
                )
            )
            continue
        sentence = f"At {format_time(at)}, {text}."
        if clipper is not None and inputs.timeline is not None:
            order = "before" if at < clipper else "after"
            sentence += f" This is {order} the clipper is first seen ({format_time(clipper)})."
            refs.append(_detector_ref(inputs.timeline, clipper))
        statements.append(Statement(text=sentence, refs=refs))
    if not statements:
        statements.append(
            _surgeon(
                "The critical view of safety was not assessed in this review. "
                "Whether and when it was achieved:"
            )
        )
    else:
        statements.append(
            _surgeon("The surgeon's own assessment of the critical view before clipping:")
        )
    return NoteSection(title="Critical view of safety", statements=statements)


def _instruments(inputs: ReportInputs) -> NoteSection:
    timeline = inputs.timeline
    if timeline is None:
        return NoteSection(
            title="Instruments",
            statements=[_surgeon("No instrument detector is configured. Instruments used:")],
        )
    statements = []
    for name in timeline.seen():
        intervals = timeline.intervals_of(name)
        first, last = intervals[0].start, intervals[-1].end
        on_screen = sum(i.frames for i in intervals) / timeline.fps
        times = "once" if len(intervals) == 1 else f"in {len(intervals)} intervals"
        statements.append(
            Statement(
                text=f"{name}: seen {times}, first at {format_time(first)}, last at "
                f"{format_time(last)}, about {on_screen:.0f} s on screen.",
                refs=[_detector_ref(timeline, i.start, i.end) for i in intervals[:4]],
            )
        )
    unseen = [name for name in timeline.class_names if name not in timeline.seen()]
    if unseen:
        statements.append(
            Statement(
                text=f"Not seen by the detector: {', '.join(unseen)}.",
                refs=[Ref(kind="tool", label=f"detector {timeline.model_id}")],
            )
        )
    statements.append(_surgeon("Instruments not seen on camera; instrument and swab counts:"))
    return NoteSection(title="Instruments", statements=statements)


def _events(inputs: ReportInputs) -> NoteSection:
    statements = []
    for item in inputs.turns:
        session = Ref(kind="session", label=f"session turn {item.turn}")
        if item.status not in ("answered", None):
            statements.append(
                Statement(text=f"Turn {item.turn} ended with status {item.status}.", refs=[session])
            )
        for warning in item.warnings:
            statements.append(
                Statement(text=f"Turn {item.turn}, unsupported claim: {warning}", refs=[session])
            )
    for turn, result in inputs.perception:
        for note in result.disagreements:
            at = result.times[0] if result.times else None
            refs = [Ref(kind="session", label=f"session turn {turn}")]
            if at is not None:
                refs.insert(0, Ref(kind="time", label=f"{format_time(at)} ask_perception", time=at))
            statements.append(Statement(text=f"The tools disagree: {note}", refs=refs))
    if inputs.phases is not None:
        for s in inputs.phases.segments:
            if s.confidence < _UNSURE:
                statements.append(
                    Statement(
                        text=f"The segmenter is unsure of {s.phase} at {_span(s.start, s.end)} "
                        f"(mean confidence {s.confidence:.2f}).",
                        refs=[_segment_ref(inputs.phases, s.start, s.end)],
                    )
                )
    statements.append(_surgeon("Bleeding, bile spill, conversion or other complications:"))
    return NoteSection(title="Events to review", statements=statements)


def draft_note(inputs: ReportInputs) -> list[NoteSection]:
    """The operative-note draft in its six sections, every sentence traceable or marked.

    Sections: procedure, findings, phases with times, critical view of safety as assessed
    and when, instruments, events to review.
    """
    return [
        _procedure(inputs),
        _findings(inputs),
        _phases(inputs),
        _cvs(inputs),
        _instruments(inputs),
        _events(inputs),
    ]
