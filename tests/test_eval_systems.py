"""Eval systems in process: the oracle agent, conversations per case, shards, failures, score.

The model is a scripted OpenAI-compatible server on loopback; the agent, its graph, its tools
and the runner are the real ones.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
from typer.testing import CliRunner

from surgagent.agent.errors import BackendError, ToolInputError
from surgagent.agent.settings import get_settings
from surgagent.agent.testing.openai_server import ScriptedOpenAIServer, ScriptedReply
from surgagent.evals.loaders import build_task_set
from surgagent.evals.records import Media, TaskRecord, read_results, shard, write_tasks
from surgagent.evals.report import build_report
from surgagent.evals.runner import run_eval
from surgagent.evals.systems import DirectSystem, _Media, make_systems
from surgagent.evals.tasks import get_task
from surgagent.tools.vocabulary import CHOLEC80_PHASES
from tests.test_eval_run import write_cholec80


@pytest.fixture(scope="module")
def dataset(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("c80")
    write_cholec80(root, videos=2)
    return root


def settings_for(server: ScriptedOpenAIServer, tmp_path: Path) -> Any:
    return get_settings(
        planner={"backend": "openai", "base_url": server.base_url, "max_retries": 0},
        perception={"enabled": False},
        knowledge={"enabled": False},
        data_dir=tmp_path / "data",
        tool_retries=0,
    )


def user_text(request: dict[str, Any]) -> str:
    parts = []
    for message in request["messages"]:
        if message["role"] == "user":
            content = message["content"]
            parts += [content] if isinstance(content, str) else [p.get("text", "") for p in content]
    return " ".join(p for p in parts if p)


def oracle_model(request: dict[str, Any]) -> ScriptedReply:
    """Ask the phase tool at the question's moment, then answer with what it said."""
    tool_texts = [m["content"] for m in request["messages"] if m["role"] == "tool"]
    if not tool_texts:
        when = re.search(r"at (\d\d:\d\d)\?", user_text(request))
        assert when, user_text(request)
        return ScriptedReply(tool_calls=[("phase_at", {"time": when.group(1)})])
    said = re.search(r"the phase is (\w+)", tool_texts[-1])
    return ScriptedReply(content=f"The phase is {said.group(1) if said else 'unknown'}.")


def test_agent_with_oracle_tools_answers_from_the_annotations(
    dataset: Path, tmp_path: Path
) -> None:
    items = build_task_set(dataset, "cholec80", tasks=["cholec80-phase"], every_s=30)
    tasks_file = tmp_path / "tasks.jsonl"
    write_tasks(tasks_file, items, name="phase")
    with ScriptedOpenAIServer(oracle_model) as server:
        systems = make_systems(
            ["agent-oracle"],
            media_root=dataset,
            work_dir=tmp_path / "run",
            settings=settings_for(server, tmp_path),
        )
        summary = run_eval(tasks_file, tmp_path / "run", systems, concurrency=4)
    assert summary.done == len(items) and summary.failed == 0
    results = list(read_results(tmp_path / "run" / "results.jsonl"))
    assert all(r.correct for r in results), [(r.item_id, r.answer) for r in results]
    tools = {step["tool"] for r in results for step in r.trace if step["node"] == "tools"}
    assert tools == {"phase_at"}


def test_case_context_keeps_one_conversation_per_case(dataset: Path, tmp_path: Path) -> None:
    items = build_task_set(dataset, "cholec80", tasks=["cholec80-phase"], every_s=60)
    tasks_file = tmp_path / "tasks.jsonl"
    write_tasks(tasks_file, items, name="phase")
    seen_turns: list[int] = []

    def model(request: dict[str, Any]) -> ScriptedReply:
        seen_turns.append(sum(m["role"] == "user" for m in request["messages"]))
        return ScriptedReply(content="Preparation")

    with ScriptedOpenAIServer(model) as server:
        systems = make_systems(
            ["agent"], media_root=dataset, work_dir=tmp_path / "run",
            settings=settings_for(server, tmp_path),
        )  # fmt: skip
        run_eval(tasks_file, tmp_path / "run", systems, concurrency=2, context="case")
        with pytest.raises(ValueError, match="--context case"):
            run_eval(tasks_file, tmp_path / "run", systems, context="fresh")
    per_case = len(items) // 2
    assert sorted(seen_turns) == sorted(list(range(1, per_case + 1)) * 2)
    report = build_report([tmp_path / "run"], bootstrap=0)
    assert report.context == "case"


def test_shards_cover_every_item_once_and_merge(dataset: Path, tmp_path: Path) -> None:
    items = build_task_set(dataset, "cholec80", tasks=["cholec80-phase", "cholec80-tools"])
    parts = [shard(items, k, 3) for k in range(3)]
    assert sorted(i.id for part in parts for i in part) == sorted(i.id for i in items)
    for part in parts:  # whole cases stay together
        for case in {i.case for i in part}:
            assert all(i in part for i in items if i.case == case)
    tasks_file = tmp_path / "tasks.jsonl"
    write_tasks(tasks_file, items, name="both")
    with ScriptedOpenAIServer(lambda request: ScriptedReply(content="Grasper")) as server:
        settings = settings_for(server, tmp_path)
        for k in range(2):  # two machines, two run folders
            systems = make_systems(
                ["direct"], media_root=dataset, work_dir=tmp_path / f"m{k}", settings=settings
            )
            run_eval(tasks_file, tmp_path / f"m{k}", systems, shard_spec=(k, 2))
    names = [p.name for p in (tmp_path / "m1").glob("results*.jsonl")]
    assert names == ["results.shard-1-of-2.jsonl"]
    merged = build_report([tmp_path / "m0", tmp_path / "m1"], bootstrap=0)
    assert sum(s["direct"].n for s in merged.scores.values()) == len(items)


def test_failures_are_recorded_then_retried(dataset: Path, tmp_path: Path) -> None:
    items = build_task_set(dataset, "cholec80", tasks=["cholec80-phase"], every_s=90)
    tasks_file = tmp_path / "tasks.jsonl"
    write_tasks(tasks_file, items, name="phase")
    healthy = {"up": False}

    def flaky(request: dict[str, Any]) -> ScriptedReply:
        if not healthy["up"]:
            return ScriptedReply(status=503, error="overloaded")
        return ScriptedReply(content="Preparation")

    with ScriptedOpenAIServer(flaky) as server:
        systems = make_systems(
            ["direct"], media_root=dataset, work_dir=tmp_path / "run",
            settings=settings_for(server, tmp_path),
        )  # fmt: skip
        first = run_eval(tasks_file, tmp_path / "run", systems)
        assert first.failed == len(items) and first.done == 0
        again = run_eval(tasks_file, tmp_path / "run", systems)
        assert again.planned == 0 and again.skipped == len(items)
        healthy["up"] = True
        retried = run_eval(tasks_file, tmp_path / "run", systems, retry_failed=True)
    assert retried.done == len(items)
    latest = {r.item_id: r for r in read_results(tmp_path / "run" / "results.jsonl")}
    assert {r.attempt for r in latest.values()} == {2}
    failed = [r for r in read_results(tmp_path / "run" / "results.jsonl") if r.status == "failed"]
    assert failed and "overloaded" in (failed[0].error or "")
    report = build_report([tmp_path / "run"], bootstrap=0)
    assert report.failures == {}  # the last attempt counts


def test_eval_score_cli_on_phase_files(tmp_path: Path) -> None:
    from surgagent.cli.main import app
    from surgagent.tools.phase.annotations import write_cholec80_phase_file
    from surgagent.tools.vocabulary import CHOLEC80_PHASES

    gold, pred = tmp_path / "gold", tmp_path / "pred"
    labels = [0] * 60 + [1] * 60
    late = [0] * 65 + [1] * 55  # 5 s late: forgiven by the relaxed boundary
    write_cholec80_phase_file(gold / "video41-phase.txt", labels, CHOLEC80_PHASES)
    write_cholec80_phase_file(pred / "video41-phase.txt", late, CHOLEC80_PHASES)
    result = CliRunner().invoke(
        app,
        ["eval", "score", "--task", "cholec80-phase", "--gold", str(gold), "--pred", str(pred),
         "--json"],
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    scores = json.loads(result.stdout)
    assert scores["variant"] == "matlab" and scores["accuracy"] == pytest.approx(100.0)
    assert scores["videos"] == ["video41"]


def test_a_torn_last_line_loses_nothing_and_is_reported(
    dataset: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    items = build_task_set(dataset, "cholec80", tasks=["cholec80-phase"], every_s=90)
    tasks_file = tmp_path / "tasks.jsonl"
    write_tasks(tasks_file, items, name="phase")
    run_dir = tmp_path / "run"
    with ScriptedOpenAIServer(lambda request: ScriptedReply(content="Preparation")) as server:
        systems = make_systems(
            ["direct"],
            media_root=dataset,
            work_dir=run_dir,
            settings=settings_for(server, tmp_path),
        )
        half = tasks_file.with_name("half.jsonl")
        write_tasks(half, items[: len(items) // 2], name="phase")
        run_eval(half, run_dir, systems)
        results = run_dir / "results.jsonl"
        lines = results.read_text().splitlines()
        # A kill in the middle of a write: the last record is cut, with no line end.
        results.write_text("\n".join(lines[:-1]) + "\n" + lines[-1][: len(lines[-1]) // 2])
        (run_dir / "run.json").unlink()  # the full task set is a new one for this folder
        resumed = run_eval(tasks_file, run_dir, systems)
    assert resumed.done == len(items) - len(lines) + 1  # the torn item is run again
    torn_at = len(lines)
    assert f"{results}:{torn_at}: skipped a line that is not a result" in caplog.text
    latest = {r.item_id for r in read_results(results)}
    assert latest == {item.id for item in items}  # nothing appended onto the torn line is lost
    report = build_report([run_dir], bootstrap=0)
    assert report.failures == {}


def test_a_second_run_on_the_same_results_is_refused(dataset: Path, tmp_path: Path) -> None:
    items = build_task_set(dataset, "cholec80", tasks=["cholec80-phase"], every_s=90)
    tasks_file = tmp_path / "tasks.jsonl"
    write_tasks(tasks_file, items, name="phase")
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    holder = subprocess.Popen(
        [sys.executable, "-c", HOLD_LOCK, str(run_dir / "results.lock")],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "held"
        with ScriptedOpenAIServer(["never used"]) as server:
            systems = make_systems(
                ["direct"], media_root=dataset, work_dir=run_dir,
                settings=settings_for(server, tmp_path),
            )  # fmt: skip
            with pytest.raises(ValueError, match="is being written by another eval run"):
                run_eval(tasks_file, run_dir, systems)
        assert server.requests == []  # nothing ran twice
    finally:
        holder.kill()
        holder.wait()


HOLD_LOCK = """
import sys, time
from filelock import FileLock
with FileLock(sys.argv[1]):
    print("held", flush=True)
    time.sleep(60)
"""


def test_eval_run_exits_non_zero_when_every_item_failed(dataset: Path, tmp_path: Path) -> None:
    from surgagent.cli.main import app

    items = build_task_set(dataset, "cholec80", tasks=["cholec80-phase"], every_s=90)
    tasks_file = tmp_path / "tasks.jsonl"
    write_tasks(tasks_file, items, name="phase")
    down = lambda request: ScriptedReply(status=503, error="overloaded")  # noqa: E731
    with ScriptedOpenAIServer(down) as server:
        env = {
            "SURGAGENT_PLANNER__BACKEND": "openai",
            "SURGAGENT_PLANNER__BASE_URL": server.base_url,
            "SURGAGENT_PLANNER__MAX_RETRIES": "0",
            "SURGAGENT_PERCEPTION__ENABLED": "false",
        }
        run = ["eval", "run", str(tasks_file), "--out", str(tmp_path / "run"), "--json"]
        result = CliRunner().invoke(app, [*run, "--systems", "direct"], env=env)
    assert result.exit_code == 1, result.output
    assert json.loads(result.stdout)["failed"] == len(items)


# -- what a system records as a failed item, and what it lets through -------------------------


class FrameModel:
    """A stand-in planner model: answers, or raises ``error``; records the prompts it got."""

    def __init__(self, error: Exception | None = None) -> None:
        self.error = error
        self.prompts: list[str] = []

    def answer(self, images: list[Any], prompt: str) -> Any:
        self.prompts.append(prompt)
        if self.error is not None:
            raise self.error
        usage = SimpleNamespace(prompt_tokens=10, completion_tokens=3)
        return SimpleNamespace(text="</think>Preparation", usage=usage, reasoning="")


def frame_item(root: Path) -> TaskRecord:
    from PIL import Image

    (root / "frames").mkdir(parents=True, exist_ok=True)
    Image.new("RGB", (32, 24), "red").save(root / "frames" / "video41_000120.png")
    return TaskRecord(
        id="cholec80-phase/video41/t0120",
        task="cholec80-phase",
        dataset="cholec80",
        case="video41",
        media=Media(frames=["frames/video41_000120.png"], times=[120.0]),
        question="Which surgical phase is in progress at 02:00?",
        choices=list(CHOLEC80_PHASES),
        gold="Preparation",
    )


def direct(model: FrameModel, root: Path) -> DirectSystem:
    return DirectSystem(model, _Media(root, root / "run" / "cases"), None, 448)  # type: ignore[arg-type]


def test_direct_asks_the_spec_prompt_and_parses_with_the_spec_parser(tmp_path: Path) -> None:
    item, model = frame_item(tmp_path), FrameModel()
    result = direct(model, tmp_path).answer(item, None)
    assert model.prompts == [get_task(item.task).prompt(item)]
    assert result.status == "ok" and result.parsed == "Preparation" and result.correct


@pytest.mark.parametrize(
    "known", [BackendError("server down (503)"), ToolInputError("no frame at 95:00")]
)
def test_a_known_failure_is_a_failed_result(tmp_path: Path, known: Exception) -> None:
    result = direct(FrameModel(known), tmp_path).answer(frame_item(tmp_path), None)
    assert result.status == "failed" and result.error == str(known)


def test_a_missing_frame_is_a_failed_result(tmp_path: Path) -> None:
    item = frame_item(tmp_path)
    (tmp_path / item.media.frames[0]).unlink()
    result = direct(FrameModel(), tmp_path).answer(item, None)
    assert result.status == "failed" and "video41_000120.png cannot be read" in (result.error or "")


@pytest.mark.parametrize("bug", [KeyError("usage"), ValueError("bad shape"), AttributeError("x")])
def test_a_bug_is_not_caught_as_a_failed_item(tmp_path: Path, bug: Exception) -> None:
    with pytest.raises(type(bug)):
        direct(FrameModel(bug), tmp_path).answer(frame_item(tmp_path), None)


def test_a_frame_case_made_by_many_threads_at_once_is_made_once(tmp_path: Path) -> None:
    item = frame_item(tmp_path)
    media = _Media(tmp_path, tmp_path / "run" / "cases")
    with ThreadPoolExecutor(8) as pool:
        folders = set(pool.map(lambda _: media.case(item), range(16)))
    assert len(folders) == 1
    (folder,) = folders
    assert [p.name for p in folder.iterdir()] == ["frame_0000.png"]
    assert [p.name for p in (tmp_path / "run" / "cases").iterdir()] == [folder.name]
