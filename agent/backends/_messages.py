"""Convert LangChain messages to the OpenAI-style dicts both servers and chat templates read.

payload = to_openai_messages(messages)                     # for an HTTP request
rendered = to_openai_messages(messages, args_as_dict=True)  # for a Qwen chat template
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

from langchain_core.messages import AIMessage, BaseMessage, HumanMessage, SystemMessage, ToolMessage

__all__ = ["REASONING_KEY", "message_text", "to_openai_messages"]

# Where an AIMessage keeps the model's thinking (the key LangChain integrations use).
REASONING_KEY = "reasoning_content"


def message_text(message: BaseMessage) -> str:
    """The text of a message, image parts left out."""
    if isinstance(message.content, str):
        return message.content
    return "".join(
        part if isinstance(part, str) else str(part.get("text", ""))
        for part in message.content
        if isinstance(part, str) or part.get("type") == "text"
    )


def _tool_call(call_id: str, name: str, args: Any, args_as_dict: bool) -> dict[str, Any]:
    if args_as_dict and not isinstance(args, dict):
        args = {"_unparsed": args}
    elif not args_as_dict and not isinstance(args, str):
        args = json.dumps(args, ensure_ascii=False)
    return {"id": call_id, "type": "function", "function": {"name": name, "arguments": args}}


def _assistant(message: AIMessage, args_as_dict: bool, reasoning_key: str) -> dict[str, Any]:
    out: dict[str, Any] = {"role": "assistant", "content": message_text(message)}
    calls = [
        _tool_call(c["id"] or "", c["name"], c["args"], args_as_dict) for c in message.tool_calls
    ]
    calls += [
        _tool_call(c["id"] or "", c["name"] or "", c["args"] or "", args_as_dict)
        for c in message.invalid_tool_calls
    ]
    if calls:
        out["tool_calls"] = calls
    reasoning = message.additional_kwargs.get(REASONING_KEY)
    if reasoning:
        out[reasoning_key] = reasoning
    return out


def to_openai_messages(
    messages: Sequence[BaseMessage],
    *,
    args_as_dict: bool = False,
    reasoning_key: str = "reasoning",
) -> list[dict[str, Any]]:
    """Render messages as OpenAI chat dicts.

    Args:
        messages: LangChain messages; image parts (of user and tool messages) stay as
            ``image_url`` parts.
        args_as_dict: Tool-call arguments as dicts (chat templates) instead of JSON strings.
        reasoning_key: Field that carries earlier thinking back to the model.

    Returns:
        A list of ``{"role": ..., "content": ...}`` dicts.

    Raises:
        TypeError: For a message type the chat format has no role for.
    """
    out: list[dict[str, Any]] = []
    for message in messages:
        if isinstance(message, SystemMessage):
            out.append({"role": "system", "content": message_text(message)})
        elif isinstance(message, HumanMessage):
            out.append({"role": "user", "content": message.content})
        elif isinstance(message, AIMessage):
            out.append(_assistant(message, args_as_dict, reasoning_key))
        elif isinstance(message, ToolMessage):
            # Images a tool returned travel inside its result (Qwen3.5 renders them there).
            shows = not isinstance(message.content, str) and any(
                isinstance(part, dict) and part.get("type") != "text" for part in message.content
            )
            out.append(
                {
                    "role": "tool",
                    "tool_call_id": message.tool_call_id,
                    "name": message.name or "",
                    "content": message.content if shows else message_text(message),
                }
            )
        else:
            raise TypeError(f"cannot send a {type(message).__name__} to a chat model")
    return out
