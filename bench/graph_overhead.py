"""Time per planner step of the case-review graph against a bare LangGraph tool loop.

Both graphs run the same scripted planner (N tool calls, then an answer) and the same
trivial tool, so the difference is what our graph adds: system prompt, retries and timing
around tools, evidence, the answer node and the AnswerResult, and the in-memory session
(one checkpoint per run; the bare loop keeps none).

    python bench/graph_overhead.py --steps 6 --runs 200
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def _replies(steps: int) -> list[Any]:
    from surgagent.agent.testing.scripted import call, say

    return [call("echo", text=f"step {i}") for i in range(steps)] + [say("done [00:01]")]


def _echo_tool() -> Any:
    from langchain_core.tools import tool

    @tool
    def echo(text: str) -> str:
        """Return the text."""
        return text

    return echo


def bare_loop(steps: int) -> Any:
    """A plain agent -> tools -> agent loop with prebuilt parts."""
    from langgraph.graph import START, MessagesState, StateGraph
    from langgraph.prebuilt import ToolNode, tools_condition

    from surgagent.agent.testing.scripted import ScriptedChatModel

    echo = _echo_tool()
    model = ScriptedChatModel()

    def agent_node(state: MessagesState) -> dict[str, Any]:
        return {"messages": [model.bind_tools([echo]).invoke(state["messages"])]}

    graph = StateGraph(MessagesState)
    graph.add_node("agent", agent_node)
    graph.add_node("tools", ToolNode([echo]))
    graph.add_edge(START, "agent")
    graph.add_conditional_edges("agent", tools_condition)
    graph.add_edge("tools", "agent")
    compiled = graph.compile()

    def run() -> None:
        model.replies, model.position, model.seen = _replies(steps), 0, []
        compiled.invoke({"messages": [("user", "q")]}, {"recursion_limit": 100})

    return run


def our_graph(steps: int, video: Path) -> Any:
    """The case-review graph through `SurgicalAgent.invoke` (in-memory sessions)."""
    from surgagent.agent.api import SurgicalAgent
    from surgagent.agent.settings import get_settings
    from surgagent.agent.testing.scripted import ScriptedChatModel

    model = ScriptedChatModel()
    agent = SurgicalAgent(get_settings(step_budget=steps + 2), model, tools=[_echo_tool()])
    case = agent.open_case(video)

    def run() -> None:
        model.replies, model.position, model.seen = _replies(steps), 0, []
        result = agent.invoke("q", case=case)
        assert result.status == "answered", result.answer

    return run


def _time(run: Any, runs: int) -> float:
    for _ in range(5):
        run()
    samples = []
    for _ in range(runs):
        started = time.perf_counter()
        run()
        samples.append(time.perf_counter() - started)
    return statistics.median(samples)


def main() -> None:
    """Run both graphs and print time per step and the ratio."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=6, help="tool-calling turns per run")
    parser.add_argument("--runs", type=int, default=200, help="timed runs per graph")
    args = parser.parse_args()

    import os

    with tempfile.TemporaryDirectory() as tmp:
        os.environ["SURGAGENT_DATA_DIR"] = tmp
        from tests.fixtures.videos import write_video

        video = write_video(Path(tmp) / "bench.mp4", fps=5, duration=4.0)
        bare = _time(bare_loop(args.steps), args.runs)
        ours = _time(our_graph(args.steps, video), args.runs)
    turns = args.steps + 1
    print(f"steps per run: {args.steps} tool turns + 1 answer; median of {args.runs} runs")
    print(f"bare LangGraph loop : {bare * 1e3:7.2f} ms/run  {bare / turns * 1e3:6.2f} ms/step")
    print(f"case-review graph   : {ours * 1e3:7.2f} ms/run  {ours / turns * 1e3:6.2f} ms/step")
    print(f"ratio (ours / bare) : {ours / bare:.2f}x  (target <= 1.3x)")


if __name__ == "__main__":
    main()
