"""The openai backend against the scripted OpenAI-compatible server, over real loopback HTTP."""

from __future__ import annotations

import asyncio
import gc
import json
import socket
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest
from langchain_core.callbacks import BaseCallbackHandler
from langchain_core.messages import (
    AIMessage,
    AIMessageChunk,
    HumanMessage,
    SystemMessage,
    ToolMessage,
)
from langchain_core.tools import tool

from surgagent.agent.backends import load_backend
from surgagent.agent.backends._messages import REASONING_KEY
from surgagent.agent.backends.openai import OpenAIChat
from surgagent.agent.settings import ModelSettings, PerceptionSettings
from surgagent.agent.testing.openai_server import ScriptedOpenAIServer, ScriptedReply
from surgagent.tools.errors import BackendError, ConfigError

MODEL = "Qwen/Qwen3.5-9B"
QUESTION = [SystemMessage("You review surgical videos."), HumanMessage("Which phase is this?")]


@tool
def get_frame(time: str, side: int = 448) -> str:
    """Look at the frame at ``time`` (mm:ss), resized to ``side`` pixels."""
    return f"frame at {time}"


@tool
def find_phase(name: str) -> str:
    """Find when the phase ``name`` happens."""
    return name


def make_chat(server: ScriptedOpenAIServer | None = None, **overrides: Any) -> OpenAIChat:
    fields: dict[str, Any] = {"backend": "openai", "model": MODEL, "max_retries": 2}
    if server is not None:
        fields["base_url"] = server.base_url
    fields.update(overrides)
    return OpenAIChat(settings=ModelSettings(**fields), retry_backoff=0.01)


def streamed(chat: Any, messages: list[Any] = QUESTION, **kwargs: Any) -> AIMessageChunk:
    merged: AIMessageChunk | None = None
    for chunk in chat.stream(messages, **kwargs):
        merged = chunk if merged is None else merged + chunk
    assert isinstance(merged, AIMessageChunk)
    return merged


def reasoning(message: AIMessage) -> str | None:
    return message.additional_kwargs.get(REASONING_KEY)


def calls(message: AIMessage) -> list[tuple[str, dict[str, Any]]]:
    return [(call["name"], call["args"]) for call in message.tool_calls]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.fixture
def server() -> Iterator[ScriptedOpenAIServer]:
    with ScriptedOpenAIServer() as running:
        yield running


# -- replies ---------------------------------------------------------------------------------


def test_plain_answer(server: ScriptedOpenAIServer) -> None:
    server.add("This is Calot's triangle dissection.")
    reply = make_chat(server).invoke(QUESTION)
    assert reply.content == "This is Calot's triangle dissection."
    assert reply.tool_calls == [] and reasoning(reply) is None
    assert reply.response_metadata["finish_reason"] == "stop"
    assert reply.usage_metadata is not None and reply.usage_metadata["output_tokens"] > 0


def test_tool_calls_round_trip(server: ScriptedOpenAIServer) -> None:
    one = ("get_frame", {"time": "01:05", "side": 448})
    two = ("find_phase", {"name": "ClippingCutting"})
    server.add(ScriptedReply(tool_calls=[one]), ScriptedReply(tool_calls=[one, two]))
    chat = make_chat(server).bind_tools([get_frame, find_phase])
    single, parallel = chat.invoke(QUESTION), chat.invoke(QUESTION)
    assert calls(single) == [one]
    assert calls(parallel) == [one, two]
    assert len({call["id"] for call in parallel.tool_calls}) == 2
    assert parallel.response_metadata["finish_reason"] == "tool_calls"
    assert parallel.invalid_tool_calls == []


def test_bad_json_arguments_become_invalid_tool_calls(server: ScriptedOpenAIServer) -> None:
    server.add(ScriptedReply(tool_calls=[("get_frame", {"time": "00:10"}), ("get_frame", "{1:")]))
    reply = make_chat(server).invoke(QUESTION)
    assert calls(reply) == [("get_frame", {"time": "00:10"})]
    [bad] = reply.invalid_tool_calls
    assert bad["name"] == "get_frame" and bad["args"] == "{1:"
    assert bad["error"] and "not valid JSON" in bad["error"]


def test_streamed_and_whole_replies_treat_cut_arguments_alike() -> None:
    cut = '{"time": "00:1'  # a reply cut off inside its arguments
    script = [ScriptedReply(tool_calls=[("get_frame", {"time": "00:10"}), ("get_frame", cut)])]
    with ScriptedOpenAIServer(script * 2) as server:
        whole = make_chat(server).invoke(QUESTION)
        merged = streamed(make_chat(server))
    for reply in (whole, merged):
        assert calls(reply) == [("get_frame", {"time": "00:10"})]  # only the whole call runs
        (bad,) = reply.invalid_tool_calls
        assert bad["name"] == "get_frame"
        assert bad["args"] == cut or json.loads(bad["args"]) == cut  # the text as sent


REASONING_STYLES = {
    "reasoning": ScriptedReply(content="Phase 3.", reasoning="Clips are visible."),
    "reasoning_content": ScriptedReply(
        content="Phase 3.", reasoning="Clips are visible.", reasoning_field="reasoning_content"
    ),
    "inline": ScriptedReply(
        content="Phase 3.", reasoning="Clips are visible.", reasoning_field=None
    ),
    "inline-open-tag": ScriptedReply(
        content="Phase 3.",
        reasoning="Clips are visible.",
        reasoning_field=None,
        think_open_tag=True,
    ),
}


@pytest.mark.parametrize("style", list(REASONING_STYLES))
@pytest.mark.parametrize("thinking", [True, False])
def test_reasoning_is_kept_apart(style: str, thinking: bool) -> None:
    scripted = REASONING_STYLES[style]
    with ScriptedOpenAIServer([scripted, scripted]) as server:
        chat = make_chat(server, thinking=thinking)
        replies = [chat.invoke(QUESTION)]
        # With thinking off a stream cannot know that text before a lone </think> was
        # thinking until it is already sent; Qwen's template pre-fills the block then anyway.
        if thinking or style != "inline":
            replies.append(streamed(chat))
        for reply in replies:
            assert reply.content == "Phase 3."
            assert reasoning(reply) == "Clips are visible."


@pytest.mark.parametrize("tool_format", ["qwen_xml", "hermes"])
@pytest.mark.parametrize("reasoning_field", ["reasoning", None])
def test_tool_calls_left_in_content_are_parsed(
    tool_format: str, reasoning_field: str | None
) -> None:
    scripted = ScriptedReply(
        content="Let me look.",
        reasoning="I need a frame.",
        reasoning_field=reasoning_field,
        tool_calls=[("get_frame", {"time": "02:00", "side": 448})],
        tool_format=tool_format,
    )
    with ScriptedOpenAIServer([scripted, scripted]) as server:
        chat = make_chat(server).bind_tools([get_frame])
        for reply in (chat.invoke(QUESTION), streamed(chat)):
            assert "<tool_call>" not in reply.content and reply.content == "Let me look."
            assert calls(reply) == [("get_frame", {"time": "02:00", "side": 448})]
            assert reasoning(reply) == "I need a frame."


# -- streaming -------------------------------------------------------------------------------

STREAM_CASES = {
    "answer": ScriptedReply(content="The gallbladder is being retracted now.", usage=(40, 9)),
    "thinking": ScriptedReply(content="Phase 4.", reasoning="The hook dissects; no clips."),
    "tools": ScriptedReply(
        content="Checking two frames.",
        reasoning="Compare before and after.",
        tool_calls=[
            ("get_frame", {"time": "00:30"}),
            ("get_frame", {"time": "01:30", "side": 320}),
        ],
    ),
    "inline": ScriptedReply(content="Phase 2.", reasoning="Dissection.", reasoning_field=None),
}


class TokenCounter(BaseCallbackHandler):
    def __init__(self) -> None:
        self.tokens: list[str] = []

    def on_llm_new_token(self, token: str, **kwargs: Any) -> None:
        self.tokens.append(token)


@pytest.mark.parametrize("case", list(STREAM_CASES))
def test_stream_merges_to_the_same_message(case: str) -> None:
    scripted = STREAM_CASES[case]
    with ScriptedOpenAIServer([scripted] * 3, chunk_chars=3) as server:
        chat = make_chat(server).bind_tools([get_frame])
        whole = chat.invoke(QUESTION)
        counter = TokenCounter()
        pieces = list(chat.stream(QUESTION, config={"callbacks": [counter]}))
        merged = streamed(chat)
        assert server.requests[1]["stream"] is True
        assert server.requests[1]["stream_options"] == {"include_usage": True}
    assert merged.content == whole.content
    assert reasoning(merged) == reasoning(whole)
    assert calls(merged) == calls(whole)
    assert merged.usage_metadata == whole.usage_metadata
    assert merged.response_metadata["finish_reason"] == whole.response_metadata["finish_reason"]
    # Text really arrives in pieces, and each piece reaches the callbacks.
    assert sum(1 for piece in pieces if piece.content) > 1
    assert "".join(counter.tokens) == whole.content


def test_stream_learns_whether_thinking_is_inline() -> None:
    answer = ScriptedReply(content="The clip is on the cystic duct.")
    raw = ScriptedReply(content="Phase 5.", reasoning="The bag is out; " * 4, reasoning_field=None)
    with ScriptedOpenAIServer([answer] * 2, chunk_chars=4) as parsed_server:
        chat = make_chat(parsed_server, thinking=True)
        # Unknown server, thinking on, no reasoning field: the answer is not taken for thinking.
        first = streamed(chat)
        assert first.content == answer.content and reasoning(first) is None
        pieces = list(chat.stream(QUESTION))
        assert sum(1 for piece in pieces if piece.content) > 1
    with ScriptedOpenAIServer([raw] * 2, chunk_chars=4) as raw_server:
        chat = make_chat(raw_server, thinking=True)
        first = streamed(chat)
        assert (first.content, reasoning(first)) == ("Phase 5.", raw.reasoning.strip())
        pieces = list(chat.stream(QUESTION))
        live = [piece for piece in pieces if piece.additional_kwargs.get(REASONING_KEY)]
        assert len(live) > 1  # known to think inline: thinking now streams as it comes


def test_cut_off_inline_thinking_stays_thinking() -> None:
    replies = [
        ScriptedReply(content="Phase 1.", reasoning="Trocars only.", reasoning_field=None),
        ScriptedReply(content="The hook is near the", reasoning_field=None, finish_reason="length"),
    ]
    with ScriptedOpenAIServer(replies) as server:
        chat = make_chat(server, thinking=True)
        assert chat.invoke(QUESTION).content == "Phase 1."
        cut = chat.invoke(QUESTION)
    assert cut.content == "" and reasoning(cut) == "The hook is near the"
    assert cut.response_metadata["finish_reason"] == "length"


def test_async_invoke_and_stream_match_sync() -> None:
    scripted = STREAM_CASES["tools"]
    with ScriptedOpenAIServer([scripted] * 3) as server:
        chat = make_chat(server)

        async def both() -> tuple[Any, AIMessageChunk]:
            whole = await chat.ainvoke(QUESTION)
            merged: Any = None
            async for chunk in chat.astream(QUESTION):
                merged = chunk if merged is None else merged + chunk
            return whole, merged

        whole, merged = asyncio.run(both())
        sync = chat.invoke(QUESTION)
    for reply in (whole, merged):
        assert reply.content == sync.content and reasoning(reply) == reasoning(sync)
        assert calls(reply) == calls(sync)


@pytest.mark.parametrize("inline", [None, True, False], ids=["unknown", "inline", "fielded"])
def test_reading_a_long_stream_costs_the_same_per_chunk(inline: bool | None) -> None:
    """Twice the chunks take about twice the time: nothing rescans or copies what came before.

    Long inline thinking with the server's habit unknown is the case that once grew
    quadratically (all content held and searched again for ``</think>`` on every chunk).
    """
    from openai.types.chat import ChatCompletionChunk

    from surgagent.agent.backends.openai import _ChunkReader

    def chunk(text: str, finish: str | None = None) -> ChatCompletionChunk:
        return ChatCompletionChunk.model_validate(
            {
                "id": "c",
                "object": "chat.completion.chunk",
                "created": 0,
                "model": MODEL,
                "choices": [{"index": 0, "delta": {"content": text}, "finish_reason": finish}],
            }
        )

    piece = chunk("The hook is above the cystic duct; " * 2)  # one chunk: 70 characters

    def read_seconds(count: int) -> float:
        best = float("inf")
        for _ in range(3):
            reader = _ChunkReader(thinking=True, inline=inline, tools=None)
            gc.collect()
            start = time.perf_counter()
            texts = [str(message.content) for _ in range(count) for message in reader.read(piece)]
            end = reader.read(chunk("</think>The duct is clipped.", finish="stop")) + reader.end()
            text = "".join(texts + [str(message.content) for message in end])
            best = min(best, time.perf_counter() - start)
        assert text.endswith("The duct is clipped.")
        return best

    small, large = read_seconds(5_000), read_seconds(20_000)  # 0.35 MB and 1.4 MB of text
    # Linear is 4x; the quadratic reading this guards against took 16x and more.
    assert large / small < 8, f"4x the chunks took {large / small:.1f}x the time"


def test_one_huge_streamed_chunk_is_read_at_once() -> None:
    thinking = "The hook is above the cystic duct. " * 240_000  # 8.4 MB in a single delta
    reply = ScriptedReply(content="Clipped.", reasoning=thinking, reasoning_field=None)
    with ScriptedOpenAIServer([reply], chunk_chars=10**9) as server:
        chat = make_chat(server, thinking=True, timeout=60)
        start = time.perf_counter()
        merged = streamed(chat)
        elapsed = time.perf_counter() - start
    assert merged.content == "Clipped." and reasoning(merged) == thinking.strip()
    assert elapsed < 15, f"{elapsed:.0f} s for one 8 MB chunk"  # seconds at most, not minutes


@pytest.mark.parametrize("stream", [False, True], ids=["whole", "streamed"])
def test_arguments_nested_too_deep_are_an_invalid_call(stream: bool) -> None:
    reply = ScriptedReply(tool_calls=[("get_frame", "[" * 100_000)])
    with ScriptedOpenAIServer([reply]) as server:
        chat = make_chat(server).bind_tools([get_frame])
        message = streamed(chat) if stream else chat.invoke(QUESTION)
    assert message.tool_calls == [] and len(message.invalid_tool_calls) == 1


def test_stream_broken_midway_raises() -> None:
    with ScriptedOpenAIServer([ScriptedReply(content="x" * 80, break_after=4)]) as server:
        with pytest.raises(BackendError, match="broke off its reply after"):
            streamed(make_chat(server))
        assert len(server.requests) == 1  # chunks were already passed on: no retry


def test_a_body_that_is_not_json_is_a_backend_error() -> None:
    replies = [ScriptedReply(garbage=True)] * 2 + [ScriptedReply(content="Clipping.")]
    with ScriptedOpenAIServer(replies) as server:
        assert make_chat(server).invoke(QUESTION).content == "Clipping."  # retried, then fine
    with ScriptedOpenAIServer([ScriptedReply(garbage=True)] * 3) as server:
        with pytest.raises(BackendError) as raised:
            make_chat(server).invoke(QUESTION)
    assert f"endpoint {server.base_url} answered with a body that is not JSON (3 tries)" in str(
        raised.value
    )


def test_a_stream_line_that_is_not_json_is_a_backend_error() -> None:
    with ScriptedOpenAIServer([ScriptedReply(content="x" * 80, garbage=True)]) as server:
        with pytest.raises(BackendError, match="it sent a line that is not JSON"):
            streamed(make_chat(server))


def test_stream_dropped_before_first_chunk_is_retried() -> None:
    replies = [ScriptedReply(break_after=0), ScriptedReply(content="Clipping.")]
    with ScriptedOpenAIServer(replies) as server:
        assert streamed(make_chat(server)).content == "Clipping."
        assert len(server.requests) == 2


# -- request body ----------------------------------------------------------------------------


def test_request_carries_tools_thinking_and_earlier_reasoning(server: ScriptedOpenAIServer) -> None:
    server.add("a", "b")
    earlier = AIMessage(
        content="",
        additional_kwargs={REASONING_KEY: "Start at the clips."},
        tool_calls=[{"name": "get_frame", "args": {"time": "00:05"}, "id": "call_1"}],
    )
    history = [*QUESTION, earlier, ToolMessage("frame at 00:05", tool_call_id="call_1")]
    chat = make_chat(server, temperature=0.3, max_tokens=100)
    chat.bind_tools([get_frame]).invoke(history)
    chat.invoke(QUESTION, thinking=False, max_tokens=7)
    with_tools, plain = server.requests
    assert with_tools["model"] == MODEL and with_tools["tool_choice"] == "auto"
    assert [t["function"]["name"] for t in with_tools["tools"]] == ["get_frame"]
    assert with_tools["chat_template_kwargs"] == {"enable_thinking": True}
    assert with_tools["temperature"] == 0.3 and with_tools["max_tokens"] == 100
    assistant = with_tools["messages"][2]
    assert assistant["reasoning"] == "Start at the clips."
    assert json.loads(assistant["tool_calls"][0]["function"]["arguments"]) == {"time": "00:05"}
    assert with_tools["messages"][3] == {
        "role": "tool", "tool_call_id": "call_1", "name": "", "content": "frame at 00:05"
    }  # fmt: skip
    assert plain["chat_template_kwargs"] == {"enable_thinking": False}
    assert plain["max_tokens"] == 7 and "tools" not in plain and "stream" not in plain


def test_answer_sends_images_and_reports_usage(server: ScriptedOpenAIServer) -> None:
    from PIL import Image

    server.add(ScriptedReply(content=" Two graspers. ", usage=(300, 4)))
    settings = PerceptionSettings(backend="openai", model=MODEL, base_url=server.base_url)
    vision = load_backend(settings, role="perception")
    frames = [Image.new("RGB", (640, 360), "red"), Image.new("RGB", (320, 180), "blue")]
    answer = vision.answer(frames, "Which instruments are visible?")
    assert answer.text == "Two graspers."
    assert (answer.usage.prompt_tokens, answer.usage.completion_tokens) == (300, 4)
    assert answer.usage.images == 2
    [request] = server.requests
    parts = request["messages"][0]["content"]
    assert [part["type"] for part in parts] == ["image_url", "image_url", "text"]
    assert parts[0]["image_url"]["url"].startswith("data:image/jpeg;base64,")
    assert request["chat_template_kwargs"] == {"enable_thinking": False}
    assert request["max_tokens"] == settings.max_tokens


def test_usage_is_reported(server: ScriptedOpenAIServer) -> None:
    server.add(ScriptedReply(content="ok", usage=(1200, 35)))
    reply = make_chat(server).invoke(QUESTION)
    assert reply.usage_metadata == {"input_tokens": 1200, "output_tokens": 35, "total_tokens": 1235}


def test_callable_script_answers_by_question() -> None:
    def answer(request: dict[str, Any]) -> str:
        return f"echo: {request['messages'][-1]['content']}"

    with ScriptedOpenAIServer(answer) as server:
        chat = make_chat(server)
        assert chat.invoke([HumanMessage("first")]).content == "echo: first"
        assert chat.invoke([HumanMessage("second")]).content == "echo: second"


# -- failures --------------------------------------------------------------------------------


@pytest.mark.parametrize("status", [503, 429])
def test_transient_status_is_retried(status: int) -> None:
    with ScriptedOpenAIServer([ScriptedReply(status=status), "recovered"]) as server:
        assert make_chat(server).invoke(QUESTION).content == "recovered"
        assert len(server.requests) == 2


def test_server_error_forever_gives_up_after_max_retries() -> None:
    failing = [ScriptedReply(status=500, error="CUDA out of memory")] * 5
    with ScriptedOpenAIServer(failing) as server:
        with pytest.raises(BackendError) as caught:
            make_chat(server, max_retries=2).invoke(QUESTION)
        assert len(server.requests) == 3
    message = str(caught.value)
    assert server.base_url in message and "HTTP 500" in message
    assert "CUDA out of memory" in message and "3 tries" in message


def test_bad_request_is_not_retried(server: ScriptedOpenAIServer) -> None:
    server.add(
        ScriptedReply(status=400, error='"auto" tool choice requires --enable-auto-tool-choice')
    )
    with pytest.raises(BackendError, match="HTTP 400") as caught:
        make_chat(server).invoke(QUESTION)
    assert len(server.requests) == 1 and caught.value.retryable is False
    assert "1 try" in str(caught.value)


def test_hanging_server_times_out() -> None:
    with ScriptedOpenAIServer([ScriptedReply(hang=True)] * 2) as server:
        chat = make_chat(server, timeout=0.5, max_retries=1)
        start = time.perf_counter()
        with pytest.raises(
            BackendError, match=r"stopped answering: nothing came within 0\.5 s \(2 tries\)"
        ):
            chat.invoke(QUESTION)
        assert time.perf_counter() - start < 3.0
        assert len(server.requests) == 2


@pytest.mark.parametrize("stream", [False, True], ids=["whole", "streamed"])
@pytest.mark.parametrize("mode", ["sync", "async"])
def test_a_long_wait_is_reported_while_it_lasts(
    stream: bool, mode: str, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    from surgagent.agent.backends import openai as backend

    monkeypatch.setattr(backend, "NOTICE_AFTER", 0.3)
    monkeypatch.setattr(backend, "NOTICE_EVERY", 0.4)
    with ScriptedOpenAIServer([ScriptedReply(hang=True)]) as server:
        chat = make_chat(server, timeout=1.3, max_retries=0)

        async def asked() -> Any:
            if stream:
                return [chunk async for chunk in chat.astream(QUESTION)]
            return await chat.ainvoke(QUESTION)

        with pytest.raises(BackendError, match="stopped answering"):
            if mode == "async":
                asyncio.run(asked())
            else:
                streamed(chat) if stream else chat.invoke(QUESTION)
    waits = [r.getMessage() for r in caplog.records if "without a reply" in r.getMessage()]
    assert len(waits) == 3  # at 0.3, 0.7 and 1.1 s
    assert waits[0].startswith(f"waiting for the planner at {server.base_url}: 0 s")
    assert "gives up at 1.3 s" in waits[-1]


@pytest.mark.parametrize("stream", [False, True], ids=["whole", "streamed"])
@pytest.mark.parametrize("mode", ["sync", "async"])
def test_timeout_is_a_deadline_for_the_whole_request(stream: bool, mode: str) -> None:
    # A keep-alive every 0.1 s restarts any per-read timeout; the deadline must still hold.
    with ScriptedOpenAIServer([ScriptedReply(content="x" * 40, trickle=0.1)] * 2) as server:
        chat = make_chat(server, timeout=0.8, max_retries=1)

        async def whole_async() -> Any:
            if stream:
                return [chunk async for chunk in chat.astream(QUESTION)]
            return await chat.ainvoke(QUESTION)

        start = time.perf_counter()
        with pytest.raises(BackendError) as raised:
            if mode == "async":
                asyncio.run(whole_async())
            elif stream:
                streamed(chat)
            else:
                chat.invoke(QUESTION)
        took = time.perf_counter() - start
    message = str(raised.value)
    if stream:  # the first chunk was passed on: no retry, the reply is reported broken off
        assert "broke off its reply after 1 streamed chunks (it did not finish within 0.8 s)" in (
            message
        )
        assert took < 0.8 + 1.0
    else:
        assert "stopped answering: nothing came within 0.8 s (2 tries)" in message
        assert took < 2 * 0.8 + 1.0


def test_endpoint_down_fails_fast() -> None:
    chat = make_chat(base_url=f"http://127.0.0.1:{free_port()}/v1")
    start = time.perf_counter()
    with pytest.raises(ConfigError, match="cannot be reached"):
        chat.check()
    assert time.perf_counter() - start < 1.0
    start = time.perf_counter()
    with pytest.raises(BackendError, match="could not be reached"):
        chat.invoke(QUESTION)
    assert time.perf_counter() - start < 2.0


def test_missing_base_url_names_the_env_var() -> None:
    with pytest.raises(ConfigError, match="SURGAGENT_PLANNER__BASE_URL=http://host:8000/v1"):
        make_chat().check()
    perception = load_backend(PerceptionSettings(backend="openai"), role="perception")
    with pytest.raises(ConfigError, match="SURGAGENT_PERCEPTION__BASE_URL"):
        perception.check()


def test_unknown_model_lists_the_served_ones() -> None:
    with ScriptedOpenAIServer(models=["Qwen/Qwen3.5-9B", "surgvlm-7b"]) as server:
        chat = make_chat(server, model="Qwen/Qwen3.5-9b")
        with pytest.raises(ConfigError) as caught:
            chat.check()
        message = str(caught.value)
        assert "Qwen/Qwen3.5-9B, surgvlm-7b" in message
        assert "Did you mean 'Qwen/Qwen3.5-9B'?" in message
        assert "SURGAGENT_PLANNER__MODEL" in message
        with pytest.raises(BackendError, match="HTTP 404"):
            chat.invoke(QUESTION)
        make_chat(server).check()  # the served id passes


def test_api_key_is_sent_and_checked() -> None:
    with ScriptedOpenAIServer(["with key"], api_key="sekret") as server:
        with pytest.raises(ConfigError, match="SURGAGENT_PLANNER__API_KEY"):
            make_chat(server).check()
        keyed = make_chat(server, api_key="sekret")
        keyed.check()
        assert keyed.invoke(QUESTION).content == "with key"


def test_base_url_that_is_not_openai_compatible() -> None:
    with ScriptedOpenAIServer() as server:
        wrong = make_chat(base_url=server.base_url.removesuffix("/v1"))
        with pytest.raises(ConfigError, match="ending in /v1"):
            wrong.check()


def test_failing_script_function_is_reported() -> None:
    def broken(request: dict[str, Any]) -> str:
        raise KeyError("no answer for this question")

    with ScriptedOpenAIServer(broken) as server:
        with pytest.raises(BackendError, match="reply function raised KeyError"):
            make_chat(server, max_retries=0).invoke(QUESTION)


def test_exhausted_script_says_so(server: ScriptedOpenAIServer) -> None:
    with pytest.raises(BackendError, match="no reply left"):
        make_chat(server, max_retries=0).invoke(QUESTION)


# -- concurrency -----------------------------------------------------------------------------


def test_parallel_requests_overlap() -> None:
    with ScriptedOpenAIServer(lambda request: "ok", latency=0.2) as server:
        chat = make_chat(server)
        start = time.perf_counter()
        with ThreadPoolExecutor(16) as pool:
            replies = list(pool.map(lambda _: chat.invoke(QUESTION), range(16)))
        threaded = time.perf_counter() - start

        async def gather() -> list[Any]:
            return await asyncio.gather(*(chat.ainvoke(QUESTION) for _ in range(16)))

        start = time.perf_counter()
        areplies = asyncio.run(gather())
        concurrent = time.perf_counter() - start
    assert [r.content for r in replies + areplies] == ["ok"] * 32
    assert threaded < 16 * 0.2 / 2 and concurrent < 16 * 0.2 / 2
    assert server.peak_concurrency >= 8


def test_max_concurrency_queues_requests() -> None:
    with ScriptedOpenAIServer(lambda request: "ok", latency=0.2, max_concurrency=2) as server:
        chat = make_chat(server)
        start = time.perf_counter()
        with ThreadPoolExecutor(4) as pool:
            list(pool.map(lambda _: chat.invoke(QUESTION), range(4)))
        elapsed = time.perf_counter() - start
    assert server.peak_concurrency == 2
    assert elapsed >= 0.4


def test_tokens_stream_through_langgraph() -> None:
    from langgraph.graph import END, START, MessagesState, StateGraph

    scripted = ScriptedReply(content="Clipping and cutting.", reasoning="Clips on the duct.")
    with ScriptedOpenAIServer([scripted], chunk_chars=4) as server:
        chat = make_chat(server)

        def plan(state: MessagesState) -> dict[str, Any]:
            return {"messages": [chat.invoke(state["messages"])]}

        builder = StateGraph(MessagesState)
        builder.add_node("plan", plan)
        builder.add_edge(START, "plan")
        builder.add_edge("plan", END)
        graph = builder.compile()
        pieces = [
            chunk
            for chunk, _ in graph.stream({"messages": QUESTION}, stream_mode="messages")
            if isinstance(chunk, AIMessageChunk)
        ]
    texts = [piece.content for piece in pieces if piece.content]
    thoughts = [piece.additional_kwargs.get(REASONING_KEY, "") for piece in pieces]
    assert len(texts) > 1 and "".join(texts) == "Clipping and cutting."
    assert "".join(thoughts) == "Clips on the duct."
