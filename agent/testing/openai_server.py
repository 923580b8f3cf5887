"""A scripted OpenAI-compatible chat server on loopback, for tests, evals and UI demos.

It speaks the HTTP API that vLLM and OpenAI serve (``GET /v1/models``, ``POST
/v1/chat/completions`` with and without SSE streaming, reasoning fields, tool calls split
across chunks, usage, error bodies), but its replies come from a script instead of a model.

    with ScriptedOpenAIServer([ScriptedReply(content="Calot's triangle is clear.")]) as server:
        chat = OpenAIChat(settings=ModelSettings(backend="openai", base_url=server.base_url))

Each chat request takes the next `ScriptedReply` of the list (a plain string is shorthand for
a content-only reply), or asks a callable ``(request_json) -> ScriptedReply | str`` that can
answer depending on the question. Replies can also fail on purpose (``status=503``, ``hang``,
``break_after``), so retry and timeout paths are tested over real sockets. The server runs in
a background thread, serves requests concurrently (``latency`` and ``max_concurrency`` make it
behave like a busy model server) and records every request body in ``requests``.
"""

from __future__ import annotations

import itertools
import json
import logging
import sys
import threading
import time
import uuid
from collections.abc import Callable, Iterator, Sequence
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import TracebackType
from typing import Any, Literal

from pydantic import BaseModel, Field

__all__ = ["DEFAULT_SERVED_MODEL", "ScriptedOpenAIServer", "ScriptedReply", "Script"]

logger = logging.getLogger(__name__)

DEFAULT_SERVED_MODEL = "Qwen/Qwen3.5-9B"


class ScriptedReply(BaseModel):
    """One scripted answer of the server, or one scripted failure.

    Attributes:
        content: The answer text.
        reasoning: The model's thinking, or None for a reply without any.
        tool_calls: ``(name, arguments)`` pairs; a dict is sent as JSON, a string verbatim (so
            tests can send arguments that are not valid JSON).
        reasoning_field: The message/delta field that carries the reasoning: ``reasoning``
            (recent vLLM), ``reasoning_content`` (older vLLM, DeepSeek) or None for a server
            without a reasoning parser, which leaves ``…</think>`` inline in the content.
        think_open_tag: With inline reasoning, also write the opening ``<think>`` (Qwen3.5's
            prompt already ends with it, so by default only the closing tag is written).
        tool_format: ``openai`` for structured tool calls (a server with a tool parser);
            ``qwen_xml`` or ``hermes`` to leave them as ``<tool_call>`` text in the content.
        finish_reason: Overrides the automatic ``tool_calls``/``stop``.
        usage: ``(prompt_tokens, completion_tokens)``; None estimates them (4 chars a token).
        status: HTTP status; anything but 200 answers an OpenAI-style error body instead.
        error: The error message sent with a non-200 status.
        delay: Seconds to wait before answering (on top of the server's ``latency``).
        hang: Never answer (until the server closes), to test client timeouts.
        break_after: Drop the connection after this many stream chunks (0: before any
            response, also for non-streaming requests), to test broken connections.
        garbage: Answer HTTP 200 with a body that is not JSON (streamed: a ``data:`` line
            that is not JSON after the first chunk), as a broken proxy or server might.
        trickle: Never finish, but send a keep-alive every ``trickle`` seconds: an SSE
            comment after the first chunk when streamed, otherwise one space at a time of a
            JSON body (valid leading whitespace), so a per-read timeout never fires.
    """

    content: str = ""
    reasoning: str | None = None
    tool_calls: list[tuple[str, dict[str, Any] | str]] = Field(default_factory=list)
    reasoning_field: Literal["reasoning", "reasoning_content"] | None = "reasoning"
    think_open_tag: bool = False
    tool_format: Literal["openai", "qwen_xml", "hermes"] = "openai"
    finish_reason: str | None = None
    usage: tuple[int, int] | None = None
    status: int = Field(default=200, ge=100, le=599)
    error: str | None = None
    delay: float = Field(default=0.0, ge=0)
    hang: bool = False
    break_after: int | None = Field(default=None, ge=0)
    garbage: bool = False
    trickle: float | None = Field(default=None, gt=0)


Script = Sequence[ScriptedReply | str] | Callable[[dict[str, Any]], ScriptedReply | str]


def _args_json(args: dict[str, Any] | str) -> str:
    return args if isinstance(args, str) else json.dumps(args, ensure_ascii=False)


def _qwen_xml(name: str, args: dict[str, Any] | str) -> str:
    if isinstance(args, str):
        body = args
    else:
        body = "".join(
            f"<parameter={key}>\n"
            f"{value if isinstance(value, str) else json.dumps(value)}\n</parameter>\n"
            for key, value in args.items()
        )
    return f"<tool_call>\n<function={name}>\n{body}</function>\n</tool_call>"


def _hermes(name: str, args: dict[str, Any] | str) -> str:
    call = f'{{"name": {json.dumps(name)}, "arguments": {_args_json(args)}}}'
    return f"<tool_call>\n{call}\n</tool_call>"


def _visible_text(reply: ScriptedReply) -> tuple[str, str | None]:
    """The content as the server sends it, and the reasoning left for a reasoning field."""
    content, reasoning = reply.content, reply.reasoning
    if reply.tool_format != "openai" and reply.tool_calls:
        render = _qwen_xml if reply.tool_format == "qwen_xml" else _hermes
        calls = "\n".join(render(name, args) for name, args in reply.tool_calls)
        content = f"{content}\n\n{calls}" if content else calls
    if reasoning is not None and reply.reasoning_field is None:
        opening = "<think>\n" if reply.think_open_tag else ""
        content = f"{opening}{reasoning}\n</think>\n\n{content}"
        reasoning = None
    elif reasoning is not None:
        # vLLM's qwen3 parser splits "thinking\n</think>\n\nanswer" at the tag and keeps
        # the newlines on both sides.
        reasoning += "\n"
        content = f"\n\n{content}" if content else content
    return content, reasoning


def _pieces(text: str, size: int) -> list[str]:
    return [text[i : i + size] for i in range(0, len(text), size)]


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    # Many clients connect at once in the eval benchmarks; a short listen backlog would make
    # the kernel drop connections and the clients retry a second later.
    request_queue_size = 256
    owner: ScriptedOpenAIServer

    def handle_error(self, request: Any, client_address: Any) -> None:
        # Clients that time out or drop a stream on purpose are normal here, not errors.
        if isinstance(sys.exc_info()[1], ConnectionError | TimeoutError):
            logger.debug("scripted server: connection from %s ended abruptly", client_address)
        else:
            logger.exception("scripted server: a request from %s failed", client_address)


class ScriptedOpenAIServer:
    """A real HTTP server on 127.0.0.1 that answers chat requests from a script.

    Args:
        script: Replies consumed in order (strings are content-only replies), or a callable
            ``(request_json) -> ScriptedReply | str`` asked for every chat request.
        models: The served model ids (``GET /v1/models``); a chat request for another model
            gets vLLM's 404. Empty: accept any model.
        latency: Seconds each chat request takes before its reply starts (a busy model).
        max_concurrency: Most chat requests answered at once; others queue (None: no limit).
        chunk_chars: Characters per streamed content, reasoning or tool-argument delta.
        chunk_delay: Seconds between streamed chunks.
        api_key: When set, requests without ``Authorization: Bearer <api_key>`` get a 401.

    Attributes:
        requests: The JSON bodies of the chat requests received, in arrival order.
        peak_concurrency: The most chat requests that were being answered at the same time.

    Example:
        >>> with ScriptedOpenAIServer(["4 clips"]) as server:
        ...     server.base_url.endswith("/v1")
        True
    """

    def __init__(
        self,
        script: Script = (),
        *,
        models: Sequence[str] = (DEFAULT_SERVED_MODEL,),
        latency: float = 0.0,
        max_concurrency: int | None = None,
        chunk_chars: int = 8,
        chunk_delay: float = 0.0,
        api_key: str | None = None,
    ) -> None:
        if chunk_chars < 1:
            raise ValueError(f"chunk_chars must be at least 1, got {chunk_chars}")
        if max_concurrency is not None and max_concurrency < 1:
            raise ValueError(f"max_concurrency must be at least 1 or None, got {max_concurrency}")
        self.models = list(models)
        self.latency = latency
        self.chunk_chars = chunk_chars
        self.chunk_delay = chunk_delay
        self.api_key = api_key
        self.requests: list[dict[str, Any]] = []
        self.peak_concurrency = 0
        self._answer: Callable[[dict[str, Any]], ScriptedReply | str] | None = None
        self._queue: list[ScriptedReply | str] = []
        if callable(script):
            self._answer = script
        else:
            self._queue = list(script)
        self._lock = threading.Lock()
        self._slots = threading.BoundedSemaphore(max_concurrency) if max_concurrency else None
        self._inflight = 0
        self._stopped = threading.Event()
        self._httpd: _Server | None = None
        self._port: int | None = None
        self._thread: threading.Thread | None = None

    # -- lifecycle -------------------------------------------------------------------------

    def start(self) -> ScriptedOpenAIServer:
        """Bind a free port on 127.0.0.1 and serve in a daemon thread.

        Returns:
            The server itself, for chaining.
        """
        if self._httpd is not None:
            return self
        self._stopped.clear()
        httpd = _Server(("127.0.0.1", 0), _Handler)
        httpd.owner = self
        self._httpd = httpd
        self._port = int(httpd.server_address[1])
        self._thread = threading.Thread(
            target=httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        )
        self._thread.start()
        logger.debug("scripted OpenAI server listening on %s", self.base_url)
        return self

    def close(self) -> None:
        """Stop serving; hanging and delayed replies are released at once."""
        self._stopped.set()
        if self._httpd is not None:
            self._httpd.shutdown()
            self._httpd.server_close()
        if self._thread is not None:
            self._thread.join(timeout=5)
        self._httpd = None
        self._thread = None

    def __enter__(self) -> ScriptedOpenAIServer:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    @property
    def port(self) -> int:
        """The port the server listens (or last listened) on.

        Raises:
            RuntimeError: If the server was never started.
        """
        if self._port is None:
            raise RuntimeError("the scripted server was never started; use it as a context manager")
        return self._port

    @property
    def base_url(self) -> str:
        """The OpenAI base URL, ``http://127.0.0.1:PORT/v1``."""
        return f"http://127.0.0.1:{self.port}/v1"

    # -- script ----------------------------------------------------------------------------

    def add(self, *replies: ScriptedReply | str) -> None:
        """Append replies to the script (a list script only).

        Raises:
            TypeError: If the server answers through a callable.
        """
        if self._answer is not None:
            raise TypeError("this server answers through a callable; it has no reply list")
        with self._lock:
            self._queue.extend(replies)

    @property
    def replies_left(self) -> int:
        """How many scripted replies have not been used yet (0 for a callable script)."""
        with self._lock:
            return len(self._queue)

    def _next_reply(self, request: dict[str, Any]) -> ScriptedReply:
        with self._lock:
            self.requests.append(request)
            if self._answer is None:
                if not self._queue:
                    return ScriptedReply(
                        status=500,
                        error=f"the scripted server has no reply left for request "
                        f"{len(self.requests)}; add more ScriptedReply items to its script",
                    )
                item = self._queue.pop(0)
        if self._answer is not None:
            try:
                item = self._answer(request)
            except Exception as exc:  # a bug in the test's script: say so in the reply
                logger.exception("scripted server: the reply function failed")
                message = f"the scripted reply function raised {type(exc).__name__}: {exc}"
                return ScriptedReply(status=500, error=message)
        return ScriptedReply(content=item) if isinstance(item, str) else item

    def _enter(self) -> None:
        if self._slots is not None:
            self._slots.acquire()
        with self._lock:
            self._inflight += 1
            self.peak_concurrency = max(self.peak_concurrency, self._inflight)

    def _leave(self) -> None:
        with self._lock:
            self._inflight -= 1
        if self._slots is not None:
            self._slots.release()

    def _wait(self, seconds: float) -> bool:
        """Sleep ``seconds`` unless the server closes first; True if it is still running."""
        if seconds > 0:
            self._stopped.wait(seconds)
        return not self._stopped.is_set()


_ids = itertools.count(1)


def _estimate_tokens(text: str) -> int:
    return max(1, len(text) // 4)


def _usage(reply: ScriptedReply, request: dict[str, Any]) -> dict[str, Any]:
    if reply.usage is not None:
        prompt, completion = reply.usage
    else:
        prompt = _estimate_tokens(json.dumps(request.get("messages", [])))
        generated = reply.content + (reply.reasoning or "")
        generated += "".join(name + _args_json(args) for name, args in reply.tool_calls)
        completion = _estimate_tokens(generated)
    thought = _estimate_tokens(reply.reasoning) if reply.reasoning else 0
    return {
        "prompt_tokens": prompt,
        "total_tokens": prompt + completion,
        "completion_tokens": completion,
        "prompt_tokens_details": None,
        "completion_tokens_details": {"reasoning_tokens": min(thought, completion)},
    }


def _completion(reply: ScriptedReply, request: dict[str, Any], model: str) -> dict[str, Any]:
    """The non-streaming ``chat.completion`` body, as vLLM shapes it."""
    content, reasoning = _visible_text(reply)
    message: dict[str, Any] = {"role": "assistant", "content": content, "refusal": None}
    message |= {"annotations": None, "audio": None, "function_call": None}
    if reasoning is not None and reply.reasoning_field is not None:
        message[reply.reasoning_field] = reasoning
    structured = reply.tool_calls if reply.tool_format == "openai" else []
    if structured:
        message["content"] = content or None
        message["tool_calls"] = [
            {
                "id": f"chatcmpl-tool-{uuid.uuid4().hex[:16]}",
                "type": "function",
                "function": {"name": name, "arguments": _args_json(args)},
            }
            for name, args in structured
        ]
    finish = reply.finish_reason or ("tool_calls" if structured else "stop")
    return {
        "id": f"chatcmpl-{next(_ids)}",
        "object": "chat.completion",
        "created": int(time.time()),
        "model": model,
        "choices": [{"index": 0, "message": message, "logprobs": None, "finish_reason": finish}],
        "usage": _usage(reply, request),
    }


def _chunks(
    reply: ScriptedReply, request: dict[str, Any], model: str, size: int
) -> Iterator[dict[str, Any]]:
    """The ``chat.completion.chunk`` events of a streamed reply, as vLLM shapes them."""
    head: dict[str, Any] = {"id": f"chatcmpl-{next(_ids)}", "object": "chat.completion.chunk"}
    head |= {"created": int(time.time()), "model": model}

    def chunk(delta: dict[str, Any], finish: str | None = None) -> dict[str, Any]:
        choice = {"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}
        return {**head, "choices": [choice]}

    content, reasoning = _visible_text(reply)
    yield chunk({"role": "assistant", "content": ""})
    if reasoning is not None and reply.reasoning_field is not None:
        for piece in _pieces(reasoning, size):
            yield chunk({reply.reasoning_field: piece})
    for piece in _pieces(content, size):
        yield chunk({"content": piece})
    structured = reply.tool_calls if reply.tool_format == "openai" else []
    for index, (name, args) in enumerate(structured):
        call_id = f"chatcmpl-tool-{uuid.uuid4().hex[:16]}"
        function = {"name": name, "arguments": None}  # vLLM's header names the function only
        yield chunk(
            {
                "tool_calls": [
                    {"index": index, "id": call_id, "type": "function", "function": function}
                ]
            }
        )
        for piece in _pieces(_args_json(args), size):
            yield chunk({"tool_calls": [{"index": index, "function": {"arguments": piece}}]})
    yield chunk({}, reply.finish_reason or ("tool_calls" if structured else "stop"))
    if (request.get("stream_options") or {}).get("include_usage"):
        usage = {k: v for k, v in _usage(reply, request).items() if v is not None}
        yield {**head, "choices": [], "usage": usage}  # vLLM leaves out the empty details


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: _Server
    # Idle keep-alive connections give their thread back after this many seconds.
    timeout = 60
    # Headers and body go out in separate writes; with Nagle's algorithm on, the body waits
    # for the client's delayed ACK (40 ms a reply on Linux), which real servers don't add.
    disable_nagle_algorithm = True

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - stdlib signature
        logger.debug("scripted server: " + format, *args)

    @property
    def owner(self) -> ScriptedOpenAIServer:
        return self.server.owner

    # -- plumbing --------------------------------------------------------------------------

    def _send_json(self, status: int, body: dict[str, Any]) -> None:
        data = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def _send_error(self, status: int, message: str) -> None:
        try:
            kind = HTTPStatus(status).phrase.replace(" ", "")
        except ValueError:
            kind = "Error"
        error: dict[str, Any] = {"message": message, "type": kind, "param": None, "code": status}
        self._send_json(status, {"error": error, "object": "error", "message": message})

    def _authorised(self) -> bool:
        key = self.owner.api_key
        if key is None or self.headers.get("Authorization") == f"Bearer {key}":
            return True
        self._send_error(401, "Incorrect API key provided.")
        return False

    # -- routes ----------------------------------------------------------------------------

    def do_GET(self) -> None:  # noqa: N802 - stdlib naming
        """Serve ``GET /v1/models``."""
        if not self._authorised():
            return
        if self.path.rstrip("/") != "/v1/models":
            self._send_error(404, f"no route for GET {self.path}")
            return
        created = int(time.time())
        data = [
            {
                "id": name,
                "object": "model",
                "created": created,
                "owned_by": "surgagent",
                "root": name,
            }
            for name in self.owner.models
        ]
        self._send_json(200, {"object": "list", "data": data})

    def do_POST(self) -> None:  # noqa: N802 - stdlib naming
        """Serve ``POST /v1/chat/completions``."""
        length = int(self.headers.get("Content-Length") or 0)
        raw = self.rfile.read(length)
        if not self._authorised():
            return
        if self.path.rstrip("/") != "/v1/chat/completions":
            self._send_error(404, f"no route for POST {self.path}")
            return
        try:
            request = json.loads(raw)
        except json.JSONDecodeError as exc:
            self._send_error(400, f"the request body is not JSON: {exc}")
            return
        if not isinstance(request, dict) or not isinstance(request.get("messages"), list):
            self._send_error(400, "the request needs a 'messages' list")
            return
        owner = self.owner
        model = str(request.get("model", ""))
        if owner.models and model not in owner.models:
            self._send_error(404, f"The model `{model}` does not exist.")
            return
        owner._enter()
        try:
            self._reply(owner._next_reply(request), request, model)
        except (BrokenPipeError, ConnectionResetError):
            logger.debug("scripted server: the client went away")
        finally:
            owner._leave()

    def _reply(self, reply: ScriptedReply, request: dict[str, Any], model: str) -> None:
        owner = self.owner
        if not owner._wait(owner.latency + reply.delay):
            self.close_connection = True
            return
        if reply.hang:
            owner._stopped.wait()
            self.close_connection = True
            return
        if reply.break_after == 0:
            self.close_connection = True
            return
        if reply.status != 200:
            self._send_error(reply.status, reply.error or f"scripted failure {reply.status}")
            return
        if reply.trickle is not None and not request.get("stream"):
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Transfer-Encoding", "chunked")
            self.end_headers()
            while owner._wait(reply.trickle):
                self.wfile.write(b"1\r\n \r\n")
                self.wfile.flush()
            self.close_connection = True
        elif reply.garbage and not request.get("stream"):
            data = b"<html><body>502 Bad Gateway</body></html>"
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)
        elif request.get("stream"):
            self._stream(reply, request, model)
        else:
            self._send_json(200, _completion(reply, request, model))

    def _stream(self, reply: ScriptedReply, request: dict[str, Any], model: str) -> None:
        owner = self.owner
        self.send_response(200)
        self.send_header("Content-Type", "text/event-stream; charset=utf-8")
        self.send_header("Cache-Control", "no-cache")
        self.send_header("Transfer-Encoding", "chunked")
        self.end_headers()

        def write(event: str) -> None:
            data = event.encode()
            self.wfile.write(f"{len(data):x}\r\n".encode() + data + b"\r\n")
            self.wfile.flush()

        for sent, event in enumerate(_chunks(reply, request, model, owner.chunk_chars)):
            if reply.break_after is not None and sent >= reply.break_after:
                # Leave the chunked body unfinished: the client sees a dropped connection.
                self.close_connection = True
                return
            if sent and not owner._wait(owner.chunk_delay):
                self.close_connection = True
                return
            write(f"data: {json.dumps(event)}\n\n")
            if reply.trickle is not None:
                while owner._wait(reply.trickle):
                    write(": keep-alive\n\n")
                self.close_connection = True
                return
            if reply.garbage:
                write("data: {this is not json\n\n")
                write("data: [DONE]\n\n")
                self.wfile.write(b"0\r\n\r\n")
                self.wfile.flush()
                return
        write("data: [DONE]\n\n")
        self.wfile.write(b"0\r\n\r\n")
        self.wfile.flush()
