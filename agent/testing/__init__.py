"""Helpers shipped for tests, evals and demos: tiny Qwen checkpoints, scripted models.

Importing this package loads nothing heavy; each name imports its module on first use.

    from surgagent.agent.testing import build_tiny_qwen3_5
    path = build_tiny_qwen3_5(tmp_path / "qwen3_5")
"""

from __future__ import annotations

import importlib
from typing import Any

__all__ = [
    "ScriptedChatModel",
    "ScriptedOpenAIServer",
    "ScriptedReply",
    "build_tiny_qwen2_5_vl",
    "build_tiny_qwen3_5",
    "call",
    "calls",
    "say",
]

_LAZY = {
    "build_tiny_qwen3_5": "surgagent.agent.testing.tiny_qwen",
    "build_tiny_qwen2_5_vl": "surgagent.agent.testing.tiny_qwen",
    "ScriptedChatModel": "surgagent.agent.testing.scripted",
    "call": "surgagent.agent.testing.scripted",
    "calls": "surgagent.agent.testing.scripted",
    "say": "surgagent.agent.testing.scripted",
    "ScriptedOpenAIServer": "surgagent.agent.testing.openai_server",
    "ScriptedReply": "surgagent.agent.testing.openai_server",
}


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'surgagent.agent.testing' has no attribute {name!r}")
    return getattr(importlib.import_module(module), name)


def __dir__() -> list[str]:
    return sorted([*globals(), *__all__])
