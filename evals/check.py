"""Alignment check of a dataset before a benchmark: do its items match its files?

`check_dataset` loads a dataset as `surgagent eval tasks` would and compares the items with
the files: items per split and task, gold labels against the task's vocabulary, media the
annotations refer to against the media on disk (both ways), the loader's frame-rate and
numbering assumptions against the files (a video's rate and length, row steps, frame ids),
repeated ids, and everything the loader left out with its reason.

Severities: an **error** makes a benchmark number wrong or unrunnable (a malformed file that
stops the load, no items, a gold label outside the vocabulary, an annotation whose frame or
video is missing, two items or rows with one id, an unreadable file, a frame rate or
numbering that puts items at wrong times); a **warning** deserves a look but changes no
item (media no annotation refers to, files that fit no layout, a missing companion file, an
id kept under a new name, an irregular row step, an annotation that stops before its video
does); **info** is what the dataset leaves out by design (empty masks, interpolated rows,
the catch-all class, frames between ``every_s`` picks).

    report = check_dataset(Path("data/endovis2017"), "endovis2017")
    report.ok, [finding.message for finding in report.findings]
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, Field, computed_field

from surgagent.evals.loaders import (
    AnnotationError,
    CaseTiming,
    LoadReport,
    Skip,
    SkippedEntry,
    Survey,
    get_loader,
)
from surgagent.evals.records import TaskRecord
from surgagent.evals.tasks import get_task

__all__ = ["CheckReport", "Finding", "LabelCount", "SplitCount", "check_dataset"]

Severity = Literal["error", "warning", "info"]
FindingKind = Literal[
    "load",
    "empty",
    "vocabulary",
    "missing_media",
    "unannotated_media",
    "timing",
    "duplicate_id",
    "skipped",
]

_EXAMPLES = 5
_CVS_LABELS = tuple(f"C{k}: {answer}" for k in (1, 2, 3) for answer in ("yes", "no"))


def _task_labels(task: str) -> tuple[str, ...] | None:
    """The labels a task's gold takes: its spec's vocabulary (CVS: each criterion's answer)."""
    spec = get_task(task)
    return _CVS_LABELS if spec.answer == "criteria" else spec.labels()


def _vocabulary(item: TaskRecord) -> Sequence[str] | None:
    return _task_labels(item.task) or item.choices


# How each kind of left-out entry counts.
_SKIP_FINDINGS: dict[Skip, tuple[Severity, FindingKind, str]] = {
    Skip.UNREADABLE: ("error", "skipped", "unreadable files left out"),
    Skip.NO_MEDIA: ("error", "missing_media", "annotation rows left out: their frame is missing"),
    Skip.DUPLICATE: ("error", "duplicate_id", "entries left out: they repeat one already read"),
    Skip.RENAMED: ("warning", "duplicate_id", "repeated source ids kept under a ~N suffix"),
    Skip.UNRECOGNISED: ("warning", "skipped", "files or folders that fit no layout, left out"),
    Skip.INCOMPLETE: ("warning", "skipped", "annotations without their companion file"),
    Skip.DESIGN: ("info", "skipped", "entries left out by the dataset's design"),
}


class Finding(BaseModel):
    """One kind of misalignment, with how often it occurs and a few examples."""

    severity: Severity
    kind: FindingKind
    message: str
    count: int = 1
    examples: list[str] = Field(default_factory=list)


class SplitCount(BaseModel):
    """Items of one task in one split (``-`` where the dataset names none)."""

    split: str
    task: str
    items: int


class LabelCount(BaseModel):
    """How many items of a task have a gold label (``in_vocabulary`` None: no vocabulary)."""

    task: str
    label: str
    count: int
    in_vocabulary: bool | None


class CheckReport(BaseModel):
    """What `check_dataset` found; ``ok`` is False when there is an error."""

    dataset: str
    root: str
    every_s: float | None = None
    items: int = 0
    splits: list[SplitCount] = Field(default_factory=list)
    labels: list[LabelCount] = Field(default_factory=list)
    assumptions: list[str] = Field(default_factory=list)
    timings: list[CaseTiming] = Field(default_factory=list)
    skipped: list[SkippedEntry] = Field(default_factory=list)
    findings: list[Finding] = Field(default_factory=list)

    @computed_field  # type: ignore[prop-decorator]
    @property
    def errors(self) -> int:
        """Number of error findings."""
        return sum(1 for finding in self.findings if finding.severity == "error")

    @computed_field  # type: ignore[prop-decorator]
    @property
    def warnings(self) -> int:
        """Number of warning findings."""
        return sum(1 for finding in self.findings if finding.severity == "warning")

    @computed_field  # type: ignore[prop-decorator]
    @property
    def ok(self) -> bool:
        """True when nothing is an error."""
        return self.errors == 0


def check_dataset(
    root: Path, dataset: str, *, every_s: float | None = None, **options: Any
) -> CheckReport:
    """Check that a dataset's items line up with its files (see the module docstring).

    Args:
        root: The dataset as downloaded (folder, or QA file for ``surgvlm``).
        dataset: A loader name (``cholec80``, ``endovis2017``, ...).
        every_s: The sampling step the task set will use (the loader's default where None).
        **options: Loader options, as for `surgagent.evals.loaders.build_task_set`.

    Returns:
        The report; a malformed annotation file is an error finding in it, not an exception.

    Raises:
        ValueError: For an unknown dataset or option, a missing or empty root, or no
            annotation files where the dataset keeps them (nothing to check).
    """
    loader = get_loader(dataset)
    root = Path(root).expanduser()
    report = CheckReport(dataset=dataset, root=str(root), every_s=every_s)
    try:
        loaded = loader.load_with_report(root, every_s=every_s, **options)
    except AnnotationError as error:
        report.findings.append(
            Finding(severity="error", kind="load", message=f"the loader stopped: {error}")
        )
        return report
    items = loaded.items
    try:
        survey = loader.survey(root, items)
    except AnnotationError as error:  # a file the load did not need could still be broken
        survey = Survey()
        report.findings.append(
            Finding(severity="error", kind="load", message=f"the survey stopped: {error}")
        )
    media_root = root if root.is_dir() else root.parent
    report.items = len(items)
    report.splits = _splits(items)
    report.labels = _labels(items)
    report.assumptions = survey.assumptions
    report.timings = survey.timings
    report.skipped = loaded.report.skipped
    report.findings += _findings(items, survey, loaded.report, media_root)
    order = {"error": 0, "warning": 1, "info": 2}
    report.findings.sort(key=lambda finding: order[finding.severity])
    return report


def _splits(items: Sequence[TaskRecord]) -> list[SplitCount]:
    counts = Counter((str(item.meta.get("split") or "-"), item.task) for item in items)
    return [SplitCount(split=s, task=t, items=n) for (s, t), n in sorted(counts.items())]


def _gold_labels(item: TaskRecord) -> list[str]:
    """The labels of an item's gold, as counted against its task's vocabulary."""
    gold = item.gold
    if item.task == "endoscapes-cvs":
        if isinstance(gold, list) and len(gold) == 3 and all(isinstance(g, bool) for g in gold):
            return [f"C{k}: {'yes' if g else 'no'}" for k, g in enumerate(gold, start=1)]
        return [f"not three booleans: {gold!r}"]
    if isinstance(gold, dict) and "label" in gold:
        return [str(gold["label"])]
    if isinstance(gold, str):
        return [gold]
    if isinstance(gold, list):
        return [",".join(map(str, g)) if isinstance(g, list) else str(g) for g in gold]
    return [repr(gold)]


def _labels(items: Sequence[TaskRecord]) -> list[LabelCount]:
    """Label counts per task; a task's vocabulary labels are listed even when unused."""
    counts: Counter[tuple[str, str]] = Counter()
    known: dict[tuple[str, str], bool | None] = {}
    for item in items:
        vocabulary = _vocabulary(item)
        labels = _gold_labels(item) if vocabulary else [str(item.meta.get("qa_type", "open"))]
        for label in labels:
            counts[(item.task, label)] += 1
            known[(item.task, label)] = label in vocabulary if vocabulary else None
    for task in sorted({item.task for item in items}):
        for label in _task_labels(task) or ():
            known.setdefault((task, label), True)
    return [
        LabelCount(task=task, label=label, count=counts[(task, label)], in_vocabulary=inside)
        for (task, label), inside in sorted(known.items())
    ]


def _examples(values: Iterable[str]) -> list[str]:
    return sorted(set(values))[:_EXAMPLES]


def _findings(
    items: Sequence[TaskRecord], survey: Survey, loaded: LoadReport, media_root: Path
) -> list[Finding]:
    findings: list[Finding] = []
    if not items:
        findings.append(Finding(severity="error", kind="empty", message="the load gave no items"))
    outside = [(i.task, label) for i in items for label in _gold_labels(i) if _outside(i, label)]
    if outside:
        tally = Counter(outside)
        findings.append(
            Finding(
                severity="error",
                kind="vocabulary",
                message="gold labels outside the task's vocabulary: "
                + ", ".join(f"{label!r} ({task}, {n}x)" for (task, label), n in tally.items()),
                count=len(outside),
                examples=_examples(
                    i.id for i in items if any(_outside(i, g) for g in _gold_labels(i))
                ),
            )
        )
    findings += _media_findings(items, survey, media_root)
    repeated = [key for key, n in Counter(item.id for item in items).items() if n > 1]
    if repeated:
        findings.append(
            Finding(
                severity="error",
                kind="duplicate_id",
                message="item ids that occur more than once",
                count=len(repeated),
                examples=_examples(repeated),
            )
        )
    findings += _timing_findings(survey)
    findings += _skip_findings(loaded)
    return findings


def _outside(item: TaskRecord, label: str) -> bool:
    vocabulary = _vocabulary(item)
    return bool(vocabulary) and label not in (vocabulary or ())


def _media_findings(items: Sequence[TaskRecord], survey: Survey, media_root: Path) -> list[Finding]:
    used = {path for item in items for path in _media(item)}
    annotated = used | set(survey.annotated or ())
    missing = sorted(path for path in annotated if not _exists(path, media_root))
    findings = []
    if missing:
        findings.append(
            Finding(
                severity="error",
                kind="missing_media",
                message="annotations whose frame or video is missing",
                count=len(missing),
                examples=missing[:_EXAMPLES],
            )
        )
    unannotated = sorted(set(survey.frames) - annotated)
    if unannotated:
        findings.append(
            Finding(
                severity="warning",
                kind="unannotated_media",
                message="frames or videos on disk that no annotation refers to",
                count=len(unannotated),
                examples=unannotated[:_EXAMPLES],
            )
        )
    return findings


def _media(item: TaskRecord) -> list[str]:
    return [*item.media.frames, *([item.media.video] if item.media.video else [])]


def _exists(path: str, media_root: Path) -> bool:
    candidate = Path(path)
    return (candidate if candidate.is_absolute() else media_root / candidate).is_file()


def _timing_findings(survey: Survey) -> list[Finding]:
    findings = []
    for error in (True, False):
        cases = [t for t in survey.timings if t.agrees is False and t.error is error]
        notes = [n for n in survey.notes if n.error is error]
        if not cases and not notes:
            continue
        examples = [f"{t.annotation}: {t.note}" for t in cases] + [
            f"{n.path}: {n.problem}" for n in notes
        ]
        findings.append(
            Finding(
                severity="error" if error else "warning",
                kind="timing",
                message=(
                    "files that disagree with the frame-rate or numbering assumptions"
                    if error
                    else "files whose numbering or length is irregular"
                ),
                count=len(cases) + sum(n.count for n in notes),
                examples=examples[:_EXAMPLES],
            )
        )
    return findings


def _skip_findings(loaded: LoadReport) -> list[Finding]:
    findings = []
    for kind, (severity, finding_kind, message) in _SKIP_FINDINGS.items():
        entries = [entry for entry in loaded.skipped if entry.kind is kind]
        if not entries:
            continue
        by_reason: dict[str, list[SkippedEntry]] = {}
        for entry in entries:
            by_reason.setdefault(entry.reason, []).append(entry)
        findings.append(
            Finding(
                severity=severity,
                kind=finding_kind,
                message=message,
                count=sum(entry.count for entry in entries),
                examples=[_skip_example(reason, group) for reason, group in by_reason.items()][
                    :_EXAMPLES
                ],
            )
        )
    return findings


def _skip_example(reason: str, group: Sequence[SkippedEntry]) -> str:
    """``path: reason (n x, e.g. ...)`` for one file, ``reason: n in k files, e.g. path``."""
    count = sum(entry.count for entry in group)
    named = [example for entry in group for example in entry.examples][:2]
    detail = f", e.g. {'; '.join(named)}" if named else ""
    if len(group) == 1:
        return f"{group[0].path}: {reason} ({count}x{detail})"
    return f"{reason}: {count} in {len(group)} places, e.g. {group[0].path}{detail}"
