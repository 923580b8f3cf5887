"""The graph LangGraph clients run: ``langgraph dev``, LangGraph Studio and ``langgraph_sdk``.

``langgraph.json`` names `make_graph`, a graph factory: the LangGraph server calls it to draw
the graph and for every run. The graph it returns has the tools an agent built from the same
settings offers (the CLI's), and one node, ``review``, that runs the case-review graph as a
subgraph with the run context it builds: the models and engines of a `SurgicalAgent` made
once per server process, and the case the run names. Name the case by the run's ``context``
(or ``configurable``, which the server mirrors into it) or by the input's ``case``; later
runs on the thread keep it.

    langgraph dev --no-browser   # from the repository root
    client.runs.wait(thread["thread_id"], "case_review", context={"case": "video.mp4"},
                     input={"messages": [{"role": "user", "content": "When is the clipper used?"}]})
"""

from __future__ import annotations

import threading
from typing import TYPE_CHECKING, Annotated, Any, TypedDict

from langchain_core.messages import AnyMessage, HumanMessage
from langchain_core.runnables import RunnableConfig
from langgraph.config import get_config
from langgraph.graph import END, START, StateGraph
from langgraph.graph.message import add_messages
from langgraph.runtime import Runtime
from pydantic import BaseModel, ConfigDict, Field

from surgagent.agent.api import SurgicalAgent, settings_tools
from surgagent.agent.errors import RunRefused, SurgAgentError, UserError
from surgagent.agent.prompts import load_prompt
from surgagent.agent.settings import Settings, get_settings
from surgagent.graphs.case_review import build_case_review_graph, recursion_limit
from surgagent.graphs.nodes import Prompts
from surgagent.graphs.state import CaseReviewState

if TYPE_CHECKING:
    from langgraph.graph.state import CompiledStateGraph

__all__ = ["RunRefused", "ServerContext", "ServerInput", "ServerState", "make_graph"]


class ServerContext(BaseModel):
    """What a LangGraph client may set per run (``context``, or ``configurable``)."""

    model_config = ConfigDict(frozen=True, extra="ignore")

    case: str | None = Field(
        default=None,
        description="The case: a video file or frame folder on the server, or an indexed "
        "case id. Only the thread's first run needs it.",
    )


class ServerInput(TypedDict, total=False):
    """A run's input: the question as a user message, and optionally the case."""

    messages: Annotated[list[AnyMessage], add_messages]
    case: str


class ServerState(CaseReviewState, total=False):
    """The thread's state: the case-review state plus the case a run asked for."""

    case: str


class _Agents:
    """One `SurgicalAgent` per server process, made on the first run that needs it.

    Loading models and engines takes long and they are shared by every run, so they are
    not loaded when the server only draws the graph, nor again for each run.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._agent: SurgicalAgent | None = None

    def get(self, settings: Settings) -> SurgicalAgent:
        with self._lock:
            if self._agent is None or self._agent.settings is not settings:
                self._agent = SurgicalAgent.from_settings(settings)
            return self._agent


_AGENTS = _Agents()


def make_graph() -> CompiledStateGraph[Any, Any, Any, Any]:
    """Build the graph for one LangGraph server run (or for drawing it).

    The case comes with the run (its context, which the server also fills from
    ``configurable``, or its input), so the factory needs no argument.

    Returns:
        The compiled graph, without a checkpointer (the server brings its own).
    """
    settings = get_settings()
    prompts = Prompts(system=load_prompt("planner_system"), final=load_prompt("final_answer"))
    case_review = build_case_review_graph(settings_tools(settings), prompts)
    limit = recursion_limit(settings.step_budget)

    def review(state: ServerState, runtime: Runtime[ServerContext]) -> dict[str, Any]:
        """Answer the thread's newest user message with the case-review graph."""
        messages = state.get("messages", [])
        try:
            if not messages or not isinstance(messages[-1], HumanMessage) or not messages[-1].text:
                raise UserError("send the question as a user message (role 'user', non-empty)")
            agent = _AGENTS.get(settings)
            asked = runtime.context.case if runtime.context else None
            thread = str(get_config().get("configurable", {}).get("thread_id", ""))
            case = agent.session_case(asked or state.get("case"), state.get("case_id"), thread)
        except SurgAgentError as error:
            raise RunRefused(str(error)) from error
        inputs = CaseReviewState(messages=messages, case_id=case.id, error=None, result=None)
        done = case_review.invoke(
            inputs, RunnableConfig(recursion_limit=limit), context=agent.run_context(case)
        )
        return {
            "messages": done["messages"][len(messages) :],
            "case_id": case.id,
            "evidence": done.get("evidence", []),
            "error": done.get("error"),
            "result": done.get("result"),
        }

    graph = StateGraph(ServerState, context_schema=ServerContext, input_schema=ServerInput)
    graph.add_node("review", review)
    graph.add_edge(START, "review")
    graph.add_edge("review", END)
    return graph.compile(name="case_review")
