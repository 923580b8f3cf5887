"""Passages: the unit the store indexes and answers cite, and the curated corpus on disk.

The curated corpus is one markdown file per passage under ``knowledge/corpus/<topic>/``, with
YAML front matter naming where its facts come from (``id, title, topic, source, document,
year, section, url, licence``). User documents become passages through
`surgagent.knowledge.documents`.

    passages = load_corpus()          # the bundled corpus, validated
    version = corpus_version(passages)
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Iterable
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from surgagent.knowledge.errors import KnowledgeError

__all__ = [
    "CORPUS_DIR",
    "Passage",
    "corpus_version",
    "load_corpus",
    "parse_front_matter",
]

CORPUS_DIR = Path(__file__).resolve().parent / "corpus"
_FRONT_MATTER = re.compile(r"\A---\s*\n(.*?)\n---\s*\n(.*)\Z", re.S)


class Passage(BaseModel):
    """One citable passage with where it comes from.

    Attributes:
        id: Unique id the planner cites, e.g. ``cvs-strasberg-criteria``.
        text: The passage itself.
        title: Its title (a user document's title for its chunks).
        topic: Corpus topic (``cvs``, ``bailout``, ...) or ``user`` for user documents.
        source: The organisation or authors; for user documents the file name.
        document: The full reference; for user documents the file path.
        year: Year of the source, where known.
        section: Section of the source the facts come from (heading path for documents).
        page: Page number (PDF chunks).
        url: A link to the source, where known.
        licence: How the text may be used.
        origin: ``corpus`` (bundled, curated) or ``user`` (added with ``knowledge add``).
    """

    model_config = ConfigDict(frozen=True)

    id: str = Field(pattern=r"^[a-z0-9][a-z0-9._-]*$")
    text: str = Field(min_length=1)
    title: str
    topic: str = "user"
    source: str
    document: str = ""
    year: int | None = None
    section: str = ""
    page: int | None = None
    url: str = ""
    licence: str = ""
    origin: Literal["corpus", "user"] = "corpus"

    def metadata(self) -> dict[str, str | int]:
        """Flat metadata for chromadb (no None values)."""
        return {k: v for k, v in self.model_dump(exclude={"text"}).items() if v is not None}

    @classmethod
    def from_metadata(cls, text: str, metadata: dict[str, Any]) -> Passage:
        """Rebuild a passage from what `metadata` stored."""
        return cls(text=text, **metadata)


def parse_front_matter(text: str) -> tuple[dict[str, Any], str]:
    """Split ``---`` YAML front matter from a markdown body; ``({}, text)`` without one.

    Raises:
        KnowledgeError: If the front matter is not valid YAML mapping.
    """
    import yaml

    match = _FRONT_MATTER.match(text)
    if not match:
        return {}, text
    try:
        meta = yaml.safe_load(match.group(1)) or {}
    except yaml.YAMLError as error:
        raise KnowledgeError(f"front matter is not valid YAML: {error}") from error
    if not isinstance(meta, dict):
        raise KnowledgeError("front matter must be a mapping of fields")
    return meta, match.group(2).strip()


def _corpus_passage(path: Path) -> Passage:
    meta, body = parse_front_matter(path.read_text(encoding="utf-8"))
    if not meta:
        raise KnowledgeError(f"{path} has no front matter")
    fields = {key: ("" if value is None else value) for key, value in meta.items()}
    if fields.get("year") == "":
        fields["year"] = None
    try:
        return Passage(text=body, origin="corpus", **fields)
    except ValidationError as error:
        raise KnowledgeError(f"{path}: {error.errors()[0]['msg']}") from error


def load_corpus(root: Path | None = None) -> list[Passage]:
    """Every passage of the curated corpus under ``root`` (the bundled one by default).

    Raises:
        KnowledgeError: If a file is malformed or two passages share an id.
    """
    root = root or CORPUS_DIR
    passages: list[Passage] = []
    seen: dict[str, Path] = {}
    for path in sorted(root.rglob("*.md")):
        passage = _corpus_passage(path)
        if passage.id in seen:
            raise KnowledgeError(f"passage id {passage.id!r} is in {seen[passage.id]} and {path}")
        seen[passage.id] = path
        passages.append(passage)
    return passages


def corpus_version(passages: Iterable[Passage]) -> str:
    """A short content hash of ``passages``: it changes when any passage changes."""
    digest = hashlib.sha256()
    for passage in sorted(passages, key=lambda p: p.id):
        digest.update(passage.model_dump_json().encode())
    return digest.hexdigest()[:16]
