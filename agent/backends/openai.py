"""The ``openai`` backend: any OpenAI-compatible chat server, the production path to vLLM.

Serve the model with ``vllm serve MODEL --reasoning-parser qwen3 --enable-auto-tool-choice
--tool-call-parser qwen3_coder`` and point the role at it (``SURGAGENT_PLANNER__BASE_URL``).
Servers without those parsers work too: inline ``</think>`` and ``<tool_call>`` text is parsed
here. Thinking travels apart from the answer both ways (``reasoning``/``reasoning_content``
in, ``reasoning`` out). Transient failures are retried a bounded number of times, then raised
as `BackendError` with a sentence naming the endpoint and what went wrong.

    chat = OpenAIChat.from_settings(settings.planner)
    chat.check(); reply = chat.bind_tools(tools).invoke(messages)
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import logging
import queue
import re
import threading
import time
from collections.abc import (
    AsyncIterator,
    Awaitable,
    Callable,
    Generator,
    Iterable,
    Iterator,
    Sequence,
)
from typing import TYPE_CHECKING, Any, NamedTuple, TypeVar

from langchain_core.messages import AIMessage, AIMessageChunk, BaseMessage
from langchain_core.messages.ai import UsageMetadata
from langchain_core.messages.tool import (
    InvalidToolCall,
    ToolCall,
    ToolCallChunk,
    invalid_tool_call,
    tool_call,
    tool_call_chunk,
)
from langchain_core.outputs import ChatGeneration, ChatGenerationChunk, ChatResult
from pydantic import Field, PrivateAttr

from surgagent.agent.backends._messages import REASONING_KEY, to_openai_messages
from surgagent.agent.backends._parsing import (
    StreamEvent,
    StreamSplitter,
    new_call_id,
    parse_tool_calls,
    read_literals,
)
from surgagent.agent.backends.base import ChatBackend
from surgagent.agent.reach import SERVE_HINT, check_endpoint, error_reason
from surgagent.tools.answers import THINK_CLOSE, split_thinking
from surgagent.tools.errors import BackendError, ConfigError, ContextOverflow, ImagesRefused

if TYPE_CHECKING:
    from langchain_core.callbacks import AsyncCallbackManagerForLLMRun, CallbackManagerForLLMRun
    from openai import AsyncOpenAI, OpenAI

__all__ = ["OpenAIChat"]

logger = logging.getLogger(__name__)
T = TypeVar("T")

_BACKOFF_CAP = 8.0


class _Failure(NamedTuple):
    what: str  # "stopped answering: nothing came within 120 s"
    retryable: bool
    hint: str  # what to do next
    wait: float = 0.0  # seconds the server asked us to wait (Retry-After)
    refused_images: bool = False  # the server said its model takes no images
    context: tuple[int | None, int | None] | None = None  # over the context: (prompt, limit)


class _Overdue(Exception):
    """A request that did not finish by its deadline (the role's ``timeout``)."""


def _errors() -> tuple[type[BaseException], ...]:
    import httpx
    import openai

    # A body or stream line that is not JSON is the server's fault too, not a bug of ours.
    return (openai.APIError, httpx.HTTPError, json.JSONDecodeError, _Overdue)


# A request silent this long is reported as waiting, then again at each further interval.
NOTICE_AFTER = 10.0
NOTICE_EVERY = 20.0


def _within(
    deadline: float,
    produce: Callable[[Callable[[Any], None]], Iterable[T]],
    waiting: Callable[[float], None] | None = None,
) -> Generator[T]:
    """The items of a blocking request, raising `_Overdue` once ``deadline`` has passed.

    httpx's read timeout restarts with every byte, so a server trickling keep-alives (or a
    body a byte at a time) could hold a reader forever. The request therefore runs in a
    daemon thread and is waited for here against a clock. ``produce(keep)`` hands ``keep``
    what can be closed (the stream or the response) once its headers are in; it is closed
    when the caller stops reading, so the thread does not outlive the request for long.
    """
    box: queue.SimpleQueue[tuple[bool, Any]] = queue.SimpleQueue()
    closable: list[Any] = []
    end = object()

    def pump() -> None:
        try:
            for item in produce(closable.append):
                box.put((True, item))
        except BaseException as exc:  # handed to the reader, which raises it
            box.put((False, exc))
        else:
            box.put((True, end))

    threading.Thread(target=pump, name="surgagent-request", daemon=True).start()
    start = time.monotonic()
    notice = start + NOTICE_AFTER
    try:
        while True:
            now = time.monotonic()
            try:
                ok, item = box.get(timeout=max(min(deadline, notice) - now, 0.0))
            except queue.Empty:
                now = time.monotonic()
                if now < deadline:  # a long silence, not yet too long: say we are waiting
                    if waiting is not None:
                        waiting(now - start)
                    notice = now + NOTICE_EVERY
                    continue
                raise _Overdue() from None
            notice = time.monotonic() + NOTICE_AFTER
            if not ok:
                raise item
            if item is end:
                return
            yield item
    finally:
        for thing in closable:
            with contextlib.suppress(Exception):
                thing.close()


async def _abefore(
    deadline: float, step: Awaitable[T], waiting: Callable[[float], None] | None = None
) -> T:
    """Await one step of a request, raising `_Overdue` once ``deadline`` has passed.

    A long silence is reported to ``waiting`` as in `_within`.
    """
    task = asyncio.ensure_future(step)
    start = time.monotonic()
    notice = start + NOTICE_AFTER
    try:
        while True:
            now = time.monotonic()
            if now >= deadline:
                raise _Overdue()
            done, _ = await asyncio.wait({task}, timeout=min(deadline, notice) - now)
            if done:
                return task.result()
            now = time.monotonic()
            if now < deadline and waiting is not None:
                waiting(now - start)
            notice = now + NOTICE_EVERY
    finally:
        if not task.done():
            task.cancel()


def _field(obj: Any, name: str) -> Any:
    """A declared or extra (vLLM-only) field of an SDK object."""
    value = getattr(obj, name, None)
    if value is None:
        value = (getattr(obj, "model_extra", None) or {}).get(name)
    return value


def _usage(usage: Any) -> UsageMetadata | None:
    if usage is None:
        return None
    prompt = int(getattr(usage, "prompt_tokens", 0) or 0)
    completion = int(getattr(usage, "completion_tokens", 0) or 0)
    total = int(getattr(usage, "total_tokens", 0) or prompt + completion)
    return UsageMetadata(input_tokens=prompt, output_tokens=completion, total_tokens=total)


def _structured_calls(
    raw: Sequence[Any], tools: Sequence[dict[str, Any]] | None
) -> tuple[list[ToolCall], list[InvalidToolCall]]:
    calls: list[ToolCall] = []
    invalid: list[InvalidToolCall] = []
    for call in raw:
        function = getattr(call, "function", None)
        name = getattr(function, "name", None)
        arguments = str(getattr(function, "arguments", "") or "")
        call_id = getattr(call, "id", None) or new_call_id()
        try:
            args = json.loads(arguments) if arguments.strip() else {}
        except (ValueError, RecursionError) as exc:
            error = f"the arguments of {name!r} are not valid JSON ({exc}); send one JSON object"
            invalid.append(invalid_tool_call(name=name, args=arguments, id=call_id, error=error))
            continue
        if not name or not isinstance(args, dict):
            error = f"the call to {name!r} needs a function name and a JSON object of arguments"
            invalid.append(invalid_tool_call(name=name, args=arguments, id=call_id, error=error))
        else:
            calls.append(tool_call(name=name, args=read_literals(name, args, tools), id=call_id))
    return calls, invalid


def _says_no_images(said: str) -> bool:
    """Whether an HTTP 400 says the model takes no images (vLLM: "is not a multimodal")."""
    lowered = said.lower()
    return "multimodal" in lowered or ("image" in lowered and "not" in lowered)


_CONTEXT_LIMIT = re.compile(r"maximum context length is (\d+)")
_PROMPT_TOKENS = re.compile(r"(?:contains|requested) (?:at least )?(\d+) (?:input )?tokens")


def _context_overflow(said: str) -> tuple[int | None, int | None] | None:
    """``(prompt tokens, context)`` from a context-length 400 (vLLM's wording), else None."""
    lowered = said.lower()
    if "context length" not in lowered and "max_model_len" not in lowered:
        return None
    prompt, limit = _PROMPT_TOKENS.search(lowered), _CONTEXT_LIMIT.search(lowered)
    return (int(prompt.group(1)) if prompt else None, int(limit.group(1)) if limit else None)


def _rejection_hint(said: str) -> str:
    """What to do about an HTTP 400, from what the server said its cause was."""
    lowered = said.lower()
    if _context_overflow(said) is not None:
        return (
            "the conversation no longer fits the model's context: start a new session, or "
            "serve the model with a larger --max-model-len"
        )
    if _says_no_images(said):
        return (
            "the served model takes no images: set planner.vision = false (frames then go "
            "through ask_perception) or serve a vision-language model (Qwen3.5, Qwen-VL)"
        )
    if "tool" in lowered:
        return "tool calls need vLLM's --enable-auto-tool-choice --tool-call-parser qwen3_coder"
    return "the server rejected the request: check the server's log"


def _to_message(
    completion: Any, tools: Sequence[dict[str, Any]] | None, *, opened: bool
) -> AIMessage:
    """The reply message of a non-streamed ``chat.completion``.

    ``opened``: the prompt opened a think block and the server leaves thinking inline, so a
    reply without ``</think>`` is thinking that was cut off.
    """
    choice = completion.choices[0]
    message = choice.message
    content = message.content or ""
    reasoning = _field(message, "reasoning") or _field(message, "reasoning_content")
    if reasoning is None:
        # A server without a reasoning parser leaves the thinking inline.
        reasoning, content = split_thinking(content, thinking=opened)
    # vLLM's reasoning field keeps the newline before "</think>"; inline thinking is trimmed,
    # so the field is too: one reply reads the same from any server, whole or streamed.
    reasoning, content = (reasoning or "").strip(), content.strip()
    if message.tool_calls:
        calls, invalid = _structured_calls(message.tool_calls, tools)
    else:
        # A server without a tool parser leaves the calls as <tool_call> text.
        content, calls, invalid = parse_tool_calls(content, tools=tools)
    return AIMessage(
        content=content,
        additional_kwargs={REASONING_KEY: reasoning} if reasoning else {},
        tool_calls=calls,
        invalid_tool_calls=invalid,
        usage_metadata=_usage(completion.usage),
        response_metadata={"finish_reason": choice.finish_reason, "model_name": completion.model},
    )


class _ChunkReader:
    """Turns streamed ``chat.completion.chunk`` objects into LangChain message chunks.

    Reasoning deltas pass through, trimmed at both ends of the whole as inline thinking is.
    Content goes through a `StreamSplitter`, which strips inline ``<think>`` blocks and holds
    ``<tool_call>`` text back. With thinking on and
    a server not yet known to leave thinking inline or not (``inline`` None), content is held
    until a reasoning delta or ``</think>`` tells (or the stream ends), so an answer is never
    streamed as thinking nor thinking as an answer.
    """

    def __init__(
        self, thinking: bool, inline: bool | None, tools: Sequence[dict[str, Any]] | None
    ) -> None:
        self.tools = tools
        self.splitter: StreamSplitter | None = None
        if not thinking or inline is not None:
            self.splitter = StreamSplitter(bool(thinking and inline), tools=tools)
        self.held: list[str] = []  # content held until it is known how to split it
        self.closed_think = False  # a "</think>" came in the content: thinking is inline
        self._tail = ""  # the last characters of content, for a tag split across chunks
        self.fielded = False  # a reasoning delta was seen
        self.structured_calls = False
        self.calls: dict[int, dict[str, Any]] = {}  # structured tool calls by index
        self.finish_reason: str | None = None
        self.model: str | None = None
        self.count = 0

    def _split(self, thinking: bool) -> list[AIMessageChunk]:
        self.splitter = StreamSplitter(thinking, tools=self.tools)
        held, self.held = "".join(self.held), []
        return self._events(self.splitter.feed(held))

    @staticmethod
    def _events(events: Sequence[StreamEvent]) -> list[AIMessageChunk]:
        return [
            AIMessageChunk(content="", additional_kwargs={REASONING_KEY: text})
            if kind == "reasoning"
            else AIMessageChunk(content=text)
            for kind, text in events
        ]

    def _content(self, text: str) -> list[AIMessageChunk]:
        # Only the new text and a tag's length before it are searched: rescanning all the
        # content for every chunk would make a long reply quadratic.
        keep = len(THINK_CLOSE) - 1
        if not self.closed_think:
            self.closed_think = THINK_CLOSE in self._tail + text[:keep] or THINK_CLOSE in text
        self._tail = (self._tail + text[-keep:])[-keep:]
        if self.splitter is not None:
            return self._events(self.splitter.feed(text))
        self.held.append(text)
        return self._split(thinking=True) if self.closed_think else []

    def read(self, chunk: Any) -> list[AIMessageChunk]:
        """The message chunks one streamed chunk carries."""
        self.count += 1
        out: list[AIMessageChunk] = []
        for choice in (chunk.choices or [])[:1]:
            delta = choice.delta
            reasoning = _field(delta, "reasoning") or _field(delta, "reasoning_content")
            if reasoning:
                self.fielded = True
                if self.splitter is None:
                    out += self._split(thinking=False)
                assert self.splitter is not None
                out += self._events(self.splitter.feed_reasoning(reasoning))
            if delta.content:
                out += self._content(delta.content)
            for call in delta.tool_calls or []:
                self.structured_calls = True
                self._gather(call)
            if choice.finish_reason:
                self.finish_reason = choice.finish_reason
            self.model = chunk.model
        usage = _usage(getattr(chunk, "usage", None))
        if usage:
            out.append(AIMessageChunk(content="", usage_metadata=usage))
        return out

    def _gather(self, call: Any) -> None:
        """Collect one tool-call delta; calls are passed on whole, at the end."""
        gathered = self.calls.setdefault(call.index, {"id": None, "name": None, "args": []})
        function = call.function
        gathered["id"] = gathered["id"] or call.id
        gathered["name"] = gathered["name"] or getattr(function, "name", None)
        if getattr(function, "arguments", None):
            gathered["args"].append(function.arguments)

    def _whole_calls(self) -> list[ToolCallChunk]:
        """The streamed calls, read as strictly as a non-streamed reply's.

        LangChain would "repair" cut-off JSON arguments of merged chunks (closing open
        strings and brackets) and run the call; arguments that are not one whole JSON object
        are passed on as a JSON string instead, which makes them an invalid call the planner
        is told about, as the non-streamed path does.
        """
        pieces = []
        for index, call in sorted(self.calls.items()):
            arguments = "".join(call["args"])
            try:
                args = json.loads(arguments) if arguments.strip() else {}
            except (ValueError, RecursionError):  # RecursionError: nested too deep
                args = None
            if isinstance(args, dict):
                args = read_literals(call["name"] or "", args, self.tools)
                arguments = json.dumps(args, ensure_ascii=False) if args else arguments
            else:
                arguments = json.dumps(arguments)
            pieces.append(
                tool_call_chunk(name=call["name"], args=arguments, id=call["id"], index=index)
            )
        return pieces

    def end(self) -> list[AIMessageChunk]:
        """The chunks that were held back, parsed tool calls and the finish reason."""
        out = self._split(thinking=False) if self.splitter is None else []
        assert self.splitter is not None
        out += self._events(self.splitter.flush())
        if self.calls:
            out.append(AIMessageChunk(content="", tool_call_chunks=self._whole_calls()))
        if not self.structured_calls:
            parsed = self.splitter.finish()
            pieces = [
                tool_call_chunk(name=c["name"], args=json.dumps(c["args"]), id=c["id"], index=i)
                for i, c in enumerate(parsed.tool_calls)
            ]
            start = len(pieces)
            pieces += [
                tool_call_chunk(name=c["name"], args=c["args"], id=c["id"], index=start + i)
                for i, c in enumerate(parsed.invalid_tool_calls)
            ]
            if pieces:
                out.append(AIMessageChunk(content="", tool_call_chunks=pieces))
        meta = {"finish_reason": self.finish_reason, "model_name": self.model}
        out.append(AIMessageChunk(content="", response_metadata=meta))
        return out


class OpenAIChat(ChatBackend):
    """A chat backend talking to an OpenAI-compatible server (vLLM in production).

    Attributes:
        settings: The role's model settings (``base_url``, ``model``, sampling, timeouts).
        role: The role name used in messages and env var names (``planner``, ``perception``).
        retry_backoff: Seconds before the first retry; doubles on each further one.
    """

    retry_backoff: float = Field(default=0.25, ge=0)
    _sync_client: OpenAI | None = PrivateAttr(default=None)
    _async_client: tuple[asyncio.AbstractEventLoop, AsyncOpenAI] | None = PrivateAttr(default=None)
    _lock: threading.Lock = PrivateAttr(default_factory=threading.Lock)
    # Whether the server leaves thinking inline (no reasoning parser); learnt from replies.
    _inline: bool | None = PrivateAttr(default=None)
    _context_window: int | None = PrivateAttr(default=None)  # 0: the server does not say

    # -- configuration ---------------------------------------------------------------------

    def _env(self, name: str) -> str:
        return f"{self.env_prefix}{name.upper()}"

    @property
    def endpoint(self) -> str:
        """The base URL, without a trailing slash.

        Raises:
            ConfigError: If no base URL is configured.
        """
        if not self.settings.base_url:
            raise ConfigError(
                f"the {self.role} uses the openai backend but has no endpoint; set "
                f"{self._env('base_url')}=http://host:8000/v1 (a server started with "
                f"`{SERVE_HINT}`)"
            )
        return self.settings.base_url.rstrip("/")

    def _client_args(self) -> dict[str, Any]:
        from openai import Timeout

        key = self.settings.api_key
        return {
            "base_url": self.endpoint,
            "api_key": key.get_secret_value() if key else "EMPTY",
            "timeout": Timeout(self.settings.timeout, connect=self.settings.connect_timeout),
            "max_retries": 0,  # retried here, with our own policy and messages
        }

    def _client(self) -> OpenAI:
        with self._lock:
            if self._sync_client is None:
                from openai import OpenAI

                self._sync_client = OpenAI(**self._client_args())
            return self._sync_client

    def _aclient(self) -> AsyncOpenAI:
        # An async HTTP pool belongs to the event loop that opened it: a new loop, a new client.
        loop = asyncio.get_running_loop()
        with self._lock:
            if self._async_client is None or self._async_client[0] is not loop:
                from openai import AsyncOpenAI

                self._async_client = (loop, AsyncOpenAI(**self._client_args()))
            return self._async_client[1]

    def check(self) -> None:
        """Ask the endpoint which models it serves; fail fast if ours is not one of them.

        Raises:
            ConfigError: No base URL, endpoint unreachable or rejecting the key, or the model
                not served (the served ids and the closest one are named).
        """
        check_endpoint(self.settings, self.role)

    # -- requests and retries --------------------------------------------------------------

    def _request(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None,
        kwargs: dict[str, Any],
        *,
        stream: bool,
    ) -> tuple[dict[str, Any], bool, list[dict[str, Any]] | None]:
        """The ``chat.completions.create`` arguments, whether thinking is on, the tools."""
        options = {k: v for k, v in kwargs.items() if not k.startswith("ls_")}
        settings = self.settings
        thinking = options.pop("thinking", None)
        thinking = settings.thinking if thinking is None else bool(thinking)
        tools = options.pop("tools", None) or None
        tool_choice = options.pop("tool_choice", None)
        extra = dict(options.pop("extra_body", None) or {})
        template = {**extra.get("chat_template_kwargs", {}), "enable_thinking": thinking}
        body: dict[str, Any] = {
            "model": settings.model,
            "messages": to_openai_messages(messages),
            "temperature": options.pop("temperature", settings.temperature),
            "top_p": options.pop("top_p", settings.top_p),
            "max_tokens": options.pop("max_tokens", None) or settings.max_tokens,
        }
        if tools:
            body["tools"] = tools
            body["tool_choice"] = tool_choice or "auto"
        if stop:
            body["stop"] = stop
        if stream:
            body |= {"stream": True, "stream_options": {"include_usage": True}}
        # Anything else (seed, top_k, repetition_penalty, ...) goes into the JSON body as is.
        body["extra_body"] = {**extra, **options, "chat_template_kwargs": template}
        return body, thinking, tools

    def _describe(self, exc: BaseException) -> _Failure:
        import httpx
        import openai

        if isinstance(exc, _Overdue | openai.APITimeoutError | httpx.TimeoutException):
            wait = self.settings.timeout
            hint = "check that the server is running and not stuck or overloaded (its log)"
            return _Failure(f"stopped answering: nothing came within {wait:g} s", True, hint)
        if isinstance(exc, openai.APIStatusError):
            status = exc.status_code
            body = exc.body if isinstance(exc.body, dict) else {}
            said = str(body.get("message") or exc.message)[:300]
            hint = {
                400: _rejection_hint(said),
                401: f"set {self._env('api_key')}",
                403: f"set {self._env('api_key')}",
                404: f"check {self._env('model')} and {self._env('base_url')}",
            }.get(status, "check the server's log")
            retry_after = exc.response.headers.get("retry-after", "")
            wait = float(retry_after) if retry_after.replace(".", "", 1).isdigit() else 0.0
            retryable = status == 429 or status >= 500
            refused = status == 400 and _says_no_images(said)
            context = _context_overflow(said) if status == 400 else None
            return _Failure(
                f"answered HTTP {status} ({said})", retryable, hint, wait, refused, context
            )
        if isinstance(exc, json.JSONDecodeError):
            hint = f"is {self._env('base_url')} an OpenAI-compatible endpoint (ending in /v1)?"
            return _Failure("answered with a body that is not JSON", True, hint)
        if isinstance(exc, openai.APIConnectionError | httpx.TransportError):
            cause = exc.__cause__ or exc
            hint = f"is the server running? check {self._env('base_url')}"
            return _Failure(f"could not be reached ({error_reason(cause)})", True, hint)
        return _Failure(f"failed ({error_reason(exc)})", True, "check the server's log")

    def context_window(self) -> int | None:
        """The served model's context as the server lists it (vLLM: ``max_model_len``)."""
        if self._context_window is None:  # asked once (two threads may both ask: harmless)
            window = 0
            try:
                models = self._client().models.list(timeout=self.settings.connect_timeout)
                for model in models.data:
                    if model.id == self.settings.model:
                        listed = (getattr(model, "model_extra", None) or {}).get("max_model_len")
                        window = int(listed or 0)
            except (TypeError, ValueError):
                pass  # a listing we cannot read: the context stays unknown
            except _errors():
                pass  # unknown: no fitting beyond planner.max_context_tokens
            self._context_window = window
        return self._context_window or None

    def _waiting(self, seconds: float) -> None:
        logger.warning(
            "waiting for the %s at %s: %.0f s without a reply (gives up at %g s)",
            self.role,
            self.endpoint,
            seconds,
            self.settings.timeout,
        )

    def _deadline(self) -> float:
        """When a request starting now must have finished (``timeout`` covers all of it)."""
        return time.monotonic() + self.settings.timeout

    def _give_up(self, failure: _Failure, tries: int) -> BackendError:
        count = f"{tries} {'try' if tries == 1 else 'tries'}"
        message = f"{self.role} endpoint {self.endpoint} {failure.what} ({count}); {failure.hint}"
        if failure.refused_images:
            self.takes_images = False  # learnt: later requests leave frames out (vision auto)
            return ImagesRefused(message)
        if failure.context is not None:
            return ContextOverflow(message, *failure.context)
        # Final: this is the one place model requests are retried, and its tries are spent (a
        # caller retrying again would multiply the wait by its own count).
        return BackendError(
            f"{self.role} endpoint {self.endpoint} {failure.what} ({count}); {failure.hint}",
            retryable=False,
        )

    def _pause(self, failure: _Failure, attempt: int, tries: int) -> float:
        delay = min(self.retry_backoff * 2 ** (attempt - 1), _BACKOFF_CAP)
        delay = max(delay, min(failure.wait, _BACKOFF_CAP))
        logger.warning(
            "%s endpoint %s %s; retrying in %.2f s (try %d of %d)",
            self.role,
            self.endpoint,
            failure.what,
            delay,
            attempt + 1,
            tries,
        )
        return delay

    def _retrying(self, call: Callable[[], T]) -> T:
        tries = self.settings.max_retries + 1
        for attempt in itertools.count(1):
            try:
                return call()
            except _errors() as exc:
                failure = self._describe(exc)
                if not failure.retryable or attempt >= tries:
                    raise self._give_up(failure, attempt) from exc
                time.sleep(self._pause(failure, attempt, tries))
        raise AssertionError("unreachable")

    async def _aretrying(self, call: Callable[[], Awaitable[T]]) -> T:
        tries = self.settings.max_retries + 1
        for attempt in itertools.count(1):
            try:
                return await call()
            except _errors() as exc:
                failure = self._describe(exc)
                if not failure.retryable or attempt >= tries:
                    raise self._give_up(failure, attempt) from exc
                await asyncio.sleep(self._pause(failure, attempt, tries))
        raise AssertionError("unreachable")

    def _broken(self, reader: _ChunkReader, exc: BaseException | None) -> BackendError:
        if exc is None:
            why = "the stream ended without a finish reason"
        elif isinstance(exc, json.JSONDecodeError):
            why = "it sent a line that is not JSON"
        elif isinstance(exc, _Overdue):
            why = f"it did not finish within {self.settings.timeout:g} s"
        elif isinstance(exc, _errors()) and exc.__cause__ is not None:
            why = error_reason(exc.__cause__)
        else:
            why = error_reason(exc)
        return BackendError(
            f"{self.role} endpoint {self.endpoint} broke off its reply after {reader.count} "
            f"streamed chunks ({why}); check the server's log",
            retryable=False,  # part of the reply was passed on: it cannot be taken back
        )

    def _observe(
        self, thinking: bool, fielded: bool, closed_think: bool, finish_reason: str | None
    ) -> None:
        """Learn from a reply whether the server leaves thinking inline in the content.

        ``fielded``: reasoning came in a field of its own; ``closed_think``: the content held a
        ``</think>``.
        """
        if fielded:
            self._inline = False
        elif closed_think:
            self._inline = True
        elif thinking and finish_reason in ("stop", "tool_calls") and self._inline is None:
            # Asked to think, finished, and no thinking in a field nor inline: nothing to split.
            self._inline = False

    # -- LangChain chat-model hooks --------------------------------------------------------

    def _generate(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None = None,
        run_manager: CallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> ChatResult:
        body, thinking, tools = self._request(messages, stop, kwargs, stream=False)
        client = self._client()

        def produce(keep: Callable[[Any], None]) -> Iterator[Any]:
            with client.chat.completions.with_streaming_response.create(**body) as raw:
                keep(raw.http_response)  # headers are in: the body may still trickle
                yield raw.parse()

        def attempt() -> Any:
            return next(_within(self._deadline(), produce, self._waiting))

        return self._result(self._retrying(attempt), thinking, tools)

    async def _agenerate(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None = None,
        run_manager: AsyncCallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> ChatResult:
        body, thinking, tools = self._request(messages, stop, kwargs, stream=False)
        client = self._aclient()

        async def attempt() -> Any:
            return await _abefore(
                self._deadline(), client.chat.completions.create(**body), self._waiting
            )

        return self._result(await self._aretrying(attempt), thinking, tools)

    def _result(
        self, completion: Any, thinking: bool, tools: Sequence[dict[str, Any]] | None
    ) -> ChatResult:
        if not getattr(completion, "choices", None):
            raise BackendError(f"{self.role} endpoint {self.endpoint} answered without a reply")
        choice = completion.choices[0]
        fielded = bool(
            _field(choice.message, "reasoning") or _field(choice.message, "reasoning_content")
        )
        closed = THINK_CLOSE in (choice.message.content or "")
        self._observe(thinking, fielded, closed, choice.finish_reason)
        message = _to_message(completion, tools, opened=thinking and self._inline is True)
        return ChatResult(
            generations=[ChatGeneration(message=message)],
            llm_output={"model_name": completion.model},
        )

    def _stream(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None = None,
        run_manager: CallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> Iterator[ChatGenerationChunk]:
        body, thinking, tools = self._request(messages, stop, kwargs, stream=True)
        client = self._client()
        reader = _ChunkReader(thinking, self._inline, tools)

        def produce(keep: Callable[[Any], None]) -> Iterator[Any]:
            stream = client.chat.completions.create(**body)
            keep(stream)
            yield from stream

        def open_stream() -> tuple[Generator[Any], list[Any]]:
            # Retried until the first chunk is in: nothing has been passed on yet.
            chunks = _within(self._deadline(), produce, self._waiting)
            try:
                return chunks, [next(chunks)]
            except StopIteration:
                return chunks, []
            except BaseException:
                chunks.close()
                raise

        chunks, first = self._retrying(open_stream)
        try:
            for chunk in itertools.chain(first, chunks):
                for message in reader.read(chunk):
                    yield self._emit(message, run_manager)
        except _errors() as exc:
            raise self._broken(reader, exc) from exc
        finally:
            chunks.close()
        if reader.finish_reason is None:
            raise self._broken(reader, None)
        self._observe(thinking, reader.fielded, reader.closed_think, reader.finish_reason)
        for message in reader.end():
            yield self._emit(message, run_manager)

    async def _astream(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None = None,
        run_manager: AsyncCallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> AsyncIterator[ChatGenerationChunk]:
        body, thinking, tools = self._request(messages, stop, kwargs, stream=True)
        client = self._aclient()
        reader = _ChunkReader(thinking, self._inline, tools)

        async def open_stream() -> tuple[Any, float, list[Any]]:
            deadline = self._deadline()
            stream = await _abefore(deadline, client.chat.completions.create(**body), self._waiting)
            try:
                return (
                    stream,
                    deadline,
                    [await _abefore(deadline, stream.__anext__(), self._waiting)],
                )
            except StopAsyncIteration:
                return stream, deadline, []
            except BaseException:
                await stream.close()
                raise

        stream, deadline, first = await self._aretrying(open_stream)
        try:
            for chunk in first:
                for message in reader.read(chunk):
                    yield await self._aemit(message, run_manager)
            while True:
                try:
                    chunk = await _abefore(deadline, stream.__anext__(), self._waiting)
                except StopAsyncIteration:
                    break
                for message in reader.read(chunk):
                    yield await self._aemit(message, run_manager)
        except _errors() as exc:
            raise self._broken(reader, exc) from exc
        finally:
            await stream.close()
        if reader.finish_reason is None:
            raise self._broken(reader, None)
        self._observe(thinking, reader.fielded, reader.closed_think, reader.finish_reason)
        for message in reader.end():
            yield await self._aemit(message, run_manager)

    @staticmethod
    def _emit(
        message: AIMessageChunk, run_manager: CallbackManagerForLLMRun | None
    ) -> ChatGenerationChunk:
        chunk = ChatGenerationChunk(message=message)
        if run_manager is not None:
            run_manager.on_llm_new_token(chunk.text, chunk=chunk)
        return chunk

    @staticmethod
    async def _aemit(
        message: AIMessageChunk, run_manager: AsyncCallbackManagerForLLMRun | None
    ) -> ChatGenerationChunk:
        chunk = ChatGenerationChunk(message=message)
        if run_manager is not None:
            await run_manager.on_llm_new_token(chunk.text, chunk=chunk)
        return chunk
