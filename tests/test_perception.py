"""The perception tool through the real graph, with the perception model served over HTTP."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from langchain_core.messages import ToolMessage

from surgagent.agent.api import SurgicalAgent
from surgagent.agent.backends import load_backend
from surgagent.agent.settings import get_settings
from surgagent.agent.testing.openai_server import ScriptedOpenAIServer, ScriptedReply
from surgagent.agent.testing.scripted import ScriptedChatModel, call, say
from surgagent.tools.cache import Case, CaseCache
from surgagent.tools.detector.types import Detection, FrameDetections
from surgagent.tools.perception.engine import ask_perception
from surgagent.tools.perception.types import PerceptionArgs
from surgagent.tools.results import PerceptionResult, read_result
from surgagent.tools.video.engine import open_case
from surgagent.tools.vision import VisionAnswer


def perception_agent(server: ScriptedOpenAIServer, replies: list, **overrides) -> SurgicalAgent:
    settings = get_settings(
        perception={"backend": "openai", "base_url": server.base_url, "max_retries": 0},
        **overrides,
    )
    vision = load_backend(settings.perception, role="perception")
    return SurgicalAgent(settings, ScriptedChatModel(replies=replies), vision=vision)


def test_cvs_question_is_asked_in_surgvlm_style_and_parsed(case_video: Path) -> None:
    answer = "Criterion 1: No; Criterion 2: No; Criterion 3: Yes."
    with ScriptedOpenAIServer([ScriptedReply(content=answer)]) as server:
        agent = perception_agent(
            server,
            [
                call("ask_perception", question="Is CVS achieved?", task="cvs", times=["00:05"]),
                say("CVS is not achieved at [00:05]: only criterion 3 is met."),
            ],
        )
        assert [tool.name for tool in agent.tools] == ["look_at_frames", "ask_perception"]
        result = agent.invoke("Was CVS achieved at 5 s?", case=case_video, thread_id="t")
    assert result.status == "answered"
    request = server.requests[0]
    assert request["chat_template_kwargs"]["enable_thinking"] is False  # perception role
    parts = request["messages"][0]["content"]
    assert sum(part["type"] == "image_url" for part in parts) == 1
    assert "Criterion 1" in parts[-1]["text"] and "Is CVS achieved?" in parts[-1]["text"]
    tool_message = [m for m in agent.history("t") if isinstance(m, ToolMessage)][0]
    parsed = read_result(tool_message)
    assert isinstance(parsed, PerceptionResult) and parsed.parsed == [False, False, True]
    assert "Parsed: [False, False, True]" in tool_message.text
    evidence = result.evidence[0]
    assert evidence.kind == "tool_output" and evidence.time == 5.0
    # Perception frames are not shown to the planner and do not use its frame budget.
    assert result.usage.images == 0


def test_unreadable_answer_is_kept_and_flagged(case_video: Path) -> None:
    with ScriptedOpenAIServer([ScriptedReply(content="It is hard to say.")]) as server:
        agent = perception_agent(
            server,
            [
                call("ask_perception", question="Where is the hook?", task="grid", times=["1"]),
                say("Unclear."),
            ],
        )
        agent.invoke("Where is the hook?", case=case_video, thread_id="t")
    tool_message = [m for m in agent.history("t") if isinstance(m, ToolMessage)][0]
    unread = read_result(tool_message)
    assert isinstance(unread, PerceptionResult)
    assert unread.answer == "It is hard to say." and unread.parsed is None
    assert "could not be read as grid" in tool_message.text


def test_too_many_frames_is_an_input_error(case_video: Path) -> None:
    with ScriptedOpenAIServer() as server:
        agent = perception_agent(
            server,
            [
                call("ask_perception", question="What happens?", start="0", end="9", count=20),
                say("ok"),
            ],
        )
        agent.invoke("Q?", case=case_video, thread_id="t")
    error = [m for m in agent.history("t") if isinstance(m, ToolMessage)][0]
    assert error.status == "error" and "at most 8" in error.text
    assert server.requests == []


def test_perception_endpoint_down_ends_the_run_plainly(case_video: Path) -> None:
    settings = get_settings(
        perception={"backend": "openai", "base_url": "http://127.0.0.1:9/v1", "max_retries": 0},
        tool_retries=1,
    )
    vision = load_backend(settings.perception, role="perception")
    planner = ScriptedChatModel(
        replies=[call("ask_perception", question="What is shown?", times=["1"]), say("never")]
    )
    result = SurgicalAgent(settings, planner, vision=vision).invoke("Q?", case=case_video)
    assert result.status == "error"
    # The backend's retries are the only ones: the tool layer does not try again on top.
    assert "127.0.0.1:9" in result.answer and "(1 try)" in result.answer
    assert "2 tries" not in result.answer


def test_without_a_perception_model_the_tool_is_not_offered(case_video: Path) -> None:
    agent = SurgicalAgent(get_settings(), ScriptedChatModel(replies=[say("ok")]))
    assert [tool.name for tool in agent.tools] == ["look_at_frames"]
    agent.invoke("Q?", case=case_video)
    assert [t["function"]["name"] for t in agent.planner.bound_tools] == ["look_at_frames"]  # type: ignore[attr-defined]
    system = agent.planner.seen[0][0].text  # type: ignore[attr-defined]
    assert "look_at_frames" in system and "ask_perception" not in system


# -- the cross-check reads the answer as the evals do ----------------------------------------


@dataclass
class OneAnswer:
    """A perception model that always gives ``text``."""

    text: str
    model_id: str = "scripted"

    def answer(self, images: Sequence[Any], prompt: str, *, max_tokens: int | None = None):
        return VisionAnswer(text=self.text)


@dataclass
class Sees:
    """A detector that finds the named instruments: the same in every frame, or per second."""

    names: tuple[str, ...] = ()
    by_second: dict[int, tuple[str, ...]] | None = None

    def detect(self, case: Case, times: Sequence[float], cache: CaseCache) -> list:
        frames = []
        for t in times:
            names = self.by_second[round(t)] if self.by_second else self.names
            detections = [
                Detection(
                    name=name,
                    class_id=k,
                    confidence=0.9,
                    box=(1, 1, 30, 30),
                    box_norm=(0.01, 0.01, 0.5, 0.5),
                )
                for k, name in enumerate(names)
            ]
            frames.append(
                FrameDetections(
                    time=t, index=round(t * case.fps), width=64, height=64, detections=detections
                )
            )
        return frames


@dataclass
class Context:
    case: Case
    cache: CaseCache
    vision: OneAnswer
    detector: Sees
    max_image_side: int = 64


def recognise(case_video: Path, tmp_path: Path, reply: str, seen: Sees, times: list[str]):
    cache = CaseCache(tmp_path / "cache")
    context = Context(open_case(case_video, cache), cache, OneAnswer(reply), seen)
    args = PerceptionArgs(question="Which instruments?", task="instrument_recognition", times=times)
    return ask_perception(context, args)


def test_a_denied_instrument_is_no_disagreement(case_video: Path, tmp_path: Path) -> None:
    text, result = recognise(
        case_video, tmp_path, "No clipper is visible; only the grasper.", Sees(("Grasper",)), ["2"]
    )
    assert result.parsed == ["Grasper"]
    assert result.disagreements == [] and "Disagreement" not in text


def test_a_real_disagreement_is_still_reported(case_video: Path, tmp_path: Path) -> None:
    _, result = recognise(
        case_video, tmp_path, "Only the grasper.", Sees(("Grasper", "Clipper")), ["2"]
    )
    assert result.disagreements == [
        "at 00:02 perception names grasper but the detector finds clipper, grasper."
    ]


def test_an_answer_about_several_frames_names_what_is_in_any(
    case_video: Path, tmp_path: Path
) -> None:
    # One answer covers both frames: the hook, seen at 00:03 only, is no disagreement at
    # 00:01; an instrument the detector sees in no frame is one, at each frame.
    by_second = {1: ("Grasper",), 3: ("Grasper", "Hook")}
    reply = "Hook and grasper"
    _, agreeing = recognise(case_video, tmp_path, reply, Sees(by_second=by_second), ["1", "3"])
    assert agreeing.disagreements == []
    reply = "Hook, grasper, scissors"
    _, named = recognise(case_video, tmp_path, reply, Sees(by_second=by_second), ["1", "3"])
    assert named.disagreements == [
        "at 00:01 perception names grasper, hook, scissors but the detector finds grasper.",
        "at 00:03 perception names grasper, hook, scissors but the detector finds grasper, hook.",
    ]
