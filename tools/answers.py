"""Parsers for the free-text answers of surgical VLMs (SurgVLM / SurgSigma answer styles).

Each parser returns a `Parsed` value: ``ok`` with the structured value, or not ok with the
reason, never an exception, so callers can count unparseable answers instead of losing them.

    parse_boxes("grasper (120,80),(400,300)").value  # [Box(label="grasper", x1=0.12, ...)]
    parse_cvs("Criterion 1: No; Criterion 2: No; Criterion 3: Yes.").value  # (False, False, True)
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Generic, TypeVar

from pydantic import BaseModel

from surgagent.tools.vocabulary import GRID_CELLS

__all__ = [
    "Box",
    "Parsed",
    "parse_boxes",
    "parse_cvs",
    "parse_grid",
    "parse_labels",
    "parse_triplets",
    "split_thinking",
    "THINK_CLOSE",
    "THINK_OPEN",
]

T = TypeVar("T")

THINK_OPEN = "<think>"
THINK_CLOSE = "</think>"

_NUMBER = r"-?\d+(?:\.\d+)?"
_LIST_BOX = re.compile(
    rf"\[\s*({_NUMBER})\s*,\s*({_NUMBER})\s*,\s*({_NUMBER})\s*,\s*({_NUMBER})\s*\]"
)
_PAIR_BOX = re.compile(
    rf"(?:([A-Za-z][\w \-]*?)\s*:?\s*)?\(\s*({_NUMBER})\s*,\s*({_NUMBER})\s*\)\s*,?\s*"
    rf"\(\s*({_NUMBER})\s*,\s*({_NUMBER})\s*\)"
)
_CRITERION = re.compile(
    r"(?:criterion|c)\s*([123])\s*[:=\-]?\s*(yes|no|true|false|achieved|not)", re.I
)
_GRID_WORDS = {"centre": "center", "middle": "center", "upper": "top", "lower": "bottom"}


class Parsed(BaseModel, Generic[T]):
    """A parser's outcome: ``value`` when ``ok``, else ``error`` says why not."""

    ok: bool
    value: T | None = None
    error: str | None = None


class Box(BaseModel):
    """A box with corners normalised to 0-1 (x right, y down) and an optional label."""

    label: str | None = None
    x1: float
    y1: float
    x2: float
    y2: float

    def as_list(self) -> list[float]:
        """SurgVLM v1 style: ``[x1, y1, x2, y2]`` normalised to 0-1."""
        return [round(v, 3) for v in (self.x1, self.y1, self.x2, self.y2)]

    def as_pairs(self) -> str:
        """SurgSigma style: ``name (x1,y1),(x2,y2)`` with 0-1000 integers."""
        x1, y1, x2, y2 = (round(v * 1000) for v in (self.x1, self.y1, self.x2, self.y2))
        return f"{self.label or 'object'} ({x1},{y1}),({x2},{y2})"


def _normalise(text: str) -> str:
    return re.sub(r"[^a-z0-9]+", " ", text.lower()).strip()


def _box(label: str | None, values: Sequence[str]) -> Box | None:
    numbers = [float(v) for v in values]
    scale = 1000.0 if max(numbers) > 1.0 else 1.0
    if max(numbers) > 1000 or min(numbers) < 0:
        return None
    x1, y1, x2, y2 = (n / scale for n in numbers)
    if x2 <= x1 or y2 <= y1:
        return None
    clean = label.strip(" :-,").strip() if label else None
    return Box(label=clean or None, x1=x1, y1=y1, x2=x2, y2=y2)


def parse_boxes(text: str) -> Parsed[list[Box]]:
    """Read boxes as ``[x1, y1, x2, y2]`` (0-1, or 0-1000) or ``name (x1,y1),(x2,y2)`` (0-1000)."""
    boxes = [b for m in _PAIR_BOX.finditer(text) if (b := _box(m.group(1), m.groups()[1:]))]
    if not boxes:
        boxes = [b for m in _LIST_BOX.finditer(text) if (b := _box(None, m.groups()))]
    if not boxes:
        return Parsed(ok=False, error=f"no box in {text[:80]!r}")
    return Parsed(ok=True, value=boxes)


def parse_grid(text: str) -> Parsed[list[str]]:
    """Read 3x3 grid cells named in words ("top right area", "the centre")."""
    words = _normalise(text)
    for old, new in _GRID_WORDS.items():
        words = re.sub(rf"\b{old}\b", new, words)
    words = re.sub(r"\b(top|bottom) (left|right)\b", r"\1_\2", words)
    found: list[str] = []
    for token in words.split():
        cell = token.replace("_", " ")
        if cell in GRID_CELLS and cell not in found:
            found.append(cell)
    if not found:
        return Parsed(ok=False, error=f"no grid cell in {text[:80]!r}")
    return Parsed(ok=True, value=found)


def parse_cvs(text: str) -> Parsed[tuple[bool, bool, bool]]:
    """Read ``Criterion 1: No; Criterion 2: No; Criterion 3: Yes.`` (also ``C1: yes``)."""
    answers: dict[int, bool] = {}
    for number, word in _CRITERION.findall(text):
        answers.setdefault(int(number), word.lower() in ("yes", "true", "achieved"))
    if set(answers) != {1, 2, 3}:
        return Parsed(ok=False, error=f"not all three criteria answered in {text[:80]!r}")
    return Parsed(ok=True, value=(answers[1], answers[2], answers[3]))


def parse_labels(text: str, vocabulary: Sequence[str]) -> Parsed[list[str]]:
    """Find vocabulary labels named in ``text``, tolerant of case, spacing and punctuation.

    ``CalotTriangleDissection`` matches "Calot triangle dissection" and "calot-triangle".
    Labels are returned in the order they appear in the text.
    """
    words = f" {_normalise(text)} "
    spaced = {label: _normalise(re.sub(r"(?<=[a-z])(?=[A-Z])", " ", label)) for label in vocabulary}
    hits = []
    for label, form in spaced.items():
        position = words.find(f" {form} ")
        if position < 0:
            position = words.find(f" {form.replace(' ', '')} ")
        if position >= 0:
            hits.append((position, label))
    if not hits:
        return Parsed(ok=False, error=f"none of {', '.join(vocabulary)} in {text[:80]!r}")
    return Parsed(ok=True, value=[label for _, label in sorted(hits)])


def parse_triplets(
    text: str, instruments: Sequence[str], verbs: Sequence[str], targets: Sequence[str]
) -> Parsed[list[tuple[str, str, str]]]:
    """Read ⟨instrument, verb, target⟩ triplets, one per line or in ``<a, b, c>`` groups."""
    groups = re.findall(r"<([^<>]+)>", text) or re.split(r"[\n;]+", text)
    found: list[tuple[str, str, str]] = []
    for group in groups:
        parts = [p.strip() for p in re.split(r",|\|", group) if p.strip()]
        if len(parts) != 3:
            continue
        picked = []
        for part, vocabulary in zip(parts, (instruments, verbs, targets), strict=True):
            match = parse_labels(part.replace("_", " "), vocabulary)
            picked.append(match.value[0] if match.ok and match.value else None)
        if all(picked) and tuple(picked) not in found:
            found.append((str(picked[0]), str(picked[1]), str(picked[2])))
    if not found:
        return Parsed(ok=False, error=f"no instrument, verb, target triplet in {text[:80]!r}")
    return Parsed(ok=True, value=found)


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
