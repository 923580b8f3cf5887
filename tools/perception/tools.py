"""The planner's `ask_perception` tool.

tools = make_perception_tools()  # bind to the planner; RunContext.perception must be set
"""

from __future__ import annotations

from typing import Any

from langchain_core.tools import BaseTool, tool
from langgraph.prebuilt import ToolRuntime

from surgagent.tools.perception.engine import PerceptionContext, ask_perception
from surgagent.tools.perception.types import PerceptionArgs, PerceptionResult, PerceptionTask

__all__ = [
    "make_perception_tools",
]


_DESCRIPTION = (
    "Ask the surgical vision-language model a question about frames of the case (e.g. which "
    "instruments are visible, where the hook is, whether the critical view of safety is "
    "achieved, which phase or action is shown). Choose the task style that fits the question; "
    "the answer comes back as text and, for structured tasks, parsed. Use it to see details "
    "you cannot judge from a tool's numbers alone."
)


@tool(
    "ask_perception",
    description=_DESCRIPTION,
    args_schema=PerceptionArgs,
    response_format="content_and_artifact",
)
def ask_perception_tool(
    runtime: ToolRuntime[PerceptionContext, Any],
    question: str,
    task: PerceptionTask = "open",
    times: list[str] | None = None,
    start: str | None = None,
    end: str | None = None,
    count: int | None = None,
) -> tuple[str, PerceptionResult]:
    """Run `ask_perception` with the run's context (the description above is the manual)."""
    args = PerceptionArgs(
        question=question, task=task, times=times, start=start, end=end, count=count
    )
    return ask_perception(runtime.context, args)


def make_perception_tools() -> list[BaseTool]:
    """The planner tools this module provides."""
    return [ask_perception_tool]
