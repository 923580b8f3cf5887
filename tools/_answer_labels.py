"""Finding vocabulary labels in free text: spelling variants, synonyms and negation.

The private half of `surgagent.tools.answers`: text is normalised (lower case, punctuation
kept as tokens), known synonyms are rewritten to the label's own words, and each mention of
a label is found with its place and whether the text denies it.

    mentions(canonical("No clipper; only the grasper.", TOOL_SYNONYMS), {"clipper": "Clipper"})
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from typing import NamedTuple

from surgagent.tools.vocabulary import (
    CHOLEC80_PHASES,
    CHOLEC80_TOOLS,
    CHOLECT50_TARGETS,
    CHOLECT50_VERBS,
    SAR_RARP50_ACTIONS,
)

__all__ = [
    "TARGET_SYNONYMS",
    "TOOL_SYNONYMS",
    "VERB_SYNONYMS",
    "Mention",
    "canonical",
    "find_labels",
    "label_forms",
    "mentions",
    "norm",
    "synonyms_for",
]

# Canonical (normalised) label form -> regexes over normalised text that mean the same.
PHASE_SYNONYMS = {
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
TOOL_SYNONYMS = {
    "specimen bag": (r"(?:specimen )?retrieval bag", r"endo ?bag", r"specimen bags"),
    "clipper": (r"clip (?:applier|applicator)s?", r"clippers"),
    "bipolar": (r"bipolar (?:forceps|graspers?)",),
    "hook": (r"(?:monopolar |electrocautery |l )?hook (?:electrode|cautery)", r"hooks"),
    "irrigator": (r"suction (?:irrigator|irrigation)(?: device)?", r"irrigators"),
    "scissors": (r"scissor",),
    "grasper": (r"graspers", r"grasping forceps"),
}
ACTION_SYNONYMS = {
    "returning dropping the needle": (
        r"(?:returning (?:or |and )?)?(?:dropping|returning) the needle",
    ),
    "picking up the needle": (r"picking the needle up", r"pick(?:ing)? up (?:the )?needle"),
}
# CholecT50 verbs as prose writes them ("retracting", "dissection").
VERB_SYNONYMS = {
    "grasp": (r"grasp(?:s|ing|ed)",),
    "retract": (r"retract(?:s|ing|ed|ion)",),
    "dissect": (r"dissect(?:s|ing|ed|ion)",),
    "coagulate": (r"coagulat(?:es|ing|ed|ion)",),
    "clip": (r"clip(?:s|ping|ped)",),
    "cut": (r"cut(?:s|ting)",),
    "aspirate": (r"aspirat(?:es|ing|ed|ion)",),
    "irrigate": (r"irrigat(?:es|ing|ed|ion)",),
    "pack": (r"pack(?:s|ing|ed)",),
}
TARGET_SYNONYMS = {
    "abdominal wall cavity": (r"abdominal (?:wall|cavity)",),
    "blood vessel": (r"blood vessels",),
    "adhesion": (r"adhesions",),
}
_KNOWN: tuple[tuple[Sequence[str], Mapping[str, Sequence[str]]], ...] = (
    (CHOLEC80_PHASES, PHASE_SYNONYMS),
    (CHOLEC80_TOOLS, TOOL_SYNONYMS),  # holds CholecT50's instruments too
    (SAR_RARP50_ACTIONS, ACTION_SYNONYMS),
    (CHOLECT50_VERBS, VERB_SYNONYMS),
    (CHOLECT50_TARGETS, TARGET_SYNONYMS),
)

_ARTICLE = r"(?:(?:a|an|the|any)\s+)?"
# "no clipper", "not the hook", "without a grasper", "I do not see any hook".
_DENIED_BEFORE = re.compile(
    r"\b(?:no|not|without|neither|nor|never|cannot|none of)\s+"
    rf"(?:(?:see|find|detect|observe|identify|visible|sign of)\s+)?{_ARTICLE}$"
)
# "... clipper or hook": the second label shares the first one's denial.
_LIST_BEFORE = re.compile(rf"\s(?:or|nor)\s+{_ARTICLE}$")
# "the clipper is not visible", "hook absent".
_DENIED_AFTER = re.compile(
    r"^\s*(?:(?:is|are|was|were)\s+)?(?:not|no longer|isn t|aren t|wasn t|weren t)\s+"
    r"(?:visible|present|seen|shown|there|in view|in use|used|detected)\b"
    r"|^\s*(?:(?:is|are|was|were)\s+)?(?:absent|missing)\b"
)


class Mention(NamedTuple):
    """One place a label is named: its label, character span and whether it is denied."""

    label: str
    start: int
    end: int
    denied: bool


def norm(text: str) -> str:
    """Lower-case words, punctuation kept as separate tokens (it blocks negation and nesting)."""
    text = re.sub(r"(?<=[a-z])(?=[A-Z])", " ", text).lower()
    text = re.sub(r"['’]s\b", "s", text).replace("&", " and ")
    text = re.sub(r"([,.;:!?])", r" \1 ", text)
    text = re.sub(r"[^a-z0-9,.;:!?]+", " ", text)
    return re.sub(r"\bgall bladder\b", "gallbladder", re.sub(r"\s+", " ", text)).strip()


def canonical(text: str, *tables: Mapping[str, Sequence[str]]) -> str:
    """``text`` normalised, with each table's synonyms rewritten to the label's own words."""
    text = norm(text)
    for table in tables:
        for form, patterns in table.items():
            for pattern in patterns:
                text = re.sub(rf"\b{pattern}\b", form, text)
    return text


def synonyms_for(vocabulary: Sequence[str]) -> Mapping[str, Sequence[str]]:
    """The synonym table of the known vocabulary that holds every label, else none."""
    keys = {norm(label) for label in vocabulary}
    for known, table in _KNOWN:
        if keys <= {norm(label) for label in known}:
            return table
    return {}


def label_forms(vocabulary: Sequence[str]) -> tuple[dict[str, str], Mapping[str, Sequence[str]]]:
    """Each label's canonical form (-> the label as the vocabulary spells it), and the table."""
    table = synonyms_for(vocabulary)
    forms = {canonical(label, table): label for label in vocabulary}
    if len(forms) < len(vocabulary):  # synonyms merged two labels: match them literally
        return {norm(label): label for label in vocabulary}, {}
    return forms, table


def _spans(text: str, form: str) -> list[tuple[int, int]]:
    words = rf"(?:{re.escape(form)}|{re.escape(form.replace(' ', ''))})"
    return [m.span() for m in re.finditer(rf"(?<![a-z0-9]){words}(?![a-z0-9])", text)]


def mentions(text: str, forms: Mapping[str, str]) -> list[Mention]:
    """Every mention of a label in canonical ``text``, in order.

    Mentions nested in a longer label ("left" in "left top") are dropped.
    """
    spans = [(a, b, label) for form, label in forms.items() for a, b in _spans(text, form)]
    outer = [
        (a, b, label)
        for a, b, label in spans
        if not any(c <= a and b <= d and (c, d) != (a, b) for c, d, _ in spans)
    ]
    found: list[Mention] = []
    for a, b, label in sorted(outer):
        before, after = text[:a], text[b:]
        listed = _LIST_BEFORE.search(before)
        shares = bool(
            listed
            and found
            and found[-1].denied
            and before[: listed.start()].rstrip() == text[: found[-1].end].rstrip()
        )
        denied = bool(_DENIED_BEFORE.search(before) or _DENIED_AFTER.match(after)) or shares
        found.append(Mention(label, a, b, denied))
    return found


def find_labels(text: str, vocabulary: Sequence[str], *, denied: bool = False) -> list[str]:
    """Labels named in ``text``, in order of first mention, each once.

    Args:
        text: Free text.
        vocabulary: The labels, as the dataset spells them.
        denied: Also count labels the text only denies ("no clipper").

    Returns:
        The labels as ``vocabulary`` spells them.
    """
    forms, table = label_forms(vocabulary)
    found: list[str] = []
    for mention in mentions(canonical(text, table), forms):
        if (denied or not mention.denied) and mention.label not in found:
            found.append(mention.label)
    return found
