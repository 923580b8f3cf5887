"""The eval harness end to end: a synthetic Cholec80-layout dataset becomes a task set, the
agent and the bare VLM answer it through a scripted OpenAI-compatible server on loopback, the
run is killed midway and resumed, and the report scores what was answered.

The scripted model answers in the varied styles real models use (sentences, spaced phase
names, "Answer:" lines), thinking inline before ``</think>`` as a server without a reasoning
parser sends it, and is deliberately wrong on a known subset, so the expected scores are known
exactly. Both videos share their annotations, so a question's gold does not depend on which
video it is about.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from surgagent.agent.testing.openai_server import ScriptedOpenAIServer, ScriptedReply
from surgagent.evals.records import read_results, read_tasks
from surgagent.tools.phase.annotations import write_cholec80_phase_file
from surgagent.tools.vocabulary import CHOLEC80_PHASES, CHOLEC80_TOOLS
from tests.fixtures.cli import run_cli
from tests.fixtures.videos import write_video

REPO = Path(__file__).resolve().parents[1]
DURATIONS = [20, 40, 20, 40, 20, 20, 20]  # seconds per Cholec80 phase: 180 s videos
PHASE_TOOLS = {0: ["Grasper"], 1: ["Grasper", "Hook"], 2: ["Clipper", "Scissors"], 3: ["Hook"]}
STYLES = [
    "The phase is {spaced}.",
    "Answer: {name}",
    "{name}",
    "I think this is the {spaced} phase.",
]


def spaced(name: str) -> str:
    return re.sub(r"(?<=[a-z])(?=[A-Z])", " ", name).lower()


def write_cholec80(root: Path, videos: int = 2) -> None:
    for v in range(1, videos + 1):
        name = f"video{v:02d}"
        write_video(root / "videos" / f"{name}.mp4", fps=2, duration=180, size=(64, 48))
        labels = np.repeat(np.arange(7), [d * 25 for d in DURATIONS])
        write_cholec80_phase_file(
            root / "phase_annotations" / f"{name}-phase.txt", labels, CHOLEC80_PHASES, fps=25
        )
        rows = ["Frame\t" + "\t".join(CHOLEC80_TOOLS)]
        for frame in range(0, len(labels), 25):
            present = PHASE_TOOLS.get(int(labels[frame]), ["Grasper", "Irrigator"])
            rows.append(f"{frame}\t" + "\t".join(str(int(t in present)) for t in CHOLEC80_TOOLS))
        (root / "tool_annotations").mkdir(parents=True, exist_ok=True)
        (root / "tool_annotations" / f"{name}-tool.txt").write_text("\n".join(rows) + "\n")


def wrong_on_purpose(question: str, system: str) -> bool:
    """A fixed subset of each system's phase answers are wrong."""
    return int(hashlib.sha256(f"{system}:{question}".encode()).hexdigest(), 16) % 3 == 0


class Model:
    """The scripted model: answers the item a request is about, as `system` would."""

    def __init__(self, tasks_file: Path) -> None:
        _, items = read_tasks(tasks_file)
        self.items = {item.question: item for item in items}

    def item_of(self, text: str) -> Any:
        return next(item for q, item in self.items.items() if q in text)

    def answer(self, item: Any, system: str) -> str:
        if item.task == "cholec80-phase":
            gold = item.gold
            if wrong_on_purpose(item.question, system):
                gold = CHOLEC80_PHASES[(CHOLEC80_PHASES.index(gold) + 1) % 7]
            style = STYLES[int(hashlib.md5(item.question.encode()).hexdigest(), 16) % len(STYLES)]
            return style.format(name=gold, spaced=spaced(gold))
        if item.task == "cholec80-tools":
            return "Visible: " + ", ".join(item.gold) + "."
        return str(item.gold)

    def __call__(self, request: dict[str, Any]) -> ScriptedReply:
        messages = request["messages"]
        user = next(m for m in messages if m["role"] == "user")
        content = user["content"]
        text = (
            content
            if isinstance(content, str)
            else " ".join(part.get("text", "") for part in content if part.get("type") == "text")
        )
        item = self.item_of(text)
        thought = {"reasoning": "The frame settles it.", "reasoning_field": None}
        if not request.get("tools"):  # the bare VLM: one call with the frames
            return ScriptedReply(content=self.answer(item, "direct"), **thought)
        if not any(m["role"] == "tool" for m in messages):  # the planner looks, then answers
            when = item.media.start or 0
            return ScriptedReply(tool_calls=[("look_at_frames", {"times": [str(when)]})])
        return ScriptedReply(content=self.answer(item, "agent"), reasoning="The frame settles it.")


def model_env(server: ScriptedOpenAIServer) -> dict[str, str]:
    return {
        "SURGAGENT_PLANNER__BACKEND": "openai",
        "SURGAGENT_PLANNER__BASE_URL": server.base_url,
        "SURGAGENT_PLANNER__MODEL": "Qwen/Qwen3.5-9B",
        "SURGAGENT_KNOWLEDGE__ENABLED": "false",
        "SURGAGENT_PERCEPTION__ENABLED": "false",
    }


def run_cli_slow(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return run_cli(*args, env=env, timeout=300)


@pytest.mark.slow
def test_tasks_run_killed_resumed_and_reported(tmp_path: Path) -> None:
    data, tasks_file, run_dir = tmp_path / "cholec80", tmp_path / "c80.jsonl", tmp_path / "run"
    write_cholec80(data)
    built = run_cli_slow(
        "eval", "tasks", str(data), "--dataset", "cholec80", "--out", str(tasks_file),
        "--tasks", "cholec80-phase,cholec80-tools", "--every", "30", env={},
    )  # fmt: skip
    assert built.returncode == 0, built.stderr
    header, items = read_tasks(tasks_file)
    assert header.items == len(items) >= 20 and header.meta["root"] == str(data.resolve())
    model = Model(tasks_file)
    with ScriptedOpenAIServer(model, latency=0.15) as server:
        env = model_env(server)
        command = [sys.executable, "-m", "surgagent", "eval", "run", str(tasks_file)]
        command += ["--out", str(run_dir), "--systems", "agent,direct", "--concurrency", "2"]
        first = subprocess.Popen(command, env={**os.environ, **env}, cwd=REPO)
        results = run_dir / "results.jsonl"
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            if results.exists() and len(results.read_text().splitlines()) >= 10:
                break
            time.sleep(0.1)
        first.send_signal(signal.SIGKILL)
        first.wait()
        killed_at = list(read_results(results))
        assert 10 <= len(killed_at) < 2 * len(items)  # stopped midway

        resumed = run_cli_slow(*command[3:], "--json", env=env)
        assert resumed.returncode == 0, resumed.stderr
        summary = json.loads(resumed.stdout)
        assert summary["skipped"] == len(killed_at) and summary["failed"] == 0
        assert summary["done"] == 2 * len(items) - len(killed_at)

    final = list(read_results(results))
    assert len({(r.system, r.item_id) for r in final}) == len(final) == 2 * len(items)
    phase_items = [i for i in items if i.task == "cholec80-phase"]
    expected = {
        system: 100
        * sum(not wrong_on_purpose(i.question, system) for i in phase_items)
        / len(phase_items)
        for system in ("agent", "direct")
    }
    agent_steps = [r.trace for r in final if r.system == "agent"][0]
    assert [step["tool"] for step in agent_steps if step["node"] == "tools"] == ["look_at_frames"]

    reported = run_cli_slow("eval", "report", str(run_dir), "--json", "--bootstrap", "200", env={})
    assert reported.returncode == 0, reported.stderr
    report = json.loads(reported.stdout)
    phase = report["scores"]["cholec80-phase"]
    for system in ("agent", "direct"):
        assert phase[system]["primary"]["value"] == pytest.approx(expected[system], abs=0.01)
        assert phase[system]["n_unparsed"] == 0
        assert report["scores"]["cholec80-tools"][system]["primary"]["value"] == 100.0
    (delta,) = [d for d in report["deltas"] if d["task"] == "cholec80-phase"]
    assert delta["delta"] == pytest.approx(expected["agent"] - expected["direct"], abs=0.01)
    assert delta["low"] <= delta["delta"] <= delta["high"]
    assert report["context"] == "fresh"
    markdown = (run_dir / "report" / "report.md").read_text()
    assert "| cholec80-phase | accuracy |" in markdown and "Per-phase F1" in markdown
    assert (run_dir / "report" / "plots" / "scores.png").stat().st_size > 1000
