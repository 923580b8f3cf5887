"""Model backends, chosen per role by name: ``openai``, ``transformers`` or ``vllm``.

Only the chosen backend's module is imported, so picking ``openai`` never loads torch.

    planner = load_backend(settings.planner)
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING

from surgagent.tools.errors import ConfigError

if TYPE_CHECKING:
    from surgagent.agent.backends.base import ChatBackend
    from surgagent.agent.settings import ModelSettings

__all__ = ["BACKENDS", "load_backend"]

BACKENDS: dict[str, str] = {
    "openai": "surgagent.agent.backends.openai:OpenAIChat",
    "transformers": "surgagent.agent.backends.transformers:TransformersChat",
    "vllm": "surgagent.agent.backends.vllm:VLLMChat",
}


def load_backend(settings: ModelSettings, role: str = "planner") -> ChatBackend:
    """Build the backend that ``settings.backend`` names for ``role`` (nothing loads yet).

    Raises:
        ConfigError: If the backend name is unknown.
    """
    target = BACKENDS.get(settings.backend)
    if target is None:
        raise ConfigError(
            f"unknown backend {settings.backend!r}; choose one of {', '.join(BACKENDS)}"
        )
    module_name, _, attr = target.partition(":")
    cls = getattr(importlib.import_module(module_name), attr)
    backend: ChatBackend = cls.from_settings(settings, role=role)
    return backend
