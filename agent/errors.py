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
    "SurgAgentError",
    "ToolInputError",
    "UserError",
]


class UserError(SurgAgentError):
    """A request from the user that cannot be carried out as asked (unknown session, ...)."""
