"""Errors the agent layer raises; the CLI and UI print them as one friendly line.

raise ConfigError("no planner model is reachable; set SURGAGENT_PLANNER__MODEL ...")
"""

from __future__ import annotations

from surgagent.tools.errors import (
    BackendError,
    CaseError,
    ConfigError,
    SurgAgentError,
    ToolInputError,
)

__all__ = [
    "BackendError",
    "CaseError",
    "ConfigError",
    "RunRefused",
    "SurgAgentError",
    "ToolInputError",
    "UserError",
]


class UserError(SurgAgentError):
    """A request from the user that cannot be carried out as asked (unknown session, ...)."""


class RunRefused(ValueError):
    """A run that cannot start as asked; nothing was run. The message says what to change.

    Raised by an eval run (an unreadable task set or bad shard, a task without a spec, a run
    folder holding another run, a results file another run is writing) and by a LangGraph
    server run (no or unknown case, no question, a model out of reach). A ValueError, not one
    of our errors: the LangGraph server shows a ValueError's message to its client (it hides
    those of types it does not know), and anything else `run_eval` raises is a bug.
    """
