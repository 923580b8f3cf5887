"""SurgAgent: an agentic assistant for reviewing surgical videos.

    from surgagent import SurgicalAgent
    result = SurgicalAgent.from_settings().invoke("When does clipping start?", case="case.mp4")

Names are loaded on first use, so ``import surgagent`` stays light.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from surgagent.agent.api import AgentEvent, SurgicalAgent
    from surgagent.agent.settings import Settings, get_settings
    from surgagent.graphs.result import AnswerResult

__all__ = ["AgentEvent", "AnswerResult", "Settings", "SurgicalAgent", "get_settings"]

_HOMES = {
    "AgentEvent": "surgagent.agent.api",
    "SurgicalAgent": "surgagent.agent.api",
    "AnswerResult": "surgagent.graphs.result",
    "Settings": "surgagent.agent.settings",
    "get_settings": "surgagent.agent.settings",
}


def __getattr__(name: str) -> Any:
    if name in _HOMES:
        return getattr(importlib.import_module(_HOMES[name]), name)
    raise AttributeError(f"module 'surgagent' has no attribute {name!r}")
