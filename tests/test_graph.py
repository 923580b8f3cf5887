"""The case-review graph through the real LangGraph loop, steered by a scripted planner."""

from __future__ import annotations

import threading
import time
from pathlib import Path
from typing import Any

import pytest
from langchain_core.messages import AIMessage, BaseMessage, HumanMessage, ToolMessage
from langchain_core.messages.tool import invalid_tool_call
from langchain_core.tools import tool

from surgagent.agent.api import SurgicalAgent
from surgagent.agent.errors import UserError
from surgagent.agent.settings import get_settings
from surgagent.agent.testing.scripted import ScriptedChatModel, call, calls, say
from surgagent.graphs.nodes import route_after_plan, route_after_tools
from surgagent.tools.base import ToolRecord
from surgagent.tools.errors import BackendError, ToolInputError
from surgagent.tools.results import FramesResult, read_result


def make_agent(
    replies: list[Any], *, tools: list[Any] | None = None, **overrides: Any
) -> SurgicalAgent:
    planner = ScriptedChatModel(replies=replies)
    settings = get_settings(**overrides)
    agent = SurgicalAgent(settings, planner, tools=tools)
    return agent


def tool_messages(agent: SurgicalAgent, thread_id: str) -> list[ToolMessage]:
    return [m for m in agent.history(thread_id) if isinstance(m, ToolMessage)]


def test_direct_answer_keeps_thinking_out_of_the_answer(case_video: Path) -> None:
    agent = make_agent([say("The video shows a synthetic case.", reasoning="Nothing to look up.")])
    result = agent.invoke("What is this?", case=case_video)
    assert result.status == "answered"
    assert result.answer == "The video shows a synthetic case."
    assert result.reasoning == ["Nothing to look up."]
    assert result.case_id.startswith("case-")


def test_inline_think_block_is_moved_to_reasoning(case_video: Path) -> None:
    agent = make_agent([say("I should answer briefly.</think>Short answer.")])
    result = agent.invoke("Q?", case=case_video)
    assert result.answer == "Short answer."
    assert result.reasoning == ["I should answer briefly."]


def test_a_planner_without_vision_is_told_the_frames_are_not_shown(case_video: Path) -> None:
    agent = make_agent(
        [call("look_at_frames", times=["00:02"]), say("Seen at [00:02].")],
        planner={"vision": False},
    )
    result = agent.invoke("What happens at 2 s?", case=case_video, thread_id="t1")
    assert result.status == "answered"
    assert [item.time for item in result.evidence] == pytest.approx([2.0], abs=0.21)
    shown = agent.planner.seen[1][-1]  # type: ignore[attr-defined]
    assert isinstance(shown, ToolMessage) and isinstance(shown.content, str)
    assert shown.content.startswith("Showing 1 frame at 00:02")
    assert "not shown to you: the planner model takes no images" in shown.content
    assert not any(isinstance(m.content, list) for m in agent.planner.seen[1])  # type: ignore[attr-defined]


def test_frames_are_shown_to_the_planner_and_cited(case_video: Path) -> None:
    agent = make_agent([call("look_at_frames", times=["00:02", "5"]), say("Seen at [00:02].")])
    result = agent.invoke("What happens at 2 s?", case=case_video, thread_id="t1")
    assert result.status == "answered"
    assert [item.time for item in result.evidence] == pytest.approx([2.0, 5.0], abs=0.21)
    assert all(item.frame and Path(item.frame).exists() for item in result.evidence)
    assert result.usage.images == 2
    # The second planner call saw the two frames as image parts inside the tool result, and no
    # user message after it: Qwen3.5's template takes the last user message that is not only
    # tool results as the question, and drops the thinking of assistant turns before it.
    second_call = agent.planner.seen[1]  # type: ignore[attr-defined]
    shown = second_call[-1]
    assert isinstance(shown, ToolMessage) and isinstance(shown.content, list)
    images = [p for p in shown.content if isinstance(p, dict) and p.get("type") == "image_url"]
    assert len(images) == 2
    assert images[0]["image_url"]["url"].startswith("data:image/jpeg;base64,")
    assert [type(m).__name__ for m in second_call[-3:]] == [
        "HumanMessage",
        "AIMessage",
        "ToolMessage",
    ]
    tool_step = [step for step in result.trace if step.node == "tools"][0]
    assert tool_step.tool == "look_at_frames" and tool_step.args == {"times": ["00:02", "5"]}
    assert tool_step.duration_s > 0
    # Checkpointed state keeps plain data, not images.
    stored = tool_messages(agent, "t1")[0]
    assert isinstance(stored.artifact, dict)
    shown = read_result(stored)
    assert isinstance(shown, FramesResult) and len(shown.frames) == 2


def test_unknown_tool_goes_back_to_the_planner(case_video: Path) -> None:
    agent = make_agent([call("detect_aliens", t=3), say("No such tool; answering anyway.")])
    result = agent.invoke("Q?", case=case_video, thread_id="t")
    assert result.status == "answered"
    error = tool_messages(agent, "t")[0]
    assert error.status == "error" and "look_at_frames" in error.text
    assert result.trace[1].error is not None


def test_unreadable_tool_call_goes_back_to_the_planner(case_video: Path) -> None:
    broken = AIMessage(
        content="",
        invalid_tool_calls=[
            invalid_tool_call(
                name="look_at_frames", args='{"times": [1,', id="bad1", error="bad JSON"
            )
        ],
    )
    agent = make_agent([broken, say("Recovered.")])
    result = agent.invoke("Q?", case=case_video, thread_id="t")
    assert result.status == "answered" and result.answer == "Recovered."
    error = tool_messages(agent, "t")[0]
    assert error.status == "error" and "could not be read" in error.text
    # The planner saw the error before its second reply.
    assert any(isinstance(m, ToolMessage) for m in agent.planner.seen[1])  # type: ignore[attr-defined]


@pytest.mark.parametrize(
    ("args", "expected"),
    [({"times": ["99:00"]}, "past the end"), ({"times": "not-a-list-of-times"}, "times")],
)
def test_bad_tool_arguments_become_error_messages(
    case_video: Path, args: dict[str, Any], expected: str
) -> None:
    agent = make_agent([call("look_at_frames", **args), say("ok")])
    agent.invoke("Q?", case=case_video, thread_id="t")
    error = tool_messages(agent, "t")[0]
    assert error.status == "error" and expected in error.text


def test_looping_planner_stops_at_the_step_budget(case_video: Path) -> None:
    def loop_until_told(messages: list[BaseMessage]) -> AIMessage:
        if "step budget" in messages[-1].text:
            return say("Partial answer from frames [00:01].")
        seconds = sum(isinstance(m, AIMessage) for m in messages) % 10
        return call("look_at_frames", times=[str(seconds)])

    agent = make_agent([loop_until_told], step_budget=3, frame_budget=50)
    agent.planner.repeat_last = True  # type: ignore[attr-defined]
    result = agent.invoke("Q?", case=case_video)
    assert result.status == "budget_exhausted"
    assert result.answer == "Partial answer from frames [00:01]."
    assert sum(step.node == "plan" for step in result.trace) == 4  # 3 turns + the final answer
    # The instruction to answer now travels inside the last tool result: a user message
    # there would end the tool loop for Qwen3.5's template, and with it the loop's thinking.
    last_call = agent.planner.seen[-1]  # type: ignore[attr-defined]
    assert isinstance(last_call[-1], ToolMessage) and "step budget" in last_call[-1].text
    assert [type(m).__name__ for m in last_call].count("HumanMessage") == 1
    assert "Answer the question now" not in tool_messages(agent, result.thread_id)[-1].text


def test_repeated_identical_call_is_refused(case_video: Path) -> None:
    same = call("look_at_frames", times=["1"])
    agent = make_agent([same, same, say("done")])
    agent.invoke("Q?", case=case_video, thread_id="t")
    first, second = tool_messages(agent, "t")
    assert first.status != "error" and second.status == "error"
    assert "already called" in second.text


def test_planner_backend_failure_ends_with_error_status(case_video: Path) -> None:
    agent = make_agent([BackendError("endpoint http://127.0.0.1:9/v1 is down")])
    result = agent.invoke("Q?", case=case_video)
    assert result.status == "error"
    assert "endpoint http://127.0.0.1:9/v1 is down" in result.answer


def test_tool_backend_errors_are_retried_then_reported(case_video: Path) -> None:
    attempts = {"flaky": 0, "broken": 0}

    @tool
    def flaky(x: int) -> str:
        """Works on the third try."""
        attempts["flaky"] += 1
        if attempts["flaky"] < 3:
            raise BackendError("timeout")
        return f"value {x}"

    @tool
    def broken(x: int) -> str:
        """Never works."""
        attempts["broken"] += 1
        raise BackendError("out of memory")

    agent = make_agent([call("flaky", x=1), say("ok")], tools=[flaky, broken], tool_retries=2)
    assert agent.invoke("Q?", case=case_video).status == "answered"
    assert attempts["flaky"] == 3

    agent = make_agent(
        [call("broken", x=1), say("never reached")], tools=[flaky, broken], tool_retries=1
    )
    result = agent.invoke("Q?", case=case_video)
    assert result.status == "error" and "out of memory" in result.answer
    assert attempts["broken"] == 2


def test_parallel_tool_calls_run_together(case_video: Path) -> None:
    running: set[str] = set()
    overlap = threading.Event()

    @tool
    def slow_a() -> str:
        """Slow tool A."""
        running.add("a")
        time.sleep(0.3)
        if "b" in running:
            overlap.set()
        return "a"

    @tool
    def slow_b() -> str:
        """Slow tool B."""
        running.add("b")
        time.sleep(0.3)
        if "a" in running:
            overlap.set()
        return "b"

    agent = make_agent([calls(("slow_a", {}), ("slow_b", {})), say("both")], tools=[slow_a, slow_b])
    started = time.perf_counter()
    result = agent.invoke("Q?", case=case_video)
    assert result.status == "answered"
    assert overlap.is_set()
    assert time.perf_counter() - started < 0.55


def test_sessions_interleave_and_keep_their_case(case_video: Path, tmp_path: Path) -> None:
    def echo_history(messages: list[BaseMessage]) -> AIMessage:
        questions = [m.text for m in messages if isinstance(m, HumanMessage)]
        return say(" | ".join(questions))

    agent = make_agent([echo_history])
    agent.planner.repeat_last = True  # type: ignore[attr-defined]
    assert agent.invoke("a1", case=case_video, thread_id="A").answer == "a1"
    assert agent.invoke("b1", case=case_video, thread_id="B").answer == "b1"
    assert agent.invoke("a2", thread_id="A").answer == "a1 | a2"
    assert agent.invoke("b2", thread_id="B").answer == "b1 | b2"

    from tests.fixtures.videos import write_video

    other = write_video(tmp_path / "other.mp4", fps=5, duration=2.0)
    with pytest.raises(UserError, match="start a new session"):
        agent.invoke("a3", case=other, thread_id="A")
    with pytest.raises(UserError, match="which case"):
        agent.invoke("c1", thread_id="C")


def test_sqlite_sessions_survive_a_restart(case_video: Path) -> None:
    planner = ScriptedChatModel(replies=[say("first answer"), say("second answer")])
    first = SurgicalAgent.from_settings(planner_model=planner, sessions="sqlite")
    first.invoke("q1", case=case_video, thread_id="keep")
    restarted = SurgicalAgent.from_settings(planner_model=planner, sessions="sqlite")
    assert [m.text for m in restarted.history("keep")] == ["q1", "first answer"]
    assert restarted.invoke("q2", thread_id="keep").answer == "second answer"
    assert get_settings().sessions_db.exists()


def test_arguments_no_checkpoint_can_store_go_back_to_the_planner(case_video: Path) -> None:
    replies = [call("look_at_frames", times=[2**70]), say("I looked at 00:02 instead [00:02].")]
    planner = ScriptedChatModel(replies=replies)
    agent = SurgicalAgent.from_settings(planner_model=planner, sessions="sqlite")
    result = agent.invoke("What is at 2 s?", case=case_video, thread_id="big")
    assert result.status == "answered" and "00:02" in result.answer
    (error,) = tool_messages(agent, "big")
    assert error.status == "error"
    assert "the arguments['times'][0] holds 1180591620717411303424, too large a number" in (
        error.text
    )
    # The turn was saved: a new agent on the same file finds the whole exchange.
    again = SurgicalAgent.from_settings(planner_model=planner, sessions="sqlite")
    assert [turn.answer for turn in again.turns("big")] == [result.answer]


def test_a_call_interrupted_by_a_kill_is_closed_on_resume(case_video: Path) -> None:
    planner = ScriptedChatModel(replies=[say("Resumed; the grasper is at [00:02].")])
    agent = SurgicalAgent.from_settings(planner_model=planner, sessions="sqlite")
    config = {"configurable": {"thread_id": "killed"}}
    opened = agent.open_case(case_video)
    # What a `kill -9` during a tool call leaves in the sessions file: the call, no reply.
    interrupted = AIMessage(
        "", tool_calls=[{"name": "look_at_frames", "args": {"times": ["2"]}, "id": "c1"}]
    )
    agent.graph.update_state(
        config, {"messages": [HumanMessage("q1"), interrupted], "case_id": opened.id}
    )
    result = agent.invoke("And now?", thread_id="killed")
    assert result.status == "answered"
    sent = planner.seen[-1]
    position = next(i for i, m in enumerate(sent) if getattr(m, "tool_calls", None))
    reply = sent[position + 1]
    assert isinstance(reply, ToolMessage) and reply.tool_call_id == "c1"
    assert reply.status == "error" and "was interrupted before it finished" in reply.text
    assert isinstance(sent[position + 2], HumanMessage) and sent[position + 2].text == "And now?"


def test_stream_reports_steps_tokens_and_the_answer(case_video: Path) -> None:
    agent = make_agent([call("look_at_frames", times=["1"]), say("Clipper at [00:01] frame.")])
    events = list(agent.stream("Q?", case=case_video))
    kinds = [event.kind for event in events]
    assert kinds.index("tool_call") < kinds.index("tool_result") < kinds.index("token")
    assert "".join(e.text for e in events if e.kind == "token") == "Clipper at [00:01] frame."
    assert events[-1].kind == "answer" and events[-1].result is not None
    assert events[-1].result.evidence[0].kind == "frame"


def test_the_result_names_the_models_the_run_used(case_video: Path) -> None:
    from surgagent.agent.backends import load_backend
    from surgagent.graphs.result import ModelUse

    settings = get_settings(
        perception={"backend": "openai", "model": "served/A", "base_url": "http://127.0.0.1:9/v1"}
    )
    vision = load_backend(settings.perception, role="perception")  # never called here
    agent = SurgicalAgent(settings, ScriptedChatModel(replies=[say("A.")]), vision=vision)
    result = agent.invoke("Q?", case=case_video)
    assert result.models == [
        # A ready-made planner is named by its class: the settings do not describe it.
        ModelUse(
            role="planner",
            backend="surgagent.agent.testing.scripted.ScriptedChatModel",
            model="scripted",
        ),
        ModelUse(
            role="perception",
            backend="openai",
            model="served/A",
            endpoint="http://127.0.0.1:9/v1",
        ),
    ]
    # A question across the library offers no perception tool, so names no perception model.
    assert [m.role for m in agent.run_context(None).models] == ["planner"]


def test_a_tool_input_error_class_is_a_value_error() -> None:
    # Tools raise ToolInputError; callers that only know ValueError still catch it.
    assert issubclass(ToolInputError, ValueError)


def test_routers_on_handmade_state() -> None:
    class Ctx:
        step_budget = 2

    class Runtime:
        context = Ctx()

    question = HumanMessage("q")
    with_call = AIMessage(content="", tool_calls=[{"name": "t", "args": {}, "id": "1"}])
    runtime: Any = Runtime()
    assert (
        route_after_plan({"messages": [question, with_call], "remaining_steps": 20}, runtime)
        == "tools"
    )
    assert (
        route_after_plan({"messages": [question, with_call], "remaining_steps": 2}, runtime)
        == "answer"
    )
    spent = [question, with_call, ToolMessage("r", tool_call_id="1"), with_call]
    assert route_after_plan({"messages": spent, "remaining_steps": 20}, runtime) == "answer"
    assert (
        route_after_plan(
            {"messages": [question, AIMessage("done")], "remaining_steps": 20}, runtime
        )
        == "answer"
    )
    assert (
        route_after_plan({"messages": [question, with_call], "error": "down"}, runtime) == "answer"
    )
    failed = ToolMessage("x", tool_call_id="1")
    ToolRecord(backend_failure=True).attach(failed)
    assert route_after_tools({"messages": [question, with_call, failed]}) == "answer"
    assert (
        route_after_tools({"messages": [question, with_call, ToolMessage("ok", tool_call_id="1")]})
        == "plan"
    )


def test_in_process_transformers_planner_end_to_end(
    case_video: Path, tmp_path_factory: pytest.TempPathFactory
) -> None:
    """The README's default path: a Qwen3.5 checkpoint loaded in-process plans over the case."""
    from surgagent.agent.testing.tiny_qwen import build_tiny_qwen3_5

    model_dir = build_tiny_qwen3_5(tmp_path_factory.mktemp("models") / "tiny-qwen3_5")
    agent = SurgicalAgent.from_settings(
        planner={"model": str(model_dir), "thinking": False, "temperature": 0, "max_tokens": 24},
        step_budget=2,
    )
    result = agent.invoke("Which instruments appear?", case=case_video)
    # Random weights say nothing useful, but greedy decoding of this tiny model answers
    # plain text, and the prompt (system, tools, case) really went through the template.
    assert result.status == "answered" and result.answer
    assert result.usage.prompt_tokens > 200
    assert result.trace and result.trace[0].node == "plan"
    assert "<think>" not in result.answer and "<tool_call>" not in result.answer
