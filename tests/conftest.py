"""Shared test set-up: every test gets its own data dir and clean settings; no network."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import pytest

from surgagent.agent.settings import reset_settings
from tests.fixtures.engines import TinyDetector

if TYPE_CHECKING:
    from surgagent.knowledge.embeddings import Embedder
    from surgagent.knowledge.store import KnowledgeStore


# Fixtures that train an engine in the test session: tests using them are marked slow, so
# `pytest -m "not slow"` is a quick loop (the README's command runs everything).
_TRAINING_FIXTURES = {"tiny_detector", "trained_segmenter"}


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if _TRAINING_FIXTURES & set(getattr(item, "fixturenames", ())):
            item.add_marker(pytest.mark.slow)


@pytest.fixture(autouse=True)
def isolated_settings(
    tmp_path: Path, tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch
) -> Path:
    """Point the data dir at a temp folder, ignore any user settings, reset the cache."""
    import os

    for name in list(os.environ):
        if name.startswith("SURGAGENT_"):
            monkeypatch.delenv(name)
    data_dir = tmp_path / "surgagent-data"
    monkeypatch.setenv("SURGAGENT_DATA_DIR", str(data_dir))
    # An empty settings file, outside the test's own folder: any ./surgagent.toml is ignored.
    empty = tmp_path_factory.getbasetemp() / "empty-settings.toml"
    empty.touch()
    monkeypatch.setenv("SURGAGENT_CONFIG", str(empty))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("YOLO_OFFLINE", "1")
    reset_settings()
    yield data_dir
    reset_settings()


@pytest.fixture(scope="session")
def case_video(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A 10 s, 5 fps synthetic video whose frame colours encode the frame index."""
    from tests.fixtures.videos import write_video

    return write_video(tmp_path_factory.mktemp("videos") / "case.mp4", fps=5, duration=10.0)


@pytest.fixture(scope="session")
def tiny_detector(tmp_path_factory: pytest.TempPathFactory) -> TinyDetector:
    """The shapes detector (Grasper, Clipper, Hook), trained once for the whole session."""
    from tests.fixtures.engines import train_tiny_detector

    return train_tiny_detector(tmp_path_factory.mktemp("yolo"))


@pytest.fixture(scope="session")
def minilm() -> Embedder:
    """The bundled all-MiniLM-L6-v2, loaded once for the session."""
    from surgagent.knowledge.embeddings import Embedder

    embedder = Embedder()
    embedder.embed(["warm up"])
    return embedder


@pytest.fixture(scope="session")
def corpus_store(tmp_path_factory: pytest.TempPathFactory, minilm: Embedder) -> KnowledgeStore:
    """The bundled corpus in a store, built once for the session (read-only for tests)."""
    from surgagent.knowledge.store import KnowledgeStore

    store = KnowledgeStore(tmp_path_factory.mktemp("knowledge") / "store", minilm)
    store.ensure_current()
    return store
