"""CaseCache: atomic writes, artifact paths, the registry (also under two processes)."""

from __future__ import annotations

import multiprocessing
import os
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import pytest

from surgagent.tools.cache import Case, CaseCache, atomic_write_bytes, slugify
from surgagent.tools.errors import ToolInputError


def make_case(name: str = "demo", digest: str = "ab" * 32, **extra: object) -> Case:
    fields: dict[str, object] = {
        "id": f"{name}-{digest[:8]}",
        "source": Path(f"/data/{name}.mp4"),
        "kind": "video",
        "fps": 25.0,
        "duration": 42.0,
        "width": 320,
        "height": 240,
        "frame_count": 1050,
        "content_hash": digest,
    }
    fields.update(extra)
    return Case.model_validate(fields)


def _register_many(root: str, worker: int, count: int) -> None:
    cache = CaseCache(Path(root))
    for i in range(count):
        digest = f"{worker:02x}{i:02x}" * 16
        cache.register(make_case(f"w{worker}-case{i}", digest))


def test_json_round_trip_and_missing_file(tmp_path: Path) -> None:
    cache, case = CaseCache(tmp_path), make_case()
    assert cache.read_json(case, "probe.json") is None
    path = cache.write_json(case, "sub/probe.json", {"fps": 25, "nested": [1, 2]})
    assert path.parent.parent == cache.case_dir(case)
    assert cache.read_json(case, "sub/probe.json") == {"fps": 25, "nested": [1, 2]}


def test_unreadable_json_reads_as_missing(tmp_path: Path) -> None:
    cache, case = CaseCache(tmp_path), make_case()
    cache.write_bytes(case, "broken.json", b"{not json")
    assert cache.read_json(case, "broken.json") is None


@pytest.mark.parametrize("name", ["../escape.json", "/abs.json", "a/../b.json", ""])
def test_file_names_must_stay_inside_the_case_folder(tmp_path: Path, name: str) -> None:
    with pytest.raises(ValueError, match="name"):
        CaseCache(tmp_path).write_json(make_case(), name, {})


def test_failed_atomic_write_keeps_old_file_and_leaves_no_temp(tmp_path: Path) -> None:
    target = atomic_write_bytes(tmp_path / "out.bin", b"old")
    with pytest.raises(TypeError):
        atomic_write_bytes(target, "not bytes")  # type: ignore[arg-type]
    assert target.read_bytes() == b"old"
    assert sorted(os.listdir(tmp_path)) == ["out.bin"]


def test_artifact_path_is_keyed_by_content_version_and_model(tmp_path: Path) -> None:
    cache, case = CaseCache(tmp_path), make_case()
    path = cache.artifact_path(case, "detections", version="1", model_id="yolo11n", suffix=".json")
    assert path.parent == cache.case_dir(case) / "detections" and path.parent.is_dir()
    assert path.suffix == ".json"
    same = cache.artifact_path(case, "detections", version="1", model_id="yolo11n", suffix="json")
    assert same == path
    others = {
        cache.artifact_path(case, "detections", version="2", model_id="yolo11n", suffix=".json"),
        cache.artifact_path(case, "detections", version="1", model_id="yolo11s", suffix=".json"),
        cache.artifact_path(case, "detections", version="1", suffix=".json"),
        cache.artifact_path(make_case(digest="cd" * 32), "detections", version="1", suffix=".json"),
    }
    assert path not in others and len(others) == 4
    # Model ids that slug alike still get different files.
    a = cache.artifact_path(case, "phase", version="1", model_id="Org/Model", suffix=".npz")
    b = cache.artifact_path(case, "phase", version="1", model_id="org-model", suffix=".npz")
    assert a != b


def test_artifact_path_rejects_odd_kind(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="artifact kind"):
        CaseCache(tmp_path).artifact_path(make_case(), "../x", version="1", suffix=".json")


def test_registry_register_lookup_list(tmp_path: Path) -> None:
    cache = CaseCache(tmp_path)
    first, second = make_case("one", "11" * 32), make_case("two", "22" * 32, metadata={"a": 1})
    assert cache.lookup(first.id) is None and cache.list_cases() == []
    cache.register(first)
    cache.register(second)
    assert cache.lookup(second.id) == second
    assert [case.id for case in CaseCache(tmp_path).list_cases()] == [first.id, second.id]
    cache.register(second.model_copy(update={"duration": 1.0}))
    assert cache.lookup(second.id).duration == 1.0  # type: ignore[union-attr]
    assert len(cache.list_cases()) == 2


def test_registry_survives_two_processes(tmp_path: Path) -> None:
    context = multiprocessing.get_context("spawn")
    with ProcessPoolExecutor(2, mp_context=context) as pool:
        jobs = [pool.submit(_register_many, str(tmp_path), worker, 15) for worker in (1, 2)]
        for job in jobs:
            job.result()
    ids = {case.id for case in CaseCache(tmp_path).list_cases()}
    assert len(ids) == 30
    assert not list(tmp_path.glob("*.tmp")) and not list(tmp_path.glob(".*.tmp"))


def test_check_time_and_frame_index() -> None:
    case = make_case()
    assert case.check_time(42.0) == 42.0
    with pytest.raises(ToolInputError, match=r"past the end of the case \(00:42\)"):
        case.check_time(95 * 60)
    assert case.frame_index(0.0) == 0 and case.frame_index(1.0) == 25
    assert case.frame_index(0.02) == 1  # halfway rounds up
    assert case.frame_index(999.0) == case.frame_count - 1
    assert case.frame_time(50) == 2.0


def test_slugify() -> None:
    assert slugify("Video 01 (Final).MP4") == "video-01-final-mp4"
    assert slugify("___") == "case"
