"""The planner's `search_guidelines` tool.

tools = make_retrieval_tools()  # bind to the planner; RunContext.knowledge must be set
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Protocol

from langchain_core.tools import BaseTool, tool
from langgraph.prebuilt import ToolRuntime

from surgagent.tools.retrieval.engine import search_guidelines
from surgagent.tools.retrieval.types import GuidelineSearchArgs, GuidelineSearchResult

if TYPE_CHECKING:
    from surgagent.knowledge.store import KnowledgeStore

__all__ = [
    "make_retrieval_tools",
]


class RetrievalContext(Protocol):
    """What the retrieval tool needs from the run context."""

    @property
    def knowledge(self) -> KnowledgeStore | None:
        """The knowledge store, or None where retrieval is off."""
        ...


_DESCRIPTION = (
    "Search the surgical guideline store (safety criteria such as the critical view of "
    "safety, safe cholecystectomy strategies, bail-out options, bile duct injury, anatomy, "
    "Cholec80 phases and instruments, CholecT50 triplets, energy devices, the WHO checklist, "
    "prostatectomy steps, datasets, and documents the user added). Returns passages with "
    "ids; cite the ones you use as [passage-id]. Use it whenever the answer depends on what "
    "should happen, not only on what the video shows."
)


@tool(
    "search_guidelines",
    description=_DESCRIPTION,
    args_schema=GuidelineSearchArgs,
    response_format="content_and_artifact",
)
def search_guidelines_tool(
    runtime: ToolRuntime[RetrievalContext, Any],
    query: str,
    topic: str | None = None,
    source: str | None = None,
    k: int = 4,
) -> tuple[str, GuidelineSearchResult]:
    """Run `search_guidelines` with the run's store (the description above is the manual)."""
    args = GuidelineSearchArgs(query=query, topic=topic, source=source, k=k)
    return search_guidelines(runtime.context.knowledge, args)


def make_retrieval_tools() -> list[BaseTool]:
    """The planner tools this module provides."""
    return [search_guidelines_tool]
