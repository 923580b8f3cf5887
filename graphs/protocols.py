"""What the graph needs from a planner model: a LangChain-style chat model that binds tools.

The agent's backends (and the scripted test model) satisfy it structurally.

    bound = planner.bind_tools(tools)
    reply = bound.invoke(messages)  # an AIMessage, maybe with tool_calls
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Protocol, runtime_checkable

from langchain_core.language_models import LanguageModelInput
from langchain_core.messages import BaseMessage
from langchain_core.runnables import Runnable
from langchain_core.tools import BaseTool

__all__ = ["PlannerModel"]


@runtime_checkable
class PlannerModel(Protocol):
    """A chat model that can be offered tools and then invoked or streamed."""

    def bind_tools(
        self, tools: Sequence[BaseTool | dict[str, Any]], **kwargs: Any
    ) -> Runnable[LanguageModelInput, BaseMessage]:
        """Return a runnable that offers ``tools`` to the model on every call."""
        ...

    def invoke(self, input: LanguageModelInput, *args: Any, **kwargs: Any) -> BaseMessage:
        """Answer the messages without tools."""
        ...
