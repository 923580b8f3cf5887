"""Whether each model role can be reached, checked without loading a model or the graph.

A role is reachable when its checkpoint is a local folder, is in the Hugging Face cache or can
be downloaded (``transformers``, ``vllm``), or when its endpoint lists the model
(``openai``). These checks import neither torch nor LangChain, so a command that cannot run
says so within a second of starting.

    check_roles(get_settings())  # ConfigError with one sentence on what to set
"""

from __future__ import annotations

import importlib.util
import os
import re
import socket
import threading
from pathlib import Path
from typing import TYPE_CHECKING
from urllib.parse import urlparse

from surgagent.agent.errors import ConfigError
from surgagent.tools.errors import suggest

if TYPE_CHECKING:
    from surgagent.agent.settings import ModelSettings, Settings

__all__ = [
    "SERVE_HINT",
    "check_endpoint",
    "check_model",
    "check_role",
    "check_roles",
    "error_reason",
]

SERVE_HINT = (
    "vllm serve MODEL --reasoning-parser qwen3 --enable-auto-tool-choice "
    "--tool-call-parser qwen3_coder"
)
VLLM_INSTALL_HINT = (
    "vLLM pins older torch/transformers: install it in its own environment "
    "(pip install 'surgagent[vllm]'), see README; or run `vllm serve MODEL` there and use "
    "the openai backend"
)
_PROBE_TIMEOUT = 1.0
_TRUE = {"1", "true", "yes", "on"}


def error_reason(exc: BaseException) -> str:
    """An exception as a lower-case clause (``connection refused``), errno prefix dropped."""
    text = re.sub(r"^\[Errno -?\d+\]\s*", "", str(exc).strip().rstrip(".")) or type(exc).__name__
    return text[:1].lower() + text[1:]


def _env(role: str, name: str) -> str:
    return f"SURGAGENT_{role.upper()}__{name.upper()}"


def check_roles(settings: Settings) -> None:
    """Check the planner and, where it is turned on, the perception role.

    Raises:
        ConfigError: For the first role that cannot be reached, saying how to configure it.
    """
    check_role(settings.planner, "planner")
    if settings.perception.enabled:
        check_role(settings.perception, "perception")


def check_role(settings: ModelSettings, role: str) -> None:
    """Check one role's backend, model and endpoint.

    Raises:
        ConfigError: With one sentence on what is missing and how to configure the role.
    """
    if settings.backend == "openai":
        check_endpoint(settings, role)
        return
    if settings.backend == "vllm" and importlib.util.find_spec("vllm") is None:
        raise ConfigError(
            f"the {role} backend 'vllm' needs the vllm package, which is not installed "
            f"here; {VLLM_INSTALL_HINT}"
        )
    check_model(settings.model, role)


def check_model(model: str, role: str = "planner") -> None:
    """Check, without loading it, that ``model`` is a local checkpoint or can be downloaded.

    Takes well under a second: a local folder needs a ``config.json``; a hub id must be in the
    local Hugging Face cache, or the hub must answer a one-second connection probe (never when
    ``HF_HUB_OFFLINE`` is set).

    Raises:
        ConfigError: With one sentence on what is missing and how to configure the role.
    """
    path = Path(model).expanduser()
    if path.exists() or model.startswith(("/", ".", "~")) or model.count("/") > 1:
        if not (path / "config.json").is_file():
            what = "has no config.json" if path.is_dir() else "does not exist"
            raise ConfigError(
                f"{role} model folder {str(path)!r} {what}; point {_env(role, 'model')} at a "
                "checkpoint folder (config.json, weights, processor files) or a hub id"
            )
        return
    from huggingface_hub import try_to_load_from_cache

    try:
        cached = try_to_load_from_cache(model, "config.json")
    except ValueError as exc:
        raise ConfigError(
            f"{role} model {model!r} is neither a folder nor a hub id ({exc}); set "
            f"{_env(role, 'model')} to a checkpoint folder or an id such as 'Qwen/Qwen3.5-9B'"
        ) from None
    if isinstance(cached, str) or (not _hub_offline() and _hub_reachable()):
        return
    raise ConfigError(
        f"{role} model {model!r} is not available offline: download it (hf download {model}), "
        f"set {_env(role, 'model')}=/path/to/model, or serve it with vLLM and set "
        f"{_env(role, 'backend')}=openai and {_env(role, 'base_url')}=http://host:8000/v1"
    )


def check_endpoint(settings: ModelSettings, role: str) -> None:
    """Ask the endpoint which models it serves; fail fast if the role's is not one of them.

    Raises:
        ConfigError: No base URL, endpoint unreachable or rejecting the key, or the model
            not served (the served ids and the closest one are named).
    """
    import httpx

    if not settings.base_url:
        raise ConfigError(
            f"the {role} uses the openai backend but has no endpoint; set "
            f"{_env(role, 'base_url')}=http://host:8000/v1 (a server started with "
            f"`{SERVE_HINT}`)"
        )
    url, key = settings.base_url.rstrip("/"), settings.api_key
    headers = {"Authorization": f"Bearer {key.get_secret_value()}"} if key else {}
    start = f"{role} endpoint {url}"
    fix = f"start the server (`{SERVE_HINT}`) or set {_env(role, 'base_url')} to where it runs"
    try:
        response = httpx.get(f"{url}/models", headers=headers, timeout=settings.connect_timeout)
    except httpx.TimeoutException:
        wait = settings.connect_timeout
        raise ConfigError(f"{start} did not answer within {wait:g} s; {fix}") from None
    except httpx.HTTPError as exc:
        raise ConfigError(f"{start} cannot be reached ({error_reason(exc)}); {fix}") from None
    if response.status_code in (401, 403):
        raise ConfigError(
            f"{start} rejected the API key (HTTP {response.status_code}); "
            f"set {_env(role, 'api_key')}"
        )
    try:
        response.raise_for_status()
        served = [str(model["id"]) for model in response.json()["data"]]
    except (httpx.HTTPError, ValueError, KeyError, TypeError):
        raise ConfigError(
            f"{start} did not list its models (GET /models answered HTTP "
            f"{response.status_code}); is it an OpenAI-compatible base URL ending in /v1?"
        ) from None
    if settings.model not in served:
        raise ConfigError(
            f"{role} model {settings.model!r} is not served by {url} (it serves: "
            f"{', '.join(served) or 'nothing'}).{suggest(settings.model, served)} Set "
            f"{_env(role, 'model')} to a served id or serve that model."
        )


def _hub_offline() -> bool:
    from huggingface_hub import constants

    return os.environ.get("HF_HUB_OFFLINE", "").lower() in _TRUE or bool(constants.HF_HUB_OFFLINE)


def _hub_reachable() -> bool:
    """Whether the hub's host accepts a connection within about a second."""
    from huggingface_hub import constants

    endpoint = os.environ.get("HF_ENDPOINT") or constants.ENDPOINT
    parsed = urlparse(endpoint)
    host, port = parsed.hostname or "huggingface.co", parsed.port or 443
    result: list[bool] = []

    def probe() -> None:
        try:
            socket.create_connection((host, port), timeout=_PROBE_TIMEOUT).close()
            result.append(True)
        except OSError:
            result.append(False)

    # Name resolution ignores socket timeouts, so the whole probe runs in a thread we stop
    # waiting for.
    thread = threading.Thread(target=probe, daemon=True, name="surgagent-hub-probe")
    thread.start()
    thread.join(_PROBE_TIMEOUT)
    return bool(result and result[0])
