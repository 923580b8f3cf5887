"""The eval tasks as data: one validated `TaskSpec` per task, all in the `TASKS` registry.

A spec names everything a task needs, so the loaders, parsers, scorers and report cannot
disagree: the dataset (its `LOADERS` key) that produces the items, how the prompt is made,
the parser that reads an answer, the kind of answer it is, the scorer and every metric the
scorer reports (aggregation and direction, the primary one named), and the SurgVLM-Bench column
it feeds. Parsers and scorers are ``"package.module:attr"`` strings imported on first use;
`TaskRegistry.check` resolves them all and matches the specs against the loaders. Adding a
task is adding a spec to ``_SPECS`` (and a loader that produces it).

    spec = get_task("cholec80-phase")
    parsed = spec.parse(item, "</think>Calot triangle dissection")  # spec.primary == "accuracy"
"""

from __future__ import annotations

import functools
import importlib
import string
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from typing import TYPE_CHECKING, Annotated, Any, Literal, get_args

from pydantic import BaseModel, ConfigDict, Field, StringConstraints, model_validator

if TYPE_CHECKING:
    from surgagent.evals.records import TaskRecord
    from surgagent.tools.answers import Parsed

__all__ = [
    "SURGVLM_BENCH",
    "TASKS",
    "AnswerKind",
    "MetricSpec",
    "TaskRegistry",
    "TaskRegistryError",
    "TaskSpec",
    "get_task",
    "resolve",
]

# SurgVLM-Bench's six columns, in the paper's order; the arena score is their sum (max 600).
BenchColumn = Literal[
    "EndoVis2017 localization",
    "EndoVis2018 VQA",
    "Cholec80 phase",
    "SAR-RARP50 action",
    "CholecT50 triplet",
    "Endoscapes2023 CVS",
]
SURGVLM_BENCH: tuple[str, ...] = get_args(BenchColumn)
# The structured answer a parser returns and the gold holds: one label, a set of labels, the
# three CVS criteria, triplets, a box, or (SurgVLM QA) any of these or free text.
AnswerKind = Literal["label", "labels", "criteria", "triplets", "box", "mixed"]
Target = Annotated[str, StringConstraints(pattern=r"^[A-Za-z_][\w.]*:[A-Za-z_]\w*$")]
# (metrics, per_class, confusion): what a scorer returns for one system on one task.
Scored = tuple[dict[str, float], dict[str, dict[str, float]], dict[str, Any] | None]
Scorer = Callable[["TaskSpec", Sequence["TaskRecord"], list[Any]], Scored]

_ITEM_FIELDS = frozenset({"question", "case", "dataset", "task"})


class TaskRegistryError(RuntimeError):
    """The task specs disagree with each other, the loaders or the code they name.

    A bug in the code, not in the user's input, so not a ``ValueError``: it ends a run with its
    traceback rather than as one friendly line.
    """


class MetricSpec(BaseModel):
    """One number a task reports: its key, which direction is better and how it aggregates.

    Attributes:
        name: The key in `surgagent.evals.metrics.TaskScore.metrics`.
        higher_is_better: The direction; False for counts of mistakes.
        aggregation: How per-item (or per-class) values become the number, in words.
        unit: ``percent`` (0-100) or ``count``.
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    name: str = Field(min_length=1)
    higher_is_better: bool = True
    aggregation: str = Field(min_length=1)
    unit: Literal["percent", "count"] = "percent"


class TaskSpec(BaseModel):
    """Everything one eval task is: where its items come from, how it is asked and scored.

    Attributes:
        name: The task name items carry (``TaskRecord.task``), lower-case words and dashes.
        description: What is asked, in one sentence.
        dataset: The `surgagent.evals.loaders.LOADERS` key of the loader that produces it.
        answer: The kind of structured answer (how gold and parsed values compare).
        question_template: The prompt's first part; fields ``{question}`` (the item's
            question as the loader wrote it), ``{case}``, ``{dataset}``, ``{task}``.
        choices_template: Appended where the item has choices; ``{choices}`` is them joined
            by commas (the other fields as above).
        parser: ``"module:function"`` turning ``(item, answer text)`` into a ``Parsed``.
        scorer: ``"module:function"`` turning ``(spec, items, values)`` into metrics.
        metrics: Every metric the scorer reports.
        primary: The metric the task is ranked by (one of ``metrics``).
        surgvlm_bench: The SurgVLM-Bench column the task feeds, or None.
        vocabulary: ``"module:NAME"`` of the labels a gold answer takes (the parser matches
            answers against it where an item has no choices, and ``eval check`` counts gold
            labels outside it), or None.
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    name: str = Field(pattern=r"^[a-z0-9]+(?:-[a-z0-9]+)*$")
    description: str = Field(min_length=1)
    dataset: str = Field(min_length=1)
    answer: AnswerKind
    question_template: str = "{question}"
    choices_template: str = "\nOptions: {choices}."
    parser: Target
    scorer: Target
    metrics: tuple[MetricSpec, ...] = Field(min_length=1)
    primary: str
    surgvlm_bench: BenchColumn | None = None
    vocabulary: Target | None = None

    @model_validator(mode="after")
    def _consistent(self) -> TaskSpec:
        names = [metric.name for metric in self.metrics]
        repeated = sorted({name for name in names if names.count(name) > 1})
        if repeated:
            raise ValueError(f"task {self.name}: metric(s) {', '.join(repeated)} listed twice")
        if self.primary not in names:
            raise ValueError(
                f"task {self.name}: primary metric {self.primary!r} is not among its metrics "
                f"({', '.join(names)}); name one of them or add it"
            )
        _check_template(self.name, "question_template", self.question_template, _ITEM_FIELDS)
        fields = _ITEM_FIELDS | {"choices"}
        _check_template(self.name, "choices_template", self.choices_template, fields)
        return self

    @property
    def primary_metric(self) -> MetricSpec:
        """The `MetricSpec` of the primary metric."""
        return self.metric(self.primary)

    def metric(self, name: str) -> MetricSpec:
        """The `MetricSpec` called ``name``.

        Raises:
            KeyError: If the task reports no such metric.
        """
        for metric in self.metrics:
            if metric.name == name:
                return metric
        raise KeyError(f"task {self.name} reports no metric {name!r}")

    def labels(self) -> tuple[str, ...] | None:
        """The task's vocabulary (`vocabulary` resolved), or None where it has none."""
        return tuple(resolve(self.vocabulary)) if self.vocabulary else None

    def prompt(self, item: TaskRecord) -> str:
        """The text every system is asked: the question, then the options where there are any."""
        fields = {"question": item.question, "case": item.case, "dataset": item.dataset}
        fields["task"] = item.task
        text = self.question_template.format(**fields)
        if item.choices:
            from surgagent.tools.vocabulary import readable_label

            shown = ", ".join(readable_label(choice) for choice in item.choices)
            text += self.choices_template.format(**fields, choices=shown)
        return text

    def parse(self, item: TaskRecord, text: str) -> Parsed[Any]:
        """Parse a system's final text: any thinking dropped, then the task's parser.

        Returns:
            ``Parsed``; not ok (with the reason) for an empty answer or one cut off while
            thinking. Never raises on text.
        """
        from surgagent.tools.answers import Parsed, final_answer

        answer = final_answer(text)
        if not answer.ok or answer.value is None:
            return Parsed(ok=False, error=answer.error)
        parsed: Parsed[Any] = resolve(self.parser)(item, answer.value)
        return parsed

    def score(self, items: Sequence[TaskRecord], values: list[Any]) -> Scored:
        """Run the task's scorer on items and their parsed values (None where unparsed)."""
        scorer: Scorer = resolve(self.scorer)
        return scorer(self, items, values)


def _check_template(task: str, field: str, template: str, allowed: frozenset[str]) -> None:
    try:
        used = {name for _, name, _, _ in string.Formatter().parse(template) if name is not None}
    except ValueError as error:
        raise ValueError(f"task {task}: {field} {template!r} is not a template ({error})") from None
    unknown = sorted(used - allowed)
    if unknown:
        raise ValueError(
            f"task {task}: {field} uses {', '.join(unknown)}; "
            f"fields it may use: {', '.join(sorted(allowed))}"
        )


@functools.cache
def resolve(target: str) -> Any:
    """The object a ``"package.module:attr"`` target names, imported on first use.

    Raises:
        TaskRegistryError: If the module cannot be imported or has no such attribute.
    """
    module_name, _, attr = target.partition(":")
    try:
        module = importlib.import_module(module_name)
    except ImportError as error:
        raise TaskRegistryError(f"{target!r}: cannot import {module_name} ({error})") from error
    try:
        return getattr(module, attr)
    except AttributeError:
        raise TaskRegistryError(f"{target!r}: {module_name} has no {attr!r}") from None


class TaskRegistry(Mapping[str, TaskSpec]):
    """Task name -> `TaskSpec`, in a fixed order; unique names are checked when it is built.

    Args:
        specs: The specs.
        complete: Whether every task a loader produces must have a spec here (the real
            registry; a test registry of a few tasks sets False).

    Raises:
        TaskRegistryError: If two specs share a name.
    """

    def __init__(self, specs: Iterable[TaskSpec], *, complete: bool = False) -> None:
        self._specs: dict[str, TaskSpec] = {}
        for spec in specs:
            if spec.name in self._specs:
                raise TaskRegistryError(f"two task specs are called {spec.name!r}; rename one")
            self._specs[spec.name] = spec
        self.complete = complete
        self._checked = False

    def __getitem__(self, name: str) -> TaskSpec:
        return self._specs[name]

    def __iter__(self) -> Iterator[str]:
        return iter(self._specs)

    def __len__(self) -> int:
        return len(self._specs)

    def task(self, name: str) -> TaskSpec:
        """The spec of ``name``, after `check` (run once, on the first lookup).

        Raises:
            ValueError: For an unknown task, naming the closest and listing the known ones.
            TaskRegistryError: If the registry does not pass `check`.
        """
        self.check()
        try:
            return self._specs[name]
        except KeyError:
            from surgagent.tools.errors import suggest

            raise ValueError(
                f"unknown task {name!r}.{suggest(name, self._specs)} "
                f"Known tasks: {', '.join(self._specs)}."
            ) from None

    def arena(self) -> list[TaskSpec]:
        """The specs that feed SurgVLM-Bench, in its column order."""
        fed = [spec for spec in self._specs.values() if spec.surgvlm_bench is not None]
        return sorted(fed, key=lambda spec: SURGVLM_BENCH.index(spec.surgvlm_bench or ""))

    def check(self) -> None:
        """Resolve every parser, scorer and vocabulary and match the specs against the loaders.

        Checked: each parser and scorer imports and is callable, each vocabulary is a list
        of labels; each spec's dataset is a `LOADERS` key whose loader lists the task; each
        SurgVLM-Bench column is fed once; for a complete registry, every task a loader
        produces has a spec. Runs once; later calls return.

        Raises:
            TaskRegistryError: Listing every problem found.
        """
        if self._checked:
            return
        from surgagent.evals.loaders import LOADERS

        problems: list[str] = []
        for spec in self._specs.values():
            for field in ("parser", "scorer"):
                target = getattr(spec, field)
                try:
                    if not callable(resolve(target)):
                        problems.append(f"task {spec.name}: {field} {target!r} is not callable")
                except TaskRegistryError as error:
                    problems.append(f"task {spec.name}: {field} {error}")
            if spec.vocabulary:
                try:
                    labels = resolve(spec.vocabulary)
                    if isinstance(labels, str) or not all(isinstance(x, str) for x in labels):
                        problems.append(f"task {spec.name}: vocabulary is not a list of labels")
                except (TaskRegistryError, TypeError) as error:
                    problems.append(f"task {spec.name}: vocabulary {error}")
            loader = LOADERS.get(spec.dataset)
            if loader is None:
                problems.append(
                    f"task {spec.name}: no loader for dataset {spec.dataset!r} "
                    f"(datasets: {', '.join(LOADERS)})"
                )
            elif spec.name not in loader.tasks:
                problems.append(
                    f"task {spec.name}: loader {spec.dataset} does not produce it "
                    f"(it produces {', '.join(loader.tasks)})"
                )
        columns = [spec.surgvlm_bench for spec in self._specs.values() if spec.surgvlm_bench]
        problems += [
            f"SurgVLM-Bench column {c!r} is fed by several tasks"
            for c in sorted({c for c in columns if columns.count(c) > 1})
        ]
        if self.complete:
            problems += [
                f"loader {loader.name} produces task {task!r}, which has no TaskSpec"
                for loader in LOADERS.values()
                for task in loader.tasks
                if task not in self._specs
            ]
        if problems:
            raise TaskRegistryError("the eval task registry is broken:\n- " + "\n- ".join(problems))
        self._checked = True


# -- the tasks --------------------------------------------------------------------------------

_PARSE = "surgagent.evals.parsers:"
_SCORE = "surgagent.evals.metrics:"
_VOCABULARY = "surgagent.tools.vocabulary:"
_WRONG = "(unparseable = wrong)"


def _percent(name: str, aggregation: str) -> MetricSpec:
    return MetricSpec(name=name, aggregation=aggregation)


_LABEL_METRICS = (
    _percent("accuracy", f"items answered right {_WRONG}, mean x100"),
    *(
        _percent(f"macro_{m}", f"{m} per class present in the gold {_WRONG}, mean over classes")
        for m in ("precision", "recall", "f1")
    ),
)
_CVS_METRICS = (
    *(
        _percent(f"c{c}_{name}", f"criterion C{c}: {how}")
        for c in (1, 2, 3)
        for name, how in (
            ("accuracy", f"items right on it {_WRONG}, mean x100"),
            ("balanced_accuracy", "recall of yes and of no (those in the gold), mean"),
            ("ap", "average precision of the binary answers (NaN without a positive)"),
        )
    ),
    _percent("mean_accuracy", "c1-c3 accuracy, mean (SurgVLM-Bench's number)"),
    _percent("balanced_accuracy", "c1-c3 balanced accuracy, mean"),
    _percent("mAP", "c1-c3 AP, mean skipping NaN"),
    _percent("exact_match", f"items with all three criteria right {_WRONG}, mean x100"),
)
_TRIPLET_METRICS = (
    *(
        _percent(
            f"mAP_{c}",
            f"ivtmetrics AP per {c} class over all items (binary answers), mean over the "
            "classes present in the gold (NaN skipped), x100",
        )
        for c in ("ivt", "i", "v", "t", "iv", "it")
    ),
    _percent("exact_match", f"items whose triplet set is exactly right {_WRONG}, mean x100"),
    MetricSpec(
        name="unknown_triplets",
        higher_is_better=False,
        aggregation="answered triplets that are none of the 100 classes, summed",
        unit="count",
    ),
)


def _label_task(
    name: str,
    dataset: str,
    description: str,
    bench: BenchColumn | None = None,
    vocabulary: str | None = None,
) -> TaskSpec:
    """A one-label task (multiple choice or a closed vocabulary), ranked by accuracy."""
    return TaskSpec(
        name=name,
        description=description,
        dataset=dataset,
        answer="label",
        parser=_PARSE + "parse_single",
        scorer=_SCORE + "score_labels",
        metrics=_LABEL_METRICS,
        primary="accuracy",
        surgvlm_bench=bench,
        vocabulary=vocabulary,
    )


_SPECS = (
    _label_task(
        "cholec80-phase",
        "cholec80",
        "The phase in progress at a moment.",
        "Cholec80 phase",
        _VOCABULARY + "CHOLEC80_PHASES",
    ),
    _label_task(
        "cholec80-phase-next",
        "cholec80",
        "The phase after the one in progress.",
        vocabulary=_VOCABULARY + "CHOLEC80_PHASES",
    ),
    TaskSpec(
        name="cholec80-tools",
        description="Every tool visible at a moment.",
        dataset="cholec80",
        answer="labels",
        parser=_PARSE + "parse_multi",
        scorer=_SCORE + "score_tools",
        metrics=(
            _percent("mean_f1", f"F1 of each item's tool set (both empty = 1) {_WRONG}, mean"),
            _percent("exact_match", f"items with exactly the right tools {_WRONG}, mean x100"),
            _percent("macro_f1", "F1 per tool present in the gold, mean over tools"),
        ),
        primary="mean_f1",
        vocabulary=_VOCABULARY + "CHOLEC80_TOOLS",
    ),
    _label_task("cholec80-multistep", "cholec80", "A question over the whole video's course."),
    TaskSpec(
        name="cholect50-triplet",
        description="The <instrument, verb, target> triplets in a frame.",
        dataset="cholect50",
        answer="triplets",
        parser=_PARSE + "parse_triplet_answer",
        scorer=_SCORE + "score_triplets",
        metrics=_TRIPLET_METRICS,
        primary="mAP_ivt",
        surgvlm_bench="CholecT50 triplet",
        vocabulary="surgagent.evals.loaders.cholect50:CHOLECT50_TRIPLETS",
    ),
    TaskSpec(
        name="endoscapes-cvs",
        description="Whether each of the three critical-view-of-safety criteria is met.",
        dataset="endoscapes2023",
        answer="criteria",
        parser=_PARSE + "parse_cvs_answer",
        scorer=_SCORE + "score_cvs",
        metrics=_CVS_METRICS,
        primary="mean_accuracy",
        surgvlm_bench="Endoscapes2023 CVS",
    ),
    _label_task(
        "endovis18-vqa",
        "endovis2018-vqa",
        "EndoVis2018 visual question.",
        "EndoVis2018 VQA",
        "surgagent.evals.loaders.endovis18:ENDOVIS18_VQA_CLASSES",
    ),
    TaskSpec(
        name="endovis17-localization",
        description="The box around a named instrument.",
        dataset="endovis2017",
        answer="box",
        parser=_PARSE + "parse_box_answer",
        scorer=_SCORE + "score_boxes",
        metrics=(
            _percent("mIoU", "box IoU per item (unparseable = 0), mean x100"),
            _percent("acc@0.5", f"items with IoU >= 0.5 {_WRONG}, mean x100"),
        ),
        primary="mIoU",
        surgvlm_bench="EndoVis2017 localization",
        vocabulary="surgagent.evals.loaders.endovis17:ENDOVIS17_LABELS",
    ),
    _label_task(
        "sar-rarp50-action",
        "sar-rarp50",
        "The suturing action at a moment.",
        "SAR-RARP50 action",
        _VOCABULARY + "SAR_RARP50_ACTIONS",
    ),
    TaskSpec(
        name="surgvlm-qa",
        description="A SurgVLM-DB question of any type (parsed as its qa_type says).",
        dataset="surgvlm",
        answer="mixed",
        parser=_PARSE + "parse_surgvlm_qa",
        scorer=_SCORE + "score_labels",
        metrics=_LABEL_METRICS,  # macro means only where every gold and answer is a label
        primary="accuracy",
    ),
)

TASKS = TaskRegistry(_SPECS, complete=True)


def get_task(name: str) -> TaskSpec:
    """The registered spec of task ``name`` (see `TaskRegistry.task`)."""
    return TASKS.task(name)
