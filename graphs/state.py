"""The case-review graph's state: messages, the case, evidence, step budget and the result.

State holds plain data (messages and dicts), so any checkpointer can store and reload it.

    update = {"messages": [HumanMessage("When is the clipper used?")], "case_id": case.id}
"""

from __future__ import annotations

import operator
from typing import Annotated, Any, TypedDict

from langchain_core.messages import AnyMessage
from langgraph.graph.message import add_messages
from langgraph.managed import RemainingSteps

__all__ = ["CaseReviewState"]


class CaseReviewState(TypedDict, total=False):
    """State of one case-review session (a thread).

    Attributes:
        messages: The conversation, tool calls and tool results included.
        case_id: The case this session is about.
        evidence: Evidence items (``Evidence.model_dump()``) of every answer so far.
        remaining_steps: Graph steps left before LangGraph's recursion limit.
        error: A backend failure that ends the current run.
        result: The last answer (``AnswerResult.model_dump()``).
    """

    messages: Annotated[list[AnyMessage], add_messages]
    case_id: str
    evidence: Annotated[list[dict[str, Any]], operator.add]
    remaining_steps: RemainingSteps
    error: str | None
    result: dict[str, Any] | None
