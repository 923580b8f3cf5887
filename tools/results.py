"""Every result a planner tool can return, as one tagged union, and the helper that reads it.

A tool message's artifact is the tool's result: the typed model in the process that ran the
tool, plain JSON once a checkpoint has stored it. `read_result` gives the typed model back
either way, so the graph, the answer builder, the evals and the UI never dig in JSON by key.

    result = read_result(message)  # None for messages that carry no result
    if isinstance(result, GuidelineSearchResult):
        ids = [passage.id for passage in result.passages]
"""

from __future__ import annotations

from typing import Annotated, Any, TypeAlias

from langchain_core.messages import BaseMessage, ToolMessage
from pydantic import Field, TypeAdapter, ValidationError

from surgagent.tools.detector.types import DetectionsResult, TimelineResult
from surgagent.tools.library.types import CohortTable
from surgagent.tools.perception.types import PerceptionResult
from surgagent.tools.phase.types import PhaseAtResult, PhaseSegmentsResult
from surgagent.tools.retrieval.types import GuidelineSearchResult
from surgagent.tools.video.types import FramesResult

__all__ = [
    "CohortTable",
    "DetectionsResult",
    "FramesResult",
    "GuidelineSearchResult",
    "PerceptionResult",
    "PhaseAtResult",
    "PhaseSegmentsResult",
    "TimelineResult",
    "ToolOutput",
    "read_result",
]

ToolOutput: TypeAlias = Annotated[
    FramesResult
    | DetectionsResult
    | TimelineResult
    | PhaseAtResult
    | PhaseSegmentsResult
    | PerceptionResult
    | GuidelineSearchResult
    | CohortTable,
    Field(discriminator="kind"),
]

_TYPES = (
    FramesResult,
    DetectionsResult,
    TimelineResult,
    PhaseAtResult,
    PhaseSegmentsResult,
    PerceptionResult,
    GuidelineSearchResult,
    CohortTable,
)
_ADAPTER: TypeAdapter[Any] = TypeAdapter(ToolOutput)


def read_result(message: BaseMessage) -> ToolOutput | None:
    """The typed result a tool message carries, or None (an error reply, or no result).

    Raises:
        ValueError: If the message holds a result that does not validate (a session written
            by an incompatible version of SurgAgent).
    """
    if not isinstance(message, ToolMessage):
        return None
    artifact = message.artifact
    if isinstance(artifact, _TYPES):
        return artifact
    if not isinstance(artifact, dict) or "kind" not in artifact:
        return None
    try:
        result: ToolOutput = _ADAPTER.validate_python(artifact)
    except ValidationError as error:
        raise ValueError(f"the stored {message.name} result cannot be read: {error}") from error
    return result
