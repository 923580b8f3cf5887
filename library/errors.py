"""The one error the case library raises; its message says what went wrong and what next."""

from __future__ import annotations

__all__ = ["LibraryError"]


class LibraryError(Exception):
    """A library request that cannot be carried out (unknown case, unreadable database)."""
