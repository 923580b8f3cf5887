"""Perception: the perception VLM (SurgVLM-9B-Instruct) answers questions about frames.

Questions are sent in SurgVLM's task styles (recognition, localisation, 3x3 grid,
action, triplet, critical view of safety, phase) and the answer is parsed into a
structured value next to the raw text. Where the detector or phase segmenter has
already spoken about the same moment and disagrees, the result says so.

    text, result = ask_perception(ctx, PerceptionArgs(question="Is CVS achieved?",
                                                      task="cvs", times=["12:30"]))
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Callable
from importlib import resources
from typing import Any, Protocol

from surgagent.tools.answers import (
    Parsed,
    norm_label,
    parse_boxes,
    parse_cvs,
    parse_grid,
    parse_label,
    parse_labels,
    parse_triplets,
)
from surgagent.tools.base import format_time
from surgagent.tools.cache import Case, CaseCache
from surgagent.tools.errors import SurgAgentError, ToolInputError
from surgagent.tools.perception.types import PerceptionArgs, PerceptionResult, PerceptionTask
from surgagent.tools.video.engine import load_image, sample_frames
from surgagent.tools.vision import VisionBackend
from surgagent.tools.vocabulary import (
    CHOLEC80_PHASES,
    CHOLEC80_TOOLS,
    CHOLECT50_INSTRUMENTS,
    CHOLECT50_TARGETS,
    CHOLECT50_VERBS,
    CVS_CRITERIA,
)

__all__ = [
    "ask_perception",
    "cross_check",
    "perception_prompt",
    "read_answer",
]

logger = logging.getLogger(__name__)

# Most frames one perception call sends (vLLM's usual --limit-mm-per-prompt).
MAX_PERCEPTION_FRAMES = 8
_MAX_TEXT = 600


class PerceptionContext(Protocol):
    """What the perception tool needs from the run context."""

    @property
    def case(self) -> Case:
        """The case the run is about."""
        ...

    @property
    def cache(self) -> CaseCache:
        """Where its frames are cached."""
        ...

    @property
    def vision(self) -> VisionBackend | None:
        """The perception model."""
        ...

    @property
    def max_image_side(self) -> int:
        """Frames are resized to fit this side."""
        ...


@functools.cache
def perception_prompt(task: PerceptionTask) -> str:
    """The prompt template of ``task`` (``tools/prompts/perception_<task>.md``)."""
    files = resources.files("surgagent.tools.perception.prompts")
    return files.joinpath(f"perception_{task}.md").read_text(encoding="utf-8").strip()


def _render(task: PerceptionTask, question: str) -> str:
    return perception_prompt(task).format(
        question=question,
        instruments=", ".join(CHOLEC80_TOOLS),
        instruments_t50=", ".join(CHOLECT50_INSTRUMENTS),
        verbs=", ".join(CHOLECT50_VERBS),
        targets=", ".join(t.replace("_", " ") for t in CHOLECT50_TARGETS),
        phases=", ".join(CHOLEC80_PHASES),
        cvs1=CVS_CRITERIA[0],
        cvs2=CVS_CRITERIA[1],
        cvs3=CVS_CRITERIA[2],
    )


_READERS: dict[str, Callable[[str], Parsed[Any]]] = {
    "instrument_recognition": lambda text: parse_labels(text, CHOLEC80_TOOLS),
    "tissue_recognition": lambda text: parse_labels(text, CHOLECT50_TARGETS),
    "grid": parse_grid,
    "action": lambda text: parse_labels(text, CHOLECT50_VERBS),
    "triplet": parse_triplets,
    "cvs": parse_cvs,
    "phase": lambda text: parse_label(text, CHOLEC80_PHASES),
}


def read_answer(task: PerceptionTask, text: str) -> Parsed[Any] | None:
    """Read the perception model's reply in the task's format, with the shared answer parser.

    The evals read the same styles with the same functions (`surgagent.tools.answers`), so
    the tool and the benchmark agree on what an answer says.

    Args:
        task: The task style the question was asked in.
        text: The model's reply (a ``<think>`` block is dropped).

    Returns:
        The parsed value (boxes as ``[{"label": ..., "box": [x1, y1, x2, y2]}, ...]``, 0-1),
        or not ok with the reason; None for free-text (``open``) questions.
    """
    if task in ("instrument_localization", "tissue_localization"):
        boxes = parse_boxes(text)
        if not boxes.ok or boxes.value is None:
            return Parsed(ok=False, error=boxes.error)
        return Parsed(ok=True, value=[box.answer() for box in boxes.value])
    reader = _READERS.get(task)
    return reader(text) if reader else None


def _shown(result: PerceptionResult) -> str:
    """The parsed value as the planner reads it (boxes as ``name [x1, y1, x2, y2]``, 0-1)."""
    if result.task.endswith("_localization") and isinstance(result.parsed, list):
        return "; ".join(
            f"{box['label'] or 'object'} {[round(v, 3) for v in box['box']]}"
            for box in result.parsed
        )
    return str(result.parsed)


def _summary(result: PerceptionResult) -> str:
    when = ", ".join(format_time(t) for t in result.times)
    text = f"Perception ({result.task}) on frames at {when}: {result.answer}"
    if result.task != "open":
        text += (
            f"\nParsed: {_shown(result)}"
            if result.parse_error is None
            else f"\n(The answer could not be read as {result.task}: {result.parse_error})"
        )
    for note in result.disagreements:
        text += f"\nDisagreement: {note}"
    return text if len(text) <= _MAX_TEXT else text[:_MAX_TEXT] + " [...]"


def ask_perception(ctx: PerceptionContext, args: PerceptionArgs) -> tuple[str, PerceptionResult]:
    """Ask the perception model ``args.question`` about the chosen frames of the case.

    Raises:
        ToolInputError: For bad times, too many frames, or no perception model.
        BackendError: If the perception model fails (the graph retries, then reports).
    """
    if ctx.vision is None:
        raise ToolInputError("no perception model is configured; use look_at_frames instead.")
    times = args.wanted_times()
    if len(times) > MAX_PERCEPTION_FRAMES:
        raise ToolInputError(
            f"asked about {len(times)} frames; ask about at most {MAX_PERCEPTION_FRAMES} at once."
        )
    frames = sample_frames(ctx.case, times, ctx.cache, max_side=ctx.max_image_side)
    images = [load_image(frame.path) for frame in frames]
    reply = ctx.vision.answer(images, _render(args.task, args.question))
    parsed = read_answer(args.task, reply.text)
    result = PerceptionResult(
        case_id=ctx.case.id,
        task=args.task,
        question=args.question,
        times=[frame.time for frame in frames],
        frames=[str(frame.path) for frame in frames],
        answer=reply.text,
        parsed=parsed.value if parsed and parsed.ok else None,
        parse_error=parsed.error if parsed and not parsed.ok else None,
        model=ctx.vision.model_id,
        usage=reply.usage,
    )
    result.disagreements = cross_check(ctx, result)
    return _summary(result), result


def _instrument_notes(ctx: Any, result: PerceptionResult) -> list[str]:
    """Frames where perception and the detector disagree about the instruments.

    A frame disagrees where the detector sees an instrument perception does not name, or
    perception names one the detector sees in none of the frames asked about.
    """
    named = {norm_label(name) for name in result.parsed}
    frames = ctx.detector.detect(ctx.case, result.times, ctx.cache)
    found_by_frame = [(f.time, {norm_label(d.name) for d in f.detections}) for f in frames]
    found_anywhere = set().union(*(found for _, found in found_by_frame))
    notes = []
    for time, found in found_by_frame:
        if found - named or named - found_anywhere:
            notes.append(
                f"at {format_time(time)} perception names {', '.join(sorted(named)) or 'none'} "
                f"but the detector finds {', '.join(sorted(found)) or 'none'}."
            )
    return notes


def _phase_notes(ctx: Any, result: PerceptionResult) -> list[str]:
    """Frames where the phase segmenter names another phase than perception."""
    said = result.parsed if isinstance(result.parsed, str) else result.parsed[0]
    prediction = ctx.segmenter.predict(ctx.case, ctx.cache)
    notes = []
    for t in result.times:
        segment = prediction.segment_at(t)
        if norm_label(segment.phase) != norm_label(str(said)):
            notes.append(
                f"at {format_time(t)} perception says {said} but the phase "
                f"segmenter says {segment.phase} (confidence {segment.confidence:.2f})."
            )
    return notes


def cross_check(ctx: Any, result: PerceptionResult) -> list[str]:
    """Sentences where the detector or segmenter disagrees with perception at the same time.

    Only engines the run has configured are asked, and only for tasks they also answer
    (instrument recognition, phase), and only about what perception's answer was read to
    say: an instrument it denies ("no clipper") is not one it names. An answer about several
    frames names what is in any of them, so an instrument is contradicted only where the
    detector sees it in none. An engine that fails here is logged and skipped: the
    perception answer stands on its own.
    """
    if result.parsed is None or result.parse_error is not None:
        return []  # an unreadable answer says nothing to compare; 'none seen' does
    try:
        if result.task == "instrument_recognition" and getattr(ctx, "detector", None):
            return _instrument_notes(ctx, result)
        if result.task == "phase" and getattr(ctx, "segmenter", None):
            return _phase_notes(ctx, result)
    except SurgAgentError as error:
        logger.warning("cross-check skipped: %s", error)
    return []
