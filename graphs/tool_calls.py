"""The tools node: LangGraph's ToolNode plus retries, timing, repeat detection and evidence.

Input errors (`ToolInputError`, bad arguments, unknown tools) and case errors (a damaged
span of video, a frame file gone) go back to the planner as error tool messages. Backend
errors are retried ``tool_retries`` times, then the message's `ToolRecord` marks a backend
failure and the run ends with ``status="error"``.

    node = build_tools_node(tools)
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence

from langchain_core.messages import AIMessage, HumanMessage, ToolMessage
from langchain_core.tools import BaseTool
from langgraph.prebuilt import ToolNode
from langgraph.prebuilt.tool_node import ToolCallRequest, ToolInvocationError
from langgraph.types import Command

from surgagent.tools.base import ToolRecord, ToolResult
from surgagent.tools.errors import BackendError, CaseError, ToolInputError

__all__ = ["MAX_TOOL_TEXT", "build_tools_node"]

logger = logging.getLogger(__name__)

# Tool text the planner reads is cut at this many characters; the artifact keeps it all.
MAX_TOOL_TEXT = 6000
_RETRY_BACKOFF_S = 0.5


def _input_error_text(error: Exception) -> str:
    """Tool-input and case errors become one sentence the planner can act on; others propagate."""
    if isinstance(error, ToolInvocationError):
        text = error.message
    elif isinstance(error, ToolInputError | CaseError):
        text = str(error)
    else:
        # Backend failures go to the retry wrapper; bugs must not look like answers.
        raise error
    return f"Error: {text} Fix the arguments and call the tool again, or answer without it."


def _same_call_earlier(request: ToolCallRequest) -> bool:
    """Whether this exact call (name and arguments) already ran in the current answer."""
    call = request.tool_call
    for message in reversed(request.state.get("messages", [])[:-1]):
        if isinstance(message, HumanMessage):
            return False
        if isinstance(message, AIMessage):
            for earlier in message.tool_calls:
                if earlier["name"] == call["name"] and earlier["args"] == call["args"]:
                    return True
    return False


def _annotate(message: ToolMessage, duration_s: float) -> ToolMessage:
    """Record timing and images on the message; store the result as plain data.

    The result (a `ToolResult`) is dumped to JSON so checkpoints stay portable;
    `surgagent.tools.results.read_result` reads it back as its typed model.
    """
    record = ToolRecord(duration_s=round(duration_s, 4))
    artifact = message.artifact
    if isinstance(artifact, ToolResult):
        record.images = [str(path) for path in artifact.image_paths()]
        message.artifact = artifact.model_dump(mode="json")
    text = message.content if isinstance(message.content, str) else str(message.content)
    if len(text) > MAX_TOOL_TEXT:
        message.content = text[:MAX_TOOL_TEXT] + " [...cut; the full result is kept]"
    record.attach(message)
    return message


def _backend_failure(request: ToolCallRequest, error: BackendError, tries: int) -> ToolMessage:
    call = request.tool_call
    message = ToolMessage(
        content=f"{call['name']} failed after {tries} tries: {error}",
        name=call["name"],
        tool_call_id=call["id"],
        status="error",
    )
    ToolRecord(backend_failure=True).attach(message)
    return message


def _run_with_retries(
    request: ToolCallRequest, execute: Callable[[ToolCallRequest], ToolMessage | Command]
) -> ToolMessage | Command:
    call = request.tool_call
    if _same_call_earlier(request):
        return ToolMessage(
            content=(
                f"Error: {call['name']} was already called with these arguments in this "
                "answer; its result is above. Use it, change the arguments, or answer."
            ),
            name=call["name"],
            tool_call_id=call["id"],
            status="error",
        )
    retries = getattr(request.runtime.context, "tool_retries", 0) if request.runtime else 0
    for attempt in range(retries + 1):
        started = time.perf_counter()
        try:
            result = execute(request)
        except BackendError as error:
            logger.warning("tool %s failed (try %d): %s", call["name"], attempt + 1, error)
            if not error.retryable or attempt == retries:
                return _backend_failure(request, error, attempt + 1)
            time.sleep(_RETRY_BACKOFF_S * 2**attempt)
            continue
        if isinstance(result, ToolMessage):
            return _annotate(result, time.perf_counter() - started)
        return result
    raise AssertionError("unreachable: the loop returns on its last try")


def build_tools_node(tools: Sequence[BaseTool]) -> ToolNode:
    """The graph's tools node; parallel tool calls run together."""
    return ToolNode(
        list(tools),
        handle_tool_errors=_input_error_text,
        wrap_tool_call=_run_with_retries,
    )
