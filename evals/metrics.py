"""Metrics of the eval tasks, one implementation each, and `score_task` that applies them.

Pure functions over gold and predicted values (numpy; ivtmetrics and scikit-learn imported
where needed). The ``score_*`` functions are the scorers the task specs name
(`surgagent.evals.tasks`); every metric they report is declared, with its direction, there.
Scores are percentages (0-100). An unparseable answer counts as wrong and is listed in
`TaskScore.unparsed_ids`, never dropped. Cholec80 video-level phase metrics wrap
`surgagent.evals.phase_metrics` (`score_cholec80_dirs`); CholecT50 triplet AP goes through
ivtmetrics.

    spec = get_task("cholec80-phase")
    score = score_task(spec.name, [(item, spec.parse(item, text)) for item, text in answers])
    print(score.primary.name, score.primary.value, score.metrics["macro_f1"])
"""

from __future__ import annotations

import functools
import json
import math
import re
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from pydantic import BaseModel, Field

from surgagent.evals.phase_files import score_cholec80_dirs
from surgagent.evals.tasks import AnswerKind, Scored, TaskRegistryError, TaskSpec, get_task

if TYPE_CHECKING:
    from surgagent.evals.records import TaskRecord
    from surgagent.tools.answers import Parsed

__all__ = [
    "PrimaryScore",
    "TaskScore",
    "accuracy",
    "box_iou",
    "cvs_scores",
    "item_correct",
    "label_scores",
    "score_boxes",
    "score_cholec80_dirs",
    "score_cvs",
    "score_labels",
    "score_task",
    "score_tools",
    "score_triplets",
    "set_f1",
    "triplet_ids",
    "triplet_map",
]

UNPARSED = "(unparsed)"
TRIPLET_COMPONENTS = ("ivt", "i", "v", "t", "iv", "it")  # columns of ivtmetrics' map


class PrimaryScore(BaseModel):
    """The number a task is ranked by (0-100)."""

    name: str
    value: float


class TaskScore(BaseModel):
    """One system's scores on one task (percent where a metric is a percentage)."""

    task: str
    n: int
    n_unparsed: int
    primary: PrimaryScore
    metrics: dict[str, float]
    per_class: dict[str, dict[str, float]] = Field(default_factory=dict)
    # {"labels": [...], "matrix": [[...]]}: rows gold, columns predicted, in the order of
    # "labels"; "(unparsed)" comes last where any answer was (its row stays zero).
    confusion: dict[str, Any] | None = None
    unparsed_ids: list[str] = Field(default_factory=list)


def _key(label: Any) -> str:
    return re.sub(r"[^a-z0-9]+", "", str(label).lower())


def _words(text: Any) -> str:
    return " " + " ".join(re.sub(r"[^a-z0-9]+", " ", str(text).lower()).split()) + " "


def _mean(values: Sequence[float] | np.ndarray) -> float:
    """Mean skipping NaN; NaN (no warning) where nothing is left."""
    kept = np.asarray(values, dtype=float)
    kept = kept[~np.isnan(kept)]
    return float(kept.mean()) if kept.size else math.nan


def accuracy(correct: Sequence[bool | None]) -> float:
    """Percentage of items marked correct (None counts as wrong)."""
    return 100.0 * sum(c is True for c in correct) / len(correct) if correct else math.nan


def label_scores(
    gold: Sequence[str], pred: Sequence[str | None], labels: Sequence[str] | None = None
) -> tuple[dict[str, dict[str, float]], dict[str, float], dict[str, Any]]:
    """Per-class precision/recall/F1 (percent), their macro means, and the confusion matrix.

    Labels compare by ``_key`` (case and punctuation ignored). A ``None`` prediction is a miss
    for its gold class and lands in the ``(unparsed)`` column. Macro means run over the classes
    present in the gold; a class never predicted has precision 0 (scikit-learn's
    ``zero_division=0``).

    Args:
        gold: One gold label per item.
        pred: One predicted label per item, None where unparseable.
        labels: Preferred label order (labels not seen are left out).

    Returns:
        ``(per_class, macro, confusion)``; ``confusion`` is ``{"labels", "matrix"}``, square,
        rows gold and columns predicted in the order of ``labels``.
    """
    spelling: dict[str, str] = {}
    for label in [*gold, *(labels or []), *(p for p in pred if p is not None)]:
        spelling.setdefault(_key(label), label)
    seen = {_key(g) for g in gold} | {_key(p) for p in pred if p is not None}
    order = [_key(v) for v in labels or [] if _key(v) in seen]
    order += sorted(seen - set(order))
    index = {key: k for k, key in enumerate(order)}
    size = len(order) + (1 if any(p is None for p in pred) else 0)
    matrix = np.zeros((size, size), dtype=np.int64)
    for g, p in zip(gold, pred, strict=True):
        matrix[index[_key(g)], len(order) if p is None else index[_key(p)]] += 1
    per_class = {
        spelling[key]: _prf(matrix[k, k], matrix[k].sum(), matrix[:, k].sum())
        for k, key in enumerate(order)
    }
    macro = {f"macro_{m}": _macro(per_class, m) for m in ("precision", "recall", "f1")}
    names = [spelling[key] for key in order] + ([UNPARSED] if size > len(order) else [])
    return per_class, macro, {"labels": names, "matrix": matrix.tolist()}


def _prf(tp: int, support: int, predicted: int) -> dict[str, float]:
    """Precision, recall, F1 (percent) and support of one class; precision 0 if never predicted."""
    precision = 100.0 * tp / predicted if predicted else 0.0
    recall = 100.0 * tp / support if support else math.nan
    both = precision + recall
    f1 = 2 * precision * recall / both if both else (0.0 if support else math.nan)
    return {"precision": precision, "recall": recall, "f1": f1, "support": float(support)}


def _macro(per_class: dict[str, dict[str, float]], name: str) -> float:
    return _mean([v[name] for v in per_class.values() if v["support"] > 0])


def set_f1(gold: Sequence[str], pred: Sequence[str]) -> float:
    """F1 (0-1) of a predicted label set against the gold set; both empty is 1."""
    g, p = {_key(x) for x in gold}, {_key(x) for x in pred}
    if not g and not p:
        return 1.0
    return 2 * len(g & p) / (len(g) + len(p))


def box_iou(a: Sequence[float], b: Sequence[float]) -> float:
    """Intersection over union (0-1) of two ``[x1, y1, x2, y2]`` boxes."""
    width = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    height = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = width * height
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return inter / union if union > 0 else 0.0


def cvs_scores(gold: Any, pred: Any) -> dict[str, float]:
    """CVS metrics (percent) from ``n x 3`` boolean arrays of gold and predicted criteria.

    Returns per criterion ``c{k}_accuracy``, ``c{k}_balanced_accuracy`` (mean recall of the
    classes present in the gold) and ``c{k}_ap`` (scikit-learn average precision of the binary
    prediction; NaN where the gold has no positive), then ``mean_accuracy`` (SurgVLM-Bench's
    number), ``balanced_accuracy`` and ``mAP`` (NaN skipped), and ``exact_match``. From binary
    predictions AP never drops below the criterion's prevalence.
    """
    from sklearn.metrics import average_precision_score

    g, p = np.asarray(gold, dtype=bool), np.asarray(pred, dtype=bool)
    out: dict[str, float] = {}
    for c in range(3):
        out[f"c{c + 1}_accuracy"] = 100.0 * float(np.mean(g[:, c] == p[:, c]))
        recalls = [np.mean(p[g[:, c] == v, c] == v) for v in (True, False) if (g[:, c] == v).any()]
        out[f"c{c + 1}_balanced_accuracy"] = 100.0 * float(np.mean(recalls))
        ap = average_precision_score(g[:, c], p[:, c].astype(float)) if g[:, c].any() else math.nan
        out[f"c{c + 1}_ap"] = 100.0 * float(ap)
    for name, key in (("mean_accuracy", "accuracy"), ("balanced_accuracy", "balanced_accuracy")):
        out[name] = _mean([out[f"c{c}_{key}"] for c in (1, 2, 3)])
    out["mAP"] = _mean([out[f"c{c}_ap"] for c in (1, 2, 3)])
    out["exact_match"] = 100.0 * float(np.mean((g == p).all(axis=1)))
    return out


@functools.lru_cache(maxsize=4)
def _bank() -> Any:
    from ivtmetrics.disentangle import Disentangle

    return np.asarray(Disentangle().map_file(), dtype=np.int64)  # rows: ivt, i, v, t, iv, it


@functools.lru_cache(maxsize=4)
def triplet_ids(vocabulary: Path | str | None = None) -> dict[tuple[str, str, str], int]:
    """CholecT50 ``(instrument, verb, target)`` -> triplet class id (0-99).

    Args:
        vocabulary: A CholecT50 vocabulary JSON with a ``triplet`` table (``"id":
            "instrument,verb,target"``); None builds the table from ivtmetrics' own component
            map and the CholecT50 names (the same 100 classes).

    Raises:
        ValueError: If the JSON has no ``triplet`` table.
    """
    if vocabulary is not None:
        data = json.loads(Path(vocabulary).read_text(encoding="utf-8"))
        if not isinstance(data.get("triplet"), dict):
            raise ValueError(f"{vocabulary} has no 'triplet' table of id -> 'i,v,t' names")
        return {
            tuple(_key(x) for x in name.split(",")): int(k)  # type: ignore[misc]
            for k, name in data["triplet"].items()
        }
    from surgagent.tools.vocabulary import CHOLECT50_INSTRUMENTS, CHOLECT50_TARGETS, CHOLECT50_VERBS

    return {
        (_key(CHOLECT50_INSTRUMENTS[i]), _key(CHOLECT50_VERBS[v]), _key(CHOLECT50_TARGETS[t])): k
        for k, i, v, t in _bank()[:, :4].tolist()
    }


def triplet_map(targets: Any, predictions: Any) -> dict[str, Any]:
    """Triplet AP through ``ivtmetrics.Recognition``, for the triplets and their components.

    Components (i, v, t, iv, it) are the max over the triplet classes that share them, by
    ivtmetrics' own map (vectorised here: its per-row ``extract`` is too slow for bootstraps).
    With binary predictions a class never predicted scores its prevalence, not 0 (AP's floor).
    A class absent from the gold is NaN and skipped, as ivtmetrics intends (scikit-learn >= 1.3
    returns 0.0 there rather than the -0.0 ivtmetrics' ``resolve_nan`` turns into NaN).

    Args:
        targets: ``n x 100`` binary gold.
        predictions: ``n x 100`` predictions (binary, or scores).

    Returns:
        ``mAP_{c}`` (percent) and ``AP_{c}`` (per-class arrays, 0-1) for c in ivt, i, v, t,
        iv, it.

    Raises:
        ValueError: If the arrays are not both ``n x 100``.
    """
    import ivtmetrics

    t_all, p_all = np.asarray(targets, dtype=np.int64), np.asarray(predictions, dtype=float)
    if t_all.shape != p_all.shape or t_all.ndim != 2 or t_all.shape[1] != 100:
        raise ValueError(f"need two n x 100 arrays, got {t_all.shape} and {p_all.shape}")
    out: dict[str, Any] = {}
    for column, component in enumerate(TRIPLET_COMPONENTS):
        groups = _bank()[:, column]
        classes = np.unique(groups)
        t = np.stack([t_all[:, groups == c].max(axis=1) for c in classes], axis=1)
        p = np.stack([p_all[:, groups == c].max(axis=1) for c in classes], axis=1)
        settings = np.geterr()
        recognition = ivtmetrics.Recognition(num_class=len(classes))
        np.seterr(**settings)  # Recognition() turns numpy's warnings off process-wide
        recognition.update(t, p)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            ap = np.array(recognition.compute_AP("ivt")["AP"], dtype=float)
        ap[t.sum(axis=0) == 0] = math.nan
        out[f"AP_{component}"] = ap
        out[f"mAP_{component}"] = 100.0 * _mean(ap)
    return out


def _gold(item: TaskRecord) -> Any:
    from surgagent.evals.parsers import gold_value

    return gold_value(item)


def _bools(values: Any) -> list[bool]:
    return [bool(v) if isinstance(v, bool) else float(v) >= 0.5 for v in values]


def _same(kind: AnswerKind, gold: Any, value: Any) -> bool:
    """Whether ``value`` answers ``gold`` right, compared as the task's answer kind says."""
    if isinstance(gold, dict):
        return isinstance(value, dict) and box_iou(gold["box"], value["box"]) >= 0.5
    if kind == "criteria" or (isinstance(gold, list) and gold and isinstance(gold[0], bool)):
        return isinstance(value, list | tuple) and _bools(gold) == _bools(value)
    if isinstance(gold, list | tuple):
        if not isinstance(value, list | tuple):
            return False
        as_set = {tuple(map(_key, x)) if isinstance(x, list | tuple) else _key(x) for x in gold}
        return as_set == {
            tuple(map(_key, x)) if isinstance(x, list | tuple) else _key(x) for x in value
        }
    if kind == "mixed" and isinstance(value, str):  # free text: the gold phrase in it
        return _key(gold) == _key(value) or _words(gold) in _words(value)
    return _key(gold) == _key(value)


def item_correct(item: TaskRecord, parsed: Parsed[Any] | None) -> bool | None:
    """Whether one parsed answer is right (what the report shows per item).

    The label; the exact set (tools, triplets); all three CVS criteria; box IoU >= 0.5;
    surgvlm-qa free text holding the gold phrase. Unparseable is False; None without gold.

    Raises:
        ValueError: For an item of an unregistered task.
    """
    kind = get_task(item.task).answer
    if parsed is None or not parsed.ok or parsed.value is None:
        return False
    gold = _gold(item)
    return None if gold is None else _same(kind, gold, parsed.value)


def _correct(spec: TaskSpec, items: Sequence[TaskRecord], values: list[Any]) -> list[bool]:
    pairs = zip(items, values, strict=True)
    return [v is not None and _same(spec.answer, _gold(item), v) for item, v in pairs]


def score_labels(spec: TaskSpec, items: Sequence[TaskRecord], values: list[Any]) -> Scored:
    """Accuracy, and per-class and macro precision/recall/F1 where every value is a label."""
    metrics = {"accuracy": accuracy(_correct(spec, items, values))}
    golds = [_gold(item) for item in items]
    if not all(isinstance(g, str) for g in golds + [v for v in values if v is not None]):
        return metrics, {}, None  # e.g. surgvlm-qa mixing boxes, lists and text
    from surgagent.evals.parsers import task_vocabulary

    per_class, macro, confusion = label_scores(golds, values, task_vocabulary(items[0]))
    return metrics | macro, per_class, confusion


def score_tools(spec: TaskSpec, items: Sequence[TaskRecord], values: list[Any]) -> Scored:
    """Mean per-item set F1, exact match, and per-tool precision/recall/F1."""
    golds = [list(_gold(item)) for item in items]
    preds = [list(v) if v is not None else None for v in values]
    f1 = [0.0 if p is None else set_f1(g, p) for g, p in zip(golds, preds, strict=True)]
    spelling = {_key(x): x for row in golds + [p or [] for p in preds] for x in row}
    per_class = {}
    for key, label in sorted(spelling.items()):
        in_gold = np.array([key in {_key(x) for x in g} for g in golds])
        in_pred = np.array([p is not None and key in {_key(x) for x in p} for p in preds])
        per_class[label] = _prf((in_gold & in_pred).sum(), in_gold.sum(), in_pred.sum())
    metrics = {
        "mean_f1": 100.0 * float(np.mean(f1)),
        "exact_match": accuracy(_correct(spec, items, values)),
        "macro_f1": _macro(per_class, "f1"),
    }
    return metrics, per_class, None


def _triplet_rows(rows: Any, ids: dict[tuple[str, str, str], int]) -> tuple[Any, int]:
    matrix, unknown = np.zeros(100, dtype=np.int64), 0
    for triplet in rows or []:
        k = ids.get(tuple(_key(x) for x in triplet))  # type: ignore[arg-type]
        if k is None:
            unknown += 1  # not one of the 100 classes: counts in no AP, fails exact match
        else:
            matrix[k] = 1
    return matrix, unknown


def score_triplets(spec: TaskSpec, items: Sequence[TaskRecord], values: list[Any]) -> Scored:
    """Triplet and component mAP (ivtmetrics), exact match, answered unknown triplets."""
    ids = triplet_ids()
    names = {k: ",".join(t) for t, k in ids.items()}
    gold = [_triplet_rows(_gold(item), ids) for item in items]
    pred = [_triplet_rows(v, ids) for v in values]
    result = triplet_map(np.stack([g for g, _ in gold]), np.stack([p for p, _ in pred]))
    metrics = {f"mAP_{c}": result[f"mAP_{c}"] for c in TRIPLET_COMPONENTS}
    metrics["exact_match"] = accuracy(_correct(spec, items, values))
    metrics["unknown_triplets"] = float(sum(u for _, u in pred))
    per_class = {
        names[k]: {"AP": 100.0 * float(ap)}
        for k, ap in enumerate(result["AP_ivt"])
        if not math.isnan(ap)
    }
    return metrics, per_class, None


def score_cvs(spec: TaskSpec, items: Sequence[TaskRecord], values: list[Any]) -> Scored:
    """`cvs_scores`; an unparseable answer has every criterion wrong."""
    del spec
    gold = np.array([_bools(_gold(item)) for item in items], dtype=bool).reshape(-1, 3)
    # Unparseable: every criterion wrong, so it also counts against balanced accuracy and AP.
    pred = np.array(
        [~gold[k] if v is None else _bools(v) for k, v in enumerate(values)], dtype=bool
    ).reshape(-1, 3)
    return cvs_scores(gold, pred), {}, None


def score_boxes(spec: TaskSpec, items: Sequence[TaskRecord], values: list[Any]) -> Scored:
    """Mean box IoU (unparseable = 0) and the share of items with IoU >= 0.5."""
    del spec
    pairs = zip(items, values, strict=True)
    ious = [0.0 if v is None else box_iou(_gold(item)["box"], v["box"]) for item, v in pairs]
    metrics = {"mIoU": 100.0 * float(np.mean(ious)), "acc@0.5": accuracy([x >= 0.5 for x in ious])}
    return metrics, {}, None


def score_task(task: str, pairs: Sequence[tuple[TaskRecord, Parsed[Any] | None]]) -> TaskScore:
    """Score one system on one task with its spec's scorer: every metric, per class, confusion.

    Args:
        task: A registered task (`surgagent.evals.tasks.TASKS`).
        pairs: Each item with its parsed answer (None, or not ok, where unparseable or failed).

    Returns:
        The `TaskScore`; unparseable answers count as wrong and are listed.

    Raises:
        ValueError: For an unknown task (naming the closest and the known ones), no pairs, or
            an item of another task.
        TaskRegistryError: If the scorer reports a metric the spec does not declare, or not
            the primary one (a bug in the spec or the scorer).
    """
    spec = get_task(task)
    if not pairs:
        raise ValueError(f"no items to score for {task}")
    items = [item for item, _ in pairs]
    strays = [item.id for item in items if item.task != task]
    if strays:
        raise ValueError(f"items of other tasks given to score {task}: {', '.join(strays[:5])}")
    values = [p.value if p is not None and p.ok else None for _, p in pairs]
    unparsed = [item.id for item, v in zip(items, values, strict=True) if v is None]
    metrics, per_class, confusion = spec.score(items, values)
    undeclared = sorted(set(metrics) - {metric.name for metric in spec.metrics})
    if undeclared or spec.primary not in metrics:
        raise TaskRegistryError(
            f"task {task}: its scorer {spec.scorer} reported {', '.join(sorted(metrics))}; "
            f"the spec declares {', '.join(m.name for m in spec.metrics)} (primary "
            f"{spec.primary}). Declare every metric the scorer reports in the TaskSpec."
        )
    return TaskScore(
        task=task,
        n=len(items),
        n_unparsed=len(unparsed),
        primary=PrimaryScore(name=spec.primary, value=metrics[spec.primary]),
        metrics=metrics,
        per_class=per_class,
        confusion=confusion,
        unparsed_ids=unparsed,
    )
