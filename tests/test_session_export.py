"""``surgagent session export``: real sessions made by ``surgagent chat``, exported and read back.

The planner and perception answer from one scripted OpenAI-compatible server; the session
lives in the SQLite sessions file, as a user's would.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

import pytest
from pydantic import TypeAdapter

from surgagent.agent.audit import ExportRecord, weights_sha256
from surgagent.agent.settings import get_settings
from surgagent.agent.testing.openai_server import ScriptedOpenAIServer, ScriptedReply
from surgagent.tools.cache import CaseCache
from tests.fixtures.cli import REPO, openai_env, run_cli

SAMPLE = "examples/sample_case/sample_lapchole.mp4"
CVS = "Criterion 1: No; Criterion 2: No; Criterion 3: Yes."


@pytest.fixture
def session(tmp_path: Path) -> dict[str, str]:
    """A two-turn session ``review`` (frames, perception, a failed call); the export env."""
    script = [
        ScriptedReply(tool_calls=[("look_at_frames", {"times": ["00:02", "99:00"]})]),
        ScriptedReply(tool_calls=[("look_at_frames", {"times": ["00:02"]})]),
        ScriptedReply(content="A grasper is in view at [00:02].", reasoning="I looked."),
        ScriptedReply(
            tool_calls=[
                ("ask_perception", {"question": "Is CVS achieved?", "task": "cvs", "times": ["3"]})
            ]
        ),
        ScriptedReply(content=CVS),  # perception's reply
        ScriptedReply(content="Only criterion 3 is met at [00:03], and clipping at [00:09]."),
    ]
    with ScriptedOpenAIServer(script) as server:
        env = openai_env(server)
        done = run_cli(
            "chat",
            SAMPLE,
            "--session",
            "review",
            env=env,
            stdin="What is at 2 s?\nIs the critical view achieved?\n/quit\n",
        )
    assert done.returncode == 0, done.stderr
    weights = tmp_path / "detector" / "best.pt"
    weights.parent.mkdir()
    weights.write_bytes(b"not loaded by the export, only hashed" * 1000)
    return {**env, "SURGAGENT_DETECTOR__WEIGHTS": str(weights)}


def read_jsonl(text: str) -> list[ExportRecord]:
    adapter: TypeAdapter[ExportRecord] = TypeAdapter(ExportRecord)
    return [adapter.validate_json(line) for line in text.splitlines()]


def test_jsonl_export_holds_every_turn_call_model_hash_and_the_case(
    session: dict[str, str],
) -> None:
    done = run_cli("session", "export", "review", env=session)
    assert done.returncode == 0, done.stderr
    records = read_jsonl(done.stdout)
    kinds = [r.type for r in records]
    assert kinds == [
        "session",
        "model",
        "model",
        "weights",
        "prompt",
        "prompt",
        "prompt",
        "turn",
        "tool_call",
        "tool_call",
        "turn",
        "tool_call",
    ]
    header, planner, perception, weights, *prompts = records[:7]
    assert header.type == "session" and header.thread_id == "review" and header.turns == 2
    case = CaseCache(get_settings().cache_dir).lookup(str(header.case_id))
    assert case is not None and header.case_content_hash == case.content_hash
    assert header.case_source == str(case.source)
    base_url = session["SURGAGENT_PLANNER__BASE_URL"]
    assert planner.type == "model" and perception.type == "model"
    assert (planner.role, planner.backend, planner.endpoint) == ("planner", "openai", base_url)
    assert planner.seen == ["Qwen/Qwen3.5-9B"]  # the served model name the replies carried
    assert (perception.endpoint, perception.seen) == (base_url, ["Qwen/Qwen3.5-9B"])
    assert (planner.source, planner.turns) == ("run", [0, 1])  # stamped by each turn
    data = Path(session["SURGAGENT_DETECTOR__WEIGHTS"]).read_bytes()
    assert weights.type == "weights" and weights.sha256 == hashlib.sha256(data).hexdigest()
    assert {p.name: p.sha256 for p in prompts if p.type == "prompt"} == {
        name: hashlib.sha256((REPO / name).read_bytes()).hexdigest()
        for name in (
            "agent/prompts/planner_system.md",
            "agent/prompts/final_answer.md",
            "tools/perception/prompts/perception_cvs.md",
        )
    }

    first, failed, looked, second, asked = records[7:]
    assert first.type == "turn" and first.question == "What is at 2 s?"
    assert (first.answer, first.status, first.warnings) == (
        "A grasper is in view at [00:02].",
        "answered",
        [],
    )
    assert first.reasoning == ["I looked."] and first.evidence[0].startswith("[00:02 frame]")
    assert failed.type == "tool_call" and failed.status == "error"
    assert failed.args == {"times": ["00:02", "99:00"]} and "past the end" in str(failed.error)
    assert looked.type == "tool_call" and looked.status == "ok" and looked.error is None
    assert looked.result_kind == "frames" and looked.summary.startswith("Showing 1 frame")
    assert looked.duration_s > 0
    assert second.type == "turn" and second.warnings == [
        "The answer cites [00:09], but no tool in this session looked at that time."
    ]
    assert asked.type == "tool_call" and asked.tool == "ask_perception"
    assert asked.result_kind == "perception" and asked.model == "Qwen/Qwen3.5-9B"
    assert asked.args["task"] == "cvs" and asked.turn == 1


def test_markdown_export_to_a_file(session: dict[str, str], tmp_path: Path) -> None:
    out = tmp_path / "audit" / "review.md"
    done = run_cli("session", "export", "review", "--format", "md", "--out", str(out), env=session)
    assert done.returncode == 0, done.stderr
    assert done.stdout == ""
    text = out.read_text()
    assert text.startswith("# Session review\n")
    assert "**Question:** Is the critical view achieved?" in text
    assert "> **Warning:** The answer cites [00:09]" in text
    assert '- `look_at_frames({"times": ["00:02", "99:00"]})` error' in text
    assert "- prompt tools/perception/prompts/perception_cvs.md: sha256 `" in text
    assert "case content hash: `" in text and "case content hash: `unknown`" not in text


def test_the_models_are_those_the_turns_ran_with_not_todays_settings(
    session: dict[str, str],
) -> None:
    later = {
        **session,
        "SURGAGENT_PLANNER__MODEL": "another/model-B",
        "SURGAGENT_PLANNER__BASE_URL": "http://127.0.0.1:9/v1",
    }
    done = run_cli("session", "export", "review", env=later)
    assert done.returncode == 0, done.stderr
    models = [r for r in read_jsonl(done.stdout) if r.type == "model"]
    assert [(m.role, m.model, m.endpoint, m.source) for m in models] == [
        (role, "Qwen/Qwen3.5-9B", session["SURGAGENT_PLANNER__BASE_URL"], "run")
        for role in ("planner", "perception")
    ]
    markdown = run_cli("session", "export", "review", "--format", "md", env=later).stdout
    assert "- planner: Qwen/Qwen3.5-9B via openai (" in markdown
    assert "used in turns 1, 2" in markdown
    assert "model-B" not in markdown


def test_turns_saved_without_models_fall_back_to_the_settings_and_say_so() -> None:
    from surgagent.agent.audit import SessionExport, SessionHeader, _models, to_markdown
    from surgagent.graphs.result import AnswerResult, ModelUse

    settings = get_settings(planner={"backend": "openai", "model": "m-now", "base_url": "http://x"})
    stamped = AnswerResult(
        answer="a",
        status="answered",
        models=[ModelUse(role="planner", backend="openai", model="m-then", endpoint="http://y")],
    )
    older = AnswerResult(answer="b", status="answered")  # saved before models were kept
    seen: dict[str, set[str]] = {"planner": set(), "perception": set()}
    records = _models([stamped, older, None], settings, seen)
    assert [(r.role, r.model, r.source, r.turns) for r in records] == [
        ("planner", "m-then", "run", [0]),
        ("planner", "m-now", "settings", [1, 2]),
        ("perception", "m-now", "settings", [1, 2]),  # perception uses the planner's model
    ]
    header = SessionHeader(
        thread_id="t", case_id=None, case_source=None, case_content_hash=None, started=None,
        updated=None, turns=3, exported_at="now", surgagent_version="0",
    )  # fmt: skip
    export = SessionExport(
        header=header, models=records, weights=[], prompts=[], turns=[], tool_calls=[]
    )
    lines = to_markdown(export).splitlines()
    assert [line for line in lines if line.startswith(("- planner", "- perception"))] == [
        "- planner: m-then via openai (http://y), used in turn 1",
        "- planner: m-now via openai (http://x), as configured at export (turns 2, 3 recorded "
        "no models)",
        "- perception: m-now via openai (http://x), as configured at export (turns 2, 3 "
        "recorded no models)",
    ]


def test_an_unknown_session_lists_the_recent_ones(session: dict[str, str]) -> None:
    done = run_cli("session", "export", "nope", env=session)
    assert done.returncode == 1 and "Traceback" not in done.stderr
    line = " ".join(done.stderr.split())
    assert line.startswith("error: session 'nope' is unknown; recent sessions: review (")
    assert "2 turns, last: 'Is the critical view achieved?')." in line


def test_weights_are_hashed_once_per_path_mtime_and_size(tmp_path: Path) -> None:
    weights, cache = tmp_path / "phase.pt", tmp_path / "cache" / "hashes.json"
    weights.write_bytes(b"a" * 4096)
    digest = hashlib.sha256(b"a" * 4096).hexdigest()
    assert weights_sha256(weights, cache) == digest
    # A second call reads the kept hash instead of the file.
    kept = json.loads(cache.read_text())
    kept[str(weights.resolve())]["sha256"] = "kept"
    cache.write_text(json.dumps(kept))
    assert weights_sha256(weights, cache) == "kept"
    # A changed file (new size and mtime) is hashed again.
    weights.write_bytes(b"b" * 10)
    os.utime(weights, ns=(1, 1))
    assert weights_sha256(weights, cache) == hashlib.sha256(b"b" * 10).hexdigest()
