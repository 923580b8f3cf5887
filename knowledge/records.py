"""What the knowledge store records and returns: manifest, documents, search hits, reports.

manifest = Manifest.model_validate_json(path.read_text())
print(manifest.generation, manifest.embedding_model, len(manifest.documents))
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime

from pydantic import BaseModel, Field

from surgagent.knowledge.passages import Passage

__all__ = ["AddReport", "DocumentRecord", "Hit", "Manifest", "now", "recovered_documents"]


def now() -> str:
    """The current UTC time, to the second, as ISO text."""
    return datetime.now(UTC).isoformat(timespec="seconds")


class DocumentRecord(BaseModel):
    """A user document in the store."""

    id: str
    path: str
    name: str
    sha256: str
    chunks: list[str]
    added: str


class Manifest(BaseModel):
    """What the current generation holds and what built it."""

    generation: int
    embedding_model: str
    corpus_version: str
    passages: int
    documents: dict[str, DocumentRecord] = Field(default_factory=dict)
    built: str = ""


class Hit(BaseModel):
    """One search result.

    Attributes:
        passage: The passage and its source.
        score: Fused rank score (higher is better; comparable within one search only).
        rank: 1 for the best hit.
        dense: Cosine similarity to the query, where the dense ranker found it.
        keyword: BM25 score, where the keyword ranker found it.
    """

    passage: Passage
    score: float
    rank: int
    dense: float | None = None
    keyword: float | None = None


class AddReport(BaseModel):
    """What `KnowledgeStore.add_documents` did, per file."""

    added: dict[str, int] = Field(default_factory=dict)  # path -> chunks
    replaced: dict[str, int] = Field(default_factory=dict)
    unchanged: list[str] = Field(default_factory=list)
    failed: dict[str, str] = Field(default_factory=dict)  # path -> why


def recovered_documents(passages: Sequence[Passage]) -> dict[str, DocumentRecord]:
    """Document records rebuilt from their chunks (when the manifest that held them is lost).

    The content hash is unknown, so adding such a file again replaces its chunks.
    """
    records: dict[str, DocumentRecord] = {}
    for passage in passages:
        doc = passage.id.rsplit("-", 1)[0]
        if doc not in records:
            records[doc] = DocumentRecord(
                id=doc,
                path=passage.document,
                name=passage.source,
                sha256="",
                chunks=[],
                added=now(),
            )
        records[doc].chunks.append(passage.id)
    return records
