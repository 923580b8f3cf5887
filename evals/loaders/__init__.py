"""Dataset loaders: each public surgical dataset's native files -> `TaskRecord` items.

`LOADERS` maps a dataset name to its `Loader`; `build_task_set` loads one dataset and
optionally draws a seeded sample, stratified by task, in a stable order (sorted by id).
`load_task_set` does the same and also returns the `LoadReport` of what was left out.

    items = build_task_set(Path("data/cholec80"), "cholec80", sample=200, seed=0)
    write_tasks("cholec80-200.jsonl", items, name="cholec80-200")
"""

from __future__ import annotations

import logging
import random
from collections import defaultdict
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from surgagent.evals.loaders._base import AnnotationError, Loader, close_match
from surgagent.evals.loaders._report import (
    CaseTiming,
    LoadReport,
    LoadResult,
    Skip,
    SkippedEntry,
    Survey,
    TimingNote,
)
from surgagent.evals.loaders.cholec80 import Cholec80Loader
from surgagent.evals.loaders.cholect50 import CholecT50Loader
from surgagent.evals.loaders.endoscapes import EndoscapesLoader
from surgagent.evals.loaders.endovis17 import EndoVis17Loader
from surgagent.evals.loaders.endovis18 import EndoVis18VQALoader
from surgagent.evals.loaders.sar_rarp50 import SarRarp50Loader
from surgagent.evals.loaders.surgvlm import SurgVLMLoader
from surgagent.evals.records import TaskRecord

__all__ = [
    "LOADERS",
    "AnnotationError",
    "CaseTiming",
    "LoadReport",
    "LoadResult",
    "Loader",
    "Skip",
    "SkippedEntry",
    "Survey",
    "TimingNote",
    "build_task_set",
    "get_loader",
    "load_task_set",
    "stratified_sample",
]

log = logging.getLogger(__name__)

LOADERS: dict[str, Loader] = {
    loader.name: loader
    for loader in (
        Cholec80Loader(),
        CholecT50Loader(),
        EndoscapesLoader(),
        EndoVis18VQALoader(),
        EndoVis17Loader(),
        SarRarp50Loader(),
        SurgVLMLoader(),
    )
}


def get_loader(dataset: str) -> Loader:
    """The loader registered for ``dataset``.

    Raises:
        ValueError: For an unknown name, listing the known ones and the closest.
    """
    try:
        return LOADERS[dataset]
    except KeyError:
        raise ValueError(
            f"unknown dataset {dataset!r}.{close_match(dataset, LOADERS)} "
            f"Datasets: {', '.join(LOADERS)}."
        ) from None


def _quotas(sizes: dict[str, int], sample: int) -> dict[str, int]:
    """Items per task: proportional (largest remainders), at least one each where possible."""
    total = sum(sizes.values())
    exact = {task: sample * size / total for task, size in sizes.items()}
    quotas = {task: int(share) for task, share in exact.items()}
    by_remainder = sorted(sizes, key=lambda task: (-(exact[task] - quotas[task]), task))
    for task in by_remainder[: sample - sum(quotas.values())]:
        quotas[task] += 1
    for task in sorted(sizes):  # a small task still gets one item, taken from the largest
        if quotas[task] == 0 and sample >= len(sizes):
            donor = max(quotas, key=lambda name: (quotas[name], name))
            quotas[donor] -= 1
            quotas[task] = 1
    return quotas


def stratified_sample(
    records: Sequence[TaskRecord], sample: int, seed: int = 0
) -> list[TaskRecord]:
    """A seeded sample of ``sample`` items with each task's share kept, sorted by id.

    The draw within a task depends only on ``seed``, the task name and its items, so adding
    another dataset's tasks does not change it.

    Raises:
        ValueError: If ``sample`` is below 1.
    """
    if sample < 1:
        raise ValueError(f"sample={sample}: ask for at least one item (or None for all).")
    if sample >= len(records):
        return sorted(records, key=lambda record: record.id)
    groups: dict[str, list[TaskRecord]] = defaultdict(list)
    for record in sorted(records, key=lambda record: record.id):
        groups[record.task].append(record)
    quotas = _quotas({task: len(items) for task, items in groups.items()}, sample)
    chosen: list[TaskRecord] = []
    for task, items in sorted(groups.items()):
        chosen += random.Random(f"{seed}:{task}").sample(items, quotas[task])
    return sorted(chosen, key=lambda record: record.id)


def load_task_set(
    root: Path,
    dataset: str,
    *,
    tasks: Sequence[str] | None = None,
    sample: int | None = None,
    seed: int = 0,
    every_s: float | None = None,
    **options: Any,
) -> LoadResult:
    """Like `build_task_set`, and also the `LoadReport` of everything left out (not logged).

    Raises:
        ValueError: As `build_task_set`, and where no item came out because entries were
            left out for problems (e.g. no annotated frame has its image).
        AnnotationError: As `build_task_set`.
    """
    loader = get_loader(dataset)
    loaded = loader.load_with_report(Path(root), tasks=tasks, every_s=every_s, **options)
    records = loaded.items
    ids = [record.id for record in records]
    if len(set(ids)) != len(ids):
        repeated = sorted({i for i in ids if ids.count(i) > 1})[:3]
        raise ValueError(
            f"{dataset}: the loader made repeated item ids {repeated}; run `surgagent eval "
            "check` on the dataset to see where they come from."
        )
    if not records and loaded.report.total(problems_only=True):
        raise ValueError(
            f"{dataset}: the annotations under {root} gave no items; left out: "
            f"{loaded.report.summary()}. `surgagent eval check` lists every entry."
        )
    if not records:
        log.warning("%s: the annotations under %s gave no items", dataset, root)
    if sample is not None:
        records = stratified_sample(records, sample, seed)
    return LoadResult(sorted(records, key=lambda record: record.id), loaded.report)


def build_task_set(
    root: Path,
    dataset: str,
    *,
    tasks: Sequence[str] | None = None,
    sample: int | None = None,
    seed: int = 0,
    every_s: float | None = None,
    **options: Any,
) -> list[TaskRecord]:
    """Load a dataset's items and optionally draw a seeded, task-stratified sample.

    What the loader left out is logged: a warning where it was not the dataset's design.

    Args:
        root: The dataset as downloaded (folder, or QA file for ``surgvlm``).
        dataset: A `LOADERS` name (``cholec80``, ``cholect50``, ``endoscapes2023``, ...).
        tasks: Task names to build; all the dataset's where None.
        sample: Number of items to keep (all where None).
        seed: Seed of the sample.
        every_s: Sampling step (s) of dense video annotations; the loader's default where None.
        **options: Loader options (e.g. ``keep_empty=True`` for ``cholect50``).

    Returns:
        The items, sorted by id.

    Raises:
        ValueError: For an unknown dataset, task or option, a missing or empty root, no
            annotation files where the dataset keeps them, or a bad ``sample``.
        AnnotationError: For a malformed annotation file (naming the file and line).
    """
    loaded = load_task_set(
        root, dataset, tasks=tasks, sample=sample, seed=seed, every_s=every_s, **options
    )
    loaded.report.log(log)
    return loaded.items
