"""Parsers that turn a system's free-text answer into its task's structured answer.

`PARSERS` holds one parser per task; each returns a `Parsed` (``ok`` and the value, or not ok
and the reason) and never raises on bad text, so unparseable answers are counted, not lost. A
``<think>…</think>`` block, or the lone ``</think>`` of a prompt that opened it, is dropped first.

    parsed = parse_answer(item, "</think>The phase is Calot's triangle dissection.")
    parsed.value  # "CalotTriangleDissection"

Values: ``str`` for one label (the item's choice as written, or ``"yes"``/``"no"``),
``list[str]`` for several, ``[c1, c2, c3]`` booleans for CVS, ``[[i, v, t], ...]`` for
triplets, ``{"label": str | None, "box": [x1, y1, x2, y2]}`` (0-1) for localization.

Label rules, kept simple on purpose:

- Labels are matched tolerant of case, spacing and punctuation, with a small synonym table
  for Cholec80 phases and tools and SAR-RARP50 actions ("calot's triangle dissection",
  "clipping and cutting", "gallbladder extraction", "clip applier"). A label inside a longer
  matched label ("left" in "left top") and a label right after "no"/"not"/"without" are not
  counted.
- Where the text has ``answer is`` / ``answer:`` and labels follow the last one, only that
  part counts (reasoning before it may name other labels).
- A single-label answer that still names two different labels is ambiguous: not ok. A bare
  letter ("B", "(b)") picks that choice.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from surgagent.evals.records import TaskRecord
from surgagent.tools.answers import (
    Parsed,
    parse_boxes,
    parse_grid,
    parse_labels,
    parse_triplets,
    split_thinking,
)
from surgagent.tools.vocabulary import (
    CHOLEC80_PHASES,
    CHOLEC80_TOOLS,
    CHOLECT50_INSTRUMENTS,
    CHOLECT50_TARGETS,
    CHOLECT50_VERBS,
    SAR_RARP50_ACTIONS,
)

__all__ = ["PARSERS", "gold_value", "parse_answer", "task_vocabulary"]


# Canonical (normalised) label form -> regexes over normalised text that mean the same.
_PHASE_SYNONYMS = {
    "calot triangle dissection": (
        r"(?:calots?|carlot) triangle dissection",
        r"dissection of (?:the )?(?:calots?|hepatocystic) triangle",
        r"hepatocystic triangle dissection",
        r"calots? dissection",
    ),
    "clipping cutting": (r"clipping (?:and )?cutting", r"clip and cut", r"cutting and clipping"),
    "gallbladder dissection": (r"dissection of (?:the )?gallbladder",),
    "gallbladder packaging": (r"packaging (?:of )?(?:the )?gallbladder", r"gallbladder packing"),
    "cleaning coagulation": (r"cleaning (?:and )?coagulation", r"coagulation and cleaning"),
    "gallbladder retraction": (
        r"gallbladder (?:extraction|removal)",
        r"(?:extraction|retraction|removal) of (?:the )?gallbladder",
    ),
}
_TOOL_SYNONYMS = {
    "specimen bag": (r"(?:specimen )?retrieval bag", r"endo ?bag", r"specimen bags"),
    "clipper": (r"clip (?:applier|applicator)", r"clippers"),
    "bipolar": (r"bipolar (?:forceps|grasper)s?",),
    "hook": (r"(?:monopolar |electrocautery |l )?hook (?:electrode|cautery)", r"hooks"),
    "irrigator": (r"suction (?:irrigator|irrigation)(?: device)?", r"irrigators"),
    "scissors": (r"scissor",),
    "grasper": (r"graspers", r"grasping forceps"),
}
_ACTION_SYNONYMS = {
    "returning dropping the needle": (
        r"(?:returning (?:or |and )?)?(?:dropping|returning) the needle",
    ),
    "picking up the needle": (r"picking the needle up", r"pick(?:ing)? up (?:the )?needle"),
}
_KNOWN = (
    (CHOLEC80_PHASES, _PHASE_SYNONYMS),
    (CHOLEC80_TOOLS, _TOOL_SYNONYMS),
    (SAR_RARP50_ACTIONS, _ACTION_SYNONYMS),
)
_DEFAULT_VOCABULARY: dict[str, Sequence[str]] = {
    "cholec80-phase": CHOLEC80_PHASES,
    "cholec80-phase-next": CHOLEC80_PHASES,
    "cholec80-tools": CHOLEC80_TOOLS,
    "sar-rarp50-action": SAR_RARP50_ACTIONS,
}
_ANSWER_MARK = re.compile(r"\banswer\s*\**\s*(?:is\b|:)", re.I)
_NEGATION = re.compile(r"\b(?:no|not|without|nor)\s+(?:(?:a|an|the|any)\s+)?$")
_LETTER = re.compile(r"^\(?([a-z])[).:]?$", re.I)
_NONE = re.compile(
    r"\b(?:none|nothing|no (?:\w+ ){0,2}(?:tools?|instruments?|triplets?|actions?))\b"
)
_YES, _NO = {"yes", "true"}, {"no", "false"}


def _norm(text: str) -> str:
    """Lower-case words, punctuation kept as separate tokens (it blocks negation and nesting)."""
    text = re.sub(r"(?<=[a-z])(?=[A-Z])", " ", text).lower()
    text = re.sub(r"['’]s\b", "s", text).replace("&", " and ")
    text = re.sub(r"([,.;:!?])", r" \1 ", text)
    text = re.sub(r"[^a-z0-9,.;:!?]+", " ", text)
    return re.sub(r"\bgall bladder\b", "gallbladder", re.sub(r"\s+", " ", text)).strip()


def _canonical(text: str, synonyms: Mapping[str, Sequence[str]]) -> str:
    text = _norm(text)
    for form, patterns in synonyms.items():
        for pattern in patterns:
            text = re.sub(rf"\b{pattern}\b", form, text)
    return text


def _synonyms(vocabulary: Sequence[str]) -> Mapping[str, Sequence[str]]:
    """The synonym table of the known vocabulary that holds every label, else none."""
    keys = {_norm(label) for label in vocabulary}
    for known, table in _KNOWN:
        if keys <= {_norm(label) for label in known}:
            return table
    return {}


def _spans(text: str, form: str) -> list[tuple[int, int]]:
    words = rf"(?:{re.escape(form)}|{re.escape(form.replace(' ', ''))})"
    return [m.span() for m in re.finditer(rf"(?<![a-z0-9]){words}(?![a-z0-9])", text)]


def _find(text: str, vocabulary: Sequence[str], *, negated: bool = False) -> list[str]:
    """Labels named in ``text``, in order; nested mentions dropped, negated ones unless asked."""
    table = _synonyms(vocabulary)
    forms = {_canonical(label, table): label for label in vocabulary}
    if len(forms) < len(vocabulary):  # synonyms merged two labels: match them literally
        table, forms = {}, {_norm(label): label for label in vocabulary}
    canon = _canonical(text, table)
    hits = parse_labels(canon, list(forms))
    if not hits.ok or not hits.value:
        return []
    spans = {form: _spans(canon, form) for form in hits.value}
    found: list[tuple[int, str]] = []
    for form, mine in spans.items():
        others = [s for other, theirs in spans.items() if other != form for s in theirs]
        free = [
            (a, b)
            for a, b in mine
            if not any(c <= a and b <= d and (c, d) != (a, b) for c, d in others)
            and (negated or not _NEGATION.search(canon[:a]))
        ]
        if free or not mine:
            found.append((free[0][0] if free else canon.find(form), forms[form]))
    return [label for _, label in sorted(found)]


def _scope(text: str, vocabulary: Sequence[str]) -> tuple[str, list[str]]:
    """The part of the text that counts (after the last "answer is"), and its labels."""
    marks = list(_ANSWER_MARK.finditer(text))
    if marks:
        tail = text[marks[-1].end() :]
        labels = _find(tail, vocabulary)
        if labels or _LETTER.match(tail.strip().strip("*").strip()):
            return tail, labels
    return text, _find(text, vocabulary)


def _vocabulary_of(item: TaskRecord) -> Sequence[str] | None:
    return item.choices or item.meta.get("vocabulary") or _DEFAULT_VOCABULARY.get(item.task)


def task_vocabulary(item: TaskRecord) -> list[str] | None:
    """The labels an item's answer is matched against: its choices, else the task's list."""
    vocabulary = _vocabulary_of(item)
    return list(vocabulary) if vocabulary else None


def _yes_no(text: str) -> Parsed[Any]:
    marks = list(_ANSWER_MARK.finditer(text))
    words = _norm(text[marks[-1].end() :] if marks else text).split()
    if words and words[0] in _YES | _NO:
        return Parsed(ok=True, value="yes" if words[0] in _YES else "no")
    kinds = {"yes" if w in _YES else "no" for w in words if w in _YES | _NO}
    if len(kinds) == 1:
        return Parsed(ok=True, value=kinds.pop())
    why = "both yes and no" if kinds else "neither yes nor no"
    return Parsed(ok=False, error=f"{why} in {text[:80]!r}")


def _single(item: TaskRecord, text: str) -> Parsed[Any]:
    vocabulary = _vocabulary_of(item)
    if not vocabulary:
        return Parsed(ok=False, error=f"item {item.id} has no choices to match the answer to")
    if {_norm(v) for v in vocabulary} == {"yes", "no"}:
        return _yes_no(text)
    scope, labels = _scope(text, vocabulary)
    if len(labels) == 1:
        return Parsed(ok=True, value=labels[0])
    if len(labels) > 1:
        return Parsed(ok=False, error=f"ambiguous: the answer names {', '.join(labels)}")
    letter = _LETTER.match(scope.strip().strip("*").strip())
    if letter and item.choices and ord(letter[1].lower()) - 97 < len(item.choices):
        return Parsed(ok=True, value=item.choices[ord(letter[1].lower()) - 97])
    options = ", ".join(vocabulary[:10]) + (", ..." if len(vocabulary) > 10 else "")
    return Parsed(ok=False, error=f"none of {options} in {text[:80]!r}")


def _multi(item: TaskRecord, text: str) -> Parsed[Any]:
    vocabulary = _vocabulary_of(item)
    if not vocabulary:
        return Parsed(ok=False, error=f"item {item.id} has no choices to match the answer to")
    scope, labels = _scope(text, vocabulary)
    if labels or _NONE.search(_norm(scope)) or _find(scope, vocabulary, negated=True):
        return Parsed(ok=True, value=labels)  # [] where every label named is negated
    return Parsed(ok=False, error=f"none of {', '.join(vocabulary)} in {text[:80]!r}")


_CVS_WORDS = (
    (r"\b(?:not (?:met|satisfied|achieved|fulfilled|present|seen|visible)|unmet|absent)\b", "no"),
    (r"\b(?:met|satisfied|achieved|fulfilled|present)\b", "yes"),
)
_CVS_ITEM = re.compile(
    r"\b(?:criterion|criteria|c)\s*#?\s*([123])\b"
    r"((?:(?!\b(?:criterion|c)\s*[123]\b)[^;\n])*?)\b(yes|no|true|false)\b"
)
_CVS_GROUP = re.compile(r"\bcriteria\s+([123](?:\s*(?:,|and)\s*[123])*)\s+(?:are\s+|is\s+)?yes\b")


def _cvs(item: TaskRecord, text: str) -> Parsed[Any]:
    """CVS as three booleans, from any of the forms below.

    Per-criterion lines (``Criterion 1: No; ...``, ``C1: yes, C2: no``), a bare list of three
    (``yes, no, yes``, ``[1, 0, 1]``), ``criteria 1 and 3 are met``, ``all criteria met``.
    """
    del item
    plain = text.lower()
    for pattern, word in _CVS_WORDS:
        plain = re.sub(pattern, word, plain)
    answers: dict[int, bool] = {}
    for number, _, word in _CVS_ITEM.findall(plain):
        answers.setdefault(int(number), word in _YES)
    listed = re.findall(r"\b(yes|no|true|false|1|0)\b", plain)
    if not answers and len(listed) == 3:
        rest = re.sub(r"\b(?:yes|no|true|false|1|0)\b", "", plain)
        if re.fullmatch(r"[\s\[\](),;:.]*", rest):
            return Parsed(ok=True, value=[w in ("yes", "true", "1") for w in listed])
    negative = re.search(r"\b(?:no|none|not)\b", plain)
    groups = _CVS_GROUP.findall(plain)
    if len(groups) == 1:
        for number in re.findall(r"[123]", groups[0]):
            answers.setdefault(int(number), True)
        if not negative:  # "criteria 1 and 3 are met", and nothing said against the others
            answers = {n: answers.get(n, False) for n in (1, 2, 3)}
    if not answers and not negative:
        if re.search(
            r"\b(?:all (?:three |3 )?criteria|cvs|critical view of safety)\b.*\byes", plain
        ):
            answers = {1: True, 2: True, 3: True}
    if not answers and re.search(r"\b(?:none of the|no) criteria\b", plain):
        answers = {1: False, 2: False, 3: False}
    if set(answers) == {1, 2, 3}:
        return Parsed(ok=True, value=[answers[1], answers[2], answers[3]])
    return Parsed(ok=False, error=f"not all three CVS criteria answered in {text[:80]!r}")


def _triplets(item: TaskRecord, text: str) -> Parsed[Any]:
    del item
    if _NONE.search(_norm(text)) and not re.search(r"[<(\[,]", text):
        return Parsed(ok=True, value=[])
    grouped = re.sub(r"[(\[]([^()\[\]<>]+)[)\]]", r"<\1>", text)
    parsed = parse_triplets(grouped, CHOLECT50_INSTRUMENTS, CHOLECT50_VERBS, CHOLECT50_TARGETS)
    if not parsed.ok or parsed.value is None:
        return Parsed(ok=False, error=parsed.error)
    return Parsed(ok=True, value=[list(triplet) for triplet in parsed.value])


def _box(item: TaskRecord, text: str) -> Parsed[Any]:
    parsed = parse_boxes(text)
    if not parsed.ok or not parsed.value:
        return Parsed(ok=False, error=parsed.error)
    asked = item.gold.get("label") if isinstance(item.gold, dict) else None
    asked = item.meta.get("label", asked)
    named = [b for b in parsed.value if asked and b.label and _norm(b.label) == _norm(asked)]
    box = (named or parsed.value)[0]
    return Parsed(ok=True, value={"label": box.label, "box": [box.x1, box.y1, box.x2, box.y2]})


def _grid(item: TaskRecord, text: str) -> Parsed[Any]:
    del item
    parsed = parse_grid(text)
    return Parsed(ok=parsed.ok, value=parsed.value, error=parsed.error)


def _free_text(item: TaskRecord, text: str) -> Parsed[Any]:
    del item
    marks = list(_ANSWER_MARK.finditer(text))
    answer = (text[marks[-1].end() :] if marks else text).strip(" *.\n\t")
    return Parsed(ok=True, value=answer) if answer else Parsed(ok=False, error="empty answer")


def _only_labels(text: str, known: Sequence[str]) -> list[str]:
    """The labels of ``known`` that make up all of ``text`` (bar "and" and punctuation)."""
    labels = _find(text, known)
    table = _synonyms(known)
    rest = _canonical(text, table)
    for label in labels:
        form = _canonical(label, table)
        rest = re.sub(rf"{re.escape(form)}|{re.escape(form.replace(' ', ''))}", " ", rest)
    return labels if labels and not set(rest.split()) - {"and", ",", ".", ";", "the"} else []


def _surgvlm_qa(item: TaskRecord, text: str) -> Parsed[Any]:
    """SurgVLM QA, parsed as its ``meta.qa_type`` says.

    A gold that is a known label picks the label list (Cholec80 phases or tools, SAR-RARP50
    actions); any other gold makes the answer free text.
    """
    kind = str(item.meta.get("qa_type", "")).lower()
    for word, parser in (("triplet", _triplets), ("cvs", _cvs), ("grid", _grid)):
        if word in kind:
            return parser(item, text)
    if "box" in kind or "locali" in kind:
        return _box(item, text)
    gold = str(item.gold)
    if item.choices:
        return _single(item, text)
    if _norm(gold).strip(" .") in _YES | _NO:
        return _yes_no(text)
    for known, _ in _KNOWN:
        if _only_labels(gold, known):
            labelled = item.model_copy(update={"choices": list(known)})
            return (_multi if known is CHOLEC80_TOOLS else _single)(labelled, text)
    return _free_text(item, text)


def gold_value(item: TaskRecord) -> Any:
    """The item's gold in the form its parser returns (surgvlm-qa gold text goes through it)."""
    if item.task == "surgvlm-qa" and isinstance(item.gold, str):
        parsed = _surgvlm_qa(item, item.gold)
        return parsed.value if parsed.ok else item.gold
    return item.gold


PARSERS: dict[str, Callable[[TaskRecord, str], Parsed[Any]]] = {
    "cholec80-phase": _single,
    "cholec80-phase-next": _single,
    "cholec80-tools": _multi,
    "cholec80-multistep": _single,
    "cholect50-triplet": _triplets,
    "endoscapes-cvs": _cvs,
    "endovis18-vqa": _single,
    "endovis17-localization": _box,
    "sar-rarp50-action": _single,
    "surgvlm-qa": _surgvlm_qa,
}


def parse_answer(item: TaskRecord, text: str) -> Parsed[Any]:
    """Parse a system's answer to ``item`` into the task's structured form.

    Args:
        item: The task item (its task picks the parser; its choices are the labels).
        text: The system's final text, possibly with a ``<think>`` block.

    Returns:
        ``Parsed(ok=True, value=...)``, or ``ok=False`` with the reason; never raises on text.

    Raises:
        ValueError: For a task with no parser, naming the registered tasks.
    """
    parser = PARSERS.get(item.task)
    if parser is None:
        raise ValueError(f"no parser for task {item.task!r}; known tasks: {', '.join(PARSERS)}")
    _, answer = split_thinking(text or "")
    if not answer:
        cut = "<think>" in (text or "") and "</think>" not in text
        why = "the reply stopped inside its <think> block" if cut else "empty answer"
        return Parsed(ok=False, error=why)
    return parser(item, answer)
