"""One published generation of the store opened for reading, and the search filters on it.

view = StoreView(generation, collection, ids, texts, metadatas, keyword, ...)
allowed = allowed_rows(view, where_conditions(view, topic="cvs", source=None))
"""

from __future__ import annotations

import difflib
from dataclasses import dataclass
from typing import Any

from surgagent.knowledge.errors import UnknownNameError
from surgagent.knowledge.keyword import KeywordIndex
from surgagent.knowledge.passages import Passage

__all__ = ["StoreView", "allowed_rows", "chroma_where", "where_conditions"]


@dataclass
class StoreView:
    """One generation opened for reading: its collection and an in-memory keyword index."""

    generation: int
    collection: Any
    ids: list[str]
    texts: list[str]
    metadatas: list[dict[str, Any]]
    keyword: KeywordIndex
    row: dict[str, int]
    topics: Any  # np.ndarray of str, one per row: filters without a Python loop
    sources: Any
    topic_names: list[str]  # sorted, distinct
    source_names: list[str]

    def passage(self, row: int) -> Passage:
        return Passage.from_metadata(self.texts[row], self.metadatas[row])


def where_conditions(
    view: StoreView, topic: str | None, source: str | None
) -> dict[str, Any] | None:
    """Metadata conditions for the filters, keyed by field; None without filters.

    Raises:
        KnowledgeError: If nothing has the topic or source (naming the options).
    """
    conditions: dict[str, Any] = {}
    if topic is not None:
        topics = view.topic_names
        wanted = topic.strip().lower()
        if wanted not in topics:
            close = difflib.get_close_matches(wanted, topics, n=1)
            hint = f" Did you mean {close[0]!r}?" if close else ""
            raise UnknownNameError(f"no topic {topic!r}.{hint} Topics: {', '.join(topics)}.")
        conditions["topic"] = {"topic": wanted}
    if source is not None:
        sources = view.source_names
        needle = source.strip().lower()
        matching = [s for s in sources if needle in s.lower()]
        if not matching:
            raise UnknownNameError(
                f"no source matches {source!r}. Sources include: {'; '.join(sources[:12])}."
            )
        conditions["source"] = {"source": {"$in": matching}}
    return conditions or None


def chroma_where(where: dict[str, Any] | None) -> dict[str, Any] | None:
    if not where:
        return None
    conditions = list(where.values())
    return conditions[0] if len(conditions) == 1 else {"$and": conditions}


def allowed_rows(view: StoreView, where: dict[str, Any]) -> Any:
    """Rows that meet the conditions `where_conditions` built, as a boolean mask (for BM25)."""
    import numpy as np

    allowed = np.ones(len(view.ids), dtype=bool)
    topic = where.get("topic")
    if topic is not None:
        allowed &= view.topics == topic["topic"]
    source = where.get("source")
    if source is not None:
        allowed &= np.isin(view.sources, source["source"]["$in"])
    return allowed
