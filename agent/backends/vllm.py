"""The in-process `vllm` backend: ``vllm.LLM`` for batch evaluations on a GPU.

vLLM pins its own torch and transformers, so it lives in its own environment (``pip install
surgagent[vllm]`` there); this module imports it only when a model is first used. Replies are
the raw completion parsed like the transformers backend's. For interactive use, prefer
``vllm serve`` with the ``openai`` backend.

    backend = VLLMChat(settings=ModelSettings(backend="vllm", model="Qwen/Qwen3.5-9B"))
    reply = backend.bind_tools(tools).invoke(messages)
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from langchain_core.messages import BaseMessage
from langchain_core.outputs import ChatGeneration, ChatResult

from surgagent.agent.backends._messages import REASONING_KEY, to_openai_messages
from surgagent.agent.backends._parsing import parse_reply
from surgagent.agent.backends.base import ChatBackend
from surgagent.agent.reach import check_role
from surgagent.tools.errors import BackendError, ConfigError

if TYPE_CHECKING:
    from langchain_core.callbacks import CallbackManagerForLLMRun

__all__ = ["VLLMChat"]

logger = logging.getLogger(__name__)

# Leftover end-of-turn markers, in case the tokenizer does not count them as special.
_END_MARKERS = ("<|im_end|>", "<|endoftext|>")

_ENGINES: dict[tuple[str, str], tuple[Any, threading.Lock]] = {}
_ENGINES_LOCK = threading.Lock()


def _image_url_parts(messages: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Rewrite LangChain ``image`` blocks as the ``image_url`` parts vLLM's chat API reads."""
    for message in messages:
        content = message.get("content")
        if not isinstance(content, list):
            continue
        parts = []
        for part in content:
            if isinstance(part, dict) and part.get("type") == "image":
                url = part.get("url")
                if part.get("base64"):
                    url = f"data:{part.get('mime_type', 'image/jpeg')};base64,{part['base64']}"
                part = {"type": "image_url", "image_url": {"url": url}}
            parts.append(part)
        message["content"] = parts
    return messages


class VLLMChat(ChatBackend):
    """A chat model run in-process by ``vllm.LLM`` (see the module docstring).

    Attributes:
        max_model_len: Context length the engine reserves memory for.
        max_images: Most images one prompt may carry.
    """

    max_model_len: int = 32768
    max_images: int = 8

    def check(self) -> None:
        """Fail fast when vLLM is not installed or the model cannot be found.

        Raises:
            ConfigError: With install or configuration instructions.
        """
        check_role(self.settings, self.role)

    def _engine(self) -> tuple[Any, threading.Lock]:
        dtype = self.settings.dtype
        key = (self.settings.model, dtype)
        with _ENGINES_LOCK:
            if key not in _ENGINES:
                self.check()
                from vllm import LLM

                logger.info("starting vLLM for %s model %s", self.role, self.settings.model)
                try:
                    engine = LLM(
                        model=self.settings.model,
                        dtype=dtype,
                        max_model_len=self.max_model_len,
                        limit_mm_per_prompt={"image": self.max_images, "video": 0},
                    )
                except Exception as exc:  # any start-up failure is a configuration problem
                    raise ConfigError(
                        f"vLLM could not load the {self.role} model {self.settings.model!r} "
                        f"({type(exc).__name__}: {exc}); check the model, dtype and GPU memory"
                    ) from exc
                # The engine is not safe to call from several threads at once.
                _ENGINES[key] = (engine, threading.Lock())
            return _ENGINES[key]

    def _generate(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None = None,
        run_manager: CallbackManagerForLLMRun | None = None,
        *,
        tools: Sequence[dict[str, Any]] | None = None,
        max_tokens: int | None = None,
        thinking: bool | None = None,
        **kwargs: Any,
    ) -> ChatResult:
        from vllm import SamplingParams

        engine, lock = self._engine()
        enable_thinking = self.settings.thinking if thinking is None else thinking
        rendered = to_openai_messages(messages, args_as_dict=True, reasoning_key=REASONING_KEY)
        for message in rendered:
            if REASONING_KEY in message:  # newer templates read `reasoning`
                message["reasoning"] = message[REASONING_KEY]
        params = SamplingParams(
            temperature=self.settings.temperature,
            top_p=self.settings.top_p if self.settings.temperature > 0 else 1.0,
            max_tokens=max_tokens or self.settings.max_tokens,
            stop=stop or None,
        )
        try:
            with lock:
                outputs = engine.chat(
                    _image_url_parts(rendered),
                    params,
                    use_tqdm=False,
                    tools=list(tools) if tools else None,
                    chat_template_kwargs={"enable_thinking": enable_thinking},
                )
        except (RuntimeError, ValueError) as exc:
            raise BackendError(
                f"vLLM failed on the {self.role} model {self.settings.model!r}: {exc}",
                retryable=False,
            ) from exc
        result = outputs[0]
        completion = result.outputs[0]
        text = completion.text
        for marker in _END_MARKERS:
            text = text.replace(marker, "")
        prompt = getattr(result, "prompt", None)
        prefilled = prompt.rstrip().endswith("<think>") if prompt else enable_thinking
        usage = {
            "input_tokens": len(result.prompt_token_ids or []),
            "output_tokens": len(completion.token_ids or []),
        }
        reply = parse_reply(text, usage=usage, thinking=prefilled, tools=tools)
        reply.response_metadata["finish_reason"] = completion.finish_reason
        return ChatResult(generations=[ChatGeneration(message=reply)])
