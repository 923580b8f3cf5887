"""The base class of model backends: a LangChain chat model that can also answer about images.

A backend is built from one role's `ModelSettings`. As a chat model it serves the planner
(``bind_tools`` + ``invoke``/``stream``; LangGraph streams its tokens); as a `VisionBackend`
it serves perception (``answer(images, prompt)``).

    backend = load_backend(settings.planner)
    backend.check()                      # ConfigError at once if the model is unreachable
    reply = backend.bind_tools(tools).invoke(messages)
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

from langchain_core.language_models import BaseChatModel, LanguageModelInput
from langchain_core.messages import AIMessage, BaseMessage, HumanMessage
from langchain_core.runnables import Runnable
from langchain_core.tools import BaseTool
from langchain_core.utils.function_calling import convert_to_openai_tool

from surgagent.agent.backends._messages import REASONING_KEY, message_text
from surgagent.agent.settings import ModelSettings
from surgagent.tools.vision import Usage, VisionAnswer, image_parts, image_to_data_url

if TYPE_CHECKING:
    from PIL.Image import Image

__all__ = ["ChatBackend", "image_to_data_url", "image_parts", "usage_of"]


def usage_of(message: AIMessage, images: int = 0) -> Usage:
    """The `Usage` recorded on a reply (zeros where the backend did not report it)."""
    meta: dict[str, Any] = dict(message.usage_metadata or {})
    return Usage(
        prompt_tokens=int(meta.get("input_tokens", 0)),
        completion_tokens=int(meta.get("output_tokens", 0)),
        images=images,
    )


class ChatBackend(BaseChatModel, ABC):
    """A chat model built from one role's settings.

    Subclasses implement `_generate` (and `_stream` where they can) and `check`. Replies put
    the answer in ``content``, thinking in ``additional_kwargs["reasoning_content"]``, parsed
    tool calls in ``tool_calls`` (unparseable ones in ``invalid_tool_calls``) and token counts
    in ``usage_metadata``. Failures raise `BackendError`.
    """

    settings: ModelSettings
    role: str = "planner"
    """Which role the backend serves (``planner`` or ``perception``), for error messages."""
    takes_images: bool | None = None
    """Whether the served model takes images: None until its server has said it does not."""
    chars_per_token: float = 4.0
    """The rate prompts are estimated at, corrected once the server reports a real count."""

    def context_window(self) -> int | None:
        """The model's context in tokens, where the backend can tell (else None)."""
        return None

    @property
    def model_id(self) -> str:
        """The model's hub id, path or served name."""
        return self.settings.model

    @property
    def _llm_type(self) -> str:
        return f"surgagent-{self.settings.backend}"

    @property
    def _identifying_params(self) -> dict[str, Any]:
        return {"backend": self.settings.backend, "model": self.settings.model}

    @classmethod
    def from_settings(cls, settings: ModelSettings, role: str = "planner") -> ChatBackend:
        """Build the backend; loads nothing heavy until first use."""
        return cls(settings=settings, role=role)

    @property
    def env_prefix(self) -> str:
        """The environment prefix of this role's settings, e.g. ``SURGAGENT_PLANNER__``."""
        return f"SURGAGENT_{self.role.upper()}__"

    @abstractmethod
    def check(self) -> None:
        """Fail fast when the model cannot be used.

        Raises:
            ConfigError: With one sentence on what is wrong and how to configure the role.
        """

    def bind_tools(
        self,
        tools: Sequence[dict[str, Any] | type | Callable[..., Any] | BaseTool],
        *,
        tool_choice: str | None = None,
        **kwargs: Any,
    ) -> Runnable[LanguageModelInput, AIMessage]:
        """Offer ``tools`` to the model (OpenAI function schemas) on every call."""
        schemas = [convert_to_openai_tool(tool) for tool in tools]
        return self.bind(tools=schemas, **kwargs)

    def answer(
        self, images: Sequence[Image], prompt: str, *, max_tokens: int | None = None
    ) -> VisionAnswer:
        """Answer ``prompt`` about ``images`` (the `VisionBackend` protocol)."""
        content: list[str | dict[Any, Any]] = [
            *image_parts(images, self.settings.max_image_side),
            {"type": "text", "text": prompt},
        ]
        messages: list[BaseMessage] = [HumanMessage(content=content)]
        reply = self.invoke(messages, max_tokens=max_tokens or self.settings.max_tokens)
        assert isinstance(reply, AIMessage)
        reasoning = reply.additional_kwargs.get(REASONING_KEY)
        return VisionAnswer(
            text=message_text(reply).strip(),
            reasoning=reasoning or None,
            usage=usage_of(reply, images=len(images)),
        )
