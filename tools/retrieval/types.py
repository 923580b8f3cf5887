"""The retrieval tool's arguments and result: retrieved passages with their sources.

args = GuidelineSearchArgs(query="critical view of safety", topic="cvs")
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Literal

from pydantic import BaseModel, Field

from surgagent.tools.base import Evidence, ToolResult

if TYPE_CHECKING:
    pass

__all__ = [
    "TOPICS",
    "GuidelineSearchArgs",
    "GuidelineSearchResult",
    "RetrievedPassage",
]


# The corpus topics (knowledge/corpus/<topic>/), offered to the planner as an enum.
TOPICS = (
    "cvs",
    "safe-chole",
    "bailout",
    "bdi",
    "anatomy",
    "phases",
    "instruments",
    "triplets",
    "energy",
    "checklist",
    "rarp",
    "datasets",
    "user",
)


class GuidelineSearchArgs(BaseModel):
    """Arguments of `search_guidelines`."""

    query: str = Field(
        min_length=3,
        description="What to look up, in plain words, e.g. 'criteria of the critical view of "
        "safety' or 'bail-out options when the hepatocystic triangle cannot be dissected'.",
    )
    topic: str | None = Field(
        None,
        description=f"Only passages of one topic: {', '.join(TOPICS)} (user = documents the "
        "user added).",
    )
    source: str | None = Field(
        None,
        description="Only passages whose source contains this text, e.g. 'SAGES', 'WHO', "
        "or a document's file name.",
    )
    k: int = Field(4, ge=1, le=8, description="How many passages to return (1-8).")


class RetrievedPassage(BaseModel):
    """One retrieved passage as the planner and the UI see it."""

    id: str
    title: str
    source: str
    document: str = ""
    section: str = ""
    year: int | None = None
    page: int | None = None
    url: str = ""
    text: str
    score: float
    instruction_like: bool = False


class GuidelineSearchResult(ToolResult):
    """The passages a search returned, best first."""

    kind: Literal["passages"] = "passages"
    query: str
    topic: str | None = None
    source: str | None = None
    passages: list[RetrievedPassage]

    def evidence(self) -> list[Evidence]:
        """One passage item per hit, referenced by its id."""
        return [
            Evidence(
                kind="passage",
                tool="search_guidelines",
                summary=p.title,
                source=", ".join(str(x) for x in (p.source, p.year) if x),
                ref=p.id,
            )
            for p in self.passages
        ]
