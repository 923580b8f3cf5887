"""The case-review graph's nodes and routers: plain functions of (state, runtime).

``plan`` asks the planner for the next step, ``answer`` turns the turn into an
`AnswerResult`. Routers return the next node's name.

    plan = make_plan_node(tools, prompts)
    update = plan(state, runtime)
"""

from __future__ import annotations

import functools
import json
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal, Protocol

from langchain_core.messages import (
    AIMessage,
    AnyMessage,
    BaseMessage,
    HumanMessage,
    SystemMessage,
    ToolMessage,
)
from langchain_core.messages.tool import invalid_tool_call
from langchain_core.tools import BaseTool
from langchain_core.utils.function_calling import convert_to_openai_tool
from langgraph.runtime import Runtime

from surgagent.graphs.context import RunContext
from surgagent.graphs.history import fit_history, message_chars
from surgagent.graphs.result import AnswerStatus
from surgagent.graphs.state import CaseReviewState
from surgagent.graphs.turn import build_result, current_turn
from surgagent.tools.base import ToolRecord
from surgagent.tools.errors import BackendError, ContextOverflow, ImagesRefused
from surgagent.tools.vision import image_to_data_url

__all__ = [
    "Prompts",
    "make_answer_node",
    "make_plan_node",
    "route_after_plan",
    "route_after_tools",
]

# Graph steps the loop keeps in reserve so the answer node always runs.
_RESERVED_STEPS = 3


class Node(Protocol):
    """A graph node: reads the state and the run context, returns a partial update."""

    def __call__(self, state: CaseReviewState, runtime: Runtime[RunContext]) -> dict[str, Any]: ...


@dataclass(frozen=True)
class Prompts:
    """The prompt texts the graph uses (the agent loads them from its package files).

    Attributes:
        system: System prompt template with ``{case}``, ``{tools}`` and ``{budget}`` fields.
        final: Instruction to answer now, used when the step budget is spent.
    """

    system: str
    final: str


def _system_message(prompts: Prompts, ctx: RunContext, tools: Sequence[BaseTool]) -> SystemMessage:
    tool_lines = "\n".join(f"- {tool.name}: {tool.description.splitlines()[0]}" for tool in tools)
    budget = (
        f"You may take at most {ctx.step_budget} planning steps and look at at most "
        f"{ctx.frame_budget} frames for one answer."
    )
    return SystemMessage(
        prompts.system.format(case=ctx.subject, tools=tool_lines or "- (none)", budget=budget)
    )


@functools.lru_cache(maxsize=64)
def _image_part(path: str, max_side: int) -> dict[str, Any]:
    """An ``image_url`` part for a frame file; cached, as every planner step re-sends it."""
    from PIL import Image

    with Image.open(path) as image:
        return {"type": "image_url", "image_url": {"url": image_to_data_url(image, max_side)}}


def _with_images(
    messages: Sequence[AnyMessage], ctx: RunContext, tools: Sequence[BaseTool]
) -> list[BaseMessage]:
    """Show the current turn's tool images to the planner, inside the tool results themselves.

    Qwen3.5's template renders image parts of a tool message within its ``<tool_response>``;
    a user message added after the results would instead become the template's last real
    query, and the model would lose the thinking of its earlier steps in this tool loop.
    Images are loaded here, not stored in state, so checkpoints stay small. A planner that
    sees no images is told instead that the frames were not shown and how to read them.
    """
    turn_start = len(messages) - len(current_turn(messages))
    sees = ctx.planner_sees_images
    out: list[BaseMessage] = []
    for index, message in enumerate(messages):
        paths = ToolRecord.of(message).images if isinstance(message, ToolMessage) else []
        if index < turn_start or not paths:
            out.append(message)
        elif sees:
            parts: list[str | dict[Any, Any]] = [{"type": "text", "text": message.text}]
            parts += [_image_part(path, ctx.max_image_side) for path in paths]
            out.append(message.model_copy(update={"content": parts}))
        else:
            perceives = any(tool.name == "ask_perception" for tool in tools)
            note = _UNSEEN + (_ASK_PERCEPTION if perceives else "")
            out.append(message.model_copy(update={"content": message.text + note}))
    return out


_UNSEEN = " These frames are not shown to you: the planner model takes no images."
_ASK_PERCEPTION = " To learn what they show, ask_perception about the same times."


def _planner_turns(messages: Sequence[AnyMessage]) -> int:
    return sum(isinstance(m, AIMessage) for m in current_turn(messages))


# The range of integers every checkpointer can store (msgpack: 64-bit signed or unsigned).
_INT_RANGE = range(-(2**63), 2**64)


def _unstorable(value: Any, where: str) -> str | None:
    """Why a tool-call argument cannot be kept in a checkpoint, or None when it can."""
    if isinstance(value, bool) or value is None or isinstance(value, str | float):
        return None
    if isinstance(value, int):
        return None if value in _INT_RANGE else f"{where} holds {value}, too large a number"
    if isinstance(value, list | dict):
        items = value.items() if isinstance(value, dict) else enumerate(value)
        for key, item in items:
            problem = _unstorable(item, f"{where}[{key!r}]")
            if problem:
                return problem
        return None
    return f"{where} holds a {type(value).__name__}, not a JSON value"


def _reject_unstorable_calls(reply: AIMessage) -> None:
    """Make calls with arguments no checkpoint can store invalid calls, planner-fixable.

    This runs before the reply reaches the checkpointer, which would otherwise fail on it
    and lose the turn.
    """
    kept = []
    for call in reply.tool_calls:
        problem = _unstorable(call["args"], "the arguments")
        if problem is None:
            kept.append(call)
        else:
            error = invalid_tool_call(name=call["name"], args=None, id=call["id"], error=problem)
            reply.invalid_tool_calls.append(error)
    reply.tool_calls = kept


def _invalid_call_replies(reply: AIMessage) -> list[ToolMessage]:
    """Error tool messages for calls the planner wrote but that could not be parsed."""
    return [
        ToolMessage(
            content=(
                f"Error: the call to {call.get('name') or 'a tool'} could not be read "
                f"({call.get('error') or 'malformed arguments'}). Send valid JSON arguments."
            ),
            name=call.get("name") or "unknown",
            tool_call_id=call.get("id") or "invalid",
            status="error",
        )
        for call in reply.invalid_tool_calls
    ]


def _context_window(ctx: RunContext) -> int | None:
    """The planner's context in tokens: the setting, else what its server lists."""
    setting = getattr(getattr(ctx.settings, "planner", None), "max_context_tokens", None)
    listed = getattr(ctx.planner, "context_window", None)
    return setting or (listed() if callable(listed) else None)


def _with_closing(sent: list[BaseMessage], closing: BaseMessage | None) -> list[BaseMessage]:
    """``sent`` with a closing instruction, carried inside the tool results it follows.

    Qwen3.5's chat template takes a user message after tool results as a new question and
    drops the thinking of the tool loop before it; the instruction appended to the last tool
    result keeps that thinking in view. After anything else it is a message of its own.
    """
    if closing is None:
        return sent
    last = sent[-1] if sent else None
    if not isinstance(last, ToolMessage):
        return [*sent, closing]
    text = f"\n\n{closing.text}"
    content = last.content
    if isinstance(content, list):
        joined: str | list[Any] = [*content, {"type": "text", "text": text}]
    else:
        joined = content + text
    return [*sent[:-1], last.model_copy(update={"content": joined})]


def _ask_planner(
    model: Any,
    system: SystemMessage,
    messages: Sequence[AnyMessage],
    ctx: RunContext,
    tools: Sequence[BaseTool],
    schemas: Sequence[dict[str, Any]] | None = None,
    closing: BaseMessage | None = None,
) -> tuple[AIMessage, str | None]:
    """The planner's reply to the conversation fitted into its context, and what was left out.

    The estimate is corrected and the step sent again once if the server still finds the
    prompt too long (it says by how much), and if it refuses frames under ``vision = auto``.
    ``closing``, a last instruction, joins the current turn.
    """
    schema_chars = len(json.dumps(schemas)) if schemas else 0
    fixed_chars = schema_chars + (message_chars(closing)[0] if closing is not None else 0)
    window = _context_window(ctx)
    for attempt in (1, 2):
        shown = _with_images(messages, ctx, tools)
        sent: list[BaseMessage] = [system, *shown]
        note = None
        if window:
            reserve = getattr(getattr(ctx.settings, "planner", None), "max_tokens", 0) or 0
            fitted = fit_history(
                system,
                shown,
                budget=max(window - reserve, 1),
                chars_per_token=getattr(ctx.planner, "chars_per_token", 4.0),
                image_tokens=(ctx.max_image_side // 32) ** 2,
                fixed_chars=fixed_chars,
            )
            sent = list(fitted.messages)
            if fitted.dropped:
                turns = "turn" if fitted.dropped == 1 else "turns"
                note = (
                    f"history shortened: left out the {fitted.dropped} earliest {turns} to fit "
                    f"the planner's {window:,}-token context"
                )
        try:
            reply = model.invoke(_with_closing(sent, closing))
        except ImagesRefused:
            if attempt == 2 or ctx.planner_sees_images or ctx.planner_vision != "auto":
                raise
            continue  # the backend learnt it: the frames stay out now
        except ContextOverflow as error:
            if attempt == 2 or not error.prompt_tokens:
                raise
            window = error.limit or window
            chars = sum(message_chars(m)[0] for m in sent) + schema_chars
            if hasattr(ctx.planner, "chars_per_token"):  # what a token really is, in chars
                ctx.planner.chars_per_token = max(chars / error.prompt_tokens * 0.9, 0.5)
            continue
        assert isinstance(reply, AIMessage), f"planner returned {type(reply).__name__}"
        return reply, note
    raise AssertionError("unreachable")


def make_plan_node(tools: Sequence[BaseTool], prompts: Prompts) -> Node:
    """Build the node that asks the planner for its next step (tool calls or an answer)."""
    schemas = [convert_to_openai_tool(tool) for tool in tools]

    def plan(state: CaseReviewState, runtime: Runtime[RunContext]) -> dict[str, Any]:
        ctx = runtime.context
        messages = state["messages"]
        if state.get("remaining_steps", _RESERVED_STEPS + 1) <= _RESERVED_STEPS:
            return {}
        model = ctx.planner.bind_tools(schemas) if schemas else ctx.planner
        system = _system_message(prompts, ctx, tools)
        started = time.perf_counter()
        try:
            reply, shortened = _ask_planner(model, system, messages, ctx, tools, schemas)
        except BackendError as error:
            return {"error": f"The planner model failed: {error}"}
        assert isinstance(reply, AIMessage), f"planner returned {type(reply).__name__}"
        reply.response_metadata = {
            **reply.response_metadata,
            "duration_s": round(time.perf_counter() - started, 4),
            **({"history": shortened} if shortened else {}),
        }
        _reject_unstorable_calls(reply)
        return {"messages": [reply, *_invalid_call_replies(reply)]}

    return plan


def route_after_plan(
    state: CaseReviewState, runtime: Runtime[RunContext]
) -> Literal["tools", "plan", "answer"]:
    """Run tools, re-plan after unreadable calls, or answer (also when the budget is spent)."""
    last = state["messages"][-1]
    if state.get("error") or state.get("remaining_steps", 99) <= _RESERVED_STEPS:
        return "answer"
    within_budget = _planner_turns(state["messages"]) < runtime.context.step_budget
    if isinstance(last, AIMessage) and last.tool_calls and within_budget:
        return "tools"
    if isinstance(last, ToolMessage) and within_budget:
        return "plan"
    return "answer"


def route_after_tools(state: CaseReviewState) -> Literal["plan", "answer"]:
    """Back to the planner, unless a tool's backend failed for good."""
    for message in reversed(state["messages"]):
        if not isinstance(message, ToolMessage):
            break
        if ToolRecord.of(message).backend_failure:
            return "answer"
    return "plan"


def make_answer_node(tools: Sequence[BaseTool], prompts: Prompts) -> Node:
    """Build the node that finishes a turn and records its `AnswerResult`."""

    def answer(state: CaseReviewState, runtime: Runtime[RunContext]) -> dict[str, Any]:
        ctx = runtime.context
        messages = list(state["messages"])
        new_messages: list[AnyMessage] = []
        error = state.get("error") or _tool_backend_error(messages)
        last = messages[-1]
        finished = (
            isinstance(last, AIMessage) and not last.tool_calls and not last.invalid_tool_calls
        )
        if not error and not finished:
            # Budget spent: close open calls, then ask for an answer from what is known.
            if isinstance(last, AIMessage):
                new_messages += [
                    ToolMessage(
                        content="Not run: the step budget is spent.",
                        name=call["name"],
                        tool_call_id=call["id"] or "",
                        status="error",
                    )
                    for call in last.tool_calls
                ]
            closing = HumanMessage(content=prompts.final)
            asked = [*messages, *new_messages]
            try:
                # The closing request joins the current turn: it is never left out.
                system = _system_message(prompts, ctx, tools)
                reply, _ = _ask_planner(ctx.planner, system, asked, ctx, tools, closing=closing)
                new_messages.append(reply)
            except BackendError as exc:
                error = f"The planner model failed: {exc}"
        status: AnswerStatus = (
            "error" if error else ("answered" if finished else "budget_exhausted")
        )
        result = build_result(
            [*messages, *new_messages],
            status=status,
            error=error,
            case_id=ctx.subject_id,
            models=ctx.models,
        )
        return {
            "messages": new_messages,
            "result": result.model_dump(mode="json"),
            "evidence": [item.model_dump(mode="json") for item in result.evidence],
            "error": None,
        }

    return answer


def _tool_backend_error(messages: Sequence[AnyMessage]) -> str | None:
    for message in reversed(messages):
        if not isinstance(message, ToolMessage):
            return None
        if ToolRecord.of(message).backend_failure:
            return str(message.content)
    return None
