"""The task registry: one validated spec per task, matching the loaders and the code it names."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import pytest
from pydantic import ValidationError

from surgagent.evals.loaders import LOADERS
from surgagent.evals.metrics import score_task
from surgagent.evals.records import TaskRecord
from surgagent.evals.tasks import (
    SURGVLM_BENCH,
    TASKS,
    MetricSpec,
    TaskRegistry,
    TaskRegistryError,
    TaskSpec,
    get_task,
    resolve,
)
from surgagent.tools.answers import Parsed
from surgagent.tools.vocabulary import CHOLEC80_PHASES

ACCURACY = MetricSpec(name="accuracy", aggregation="items right, mean x100")


def spec(**changes: Any) -> TaskSpec:
    """A valid spec of a real task (cholec80-phase), with ``changes``."""
    fields = get_task("cholec80-phase").model_dump() | changes
    return TaskSpec.model_validate(fields)


def phase_item(**changes: Any) -> TaskRecord:
    fields = {
        "id": "cholec80-phase/video41/t0120",
        "task": "cholec80-phase",
        "dataset": "cholec80",
        "case": "video41",
        "question": "Which surgical phase is in progress at 02:00?",
        "choices": list(CHOLEC80_PHASES),
        "gold": "CalotTriangleDissection",
    }
    return TaskRecord.model_validate(fields | changes)


# -- the real registry -------------------------------------------------------------------------


def test_every_task_a_loader_produces_has_a_spec_and_each_spec_a_loader() -> None:
    produced = {task: loader.name for loader in LOADERS.values() for task in loader.tasks}
    assert set(produced) == set(TASKS)
    for name, dataset in produced.items():
        assert TASKS[name].dataset == dataset
    TASKS.check()  # targets resolve, loaders agree, columns fed once


def test_every_parser_and_scorer_resolves_to_a_function() -> None:
    for task in TASKS.values():
        assert callable(resolve(task.parser)) and callable(resolve(task.scorer))
        assert task.primary_metric.name == task.primary


def test_the_six_surgvlm_bench_columns_are_fed_in_order() -> None:
    assert [t.surgvlm_bench for t in TASKS.arena()] == list(SURGVLM_BENCH)


def test_get_task_names_the_closest_on_a_typo() -> None:
    with pytest.raises(ValueError, match="Did you mean 'endoscapes-cvs'.*Known tasks: "):
        get_task("endoscape-cvs")
    with pytest.raises(ValueError, match="unknown task 'zzz'\\. Known tasks"):
        get_task("zzz")


def test_prompt_adds_the_options_and_follows_the_template() -> None:
    item = phase_item()
    assert get_task("cholec80-phase").prompt(item) == (
        item.question + "\nOptions: " + ", ".join(CHOLEC80_PHASES) + "."
    )
    assert get_task("cholec80-phase").prompt(phase_item(choices=None)) == item.question
    custom = spec(question_template="Case {case}. {question}", choices_template=" ({choices})")
    assert custom.prompt(phase_item(choices=["Preparation", "ClippingCutting"])) == (
        "Case video41. " + item.question + " (Preparation, ClippingCutting)"
    )


def test_parse_drops_thinking_and_names_a_reply_cut_off_while_thinking() -> None:
    task = get_task("cholec80-phase")
    parsed = task.parse(phase_item(), "<think>Preparation? No.</think>Calot's triangle dissection")
    assert parsed.ok and parsed.value == "CalotTriangleDissection"
    assert task.parse(phase_item(), "<think>Still looking at the").error == (
        "the reply stopped inside its <think> block"
    )
    assert task.parse(phase_item(), "   ").error == "empty answer"


# -- a spec is checked when it is made ----------------------------------------------------------


def test_the_primary_metric_must_be_one_of_the_metrics() -> None:
    with pytest.raises(ValidationError, match="primary metric 'f1' is not among its metrics"):
        spec(primary="f1")
    with pytest.raises(ValidationError, match="accuracy listed twice"):
        spec(metrics=[ACCURACY, ACCURACY])
    with pytest.raises(ValidationError, match="at least 1"):
        spec(metrics=[])


def test_specs_are_frozen_and_take_no_unknown_fields() -> None:
    with pytest.raises(ValidationError, match="Extra inputs are not permitted"):
        spec(metric="accuracy")
    with pytest.raises(ValidationError, match="frozen"):
        get_task("cholec80-phase").primary = "macro_f1"  # type: ignore[misc]


def test_targets_names_answers_and_templates_are_checked() -> None:
    with pytest.raises(ValidationError, match="parser"):
        spec(parser="surgagent.evals.parsers.parse_single")  # no ':'
    with pytest.raises(ValidationError, match="name"):
        spec(name="Cholec80 Phase")
    with pytest.raises(ValidationError, match="answer"):
        spec(answer="sentence")
    with pytest.raises(ValidationError, match="surgvlm_bench"):
        spec(surgvlm_bench="Cholec80 phases")
    with pytest.raises(ValidationError, match="uses gold; fields it may use: case, dataset"):
        spec(question_template="{question} (gold: {gold})")
    with pytest.raises(ValidationError, match="is not a template"):
        spec(question_template="{question")


# -- a registry is checked when it is built and before first use --------------------------------


def test_two_specs_of_one_name_are_refused() -> None:
    with pytest.raises(TaskRegistryError, match="two task specs are called 'cholec80-phase'"):
        TaskRegistry([spec(), spec(description="Again.")])


def test_check_lists_every_target_that_does_not_resolve_and_every_loader_mismatch() -> None:
    broken = TaskRegistry(
        [
            spec(parser="surgagent.evals.parsers:parse_phase_please"),
            spec(
                name="cholec80-tools",
                scorer="surgagent.evals.no_such_module:score",
                surgvlm_bench=None,
            ),
            spec(name="cholec80-phase-next", dataset="cholec81", surgvlm_bench=None),
            spec(name="cholec80-multistep", dataset="cholect50", surgvlm_bench="Cholec80 phase"),
            spec(name="endovis18-vqa", parser="surgagent.evals.tasks:SURGVLM_BENCH"),
            spec(
                name="sar-rarp50-action",
                dataset="sar-rarp50",
                surgvlm_bench=None,
                vocabulary="surgagent.tools.vocabulary:readable_label",
            ),
        ]
    )
    with pytest.raises(TaskRegistryError) as caught:
        broken.check()
    message = str(caught.value)
    for problem in (
        "task cholec80-phase: parser 'surgagent.evals.parsers:parse_phase_please': "
        "surgagent.evals.parsers has no 'parse_phase_please'",
        "task cholec80-tools: scorer 'surgagent.evals.no_such_module:score': cannot import",
        "task cholec80-phase-next: no loader for dataset 'cholec81' (datasets: cholec80,",
        "task cholec80-multistep: loader cholect50 does not produce it (it produces "
        "cholect50-triplet)",
        "task endovis18-vqa: parser 'surgagent.evals.tasks:SURGVLM_BENCH' is not callable",
        "SurgVLM-Bench column 'Cholec80 phase' is fed by several tasks",
        "task sar-rarp50-action: vocabulary",
    ):
        assert problem in message
    with pytest.raises(TaskRegistryError, match="broken"):
        broken.task("cholec80-phase")  # a lookup checks first


def test_a_complete_registry_needs_a_spec_for_every_loader_task() -> None:
    partial = TaskRegistry([TASKS["cholec80-phase"]], complete=True)
    with pytest.raises(TaskRegistryError) as caught:
        partial.check()
    assert "loader cholect50 produces task 'cholect50-triplet', which has no TaskSpec" in str(
        caught.value
    )
    TaskRegistry([TASKS["cholec80-phase"]]).check()  # a test registry of one task is fine


# -- the scorer must report what the spec declares ----------------------------------------------


def undeclared_scorer(task: TaskSpec, items: Sequence[TaskRecord], values: list[Any]) -> Any:
    return {"accuracy": 50.0, "top3_accuracy": 75.0}, {}, None


def test_a_scorer_reporting_an_undeclared_metric_is_a_bug(monkeypatch: pytest.MonkeyPatch) -> None:
    odd = spec(scorer="tests.test_eval_tasks:undeclared_scorer")
    monkeypatch.setattr("surgagent.evals.metrics.get_task", lambda name: odd)
    with pytest.raises(TaskRegistryError, match="reported accuracy, top3_accuracy; the spec"):
        score_task("cholec80-phase", [(phase_item(), Parsed(ok=True, value="Preparation"))])


def test_score_task_ranks_by_the_spec_primary_metric() -> None:
    items = [phase_item(id=f"cholec80-phase/video41/t{k:04d}") for k in range(4)]
    answers = [
        "Calot triangle dissection",
        "Preparation",
        "I cannot tell",
        "Answer: CalotTriangleDissection",
    ]
    task = get_task("cholec80-phase")
    score = score_task(
        task.name, [(i, task.parse(i, a)) for i, a in zip(items, answers, strict=True)]
    )
    assert score.primary.name == "accuracy" and score.primary.value == 50.0
    assert set(score.metrics) <= {m.name for m in task.metrics}
    assert score.unparsed_ids == [items[2].id]
