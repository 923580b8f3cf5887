"""surgagent.evals parsers and metrics: answer formats, and metric values worked out by hand."""

from __future__ import annotations

import math
import subprocess
import sys
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from surgagent.evals.metrics import (
    box_iou,
    cvs_scores,
    item_correct,
    label_scores,
    score_task,
    set_f1,
    triplet_ids,
    triplet_map,
)
from surgagent.evals.parsers import gold_value, parse_answer
from surgagent.evals.phase_files import score_cholec80_dirs
from surgagent.evals.records import TaskRecord
from surgagent.evals.tasks import TASKS
from surgagent.tools.answers import Parsed
from surgagent.tools.phase.annotations import write_cholec80_phase_file
from surgagent.tools.vocabulary import CHOLEC80_PHASES, CHOLEC80_TOOLS

REFERENCE = Path("/work/shared/reference/cholect50_vocabulary.json")


def item(task: str, gold: Any, k: int = 0, choices: list[str] | None = None, **meta: Any):
    return TaskRecord(
        id=f"{task}/video01/{k}",
        task=task,
        dataset="test",
        case="video01",
        question="What is shown?",
        choices=choices,
        gold=gold,
        meta=meta,
    )


def phase(gold: str, k: int = 0) -> TaskRecord:
    return item("cholec80-phase", gold, k, list(CHOLEC80_PHASES))


def scored(task: str, cases: list[tuple[TaskRecord, str]]):
    return score_task(task, [(i, parse_answer(i, text)) for i, text in cases])


# -- parsers ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "value"),
    [
        ("Calot triangle dissection", "CalotTriangleDissection"),
        ("The phase is calot's triangle dissection.", "CalotTriangleDissection"),
        ("Dissection of Calot's triangle.", "CalotTriangleDissection"),
        ("carlot-triangle-dissection", "CalotTriangleDissection"),
        ("CleaningCoagulation", "CleaningCoagulation"),
        ("Clipping and cutting", "ClippingCutting"),
        ("clipping/cutting", "ClippingCutting"),
        ("cleaning & coagulation", "CleaningCoagulation"),
        ("gall bladder packaging", "GallbladderPackaging"),
        ("Gallbladder extraction", "GallbladderRetraction"),
        ("gallbladder retraction/extraction", "GallbladderRetraction"),
        ("</think>\nPreparation", "Preparation"),
        (
            "<think>Could be preparation.</think>The answer is Clipping and cutting.",
            "ClippingCutting",
        ),
        (
            "I first thought Preparation. Final answer: Calot triangle dissection",
            "CalotTriangleDissection",
        ),
        ("Not preparation but clipping and cutting.", "ClippingCutting"),
        ("No, Preparation.", "Preparation"),
        ("B", "CalotTriangleDissection"),  # a bare letter picks that choice
        ("(c)", "ClippingCutting"),
    ],
)
def test_phase_names_in_sentences_synonyms_and_spacing(text: str, value: str) -> None:
    parsed = parse_answer(phase("Preparation"), text)
    assert parsed.ok, parsed.error
    assert parsed.value == value


@pytest.mark.parametrize(
    ("text", "reason"),
    [
        ("It is either Preparation or Calot triangle dissection.", "ambiguous"),
        ("The image is too dark to tell.", "none of"),
        ("", "empty"),
        ("<think>Preparation, probably", "<think>"),
        ("</think>", "empty"),
    ],
)
def test_unusable_phase_answers_are_not_ok_with_a_reason(text: str, reason: str) -> None:
    parsed = parse_answer(phase("Preparation"), text)
    assert not parsed.ok and parsed.value is None
    assert reason in (parsed.error or "")


def test_tools_multi_label_synonyms_negation_and_none() -> None:
    tools = item("cholec80-tools", ["Grasper", "Hook"], choices=list(CHOLEC80_TOOLS))
    cases = {
        "A grasper and the hook.": ["Grasper", "Hook"],
        "graspers, a clip applier and bipolar forceps": ["Grasper", "Clipper", "Bipolar"],
        "Grasper, hook; no clipper": ["Grasper", "Hook"],
        "specimen retrieval bag": ["SpecimenBag"],
        "No tools are visible.": [],
        "none": [],
    }
    for text, value in cases.items():
        assert parse_answer(tools, text).value == value, text
    assert not parse_answer(tools, "I cannot tell.").ok


def test_yes_no_answers() -> None:
    question = item("cholec80-multistep", "yes", choices=["yes", "no"], kind="tool-in-phase")
    assert parse_answer(question, "Yes.").value == "yes"
    assert parse_answer(question, "No, it is not used then.").value == "no"
    assert parse_answer(question, "Looking again... answer: yes").value == "yes"
    assert not parse_answer(question, "It is used, so yes; no doubt.").ok  # both, no lead
    assert not parse_answer(question, "maybe").ok


@pytest.mark.parametrize(
    ("text", "value"),
    [
        ("Criterion 1: No; Criterion 2: No; Criterion 3: Yes.", [False, False, True]),
        ("C1: yes, C2: no, C3: no", [True, False, False]),
        ("Criterion 1 (two structures): not met\nCriterion 2: met\nCriterion 3: met", [0, 1, 1]),
        ("Criteria 1 and 3 are met.", [True, False, True]),
        ("Criteria 1 and 3 are met, criterion 2 is not met.", [True, False, True]),
        ("yes, no, yes", [True, False, True]),
        ("[1, 0, 1]", [True, False, True]),
        ("All three criteria are met.", [True, True, True]),
        ("None of the criteria are met.", [False, False, False]),
    ],
)
def test_cvs_formats(text: str, value: list[bool]) -> None:
    parsed = parse_answer(item("endoscapes-cvs", [False, False, False]), text)
    assert parsed.ok, parsed.error
    assert parsed.value == [bool(v) for v in value]


def test_cvs_that_does_not_say_which_criteria_is_not_ok() -> None:
    cvs = item("endoscapes-cvs", [True, True, True])
    for text in ("CVS is not achieved.", "Criterion 1: yes; Criterion 2: no", "unclear"):
        parsed = parse_answer(cvs, text)
        assert not parsed.ok and "three" in (parsed.error or ""), text


def test_triplets() -> None:
    triplet = item("cholect50-triplet", [["grasper", "retract", "gallbladder"]])
    two = [["grasper", "retract", "gallbladder"], ["hook", "dissect", "cystic_plate"]]
    assert (
        parse_answer(
            triplet, "<grasper, retract, gallbladder>, <hook, dissect, cystic_plate>"
        ).value
        == two
    )
    assert (
        parse_answer(
            triplet, "(grasper, retract, gallbladder), (hook, dissect, cystic plate)"
        ).value
        == two
    )
    assert parse_answer(triplet, "grasper, retract, gallbladder").value == two[:1]
    assert parse_answer(triplet, "None.").value == []
    assert not parse_answer(triplet, "the surgeon is working").ok


def test_boxes_in_both_formats() -> None:
    box = item("endovis17-localization", {"label": "grasper", "box": [0.1, 0.1, 0.5, 0.5]})
    parsed = parse_answer(box, "[0.1, 0.2, 0.5, 0.6]")
    assert parsed.value == {"label": None, "box": [0.1, 0.2, 0.5, 0.6]}
    parsed = parse_answer(box, "grasper (120,80),(400,300)")  # SurgSigma: 0-1000 integers
    assert parsed.value == {"label": "grasper", "box": [0.12, 0.08, 0.4, 0.3]}
    # Two boxes: the one labelled as the asked instrument wins.
    parsed = parse_answer(box, "scissors (0,0),(100,100) grasper (120,80),(400,300)")
    assert parsed.value is not None and parsed.value["label"] == "grasper"
    assert "no box" in (parse_answer(box, "in the middle").error or "")


def test_grid_and_surgvlm_qa_by_type() -> None:
    grid = item("surgvlm-qa", "top right", qa_type="grid")
    assert parse_answer(grid, "In the upper right area.").value == ["top right"]
    assert gold_value(grid) == ["top right"]
    tools = item("surgvlm-qa", "Grasper, Hook", qa_type="instrument")
    assert parse_answer(tools, "a hook and graspers").value == ["Hook", "Grasper"]
    assert item_correct(tools, parse_answer(tools, "a hook and graspers")) is True
    free = item("surgvlm-qa", "a clamp", qa_type="other")
    assert parse_answer(free, "Answer: A clamp.").value == "A clamp"
    assert item_correct(free, parse_answer(free, "It looks like a clamp")) is True
    assert item_correct(free, parse_answer(free, "scissors")) is False


def test_sar_actions_and_vqa_choices() -> None:
    action = item("sar-rarp50-action", "Returning/dropping the needle")
    assert parse_answer(
        action, "The needle is being returned? No: returning or dropping the needle."
    ).ok
    assert parse_answer(action, "D. pushing the needle through the tissue").value == (
        "Pushing the needle through the tissue"
    )
    assert parse_answer(action, "picking up the needle").value == "Picking-up the needle"
    vqa = item("endovis18-vqa", "left-top", choices=["left-top", "right-top", "left"])
    assert parse_answer(vqa, "The tool is at the left top.").value == "left-top"  # not "left"
    assert not parse_answer(item("endovis18-vqa", "x"), "x").ok  # no choices to match


def test_unknown_task_lists_the_known_ones() -> None:
    with pytest.raises(ValueError, match="cholec80-phase"):
        parse_answer(item("no-such-task", "x"), "x")


# -- label metrics ---------------------------------------------------------------------------


def test_label_metrics_by_hand() -> None:
    cases = [
        (phase("Preparation", 0), "preparation"),  # right
        (phase("Preparation", 1), "Calot triangle dissection"),  # wrong
        (phase("ClippingCutting", 2), "clipping and cutting"),  # right
        (phase("CalotTriangleDissection", 3), "blah"),  # unparseable
    ]
    score = scored("cholec80-phase", cases)
    assert score.primary.name == "accuracy" and score.primary.value == pytest.approx(50.0)  # 2/4
    assert score.n == 4 and score.n_unparsed == 1
    assert score.unparsed_ids == ["cholec80-phase/video01/3"]
    # Preparation: tp 1, predicted 1, support 2 -> P 100, R 50, F1 2*100*50/150 = 66.67.
    # Calot: tp 0, predicted 1 (item 1), support 1 -> P 0, R 0, F1 0.
    # ClippingCutting: P 100, R 100, F1 100.
    assert score.per_class["Preparation"] == pytest.approx(
        {"precision": 100.0, "recall": 50.0, "f1": 200 / 3, "support": 2.0}
    )
    assert score.per_class["CalotTriangleDissection"]["f1"] == 0.0
    assert score.metrics["macro_precision"] == pytest.approx(200 / 3)  # (100 + 0 + 100) / 3
    assert score.metrics["macro_recall"] == pytest.approx(50.0)  # (50 + 0 + 100) / 3
    assert score.metrics["macro_f1"] == pytest.approx((200 / 3 + 100) / 3)
    assert score.confusion is not None
    # Rows gold, columns predicted, in Cholec80 order, then "(unparsed)" (a zero row).
    assert score.confusion["labels"] == [
        "Preparation",
        "CalotTriangleDissection",
        "ClippingCutting",
        "(unparsed)",
    ]
    assert score.confusion["matrix"] == [[1, 1, 0, 0], [0, 0, 0, 1], [0, 0, 1, 0], [0, 0, 0, 0]]


def test_label_scores_macro_over_gold_classes_only() -> None:
    # "b" only predicted: P 0, recall undefined (NaN), left out of the macro means.
    per_class, macro, confusion = label_scores(["a", "a"], ["a", "b"])
    assert per_class["a"]["recall"] == 50.0 and math.isnan(per_class["b"]["recall"])
    assert macro["macro_recall"] == 50.0 and macro["macro_precision"] == 100.0
    assert confusion == {"labels": ["a", "b"], "matrix": [[1, 1], [0, 0]]}


@pytest.mark.parametrize("right", [True, False])
def test_perfect_is_100_and_all_wrong_is_0(right: bool) -> None:
    items = [phase(p, k) for k, p in enumerate(CHOLEC80_PHASES)]
    other = {p: CHOLEC80_PHASES[(k + 1) % 7] for k, p in enumerate(CHOLEC80_PHASES)}
    score = scored("cholec80-phase", [(i, i.gold if right else other[i.gold]) for i in items])
    for name in ("accuracy", "macro_precision", "macro_recall", "macro_f1"):
        assert score.metrics[name] == (100.0 if right else 0.0)


def test_tools_mean_f1_by_hand() -> None:
    cases = [
        (item("cholec80-tools", ["Grasper", "Hook"], 0, list(CHOLEC80_TOOLS)), "grasper"),
        (item("cholec80-tools", [], 1, list(CHOLEC80_TOOLS)), "No tools."),
        (item("cholec80-tools", ["Clipper"], 2, list(CHOLEC80_TOOLS)), "???"),
    ]
    score = scored("cholec80-tools", cases)
    # F1: 2*1/(2+1) = 0.667; both empty = 1; unparseable = 0 -> mean 55.56.
    assert score.primary.value == pytest.approx(100 * (2 / 3 + 1) / 3)
    assert score.metrics["exact_match"] == pytest.approx(100 / 3)  # only item 1
    assert score.per_class["Hook"] == pytest.approx(
        {"precision": 0.0, "recall": 0.0, "f1": 0.0, "support": 1.0}
    )
    assert set_f1(["a", "b"], ["b", "c"]) == 0.5


# -- CVS, boxes ------------------------------------------------------------------------------


def test_cvs_metrics_by_hand() -> None:
    gold = [[1, 0, 0], [1, 1, 0], [0, 0, 0], [0, 1, 1]]
    answers = ["C1: yes, C2: no, C3: no", "C1: no, C2: yes, C3: no", "no, yes, no", "garbage"]
    cases = [
        (item("endoscapes-cvs", [bool(x) for x in g], k), a)
        for k, (g, a) in enumerate(zip(gold, answers, strict=True))
    ]
    score = scored("endoscapes-cvs", cases)
    # Unparseable -> every criterion wrong: row 4 predicted as [1, 0, 0].
    # C1 gold 1,1,0,0 pred 1,0,0,1: acc 2/4; recall(1) 1/2, recall(0) 1/2 -> balanced 50;
    #    AP = R1*P1 + (1-R1)*prevalence = 0.5*0.5 + 0.5*(2/4) = 0.5.
    # C2 gold 0,1,0,1 pred 0,1,1,0: acc 2/4; balanced (1/2 + 1/2)/2 = 50; AP 0.5 likewise.
    # C3 gold 0,0,0,1 pred 0,0,0,0: acc 3/4; balanced (0/1 + 3/3)/2 = 50; nothing predicted
    #    positive -> AP = prevalence 1/4.
    m = score.metrics
    assert [m["c1_accuracy"], m["c2_accuracy"], m["c3_accuracy"]] == [50.0, 50.0, 75.0]
    assert score.primary.name == "mean_accuracy"
    assert score.primary.value == pytest.approx((50 + 50 + 75) / 3)  # 58.33
    assert m["balanced_accuracy"] == pytest.approx(50.0)
    assert [m["c1_ap"], m["c2_ap"], m["c3_ap"]] == pytest.approx([50.0, 50.0, 25.0])
    assert m["mAP"] == pytest.approx(125 / 3)
    assert m["exact_match"] == 25.0  # only row 1
    assert score.unparsed_ids == ["endoscapes-cvs/video01/3"]


def test_cvs_perfect_and_all_wrong_and_missing_positives() -> None:
    gold = np.array([[1, 0, 0], [0, 1, 0]], dtype=bool)
    perfect, wrong = cvs_scores(gold, gold), cvs_scores(gold, ~gold)
    assert perfect["mean_accuracy"] == 100.0 and perfect["balanced_accuracy"] == 100.0
    assert wrong["mean_accuracy"] == 0.0 and wrong["balanced_accuracy"] == 0.0
    assert math.isnan(perfect["c3_ap"]) and perfect["mAP"] == 100.0  # C3: no positive, skipped


def test_cvs_gold_as_rater_means_is_thresholded_at_half() -> None:
    cvs = item("endoscapes-cvs", [0.67, 0.0, 0.33])
    assert item_correct(cvs, Parsed(ok=True, value=[True, False, False])) is True


def test_box_miou_by_hand() -> None:
    gold = {"label": "grasper", "box": [0.0, 0.0, 0.5, 0.5]}
    cases = [
        (item("endovis17-localization", gold, 0), "grasper (250,250),(750,750)"),
        (item("endovis17-localization", gold, 1), "[0.0, 0.0, 0.5, 0.5]"),
        (item("endovis17-localization", gold, 2), "I see no grasper"),
    ]
    score = scored("endovis17-localization", cases)
    # Item 0: intersection 0.25^2 = 0.0625, union 0.25 + 0.25 - 0.0625 = 0.4375 -> 1/7.
    assert box_iou([0, 0, 0.5, 0.5], [0.25, 0.25, 0.75, 0.75]) == pytest.approx(1 / 7)
    assert score.primary.value == pytest.approx(100 * (1 / 7 + 1 + 0) / 3)  # 38.10
    assert score.metrics["acc@0.5"] == pytest.approx(100 / 3)
    assert score.n_unparsed == 1


# -- triplets --------------------------------------------------------------------------------


def test_triplet_map_by_hand() -> None:
    gold = [
        [["grasper", "retract", "gallbladder"]],
        [["hook", "dissect", "gallbladder"], ["grasper", "retract", "gallbladder"]],
        [],
    ]
    answers = ["grasper, retract, gallbladder", "hook, dissect, gallbladder", "None."]
    score = scored(
        "cholect50-triplet",
        [
            (item("cholect50-triplet", g, k), a)
            for k, (g, a) in enumerate(zip(gold, answers, strict=True))
        ],
    )
    # grasper,retract,gallbladder: gold 1,1,0, pred 1,0,0 -> 1.0*0.5 + 0.5*(2/3) = 0.8333.
    # hook,dissect,gallbladder: gold 0,1,0, pred 0,1,0 -> 1. Other 98 classes: no gold, NaN.
    assert score.primary.name == "mAP_ivt"
    assert score.primary.value == pytest.approx(100 * (5 / 6 + 1) / 2)  # 91.67
    assert score.metrics["mAP_t"] == pytest.approx(100.0)  # gallbladder: 1,1,0 vs 1,1,0
    assert score.metrics["mAP_i"] == pytest.approx(100 * (5 / 6 + 1) / 2)
    assert score.metrics["exact_match"] == pytest.approx(200 / 3)  # items 0 and 2
    assert set(score.per_class) == {"grasper,retract,gallbladder", "hook,dissect,gallbladder"}


def test_triplet_map_matches_ivtmetrics_and_skips_absent_classes() -> None:
    import ivtmetrics

    rng = np.random.default_rng(0)
    targets = (rng.random((40, 100)) < 0.05).astype(int)
    predictions = (rng.random((40, 100)) < 0.05).astype(float)
    settings = np.geterr()
    ours = triplet_map(targets, predictions)
    assert np.geterr() == settings  # Recognition() must not leave numpy's warnings off
    reference = ivtmetrics.Recognition(num_class=100)
    reference.update(targets, predictions)
    for component in ("ivt", "i", "v", "t", "iv", "it"):
        with np.errstate(all="ignore"), warnings.catch_warnings():
            warnings.simplefilter("ignore")  # scikit-learn: classes with no positive
            expected = np.asarray(reference.compute_AP(component)["AP"], dtype=float)
            present = reference.extract(targets, component).sum(axis=0) > 0
        np.testing.assert_allclose(ours[f"AP_{component}"][present], expected[present])
        assert np.isnan(ours[f"AP_{component}"][~present]).all()
    # A false positive on a class no item has changes nothing.
    absent = int(np.flatnonzero(targets.sum(axis=0) == 0)[0])
    predictions[:, absent] = 1
    assert triplet_map(targets, predictions)["mAP_ivt"] == pytest.approx(ours["mAP_ivt"])


def test_triplet_ids() -> None:
    ids = triplet_ids()
    assert len(ids) == 100 and sorted(ids.values()) == list(range(100))
    assert ids[("grasper", "dissect", "cysticplate")] == 0
    assert ids[("irrigator", "nullverb", "nulltarget")] == 99
    if REFERENCE.exists():
        assert triplet_ids(REFERENCE) == ids


def test_unknown_triplet_counts_against_exact_match_only() -> None:
    triplet = item("cholect50-triplet", [["grasper", "retract", "gallbladder"]])
    score = scored(
        "cholect50-triplet", [(triplet, "grasper, retract, gallbladder; hook, clip, liver")]
    )
    assert score.metrics["unknown_triplets"] == 1.0 and score.metrics["exact_match"] == 0.0
    assert score.primary.value == 100.0


# -- Cholec80 video-level --------------------------------------------------------------------


def write_video(folder: Path, name: str, switch_s: int, *, fps: float = 1.0) -> None:
    """A 60 s video: Preparation, then CalotTriangleDissection from ``switch_s``."""
    labels = np.repeat([0 if s < switch_s else 1 for s in range(60)], int(fps))
    write_cholec80_phase_file(folder / name, labels, CHOLEC80_PHASES, fps=fps)


@pytest.fixture
def phase_dirs(tmp_path: Path) -> tuple[Path, Path]:
    gold, pred = tmp_path / "gold", tmp_path / "pred"
    gold.mkdir(), pred.mkdir()
    write_video(gold, "video01-phase.txt", 30, fps=25.0)  # the annotations' 25 fps rows
    write_video(gold, "video02-phase.txt", 30, fps=25.0)
    write_video(pred, "video01_pred.txt", 35)  # 5 s late: forgiven by every relaxed variant
    write_video(pred, "video02_pred.txt", 25)  # 5 s early: forgiven only under "intended"
    return gold, pred


def test_cholec80_dirs_relaxed_boundaries(phase_dirs: tuple[Path, Path]) -> None:
    gold, pred = phase_dirs
    intended = score_cholec80_dirs(gold, pred, variant="intended")
    assert intended["variant"] == "intended" and intended["videos"] == ["video01", "video02"]
    assert intended["accuracy"] == 100.0 and intended["accuracy_std"] == 0.0
    matlab = score_cholec80_dirs(gold, pred)  # the default, as the MATLAB code runs
    # video02: samples 25-29 predict the next phase early; MATLAB's mask lands on the run's
    # first 10 samples, so they stay wrong: 55/60. Mean over videos (100 + 91.67) / 2.
    assert matlab["variant"] == "matlab"
    assert matlab["accuracy"] == pytest.approx((100 + 100 * 55 / 60) / 2)
    assert matlab["accuracy_std"] == pytest.approx(np.std([100, 100 * 55 / 60], ddof=1))
    # video02, Preparation: union 0-29, hits 0-24 -> J 25/30, P 25/25, R 25/30.
    # CalotTriangleDissection: union 25-59 (35), hits 30-59 -> J 30/35, P 30/35, R 100.
    # Per phase, mean over the two videos (video01: all 100).
    prep = matlab["per_phase"]["Preparation"]
    assert prep["jaccard"] == pytest.approx((100 + 100 * 25 / 30) / 2)
    assert prep["precision"] == pytest.approx(100.0)
    calot = matlab["per_phase"]["CalotTriangleDissection"]
    assert calot["jaccard"] == pytest.approx((100 + 100 * 30 / 35) / 2)
    assert matlab["jaccard"] == pytest.approx(
        ((100 + 100 * 25 / 30) / 2 + (100 + 100 * 30 / 35) / 2) / 2
    )
    assert matlab["per_phase"]["Preparation"]["jaccard"] < 100.0
    assert matlab["per_phase"]["GallbladderDissection"]["jaccard"] is None  # absent phase


def test_cholec80_dirs_name_missing_and_mismatched_videos(phase_dirs: tuple[Path, Path]) -> None:
    gold, pred = phase_dirs
    (pred / "video02_pred.txt").unlink()
    with pytest.raises(ValueError, match=r"no prediction in .* \(video02\)"):
        score_cholec80_dirs(gold, pred)
    write_video(pred, "video02_pred.txt", 30)
    write_video(pred, "video03_pred.txt", 30)
    with pytest.raises(ValueError, match="no ground truth for video03"):
        score_cholec80_dirs(gold, pred)
    (pred / "video03_pred.txt").unlink()
    write_cholec80_phase_file(pred / "video02_pred.txt", [0] * 50, CHOLEC80_PHASES)
    with pytest.raises(ValueError, match="video02: the ground truth covers 60 s but the predi"):
        score_cholec80_dirs(gold, pred)


# -- registries, item correctness, hygiene ---------------------------------------------------


def test_registries_and_errors() -> None:
    assert [spec.name for spec in TASKS.arena()] == [
        "endovis17-localization",
        "endovis18-vqa",
        "cholec80-phase",
        "sar-rarp50-action",
        "cholect50-triplet",
        "endoscapes-cvs",
    ]
    primaries = [spec.primary_metric for spec in TASKS.values()]
    assert all(metric.higher_is_better and metric.aggregation for metric in primaries)
    with pytest.raises(ValueError, match="Did you mean 'cholec80-phase'"):
        score_task("cholec80-phse", [(phase("Preparation"), None)])
    with pytest.raises(ValueError, match="Known tasks"):
        score_task("nope", [(phase("Preparation"), None)])
    with pytest.raises(ValueError, match="other tasks"):
        score_task("cholec80-tools", [(phase("Preparation"), None)])
    with pytest.raises(ValueError, match="no items"):
        score_task("cholec80-phase", [])


def test_item_correct() -> None:
    assert item_correct(phase("Preparation"), parse_answer(phase("Preparation"), "prep?")) is False
    assert item_correct(phase("Preparation"), None) is False
    assert item_correct(phase("Preparation"), Parsed(ok=True, value="preparation")) is True
    box = item("endovis17-localization", {"label": "grasper", "box": [0, 0, 0.5, 0.5]})
    assert item_correct(box, Parsed(ok=True, value={"label": None, "box": [0, 0, 0.5, 0.4]}))
    assert not item_correct(box, Parsed(ok=True, value={"label": None, "box": [0, 0, 0.2, 0.5]}))
    triplet = item("cholect50-triplet", [["grasper", "retract", "gallbladder"]])
    assert item_correct(triplet, Parsed(ok=True, value=[["Grasper", "retract", "gallbladder"]]))


def test_metrics_import_no_ivtmetrics_or_sklearn() -> None:
    code = (
        "import sys, surgagent.evals.metrics; "
        "print(sorted({'ivtmetrics', 'sklearn'} & set(sys.modules)))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"
