"""Grounding checks on answers: cited times, presence claims and unmentioned disagreements.

The graph tests run the real detector, phase segmenter and tools on the tool-chain case
(Calot's triangle 00:00-00:11 with a Hook, clipping 00:11-00:20 with a Clipper, a Grasper
throughout), perception answering from a scripted OpenAI-compatible server, and a scripted
planner. The unit tests feed `check_grounding` handmade tool messages.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from langchain_core.messages import AIMessage, AnyMessage, HumanMessage, ToolMessage

from surgagent.agent.api import SurgicalAgent
from surgagent.agent.backends import load_backend
from surgagent.agent.settings import get_settings
from surgagent.agent.testing.openai_server import ScriptedOpenAIServer, ScriptedReply
from surgagent.agent.testing.scripted import ScriptedChatModel, call, say
from surgagent.graphs.grounding import check_grounding, cited_times
from surgagent.graphs.result import AnswerResult
from surgagent.tools.detector.engine import InstrumentDetector
from surgagent.tools.detector.types import (
    Detection,
    DetectionsResult,
    FrameDetections,
    InstrumentInterval,
    TimelineResult,
)
from surgagent.tools.perception.types import PerceptionResult
from surgagent.tools.phase.engine import PhaseSegmenter
from surgagent.tools.phase.types import PhaseAtResult, PhaseSegment, PhaseSegmentsResult
from surgagent.tools.video.types import Frame, FramesResult
from tests.fixtures.engines import IMGSZ, TinyDetector
from tests.test_tool_chain import CASE, PHASES, make_case, train_chain_segmenter

# -- the real graph, engines and tools -----------------------------------------------------


@pytest.fixture(scope="module")
def engines(
    tmp_path_factory: pytest.TempPathFactory, tiny_detector: TinyDetector
) -> dict[str, Any]:
    from surgagent.tools.cache import CaseCache

    root = tmp_path_factory.mktemp("grounding")
    checkpoint = train_chain_segmenter(root, CaseCache(root / "cache"))
    video = root / "case" / "lapchole.mp4"
    make_case(video, root / "case" / "gold-phase.txt", CASE, seed=7)
    return {
        "video": video,
        "detector": InstrumentDetector.from_weights(tiny_detector.weights, imgsz=IMGSZ),
        "segmenter": PhaseSegmenter.from_checkpoint(checkpoint, vocabulary=PHASES),
    }


def review(engines: dict[str, Any], perception_says: str, answer: str) -> AnswerResult:
    """Look at 00:15 with the detector, segmenter and perception, then answer ``answer``."""
    planner = ScriptedChatModel(
        replies=[
            call("instruments_at", time="00:15"),
            call("phase_at", time="00:15"),
            call(
                "ask_perception",
                question="Which instruments are visible?",
                task="instrument_recognition",
                times=["00:15"],
            ),
            say(answer),
        ]
    )
    with ScriptedOpenAIServer([ScriptedReply(content=perception_says)]) as server:
        settings = get_settings(
            perception={"backend": "openai", "base_url": server.base_url, "max_retries": 0}
        )
        agent = SurgicalAgent(
            settings,
            planner,
            vision=load_backend(settings.perception, role="perception"),
            detector=engines["detector"],
            segmenter=engines["segmenter"],
        )
        result = agent.invoke("What happens at 00:15?", case=engines["video"])
    assert result.status == "answered", result.answer
    assert [s.error for s in result.trace if s.node == "tools"] == [None, None, None]
    return result


def test_an_ungrounded_answer_gets_one_warning_per_unsupported_claim(
    engines: dict[str, Any],
) -> None:
    result = review(
        engines,
        perception_says="Hook, Grasper",  # the detector finds a Clipper and a Grasper
        answer=(
            "At [00:15] the hook retracts the gallbladder while the grasper holds it. "
            "Gallbladder dissection is under way at [00:15]. "
            "The clipper is applied at [00:25]."
        ),
    )
    assert result.warnings == [
        "The answer cites [00:25], but no tool in this session looked at that time.",
        "The answer says Hook is present at [00:15], but the detector did not see it there.",
        "The answer places phase GallbladderDissection at [00:15], but the phase segmenter "
        "does not.",
        "The tools disagree and the answer does not say so: at 00:15 perception names "
        "grasper, hook but the detector finds clipper, grasper.",
    ]


def test_a_grounded_answer_has_no_warnings(engines: dict[str, Any]) -> None:
    result = review(
        engines,
        perception_says="Clipper, Grasper",
        answer=(
            "At [00:15] the clipper and the grasper are in view [00:15 detection], during "
            "clipping and cutting [00:11-00:20]. No hook is visible at [00:15]."
        ),
    )
    assert result.warnings == []


def test_an_answer_that_names_the_disagreement_is_not_warned(engines: dict[str, Any]) -> None:
    result = review(
        engines,
        perception_says="Hook, Grasper",
        answer=(
            "The tools disagree at [00:15]: the detector sees the clipper and the grasper, "
            "while the perception model names a hook instead of the clipper."
        ),
    )
    assert result.warnings == []


# -- the checks alone, on handmade tool messages -------------------------------------------

_ids = iter(range(10_000))


def tool_message(result: Any) -> ToolMessage:
    return ToolMessage(content="", artifact=result, tool_call_id=f"t{next(_ids)}", name="tool")


def detections(*frames: tuple[float, list[str]]) -> DetectionsResult:
    return DetectionsResult(
        case_id="c",
        model_id="m",
        class_names=["Grasper", "Clipper", "Hook"],
        frames=[
            FrameDetections(
                time=t,
                index=int(t * 5),
                width=64,
                height=64,
                detections=[
                    Detection(
                        name=name,
                        class_id=0,
                        confidence=0.9,
                        box=(0, 0, 1, 1),
                        box_norm=(0, 0, 0.1, 0.1),
                    )
                    for name in names
                ],
            )
            for t, names in frames
        ],
    )


def interval(name: str, start: float, end: float) -> InstrumentInterval:
    return InstrumentInterval(
        instrument=name,
        start=start,
        end=end,
        frames=int(end - start) + 1,
        mean_confidence=0.8,
        max_confidence=0.9,
        best_time=start,
        best_box=(0, 0, 0.1, 0.1),
    )


def timeline(*intervals: InstrumentInterval, end: float = 3600.0) -> TimelineResult:
    return TimelineResult(
        case_id="c",
        instrument=None,
        fps=1.0,
        start=0.0,
        end=end,
        class_names=["Grasper", "Clipper", "Hook"],
        intervals=list(intervals),
    )


def segments(*parts: tuple[str, float, float], phase: str | None = None) -> PhaseSegmentsResult:
    return PhaseSegmentsResult(
        case_id="c",
        phase=phase,
        duration=3600.0,
        segments=[PhaseSegment(phase=p, start=a, end=b, confidence=0.9) for p, a, b in parts],
    )


def turn(*results: Any) -> list[AnyMessage]:
    return [HumanMessage("q"), *(tool_message(r) for r in results)]


def warnings_for(answer: str, *results: Any, earlier: list[AnyMessage] | None = None) -> list[str]:
    now = turn(*results)
    return check_grounding([*(earlier or []), *now], now, answer)


def test_cited_times_read_every_written_form() -> None:
    found = cited_times(
        "At [01:05] and [1:02:03]; over [01:05–01:30], [00:10-00:42 segment], "
        "[frame 00:05], [02:00 to 02:10] and [00:03.5]; not [cvs-c1] nor 01:05."
    )
    assert [(c.start, c.end) for c in found] == [
        (65.0, 65.0),
        (3723.0, 3723.0),
        (65.0, 90.0),
        (10.0, 42.0),
        (5.0, 5.0),
        (120.0, 130.0),
        (3.5, 3.5),
    ]


def test_a_cited_time_must_be_near_a_frame_or_inside_a_stretch_looked_at() -> None:
    frames = FramesResult(
        case_id="c",
        frames=[Frame(time=65.4, index=327, path=Path("f.jpg"), width=64, height=64)],
    )
    phases = segments(("CalotTriangleDissection", 600.0, 1200.0), phase="CalotTriangleDissection")
    assert warnings_for("Seen at [01:05] and [15:00]; it runs [10:00–20:00].", frames, phases) == []
    assert warnings_for("Seen at [01:08].", frames) == [
        "The answer cites [01:08], but no tool in this session looked at that time."
    ]
    # A stretch needs both of its ends looked at.
    assert len(warnings_for("Over [01:05–05:00].", frames)) == 1
    # An answer citing a time without any tool result is not grounded.
    assert len(warnings_for("At [00:01:05].")) == 1


def test_an_earlier_turns_evidence_supports_a_follow_up() -> None:
    earlier = turn(detections((30.0, ["Grasper"])))
    answer = "As seen before, the grasper is in view at [00:30]."
    assert warnings_for(answer, earlier=earlier) == []


def test_instrument_claims_are_checked_against_the_timeline() -> None:
    track = timeline(interval("Clipper", 600.0, 660.0), interval("Grasper", 0.0, 3600.0))
    assert warnings_for("The clipper is used at [10:30], with the grasper.", track) == []
    assert warnings_for("The clipper is in use over [09:00–10:05].", track) == []
    assert warnings_for("The clipper is applied at [20:00].", track) == [
        "The answer says Clipper is present at [20:00], but the detector did not see it there."
    ]
    # Denied instruments are not claims; an instrument cited at two times needs one of them.
    assert warnings_for("No clipper is visible at [20:00].", track) == []
    assert warnings_for("The clipper shows at [20:00] and at [10:10].", track) == []


def test_a_sentence_citing_a_time_the_detector_skipped_gets_no_claim_verdict() -> None:
    seen = detections((15.0, ["Grasper"]))
    frames = FramesResult(
        case_id="c", frames=[Frame(time=40.0, index=200, path=Path("f.jpg"), width=8, height=8)]
    )
    # The hook may be at 00:40, where only frames were looked at: no claim warning.
    assert warnings_for("The grasper at [00:15] and the hook at [00:40].", seen, frames) == []


def test_phase_claims_are_checked_against_the_segmenter() -> None:
    phases = segments(("Preparation", 0.0, 120.0), ("CalotTriangleDissection", 120.0, 900.0))
    grounded = "Preparation ends and Calot's triangle dissection starts at [02:00]."
    assert warnings_for(grounded, phases) == []
    assert warnings_for("Clipping and cutting is under way at [05:00].", phases) == [
        "The answer places phase ClippingCutting at [05:00], but the phase segmenter does not."
    ]
    at = PhaseAtResult(
        case_id="c",
        time=300.0,
        phase="CalotTriangleDissection",
        confidence=0.9,
        segment=PhaseSegment(phase="CalotTriangleDissection", start=120, end=900, confidence=0.9),
    )
    assert len(warnings_for("At [05:00] the gallbladder is being packaged.", at)) == 0
    assert len(warnings_for("Gallbladder packaging at [05:00].", at)) == 1


def perception(task: str, parsed: Any, notes: list[str] | None = None) -> PerceptionResult:
    return PerceptionResult(
        case_id="c",
        task=task,  # type: ignore[arg-type]
        question="?",
        times=[15.0],
        frames=[],
        answer=str(parsed),
        parsed=parsed,
        disagreements=notes or [],
    )


def test_disagreements_between_tools_must_be_named() -> None:
    noted = perception("phase", "ClippingCutting", ["at 00:15 perception says X but Y."])
    assert warnings_for("It is clipping at [00:15].", noted) == [
        "The tools disagree and the answer does not say so: at 00:15 perception says X but Y."
    ]
    assert warnings_for("The sources disagree about [00:15].", noted) == []
    # Found from the run's own results where perception's cross-check did not run.
    said = perception("instrument_recognition", ["Hook"])
    (warning,) = warnings_for("The view at [00:15].", said, detections((15.0, ["Clipper"])))
    assert warning.endswith("at 00:15 perception names hook but the detector finds clipper.")
    phases = segments(("ClippingCutting", 0.0, 900.0))
    (warning,) = warnings_for("At [00:15].", perception("phase", "Preparation"), phases)
    assert warning.endswith(
        "at 00:15 perception says Preparation but the phase segmenter does not."
    )
    # An earlier turn's disagreement is not this answer's business.
    earlier = turn(noted)
    assert warnings_for("Clipping at [00:15].", phases, earlier=earlier) == []


def test_an_error_or_empty_answer_is_not_checked() -> None:
    assert check_grounding(turn(), turn(), "") == []
    messages = [HumanMessage("q"), AIMessage(content="Seen at [00:10].")]
    assert check_grounding(messages, messages, "Seen at [00:10].") == [
        "The answer cites [00:10], but no tool in this session looked at that time."
    ]


# -- where warnings are shown --------------------------------------------------------------


def test_ask_prints_the_warnings_under_the_answer() -> None:
    from surgagent.agent.testing.openai_server import ScriptedOpenAIServer
    from tests.fixtures.cli import openai_env, run_cli

    script = [
        ScriptedReply(tool_calls=[("look_at_frames", {"times": ["00:02"]})]),
        ScriptedReply(content="A grasper at [00:02]; the clipper comes at [00:30]."),
    ]
    with ScriptedOpenAIServer(script) as server:
        done = run_cli(
            "ask", "examples/sample_case/sample_lapchole.mp4", "Q?", env=openai_env(server)
        )
    assert done.returncode == 0, done.stderr
    answer, notes = done.stdout.split("Evidence")
    assert "A grasper at [00:02]; the clipper comes at [00:30]." in answer
    assert (
        "note: The answer cites [00:30], but no tool in this session looked at that time."
        in " ".join(notes.split())
    )


def test_the_web_chat_shows_the_warnings_under_the_answer() -> None:
    from surgagent.ui.app import answer_with_warnings

    result = AnswerResult(
        answer="Clipped at [00:30].",
        status="answered",
        warnings=["The answer cites [00:30], but no tool in this session looked at <that>."],
    )
    shown = answer_with_warnings(result.answer, result)
    assert shown.startswith('Clipped at <a class="seek" href="#t=30.00">[00:30]</a>.')
    assert shown.endswith(
        "\n\n> **Unsupported:** The answer cites [00:30], but no tool in this session looked "
        "at &lt;that&gt;."
    )
    grounded = result.model_copy(update={"warnings": []})
    assert answer_with_warnings(grounded.answer, grounded) == answer_with_warnings(
        grounded.answer, None
    )
