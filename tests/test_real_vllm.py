"""The `openai` backend and the agent against a real vLLM server (`tests/fixtures/real_vllm.py`).

Every reply below is written by vLLM itself: its chat template rendering, reasoning parser
(``qwen3``), tool parser (``qwen3_coder``), streaming and error bodies. Only the text the
model writes is scripted, by constrained decoding. Where no vLLM venv is set up
(``SURGAGENT_VLLM_PYTHON``) these tests skip; with ``SURGAGENT_REQUIRE_VLLM=1`` (CI) they fail.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from langchain_core.messages import (
    AIMessage,
    AIMessageChunk,
    HumanMessage,
    SystemMessage,
    ToolMessage,
)
from langchain_core.tools import tool
from langchain_core.utils.function_calling import convert_to_openai_tool

from surgagent.agent.backends._messages import REASONING_KEY
from surgagent.agent.backends.openai import OpenAIChat
from surgagent.agent.settings import ModelSettings
from surgagent.agent.testing.tiny_qwen import build_tiny_qwen3_text
from surgagent.tools.errors import BackendError
from tests.fixtures.cli import openai_env, run_cli
from tests.fixtures.real_vllm import (
    SERVED_NAME as SERVED,
)
from tests.fixtures.real_vllm import (
    RealVLLM,
    ScriptedVLLM,
    qwen_reply,
    vllm_python,
)

pytestmark = pytest.mark.real_vllm

QUESTION = [SystemMessage("You review surgical videos."), HumanMessage("Which phase is this?")]
SAMPLE = "examples/sample_case/sample_lapchole.mp4"
CONTEXT = 16384


@pytest.fixture(scope="module")
def vllm(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RealVLLM]:
    python = vllm_python()
    if python is None:
        reason = "no vLLM venv: run with SURGAGENT_VLLM_PYTHON=$(bash .ci/vllm-venv)"
        if os.environ.get("SURGAGENT_REQUIRE_VLLM"):
            pytest.fail(reason)
        pytest.skip(reason)
    folder = tmp_path_factory.mktemp("real-vllm")
    model = build_tiny_qwen3_text(folder / "tiny-qwen3")
    # The byte-level vocabulary spends about four tokens where Qwen's spends one: the agent's
    # system prompt and tool schemas alone take ~5k.
    server = RealVLLM(python, model, log=folder / "vllm.log", max_model_len=CONTEXT).start()
    yield server
    server.close()


@tool
def get_frame(time: str, side: int = 448) -> str:
    """Look at the frame at ``time`` (mm:ss), resized to ``side`` pixels."""
    return f"frame at {time}"


@tool
def find_phase(name: str, before: list[str] | None = None) -> str:
    """Find when the phase ``name`` happens, optionally only before the given times."""
    return name


def chat_on(proxy: ScriptedVLLM, **overrides: Any) -> OpenAIChat:
    fields: dict[str, Any] = {
        "backend": "openai",
        "model": proxy.model,
        "base_url": proxy.base_url,
        "max_retries": 0,
        "timeout": 120,
    }
    fields.update(overrides)
    return OpenAIChat(settings=ModelSettings(**fields), retry_backoff=0.01)


def reply_of(chat: Any, stream: bool, messages: list[Any] = QUESTION) -> AIMessage:
    if not stream:
        result = chat.invoke(messages)
        assert isinstance(result, AIMessage)
        return result
    merged: AIMessageChunk | None = None
    for chunk in chat.stream(messages):
        merged = chunk if merged is None else merged + chunk
    assert merged is not None
    return merged


def reasoning(message: AIMessage) -> str | None:
    return message.additional_kwargs.get(REASONING_KEY)


@pytest.mark.parametrize("stream", [False, True], ids=["whole", "streamed"])
def test_answer_with_thinking(vllm: RealVLLM, stream: bool) -> None:
    text = qwen_reply("The gallbladder is out of the abdomen.", thinking="The bag is visible.")
    with ScriptedVLLM(vllm, [text]) as proxy:
        reply = reply_of(chat_on(proxy, thinking=True), stream)
        sent = proxy.requests[0]
    assert reply.content == "The gallbladder is out of the abdomen."
    assert reasoning(reply) == "The bag is visible."
    assert reply.response_metadata["finish_reason"] == "stop"
    assert sent["chat_template_kwargs"]["enable_thinking"] is True
    assert reply.usage_metadata and reply.usage_metadata["output_tokens"] > 0


@pytest.mark.parametrize("stream", [False, True], ids=["whole", "streamed"])
def test_answer_with_thinking_off(vllm: RealVLLM, stream: bool) -> None:
    with ScriptedVLLM(vllm, [qwen_reply("Clipping and cutting.")]) as proxy:
        reply = reply_of(chat_on(proxy, thinking=False), stream)
        sent = proxy.requests[0]
    assert sent["chat_template_kwargs"]["enable_thinking"] is False
    assert reply.content == "Clipping and cutting."
    assert not reasoning(reply)


@pytest.mark.parametrize("stream", [False, True], ids=["whole", "streamed"])
def test_parallel_tool_calls_come_back_typed(vllm: RealVLLM, stream: bool) -> None:
    text = qwen_reply(
        thinking="Two moments to check.",
        calls=[
            ("get_frame", {"time": "00:05", "side": 224}),
            ("find_phase", {"name": "ClippingCutting", "before": ["01:00"]}),
        ],
    )
    with ScriptedVLLM(vllm, [text]) as proxy:
        chat = chat_on(proxy).bind_tools([get_frame, find_phase])
        reply = reply_of(chat, stream)
        sent = proxy.requests[0]
    assert [t["function"]["name"] for t in sent["tools"]] == ["get_frame", "find_phase"]
    assert [(c["name"], c["args"]) for c in reply.tool_calls] == [
        ("get_frame", {"time": "00:05", "side": 224}),  # an int, by the tool's schema
        ("find_phase", {"name": "ClippingCutting", "before": ["01:00"]}),
    ]
    assert len({c["id"] for c in reply.tool_calls}) == 2
    assert reasoning(reply) == "Two moments to check."
    assert reply.content == ""


def test_a_prompt_beyond_the_context_is_one_sentence_and_not_retried(vllm: RealVLLM) -> None:
    too_long = [HumanMessage("Describe the dissection. " * 700)]  # ~17.5k byte tokens
    with ScriptedVLLM(vllm, [qwen_reply("x")] * 3) as proxy:
        chat = chat_on(proxy, max_retries=2)
        with pytest.raises(BackendError) as caught:
            chat.invoke(too_long)
        tries = len(proxy.requests)
    message = str(caught.value)
    assert "HTTP 400" in message and f"maximum context length is {CONTEXT} tokens" in message
    assert "no longer fits the model's context" in message  # the real cause, not tool flags
    assert "\n" not in message
    assert tries == 1  # a 400 is final


def test_ask_runs_a_tool_loop_against_vllm(vllm: RealVLLM, tmp_path: Path) -> None:
    """The whole agent through `surgagent ask`: a guideline search, then a cited answer."""
    found: list[str] = []

    def script(body: dict[str, Any]) -> str:
        results = [m for m in body["messages"] if m["role"] == "tool"]
        if not results:
            return qwen_reply(
                thinking="Check the guideline first.",
                calls=[("search_guidelines", {"query": "critical view of safety"})],
            )
        quoted = json.dumps(results[-1]["content"])  # a string or content parts
        ids = re.findall(r'id=\\"([\w.\-]+)\\"', quoted)
        found.extend(ids)
        cite = f" [{ids[0]}]" if ids else ""
        return qwen_reply(
            f"Two structures must be seen entering the gallbladder{cite}.", thinking="Cite it."
        )

    with ScriptedVLLM(vllm, script) as proxy:
        env = {**openai_env(proxy, proxy.model), "SURGAGENT_PERCEPTION__ENABLED": "false"}
        done = run_cli(
            "ask", SAMPLE, "What must be seen before clipping?", "--json", env=env, timeout=300
        )
        requests = proxy.requests
    assert done.returncode == 0, done.stdout + done.stderr
    result = json.loads(done.stdout)
    assert result["status"] == "answered", result
    assert "Two structures must be seen" in result["answer"]
    assert found, "the tool result reached the planner with passage ids"
    assert len(requests) == 2
    assert requests[1]["messages"][-1]["role"] == "tool"


@tool
def look(times: list[str], detailed: bool = False, until: float | None = None) -> str:
    """Look at frames at ``times``; ``detailed`` for a closer look, ``until`` a time limit."""
    return ",".join(times)


def test_python_literals_in_parameters_come_back_typed(vllm: RealVLLM) -> None:
    """The template shows past scalars as Python (True, None); vLLM reads them by the schema."""
    text = qwen_reply(
        thinking="Closer.",
        calls=[("look", {"times": '["00:05"]', "detailed": "True", "until": "None"})],
    )
    with ScriptedVLLM(vllm, [text, text]) as proxy:
        chat = chat_on(proxy).bind_tools([look])
        whole, streamed = reply_of(chat, False), reply_of(chat, True)
    for reply in (whole, streamed):
        assert [c["args"] for c in reply.tool_calls] == [
            {"times": ["00:05"], "detailed": True, "until": None}
        ]


def test_images_inside_a_tool_result_are_read_by_vllm(vllm: RealVLLM) -> None:
    """vLLM parses image parts on a tool message: this text-only model refuses them by name."""
    from PIL import Image

    from surgagent.tools.vision import image_parts

    frame = image_parts([Image.new("RGB", (64, 64), (200, 30, 30))], 64)
    loop = [
        *QUESTION,
        AIMessage("", tool_calls=[{"name": "look", "args": {"times": ["00:05"]}, "id": "c1"}]),
        ToolMessage([{"type": "text", "text": "Showing 1 frame."}, *frame], tool_call_id="c1"),
    ]
    text_only = [*loop[:-1], ToolMessage("Showing 1 frame.", tool_call_id="c1")]
    with ScriptedVLLM(vllm, [qwen_reply("Seen.", thinking="ok")] * 2) as proxy:
        chat = chat_on(proxy).bind_tools([look])
        assert reply_of(chat, False, text_only).content == "Seen."  # the past call renders
        with pytest.raises(BackendError) as caught:
            chat.invoke(loop)
    assert "HTTP 400" in str(caught.value) and "multimodal" in str(caught.value)
    assert "takes no images" in str(caught.value)


def test_a_planner_without_vision_reads_frames_as_text(vllm: RealVLLM) -> None:
    """vision = auto: the first frames sent are refused by name, then never sent again."""

    def script(body: dict[str, Any]) -> str:
        if not any(m["role"] == "tool" for m in body["messages"]):
            return qwen_reply(thinking="Look.", calls=[("look_at_frames", {"times": ["00:03"]})])
        return qwen_reply("A grasper holds the gallbladder at [00:03].", thinking="Told so.")

    with ScriptedVLLM(vllm, script) as proxy:
        env = {
            **openai_env(proxy, proxy.model),
            "SURGAGENT_PERCEPTION__ENABLED": "false",
            "SURGAGENT_KNOWLEDGE__ENABLED": "false",
        }
        done = run_cli("ask", SAMPLE, "What is at 3 s?", "--json", env=env, timeout=300)
        requests = proxy.requests
    assert done.returncode == 0, done.stdout + done.stderr
    result = json.loads(done.stdout)
    assert result["status"] == "answered", result
    assert [item["time"] for item in result["evidence"]] == pytest.approx([3.0], abs=0.2)
    # Request 2 carried the frame inside the tool result and was refused; request 3 did not.
    assert len(requests) == 3
    refused, retried = requests[1]["messages"][-1], requests[2]["messages"][-1]
    assert isinstance(refused["content"], list)
    assert isinstance(retried["content"], str)
    assert "not shown to you: the planner model takes no images" in retried["content"]


def test_a_chat_that_outgrows_the_context_keeps_answering(vllm: RealVLLM) -> None:
    """Long questions on a 16k context: older turns are left out, and the trace says so.

    The estimate starts at four characters a token; this byte-level vocabulary spends one, so
    the first too-long prompt is refused by vLLM, whose count corrects the estimate.
    """
    from surgagent.agent.api import SurgicalAgent
    from surgagent.agent.settings import get_settings

    long = "Describe the dissection plane and every structure and instrument in view. " * 50

    def script(body: dict[str, Any]) -> str:
        asked = [m for m in body["messages"] if m["role"] == "user"][-1]["content"]
        number = re.search(r"Question (\d+)", str(asked))
        return qwen_reply(f"Answer {number.group(1) if number else '?'}.", thinking="Noted.")

    with ScriptedVLLM(vllm, script) as proxy:
        settings = get_settings(
            planner={"backend": "openai", "base_url": proxy.base_url, "model": proxy.model},
            perception={"enabled": False},
            knowledge={"enabled": False},
        )
        agent = SurgicalAgent.from_settings(settings)
        results = [
            agent.invoke(f"Question {n}: {long}", case=SAMPLE, thread_id="long") for n in range(6)
        ]
        statuses = [(r.status, r.answer) for r in results]
        sent = len(proxy.requests)
    assert statuses == [("answered", f"Answer {n}.") for n in range(6)]
    assert sent == 7  # one step refused as too long, then sent again, shortened
    notes = [s.summary for r in results for s in r.trace if "history shortened" in s.summary]
    assert notes and f"the planner's {CONTEXT:,}-token context" in notes[-1]
    assert sum(m.type == "human" for m in agent.history("long")) == 6  # all kept in the session


def _stream_shape(base_url: str, body: dict[str, Any]) -> list[Any]:
    """The streamed events' shapes: which delta fields are set, tool-call fields, finish."""
    import httpx

    shape: list[Any] = []
    with httpx.stream("POST", f"{base_url}/chat/completions", json=body, timeout=120) as reply:
        for line in reply.iter_lines():
            if not line.startswith("data: {"):
                shape += [line] if line else []
                continue
            event = json.loads(line.removeprefix("data: "))
            if not event["choices"]:
                shape.append(("usage", sorted(event["usage"])))
                continue
            choice = event["choices"][0]
            delta = choice["delta"]
            calls = [
                (sorted(call), sorted(k for k, v in call["function"].items() if v is not None))
                for call in delta.get("tool_calls") or []
            ]
            fields = sorted(k for k, v in delta.items() if v is not None)
            items = [(fields, calls, choice["finish_reason"])]
            if fields and choice["finish_reason"]:
                # When its tool parser lags (under load: several tokens per step), vLLM sends
                # the call's unstreamed remainder with the finish: the same stream, split.
                items = [(fields, calls, None), ([], [], choice["finish_reason"])]
            for item in items:
                if not shape or shape[-1] != item:
                    shape.append(item)
    return shape


def _whole_shape(base_url: str, body: dict[str, Any]) -> Any:
    import httpx

    body = {**body, "stream": False}
    body.pop("stream_options")
    reply = httpx.post(f"{base_url}/chat/completions", json=body, timeout=120).json()
    message = reply["choices"][0]["message"]
    shown = {k: v if isinstance(v, str) else type(v).__name__ for k, v in message.items()}
    shown.pop("tool_calls", None)
    return shown, sorted(reply["usage"])


@pytest.mark.parametrize("kind", ["answer", "tool call"])
def test_the_scripted_server_sends_what_vllm_sends(vllm: RealVLLM, kind: str) -> None:
    """The fault tests' scripted server keeps vLLM's shapes (fields, deltas, whitespace)."""
    from surgagent.agent.testing.openai_server import ScriptedOpenAIServer, ScriptedReply

    if kind == "answer":
        text = qwen_reply("Clipped.", thinking="Looking.")
        reply = ScriptedReply(content="Clipped.", reasoning="Looking.")
        extra: dict[str, Any] = {}
    else:
        text = qwen_reply(thinking="Look.", calls=[("look", {"times": ["00:05"]})])
        reply = ScriptedReply(reasoning="Look.", tool_calls=[("look", {"times": ["00:05"]})])
        extra = {"tools": [convert_to_openai_tool(look)]}
    body = {
        "model": SERVED,
        "messages": [{"role": "user", "content": "Which phase?"}],
        "stream": True,
        "stream_options": {"include_usage": True},
        **extra,
    }
    with (
        ScriptedVLLM(vllm, [text, text]) as real,
        ScriptedOpenAIServer([reply, reply], models=[SERVED], chunk_chars=1) as scripted,
    ):
        assert _stream_shape(scripted.base_url, body) == _stream_shape(real.base_url, body)
        assert _whole_shape(scripted.base_url, body) == _whole_shape(real.base_url, body)
