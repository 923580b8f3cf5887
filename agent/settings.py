"""Settings: one pydantic-settings model, per role (planner, perception) and for the run.

Precedence, lowest first: defaults < ``surgagent.toml`` (or ``$SURGAGENT_CONFIG``) <
environment (``SURGAGENT_PLANNER__MODEL``, ...) < explicit overrides (CLI flags, Python).
Settings refuse what they do not know: an unknown key (in any source, at any depth), a bad
value, a missing ``$SURGAGENT_CONFIG`` file or malformed TOML is a `ConfigError` naming the
setting, the value, where it came from and what is allowed.

    settings = get_settings()
    print(settings.planner.model, settings.step_budget)
"""

from __future__ import annotations

import difflib
import functools
import os
import tomllib
from pathlib import Path
from typing import Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    SecretStr,
    ValidationError,
    field_validator,
    model_validator,
)
from pydantic_settings import (
    BaseSettings,
    EnvSettingsSource,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    TomlConfigSettingsSource,
)

from surgagent.agent.errors import ConfigError

__all__ = [
    "DEFAULT_MODEL",
    "BackendKind",
    "DetectorSettings",
    "KnowledgeSettings",
    "ModelSettings",
    "PerceptionSettings",
    "PhaseSettings",
    "Settings",
    "config_file",
    "get_settings",
    "reset_settings",
    "setting_sources",
]

BackendKind = Literal["openai", "transformers", "vllm"]
DEFAULT_MODEL = "Qwen/Qwen3.5-9B"
DEFAULT_DATA_DIR = Path("~/.surgagent")
ENV_PREFIX = "SURGAGENT_"


class _Section(BaseModel):
    """A settings section: unknown keys are errors, not silently ignored."""

    model_config = ConfigDict(extra="forbid")


class ModelSettings(_Section):
    """How to reach and sample one model role."""

    backend: BackendKind = Field(
        "transformers", description="openai (any OpenAI-compatible server), transformers, vllm"
    )
    model: str = Field(DEFAULT_MODEL, description="hub id, local path, or served model name")
    base_url: str | None = Field(None, description="endpoint for the openai backend")
    api_key: SecretStr | None = Field(None, description="API key for the endpoint, if it needs one")
    thinking: bool = Field(True, description="let the model think before answering")
    temperature: float = Field(0.6, ge=0)
    top_p: float = Field(0.95, gt=0, le=1)
    max_tokens: int = Field(2048, gt=0, description="most tokens one reply may generate")
    timeout: float = Field(120.0, gt=0, description="seconds one request may take")
    connect_timeout: float = Field(3.0, gt=0, description="seconds to connect to the endpoint")
    max_retries: int = Field(2, ge=0, description="retries of a failed request (timeouts, 5xx)")
    device: str = Field("auto", description="transformers/vllm: auto, cpu, cuda, cuda:1")
    dtype: str = Field("auto", description="transformers/vllm: auto, bfloat16, float16, float32")
    max_image_side: int = Field(896, gt=0, description="frames are resized to fit this side")


class PlannerSettings(ModelSettings):
    """The planner role: the reasoning model that calls the tools."""

    vision: Literal["auto"] | bool = Field(
        "auto",
        description="show the planner frames: auto (yes, until its server says the model takes "
        "no images), true, false (it reads frames through ask_perception)",
    )
    max_context_tokens: int | None = Field(
        None,
        gt=0,
        description="the planner's context in tokens; unset: what the server lists "
        "(vLLM's max_model_len). Older turns are left out to fit",
    )


class PerceptionSettings(ModelSettings):
    """The perception role: thinking off, Qwen's suggested non-thinking sampling.

    Unless its backend, model or endpoint is set, perception uses the planner's model (a
    Qwen3.5 model sees images too), so one endpoint is enough to start.
    """

    enabled: bool = Field(True, description="offer the perception tool to the planner")

    thinking: bool = Field(False, description="let the model think before answering")
    temperature: float = Field(0.7, ge=0)
    top_p: float = Field(0.8, gt=0, le=1)
    max_tokens: int = Field(512, gt=0, description="most tokens one reply may generate")


class DetectorSettings(_Section):
    """The YOLO instrument detector; without weights the planner is not offered it."""

    weights: str | None = Field(None, description="YOLO detection weights (.pt path)")
    imgsz: int = Field(640, gt=0, description="inference image size")
    conf: float = Field(0.25, ge=0, le=1, description="minimum detection confidence")
    iou: float = Field(0.5, ge=0, le=1, description="NMS IoU threshold")
    device: str = Field("cpu", description="cpu, cuda, cuda:1")
    fps: float = Field(1.0, gt=0, description="frames per second tracked into the timeline")


class PhaseSettings(_Section):
    """The temporal phase segmenter; without a checkpoint the planner is not offered it."""

    weights: str | None = Field(None, description="phase segmenter checkpoint (.pt path)")
    device: str = Field("cpu", description="cpu, cuda, cuda:1")


class KnowledgeSettings(_Section):
    """The guideline store and its retrieval tool."""

    enabled: bool = Field(True, description="offer guideline retrieval to the planner")
    embedding_model: str | None = Field(
        None,
        description="sentence-transformers model id or folder; default the bundled "
        "all-MiniLM-L6-v2 (works offline). Changing it rebuilds the store.",
    )
    device: str = Field("cpu", description="device the embedding model runs on")
    top_k: int = Field(4, ge=1, le=8, description="passages one search returns by default")
    max_document_mb: float = Field(
        32.0, gt=0, description="largest document `knowledge add` accepts, in MB"
    )


def config_file() -> Path:
    """The TOML settings file: ``$SURGAGENT_CONFIG`` or ``./surgagent.toml``.

    Raises:
        ConfigError: If ``$SURGAGENT_CONFIG`` names a file that does not exist (the default
            ``./surgagent.toml`` may be absent).
    """
    named = os.environ.get(f"{ENV_PREFIX}CONFIG")
    if named and not Path(named).is_file():
        raise ConfigError(
            f"the settings file {named} does not exist (from --config or {ENV_PREFIX}CONFIG)."
        )
    return Path(named or "surgagent.toml")


class Settings(BaseSettings):
    """Everything a run needs to know; build it with `get_settings`."""

    model_config = SettingsConfigDict(
        env_prefix=ENV_PREFIX, env_nested_delimiter="__", extra="forbid", validate_default=True
    )

    planner: PlannerSettings = Field(default_factory=PlannerSettings)
    perception: PerceptionSettings = Field(default_factory=PerceptionSettings)
    detector: DetectorSettings = Field(default_factory=DetectorSettings)
    phase: PhaseSettings = Field(default_factory=PhaseSettings)
    knowledge: KnowledgeSettings = Field(default_factory=KnowledgeSettings)
    data_dir: Path = Field(
        DEFAULT_DATA_DIR, description="cases cache, sessions and knowledge store live here"
    )
    cache_dir: Path = Field(
        DEFAULT_DATA_DIR / "cache",
        description="per-case work (probes, frames, detections); default data_dir/cache",
    )
    step_budget: int = Field(8, ge=1, description="most planner turns in one answer")
    frame_budget: int = Field(12, ge=0, description="most frames shown to the planner per answer")
    tool_retries: int = Field(2, ge=0, description="retries of a tool whose backend failed")

    @model_validator(mode="before")
    @classmethod
    def _cache_inside_data_dir(cls, data: Any) -> Any:
        if isinstance(data, dict) and not data.get("cache_dir"):
            data = {**data, "cache_dir": Path(data.get("data_dir") or DEFAULT_DATA_DIR) / "cache"}
        return data

    @model_validator(mode="after")
    def _perception_follows_planner(self) -> Settings:
        if not {"backend", "model", "base_url"} & self.perception.model_fields_set:
            shared = {"backend", "model", "base_url", "api_key", "device", "dtype", "timeout"}
            self.perception = self.perception.model_copy(
                update={name: getattr(self.planner, name) for name in shared}
            )
        return self

    @field_validator("data_dir", "cache_dir")
    @classmethod
    def _expand_home(cls, path: Path) -> Path:
        return path.expanduser()

    @property
    def sessions_db(self) -> Path:
        """The SQLite file holding chat sessions (LangGraph checkpoints)."""
        return self.data_dir / "sessions.sqlite"

    @property
    def library_db(self) -> Path:
        """The SQLite file of the case library (`surgagent library add`)."""
        return self.data_dir / "library.sqlite"

    @property
    def knowledge_dir(self) -> Path:
        """The knowledge store's folder."""
        return self.data_dir / "knowledge"

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        """Order the sources: overrides, environment, TOML file, defaults."""
        return (
            init_settings,
            env_settings,
            TomlConfigSettingsSource(settings_cls, toml_file=config_file()),
        )


@functools.cache
def _cached_settings() -> Settings:
    return _build({})


def get_settings(**overrides: Any) -> Settings:
    """Resolve the settings; ``overrides`` (nested dicts allowed) win over everything else.

    ``None`` values in ``overrides`` mean "not given" (unset CLI flags).

    Raises:
        ConfigError: For an unknown key, an invalid value, a missing settings file or
            malformed TOML; one line per problem.
    """
    given = _without_none(overrides)
    return _build(given) if given else _cached_settings()


def _build(given: dict[str, Any]) -> Settings:
    try:
        return Settings(**given)
    except tomllib.TOMLDecodeError as error:
        raise ConfigError(f"{config_file()} is not valid TOML: {error}.") from error
    except ValidationError as error:
        raise ConfigError(_explain(error, given)) from error


def _explain(error: ValidationError, given: dict[str, Any]) -> str:
    """One line per problem: the setting, its value, where it came from and what is allowed."""
    sources = _Sources(given)
    lines = []
    for problem in error.errors():
        name = ".".join(str(part) for part in problem["loc"])
        where = sources.of(name)
        if problem["type"] == "extra_forbidden":
            section, leaf = problem["loc"][:-1], str(problem["loc"][-1])
            known = _known_names(section)
            close = difflib.get_close_matches(leaf, known, n=1, cutoff=0.6)
            prefix = "".join(f"{part}." for part in section)
            hint = (
                f"did you mean {prefix}{close[0]}?"
                if close
                else "known: " + ", ".join(prefix + k for k in known) + "."
            )
            lines.append(f"unknown setting {name} ({where}); {hint}")
        else:
            value = problem.get("input")
            lines.append(f"setting {name} = {value!r} ({where}) is invalid: {problem['msg']}.")
    return "\n".join(lines)


def _known_names(section: tuple[Any, ...]) -> list[str]:
    """The settings valid in one section (``()`` is the top level)."""
    model: type[BaseModel] = Settings
    for part in section:
        annotation = model.model_fields[str(part)].annotation
        if not (isinstance(annotation, type) and issubclass(annotation, BaseModel)):
            return []
        model = annotation
    return list(model.model_fields)


class _Sources:
    """Which source gave a dotted setting: an override, the environment, the TOML file."""

    def __init__(self, given: dict[str, Any]) -> None:
        self.given = _flatten(given)
        env_source = EnvSettingsSource(Settings, env_prefix=ENV_PREFIX, env_nested_delimiter="__")
        self.env = _flatten(env_source())
        self.file = config_file()
        self.toml = _flatten(TomlConfigSettingsSource(Settings, toml_file=self.file)())

    def of(self, name: str) -> str:
        if self.given.get(name) is not None:
            return "override"
        if name in self.env:
            return f"env {ENV_PREFIX}{name.replace('.', '__').upper()}"
        if name in self.toml:
            return str(self.file)
        return "default"


def reset_settings() -> None:
    """Forget the cached settings (after the environment or the TOML file changed)."""
    _cached_settings.cache_clear()


def _without_none(values: dict[str, Any]) -> dict[str, Any]:
    cleaned = {}
    for key, value in values.items():
        if isinstance(value, dict):
            value = _without_none(value)
        if value is not None and value != {}:
            cleaned[key] = value
    return cleaned


def _flatten(data: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    flat: dict[str, Any] = {}
    for key, value in data.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict):
            flat.update(_flatten(value, f"{name}."))
        else:
            flat[name] = value
    return flat


def setting_sources(
    settings: Settings, overrides: dict[str, Any] | None = None
) -> list[tuple[str, Any, str]]:
    """List ``(dotted name, value, source)`` for every setting, secrets masked.

    The source is ``override``, ``env SURGAGENT_...``, the TOML file's name, or ``default``.
    """
    sources = _Sources(overrides or {})
    rows = []
    for name, value in _flatten(settings.model_dump()).items():
        if isinstance(value, SecretStr):
            value = "********"
        rows.append((name, value, sources.of(name)))
    return rows
