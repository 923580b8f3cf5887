"""Phase metrics: the Cholec80 phase metrics, checked against values worked out by hand."""

from __future__ import annotations

import ast
import json
import math
from pathlib import Path

import numpy as np
import pytest

from surgagent.evals.phase_metrics import (
    VARIANTS,
    PhaseRule,
    Variant,
    cholec80_rules,
    evaluate_video,
    evaluate_videos,
    relaxed_diff,
    resample_labels,
)

CHOLEC80 = [f"phase{i + 1}" for i in range(7)]


def runs(*lengths: int) -> np.ndarray:
    """Phase 0 for lengths[0] samples, then phase 1, ..."""
    return np.concatenate([np.full(n, i) for i, n in enumerate(lengths)])


def test_the_module_imports_nothing_of_ours() -> None:
    source = Path(__file__).resolve().parents[1] / "evals" / "phase_metrics.py"
    tree = ast.parse(source.read_text())
    roots = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            roots |= {alias.name.split(".")[0] for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module:
            roots.add(node.module.split(".")[0])
    assert roots <= {"__future__", "math", "collections", "dataclasses", "typing", "numpy"}


# A 3-phase video at 0.2 fps, so the 10 s boundary is t = 2 samples. The prediction switches
# into phase 1 one sample late (index 4) and into phase 2 one sample early (index 7).
GOLD = [0, 0, 0, 0, 1, 1, 1, 1, 2, 2, 2, 2]
PRED = [0, 0, 0, 0, 0, 1, 1, 2, 2, 2, 2, 2]
# Worked by hand (percent): accuracy, then per phase jaccard / precision / recall, unclamped.
BY_HAND = {
    # Both boundary errors forgiven; phase 1 gets 4 hits out of 2 predicted and 4 true.
    "intended": (100.0, (100, 100, 100), (100, 200, 100), (125, 100, 125)),
    # The early switch at index 7 is not forgiven: phase 1's union {4..7} has 3 hits.
    "matlab": (100 * 11 / 12, (100, 75, 80), (100, 150, 80), (125, 75, 100)),
    # Nothing forgiven: plain per-class counts.
    "strict": (100 * 10 / 12, (80, 50, 80), (80, 100, 80), (100, 50, 100)),
}


@pytest.mark.parametrize("variant", VARIANTS)
def test_one_video_by_hand(variant: Variant) -> None:
    scores = evaluate_video(GOLD, PRED, num_phases=3, fps=0.2, variant=variant)
    accuracy, jaccard, precision, recall = BY_HAND[variant]
    assert scores.accuracy == pytest.approx(accuracy)
    assert scores.jaccard == pytest.approx(jaccard)
    assert scores.precision == pytest.approx(precision)
    assert scores.recall == pytest.approx(recall)
    overall = evaluate_videos({"v": (GOLD, PRED)}, phases=["a", "b", "c"], fps=0.2, variant=variant)
    assert overall.variant == variant and overall.accuracy == pytest.approx(accuracy)
    assert overall.precision_per_phase == pytest.approx([min(100, v) for v in precision])
    assert overall.recall == pytest.approx(np.mean([min(100, v) for v in recall]))
    assert overall.jaccard == pytest.approx(np.mean(jaccard))


def test_matlab_applies_the_end_mask_to_the_first_frames_of_a_run() -> None:
    # Phase 1 runs over indices 2..4 (3 samples, t = 2); the prediction moves to phase 2 at 3.
    gold, pred = [0, 0, 1, 1, 1, 2, 2], [0, 0, 1, 2, 2, 2, 2]
    # The tail mask [True, True] (indices 3, 4) lands on the run's first two samples (2, 3):
    # sample 3 is forgiven by accident, sample 4 is not.
    matlab = relaxed_diff(gold, pred, num_phases=3, fps=0.2, variant="matlab")
    assert matlab.tolist() == [0, 0, 0, 0, 1, 0, 0]
    intended = relaxed_diff(gold, pred, num_phases=3, fps=0.2, variant="intended")
    assert intended.tolist() == [0] * 7
    strict = relaxed_diff(gold, pred, num_phases=3, fps=0.2, variant="strict")
    assert strict.tolist() == [0, 0, 0, 1, 1, 0, 0]


@pytest.mark.parametrize("variant", VARIANTS)
def test_perfect_prediction_scores_100(variant: Variant) -> None:
    gold = runs(30, 200, 45, 400, 60, 35, 50)
    result = evaluate_videos(
        {"a": (gold, gold), "b": (gold[::2], gold[::2])},
        phases=CHOLEC80,
        variant=variant,
    )
    for value in (result.accuracy, result.jaccard, result.precision, result.recall):
        assert value == pytest.approx(100.0)
    assert result.accuracy_std == 0.0


SEVEN = runs(60, 60, 60, 60, 60, 60, 60)  # 7 min at 1 fps


def shifted(start: int, length: int, label: int) -> np.ndarray:
    pred = SEVEN.copy()
    pred[start : start + length] = label
    return pred


def accuracy(pred: np.ndarray, variant: Variant) -> float:
    return evaluate_video(SEVEN, pred, num_phases=7, variant=variant).accuracy


def test_a_late_switch_under_10_s_is_forgiven_by_both_relaxed_variants() -> None:
    late = shifted(120, 7, 1)  # phase 2 (index 1) predicted 7 s into phase 3's run
    assert accuracy(late, "matlab") == accuracy(late, "intended") == 100.0
    assert accuracy(late, "strict") == pytest.approx(100 * (1 - 7 / 420))


def test_an_early_switch_is_forgiven_by_intended_but_not_matlab() -> None:
    early = shifted(113, 7, 2)  # phase 3 predicted 7 s before phase 2's run ends
    assert accuracy(early, "intended") == 100.0
    assert accuracy(early, "matlab") == pytest.approx(100 * (1 - 7 / 420))
    assert accuracy(early, "strict") == pytest.approx(100 * (1 - 7 / 420))


def test_only_the_first_10_s_of_a_late_switch_are_forgiven() -> None:
    late = shifted(120, 15, 1)
    assert accuracy(late, "intended") == pytest.approx(100 * (1 - 5 / 420))
    assert accuracy(late, "matlab") == pytest.approx(100 * (1 - 5 / 420))


def test_a_switch_to_an_unrelated_phase_is_never_forgiven() -> None:
    wrong = shifted(120, 3, 5)  # phase 6 predicted at the start of phase 3
    assert accuracy(wrong, "intended") == pytest.approx(100 * (1 - 3 / 420))


def test_cholec80_phase_specific_rules() -> None:
    # Phase 5 (index 4) forgives a switch two ahead (to 7) at its end; phase 2 does not.
    assert accuracy(shifted(294, 6, 6), "intended") == 100.0
    assert accuracy(shifted(114, 6, 3), "intended") == pytest.approx(100 * (1 - 6 / 420))
    # Phase 7 (index 6) forgives phase 5 (two back) at its start; phase 4 forgives only one.
    assert accuracy(shifted(360, 6, 4), "matlab") == 100.0
    assert accuracy(shifted(180, 6, 1), "matlab") == pytest.approx(100 * (1 - 6 / 420))
    rules = cholec80_rules()
    assert rules[5] == rules[6] == PhaseRule(late=(-1, -2), early=(1, 2))


def test_absent_phases_are_nan_and_skipped_when_averaging() -> None:
    # fps 0.2 (t = 2). Video a has phases 0 and 1 only; video b all three.
    a_gold, a_pred = [0, 0, 0, 1, 1, 1], [0, 0, 0, 0, 0, 0]
    b_gold = b_pred = [0, 0, 1, 1, 2, 2]
    result = evaluate_videos(
        {"a": (a_gold, a_pred), "b": (b_gold, b_pred)}, phases=["x", "y", "z"], fps=0.2
    )
    a = result.videos[0]
    # Phase 1 of a: the first 2 of its 3 samples are forgiven (late switch); nothing predicts
    # phase 1, so its precision is 2/0 (inf, clamped to 100 when averaging).
    assert a.jaccard[1] == pytest.approx(100 * 2 / 3) and a.recall[1] == pytest.approx(100 * 2 / 3)
    assert math.isinf(a.precision[1])
    # Phase 0 of a: 5 hits in its union of 6 samples; recall 5/3 (clamped later).
    assert a.jaccard[0] == pytest.approx(100 * 5 / 6) and a.recall[0] == pytest.approx(500 / 3)
    assert math.isnan(a.jaccard[2]) and math.isnan(a.precision[2])
    assert result.precision_per_phase == pytest.approx([(500 / 6 + 100) / 2, 100.0, 100.0])
    assert result.recall_per_phase == pytest.approx([100.0, (200 / 3 + 100) / 2, 100.0])
    assert result.jaccard_per_phase[2] == 100.0  # only video b counts for phase 2
    assert result.accuracy == pytest.approx((100 * 5 / 6 + 100) / 2)
    data = result.to_dict()
    assert data["videos"][0]["jaccard"][2] is None and data["variant"] == "matlab"
    json.dumps(data, allow_nan=False)


def test_strict_never_scores_above_the_relaxed_variants() -> None:
    rng = np.random.default_rng(3)
    for _ in range(20):
        gold = runs(*rng.integers(5, 80, 7))
        pred = np.clip(gold + rng.choice([-2, -1, 0, 0, 0, 1, 2], len(gold)), 0, 6)
        pred[rng.integers(0, len(gold), 10)] = rng.integers(0, 7, 10)
        scores = {v: evaluate_video(gold, pred, num_phases=7, variant=v) for v in VARIANTS}
        assert scores["strict"].accuracy <= scores["matlab"].accuracy
        assert scores["strict"].accuracy <= scores["intended"].accuracy
        strict_hits = relaxed_diff(gold, pred, num_phases=7, fps=1.0, variant="strict") == 0
        assert scores["strict"].accuracy == pytest.approx(100 * strict_hits.mean())


def test_bad_inputs_say_what_is_wrong() -> None:
    with pytest.raises(ValueError, match="12 samples but pred has 11"):
        evaluate_video(GOLD, PRED[:-1], num_phases=3)
    with pytest.raises(ValueError, match="label 3, outside 0..2"):
        evaluate_video(GOLD, [3] * 12, num_phases=3)
    with pytest.raises(ValueError, match="empty"):
        evaluate_video([], [], num_phases=3)
    with pytest.raises(ValueError, match="unknown variant 'loose'"):
        evaluate_videos({"v": (GOLD, PRED)}, phases=["a", "b", "c"], variant="loose")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="no videos"):
        evaluate_videos({}, phases=["a", "b"])


def test_resample_labels_takes_every_25th_of_a_25_fps_file() -> None:
    labels = np.repeat([0, 1, 2], [60, 50, 3])  # 113 frames at 25 fps
    once_a_second = resample_labels(labels, 25.0, 1.0)
    assert once_a_second.tolist() == [0, 0, 0, 1, 1]  # frames 0, 25, 50, 75, 100
    assert resample_labels(once_a_second, 1.0, 1.0).tolist() == once_a_second.tolist()
