"""Errors the agent layer raises; the CLI and UI print them as one friendly line.

raise ConfigError("no planner model is reachable; set SURGAGENT_PLANNER__MODEL ...")
"""

from __future__ import annotations

from tools.errors import BackendError, CaseError, SurgAgentError, ToolInputError

__all__ = [
    "BackendError",
    "CaseError",
    "ConfigError",
    "SurgAgentError",
    "ToolInputError",
    "UserError",
]


class ConfigError(SurgAgentError):
    """The settings do not describe something that can run (model missing, bad backend)."""


class UserError(SurgAgentError):
    """A request from the user that cannot be carried out as asked (unknown session, ...)."""
