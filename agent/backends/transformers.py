"""The in-process `transformers` backend: a Qwen-family VLM run with ``generate``.

The model (``AutoModelForImageTextToText`` + ``AutoProcessor``) loads on first use and is
shared by every backend naming the same model, device and dtype. Prompts use the chat template
the checkpoint ships (tools, thinking switch, images); replies are parsed from the raw text.

    backend = TransformersChat(settings=ModelSettings(model="/models/Qwen3.5-9B"), role="planner")
    reply = backend.bind_tools(tools).invoke(messages)
"""

from __future__ import annotations

import base64
import io
import logging
import queue
import threading
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from langchain_core.messages import AIMessageChunk, BaseMessage
from langchain_core.outputs import ChatGeneration, ChatGenerationChunk, ChatResult

from surgagent.agent.backends._messages import REASONING_KEY, to_openai_messages
from surgagent.agent.backends._parsing import StreamSplitter, parse_reply
from surgagent.agent.backends.base import ChatBackend
from surgagent.agent.reach import check_role
from surgagent.tools.errors import BackendError, ConfigError

if TYPE_CHECKING:
    from langchain_core.callbacks import CallbackManagerForLLMRun
    from PIL.Image import Image

__all__ = ["TransformersChat", "clear_model_cache"]

logger = logging.getLogger(__name__)

# Added tokens a reply is parsed by: kept when decoding even where a tokenizer marks them special.
_KEEP_TOKENS = ("<think>", "</think>", "<tool_call>", "</tool_call>")
_DTYPES = ("bfloat16", "float16", "float32")


@dataclass(frozen=True)
class _Loaded:
    """A loaded checkpoint and what generation needs to know about it."""

    model: Any
    processor: Any
    template: str
    drop_ids: frozenset[int]

    def decode(self, ids: Sequence[int]) -> str:
        kept = [i for i in ids if i not in self.drop_ids]
        text: str = self.processor.tokenizer.decode(
            kept, skip_special_tokens=False, clean_up_tokenization_spaces=False
        )
        return text


_MODELS: dict[tuple[str, str, str], _Loaded] = {}
_MODELS_LOCK = threading.Lock()


def clear_model_cache() -> None:
    """Forget every loaded model (frees its memory once no backend holds it)."""
    with _MODELS_LOCK:
        _MODELS.clear()


def _resolve_device(device: str, dtype: str) -> tuple[str, str]:
    import torch

    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    if dtype == "auto":
        dtype = "bfloat16" if device.startswith("cuda") else "float32"
    if dtype not in _DTYPES:
        raise ConfigError(f"dtype {dtype!r} is not supported; choose auto or one of {_DTYPES}")
    return device, dtype


def _template_of(processor: Any) -> str | None:
    template = getattr(processor, "chat_template", None)
    if not template:
        template = getattr(getattr(processor, "tokenizer", None), "chat_template", None)
    if isinstance(template, dict):
        template = template.get("default")
    return template if isinstance(template, str) and template else None


def _load_checkpoint(source: str, device: str, dtype: str) -> _Loaded:
    import torch
    from transformers import AutoModelForImageTextToText, AutoProcessor

    model = AutoModelForImageTextToText.from_pretrained(
        source, dtype=getattr(torch, dtype), device_map=device
    )
    processor = AutoProcessor.from_pretrained(source)
    template = _template_of(processor)
    if template is None:
        raise ValueError("the checkpoint ships no chat template (chat_template.jinja)")
    tokenizer = processor.tokenizer
    special = {i for i, tok in tokenizer.added_tokens_decoder.items() if tok.special}
    special.update(tokenizer.all_special_ids)
    keep = {tokenizer.convert_tokens_to_ids(t) for t in _KEEP_TOKENS}
    return _Loaded(model.eval(), processor, template, frozenset(special - keep))


def _image_from_url(url: str) -> Image:
    from PIL import Image as PILImage

    if url.startswith("data:"):
        _, _, payload = url.partition(",")
        try:
            return PILImage.open(io.BytesIO(base64.b64decode(payload))).convert("RGB")
        # Bad base64 or bytes that are no image; ImportError: once ultralytics is loaded it
        # patches PIL.Image.open to try a HEIF plugin on unreadable bytes.
        except (ValueError, OSError, ImportError) as exc:
            raise BackendError(
                f"image data URL {url[:40]!r}... is not a readable image ({exc})", retryable=False
            ) from exc
    path = Path(url.removeprefix("file://"))
    remote = "://" in url and not url.startswith("file://")
    if remote or not path.is_file():
        raise BackendError(
            f"image {url[:80]!r} cannot be read here; send images as data URLs or local files",
            retryable=False,
        )
    return PILImage.open(path).convert("RGB")


def _image_of(part: dict[str, Any]) -> Image | None:
    """The image a content part carries (OpenAI ``image_url`` or LangChain ``image``)."""
    if part.get("type") == "image_url":
        url = part["image_url"]
        return _image_from_url(url["url"] if isinstance(url, dict) else url)
    if part.get("type") != "image":
        return None
    if part.get("image") is not None and not isinstance(part["image"], str):
        return part["image"]  # already a PIL image
    if part.get("base64"):
        mime = part.get("mime_type", "image/jpeg")
        return _image_from_url(f"data:{mime};base64,{part['base64']}")
    source = part.get("url") or part.get("path") or part.get("image")
    if not source:
        raise BackendError(f"image part {sorted(part)} carries no image", retryable=False)
    return _image_from_url(str(source))


def _with_images(messages: list[dict[str, Any]]) -> tuple[list[dict[str, Any]], list[Image]]:
    """Turn image parts into ``{"type": "image", "image": PIL}``; collect them in order."""
    images: list[Image] = []
    for message in messages:
        if isinstance(message.get("content"), list):
            parts = []
            for part in message["content"]:
                image = _image_of(part) if isinstance(part, dict) else None
                if image is None:
                    parts.append(part)
                else:
                    images.append(image)
                    parts.append({"type": "image", "image": image})
            message["content"] = parts
    return messages, images


def _generation_error(exc: BaseException, model: str) -> BackendError:
    import torch

    out_of_memory = getattr(torch, "OutOfMemoryError", torch.cuda.OutOfMemoryError)
    if isinstance(exc, out_of_memory):
        return BackendError(
            f"model {model!r} ran out of memory while generating; lower max_tokens or "
            "max_image_side, send fewer frames, or use a smaller dtype or a bigger device",
            retryable=False,
        )
    # A failed local generate is deterministic: running it again would fail the same way.
    return BackendError(f"model {model!r} failed while generating: {exc}", retryable=False)


class _DeltaStreamer:
    """A ``generate`` streamer that decodes new tokens and queues text deltas."""

    def __init__(self, loaded: _Loaded, stop: Sequence[str] | None = None) -> None:
        self.loaded = loaded
        self.stop = stop
        self.deltas: queue.Queue[str | None] = queue.Queue()
        self.ids: list[int] = []
        self.generated = 0
        self._sent = ""
        self._prompt_seen = False
        self._ended = False

    def put(self, value: Any) -> None:
        if not self._prompt_seen:  # generate hands over the prompt first
            self._prompt_seen = True
            return
        new = [int(i) for i in value.reshape(-1).tolist()]
        self.generated += len(new)
        self.ids += new
        self._emit(final=False)

    def _emit(self, *, final: bool) -> None:
        text = _cut(self.loaded.decode(self.ids), self.stop)
        # A trailing U+FFFD may be a character whose bytes have not all arrived yet.
        if (final or not text.endswith("\ufffd")) and text.startswith(self._sent):
            if len(text) > len(self._sent):
                self.deltas.put(text[len(self._sent) :])
                self._sent = text

    def end(self) -> None:
        if not self._ended:
            self._ended = True
            self._emit(final=True)
            self.deltas.put(None)


def _cancel_criteria(cancel: threading.Event) -> Any:
    import torch
    from transformers import StoppingCriteria, StoppingCriteriaList

    class _Cancelled(StoppingCriteria):
        def __call__(self, input_ids: Any, scores: Any, **kwargs: Any) -> Any:
            return torch.full((input_ids.shape[0],), cancel.is_set(), device=input_ids.device)

    return StoppingCriteriaList([_Cancelled()])


class TransformersChat(ChatBackend):
    """A chat model run in-process with transformers (see the module docstring)."""

    def check(self) -> None:
        """Fail fast when the model is neither a local checkpoint nor obtainable.

        Raises:
            ConfigError: If the folder is missing or incomplete, or a hub id is not cached and
                the hub cannot be reached.
        """
        check_role(self.settings, self.role)

    def _loaded(self) -> _Loaded:
        device, dtype = _resolve_device(self.settings.device, self.settings.dtype)
        source = self.settings.model
        if Path(source).expanduser().exists():
            source = str(Path(source).expanduser().resolve())
        key = (source, device, dtype)
        with _MODELS_LOCK:
            if key not in _MODELS:
                self.check()
                logger.info("loading %s model %s on %s (%s)", self.role, source, device, dtype)
                try:
                    _MODELS[key] = _load_checkpoint(source, device, dtype)
                except Exception as exc:  # any loading failure is a configuration problem
                    reason = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
                    raise ConfigError(
                        f"{self.role} model {self.settings.model!r} could not be loaded "
                        f"({type(exc).__name__}: {reason}); check that it is a complete "
                        "checkpoint (config.json, weights, processor files) or download it again"
                    ) from exc
            return _MODELS[key]

    def render(
        self,
        messages: Sequence[BaseMessage],
        *,
        tools: Sequence[dict[str, Any]] | None = None,
        thinking: bool | None = None,
    ) -> tuple[str, list[Image]]:
        """Render ``messages`` with the checkpoint's chat template.

        Args:
            messages: The conversation.
            tools: OpenAI tool schemas to offer.
            thinking: Let the model think (default: the role's setting).

        Returns:
            The prompt text and the images it refers to, in order.

        Raises:
            BackendError: If the template rejects the conversation or an image is unreadable.
        """
        loaded = self._loaded()
        rendered = to_openai_messages(messages, args_as_dict=True, reasoning_key=REASONING_KEY)
        rendered, images = _with_images(rendered)
        options: dict[str, Any] = {}
        if "enable_thinking" in loaded.template:
            options["enable_thinking"] = self.settings.thinking if thinking is None else thinking
        try:
            prompt = loaded.processor.apply_chat_template(
                rendered,
                chat_template=loaded.template,
                tools=list(tools) if tools else None,
                add_generation_prompt=True,
                tokenize=False,
                **options,
            )
        except Exception as exc:  # jinja errors, including the template's own raise_exception
            raise BackendError(
                f"the chat template of {self.settings.model!r} rejected the conversation: {exc}",
                retryable=False,
            ) from exc
        return str(prompt), images

    def _prepare(
        self, messages: Sequence[BaseMessage], tools: Any, thinking: bool | None
    ) -> tuple[_Loaded, dict[str, Any], bool]:
        loaded = self._loaded()
        prompt, images = self.render(messages, tools=tools, thinking=thinking)
        try:
            inputs = loaded.processor(text=[prompt], images=images or None, return_tensors="pt")
        except (ValueError, RuntimeError) as exc:
            raise BackendError(
                f"the processor of {self.settings.model!r} could not encode the prompt: {exc}",
                retryable=False,
            ) from exc
        prefilled = prompt.rstrip().endswith("<think>")
        return loaded, dict(inputs.to(loaded.model.device)), prefilled

    def _generation_kwargs(self, max_tokens: int | None, stop: list[str] | None) -> dict[str, Any]:
        settings = self.settings
        kwargs: dict[str, Any] = {"max_new_tokens": max_tokens or settings.max_tokens}
        if settings.temperature > 0:
            kwargs.update(do_sample=True, temperature=settings.temperature, top_p=settings.top_p)
        else:
            kwargs.update(do_sample=False, temperature=None, top_p=None, top_k=None)
        if stop:
            kwargs["stop_strings"] = list(stop)
        return kwargs

    def _run(self, loaded: _Loaded, inputs: dict[str, Any], kwargs: dict[str, Any]) -> Any:
        import torch

        if "stop_strings" in kwargs:
            kwargs["tokenizer"] = loaded.processor.tokenizer
        try:
            with torch.inference_mode():
                return loaded.model.generate(**inputs, **kwargs)
        except (RuntimeError, ValueError) as exc:  # torch.OutOfMemoryError is a RuntimeError
            raise _generation_error(exc, self.settings.model) from exc

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
        loaded, inputs, prefilled = self._prepare(messages, tools, thinking)
        output = self._run(loaded, inputs, self._generation_kwargs(max_tokens, stop))
        prompt_len = inputs["input_ids"].shape[1]
        new_ids = output[0, prompt_len:].tolist()
        text = _cut(loaded.decode(new_ids), stop)
        usage = {"input_tokens": prompt_len, "output_tokens": len(new_ids)}
        reply = parse_reply(text, usage=usage, thinking=prefilled, tools=tools)
        return ChatResult(generations=[ChatGeneration(message=reply)])

    def _stream(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None = None,
        run_manager: CallbackManagerForLLMRun | None = None,
        *,
        tools: Sequence[dict[str, Any]] | None = None,
        max_tokens: int | None = None,
        thinking: bool | None = None,
        **kwargs: Any,
    ) -> Iterator[ChatGenerationChunk]:
        loaded, inputs, prefilled = self._prepare(messages, tools, thinking)
        streamer = _DeltaStreamer(loaded, stop)
        cancel = threading.Event()
        options = self._generation_kwargs(max_tokens, stop)
        options.update(streamer=streamer, stopping_criteria=_cancel_criteria(cancel))
        failures: list[BaseException] = []

        def work() -> None:
            try:
                self._run(loaded, inputs, options)
            except BaseException as exc:  # handed to the consuming thread below
                failures.append(exc)
            finally:
                streamer.end()

        thread = threading.Thread(target=work, daemon=True, name="surgagent-generate")
        thread.start()
        splitter = StreamSplitter(prefilled, tools=tools)
        try:
            while (delta := streamer.deltas.get()) is not None:
                for kind, text in splitter.feed(delta):
                    yield _chunk(kind, text, run_manager)
        finally:
            cancel.set()  # stops generation when the consumer leaves early
            thread.join()
        if failures:
            raise failures[0]
        for kind, text in splitter.flush():
            yield _chunk(kind, text, run_manager)
        usage = {"input_tokens": inputs["input_ids"].shape[1], "output_tokens": streamer.generated}
        final = splitter.finish(usage=usage)
        yield ChatGenerationChunk(
            message=AIMessageChunk(
                content="",
                tool_calls=final.tool_calls,
                invalid_tool_calls=final.invalid_tool_calls,
                usage_metadata=final.usage_metadata,
                chunk_position="last",
            )
        )


def _chunk(
    kind: str, text: str, run_manager: CallbackManagerForLLMRun | None
) -> ChatGenerationChunk:
    if kind == "reasoning":
        return ChatGenerationChunk(
            message=AIMessageChunk(content="", additional_kwargs={REASONING_KEY: text})
        )
    chunk = ChatGenerationChunk(message=AIMessageChunk(content=text))
    if run_manager is not None:
        run_manager.on_llm_new_token(text, chunk=chunk)
    return chunk


def _cut(text: str, stop: Sequence[str] | None) -> str:
    """Cut ``text`` at the first stop string (generate keeps the stop string itself)."""
    for marker in stop or ():
        index = text.find(marker)
        if index != -1:
            text = text[:index]
    return text
