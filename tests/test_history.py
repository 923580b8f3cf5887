"""Fitting a conversation into the planner's context (graphs/history.py)."""

from __future__ import annotations

from pathlib import Path

import pytest
from langchain_core.messages import AIMessage, HumanMessage, SystemMessage, ToolMessage

from surgagent.agent.api import SurgicalAgent
from surgagent.agent.settings import get_settings
from surgagent.agent.testing.scripted import ScriptedChatModel, call, say
from surgagent.graphs.history import TurnTooLong, fit_history

SYSTEM = SystemMessage("You review surgical videos. Case: 40 s, 1 fps.")


def turn(number: int, size: int = 400) -> list[AIMessage | HumanMessage | ToolMessage]:
    return [
        HumanMessage(f"Question {number}? " + "x" * size),
        AIMessage("", tool_calls=[{"name": "look", "args": {"t": number}, "id": f"c{number}"}]),
        ToolMessage("y" * size, tool_call_id=f"c{number}", name="look"),
        AIMessage(f"Answer {number}."),
    ]


def fit(messages: list, budget: int) -> tuple[list, int]:
    fitted = fit_history(SYSTEM, messages, budget=budget, chars_per_token=1.0, image_tokens=10)
    return fitted.messages, fitted.dropped


def test_everything_is_kept_when_it_fits() -> None:
    messages = [*turn(1), *turn(2), HumanMessage("Now?")]
    kept, dropped = fit(messages, budget=10_000)
    assert kept == [SYSTEM, *messages] and dropped == 0


def test_the_oldest_turns_go_first_and_whole() -> None:
    messages = [*turn(1), *turn(2), *turn(3), HumanMessage("Question 4?")]
    kept, dropped = fit(messages, budget=1_200)
    assert dropped == 2
    assert kept[0] is SYSTEM
    assert [m.text for m in kept if isinstance(m, HumanMessage)] == [
        messages[8].text,
        "Question 4?",
    ]
    # No tool result is kept without the call it answers.
    calls = {c["id"] for m in kept if isinstance(m, AIMessage) for c in m.tool_calls}
    assert all(m.tool_call_id in calls for m in kept if isinstance(m, ToolMessage))


def test_a_current_turn_too_long_for_the_context_is_one_sentence() -> None:
    messages = [*turn(1), *turn(2, size=5_000)]
    with pytest.raises(TurnTooLong) as caught:
        fit(messages, budget=2_000)
    message = str(caught.value)
    assert "more than the 2,000 the planner's context leaves" in message and "\n" not in message


def test_a_long_session_is_shortened_and_says_so(case_video: Path) -> None:
    long = "Describe the dissection plane, the structures and the instruments in view. " * 20
    replies = []
    for number in range(4):
        replies += [call("look_at_frames", times=["00:02"]), say(f"Answer {number} at [00:02].")]
    planner = ScriptedChatModel(replies=replies)
    settings = get_settings(planner={"max_context_tokens": 3_000, "max_tokens": 256})
    agent = SurgicalAgent(settings, planner)
    results = [
        agent.invoke(f"Question {n}: {long}", case=case_video, thread_id="long") for n in range(4)
    ]
    assert [r.status for r in results] == ["answered"] * 4
    notes = [
        step.summary for r in results for step in r.trace if "history shortened" in step.summary
    ]
    assert notes and "to fit the planner's 3,000-token context" in notes[0]
    last = planner.seen[-1]  # type: ignore[attr-defined]
    questions = [m.text for m in last if isinstance(m, HumanMessage)]
    assert questions[-1].startswith("Question 3") and not questions[0].startswith("Question 0")
    # The whole history is still in the session: only what was sent was shortened.
    assert sum(isinstance(m, HumanMessage) for m in agent.history("long")) == 4
