"""Answer parsers for SurgVLM-style free text: every format of DESIGN §6, and failures."""

from __future__ import annotations

import pytest

from surgagent.tools.answers import parse_boxes, parse_cvs, parse_grid, parse_labels, parse_triplets
from surgagent.tools.vocabulary import (
    CHOLEC80_PHASES,
    CHOLEC80_TOOLS,
    CHOLECT50_INSTRUMENTS,
    CHOLECT50_TARGETS,
    CHOLECT50_VERBS,
)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("[0.1, 0.2, 0.5, 0.6]", [None, 0.1, 0.2, 0.5, 0.6]),
        ("The grasper is at [100, 200, 500, 600].", [None, 0.1, 0.2, 0.5, 0.6]),
        ("grasper (100,200),(500,600)", ["grasper", 0.1, 0.2, 0.5, 0.6]),
        ("Hook: (100, 200), (500, 600)", ["Hook", 0.1, 0.2, 0.5, 0.6]),
    ],
)
def test_boxes_in_both_surgvlm_formats(text: str, expected: list) -> None:
    parsed = parse_boxes(text)
    assert parsed.ok and parsed.value
    box = parsed.value[0]
    assert [box.label, box.x1, box.y1, box.x2, box.y2] == pytest.approx(expected)
    assert box.as_pairs().endswith("(100,200),(500,600)")
    assert box.as_list() == [0.1, 0.2, 0.5, 0.6]


@pytest.mark.parametrize("text", ["no box here", "[0.5, 0.5, 0.1, 0.1]", "[1, 2, 3, 4000]"])
def test_bad_boxes_are_reported_not_raised(text: str) -> None:
    parsed = parse_boxes(text)
    assert not parsed.ok and parsed.error


def test_several_boxes() -> None:
    parsed = parse_boxes("grasper (0,0),(100,100)\nhook (500,500),(900,900)")
    assert parsed.value is not None
    assert [b.label for b in parsed.value] == ["grasper", "hook"]


@pytest.mark.parametrize(
    ("text", "cells"),
    [
        ("top right area", ["top right"]),
        ("It is in the centre of the image.", ["center"]),
        ("upper left and lower right", ["top left", "bottom right"]),
        ("The middle", ["center"]),
        ("bottom", ["bottom"]),
    ],
)
def test_grid_words(text: str, cells: list[str]) -> None:
    assert parse_grid(text).value == cells


def test_cvs_lines() -> None:
    assert parse_cvs("Criterion 1: No; Criterion 2: No; Criterion 3: Yes.").value == (
        False,
        False,
        True,
    )
    assert parse_cvs("C1: yes\nC2: yes\nC3: no").value == (True, True, False)
    incomplete = parse_cvs("Criterion 1: Yes")
    assert not incomplete.ok and "three" in (incomplete.error or "")


def test_labels_tolerate_spacing_case_and_synonymous_spellings() -> None:
    assert parse_labels("This is Calot triangle dissection.", CHOLEC80_PHASES).value == [
        "CalotTriangleDissection"
    ]
    assert parse_labels("clipping cutting", CHOLEC80_PHASES).value == ["ClippingCutting"]
    assert parse_labels("A HOOK and a grasper", CHOLEC80_TOOLS).value == ["Hook", "Grasper"]
    assert parse_labels("specimen bag", CHOLEC80_TOOLS).value == ["SpecimenBag"]
    assert not parse_labels("a scalpel", CHOLEC80_TOOLS).ok


def test_triplets() -> None:
    parsed = parse_triplets(
        "<grasper, retract, gallbladder>, <hook, dissect, cystic plate>",
        CHOLECT50_INSTRUMENTS,
        CHOLECT50_VERBS,
        CHOLECT50_TARGETS,
    )
    assert parsed.value == [
        ("grasper", "retract", "gallbladder"),
        ("hook", "dissect", "cystic_plate"),
    ]
    lines = parse_triplets(
        "clipper, clip, cystic_duct\nnonsense",
        CHOLECT50_INSTRUMENTS,
        CHOLECT50_VERBS,
        CHOLECT50_TARGETS,
    )
    assert lines.value == [("clipper", "clip", "cystic_duct")]
    assert not parse_triplets(
        "nothing", CHOLECT50_INSTRUMENTS, CHOLECT50_VERBS, CHOLECT50_TARGETS
    ).ok
