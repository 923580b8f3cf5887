"""The one answer parser (`surgagent.tools.answers`): every format of DESIGN §6, and failures.

The perception tool and the evals agreeing on a shared table is `test_answer_table.py`.
"""

from __future__ import annotations

import pytest

from surgagent.tools.answers import (
    final_answer,
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
    assert parse_cvs("Criterion 1: No; Criterion 2: No; Criterion 3: Yes.").value == [
        False,
        False,
        True,
    ]
    assert parse_cvs("C1: yes\nC2: yes\nC3: no").value == [True, True, False]
    assert parse_cvs("criterion 1 is absent, criterion 2 is met, criterion 3 is unmet").value == [
        False,
        True,
        False,
    ]
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
        ["grasper", "retract", "gallbladder"],
        ["hook", "dissect", "cystic_plate"],
    ]
    lines = parse_triplets(
        "clipper, clip, cystic_duct\nnonsense",
        CHOLECT50_INSTRUMENTS,
        CHOLECT50_VERBS,
        CHOLECT50_TARGETS,
    )
    assert lines.value == [["clipper", "clip", "cystic_duct"]]
    assert not parse_triplets(
        "the surgeon is working", CHOLECT50_INSTRUMENTS, CHOLECT50_VERBS, CHOLECT50_TARGETS
    ).ok
    assert parse_triplets("nothing").value == []


def test_triplet_prose_starts_over_at_each_sentence() -> None:
    parsed = parse_triplets(
        "The grasper is performing a retract action on the gallbladder. The liver is seen."
    )
    assert parsed.value == [["grasper", "retract", "gallbladder"]]
    # Inflected verbs read as CholecT50's verbs; each triplet is kept once.
    twice = parse_triplets(
        "the hook is dissecting the cystic plate; the hook dissects the cystic plate"
    )
    assert twice.value == [["hook", "dissect", "cystic_plate"]]


@pytest.mark.parametrize(
    ("text", "labels"),
    [
        ("No clipper is visible; only the grasper.", ["Grasper"]),
        ("no clipper or hook, a grasper", ["Grasper"]),
        ("Without the hook; graspers only.", ["Grasper"]),
        ("The clipper is absent. A hook is present.", ["Hook"]),
        ("The scissors aren't visible; the grasper is.", ["Grasper"]),
        ("The grasper is not holding the gallbladder.", ["Grasper"]),  # not a denial
        ("There is no clipper.", []),
    ],
)
def test_denied_labels_are_left_out(text: str, labels: list[str]) -> None:
    assert parse_labels(text, CHOLEC80_TOOLS).value == labels


def test_single_labels_letters_and_yes_no() -> None:
    choices = ["left-top", "right-top", "left"]
    assert parse_label("B", choices, choices=choices).value == "right-top"
    assert parse_label("The tool is at the left top.", choices).value == "left-top"
    assert not parse_label("B", CHOLEC80_PHASES).ok  # no choices, no letters
    assert parse_label("Yes, it is.", ["yes", "no"]).value == "yes"
    assert parse_yes_no("</think>No.").value == "no"
    assert not parse_yes_no("It is used, so yes; no doubt.").ok  # both, no lead word


@pytest.mark.parametrize(
    ("text", "cells"),
    [
        ("middle right area", ["right"]),
        ("middle center area, top center area", ["center", "top"]),
        ("The tool is at the left top.", ["top left"]),  # column first, as EndoVis18 writes it
        ("not in the bottom left area; in the top right area", ["top right"]),
    ],
)
def test_grid_rows_and_columns(text: str, cells: list[str]) -> None:
    assert parse_grid(text).value == cells


def test_thinking_is_dropped_and_a_cut_reply_is_reported() -> None:
    assert final_answer("<think>hmm</think> Grasper").value == "Grasper"
    assert final_answer("hmm </think>Grasper").value == "Grasper"
    cut = parse_labels("<think>a grasper, maybe", CHOLEC80_TOOLS)
    assert not cut.ok and "<think>" in (cut.error or "")
    assert parse_free_text("Thinking... The answer is: a clamp.").value == "a clamp"


def test_only_labels_tells_a_label_list_from_a_sentence() -> None:
    assert only_labels("Grasper and Hook", CHOLEC80_TOOLS) == ["Grasper", "Hook"]
    assert only_labels("a grasper holds the hook", CHOLEC80_TOOLS) == []
