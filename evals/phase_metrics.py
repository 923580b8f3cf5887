"""Surgical phase recognition metrics, as the Cholec80 evaluation code computes them.

Pure functions over arrays of label indices (0-based, one per sample at ``fps``); numpy only,
so ``surgagent phase eval`` and the eval runner share one implementation.

The reference is the ``Evaluate.m`` / ``Main.m`` pair used by the TMRNet / Trans-SVNet
lineage: per video, a relaxed boundary of 10 s at each ground-truth phase run forgives a late
switch from the previous phase at the run's start and an early switch to the next phase at its
end (with wider rules for the last Cholec80 phases); Jaccard, precision and recall per phase
(clamped to 100) are averaged per phase over videos, skipping NaN, then over phases; accuracy
is averaged over videos. Three variants, always recorded in the result:

- ``matlab``: what that MATLAB code actually does. Its end-of-run mask is used as a logical
  index into the whole run, so it touches the run's *first* t frames: early switches are in
  effect never forgiven.
- ``intended``: the end-of-run mask relaxes the run's *last* t frames (what the comments say
  and what Python ports do; it scores a few points higher).
- ``strict``: no relaxation at all.

    result = evaluate_videos({"video41": (gold, pred)}, phases=CHOLEC80, fps=1.0)
    print(result.variant, result.accuracy, result.jaccard)
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np

__all__ = [
    "VARIANTS",
    "PhaseEvaluation",
    "PhaseRule",
    "Variant",
    "VideoPhaseScores",
    "cholec80_rules",
    "default_rules",
    "evaluate_video",
    "evaluate_videos",
    "general_rules",
    "relaxed_diff",
    "resample_labels",
]

Variant = Literal["matlab", "intended", "strict"]
VARIANTS: tuple[Variant, ...] = ("matlab", "intended", "strict")
RELAXATION_S = 10.0


@dataclass(frozen=True)
class PhaseRule:
    """Which label differences (prediction minus truth) a run forgives near its boundaries.

    Attributes:
        late: Differences forgiven in the run's first t samples (``-1``: the previous phase is
            still predicted).
        early: Differences forgiven in the run's last t samples (``+1``: the next phase is
            predicted already).
    """

    late: tuple[int, ...] = (-1,)
    early: tuple[int, ...] = (1,)


def general_rules(num_phases: int) -> list[PhaseRule]:
    """One phase back at a run's start, one ahead at its end, for every phase."""
    return [PhaseRule() for _ in range(num_phases)]


def cholec80_rules() -> list[PhaseRule]:
    """The Cholec80 rules, one per phase in the standard order.

    Phases 4-5 (1-based: dissection, packaging) also forgive a switch two phases ahead at
    their end; phases 6-7 (cleaning, retraction) forgive two phases either way, since
    packaging, cleaning and retraction interleave.
    """
    rules = general_rules(7)
    rules[3] = rules[4] = PhaseRule(late=(-1,), early=(1, 2))
    rules[5] = rules[6] = PhaseRule(late=(-1, -2), early=(1, 2))
    return rules


@dataclass(frozen=True)
class VideoPhaseScores:
    """One video's scores in percent; per-phase values are NaN for phases absent from its truth.

    Per-phase precision and recall are *not* clamped here (the reference clamps them when it
    averages); Jaccard never exceeds 100.
    """

    name: str
    accuracy: float
    jaccard: tuple[float, ...]
    precision: tuple[float, ...]
    recall: tuple[float, ...]


@dataclass(frozen=True)
class PhaseEvaluation:
    """Scores over a set of videos (percent), with the variant and settings that produced them.

    Attributes:
        variant: ``matlab``, ``intended`` or ``strict`` (see the module docstring).
        fps: Samples per second of the label arrays.
        relaxation_s: Width of the relaxed boundary in seconds (0 for ``strict``).
        phases: The phase names, in label order.
        videos: Each video's scores.
        jaccard_per_phase: Per phase, the mean over videos (NaN skipped; clamped to 100).
        precision_per_phase: As ``jaccard_per_phase``.
        recall_per_phase: As ``jaccard_per_phase``.
        jaccard: Mean of ``jaccard_per_phase`` over phases (phases absent everywhere skipped).
        precision: As ``jaccard``.
        recall: As ``jaccard``.
        accuracy: Mean accuracy over videos.
        jaccard_std: Sample standard deviation over phases (as MATLAB's ``std``).
        precision_std: As ``jaccard_std``.
        recall_std: As ``jaccard_std``.
        accuracy_std: Sample standard deviation of accuracy over videos.
    """

    variant: Variant
    fps: float
    relaxation_s: float
    phases: tuple[str, ...]
    videos: tuple[VideoPhaseScores, ...]
    jaccard_per_phase: tuple[float, ...]
    precision_per_phase: tuple[float, ...]
    recall_per_phase: tuple[float, ...]
    jaccard: float
    precision: float
    recall: float
    accuracy: float
    jaccard_std: float = math.nan
    precision_std: float = math.nan
    recall_std: float = math.nan
    accuracy_std: float = math.nan

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict; NaN (and a video's x/0 precision, inf) become None."""
        return _jsonable(
            {name: getattr(self, name) for name in self.__dataclass_fields__ if name != "videos"}
            | {"videos": [vars(video) for video in self.videos]}
        )


def _jsonable(value: Any) -> Any:
    if isinstance(value, dict):
        return {key: _jsonable(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [_jsonable(item) for item in value]
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def _check_labels(gold: np.ndarray, pred: np.ndarray, num_phases: int) -> None:
    if gold.ndim != 1 or pred.ndim != 1:
        raise ValueError("gold and pred must be 1-D arrays of label indices, one per sample.")
    if len(gold) != len(pred):
        raise ValueError(
            f"gold has {len(gold)} samples but pred has {len(pred)}; resample both to one fps "
            "and the same length first."
        )
    if len(gold) == 0:
        raise ValueError("gold and pred are empty; a video needs at least one labelled sample.")
    for name, labels in (("gold", gold), ("pred", pred)):
        bad = labels[(labels < 0) | (labels >= num_phases)]
        if bad.size:
            raise ValueError(
                f"{name} holds label {int(bad[0])}, outside 0..{num_phases - 1} for "
                f"{num_phases} phases; check the vocabulary."
            )


def _runs(labels: np.ndarray) -> list[tuple[int, int, int]]:
    """``(label, start, end)`` for each maximal run of equal labels, ``end`` exclusive."""
    edges = np.flatnonzero(np.diff(labels)) + 1
    starts = np.concatenate(([0], edges))
    ends = np.concatenate((edges, [len(labels)]))
    return [(int(labels[s]), int(s), int(e)) for s, e in zip(starts, ends, strict=True)]


def default_rules(num_phases: int) -> list[PhaseRule]:
    """Cholec80's rules for a 7-phase vocabulary, `general_rules` for any other size."""
    return cholec80_rules() if num_phases == 7 else general_rules(num_phases)


def relaxed_diff(
    gold: Sequence[int] | np.ndarray,
    pred: Sequence[int] | np.ndarray,
    *,
    num_phases: int,
    fps: float,
    variant: Variant = "matlab",
    relaxation_s: float = RELAXATION_S,
    rules: Sequence[PhaseRule] | None = None,
) -> Any:
    """``pred - gold`` with the differences the relaxed boundary forgives set to 0.

    Args:
        gold: Ground-truth label indices, one per sample.
        pred: Predicted label indices, same length.
        num_phases: Size of the vocabulary.
        fps: Samples per second (the boundary is ``round(relaxation_s * fps)`` samples).
        variant: ``matlab``, ``intended`` or ``strict``.
        relaxation_s: Width of the relaxed boundary in seconds.
        rules: One `PhaseRule` per phase; `default_rules` where None.

    Returns:
        An int array; a sample counts as correct where it is 0.

    Raises:
        ValueError: For an unknown variant, or a rules list that does not fit the vocabulary.
    """
    gold_a, pred_a = np.asarray(gold, dtype=np.int64), np.asarray(pred, dtype=np.int64)
    diff = pred_a - gold_a
    if variant not in VARIANTS:
        raise ValueError(f"unknown variant {variant!r}; use one of {', '.join(VARIANTS)}.")
    if variant == "strict" or not len(diff):
        return diff
    rules = list(rules) if rules is not None else default_rules(num_phases)
    if len(rules) != num_phases:
        raise ValueError(f"{len(rules)} phase rules given for {num_phases} phases; give one each.")
    width = int(round(relaxation_s * fps))
    out = diff.copy()
    for label, start, end in _runs(gold_a):
        run = out[start:end]  # a view: edits land in ``out``
        t = min(width, len(run))
        if t == 0:
            continue
        rule = rules[label]
        run[:t][np.isin(run[:t], rule.late)] = 0  # late switch into this phase
        tail = np.isin(run[len(run) - t :], rule.early)  # early switch out of it
        if variant == "matlab":
            # Evaluate.m writes curDiff(curDiff(end-t+1:end)==1) = 0: a length-t logical index,
            # which MATLAB applies to the first t elements of curDiff.
            run[:t][tail] = 0
        else:
            run[len(run) - t :][tail] = 0
    return out


def _ratio(numerator: float, denominator: float) -> float:
    """MATLAB division: x/0 is inf (clamped later), 0/0 is NaN."""
    if denominator == 0:
        return math.nan if numerator == 0 else math.inf
    return 100.0 * numerator / denominator


def evaluate_video(
    gold: Sequence[int] | np.ndarray,
    pred: Sequence[int] | np.ndarray,
    *,
    num_phases: int,
    fps: float = 1.0,
    variant: Variant = "matlab",
    relaxation_s: float = RELAXATION_S,
    rules: Sequence[PhaseRule] | None = None,
    name: str = "",
) -> VideoPhaseScores:
    """Score one video as ``Evaluate.m`` does.

    Args:
        gold: Ground-truth label indices (``0..num_phases-1``), one per sample.
        pred: Predicted label indices, same length.
        num_phases: Size of the vocabulary.
        fps: Samples per second of both arrays.
        variant: ``matlab``, ``intended`` or ``strict``.
        relaxation_s: Width of the relaxed boundary in seconds.
        rules: Per-phase `PhaseRule`s; Cholec80's when ``num_phases`` is 7, else general.
        name: The video's name, kept in the result.

    Returns:
        The video's `VideoPhaseScores` (percent).

    Raises:
        ValueError: If the arrays differ in length, are empty, or hold labels out of range.
    """
    gold_a, pred_a = np.asarray(gold, dtype=np.int64), np.asarray(pred, dtype=np.int64)
    _check_labels(gold_a, pred_a, num_phases)
    updated = relaxed_diff(
        gold_a,
        pred_a,
        num_phases=num_phases,
        fps=fps,
        variant=variant,
        relaxation_s=relaxation_s,
        rules=rules,
    )
    correct = updated == 0
    jaccard, precision, recall = [], [], []
    for phase in range(num_phases):
        in_gold, in_pred = gold_a == phase, pred_a == phase
        if not in_gold.any():
            jaccard.append(math.nan)
            precision.append(math.nan)
            recall.append(math.nan)
            continue
        union = in_gold | in_pred
        # As the reference: relaxed-correct samples anywhere in the union count as hits.
        hits = int(np.count_nonzero(correct & union))
        jaccard.append(100.0 * hits / int(union.sum()))
        precision.append(_ratio(hits, int(in_pred.sum())))
        recall.append(_ratio(hits, int(in_gold.sum())))
    accuracy = 100.0 * float(correct.mean())
    return VideoPhaseScores(name, accuracy, tuple(jaccard), tuple(precision), tuple(recall))


def _nanmean(values: np.ndarray, axis: int | None = None) -> Any:
    """Mean skipping NaN; NaN (no warning) where everything is NaN."""
    counts = np.sum(~np.isnan(values), axis=axis)
    sums = np.nansum(values, axis=axis)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(counts > 0, sums / np.maximum(counts, 1), np.nan)


def _std(values: np.ndarray) -> float:
    kept = values[~np.isnan(values)]
    if kept.size == 0:
        return math.nan
    return float(np.std(kept, ddof=1)) if kept.size > 1 else 0.0


def evaluate_videos(
    videos: Mapping[str, tuple[Sequence[int] | np.ndarray, Sequence[int] | np.ndarray]],
    *,
    phases: Sequence[str],
    fps: float = 1.0,
    variant: Variant = "matlab",
    relaxation_s: float = RELAXATION_S,
    rules: Sequence[PhaseRule] | None = None,
) -> PhaseEvaluation:
    """Score a set of videos and average as ``Main.m`` does.

    Per phase, each metric is clamped to 100 and averaged over the videos whose truth holds
    the phase (NaN skipped); the overall value is the mean over phases (phases absent from
    every video skipped). Accuracy is the mean over videos.

    Args:
        videos: Video name to ``(gold, pred)`` label arrays at ``fps``.
        phases: The phase names, in label order.
        fps: Samples per second of the arrays (1.0 in the Cholec80 protocol).
        variant: ``matlab``, ``intended`` or ``strict``.
        relaxation_s: Width of the relaxed boundary in seconds.
        rules: Per-phase `PhaseRule`s; Cholec80's for 7 phases, general otherwise.

    Returns:
        The `PhaseEvaluation`.

    Raises:
        ValueError: If no videos are given or one video's arrays are unusable.
    """
    if not videos:
        raise ValueError("no videos to evaluate; give at least one (gold, pred) pair.")
    if variant not in VARIANTS:
        raise ValueError(f"unknown variant {variant!r}; use one of {', '.join(VARIANTS)}.")
    scores = tuple(
        evaluate_video(
            gold,
            pred,
            num_phases=len(phases),
            fps=fps,
            variant=variant,
            relaxation_s=relaxation_s,
            rules=rules,
            name=name,
        )
        for name, (gold, pred) in videos.items()
    )
    per_phase: dict[str, np.ndarray] = {}
    for metric in ("jaccard", "precision", "recall"):
        table = np.array([getattr(s, metric) for s in scores], dtype=np.float64)  # video x phase
        table = np.where(table > 100.0, 100.0, table)
        per_phase[metric] = np.atleast_1d(_nanmean(table, axis=0))
    accuracy = np.array([s.accuracy for s in scores])
    return PhaseEvaluation(
        variant=variant,
        fps=fps,
        relaxation_s=0.0 if variant == "strict" else relaxation_s,
        phases=tuple(phases),
        videos=scores,
        jaccard_per_phase=tuple(float(v) for v in per_phase["jaccard"]),
        precision_per_phase=tuple(float(v) for v in per_phase["precision"]),
        recall_per_phase=tuple(float(v) for v in per_phase["recall"]),
        jaccard=float(_nanmean(per_phase["jaccard"])),
        precision=float(_nanmean(per_phase["precision"])),
        recall=float(_nanmean(per_phase["recall"])),
        accuracy=float(accuracy.mean()),
        jaccard_std=_std(per_phase["jaccard"]),
        precision_std=_std(per_phase["precision"]),
        recall_std=_std(per_phase["recall"]),
        accuracy_std=_std(accuracy),
    )


def resample_labels(labels: Sequence[int] | np.ndarray, from_fps: float, to_fps: float) -> Any:
    """Labels at ``from_fps`` taken at ``to_fps``: sample k is the label at ``k / to_fps`` s.

    Cholec80's 25 fps truth taken at 1 fps is every 25th row (``gt(1:25:end)`` in Main.m).

    Args:
        labels: Label indices at ``from_fps``.
        from_fps: Their rate.
        to_fps: The wanted rate.

    Returns:
        An int array of ``ceil(len(labels) * to_fps / from_fps)`` labels.

    Raises:
        ValueError: If a rate is not positive.
    """
    if not (from_fps > 0 and to_fps > 0):
        raise ValueError(f"rates must be positive, got {from_fps} and {to_fps}.")
    array = np.asarray(labels, dtype=np.int64)
    count = math.ceil(len(array) * to_fps / from_fps - 1e-9)
    index = np.floor(np.arange(count) * from_fps / to_fps + 1e-9).astype(np.int64)
    return array[np.minimum(index, len(array) - 1)] if len(array) else array
