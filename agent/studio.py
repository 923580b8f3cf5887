"""The graph that ``langgraph dev`` and LangGraph Studio load (see ``langgraph.json``).

It is compiled without a checkpointer (the LangGraph server brings its own). Runs need a
`RunContext`, which holds live objects (models, the case), so run the graph from Python
through `SurgicalAgent`; Studio shows its structure and lets you step through such runs.

    langgraph dev   # from the repository root
"""

from __future__ import annotations

from typing import Any

from surgagent.agent.api import offered_tools
from surgagent.agent.prompts import load_prompt
from surgagent.agent.settings import get_settings
from surgagent.graphs.case_review import build_case_review_graph
from surgagent.graphs.nodes import Prompts

__all__ = ["graph", "make_graph"]


def make_graph() -> Any:
    """Compile the case-review graph with the tools the current settings configure."""
    prompts = Prompts(system=load_prompt("planner_system"), final=load_prompt("final_answer"))
    settings = get_settings()
    tools = offered_tools(
        vision=settings.perception.enabled,
        detector=settings.detector.weights is not None,
        segmenter=settings.phase.weights is not None,
    )
    return build_case_review_graph(tools, prompts)


graph = make_graph()
