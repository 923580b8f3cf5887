"""The evals' side of answer parsing: a task item mapped onto the one answer parser.

The parsing itself lives in `surgagent.tools.answers`, which the perception tool uses too, so
the benchmark measures what the agent reads. Here an item picks the parser (its task) and the
labels (its choices, else the task's vocabulary). Parsers return a `Parsed` (``ok`` and the
value, or not ok and the reason) and never raise on text, so unparseable answers are counted
and listed, not lost. A ``<think>…</think>`` block, or a lone ``</think>``, is dropped first.

    parsed = parse_answer(item, "</think>The phase is Calot's triangle dissection.")
    parsed.value  # "CalotTriangleDissection"

Values: ``str`` for one label (the item's choice as written, or ``"yes"``/``"no"``),
``list[str]`` for several, ``[c1, c2, c3]`` booleans for CVS, ``[[i, v, t], ...]`` for
triplets, ``{"label": str | None, "box": [x1, y1, x2, y2]}`` (0-1) for localization,
``list[str]`` of grid cells for SurgVLM grid questions.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from surgagent.evals.records import TaskRecord
from surgagent.tools.answers import (
    Parsed,
    norm_label,
    only_labels,
    parse_boxes,
    parse_cvs,
    parse_free_text,
    parse_grid,
    parse_label,
    parse_labels,
    parse_triplets,
    parse_yes_no,
)
from surgagent.tools.vocabulary import (
    CHOLEC80_PHASES,
    CHOLEC80_TOOLS,
    SAR_RARP50_ACTIONS,
)

__all__ = [
    "gold_value",
    "parse_answer",
    "parse_box_answer",
    "parse_cvs_answer",
    "parse_multi",
    "parse_single",
    "parse_surgvlm_qa",
    "parse_triplet_answer",
    "task_vocabulary",
]

# Label lists a surgvlm-qa gold may come from, and whether an answer names one or several.
_QA_VOCABULARIES: tuple[tuple[Sequence[str], bool], ...] = (
    (CHOLEC80_PHASES, False),
    (CHOLEC80_TOOLS, True),
    (SAR_RARP50_ACTIONS, False),
)


def _vocabulary_of(item: TaskRecord) -> Sequence[str] | None:
    from surgagent.evals.tasks import get_task

    return item.choices or item.meta.get("vocabulary") or get_task(item.task).labels()


def task_vocabulary(item: TaskRecord) -> list[str] | None:
    """The labels an item's answer is matched against: its choices, else the task's list."""
    vocabulary = _vocabulary_of(item)
    return list(vocabulary) if vocabulary else None


def _no_vocabulary(item: TaskRecord) -> Parsed[Any]:
    return Parsed(
        ok=False,
        error=f"item {item.id} has no choices to match the answer to; give it choices or a "
        "meta.vocabulary",
    )


def parse_single(item: TaskRecord, text: str) -> Parsed[Any]:
    """One label of the item's choices (or the task's vocabulary); a bare letter picks a choice."""
    vocabulary = _vocabulary_of(item)
    if not vocabulary:
        return _no_vocabulary(item)
    return parse_label(text, vocabulary, choices=item.choices)


def parse_multi(item: TaskRecord, text: str) -> Parsed[Any]:
    """Every label named as present; denied ones ("no clipper") left out, "none" is ``[]``."""
    vocabulary = _vocabulary_of(item)
    if not vocabulary:
        return _no_vocabulary(item)
    return parse_labels(text, vocabulary)


def parse_cvs_answer(item: TaskRecord, text: str) -> Parsed[Any]:
    """The three CVS criteria as booleans (lines, prose, or a list of three)."""
    del item
    return parse_cvs(text)


def parse_triplet_answer(item: TaskRecord, text: str) -> Parsed[Any]:
    """CholecT50 triplets ``[[instrument, verb, target], ...]`` (groups, lines or prose)."""
    del item
    return parse_triplets(text)


def parse_box_answer(item: TaskRecord, text: str) -> Parsed[Any]:
    """The box of the asked instrument (``meta.label`` or the gold's label), else the first."""
    parsed = parse_boxes(text)
    if not parsed.ok or not parsed.value:
        return Parsed(ok=False, error=parsed.error)
    asked = item.gold.get("label") if isinstance(item.gold, dict) else None
    asked = item.meta.get("label", asked)
    named = [
        box
        for box in parsed.value
        if asked and box.label and norm_label(box.label) == norm_label(asked)
    ]
    return Parsed(ok=True, value=(named or parsed.value)[0].answer())


def _grid_answer(item: TaskRecord, text: str) -> Parsed[Any]:
    del item
    return parse_grid(text)


def parse_surgvlm_qa(item: TaskRecord, text: str) -> Parsed[Any]:
    """SurgVLM QA, parsed as its ``meta.qa_type`` says.

    Triplet, CVS, grid and box types use their parsers. Otherwise a gold that is a known
    label picks the label list (Cholec80 phases or tools, SAR-RARP50 actions); a yes/no gold
    reads yes/no; any other gold makes the answer free text.
    """
    kind = str(item.meta.get("qa_type", "")).lower()
    typed: tuple[tuple[str, Callable[[TaskRecord, str], Parsed[Any]]], ...] = (
        ("triplet", parse_triplet_answer),
        ("cvs", parse_cvs_answer),
        ("grid", _grid_answer),
        ("box", parse_box_answer),
        ("locali", parse_box_answer),
    )
    for word, parser in typed:
        if word in kind:
            return parser(item, text)
    if item.choices:
        return parse_single(item, text)
    gold = str(item.gold)
    if norm_label(gold).strip(" .") in ("yes", "no", "true", "false"):
        return parse_yes_no(text)
    for known, several in _QA_VOCABULARIES:
        if only_labels(gold, known):
            return parse_labels(text, known) if several else parse_label(text, known)
    return parse_free_text(text)


def gold_value(item: TaskRecord) -> Any:
    """The item's gold in the form its parser returns (surgvlm-qa gold text goes through it)."""
    if item.task == "surgvlm-qa" and isinstance(item.gold, str):
        parsed = parse_surgvlm_qa(item, item.gold)
        return parsed.value if parsed.ok else item.gold
    return item.gold


def parse_answer(item: TaskRecord, text: str) -> Parsed[Any]:
    """Parse a system's answer to ``item`` with its task's parser (`TaskSpec.parse`).

    Args:
        item: The task item (its task picks the spec; its choices are the labels).
        text: The system's final text, possibly with a ``<think>`` block.

    Returns:
        ``Parsed(ok=True, value=...)``, or ``ok=False`` with the reason; never raises on text.

    Raises:
        ValueError: For an unknown task, naming the registered tasks.
    """
    from surgagent.evals.tasks import get_task

    return get_task(item.task).parse(item, text)
