"""SurgAgent: an agentic assistant for reviewing surgical videos.

    from agent import SurgicalAgent
    result = SurgicalAgent.from_settings().invoke("When does clipping start?", case="case.mp4")

Names are loaded on first use, so ``import agent`` stays light.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from agent.api import AgentEvent, SurgicalAgent
    from agent.settings import Settings, get_settings
    from graphs.result import AnswerResult

__all__ = ["AgentEvent", "AnswerResult", "Settings", "SurgicalAgent", "get_settings"]

_HOMES = {
    "AgentEvent": "agent.api",
    "SurgicalAgent": "agent.api",
    "AnswerResult": "graphs.result",
    "Settings": "agent.settings",
    "get_settings": "agent.settings",
}


def __getattr__(name: str) -> Any:
    if name in _HOMES:
        return getattr(importlib.import_module(_HOMES[name]), name)
    raise AttributeError(f"module 'agent' has no attribute {name!r}")
