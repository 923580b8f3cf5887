"""LangGraph clients: `langgraph dev` serves the agent and `langgraph_sdk` runs it.

The server is the real one (``langgraph-cli[inmem]``), started as a user starts it, from
``langgraph.json``; the planner is the scripted OpenAI-compatible server.
"""

from __future__ import annotations

import importlib.util
import json
import os
import shutil
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from surgagent.agent.testing.openai_server import ScriptedOpenAIServer, ScriptedReply
from tests.fixtures.cli import REPO, openai_env

SAMPLE = REPO / "examples" / "sample_case" / "sample_lapchole.mp4"

pytestmark = pytest.mark.skipif(
    importlib.util.find_spec("langgraph_api") is None
    or shutil.which("langgraph", path=str(Path(sys.executable).parent)) is None,
    reason='needs langgraph-cli[inmem] (pip install -e ".[dev]")',
)


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def _question(text: str) -> dict[str, Any]:
    return {"messages": [{"role": "user", "content": text}]}


@pytest.fixture
def langgraph_dev(tmp_path: Path) -> Iterator[tuple[Any, ScriptedOpenAIServer, str]]:
    """`langgraph dev` on a free port, planner on a scripted server; yields (client, server)."""
    from langgraph_sdk import get_sync_client

    server = ScriptedOpenAIServer().start()
    port = _free_port()
    env = {
        **os.environ,
        **openai_env(server),
        "LANGGRAPH_CLI_NO_ANALYTICS": "1",
        "LANGSMITH_TRACING": "false",
    }
    log = tmp_path / "langgraph-dev.log"
    command = [
        str(Path(sys.executable).parent / "langgraph"),
        "dev",
        "--no-browser",
        "--no-reload",
        "--port",
        str(port),
        "--config",
        str(REPO / "langgraph.json"),
    ]
    with log.open("w") as out:
        # From a folder of the test's own: the server keeps its threads under ./.langgraph_api.
        process = subprocess.Popen(command, cwd=tmp_path, env=env, stdout=out, stderr=out)
    url = f"http://127.0.0.1:{port}"
    try:
        client = get_sync_client(url=url)
        deadline = time.monotonic() + 90
        while True:
            try:
                client.http.get("/ok")
                break
            except Exception:
                if process.poll() is not None or time.monotonic() > deadline:
                    pytest.fail(f"langgraph dev did not start:\n{log.read_text()[-3000:]}")
                time.sleep(0.3)
        yield client, server, url
    finally:
        process.terminate()
        try:
            process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            process.kill()
        server.close()


def test_sdk_runs_the_agent_on_a_case(
    langgraph_dev: tuple[Any, ScriptedOpenAIServer, str],
) -> None:
    client, server, _ = langgraph_dev
    server.add(
        ScriptedReply(
            reasoning="Look first.", tool_calls=[("look_at_frames", {"times": ["00:03"]})]
        ),
        ScriptedReply(reasoning="I saw it.", content="A grasper is visible at [00:03]."),
        ScriptedReply(content="The grasper is still there at [00:03]."),
    )
    thread = client.threads.create()["thread_id"]
    state = client.runs.wait(
        thread, "case_review", input=_question("What is at 3 s?"), context={"case": str(SAMPLE)}
    )
    result = state["result"]
    assert result["status"] == "answered"
    assert result["answer"] == "A grasper is visible at [00:03]."
    assert result["reasoning"] and "I saw it." in result["reasoning"]
    assert [item["time"] for item in result["evidence"]] == [3.0]
    assert [m["type"] for m in state["messages"]] == ["human", "ai", "tool", "ai"]
    assert state["case_id"].startswith("sample-lapchole-")

    # A follow-up on the thread keeps its case, streamed: tokens, then the node's update.
    parts = list(
        client.runs.stream(
            thread, "case_review", input=_question("And now?"), stream_mode=["messages", "updates"]
        )
    )
    streamed = "".join(
        part.data[0]["content"]
        for part in parts
        if part.event == "messages/partial" or part.event == "messages/complete"
        if isinstance(part.data, list) and part.data and part.data[0].get("type") == "ai"
    )
    assert "The grasper is still there" in streamed
    updates = [part.data for part in parts if part.event == "updates"]
    assert updates[-1]["review"]["result"]["answer"] == "The grasper is still there at [00:03]."
    final = client.threads.get_state(thread)["values"]
    assert len([m for m in final["messages"] if m["type"] == "human"]) == 2


def test_case_by_configurable_and_clear_errors(
    langgraph_dev: tuple[Any, ScriptedOpenAIServer, str],
) -> None:
    client, server, _ = langgraph_dev
    server.add("The field shows the gallbladder.", "Still the gallbladder.")
    thread = client.threads.create()["thread_id"]
    state = client.runs.wait(
        thread,
        "case_review",
        input=_question("What is shown?"),
        config={"configurable": {"case": str(SAMPLE)}},
    )
    assert state["result"]["answer"] == "The field shows the gallbladder."
    # ... or by the input.
    by_input = client.runs.wait(
        client.threads.create()["thread_id"],
        "case_review",
        input={**_question("What is shown?"), "case": str(SAMPLE)},
    )
    assert by_input["result"]["answer"] == "Still the gallbladder."
    assert by_input["case_id"] == state["case_id"]

    # No case on a new thread, and a case that does not exist: one sentence each.
    for context, expected in (
        ({}, "say which case it is about"),
        ({"case": "/nowhere/missing.mp4"}, "missing.mp4"),
    ):
        fresh = client.threads.create()["thread_id"]
        failed = client.runs.wait(
            fresh,
            "case_review",
            input=_question("What is shown?"),
            context=context,
            raise_error=False,
        )
        error = failed["__error__"]
        assert error["error"] == "RunRefused"
        assert expected in error["message"], error
        assert "\n" not in error["message"]


def test_the_served_graph_offers_the_clis_tools(
    langgraph_dev: tuple[Any, ScriptedOpenAIServer, str],
) -> None:
    from surgagent.agent.api import settings_tools
    from surgagent.agent.settings import get_settings

    client, _, _ = langgraph_dev
    assistant = client.assistants.search(graph_id="case_review")[0]
    drawn = json.dumps(client.assistants.get_graph(assistant["assistant_id"], xray=True))
    expected = [tool.name for tool in settings_tools(get_settings())]
    assert "search_guidelines" in expected
    for name in expected:
        assert name in drawn
    schemas = client.assistants.get_schemas(assistant["assistant_id"])
    assert "case" in schemas["context_schema"]["properties"]
