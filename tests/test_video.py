"""The video room: opening cases, sampling frames, caching, indexing and the look_at_frames tool."""

from __future__ import annotations

import json
import math
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import av
import numpy as np
import pytest
from langchain_core.messages import AIMessage, HumanMessage, ToolMessage
from langchain_core.utils.function_calling import convert_to_openai_tool
from langgraph.graph import END, START, MessagesState, StateGraph
from langgraph.prebuilt import ToolNode

from surgagent.tools.base import ToolRecord
from surgagent.tools.cache import Case, CaseCache
from surgagent.tools.errors import CaseError, ToolInputError
from surgagent.tools.video.decode import DamagedVideo
from surgagent.tools.video.engine import (
    clip_times,
    index_case,
    load_image,
    open_case,
    sample_frames,
)
from surgagent.tools.video.tools import look_at_frames, make_video_tools
from surgagent.tools.video.types import FramesResult
from tests.fixtures.videos import (
    color_index,
    corrupt_copy,
    damaged_copy,
    empty_file,
    random_bytes_file,
    truncated_copy,
    write_frame_folder,
    write_video,
)

SAMPLE = Path(__file__).resolve().parents[1] / "examples" / "sample_case" / "sample_lapchole.mp4"


@pytest.fixture(scope="module")
def videos(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("videos")
    for name in ("clip.mp4", "clip.avi", "clip.mkv", "clip.mov", "clip.webm"):
        write_video(folder / name, fps=25, duration=3.0, size=(96, 64))
    front = folder / "front.mp4"
    write_video(front, fps=25, duration=6.0, size=(96, 64), faststart=True, noise=12)
    # 30 s at 10 fps with a keyframe each second: sparse looks must seek.
    write_video(folder / "long.mp4", fps=10, duration=30.0, size=(64, 48), gop=10)
    # The encoder's default keyframe interval (250): seeking lands far back and is given up.
    write_video(folder / "longgop.mp4", fps=10, duration=30.0, size=(64, 48))
    return folder


@pytest.fixture
def cache(tmp_path: Path) -> CaseCache:
    return CaseCache(tmp_path / "cache")


def frame_number(path: Path) -> int:
    return color_index(np.asarray(load_image(path)).reshape(-1, 3).mean(axis=0))


def count_av_open(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    opened: list[str] = []
    real_open = av.open

    def counting_open(*args: Any, **kwargs: Any) -> Any:
        opened.append(str(args[0]))
        return real_open(*args, **kwargs)

    monkeypatch.setattr(av, "open", counting_open)
    return opened


# -- opening ---------------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["clip.mp4", "clip.avi", "clip.mkv", "clip.mov", "clip.webm"])
def test_probe_reads_fps_duration_and_size(videos: Path, cache: CaseCache, name: str) -> None:
    case = open_case(videos / name, cache)
    assert case.kind == "video" and case.source == (videos / name).resolve()
    assert case.fps == pytest.approx(25.0)
    assert case.duration == pytest.approx(3.0, abs=0.05)
    assert abs(case.frame_count - 75) <= 1
    assert (case.width, case.height) == (96, 64)
    assert case.id.startswith("clip-") and case.content_hash.startswith(case.id[-8:])


def test_reopening_uses_the_cached_probe_and_registry(
    videos: Path, cache: CaseCache, monkeypatch: pytest.MonkeyPatch
) -> None:
    first = open_case(videos / "clip.mp4", cache)
    opened = count_av_open(monkeypatch)
    assert open_case(videos / "clip.mp4", cache) == first
    assert open_case(first.id, cache) == first
    assert opened == []
    assert [case.id for case in cache.list_cases()] == [first.id]


def test_frame_folder_case(tmp_path: Path, cache: CaseCache) -> None:
    folder = write_frame_folder(tmp_path / "frames", count=12, size=(40, 30), fps=4, extra={"a": 1})
    (folder / "notes.md").write_text("Folder notes.")
    case = open_case(folder, cache)
    assert (case.kind, case.fps, case.frame_count) == ("frames", 4.0, 12)
    assert (case.duration, case.width, case.height) == (3.0, 40, 30)
    assert case.metadata["a"] == 1 and case.metadata["notes"] == "Folder notes."
    frames = sample_frames(case, [0.0, 1.0, 2.6], cache)
    assert [f.index for f in frames] == [0, 4, 10]
    assert [frame_number(f.path) for f in frames] == [0, 4, 10]
    result = index_case(case, cache, fps=2.0)
    assert (result.frames_total, result.frames_written) == (6, 3)  # 0, 4 and 10 were cached


def test_frame_folder_defaults_to_one_fps_and_natural_order(
    tmp_path: Path, cache: CaseCache
) -> None:
    folder = write_frame_folder(tmp_path / "plain", count=3, ext="jpg")
    for old, new in [("frame_0000", "f0"), ("frame_0001", "f9"), ("frame_0002", "f10")]:
        (folder / f"{old}.jpg").rename(folder / f"{new}.jpg")  # f10 sorts after f9 by number
    case = open_case(folder, cache)
    assert (case.fps, case.duration) == (1.0, 3.0)
    frames = sample_frames(case, [0, 1, 2], cache)
    assert [frame_number(f.path) for f in frames] == [0, 1, 2]


def test_video_notes_are_loaded(tmp_path: Path, cache: CaseCache) -> None:
    video = write_video(tmp_path / "op.mp4", duration=1.0)
    (tmp_path / "op.md").write_text("Operative note.")
    (tmp_path / "op.json").write_text(json.dumps({"surgeon": "synthetic"}))
    case = open_case(video, cache)
    assert case.metadata["notes"] == "Operative note."
    assert case.metadata["surgeon"] == "synthetic"


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (lambda v, d: empty_file(d / "empty.mp4"), "empty"),
        (lambda v, d: random_bytes_file(d / "noise.mp4"), "not a readable video"),
        (lambda v, d: corrupt_copy(v / "clip.mp4", d / "scrambled.mp4"), "not a readable video"),
        (lambda v, d: truncated_copy(v / "clip.mp4", d / "cut.mp4", 0.6), "truncated"),
        (lambda v, d: (d / "notes.txt").write_text("hello") and d / "notes.txt", "not a readable"),
        (lambda v, d: (d / "no-frames").mkdir() or d / "no-frames", "no .jpg or .png frames"),
    ],
    ids=["empty", "random-bytes", "corrupt", "tail-indexed-truncated", "text", "empty-folder"],
)
def test_unopenable_inputs_raise_case_error(
    videos: Path,
    tmp_path: Path,
    cache: CaseCache,
    make: Callable[[Path, Path], Path],
    message: str,
) -> None:
    path = make(videos, tmp_path)
    with pytest.raises(CaseError, match=message) as error:
        open_case(path, cache)
    assert path.name in str(error.value)
    assert cache.list_cases() == []


def test_front_indexed_truncated_file_fails_while_decoding(
    videos: Path, tmp_path: Path, cache: CaseCache
) -> None:
    cut = truncated_copy(videos / "front.mp4", tmp_path / "cut.mp4", 0.4)
    case = open_case(cut, cache)  # the index at the front still promises 6 s
    assert case.duration == pytest.approx(6.0, abs=0.05)
    assert frame_number(sample_frames(case, [0.4], cache)[0].path) == 10
    with pytest.raises(CaseError, match="truncated") as error:
        sample_frames(case, [5.5], cache)
    assert "cut.mp4" in str(error.value)
    with pytest.raises(CaseError, match="truncated"):
        index_case(case, cache)
    assert not list(cache.root.rglob("*.tmp"))


@pytest.fixture(scope="module")
def damaged(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """20 s at 10 fps, keyframes each second, with the bytes of roughly 10-12 s scrambled."""
    folder = tmp_path_factory.mktemp("damaged")
    intact = write_video(
        folder / "intact.mp4", fps=10, duration=20.0, faststart=True, gop=10, noise=20
    )
    return damaged_copy(intact, folder / "damaged.mp4", 0.5, 0.6)


def test_frames_around_damage_in_the_middle_stay_readable(
    damaged: Path, cache: CaseCache, monkeypatch: pytest.MonkeyPatch
) -> None:
    case = open_case(damaged, cache)
    with pytest.raises(DamagedVideo) as error:
        sample_frames(case, [2.0, 11.0, 18.0], cache)
    damage = error.value
    assert damage.end is not None and 8.0 <= damage.start < 11.0 < damage.end <= 15.0
    first, last = math.floor(damage.start), math.ceil(damage.end)
    assert str(damage) == (
        f"damaged.mp4 is damaged between 00:{first:02d} and 00:{last:02d} (invalid data found "
        f"when processing input); frames there cannot be decoded, frames up to 00:{first:02d} "
        f"and from 00:{last:02d} on can be: ask for those."
    )
    # The frames on either side were decoded and cached on the way: asking again is instant.
    opened = count_av_open(monkeypatch)
    around = sample_frames(case, [2.0, 18.0], cache)
    assert [frame_number(frame.path) for frame in around] == [20, 180] and opened == []
    # The edges named are readable: one pass decodes up to the damage and seeks past it.
    edges = sample_frames(case, [first, last], cache)
    assert [frame_number(frame.path) for frame in edges] == [first * 10, last * 10]


def test_index_skips_a_damaged_span(damaged: Path, cache: CaseCache) -> None:
    result = index_case(open_case(damaged, cache), cache)
    assert len(result.damaged) == 1 and "damaged.mp4 is damaged between" in result.damaged[0]
    assert 14 <= result.frames_written <= 18 and result.frames_total == 20
    assert result.thumbnail.exists()


def test_case_whose_source_moved(tmp_path: Path, cache: CaseCache) -> None:
    video = write_video(tmp_path / "moved.mp4", duration=0.4)
    case = open_case(video, cache)
    video.rename(tmp_path / "elsewhere.mp4")
    with pytest.raises(CaseError, match="no longer exists"):
        open_case(case.id, cache)
    assert open_case(tmp_path / "elsewhere.mp4", cache).content_hash == case.content_hash


def test_missing_path_and_unknown_id(videos: Path, cache: CaseCache) -> None:
    known = open_case(videos / "clip.mp4", cache)
    with pytest.raises(CaseError, match="no such file or folder"):
        open_case(videos / "absent.mp4", cache)
    typo = known.id[:-1] + ("0" if known.id[-1] != "0" else "1")
    with pytest.raises(CaseError, match=f"Did you mean {known.id!r}"):
        open_case(typo, cache)


# -- sampling and caching --------------------------------------------------------------------


@pytest.mark.parametrize("name", ["clip.mp4", "clip.avi", "clip.mkv"])
def test_sample_frames_picks_the_nearest_frame(videos: Path, cache: CaseCache, name: str) -> None:
    case = open_case(videos / name, cache)
    times = [2.0, 0.0, 1.01, 0.5, 2.98, 3.0, 2.0]
    frames = sample_frames(case, times, cache)
    expected = [case.frame_index(t) for t in times]
    assert expected[:5] == [50, 0, 25, 12 + 1, 74]  # 0.5 s x 25 fps = 12.5 -> 13
    assert [f.index for f in frames] == expected
    assert [frame_number(f.path) for f in frames] == expected
    assert frames[0].time == pytest.approx(2.0) and frames[0].path == frames[-1].path


@pytest.mark.parametrize("name", ["long.mp4", "longgop.mp4"])
def test_sparse_samples_seek_and_stay_right(videos: Path, cache: CaseCache, name: str) -> None:
    case = open_case(videos / name, cache)
    times = [29.0, 2.0, 17.3, 17.5, 9.0]
    frames = sample_frames(case, times, cache)
    assert [frame_number(f.path) for f in frames] == [290, 20, 173, 175, 90]


def test_second_sample_does_not_decode_again(
    videos: Path, cache: CaseCache, monkeypatch: pytest.MonkeyPatch
) -> None:
    case = open_case(videos / "clip.mp4", cache)
    opened = count_av_open(monkeypatch)
    first = sample_frames(case, [0.4, 1.2], cache)
    assert len(opened) == 1  # one pass for both frames
    again = sample_frames(case, [1.2, 0.4], cache)
    assert len(opened) == 1
    assert [f.path for f in again] == [first[1].path, first[0].path]


def test_frames_are_scaled_to_max_side(tmp_path: Path, cache: CaseCache) -> None:
    case = open_case(write_video(tmp_path / "wide.mp4", duration=0.4, size=(320, 180)), cache)
    small, full = (
        sample_frames(case, [0.2], cache, max_side=160)[0],
        sample_frames(case, [0.2], cache)[0],
    )
    assert (small.width, small.height) == (160, 90) == load_image(small.path).size
    assert (full.width, full.height) == (320, 180) == load_image(full.path).size


@pytest.mark.parametrize("t", [-1.0, 3.5, 95 * 60.0])
def test_times_outside_the_case_are_refused(videos: Path, cache: CaseCache, t: float) -> None:
    case = open_case(videos / "clip.mp4", cache)
    with pytest.raises(ToolInputError, match="time"):
        sample_frames(case, [t], cache)


def test_clip_times() -> None:
    assert clip_times(10.0, 20.0, 3) == [10.0, 15.0, 20.0]
    assert clip_times(4.0, 6.0, 1) == [5.0]
    with pytest.raises(ToolInputError, match="swap"):
        clip_times(5.0, 1.0, 2)
    with pytest.raises(ToolInputError, match="at least 1"):
        clip_times(1.0, 5.0, 0)


# -- indexing --------------------------------------------------------------------------------


def test_index_case_fills_the_cache_used_by_sample_frames(
    videos: Path, cache: CaseCache, monkeypatch: pytest.MonkeyPatch
) -> None:
    case = open_case(videos / "long.mp4", cache)
    seen: list[tuple[int, int]] = []
    result = index_case(
        case, cache, fps=1.0, progress=lambda done, total: seen.append((done, total))
    )
    assert (result.case_id, result.frames_total, result.frames_written) == (case.id, 30, 30)
    assert seen[0] == (0, 30) and seen[-1] == (30, 30)
    assert load_image(result.thumbnail).size[0] > 0
    opened = count_av_open(monkeypatch)
    frames = sample_frames(case, [3.0, 12.0, 29.0], cache)
    assert opened == [] and [frame_number(f.path) for f in frames] == [30, 120, 290]
    assert index_case(case, cache).frames_written == 0
    assert opened == []


def test_interrupted_index_resumes(videos: Path, cache: CaseCache) -> None:
    case = open_case(videos / "long.mp4", cache)

    def stop_midway(done: int, total: int) -> None:
        if done == 12:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        index_case(case, cache, progress=stop_midway)
    written = sorted(cache.case_dir(case).glob("frames/*/*.jpg"))
    assert len(written) == 12
    assert not list(cache.root.rglob("*.tmp"))
    before = {path: path.stat().st_mtime_ns for path in written}
    result = index_case(case, cache)
    assert (result.frames_written, result.frames_total) == (18, 30)
    assert all(path.stat().st_mtime_ns == mtime for path, mtime in before.items())
    assert len(list(cache.case_dir(case).glob("frames/*/*.jpg"))) == 30


# -- the tool --------------------------------------------------------------------------------


@dataclass(frozen=True)
class Ctx:
    case: Case
    cache: CaseCache
    frame_budget: int = 12
    max_image_side: int = 896


def run_tool(ctx: Ctx, args: dict[str, Any], earlier: list[Any] | None = None) -> ToolMessage:
    graph = StateGraph(MessagesState, context_schema=Ctx)
    graph.add_node("tools", ToolNode(make_video_tools(), handle_tool_errors=(ToolInputError,)))
    graph.add_edge(START, "tools")
    graph.add_edge("tools", END)
    call = AIMessage("", tool_calls=[{"name": "look_at_frames", "args": args, "id": "c1"}])
    messages = [HumanMessage("What happens?"), *(earlier or []), call]
    out = graph.compile().invoke({"messages": messages}, context=ctx)
    reply = out["messages"][-1]
    assert isinstance(reply, ToolMessage)
    return reply


def test_tool_schema_is_for_the_planner() -> None:
    function = convert_to_openai_tool(look_at_frames)["function"]  # what a planner is sent
    properties = function["parameters"]["properties"]
    assert set(properties) == {"times", "start", "end", "count"}  # runtime is injected
    assert "mm:ss" in properties["times"]["description"]
    assert "frame budget" in function["description"]


def test_tool_shows_frames_through_a_tool_node(videos: Path, cache: CaseCache) -> None:
    case = open_case(videos / "clip.mp4", cache)
    reply = run_tool(Ctx(case, cache), {"times": ["00:01", 2, "0.5"]})
    assert reply.status != "error"
    assert reply.text.startswith("Showing 3 frames at 00:01, 00:02, 00:00.5 (case 00:03 long)")
    assert "9 frames left" in reply.text
    result = reply.artifact
    assert isinstance(result, FramesResult) and result.case_id == case.id
    assert [frame_number(p) for p in result.image_paths()] == [25, 50, 13]
    evidence = result.evidence()
    assert [e.time for e in evidence] == pytest.approx([1.0, 2.0, 0.52])
    assert {e.kind for e in evidence} == {"frame"} and evidence[0].frame == str(
        result.frames[0].path
    )


def test_tool_samples_a_clip(videos: Path, cache: CaseCache) -> None:
    case = open_case(videos / "clip.mp4", cache)
    reply = run_tool(Ctx(case, cache), {"start": "0", "end": "00:02", "count": 5})
    assert [f.index for f in reply.artifact.frames] == [0, 13, 25, 38, 50]


@pytest.mark.parametrize(
    ("args", "message"),
    [
        ({"times": ["99:00"]}, "past the end of the case (00:03)"),
        ({"times": ["soon"]}, "is not a time"),
        ({}, "say which frames"),
        ({"times": ["1"], "start": "0", "end": "1"}, "not both"),
        ({"start": "2", "end": "1"}, "swap start and end"),
    ],
)
def test_tool_input_errors_come_back_as_error_messages(
    videos: Path, cache: CaseCache, args: dict[str, Any], message: str
) -> None:
    case = open_case(videos / "clip.mp4", cache)
    reply = run_tool(Ctx(case, cache), args)
    assert reply.status == "error" and message in reply.text


def test_tool_keeps_to_the_frame_budget(videos: Path, cache: CaseCache) -> None:
    case = open_case(videos / "clip.mp4", cache)
    earlier = [
        AIMessage("", tool_calls=[{"name": "look_at_frames", "args": {}, "id": "c0"}]),
        ToolMessage("Showing 3 frames", tool_call_id="c0"),
    ]
    ToolRecord(images=["a"] * 3).attach(earlier[1])
    too_many = run_tool(Ctx(case, cache, frame_budget=4), {"times": ["1", "2"]}, earlier)
    assert too_many.status == "error" and "only 1 of this answer's 4 are left" in too_many.text
    fits = run_tool(Ctx(case, cache, frame_budget=4), {"times": ["1"]}, earlier)
    assert fits.status != "error" and "0 frames left" in fits.text
    spent = run_tool(Ctx(case, cache, frame_budget=3), {"times": ["1"]}, earlier)
    assert spent.status == "error" and "answer from what you have seen" in spent.text


# -- the sample case -------------------------------------------------------------------------


def test_sample_case_opens_with_notes(cache: CaseCache) -> None:
    case = open_case(SAMPLE, cache)
    assert case.duration == pytest.approx(40.0, abs=0.1) and case.fps == pytest.approx(25.0)
    assert "synthetic" in case.metadata["notes"].lower()
    assert "CalotTriangleDissection" in case.metadata["notes"]
    assert SAMPLE.stat().st_size < 1_000_000
    frame = sample_frames(case, [30.0], cache, max_side=160)[0]
    assert load_image(frame.path).size == (frame.width, frame.height)
