"""Turn a Qwen-style raw completion into an answer, its thinking and its tool calls.

Qwen3.5 thinks inside ``<think>…</think>`` (its prompt already ends with ``<think>``, so only
the closing tag is generated) and calls tools with qwen3_coder XML inside ``<tool_call>``;
older Qwen models wrap hermes JSON in the same tag. Backends that see raw text (transformers,
in-process vLLM) use these parsers; `StreamSplitter` does the same job incrementally.

    reply = parse_reply("Look first.</think><tool_call><function=get_frame>...</tool_call>")
    reply.tool_calls[0]["name"], reply.additional_kwargs["reasoning_content"]
"""

from __future__ import annotations

import ast
import json
import re
import secrets
from collections.abc import Sequence
from typing import Any, Literal, NamedTuple, cast

from langchain_core.messages import AIMessage, InvalidToolCall, ToolCall
from langchain_core.messages.ai import UsageMetadata
from langchain_core.messages.tool import invalid_tool_call, tool_call

from surgagent.agent.backends._messages import REASONING_KEY
from surgagent.tools.answers import THINK_CLOSE, THINK_OPEN, split_thinking

__all__ = [
    "ParsedCalls",
    "StreamEvent",
    "StreamSplitter",
    "invalid_call_error",
    "new_call_id",
    "parse_reply",
    "parse_tool_calls",
    "split_thinking",
]

CALL_OPEN = "<tool_call>"
CALL_CLOSE = "</tool_call>"
_FUNCTION_OPEN = "<function="
_FORMAT_HINT = (
    "write each call as <tool_call>\\n<function=NAME>\\n<parameter=ARG>\\nvalue\\n"
    "</parameter>\\n</function>\\n</tool_call>"
)

_FUNCTION = re.compile(r"<function=([^>\n]*)>(.*?)(?:</function>|\Z)", re.DOTALL)
_PARAMETER = re.compile(
    r"<parameter=([^>\n]*)>(.*?)(?:</parameter>|(?=<parameter=)|(?=</function>)|\Z)", re.DOTALL
)
_JSON_NAME = re.compile(r'"name"\s*:\s*"([^"]+)"')
# A bare qwen3_coder call the model wrote without the <tool_call> wrapper.
_BARE_FUNCTION = re.compile(r"<function=[^>\n]*>.*?</function>", re.DOTALL)

StreamEvent = tuple[Literal["reasoning", "content"], str]


class ParsedCalls(NamedTuple):
    """The tool calls found in a reply and the text around them."""

    content: str
    tool_calls: list[ToolCall]
    invalid_tool_calls: list[InvalidToolCall]


def new_call_id() -> str:
    """A fresh tool-call id such as ``call_1a2b3c4d``."""
    return f"call_{secrets.token_hex(4)}"


def _param_types(tools: Sequence[dict[str, Any]] | None) -> dict[str, dict[str, set[str]]]:
    """Map each tool name to its parameters' JSON types (empty where the schema names none)."""
    found: dict[str, dict[str, set[str]]] = {}
    for tool in tools or []:
        function = tool.get("function", tool)
        properties = (function.get("parameters") or {}).get("properties") or {}
        params = {}
        for param, schema in properties.items():
            types = {schema.get("type")} | {s.get("type") for s in schema.get("anyOf", [])}
            params[param] = {str(t) for t in types if t}
        found[str(function.get("name", ""))] = params
    return found


def _string_params(tools: Sequence[dict[str, Any]] | None) -> dict[str, set[str]]:
    """Map each tool name to the parameters whose schema only allows strings."""
    return {
        name: {param for param, types in params.items() if types == {"string"}}
        for name, params in _param_types(tools).items()
    }


def read_literals(
    name: str, args: dict[str, Any], tools: Sequence[dict[str, Any]] | None
) -> dict[str, Any]:
    """``args`` with strings read as values where the parameter's schema allows no string.

    A server's tool parser converts values by the schema, but not every form the model may
    write: vLLM's leaves ``None`` a string for a nullable number. Read as `parse_tool_calls`
    reads XML values (JSON, then Python's ``True``/``False``/``None`` and literals).
    """
    params = _param_types(tools).get(name, {})
    return {
        key: _param_value(value, as_string=False)
        if isinstance(value, str) and params.get(key) and "string" not in params[key]
        else value
        for key, value in args.items()
    }


def _param_value(raw: str, as_string: bool) -> Any:
    # The template writes "<parameter=P>\nvalue\n</parameter>": drop exactly that padding.
    value = raw.removeprefix("\n").removesuffix("\n")
    if as_string:
        return value
    try:
        return json.loads(value)
    except (ValueError, RecursionError):  # RecursionError: nested too deep
        pass
    # Qwen3.5's template renders past scalar arguments with Jinja's `string` filter, so the
    # model sees (and writes) Python's True, False and None; read them as what they mean.
    try:
        literal = ast.literal_eval(value.strip())
    except (ValueError, SyntaxError, TypeError, MemoryError, RecursionError):
        return value
    return literal if _is_json_like(literal) else value


def _is_json_like(value: Any) -> bool:
    if value is None or isinstance(value, bool | int | float | str):
        return True
    if isinstance(value, list):
        return all(_is_json_like(item) for item in value)
    if isinstance(value, dict):
        return all(isinstance(k, str) and _is_json_like(v) for k, v in value.items())
    return False


def _invalid(name: str | None, raw: str, error: str) -> InvalidToolCall:
    return invalid_tool_call(name=name, args=raw, id=new_call_id(), error=error)


def _parse_xml(body: str, strings: dict[str, set[str]]) -> ToolCall | InvalidToolCall:
    match = _FUNCTION.search(body)
    if match is None:
        return _invalid(None, body, f"the tool call names no function; {_FORMAT_HINT}.")
    name = match.group(1).strip()
    if not name:
        return _invalid(None, body, f"the tool call's <function=...> has no name; {_FORMAT_HINT}.")
    as_string = strings.get(name, set())
    args: dict[str, Any] = {}
    for param in _PARAMETER.finditer(match.group(2)):
        key = param.group(1).strip()
        if not key:
            return _invalid(name, body, f"a parameter of {name!r} has no name; {_FORMAT_HINT}.")
        args[key] = _param_value(param.group(2), key in as_string)
    return tool_call(name=name, args=args, id=new_call_id())


def _parse_json(body: str) -> ToolCall | InvalidToolCall:
    try:
        data = json.loads(body)
    except (ValueError, RecursionError) as exc:
        named = _JSON_NAME.search(body)
        return _invalid(
            named.group(1) if named else None,
            body,
            f"the tool call is not valid JSON ({exc}); {_FORMAT_HINT}.",
        )
    if not isinstance(data, dict):
        return _invalid(None, body, f"the tool call is not a JSON object; {_FORMAT_HINT}.")
    name = data.get("name")
    if not isinstance(name, str) or not name.strip():
        return _invalid(None, body, f"the tool call has no function name; {_FORMAT_HINT}.")
    args = data.get("arguments", data.get("parameters", {}))
    if isinstance(args, str):
        try:
            args = json.loads(args) if args.strip() else {}
        except (ValueError, RecursionError):  # RecursionError: nested too deep
            pass
    if not isinstance(args, dict):
        return _invalid(
            name,
            body,
            f"the arguments of {name!r} are not an object of named values; {_FORMAT_HINT}.",
        )
    return tool_call(name=name, args=args, id=new_call_id())


def _parse_body(body: str, strings: dict[str, set[str]]) -> ToolCall | InvalidToolCall:
    stripped = body.strip()
    if stripped.startswith("{"):
        return _parse_json(stripped)
    return _parse_xml(body, strings)


def parse_tool_calls(text: str, *, tools: Sequence[dict[str, Any]] | None = None) -> ParsedCalls:
    """Find the tool calls in a reply (qwen3_coder XML or hermes JSON, several allowed).

    Args:
        text: The answer part of a completion (thinking already split off).
        tools: The OpenAI tool schemas offered, if known; XML parameter values of
            string-only parameters are then kept as strings instead of read as JSON.

    Returns:
        The text outside the calls (stripped), the parsed calls, and the calls that could not
        be parsed (each with the raw text as ``args`` and an ``error`` the planner can act on).
    """
    strings = _string_params(tools)
    calls: list[ToolCall] = []
    invalid: list[InvalidToolCall] = []
    pieces: list[str] = []
    rest = text
    while (start := rest.find(CALL_OPEN)) != -1:
        pieces.append(rest[:start])
        after = rest[start + len(CALL_OPEN) :]
        end = after.find(CALL_CLOSE)
        if end == -1:
            body, rest, raw = after, "", rest[start:]
            if "</function>" not in body and not _is_json_object(body):
                error = f"the tool call was cut off before </tool_call>; {_FORMAT_HINT}."
                invalid.append(_invalid(None, raw, error))
                continue
        else:
            body, rest = after[:end], after[end + len(CALL_CLOSE) :]
            raw = CALL_OPEN + body + CALL_CLOSE
        _sort(_parse_body(body, strings), raw, calls, invalid)
    pieces.append(rest)
    content: list[str] = []
    for piece in pieces:
        for bare in _BARE_FUNCTION.findall(piece):
            _sort(_parse_xml(bare, strings), bare, calls, invalid)
        content += [part.strip() for part in _BARE_FUNCTION.split(piece) if part.strip()]
    return ParsedCalls("\n\n".join(content), calls, invalid)


def _sort(
    parsed: ToolCall | InvalidToolCall,
    raw: str,
    calls: list[ToolCall],
    invalid: list[InvalidToolCall],
) -> None:
    if parsed.get("type") == "invalid_tool_call":
        # Keep the whole call markup as args: it never reads as JSON, so a streamed reply
        # merged by LangChain keeps the call invalid, and `invalid_call_error` can re-derive
        # the error that merge drops.
        bad = cast(InvalidToolCall, parsed)
        bad["args"] = raw
        invalid.append(bad)
    else:
        calls.append(cast(ToolCall, parsed))


def invalid_call_error(call: InvalidToolCall) -> str:
    """The sentence telling the model what was wrong with an unparseable tool call.

    Streamed replies lose ``error`` when LangChain merges their chunks; this re-derives it from
    the raw call kept in ``args``.

    Args:
        call: An entry of ``AIMessage.invalid_tool_calls``.

    Returns:
        The call's ``error``, or one derived from its ``args``, or a generic sentence.
    """
    if call.get("error"):
        return str(call["error"])
    raw = call.get("args") or ""
    again = (
        parse_tool_calls(raw).invalid_tool_calls
        if CALL_OPEN in raw or _FUNCTION_OPEN in raw
        else []
    )
    if again and again[0].get("error"):
        return str(again[0]["error"])
    name = call.get("name")
    what = f"the call to {name!r}" if name else "a tool call"
    return f"{what} could not be parsed; {_FORMAT_HINT}."


def _is_json_object(body: str) -> bool:
    try:
        return isinstance(json.loads(body), dict)
    except (ValueError, RecursionError):  # RecursionError: nested too deep
        return False


def _usage(usage: dict[str, Any] | None) -> UsageMetadata | None:
    if not usage:
        return None
    prompt = int(usage.get("input_tokens", usage.get("prompt_tokens", 0)) or 0)
    completion = int(usage.get("output_tokens", usage.get("completion_tokens", 0)) or 0)
    total = int(usage.get("total_tokens", prompt + completion) or prompt + completion)
    return UsageMetadata(input_tokens=prompt, output_tokens=completion, total_tokens=total)


def parse_reply(
    text: str,
    *,
    usage: dict[str, Any] | None = None,
    thinking: bool = False,
    tools: Sequence[dict[str, Any]] | None = None,
) -> AIMessage:
    """Build the reply message from a raw completion.

    Args:
        text: The raw completion (special tokens such as ``<|im_end|>`` already removed).
        usage: Token counts: ``input_tokens``/``output_tokens``/``total_tokens`` (or the
            OpenAI names ``prompt_tokens``/``completion_tokens``).
        thinking: Whether the prompt already opened a think block (see `split_thinking`).
        tools: The tool schemas offered, to keep string parameters as strings.

    Returns:
        An `AIMessage`: the answer without calls as ``content``, thinking in
        ``additional_kwargs["reasoning_content"]``, ``tool_calls``, ``invalid_tool_calls``
        and ``usage_metadata``.
    """
    reasoning, answer = split_thinking(text, thinking=thinking)
    parsed = parse_tool_calls(answer, tools=tools)
    extra = {REASONING_KEY: reasoning} if reasoning else {}
    return AIMessage(
        content=parsed.content,
        additional_kwargs=extra,
        tool_calls=parsed.tool_calls,
        invalid_tool_calls=parsed.invalid_tool_calls,
        usage_metadata=_usage(usage),
    )


def _partial_suffix(text: str, tags: Sequence[str]) -> int:
    """Length of the longest end of ``text`` that could begin one of ``tags``."""
    best = 0
    for tag in tags:
        for size in range(min(len(tag) - 1, len(text)), best, -1):
            if tag.startswith(text[-size:]):
                best = size
                break
    return best


class StreamSplitter:
    """Split a streamed completion into reasoning and content deltas as it arrives.

    Reasoning is emitted until ``</think>``, then content; once a tool call starts, text is
    held back so call markup never shows as content. Whitespace at either end of each part is
    held back too, so the deltas add up to what `parse_reply` returns for the whole text.

        splitter = StreamSplitter(thinking=True)
        for delta in deltas:
            for kind, text in splitter.feed(delta): ...
        tail, reply = splitter.flush(), splitter.finish(usage=usage)

    Args:
        thinking: Whether the prompt already opened a think block, so the completion starts
            inside it.
        tools: The tool schemas offered (passed on to `parse_reply`).
    """

    def __init__(
        self, thinking: bool = False, *, tools: Sequence[dict[str, Any]] | None = None
    ) -> None:
        self.thinking = thinking
        self.tools = tools
        # Pieces are kept in lists and joined once: growing one string by each delta would
        # copy the whole reply again for every token (quadratic in a long reply).
        self._pieces: list[str] = []
        self._mode: Literal["start", "reasoning", "content", "held"] = (
            "reasoning" if thinking else "start"
        )
        self._rest = ""  # text received but not yet classified (a few characters at most)
        self._emitted: dict[str, list[str]] = {"reasoning": [], "content": []}
        self._pending_space = {"reasoning": "", "content": ""}

    @property
    def text(self) -> str:
        """The whole completion received so far."""
        if len(self._pieces) > 1:
            self._pieces[:] = ["".join(self._pieces)]
        return self._pieces[0] if self._pieces else ""

    def feed(self, delta: str) -> list[StreamEvent]:
        """Take the next piece of text; return the deltas that are now certain."""
        self._pieces.append(delta)
        events: list[StreamEvent] = []
        if self._mode == "held":  # a tool call is being written: only `finish` reads it
            return events
        self._rest += delta
        while True:
            before = (self._mode, len(self._rest))
            self._step(events)
            if (self._mode, len(self._rest)) == before:
                return events

    def feed_reasoning(self, delta: str) -> list[StreamEvent]:
        """Take reasoning that came in a field of its own; trimmed as inline reasoning is."""
        events: list[StreamEvent] = []
        self._emit("reasoning", delta, events)
        return events

    def _take(self, size: int) -> None:
        """Mark the first ``size`` characters of the unclassified text as classified."""
        self._rest = self._rest[size:]

    def _step(self, events: list[StreamEvent]) -> None:
        rest = self._rest
        if self._mode == "start":
            lead = rest.lstrip()
            if lead.startswith(THINK_OPEN):
                self._mode = "reasoning"
                self._take(len(rest) - len(lead) + len(THINK_OPEN))
            elif lead and not THINK_OPEN.startswith(lead):
                self._mode = "content"
        elif self._mode == "reasoning":
            opened, end = rest.find(THINK_OPEN), rest.find(THINK_CLOSE)
            if opened != -1 and (end == -1 or opened < end):  # a repeated opening tag
                self._emit("reasoning", rest[:opened], events)
                self._take(opened + len(THINK_OPEN))
                return
            if end != -1:
                self._emit("reasoning", rest[:end], events)
                self._mode = "content"
                self._take(end + len(THINK_CLOSE))
                return
            keep = _partial_suffix(rest, (THINK_CLOSE, THINK_OPEN))
            self._emit("reasoning", rest[: len(rest) - keep], events)
            self._take(len(rest) - keep)
        elif self._mode == "content":
            starts = [i for i in (rest.find(CALL_OPEN), rest.find(_FUNCTION_OPEN)) if i != -1]
            if starts:
                self._emit("content", rest[: min(starts)], events)
                self._mode = "held"
                self._rest = ""
                return
            keep = _partial_suffix(rest, (CALL_OPEN, _FUNCTION_OPEN))
            self._emit("content", rest[: len(rest) - keep], events)
            self._take(len(rest) - keep)

    def _emit(
        self, kind: Literal["reasoning", "content"], text: str, out: list[StreamEvent]
    ) -> None:
        text = self._pending_space[kind] + text
        if not self._emitted[kind]:
            text = text.lstrip()
        body = text.rstrip()
        self._pending_space[kind] = text[len(body) :]
        if body:
            self._emitted[kind].append(body)
            out.append((kind, body))

    def flush(self) -> list[StreamEvent]:
        """Emit what was held back, now that the text is complete.

        Returns:
            The last deltas, so that all deltas together match `finish`'s message (when a
            part turns out not to extend what was already sent, nothing more is sent for it).
        """
        reply = self.finish()
        events: list[StreamEvent] = []
        reasoning = str(reply.additional_kwargs.get(REASONING_KEY, ""))
        for kind, full in (("reasoning", reasoning), ("content", str(reply.content))):
            sent = "".join(self._emitted[kind])
            if full.startswith(sent) and len(full) > len(sent):
                events.append((kind, full[len(sent) :]))  # type: ignore[arg-type]
                self._emitted[kind] = [full]
        return events

    def finish(self, *, usage: dict[str, Any] | None = None) -> AIMessage:
        """Parse the whole completion (as `parse_reply` would)."""
        return parse_reply(self.text, usage=usage, thinking=self.thinking, tools=self.tools)
