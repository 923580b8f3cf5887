"""The answer of one run: text, status, evidence, citations, trace, reasoning and usage.

result = AnswerResult.model_validate(state["result"])
print(result.answer, [e.label() for e in result.evidence])
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from surgagent.tools.base import Evidence
from surgagent.tools.vision import Usage

__all__ = ["AnswerResult", "AnswerStatus", "Citation", "ModelUse", "TraceStep"]

AnswerStatus = Literal["answered", "budget_exhausted", "refused", "error"]


class Citation(BaseModel):
    """A guideline passage the answer cites, retrieved in the same run, with its source."""

    passage_id: str
    source: str
    title: str = ""
    document: str = ""
    section: str = ""
    year: int | None = None
    page: int | None = None
    url: str = ""
    text: str = ""


class TraceStep(BaseModel):
    """One step of the run: a planner turn or a tool call."""

    node: Literal["plan", "tools", "answer"]
    tool: str | None = None
    args: dict[str, Any] = Field(default_factory=dict)
    duration_s: float = 0.0
    error: str | None = None
    summary: str = ""


class ModelUse(BaseModel):
    """A model a run used: its role, backend, model id and (for a server) the endpoint.

    The ``backend`` is the configured kind (``openai``, ``transformers``, ``vllm``), or the
    class of a model object handed to the agent ready-made.
    """

    model_config = ConfigDict(frozen=True)

    role: Literal["planner", "perception"]
    backend: str
    model: str
    endpoint: str | None = None


class AnswerResult(BaseModel):
    """What `SurgicalAgent.invoke` returns; thinking is kept in ``reasoning``, never in ``answer``.

    Attributes:
        answer: The final answer for the user.
        status: ``answered``, ``budget_exhausted`` (answered from partial evidence),
            ``refused`` or ``error`` (``answer`` then says what failed).
        evidence: The frames, spans and tool outputs gathered for this answer.
        citations: Guideline passages the answer cites that were retrieved in this run.
        trace: Every planner turn and tool call, with arguments, timings and errors.
        reasoning: The planner's thinking, turn by turn.
        usage: Tokens and images the planner consumed.
        warnings: Problems with the answer's grounding, one sentence each: it cites a
            passage that was not retrieved, or retrieved guidelines but cites none; it cites
            a time no tool looked at; it says an instrument or phase is present where the
            detector or segmenter found otherwise; or it leaves a disagreement between tools
            unmentioned.
        case_id: The case the answer is about.
        thread_id: The session it belongs to.
        models: The models the run used (empty in results saved before they were kept).
    """

    answer: str
    status: AnswerStatus
    evidence: list[Evidence] = Field(default_factory=list)
    citations: list[Citation] = Field(default_factory=list)
    trace: list[TraceStep] = Field(default_factory=list)
    reasoning: list[str] = Field(default_factory=list)
    usage: Usage = Field(default_factory=Usage)
    warnings: list[str] = Field(default_factory=list)
    case_id: str = ""
    thread_id: str | None = None
    models: list[ModelUse] = Field(default_factory=list)
