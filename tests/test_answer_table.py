"""One table of answers, read by the perception tool and by the evals: both must agree.

Every row runs through the perception tool's parsing path (`read_answer`, what
`ask_perception` stores as ``parsed``) and through the evals' `parse_answer`, and both must
give the expected value. The answers are in the styles SurgVLM and SurgSigma publish:
label names in Cholec80's and CholecT50's spellings, negations, CVS lines and prose, triplets
as groups and as prose, "<row> <column> area" grid cells, boxes in 0-1 and 0-1000, and
``<think>`` blocks. ``None`` means unparseable: both sides must say so, with a reason.

Localization differs in shape by design: the tool lists every box, the benchmark scores the
box of the instrument it asked about; for one-box answers the tool's list holds exactly the
benchmark's box.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import pytest

from surgagent.evals.parsers import parse_answer
from surgagent.evals.records import TaskRecord
from surgagent.tools.perception.engine import read_answer
from surgagent.tools.perception.types import PerceptionTask
from surgagent.tools.vocabulary import CHOLEC80_PHASES, CHOLEC80_TOOLS


@dataclass(frozen=True)
class Row:
    """One answer, the perception task it answers, and the evals task of the same question."""

    tool_task: PerceptionTask
    eval_task: str
    text: str
    expected: Any


def _item(row: Row) -> TaskRecord:
    """The evals item asking what ``row`` answers, as the loaders write it."""
    choices = {"cholec80-phase": CHOLEC80_PHASES, "cholec80-tools": CHOLEC80_TOOLS}
    gold: Any = {"label": "grasper", "box": [0.1, 0.1, 0.5, 0.5]}
    meta = {"qa_type": "grid"} if row.eval_task == "surgvlm-qa" else {}
    return TaskRecord(
        id=f"{row.eval_task}/video01/0",
        task=row.eval_task,
        dataset="table",
        case="video01",
        question="?",
        choices=list(choices[row.eval_task]) if row.eval_task in choices else None,
        gold="middle right area" if row.eval_task == "surgvlm-qa" else gold,
        meta=meta,
    )


def _phase(text: str, expected: str | None) -> Row:
    return Row("phase", "cholec80-phase", text, expected)


def _tools(text: str, expected: list[str] | None) -> Row:
    return Row("instrument_recognition", "cholec80-tools", text, expected)


def _cvs(text: str, expected: list[bool] | None) -> Row:
    return Row("cvs", "endoscapes-cvs", text, expected)


def _triplets(text: str, expected: list[list[str]] | None) -> Row:
    return Row("triplet", "cholect50-triplet", text, expected)


def _grid(text: str, expected: list[str] | None) -> Row:
    return Row("grid", "surgvlm-qa", text, expected)


def _box(text: str, label: str | None, box: list[float] | None) -> Row:
    expected = None if box is None else {"label": label, "box": box}
    return Row("instrument_localization", "endovis17-localization", text, expected)


Y, N = True, False
TABLE = [
    # Cholec80 phases, with Cholec80's, CholecT50's and prose spellings.
    _phase("Calot's triangle dissection", "CalotTriangleDissection"),
    _phase("calot triangle dissection", "CalotTriangleDissection"),
    _phase("The frames show dissection of the hepatocystic triangle.", "CalotTriangleDissection"),
    _phase("CalotTriangleDissection", "CalotTriangleDissection"),
    _phase("carlot-triangle-dissection", "CalotTriangleDissection"),
    _phase("clipping-and-cutting", "ClippingCutting"),
    _phase("gallbladder-extraction", "GallbladderRetraction"),
    _phase("cleaning-and-coagulation", "CleaningCoagulation"),
    _phase(
        "<think>Clips are on the duct, so maybe ClippingCutting... no, the gallbladder is "
        "being freed from the liver bed.</think>Gallbladder dissection",
        "GallbladderDissection",
    ),
    _phase("</think>\n\nThe current phase is Preparation.", "Preparation"),
    _phase("Not preparation but clipping and cutting.", "ClippingCutting"),
    _phase("It is either Preparation or Calot triangle dissection.", None),
    _phase("<think>Preparation, probably", None),
    # Cholec80 tools: negations leave the denied tool out.
    _tools("No clipper is visible; only the grasper.", ["Grasper"]),
    _tools("Grasper, Hook", ["Grasper", "Hook"]),
    _tools("There is no clipper or hook, only a grasper.", ["Grasper"]),
    _tools(
        "The hook is not visible, but the grasper and the irrigator are.", ["Grasper", "Irrigator"]
    ),
    _tools(
        "Neither the scissors nor the clipper; a grasper and bipolar forceps.",
        ["Grasper", "Bipolar"],
    ),
    _tools(
        "I do not see any scissors. Grasper and irrigator are present.", ["Grasper", "Irrigator"]
    ),
    _tools("No instruments are visible.", []),
    _tools(
        "<think>Is that a clip applier? No.</think>Grasper and specimen bag",
        ["Grasper", "SpecimenBag"],
    ),
    _tools(
        "graspers, a clip applier and a specimen retrieval bag",
        ["Grasper", "Clipper", "SpecimenBag"],
    ),
    _tools("I cannot tell.", None),
    # Endoscapes CVS: "Criterion N:" lines and prose.
    _cvs("Criterion 1: No; Criterion 2: No; Criterion 3: Yes.", [N, N, Y]),
    _cvs("Criterion 1: Yes\nCriterion 2: Yes\nCriterion 3: No", [Y, Y, N]),
    _cvs("Criterion 1 is met, criterion 2 is not met, criterion 3 is met.", [Y, N, Y]),
    _cvs("</think>Criterion 1: No. Criterion 2: Yes. Criterion 3: Yes.", [N, Y, Y]),
    _cvs(
        "The first criterion is satisfied, the second criterion is not satisfied and the "
        "third criterion is satisfied.",
        [Y, N, Y],
    ),
    _cvs("CVS is not achieved.", None),
    # CholecT50 triplets: groups, lines and SurgVLM's prose, in CholecT50's spelling.
    _triplets(
        "the scissors are performing a cut action on the cystic duct, and the grasper is "
        "performing a grasp action on the gallbladder",
        [["scissors", "cut", "cystic_duct"], ["grasper", "grasp", "gallbladder"]],
    ),
    _triplets(
        "The grasper is performing a retract action on the gallbladder.",
        [["grasper", "retract", "gallbladder"]],
    ),
    _triplets(
        "The hook is performing a dissect action on the cystic plate, and the grasper is "
        "performing a retract action on the gallbladder.",
        [["hook", "dissect", "cystic_plate"], ["grasper", "retract", "gallbladder"]],
    ),
    _triplets(
        "The clipper is performing a clip action on the cystic artery and the cystic duct.",
        [["clipper", "clip", "cystic_artery"], ["clipper", "clip", "cystic_duct"]],
    ),
    _triplets(
        "<grasper, retract, gallbladder>, <hook, dissect, cystic_plate>",
        [["grasper", "retract", "gallbladder"], ["hook", "dissect", "cystic_plate"]],
    ),
    _triplets("grasper, grasp, specimen_bag", [["grasper", "grasp", "specimen_bag"]]),
    _triplets(
        "<think>The hook is near the duct.</think>The irrigator is performing an aspirate "
        "action on the fluid.",
        [["irrigator", "aspirate", "fluid"]],
    ),
    _triplets("No triplet is visible.", []),
    _triplets("the surgeon is working", None),
    # 3x3 grid: "<row> <column> area", several separated by commas.
    _grid("middle right area", ["right"]),
    _grid("top left area, middle center area", ["top left", "center"]),
    _grid("bottom center area, bottom right area", ["bottom", "bottom right"]),
    _grid("The grasper is in the upper left area.", ["top left"]),
    _grid("</think>middle left area", ["left"]),
    _grid("It is not in the top left area but in the bottom center area.", ["bottom"]),
    _grid("It is hard to say.", None),
    # Boxes: SurgVLM v1's [x1, y1, x2, y2] in 0-1 (or 0-1000), SurgSigma's name (x1,y1),(x2,y2).
    _box("[0.12, 0.08, 0.4, 0.3]", None, [0.12, 0.08, 0.4, 0.3]),
    _box("grasper (120,80),(400,300)", "grasper", [0.12, 0.08, 0.4, 0.3]),
    _box("[120, 80, 400, 300]", None, [0.12, 0.08, 0.4, 0.3]),
    _box(
        "<think>left side</think>Grasper: (100, 200), (500, 600)", "Grasper", [0.1, 0.2, 0.5, 0.6]
    ),
    _box("in the middle", None, None),
]


def test_the_table_covers_every_style() -> None:
    assert len(TABLE) >= 40
    assert {row.tool_task for row in TABLE} >= {
        "phase",
        "instrument_recognition",
        "cvs",
        "triplet",
        "grid",
        "instrument_localization",
    }
    assert sum("<think>" in row.text or "</think>" in row.text for row in TABLE) >= 6


@pytest.mark.parametrize("row", TABLE, ids=[f"{r.tool_task}:{r.text[:40]}" for r in TABLE])
def test_tool_and_evals_read_the_same(row: Row) -> None:
    tool = read_answer(row.tool_task, row.text)
    benchmark = parse_answer(_item(row), row.text)
    assert tool is not None
    if row.expected is None:
        assert not tool.ok and tool.error and tool.value is None
        assert not benchmark.ok and benchmark.error and benchmark.value is None
        return
    assert benchmark.ok, benchmark.error
    assert tool.ok, tool.error
    assert benchmark.value == row.expected
    if row.tool_task == "instrument_localization":
        assert tool.value == [row.expected]  # the tool lists every box; here there is one
    else:
        assert tool.value == row.expected


def test_two_boxes_the_tool_lists_both_the_benchmark_scores_the_asked_one() -> None:
    text = "scissors (0,0),(100,100)\ngrasper (120,80),(400,300)"
    row = _box(text, "grasper", [0.12, 0.08, 0.4, 0.3])
    tool = read_answer("instrument_localization", text)
    assert tool is not None and tool.value == [
        {"label": "scissors", "box": [0.0, 0.0, 0.1, 0.1]},
        row.expected,
    ]
    assert parse_answer(_item(row), text).value == row.expected
