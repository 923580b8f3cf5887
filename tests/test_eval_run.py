"""The eval harness end to end: a synthetic Cholec80-layout dataset becomes a task set, the
agent and the bare VLM answer it through a scripted OpenAI-compatible server on loopback, the
run is killed midway and resumed, and the report scores what was answered.

The scripted model answers in the varied styles real models use (sentences, spaced phase
names, "Answer:" lines), thinking inline before ``</think>`` as a server without a reasoning
parser sends it, and is deliberately wrong on a known subset, so the expected scores are known
exactly. Both videos share their annotations, so a question's gold does not depend on which
video it is about.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from pydantic import ValidationError

from surgagent.agent.errors import BackendError, CaseError
from surgagent.agent.testing.openai_server import ScriptedOpenAIServer, ScriptedReply
from surgagent.evals.records import (
    Media,
    ResultRecord,
    TaskRecord,
    read_results,
    read_tasks,
    write_tasks,
)
from surgagent.evals.runner import RunRefused, run_eval
from surgagent.tools.phase.annotations import write_cholec80_phase_file
from surgagent.tools.vocabulary import CHOLEC80_PHASES, CHOLEC80_TOOLS
from tests.fixtures.cli import run_cli
from tests.fixtures.videos import write_video

REPO = Path(__file__).resolve().parents[1]
DURATIONS = [20, 40, 20, 40, 20, 20, 20]  # seconds per Cholec80 phase: 180 s videos
PHASE_TOOLS = {0: ["Grasper"], 1: ["Grasper", "Hook"], 2: ["Clipper", "Scissors"], 3: ["Hook"]}
STYLES = [
    "The phase is {spaced}.",
    "Answer: {name}",
    "{name}",
    "I think this is the {spaced} phase.",
]


def spaced(name: str) -> str:
    return re.sub(r"(?<=[a-z])(?=[A-Z])", " ", name).lower()


def write_cholec80(root: Path, videos: int = 2) -> None:
    for v in range(1, videos + 1):
        name = f"video{v:02d}"
        write_video(root / "videos" / f"{name}.mp4", fps=2, duration=180, size=(64, 48))
        labels = np.repeat(np.arange(7), [d * 25 for d in DURATIONS])
        write_cholec80_phase_file(
            root / "phase_annotations" / f"{name}-phase.txt", labels, CHOLEC80_PHASES, fps=25
        )
        rows = ["Frame\t" + "\t".join(CHOLEC80_TOOLS)]
        for frame in range(0, len(labels), 25):
            present = PHASE_TOOLS.get(int(labels[frame]), ["Grasper", "Irrigator"])
            rows.append(f"{frame}\t" + "\t".join(str(int(t in present)) for t in CHOLEC80_TOOLS))
        (root / "tool_annotations").mkdir(parents=True, exist_ok=True)
        (root / "tool_annotations" / f"{name}-tool.txt").write_text("\n".join(rows) + "\n")


def wrong_on_purpose(question: str, system: str) -> bool:
    """A fixed subset of each system's phase answers are wrong."""
    return int(hashlib.sha256(f"{system}:{question}".encode()).hexdigest(), 16) % 3 == 0


class Model:
    """The scripted model: answers the item a request is about, as `system` would."""

    def __init__(self, tasks_file: Path) -> None:
        _, items = read_tasks(tasks_file)
        self.items = {item.question: item for item in items}

    def item_of(self, text: str) -> Any:
        return next(item for q, item in self.items.items() if q in text)

    def answer(self, item: Any, system: str) -> str:
        if item.task == "cholec80-phase":
            gold = item.gold
            if wrong_on_purpose(item.question, system):
                gold = CHOLEC80_PHASES[(CHOLEC80_PHASES.index(gold) + 1) % 7]
            style = STYLES[int(hashlib.md5(item.question.encode()).hexdigest(), 16) % len(STYLES)]
            return style.format(name=gold, spaced=spaced(gold))
        if item.task == "cholec80-tools":
            return "Visible: " + ", ".join(item.gold) + "."
        return str(item.gold)

    def __call__(self, request: dict[str, Any]) -> ScriptedReply:
        messages = request["messages"]
        user = next(m for m in messages if m["role"] == "user")
        content = user["content"]
        text = (
            content
            if isinstance(content, str)
            else " ".join(part.get("text", "") for part in content if part.get("type") == "text")
        )
        item = self.item_of(text)
        thought = {"reasoning": "The frame settles it.", "reasoning_field": None}
        if not request.get("tools"):  # the bare VLM: one call with the frames
            return ScriptedReply(content=self.answer(item, "direct"), **thought)
        if not any(m["role"] == "tool" for m in messages):  # the planner looks, then answers
            when = item.media.start or 0
            return ScriptedReply(tool_calls=[("look_at_frames", {"times": [str(when)]})])
        return ScriptedReply(content=self.answer(item, "agent"), reasoning="The frame settles it.")


def model_env(server: ScriptedOpenAIServer) -> dict[str, str]:
    return {
        "SURGAGENT_PLANNER__BACKEND": "openai",
        "SURGAGENT_PLANNER__BASE_URL": server.base_url,
        "SURGAGENT_PLANNER__MODEL": "Qwen/Qwen3.5-9B",
        "SURGAGENT_KNOWLEDGE__ENABLED": "false",
        "SURGAGENT_PERCEPTION__ENABLED": "false",
    }


def run_cli_slow(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return run_cli(*args, env=env, timeout=300)


@pytest.mark.slow
def test_tasks_run_killed_resumed_and_reported(tmp_path: Path) -> None:
    data, tasks_file, run_dir = tmp_path / "cholec80", tmp_path / "c80.jsonl", tmp_path / "run"
    write_cholec80(data)
    built = run_cli_slow(
        "eval", "tasks", str(data), "--dataset", "cholec80", "--out", str(tasks_file),
        "--tasks", "cholec80-phase,cholec80-tools", "--every", "30", env={},
    )  # fmt: skip
    assert built.returncode == 0, built.stderr
    header, items = read_tasks(tasks_file)
    assert header.items == len(items) >= 20 and header.meta["root"] == str(data.resolve())
    model = Model(tasks_file)
    with ScriptedOpenAIServer(model, latency=0.15) as server:
        env = model_env(server)
        command = [sys.executable, "-m", "surgagent", "eval", "run", str(tasks_file)]
        command += ["--out", str(run_dir), "--systems", "agent,direct", "--concurrency", "2"]
        first = subprocess.Popen(command, env={**os.environ, **env}, cwd=REPO)
        results = run_dir / "results.jsonl"
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            if results.exists() and len(results.read_text().splitlines()) >= 10:
                break
            time.sleep(0.1)
        first.send_signal(signal.SIGKILL)
        first.wait()
        killed_at = list(read_results(results))
        assert 10 <= len(killed_at) < 2 * len(items)  # stopped midway

        resumed = run_cli_slow(*command[3:], "--json", env=env)
        assert resumed.returncode == 0, resumed.stderr
        summary = json.loads(resumed.stdout)
        assert summary["skipped"] == len(killed_at) and summary["failed"] == 0
        assert summary["done"] == 2 * len(items) - len(killed_at)

    final = list(read_results(results))
    assert len({(r.system, r.item_id) for r in final}) == len(final) == 2 * len(items)
    phase_items = [i for i in items if i.task == "cholec80-phase"]
    expected = {
        system: 100
        * sum(not wrong_on_purpose(i.question, system) for i in phase_items)
        / len(phase_items)
        for system in ("agent", "direct")
    }
    agent_steps = [r.trace for r in final if r.system == "agent"][0]
    assert [step["tool"] for step in agent_steps if step["node"] == "tools"] == ["look_at_frames"]

    reported = run_cli_slow("eval", "report", str(run_dir), "--json", "--bootstrap", "200", env={})
    assert reported.returncode == 0, reported.stderr
    report = json.loads(reported.stdout)
    phase = report["scores"]["cholec80-phase"]
    for system in ("agent", "direct"):
        assert phase[system]["primary"]["value"] == pytest.approx(expected[system], abs=0.01)
        assert phase[system]["n_unparsed"] == 0
        assert report["scores"]["cholec80-tools"][system]["primary"]["value"] == 100.0
    (delta,) = [d for d in report["deltas"] if d["task"] == "cholec80-phase"]
    assert delta["delta"] == pytest.approx(expected["agent"] - expected["direct"], abs=0.01)
    assert delta["low"] <= delta["delta"] <= delta["high"]
    assert report["context"] == "fresh"
    markdown = (run_dir / "report" / "report.md").read_text()
    assert "| cholec80-phase | accuracy |" in markdown and "Per-phase F1" in markdown
    assert (run_dir / "report" / "plots" / "scores.png").stat().st_size > 1000


# -- the runner: known failures are failed items, anything else stops the run -----------------


def phase_items(n: int) -> list[TaskRecord]:
    return [
        TaskRecord(
            id=f"cholec80-phase/video{k // 6 + 1:02d}/t{k % 6 * 30:04d}",
            task="cholec80-phase",
            dataset="cholec80",
            case=f"video{k // 6 + 1:02d}",
            media=Media(video=f"videos/video{k // 6 + 1:02d}.mp4", start=k % 6 * 30),
            question=f"Which surgical phase is in progress at {k % 6 // 2:02d}:{k % 2 * 30:02d}?",
            choices=list(CHOLEC80_PHASES),
            gold="Preparation",
        )
        for k in range(n)
    ]


class Scripted:
    """A system that answers "Preparation" after ``delay`` s, or raises ``errors[item.id]``.

    The items in ``together`` start only once all of them have (so they are in flight at once).
    """

    name = "direct"

    def __init__(
        self, errors: dict[str, BaseException], delay: float = 0.0, together: Sequence[str] = ()
    ) -> None:
        self.errors = errors
        self.delay = delay
        self.together = set(together)
        self.barrier = threading.Barrier(max(1, len(together)), timeout=10)
        self.started: list[str] = []

    def answer(self, item: TaskRecord, thread_id: str | None) -> ResultRecord:
        self.started.append(item.id)
        if item.id in self.together:
            self.barrier.wait()
        if item.id in self.errors:
            raise self.errors[item.id]
        time.sleep(self.delay)
        return ResultRecord(
            item_id=item.id, task=item.task, system=self.name, status="ok",
            answer="Preparation", parsed="Preparation", gold=item.gold, correct=True,
        )  # fmt: skip


def a_validation_error() -> ValidationError:
    try:
        TaskRecord.model_validate({"id": "x"})
    except ValidationError as error:
        return error
    raise AssertionError("TaskRecord took a record without a task")


@pytest.mark.parametrize(
    "known",
    [BackendError("server down (503)"), CaseError("video41.mp4 is truncated"), TimeoutError()],
)
def test_a_known_failure_is_a_failed_item_and_the_run_goes_on(
    tmp_path: Path, known: Exception
) -> None:
    items = phase_items(8)
    tasks_file = tmp_path / "tasks.jsonl"
    write_tasks(tasks_file, items, name="phase")
    system = Scripted({items[0].id: known})
    summary = run_eval(tasks_file, tmp_path / "run", {"direct": system}, concurrency=3)
    assert (summary.done, summary.failed, summary.planned) == (7, 1, 8)
    results = {r.item_id: r for r in read_results(tmp_path / "run" / "results.jsonl")}
    assert set(results) == {item.id for item in items}
    assert results[items[0].id].status == "failed"
    assert results[items[0].id].error == f"{type(known).__name__}: {known}"


@pytest.mark.parametrize("bug", [KeyError("choices"), a_validation_error()])
def test_a_bug_cancels_pending_work_raises_and_keeps_what_finished(
    tmp_path: Path, bug: Exception
) -> None:
    items = phase_items(20)
    tasks_file = tmp_path / "tasks.jsonl"
    write_tasks(tasks_file, items, name="phase")
    run_dir = tmp_path / "run"
    in_flight = [item.id for item in items[:4]]  # the first unit and three beside it
    system = Scripted({items[0].id: bug}, delay=0.3, together=in_flight)
    with pytest.raises(type(bug)) as caught:
        run_eval(tasks_file, run_dir, {"direct": system}, concurrency=4)
    assert caught.value is bug  # the system's own error, with its traceback
    notes = "\n".join(getattr(caught.value, "__notes__", []))
    assert f"raised while direct answered item {items[0].id}" in notes
    assert sorted(system.started) == sorted(in_flight)  # no unit started after the bug
    kept = {r.item_id for r in read_results(run_dir / "results.jsonl")}
    assert kept == set(in_flight[1:])  # what was in flight finished and was kept
    assert f"{len(kept)} of 20 items finished and are kept" in notes

    healthy = Scripted({})
    resumed = run_eval(tasks_file, run_dir, {"direct": healthy}, concurrency=4)
    assert resumed.skipped == len(kept) and resumed.done == 20 - len(kept)
    assert set(healthy.started) == {item.id for item in items} - kept


def test_a_bug_in_a_case_conversation_stops_its_later_turns(tmp_path: Path) -> None:
    items = phase_items(12)  # two cases of six items
    tasks_file = tmp_path / "tasks.jsonl"
    write_tasks(tasks_file, items, name="phase")
    system = Scripted({items[1].id: KeyError("turn")})
    with pytest.raises(KeyError):
        run_eval(tasks_file, tmp_path / "run", {"direct": system}, concurrency=1, context="case")
    assert system.started == [items[0].id, items[1].id]
    assert [r.item_id for r in read_results(tmp_path / "run" / "results.jsonl")] == [items[0].id]


def test_a_task_set_with_an_unregistered_task_runs_nothing(tmp_path: Path) -> None:
    items = [phase_items(1)[0].model_copy(update={"task": "cholec80-phases"})]
    tasks_file = tmp_path / "tasks.jsonl"
    write_tasks(tasks_file, items, name="typo")
    system = Scripted({})
    with pytest.raises(RunRefused, match="Did you mean 'cholec80-phase'"):
        run_eval(tasks_file, tmp_path / "run", {"direct": system})
    assert system.started == [] and not (tmp_path / "run").exists()
