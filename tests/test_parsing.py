"""Parsing raw Qwen completions: thinking, qwen3_coder XML and hermes JSON tool calls, streaming."""

from __future__ import annotations

import json
import random
import re

import pytest
from langchain_core.messages import AIMessage, AIMessageChunk

from surgagent.agent.backends._messages import REASONING_KEY
from surgagent.agent.backends._parsing import (
    StreamSplitter,
    invalid_call_error,
    parse_reply,
    parse_tool_calls,
)
from surgagent.tools.answers import split_thinking


def xml_call(name: str, **params: object) -> str:
    body = ""
    for key, value in params.items():
        text = value if isinstance(value, str) else json.dumps(value)
        body += f"<parameter={key}>\n{text}\n</parameter>\n"
    return f"<tool_call>\n<function={name}>\n{body}</function>\n</tool_call>"


def hermes_call(name: str, **args: object) -> str:
    return f"<tool_call>\n{json.dumps({'name': name, 'arguments': args})}\n</tool_call>"


# --- split_thinking -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (
            "<think>\nlook at frame 3\n</think>\n\nIt is phase 2.",
            ("look at frame 3", "It is phase 2."),
        ),
        ("look at frame 3\n</think>\n\nIt is phase 2.", ("look at frame 3", "It is phase 2.")),
        ("  It is phase 2.\n", ("", "It is phase 2.")),
        ("<think>\nstill thinking about", ("still thinking about", "")),
        ("<think>\n\n</think>\n\nOnly an answer.", ("", "Only an answer.")),
        ("", ("", "")),
    ],
    ids=["both-tags", "closing-only", "no-thinking", "unclosed", "empty-think", "empty"],
)
def test_split_thinking_forms(text: str, expected: tuple[str, str]) -> None:
    assert split_thinking(text) == expected


def test_split_thinking_prompt_opened_block_without_close_is_all_reasoning() -> None:
    text = "the clip is applied at 01:10 and"
    assert split_thinking(text, thinking=True) == (text, "")
    assert split_thinking(text, thinking=False) == ("", text)


# --- parse_tool_calls -----------------------------------------------------------------------


def test_xml_call_values_are_read_as_json_where_they_parse() -> None:
    text = xml_call(
        "look_at_frames", times=["00:05", "01:10"], count=3, detail=True, region={"x": 0.5}
    )
    text = text.replace(
        "<parameter=count>", "<parameter=note>\nkeep this text\n</parameter>\n<parameter=count>"
    )
    parsed = parse_tool_calls(text)
    assert parsed.content == ""
    assert parsed.invalid_tool_calls == []
    [call] = parsed.tool_calls
    assert call["name"] == "look_at_frames"
    assert call["args"] == {
        "times": ["00:05", "01:10"],
        "note": "keep this text",
        "count": 3,
        "detail": True,
        "region": {"x": 0.5},
    }
    assert re.fullmatch(r"call_[0-9a-f]{8}", call["id"] or "")


def test_multiline_parameter_keeps_inner_newlines() -> None:
    text = xml_call("note", text="line one\nline two")
    [call] = parse_tool_calls(text).tool_calls
    assert call["args"] == {"text": "line one\nline two"}


def test_several_calls_and_text_outside_them() -> None:
    text = (
        "I will check two moments.\n"
        + xml_call("get_frame", time="00:05")
        + "\n"
        + hermes_call("search_guidelines", query="critical view of safety")
        + "\nthen decide."
    )
    parsed = parse_tool_calls(text)
    assert [c["name"] for c in parsed.tool_calls] == ["get_frame", "search_guidelines"]
    assert parsed.tool_calls[0]["args"] == {"time": "00:05"}
    assert parsed.tool_calls[1]["args"] == {"query": "critical view of safety"}
    assert parsed.content == "I will check two moments.\n\nthen decide."
    ids = [c["id"] for c in parsed.tool_calls]
    assert len(set(ids)) == len(ids)


def test_hermes_arguments_given_as_a_json_string() -> None:
    body = json.dumps({"name": "get_frame", "arguments": json.dumps({"time": 12})})
    [call] = parse_tool_calls(f"<tool_call>{body}</tool_call>").tool_calls
    assert call["args"] == {"time": 12}


def test_string_parameters_stay_strings_when_the_schema_says_so() -> None:
    tools = [
        {
            "type": "function",
            "function": {
                "name": "search_guidelines",
                "parameters": {
                    "type": "object",
                    "properties": {
                        "query": {"type": "string"},
                        "top_k": {"type": "integer"},
                        "time": {"anyOf": [{"type": "string"}, {"type": "number"}]},
                    },
                },
            },
        }
    ]
    text = xml_call("search_guidelines", query="2017", top_k="3", time="75")
    [call] = parse_tool_calls(text, tools=tools).tool_calls
    assert call["args"] == {"query": "2017", "top_k": 3, "time": 75}
    [untyped] = parse_tool_calls(text).tool_calls
    assert untyped["args"]["query"] == 2017


def test_python_literals_the_template_taught_are_read_as_values() -> None:
    """Qwen3.5 renders past scalar arguments with Jinja's ``string``: True, None, ['a']."""
    tools = [
        {
            "type": "function",
            "function": {
                "name": "look_at_frames",
                "parameters": {
                    "type": "object",
                    "properties": {
                        "times": {"type": "array", "items": {"type": "string"}},
                        "detailed": {"type": "boolean"},
                        "until": {"anyOf": [{"type": "number"}, {"type": "null"}]},
                        "note": {"type": "string"},
                    },
                },
            },
        }
    ]
    text = xml_call(
        "look_at_frames", times="['00:05', '00:10']", detailed="True", until="None", note="True"
    )
    [call] = parse_tool_calls(text, tools=tools).tool_calls
    assert call["args"] == {
        "times": ["00:05", "00:10"],
        "detailed": True,
        "until": None,
        "note": "True",  # a string parameter keeps what was written
    }
    # Python that is not a plain value stays the text it was (the tool then rejects it).
    [odd] = parse_tool_calls(xml_call("look_at_frames", until="{1, 2}")).tool_calls
    assert odd["args"] == {"until": "{1, 2}"}


def test_bare_function_block_without_wrapper_is_a_call() -> None:
    text = "Checking.\n<function=get_frame>\n<parameter=time>\n00:07\n</parameter>\n</function>"
    parsed = parse_tool_calls(text)
    assert [(c["name"], c["args"]) for c in parsed.tool_calls] == [("get_frame", {"time": "00:07"})]
    assert parsed.content == "Checking."


@pytest.mark.parametrize(
    ("text", "name", "phrase"),
    [
        (
            '<tool_call>\n{"name": "get_frame", "arguments": {"time": }\n</tool_call>',
            "get_frame",
            "not valid JSON",
        ),
        ('<tool_call>\n{"arguments": {"time": 3}}\n</tool_call>', None, "no function name"),
        (
            "<tool_call>\n<function=>\n<parameter=t>\n1\n</parameter>\n</function>\n</tool_call>",
            None,
            "no name",
        ),
        ("<tool_call>\n<parameter=t>\n1\n</parameter>\n</tool_call>", None, "names no function"),
        ("<tool_call>\n<function=get_frame>\n<parameter=time>\n00:0", None, "cut off"),
        (
            '<tool_call>{"name": "get_frame", "arguments": [1, 2]}</tool_call>',
            "get_frame",
            "not an object",
        ),
    ],
    ids=["bad-json", "json-no-name", "xml-empty-name", "xml-no-function", "unclosed", "args-list"],
)
def test_malformed_calls_become_invalid_with_an_actionable_error(
    text: str, name: str | None, phrase: str
) -> None:
    parsed = parse_tool_calls("Let me look. " + text)
    assert parsed.tool_calls == []
    [bad] = parsed.invalid_tool_calls
    assert bad["name"] == name
    assert phrase in (bad["error"] or "")
    assert "<tool_call>" in (bad["error"] or "")  # tells the model the format to use
    assert bad["args"] and bad["args"].strip() in text
    assert re.fullmatch(r"call_[0-9a-f]{8}", bad["id"] or "")
    assert parsed.content == "Let me look."


def test_invalid_calls_survive_a_streamed_merge_with_their_error_recoverable() -> None:
    text = (
        xml_call("get_frame", time="00:05")
        + '<tool_call>{"name": "x", "arguments": {"a": 1</tool_call>'
    )
    parsed = parse_tool_calls(text)
    [bad] = parsed.invalid_tool_calls
    assert (bad["args"] or "").startswith("<tool_call>")  # never partial JSON
    head = AIMessageChunk(content="Checking.")
    tail = AIMessageChunk(
        content="", tool_calls=parsed.tool_calls, invalid_tool_calls=parsed.invalid_tool_calls
    )
    merged = head + tail
    assert [c["name"] for c in merged.tool_calls] == ["get_frame"]
    [kept] = merged.invalid_tool_calls
    assert kept["error"] is None  # LangChain's merge drops it ...
    assert invalid_call_error(kept) == bad["error"]  # ... and it can be derived again
    assert invalid_call_error(bad) == bad["error"]
    generic = {"type": "invalid_tool_call", "name": "x", "args": "??", "id": "1", "error": None}
    assert "'x'" in invalid_call_error(generic)  # type: ignore[arg-type]


def test_valid_call_next_to_a_malformed_one_is_kept() -> None:
    text = xml_call("get_frame", time="00:05") + '<tool_call>{"name": "x", </tool_call>'
    parsed = parse_tool_calls(text)
    assert [c["name"] for c in parsed.tool_calls] == ["get_frame"]
    assert len(parsed.invalid_tool_calls) == 1


def test_plain_text_has_no_calls() -> None:
    parsed = parse_tool_calls("  The gallbladder is retracted.  ")
    assert parsed == ("The gallbladder is retracted.", [], [])


# --- parse_reply ----------------------------------------------------------------------------


def test_parse_reply_builds_the_message() -> None:
    text = "Need a frame first.\n</think>\n\nChecking." + xml_call("get_frame", time="00:05")
    reply = parse_reply(text, usage={"input_tokens": 120, "output_tokens": 30})
    assert isinstance(reply, AIMessage)
    assert reply.content == "Checking."
    assert reply.additional_kwargs[REASONING_KEY] == "Need a frame first."
    assert reply.tool_calls[0]["args"] == {"time": "00:05"}
    assert reply.usage_metadata == {"input_tokens": 120, "output_tokens": 30, "total_tokens": 150}


def test_parse_reply_without_thinking_or_usage() -> None:
    reply = parse_reply(
        "Phase: ClippingCutting", usage={"prompt_tokens": 5, "completion_tokens": 2}
    )
    assert reply.content == "Phase: ClippingCutting"
    assert REASONING_KEY not in reply.additional_kwargs
    assert reply.usage_metadata is not None and reply.usage_metadata["total_tokens"] == 7
    assert parse_reply("x").usage_metadata is None


def test_calls_inside_thinking_are_not_executed() -> None:
    text = "maybe " + xml_call("get_frame", time="1") + "\n</think>\n\nNo tool needed."
    reply = parse_reply(text)
    assert reply.tool_calls == []
    assert reply.content == "No tool needed."


# --- StreamSplitter -------------------------------------------------------------------------

STREAM_CASES = [
    (True, "The hook is near the cystic duct.\n</think>\n\nIt is **Calot** dissection."),
    (
        True,
        "I need a frame.\n</think>\n\nLet me check.\n"
        + xml_call("get_frame", time="00:05")
        + "\n"
        + xml_call("detect", classes=["hook"]),
    ),
    (True, "cut off while thinking <tool"),
    (False, "It is phase 3 < phase 4, see <tool_response> notes."),
    (False, "<think>\nquick check\n</think>\n\nAnswer: Preparation"),
    (False, "Calling.\n" + hermes_call("search_guidelines", query="cvs") + "\ntrailing words"),
    (False, "Calling.\n<function=get_frame>\n<parameter=time>\n3\n</parameter>\n</function>"),
    (False, "  \n "),
    (False, "<thin"),
    (True, "<think>\nfirst <think> again\n</think>\n\nanswer </think> stray"),
]


def chunkings(text: str, seed: int) -> list[list[str]]:
    rng = random.Random(seed)
    out = [list(text), [text]]
    for _ in range(4):
        pieces, i = [], 0
        while i < len(text):
            n = rng.randint(1, 7)
            pieces.append(text[i : i + n])
            i += n
        out.append(pieces)
    return out


@pytest.mark.parametrize(("thinking", "text"), STREAM_CASES)
def test_stream_deltas_add_up_to_the_full_parse(thinking: bool, text: str) -> None:
    expected = parse_reply(text, thinking=thinking)
    for pieces in chunkings(text, seed=len(text)):
        splitter = StreamSplitter(thinking)
        events = [event for piece in pieces for event in splitter.feed(piece)]
        events += splitter.flush()
        reasoning = "".join(t for kind, t in events if kind == "reasoning")
        content = "".join(t for kind, t in events if kind == "content")
        assert reasoning == expected.additional_kwargs.get(REASONING_KEY, "")
        assert content == expected.content
        for _, piece in events:
            assert piece
            for tag in ("<tool_call>", "</tool_call>", "<function=", "<think>", "</think>"):
                assert tag not in piece or tag in reasoning + content  # only where the parse has it
        final = splitter.finish(usage={"input_tokens": 1, "output_tokens": 2})
        assert final.content == expected.content
        assert [(c["name"], c["args"]) for c in final.tool_calls] == [
            (c["name"], c["args"]) for c in expected.tool_calls
        ]
        assert final.usage_metadata is not None


def test_stream_holds_back_a_partial_tag_until_it_is_resolved() -> None:
    splitter = StreamSplitter(False)
    assert splitter.feed("Let me check.\n<tool_") == [("content", "Let me check.")]
    assert splitter.feed("call>\n<function=get_frame>") == []
    assert splitter.feed("\n</function>\n</tool_call>") == []
    assert splitter.flush() == []
    assert [c["name"] for c in splitter.finish().tool_calls] == ["get_frame"]


def test_stream_releases_text_that_only_looked_like_a_tag() -> None:
    splitter = StreamSplitter(False)
    assert splitter.feed("a <tool") == [("content", "a")]
    assert splitter.feed("box is used") == [("content", " <toolbox is used")]


def test_stream_with_thinking_emits_reasoning_then_content_in_order() -> None:
    splitter = StreamSplitter(True)
    events = splitter.feed("Looking at the frame")
    events += splitter.feed(" now.</thi")
    events += splitter.feed("nk>\n\nPhase 2.")
    events += splitter.flush()
    assert events == [
        ("reasoning", "Looking at the frame"),
        ("reasoning", " now."),
        ("content", "Phase 2."),
    ]


def test_arguments_nested_too_deep_are_an_invalid_call_not_a_crash() -> None:
    deep = "[" * 100_000
    parsed = parse_tool_calls(f'<tool_call>\n{{"name": "f", "arguments": {deep}}}\n</tool_call>')
    assert parsed.tool_calls == [] and len(parsed.invalid_tool_calls) == 1
    [call] = parse_tool_calls(xml_call("look_at_frames", times=deep)).tool_calls
    assert call["args"] == {"times": deep}  # kept as the text it was; the tool rejects it
