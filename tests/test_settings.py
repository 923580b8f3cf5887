"""Settings: defaults, surgagent.toml, environment nesting, precedence and `config show`."""

from __future__ import annotations

from pathlib import Path

import pytest

from surgagent.agent.errors import ConfigError
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


@pytest.mark.parametrize(
    ("env", "expected"),
    [
        (
            {"SURGAGENT_PLANNER__BACKEND": "tensorflow"},
            "setting planner.backend = 'tensorflow' (env SURGAGENT_PLANNER__BACKEND) is "
            "invalid: Input should be 'openai', 'transformers' or 'vllm'.",
        ),
        (
            {"SURGAGENT_PLANNER__TIMEOUT": "abc"},
            "setting planner.timeout = 'abc' (env SURGAGENT_PLANNER__TIMEOUT) is invalid: "
            "Input should be a valid number",
        ),
        (
            {"SURGAGENT_PLANNER__MODLE": "x"},
            "unknown setting planner.modle (env SURGAGENT_PLANNER__MODLE); "
            "did you mean planner.model?",
        ),
    ],
)
def test_invalid_environment_values_are_one_line_each(
    monkeypatch: pytest.MonkeyPatch, env: dict[str, str], expected: str
) -> None:
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    reset_settings()
    with pytest.raises(ConfigError) as raised:
        get_settings()
    assert str(raised.value).startswith(expected) and "\n" not in str(raised.value)


def test_unknown_keys_in_the_file_name_the_closest_valid_one(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    config = tmp_path / "surgagent.toml"
    config.write_text('step_budjet = 3\n[planner]\nmodle = "x"\n[detector]\nzzz = 1\n')
    monkeypatch.setenv("SURGAGENT_CONFIG", str(config))
    reset_settings()
    with pytest.raises(ConfigError) as raised:
        get_settings()
    lines = sorted(str(raised.value).splitlines())
    assert (
        lines[0]
        == f"unknown setting detector.zzz ({config}); known: "
        + ", ".join(
            f"detector.{name}" for name in ("weights", "imgsz", "conf", "iou", "device", "fps")
        )
        + "."
    )
    assert lines[1] == f"unknown setting planner.modle ({config}); did you mean planner.model?"
    assert lines[2] == f"unknown setting step_budjet ({config}); did you mean step_budget?"


def test_bad_values_from_file_and_overrides(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    config = tmp_path / "surgagent.toml"
    config.write_text('frame_budget = "lots"\n')
    monkeypatch.setenv("SURGAGENT_CONFIG", str(config))
    reset_settings()
    with pytest.raises(ConfigError, match=r"setting frame_budget = 'lots' \(.*surgagent.toml\)"):
        get_settings()
    config.write_text("")
    reset_settings()
    with pytest.raises(ConfigError, match=r"setting step_budget = 0 \(override\) is invalid: "):
        get_settings(step_budget=0)


def test_missing_or_malformed_settings_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("SURGAGENT_CONFIG", str(tmp_path / "nope.toml"))
    reset_settings()
    with pytest.raises(ConfigError, match=r"nope.toml does not exist \(from --config or SURGAG"):
        get_settings()
    broken = tmp_path / "broken.toml"
    broken.write_text("[planner\nmodel = 1\n")
    monkeypatch.setenv("SURGAGENT_CONFIG", str(broken))
    reset_settings()
    with pytest.raises(ConfigError, match=r"broken.toml is not valid TOML: .*line 1"):
        get_settings()


def test_a_missing_default_file_is_fine(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("SURGAGENT_CONFIG", raising=False)
    monkeypatch.chdir(tmp_path)
    reset_settings()
    assert get_settings().step_budget == 8


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


def test_langgraph_json_names_the_graph_factory() -> None:
    import importlib
    import json

    spec = json.loads((Path(__file__).parents[1] / "langgraph.json").read_text())
    module, _, attr = spec["graphs"]["case_review"].partition(":")
    graph = getattr(importlib.import_module(module), attr)()
    drawn = graph.get_graph(xray=True).nodes
    assert {"review:plan", "review:tools", "review:answer"} <= set(drawn)
    assert graph.checkpointer is None  # the LangGraph server brings its own
