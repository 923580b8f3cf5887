"""The one parser of free-text answers in SurgVLM's styles, for the perception tool and the evals.

Each parser drops a ``<think>…</think>`` block (or the lone ``</think>`` of a prompt that
opened it) and returns a `Parsed` value: ``ok`` with the structured value, or not ok with the
reason, never an exception on text, so callers count unparseable answers instead of losing
them. The perception tool and `surgagent.evals.parsers` both call these functions, so the
agent is measured on what it reads.

    parse_labels("No clipper is visible; only the grasper.", CHOLEC80_TOOLS).value  # ["Grasper"]
    parse_cvs("Criterion 1: No; Criterion 2: No; Criterion 3: Yes.").value  # [False, False, True]

Values: ``str`` for one label (as the vocabulary spells it, or ``"yes"``/``"no"``),
``list[str]`` for several, ``[c1, c2, c3]`` booleans for CVS, ``[[i, v, t], ...]`` for
triplets (CholecT50 spelling), ``list[str]`` of `GRID_CELLS` for grid areas, `Box` (0-1) for
boxes.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Any, Generic, TypeVar

from pydantic import BaseModel

from surgagent.tools._answer_labels import (
    TARGET_SYNONYMS,
    TOOL_SYNONYMS,
    VERB_SYNONYMS,
    canonical,
    find_labels,
    label_forms,
    mentions,
    norm,
)
from surgagent.tools._answer_shapes import Box, cvs_values, find_boxes, grid_cells
from surgagent.tools.vocabulary import CHOLECT50_INSTRUMENTS, CHOLECT50_TARGETS, CHOLECT50_VERBS

__all__ = [
    "THINK_CLOSE",
    "THINK_OPEN",
    "Box",
    "Parsed",
    "final_answer",
    "norm_label",
    "only_labels",
    "parse_boxes",
    "parse_cvs",
    "parse_free_text",
    "parse_grid",
    "parse_label",
    "parse_labels",
    "parse_triplets",
    "parse_yes_no",
    "split_thinking",
]

T = TypeVar("T")

THINK_OPEN = "<think>"
THINK_CLOSE = "</think>"

_ANSWER_MARK = re.compile(r"\banswer\s*\**\s*(?:is\b\s*:?|:)", re.I)
_LETTER = re.compile(r"^\(?([a-z])[).:]?$", re.I)
_NONE = re.compile(
    r"\b(?:none|nothing|no (?:\w+ ){0,2}"
    r"(?:tools?|instruments?|triplets?|actions?|structures?|tissues?))\b"
)
_YES, _NO = {"yes", "true"}, {"no", "false"}


class Parsed(BaseModel, Generic[T]):
    """A parser's outcome: ``value`` when ``ok``, else ``error`` says why not."""

    ok: bool
    value: T | None = None
    error: str | None = None


def split_thinking(text: str, *, thinking: bool = False) -> tuple[str, str]:
    """Split a completion into its thinking and its answer.

    Handles ``<think>…</think>answer``, ``…</think>answer`` (the prompt opened the block),
    no thinking at all, and an unclosed ``<think>`` (a reply cut off while thinking).

    Args:
        text: The raw completion.
        thinking: Whether the prompt already opened a think block; then a completion with no
            ``</think>`` at all is unfinished thinking rather than an answer.

    Returns:
        ``(reasoning, answer)``, both stripped; either may be empty.
    """
    if THINK_CLOSE in text:
        head, _, answer = text.partition(THINK_CLOSE)
        return head.replace(THINK_OPEN, "").strip(), answer.strip()
    before, opened, after = text.partition(THINK_OPEN)
    if opened:
        return after.strip(), before.strip()
    if thinking:
        return text.strip(), ""
    return "", text.strip()


def final_answer(text: str) -> Parsed[str]:
    """The answer part of a reply, without its thinking; not ok when there is none."""
    _, answer = split_thinking(text or "")
    if answer:
        return Parsed(ok=True, value=answer)
    cut = THINK_OPEN in (text or "") and THINK_CLOSE not in text
    return Parsed(
        ok=False, error="the reply stopped inside its <think> block" if cut else "empty answer"
    )


def norm_label(text: str) -> str:
    """``text`` as labels are compared: lower-case words, "CalotTriangle" split, no symbols."""
    return norm(text)


def _failed(parsed: Parsed[Any]) -> Parsed[Any]:
    return Parsed(ok=False, error=parsed.error)


def _scope(text: str, vocabulary: Sequence[str]) -> tuple[str, list[str]]:
    """The part of the text that counts (after the last "answer is"), and its labels."""
    marks = list(_ANSWER_MARK.finditer(text))
    if marks:
        tail = text[marks[-1].end() :]
        labels = find_labels(tail, vocabulary)
        if labels or _LETTER.match(tail.strip().strip("*").strip()):
            return tail, labels
    return text, find_labels(text, vocabulary)


def _options(vocabulary: Sequence[str]) -> str:
    return ", ".join(vocabulary[:10]) + (", ..." if len(vocabulary) > 10 else "")


def parse_yes_no(text: str) -> Parsed[str]:
    """Read ``"yes"`` or ``"no"``: the first word, else the only kind of answer word named."""
    answer = final_answer(text)
    if not answer.ok or answer.value is None:
        return answer
    text = answer.value
    marks = list(_ANSWER_MARK.finditer(text))
    words = norm(text[marks[-1].end() :] if marks else text).split()
    if words and words[0] in _YES | _NO:
        return Parsed(ok=True, value="yes" if words[0] in _YES else "no")
    kinds = {"yes" if w in _YES else "no" for w in words if w in _YES | _NO}
    if len(kinds) == 1:
        return Parsed(ok=True, value=kinds.pop())
    why = "both yes and no" if kinds else "neither yes nor no"
    return Parsed(ok=False, error=f"{why} in {text[:80]!r}")


def parse_label(
    text: str, vocabulary: Sequence[str], *, choices: Sequence[str] | None = None
) -> Parsed[str]:
    """Read the one label the answer gives.

    Labels are matched tolerant of case, spacing and punctuation, with synonyms of the known
    vocabularies ("Calot's triangle dissection", "dissection of the hepatocystic triangle").
    Denied labels ("not preparation but ...") do not count; after "the answer is" only the
    rest counts. Yes/no vocabularies read a yes/no answer.

    Args:
        text: The reply.
        vocabulary: The labels, as the dataset spells them.
        choices: Multiple-choice options, in order: a bare letter ("B", "(b)") picks one.

    Returns:
        The label; not ok when none or several different ones are named.
    """
    if {norm(v) for v in vocabulary} == {"yes", "no"}:
        return parse_yes_no(text)
    answer = final_answer(text)
    if not answer.ok or answer.value is None:
        return answer
    scope, labels = _scope(answer.value, vocabulary)
    if len(labels) == 1:
        return Parsed(ok=True, value=labels[0])
    if len(labels) > 1:
        return Parsed(ok=False, error=f"ambiguous: the answer names {', '.join(labels)}")
    letter = _LETTER.match(scope.strip().strip("*").strip())
    if letter and choices and ord(letter[1].lower()) - 97 < len(choices):
        return Parsed(ok=True, value=choices[ord(letter[1].lower()) - 97])
    return Parsed(ok=False, error=f"none of {_options(vocabulary)} in {answer.value[:80]!r}")


def parse_labels(text: str, vocabulary: Sequence[str]) -> Parsed[list[str]]:
    """Read every label the answer names as present, in order.

    Denied labels are left out ("No clipper is visible; only the grasper." -> the grasper);
    "none", "no instruments", or naming labels only to deny them gives ``[]``.

    Args:
        text: The reply.
        vocabulary: The labels, as the dataset spells them.

    Returns:
        The labels as ``vocabulary`` spells them; not ok when the answer names none of them
        and does not say "none".
    """
    answer = final_answer(text)
    if not answer.ok or answer.value is None:
        return _failed(answer)
    scope, labels = _scope(answer.value, vocabulary)
    if labels or _NONE.search(norm(scope)) or find_labels(scope, vocabulary, denied=True):
        return Parsed(ok=True, value=labels)
    return Parsed(ok=False, error=f"none of {_options(vocabulary)} in {answer.value[:80]!r}")


def only_labels(text: str, vocabulary: Sequence[str]) -> list[str]:
    """The labels of ``vocabulary`` that make up all of ``text`` (bar "and" and punctuation)."""
    labels = find_labels(text, vocabulary)
    forms, table = label_forms(vocabulary)
    rest = canonical(text, table)
    for form in forms:
        rest = re.sub(rf"{re.escape(form)}|{re.escape(form.replace(' ', ''))}", " ", rest)
    return labels if labels and not set(rest.split()) - {"and", ",", ".", ";", "the"} else []


def _triplet_groups(text: str, parts: tuple[Sequence[str], ...]) -> list[list[str]]:
    """Triplets written as ``<i, v, t>``, ``(i, v, t)``, ``[i, v, t]`` or ``i, v, t`` lines."""
    groups = re.findall(r"[<(\[]([^<>()\[\]]+)[>)\]]", text) or re.split(r"[\n;]+", text)
    found: list[list[str]] = []
    for group in groups:
        words = [w.strip() for w in re.split(r",|\|", group) if w.strip()]
        if len(words) != 3:
            continue
        picked = [only_labels(w, vocab) for w, vocab in zip(words, parts, strict=True)]
        if all(len(p) == 1 for p in picked):
            found.append([p[0] for p in picked])
    return found


def _triplet_prose(text: str, parts: tuple[Sequence[str], ...]) -> list[list[str]]:
    """Triplets in prose: an instrument, then its verb, then one or more targets.

    SurgVLM writes "the scissors are performing a cut action on the cystic duct, and the
    grasper is performing a grasp action on the gallbladder"; "the hook dissects the cystic
    plate" reads the same way.
    """
    canon = canonical(text, TOOL_SYNONYMS, VERB_SYNONYMS, TARGET_SYNONYMS)
    kinds = [
        (m, kind)
        for kind, vocab in enumerate(parts)
        for m in mentions(canon, label_forms(vocab)[0])
    ]
    found: list[list[str]] = []
    instrument = verb = None
    last = 0
    for mention, kind in sorted(kinds, key=lambda pair: pair[0].start):
        if re.search(r"[.;!?]", canon[last : mention.start]):  # a new sentence starts over
            instrument = verb = None
        last = mention.end
        if kind == 0:
            instrument, verb = mention.label, None
        elif kind == 1 and instrument:
            verb = mention.label
        elif kind == 2 and instrument and verb and not mention.denied:
            found.append([instrument, verb, mention.label])
    return found


def parse_triplets(
    text: str,
    instruments: Sequence[str] = CHOLECT50_INSTRUMENTS,
    verbs: Sequence[str] = CHOLECT50_VERBS,
    targets: Sequence[str] = CHOLECT50_TARGETS,
) -> Parsed[list[list[str]]]:
    """Read ⟨instrument, verb, target⟩ triplets in any of SurgVLM's forms.

    ``<grasper, retract, gallbladder>`` groups (also in round or square brackets), one
    ``i, v, t`` per line, or prose ("the grasper is performing a grasp action on the
    gallbladder"); "none" / "no triplet" gives ``[]``.

    Args:
        text: The reply.
        instruments: Instrument labels (CholecT50's by default).
        verbs: Verb labels.
        targets: Target labels.

    Returns:
        ``[[instrument, verb, target], ...]`` spelt as the vocabularies spell them, each once.
    """
    answer = final_answer(text)
    if not answer.ok or answer.value is None:
        return _failed(answer)
    parts = (instruments, verbs, targets)
    found = _triplet_groups(answer.value, parts) or _triplet_prose(answer.value, parts)
    unique = [t for k, t in enumerate(found) if t not in found[:k]]
    if unique:
        return Parsed(ok=True, value=unique)
    if _NONE.search(norm(answer.value)):
        return Parsed(ok=True, value=[])
    return Parsed(ok=False, error=f"no instrument, verb, target triplet in {answer.value[:80]!r}")


def parse_boxes(text: str) -> Parsed[list[Box]]:
    """Read boxes as ``[x1, y1, x2, y2]`` (0-1, or 0-1000) or ``name (x1,y1),(x2,y2)`` (0-1000).

    Returns:
        The boxes, corners as fractions 0-1; not ok when no valid box is written.
    """
    answer = final_answer(text)
    if not answer.ok or answer.value is None:
        return _failed(answer)
    boxes = find_boxes(answer.value)
    if not boxes:
        return Parsed(ok=False, error=f"no box in {answer.value[:80]!r}")
    return Parsed(ok=True, value=boxes)


def parse_grid(text: str) -> Parsed[list[str]]:
    """Read 3x3 grid cells: "middle right area, bottom left area", "upper left", "the centre".

    Returns:
        `GRID_CELLS` names ("middle right" is ``"right"``), in order; not ok when none.
    """
    answer = final_answer(text)
    if not answer.ok or answer.value is None:
        return _failed(answer)
    cells = grid_cells(answer.value)
    if not cells:
        return Parsed(ok=False, error=f"no grid cell in {answer.value[:80]!r}")
    return Parsed(ok=True, value=cells)


def parse_cvs(text: str) -> Parsed[list[bool]]:
    """Read the three critical-view-of-safety criteria.

    ``Criterion 1: No; Criterion 2: No; Criterion 3: Yes.``, ``C1: yes``, prose ("criterion 1
    is met, criterion 2 is not met, ..."), ``yes, no, yes``, ``criteria 1 and 3 are met``.

    Returns:
        ``[c1, c2, c3]``; not ok unless all three are answered.
    """
    answer = final_answer(text)
    if not answer.ok or answer.value is None:
        return _failed(answer)
    values = cvs_values(answer.value)
    if values is None:
        return Parsed(
            ok=False, error=f"not all three CVS criteria answered in {answer.value[:80]!r}"
        )
    return Parsed(ok=True, value=values)


def parse_free_text(text: str) -> Parsed[str]:
    """The answer as text: after the last "answer is" / "answer:", without the final period."""
    answer = final_answer(text)
    if not answer.ok or answer.value is None:
        return answer
    marks = list(_ANSWER_MARK.finditer(answer.value))
    kept = (answer.value[marks[-1].end() :] if marks else answer.value).strip(" *.\n\t")
    return Parsed(ok=True, value=kept) if kept else Parsed(ok=False, error="empty answer")
