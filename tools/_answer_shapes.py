"""Readers of the answers that are not labels: boxes, 3x3 grid cells, the three CVS criteria.

The private half of `surgagent.tools.answers`, which wraps these in `Parsed` values. Each
reader takes the answer text (thinking already dropped) and returns what it found, empty or
None when it found nothing.

    grid_cells("middle right area, bottom left area")  # ["right", "bottom left"]
"""

from __future__ import annotations

import re
from collections.abc import Sequence

from pydantic import BaseModel

from surgagent.tools._answer_labels import norm
from surgagent.tools.vocabulary import GRID_CELLS

__all__ = ["Box", "cvs_values", "find_boxes", "grid_cells"]

_NUMBER = r"-?\d+(?:\.\d+)?"
_LIST_BOX = re.compile(
    rf"\[\s*({_NUMBER})\s*,\s*({_NUMBER})\s*,\s*({_NUMBER})\s*,\s*({_NUMBER})\s*\]"
)
_PAIR_BOX = re.compile(
    rf"(?:([A-Za-z][\w \-]*?)\s*:?\s*)?\(\s*({_NUMBER})\s*,\s*({_NUMBER})\s*\)\s*,?\s*"
    rf"\(\s*({_NUMBER})\s*,\s*({_NUMBER})\s*\)"
)


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

    def answer(self) -> dict[str, object]:
        """The parsed value of a box answer: ``{"label": ..., "box": [x1, y1, x2, y2]}``."""
        return {"label": self.label, "box": [self.x1, self.y1, self.x2, self.y2]}


def _box(label: str | None, values: Sequence[str]) -> Box | None:
    numbers = [float(v) for v in values]
    if max(numbers) > 1000 or min(numbers) < 0:
        return None
    scale = 1000.0 if max(numbers) > 1.0 else 1.0  # SurgSigma's 0-1000, else v1's 0-1
    x1, y1, x2, y2 = (n / scale for n in numbers)
    if x2 <= x1 or y2 <= y1:
        return None
    clean = label.strip(" :-,").strip() if label else None
    return Box(label=clean or None, x1=x1, y1=y1, x2=x2, y2=y2)


def find_boxes(text: str) -> list[Box]:
    """Boxes as ``name (x1,y1),(x2,y2)`` (0-1000), else ``[x1, y1, x2, y2]`` (0-1 or 0-1000)."""
    boxes = [b for m in _PAIR_BOX.finditer(text) if (b := _box(m.group(1), m.groups()[1:]))]
    return boxes or [b for m in _LIST_BOX.finditer(text) if (b := _box(None, m.groups()))]


# Grid words: rows top / middle / bottom, columns left / center / right ("middle" and
# "center" name the middle row or the middle column, whichever the other word leaves).
_ROWS = {"top": "top", "upper": "top", "bottom": "bottom", "lower": "bottom"}
_COLUMNS = {"left": "left", "right": "right"}
_MIDDLE = {"middle", "center", "centre", "central"}
_GRID_DENIED = re.compile(r"\b(?:not|no|never)\s+(?:(?:in|at|on)\s+)?(?:the\s+)?$")


def _cell(row: str, column: str) -> str:
    """The `GRID_CELLS` name of a row and column ("middle right" is "right")."""
    name = " ".join(part for part in (row, column) if part not in ("middle", "center"))
    return name or "center"


def _row(word: str) -> str | None:
    return "middle" if word in _MIDDLE else _ROWS.get(word)


def _column(word: str) -> str | None:
    return "center" if word in _MIDDLE else _COLUMNS.get(word)


def grid_cells(text: str) -> list[str]:
    """The 3x3 grid cells named, in order, each once.

    "<row> <column> area" (SurgVLM: "middle right area" is one cell), the column first
    ("left top"), or one word ("top", "the centre"). Cells after "not" are left out.
    """
    words = norm(text).split()
    found: list[str] = []
    k = 0
    while k < len(words):
        word, following = words[k], words[k + 1] if k + 1 < len(words) else ""
        cell, width = None, 1
        if _row(word) and _column(following):
            cell, width = _cell(str(_row(word)), str(_column(following))), 2
        elif _column(word) and _row(following):
            cell, width = _cell(str(_row(following)), str(_column(word))), 2
        elif _row(word) or _column(word):
            cell = _cell(_row(word) or "middle", _column(word) or "center")
        denied = _GRID_DENIED.search(" ".join(words[:k]) + " ")
        if cell and cell in GRID_CELLS and not denied and cell not in found:
            found.append(cell)
        k += width
    return found


_CVS_WORDS = (
    (
        r"\b(?:not (?:been )?(?:met|satisfied|achieved|fulfilled|present|seen|visible)|unmet)\b",
        "no",
    ),
    (r"\babsent\b", "no"),
    (r"\b(?:met|satisfied|achieved|fulfilled|present)\b", "yes"),
    (r"\b(?:the )?first criterion\b", "criterion 1"),
    (r"\b(?:the )?second criterion\b", "criterion 2"),
    (r"\b(?:the )?third criterion\b", "criterion 3"),
)
_CVS_ITEM = re.compile(
    r"\b(?:criterion|criteria|c)\s*#?\s*([123])\b"
    r"((?:(?!\b(?:criterion|c)\s*[123]\b)[^;\n])*?)\b(yes|no|true|false)\b"
)
_CVS_GROUP = re.compile(r"\bcriteria\s+([123](?:\s*(?:,|and)\s*[123])*)\s+(?:are\s+|is\s+)?yes\b")


def _cvs_overall(plain: str, answers: dict[int, bool]) -> dict[int, bool]:
    """Fill the criteria from group statements ("criteria 1 and 3 are met", "all criteria")."""
    negative = re.search(r"\b(?:no|none|not)\b", plain)
    groups = _CVS_GROUP.findall(plain)
    if len(groups) == 1:
        for number in re.findall(r"[123]", groups[0]):
            answers.setdefault(int(number), True)
        if not negative:  # "criteria 1 and 3 are met", and nothing said against the others
            answers = {n: answers.get(n, False) for n in (1, 2, 3)}
    all_met = r"\b(?:all (?:three |3 )?criteria|cvs|critical view of safety)\b.*\byes"
    if not answers and not negative and re.search(all_met, plain):
        answers = {1: True, 2: True, 3: True}
    if not answers and re.search(r"\b(?:none of the|no) criteria\b", plain):
        answers = {1: False, 2: False, 3: False}
    return answers


def cvs_values(text: str) -> list[bool] | None:
    """The three CVS criteria as booleans, or None unless all three are answered.

    Per-criterion lines (``Criterion 1: No; ...``, ``C1: yes``), prose ("criterion 1 is met,
    criterion 2 is not met"), a bare list of three (``yes, no, yes``, ``[1, 0, 1]``),
    ``criteria 1 and 3 are met``, ``all criteria met``, ``none of the criteria are met``.
    """
    plain = text.lower()
    for pattern, word in _CVS_WORDS:
        plain = re.sub(pattern, word, plain)
    answers: dict[int, bool] = {}
    for number, _, word in _CVS_ITEM.findall(plain):
        answers.setdefault(int(number), word in ("yes", "true"))
    listed = re.findall(r"\b(yes|no|true|false|1|0)\b", plain)
    if not answers and len(listed) == 3:
        rest = re.sub(r"\b(?:yes|no|true|false|1|0)\b", "", plain)
        if re.fullmatch(r"[\s\[\](),;:.]*", rest):
            return [word in ("yes", "true", "1") for word in listed]
    answers = _cvs_overall(plain, answers)
    return [answers[1], answers[2], answers[3]] if set(answers) == {1, 2, 3} else None
