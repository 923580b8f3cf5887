"""The errors the knowledge store raises; their messages are for people.

`knowledge` imports nothing else of SurgAgent's, so it has its own small error family; the
retrieval tool turns them into tool errors and the CLI into one friendly line.

    raise DocumentError("notes.pdf is not a readable PDF (EOF marker not found)")
"""

from __future__ import annotations

__all__ = ["DocumentError", "KnowledgeError", "UnknownNameError"]


class KnowledgeError(Exception):
    """Base class: the store or its settings cannot do what was asked."""


class DocumentError(KnowledgeError, ValueError):
    """A document cannot be ingested: missing, empty, unsupported or unreadable."""


class UnknownNameError(KnowledgeError, ValueError):
    """A topic, source or document name the store does not have; the message lists options."""
