"""Settings: defaults, surgagent.toml, environment nesting, precedence and `config show`."""

from __future__ import annotations

from pathlib import Path

import pytest
from pydantic import ValidationError

from surgagent.agent.settings import get_settings, reset_settings, setting_sources


def test_defaults_give_each_role_its_own_thinking() -> None:
    settings = get_settings()
    assert settings.planner.backend == "transformers" and settings.planner.thinking
    assert settings.perception.model == "Qwen/Qwen3.5-9B" and not settings.perception.thinking


def test_toml_then_env_then_overrides(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    config = tmp_path / "surgagent.toml"
    config.write_text(
        'step_budget = 5\n[planner]\nbackend = "openai"\nbase_url = "http://toml:8000/v1"\n'
        '[perception]\nmodel = "/models/instruct"\n'
    )
    monkeypatch.setenv("SURGAGENT_CONFIG", str(config))
    monkeypatch.setenv("SURGAGENT_PLANNER__BASE_URL", "http://env:8000/v1")
    reset_settings()
    settings = get_settings()
    assert settings.step_budget == 5
    assert settings.planner.backend == "openai"
    assert settings.planner.base_url == "http://env:8000/v1"
    # A partly set role keeps that role's defaults for the rest.
    assert settings.perception.model == "/models/instruct" and not settings.perception.thinking
    overridden = get_settings(step_budget=2, planner={"model": "served-name"})
    assert overridden.step_budget == 2 and overridden.planner.model == "served-name"
    assert overridden.planner.base_url == "http://env:8000/v1"

    sources = {name: source for name, _, source in setting_sources(overridden, {"step_budget": 2})}
    assert sources["step_budget"] == "override"
    assert sources["planner.base_url"] == "env SURGAGENT_PLANNER__BASE_URL"
    assert sources["planner.backend"] == str(config)
    assert sources["frame_budget"] == "default"


def test_api_key_is_masked(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SURGAGENT_PLANNER__API_KEY", "sk-secret")
    reset_settings()
    values = {name: value for name, value, _ in setting_sources(get_settings())}
    assert values["planner.api_key"] == "********"
    assert get_settings().planner.api_key is not None


def test_invalid_values_are_rejected(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SURGAGENT_PLANNER__BACKEND", "tensorflow")
    reset_settings()
    with pytest.raises(ValidationError, match="backend"):
        get_settings()


def test_cache_dir_follows_data_dir_unless_set(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("SURGAGENT_DATA_DIR", str(tmp_path / "data"))
    reset_settings()
    assert get_settings().cache_dir == tmp_path / "data" / "cache"
    assert get_settings(data_dir=str(tmp_path / "other")).cache_dir == tmp_path / "other" / "cache"
    monkeypatch.setenv("SURGAGENT_CACHE_DIR", str(tmp_path / "fast-disk"))
    reset_settings()
    assert get_settings().cache_dir == tmp_path / "fast-disk"
    assert get_settings().sessions_db == tmp_path / "data" / "sessions.sqlite"


def test_langgraph_studio_graph_loads() -> None:
    import json

    spec = json.loads((Path(__file__).parents[1] / "langgraph.json").read_text())
    module_path, _, attr = spec["graphs"]["case_review"].partition(":")
    assert module_path == "./agent/studio.py"
    from surgagent.agent import studio

    graph = getattr(studio, attr)
    assert {"plan", "tools", "answer"} <= set(graph.get_graph().nodes)
    assert graph.checkpointer is None  # the LangGraph server brings its own
