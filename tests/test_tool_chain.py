"""The three vision tools chained by the planner on one synthetic case, all engines real.

The case shows three Cholec80 phases, each framed by its own border colour, with the shapes
the tiny detector knows as instruments: a Hook while the triangle is dissected, a Clipper
while clipping and cutting, a Grasper throughout. A tiny phase segmenter is trained here on
three such videos (a few seconds); the detector is the session's shapes detector; the
perception model answers over HTTP from a scripted OpenAI-compatible server. The planner is
scripted, but reads each tool's real result to choose its next call, as a model would.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from langchain_core.messages import AIMessage, BaseMessage, ToolMessage

from surgagent.agent.api import SurgicalAgent
from surgagent.agent.backends import load_backend
from surgagent.agent.settings import get_settings
from surgagent.agent.testing.openai_server import ScriptedOpenAIServer, ScriptedReply
from surgagent.agent.testing.scripted import ScriptedChatModel, call, say
from surgagent.tools.base import format_time
from surgagent.tools.cache import CaseCache
from surgagent.tools.detector.engine import InstrumentDetector
from surgagent.tools.perception.engine import cross_check
from surgagent.tools.perception.types import PerceptionResult
from surgagent.tools.phase.annotations import write_cholec80_phase_file
from surgagent.tools.phase.engine import PhaseSegmenter
from surgagent.tools.phase.model import HeadConfig
from surgagent.tools.phase.train import train_segmenter
from surgagent.tools.video.engine import open_case
from tests.fixtures.engines import IMGSZ, SIZE, TinyDetector
from tests.fixtures.videos import write_video
from tests.fixtures.yolo import Box, draw_scene

PHASES = ["CalotTriangleDissection", "ClippingCutting", "GallbladderDissection"]
# Phase borders far from every instrument's colour (a cyan border once read as a Hook).
BORDERS = [(150, 40, 200), (30, 30, 30), (240, 240, 240)]
# Per phase, the instruments on screen besides the Grasper, and where.
PHASE_TOOLS: list[list[tuple[str, Box]]] = [
    [("Hook", (0.55, 0.50, 0.85, 0.85))],
    [("Clipper", (0.45, 0.25, 0.75, 0.65))],
    [],
]
GRASPER: tuple[str, Box] = ("Grasper", (0.08, 0.20, 0.28, 0.70))
FPS = 5
TRAIN = [[12, 8, 10], [9, 11, 12], [14, 7, 9]]  # phase durations (s) of the training videos
CASE = [11, 9, 10]  # the reviewed case: clipping from 00:11 to 00:20


def painter(durations: list[int], seed: int) -> Callable[[int, int, int], np.ndarray]:
    bounds = np.cumsum(durations)

    def paint(index: int, width: int, height: int) -> np.ndarray:
        phase = int(np.searchsorted(bounds, index / FPS, side="right"))
        image = draw_scene(width, height, [GRASPER, *PHASE_TOOLS[phase]], seed=seed)
        border = 14
        for band in (np.s_[:border], np.s_[-border:], np.s_[:, :border], np.s_[:, -border:]):
            image[band] = BORDERS[phase]
        return image

    return paint


def make_case(video: Path, annotation: Path, durations: list[int], seed: int) -> None:
    write_video(
        video, fps=FPS, duration=sum(durations), size=SIZE, frame_fn=painter(durations, seed)
    )
    bounds = np.cumsum([d * FPS for d in durations])[:-1]
    labels = np.searchsorted(bounds, np.arange(sum(durations) * FPS), side="right")
    write_cholec80_phase_file(annotation, labels, PHASES, fps=FPS, video_fps=FPS)


@dataclass
class Engines:
    case_video: Path
    cache: CaseCache
    detector: InstrumentDetector
    segmenter: PhaseSegmenter


def train_chain_segmenter(root: Path, cache: CaseCache) -> Path:
    """Train the bordered-phase segmenter on the `TRAIN` videos under ``root`` (~4 s)."""
    for k, durations in enumerate(TRAIN, start=1):
        make_case(
            root / "videos" / f"video{k:02d}.mp4",
            root / "annotations" / f"video{k:02d}-phase.txt",
            durations,
            seed=k,
        )
    return train_segmenter(
        root / "videos",
        root / "annotations",
        out=root / "phase.pt",
        epochs=30,
        vocabulary=PHASES,
        cache=cache,
        image_size=64,
        head=HeadConfig(stages=2, layers=6, channels=32),
        lr=5e-3,
    )


@pytest.fixture(scope="module")
def engines(tmp_path_factory: pytest.TempPathFactory, tiny_detector: TinyDetector) -> Engines:
    root = tmp_path_factory.mktemp("chain")
    cache = CaseCache(root / "cache")
    checkpoint = train_chain_segmenter(root, cache)
    case_video = root / "case" / "lapchole.mp4"
    make_case(case_video, root / "case" / "gold-phase.txt", CASE, seed=7)
    return Engines(
        case_video,
        cache,
        InstrumentDetector.from_weights(tiny_detector.weights, imgsz=IMGSZ),
        PhaseSegmenter.from_checkpoint(checkpoint, vocabulary=PHASES),
    )


def last_artifact(messages: list[BaseMessage]) -> dict[str, Any]:
    tool_message = next(m for m in reversed(messages) if isinstance(m, ToolMessage))
    assert tool_message.status != "error", tool_message.text
    return tool_message.artifact


def test_planner_chains_segmenter_detector_and_perception(engines: Engines) -> None:
    seen: dict[str, Any] = {}

    def after_segments(messages: list[BaseMessage]) -> AIMessage:
        (clipping,) = last_artifact(messages)["segments"]
        seen["start"], seen["end"] = clipping["start"], clipping["end"]
        seen["middle"] = round((clipping["start"] + clipping["end"]) / 2)
        return call("instruments_at", time=format_time(seen["middle"]))

    def after_instruments(messages: list[BaseMessage]) -> AIMessage:
        (frame,) = last_artifact(messages)["frames"]
        seen["instruments"] = [d["name"] for d in frame["detections"]]
        seen["before"] = seen["start"] - 2
        return call(
            "ask_perception",
            question="Is the critical view of safety achieved?",
            task="cvs",
            times=[format_time(seen["before"])],
        )

    def final(messages: list[BaseMessage]) -> AIMessage:
        seen["cvs"] = last_artifact(messages)["parsed"]
        start, end, middle, before = (
            format_time(seen[k]) for k in ("start", "end", "middle", "before")
        )
        return say(
            f"Clipping and cutting runs from {start} to {end}; at {middle} the detector sees "
            f"{' and '.join(seen['instruments'])}. Just before it, at {before}, only the third "
            "criterion of the critical view of safety is met, so CVS was not achieved."
        )

    planner = ScriptedChatModel(
        replies=[
            call("phase_segments", phase="ClippingCutting"),
            after_segments,
            after_instruments,
            final,
        ]
    )
    cvs_answer = "Criterion 1: No; Criterion 2: No; Criterion 3: Yes."
    with ScriptedOpenAIServer([ScriptedReply(content=cvs_answer)]) as server:
        settings = get_settings(
            perception={"backend": "openai", "base_url": server.base_url, "max_retries": 0}
        )
        agent = SurgicalAgent(
            settings,
            planner,
            vision=load_backend(settings.perception, role="perception"),
            detector=engines.detector,
            segmenter=engines.segmenter,
        )
        result = agent.invoke(
            "Was the critical view of safety achieved before clipping?",
            case=engines.case_video,
        )

    # Each engine's answer matches what the video shows.
    assert abs(seen["start"] - 11) <= 1 and abs(seen["end"] - 20) <= 1
    assert set(seen["instruments"]) == {"Clipper", "Grasper"}
    assert seen["cvs"] == [False, False, True]
    assert len(server.requests) == 1
    images = [p for p in server.requests[0]["messages"][0]["content"] if p["type"] == "image_url"]
    assert len(images) == 1

    assert result.status == "answered"
    assert [step.tool for step in result.trace if step.node == "tools"] == [
        "phase_segments",
        "instruments_at",
        "ask_perception",
    ]
    by_tool = {item.tool: item for item in result.evidence}
    assert (by_tool["phase_segments"].time, by_tool["phase_segments"].end) == (
        seen["start"],
        seen["end"],
    )
    assert by_tool["instruments_at"].time == pytest.approx(seen["middle"], abs=0.2)
    assert by_tool["ask_perception"].time == pytest.approx(seen["before"], abs=0.2)
    # The answer cites the moments its evidence comes from.
    for item in by_tool.values():
        assert format_time(item.time) in result.answer


def perception_result(task: str, times: list[float], parsed: list[Any]) -> PerceptionResult:
    return PerceptionResult(
        case_id="lapchole",
        task=task,  # type: ignore[arg-type]
        question="?",
        times=times,
        frames=[],
        answer=str(parsed),
        parsed=parsed,
    )


@dataclass(frozen=True)
class CheckContext:
    case: Any
    cache: CaseCache
    detector: InstrumentDetector | None = None
    segmenter: PhaseSegmenter | None = None


@pytest.fixture
def check_context(engines: Engines) -> CheckContext:
    case = open_case(engines.case_video, engines.cache)
    return CheckContext(case, engines.cache, engines.detector, engines.segmenter)


def test_cross_check_names_instrument_disagreements(check_context: CheckContext) -> None:
    agreeing = perception_result("instrument_recognition", [15.0], ["Clipper", "Grasper"])
    assert cross_check(check_context, agreeing) == []
    wrong = perception_result("instrument_recognition", [3.0, 15.0], ["Hook", "Grasper"])
    (note,) = cross_check(check_context, wrong)
    assert note == (
        "at 00:15 perception names grasper, hook but the detector finds clipper, grasper."
    )


def test_cross_check_names_phase_disagreements(check_context: CheckContext) -> None:
    assert cross_check(check_context, perception_result("phase", [15.0], ["ClippingCutting"])) == []
    (note,) = cross_check(
        check_context, perception_result("phase", [5.0, 25.0], ["GallbladderDissection"])
    )
    assert note.startswith(
        "at 00:05 perception says GallbladderDissection but the phase segmenter says "
        "CalotTriangleDissection (confidence 0."
    )


def test_cross_check_only_asks_configured_engines(check_context: CheckContext) -> None:
    bare = CheckContext(check_context.case, check_context.cache)
    assert cross_check(bare, perception_result("phase", [5.0], ["GallbladderDissection"])) == []
    unread = perception_result("instrument_recognition", [3.0], []).model_copy(
        update={"parsed": None, "parse_error": "no instrument named"}
    )
    assert cross_check(check_context, unread) == []  # nothing read: nothing to compare


def test_cross_check_compares_an_answer_that_sees_no_instrument(
    check_context: CheckContext,
) -> None:
    # "No instrument is visible." reads as an empty list: the detector's grasper contradicts it.
    (note,) = cross_check(check_context, perception_result("instrument_recognition", [15.0], []))
    assert note.startswith("at 00:15 perception names none but the detector finds ")
