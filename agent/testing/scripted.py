"""A scripted chat model for steering the planner through tests and benchmarks.

It replies from a list (or a function of the messages) and records every call, so a test
can drive the real graph and tools without a real model.

    model = ScriptedChatModel(replies=[call("look_at_frames", times=["00:05"]), say("Done.")])
    agent = SurgicalAgent.from_settings(planner_model=model)
"""

from __future__ import annotations

import itertools
import json
import time
from collections.abc import Callable, Iterator, Sequence
from typing import Any

from langchain_core.callbacks import CallbackManagerForLLMRun
from langchain_core.language_models import BaseChatModel, LanguageModelInput
from langchain_core.messages import AIMessage, AIMessageChunk, BaseMessage
from langchain_core.messages.tool import ToolCallChunk, tool_call_chunk
from langchain_core.outputs import ChatGeneration, ChatGenerationChunk, ChatResult
from langchain_core.runnables import Runnable
from pydantic import Field

from surgagent.tools.errors import BackendError

__all__ = ["ScriptedChatModel", "call", "calls", "say"]

_ids = itertools.count(1)

Reply = AIMessage | BaseException | Callable[[list[BaseMessage]], AIMessage]


def call(name: str, /, reasoning: str | None = None, **args: Any) -> AIMessage:
    """A planner reply that calls one tool ``name`` with ``args``."""
    return calls((name, args), reasoning=reasoning)


def calls(*named: tuple[str, dict[str, Any]], reasoning: str | None = None) -> AIMessage:
    """A planner reply that calls several tools at once."""
    tool_calls = [
        {"name": name, "args": args, "id": f"call_{next(_ids)}", "type": "tool_call"}
        for name, args in named
    ]
    extra = {"reasoning_content": reasoning} if reasoning else {}
    return AIMessage(content="", tool_calls=tool_calls, additional_kwargs=extra)


def say(text: str, reasoning: str | None = None) -> AIMessage:
    """A planner reply that answers with ``text`` (and optional thinking)."""
    extra = {"reasoning_content": reasoning} if reasoning else {}
    return AIMessage(content=text, additional_kwargs=extra)


class ScriptedChatModel(BaseChatModel):
    """Replies in order from ``replies``; an exception in the list is raised instead.

    Attributes:
        replies: AIMessages, exceptions, or functions of the messages returning an AIMessage.
        repeat_last: Keep giving the last reply when the list is used up (a looping planner).
        delay_s: Seconds to wait before each reply (a slow model).
        seen: The messages of every call, for assertions.
        bound_tools: The tool schemas of the last ``bind_tools``.
    """

    replies: list[Any] = Field(default_factory=list)
    repeat_last: bool = False
    delay_s: float = 0.0
    seen: list[list[BaseMessage]] = Field(default_factory=list)
    bound_tools: list[Any] = Field(default_factory=list)
    model_id: str = "scripted"
    position: int = 0

    @property
    def _llm_type(self) -> str:
        return "scripted"

    def bind_tools(
        self, tools: Sequence[Any], **kwargs: Any
    ) -> Runnable[LanguageModelInput, AIMessage]:
        """Record the tools and return the model itself (replies are scripted anyway)."""
        self.bound_tools = list(tools)
        return self

    def _next_reply(self, messages: list[BaseMessage]) -> AIMessage:
        self.seen.append(list(messages))
        if self.position >= len(self.replies):
            if not (self.repeat_last and self.replies):
                raise BackendError("the scripted model has no replies left", retryable=False)
            reply: Reply = self.replies[-1]
        else:
            reply = self.replies[self.position]
            self.position += 1
        if self.delay_s:
            time.sleep(self.delay_s)
        if isinstance(reply, BaseException):
            raise reply
        message = reply(messages) if callable(reply) else reply
        # A fresh copy with fresh tool-call ids, so a repeated reply is a new message.
        tool_calls = [{**c, "id": f"call_{next(_ids)}"} for c in message.tool_calls]
        return message.model_copy(update={"tool_calls": tool_calls, "id": None}, deep=True)

    def _generate(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None = None,
        run_manager: CallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> ChatResult:
        return ChatResult(generations=[ChatGeneration(message=self._next_reply(messages))])

    def _stream(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None = None,
        run_manager: CallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> Iterator[ChatGenerationChunk]:
        reply = self._next_reply(messages)
        words = reply.text.split(" ") if reply.text else []
        for index, word in enumerate(words):
            piece = word if index == 0 else " " + word
            if run_manager:
                run_manager.on_llm_new_token(piece)
            yield ChatGenerationChunk(message=AIMessageChunk(content=piece))
        yield ChatGenerationChunk(
            message=AIMessageChunk(
                content="",
                additional_kwargs=reply.additional_kwargs,
                tool_call_chunks=_call_chunks(reply),
                usage_metadata=reply.usage_metadata,
                chunk_position="last",
            )
        )


def _call_chunks(reply: AIMessage) -> list[ToolCallChunk]:
    """Tool calls as stream chunks; unreadable ones keep their raw argument text."""
    raw: list[tuple[str | None, str | None, str | None]] = [
        (c["name"], json.dumps(c["args"]), c["id"]) for c in reply.tool_calls
    ]
    raw += [(c["name"], c["args"], c["id"]) for c in reply.invalid_tool_calls]
    return [
        tool_call_chunk(name=name, args=args, id=call_id, index=index)
        for index, (name, args, call_id) in enumerate(raw)
    ]
