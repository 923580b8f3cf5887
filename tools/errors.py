"""The typed errors shared by every part of SurgAgent.

Two kinds matter to the planner loop: a `ToolInputError` is something the planner can fix
(it goes back to the model as an error tool message), a `BackendError` is a failing model
or server (retried a bounded number of times, then the run ends with ``status="error"``).

    raise ToolInputError("time 95:00 is past the end of the case (42:10)")
"""

from __future__ import annotations

import difflib
from collections.abc import Iterable

__all__ = [
    "BackendError",
    "CaseError",
    "ConfigError",
    "SurgAgentError",
    "ToolInputError",
    "suggest",
]


class SurgAgentError(Exception):
    """Base class of every error SurgAgent raises on purpose; its message is for people."""


class ToolInputError(SurgAgentError, ValueError):
    """A tool was called with arguments it cannot use; the planner can correct them."""


class ConfigError(SurgAgentError):
    """The settings describe something that cannot run; the message says how to fix it.

    Examples: a model or weights file that is missing, a bad backend, weights that do not fit.
    """


class CaseError(SurgAgentError):
    """A case cannot be opened: missing, unreadable, corrupt or unknown."""


class BackendError(SurgAgentError):
    """A model backend or server failed (down, timed out, out of memory).

    Args:
        message: What failed, in one sentence.
        retryable: Whether the caller may try again (a timeout or 5xx the raising layer did
            not retry itself). False for bad requests, and once the raising layer has spent
            its own retries: model requests are retried in one place, their backend.
    """

    def __init__(self, message: str, *, retryable: bool = True) -> None:
        super().__init__(message)
        self.retryable = retryable


class ImagesRefused(BackendError):
    """The model's server refused images: the model it serves takes none (text-only)."""

    def __init__(self, message: str) -> None:
        super().__init__(message, retryable=False)


class ContextOverflow(BackendError):
    """The server refused a prompt longer than the model's context.

    Args:
        message: What failed, in one sentence.
        prompt_tokens: The prompt's length in tokens, where the server said it.
        limit: The model's context in tokens, where the server said it.
    """

    def __init__(self, message: str, prompt_tokens: int | None, limit: int | None) -> None:
        super().__init__(message, retryable=False)
        self.prompt_tokens = prompt_tokens
        self.limit = limit


def suggest(value: str, options: Iterable[str]) -> str:
    """Return a ``" Did you mean 'x'?"`` hint for ``value``, or an empty string."""
    close = difflib.get_close_matches(value, list(options), n=1, cutoff=0.6)
    return f" Did you mean {close[0]!r}?" if close else ""
