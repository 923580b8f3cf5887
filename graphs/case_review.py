"""The case-review graph: plan -> tools -> plan ... -> answer (DESIGN section 1).

graph = build_case_review_graph(tools, prompts, checkpointer=InMemorySaver())
state = graph.invoke({"messages": [question], "case_id": case.id}, context=ctx)
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from langchain_core.tools import BaseTool
from langgraph.checkpoint.base import BaseCheckpointSaver
from langgraph.graph import END, START, StateGraph
from langgraph.graph.state import CompiledStateGraph

from surgagent.graphs.context import RunContext
from surgagent.graphs.nodes import (
    Prompts,
    make_answer_node,
    make_plan_node,
    route_after_plan,
    route_after_tools,
)
from surgagent.graphs.state import CaseReviewState
from surgagent.graphs.tool_calls import build_tools_node

__all__ = ["build_case_review_graph", "recursion_limit"]


def recursion_limit(step_budget: int) -> int:
    """LangGraph's step limit for a run: two steps per planner turn plus the answer."""
    return 2 * step_budget + 6


def build_case_review_graph(
    tools: Sequence[BaseTool],
    prompts: Prompts,
    *,
    checkpointer: BaseCheckpointSaver[Any] | None = None,
) -> CompiledStateGraph[CaseReviewState, RunContext, CaseReviewState, CaseReviewState]:
    """Compile the graph that answers questions about a case with ``tools``.

    Args:
        tools: The tools offered to the planner (only those whose models are configured).
        prompts: The system and final-answer prompts.
        checkpointer: Where sessions are kept; None for single-shot use.

    Returns:
        The compiled graph; run it with ``context=RunContext(...)``.
    """
    graph = StateGraph(CaseReviewState, context_schema=RunContext)
    graph.add_node("plan", make_plan_node(tools, prompts))
    graph.add_node("answer", make_answer_node(tools, prompts))
    graph.add_edge(START, "plan")
    graph.add_edge("answer", END)
    if tools:
        graph.add_node("tools", build_tools_node(tools))
        graph.add_conditional_edges("plan", route_after_plan, ["tools", "plan", "answer"])
        graph.add_conditional_edges("tools", route_after_tools, ["plan", "answer"])
    else:
        graph.add_edge("plan", "answer")
    return graph.compile(checkpointer=checkpointer, name="case-review")
