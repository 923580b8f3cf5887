"""The surgagent CLI as a user runs it: a real process, real settings, a loopback endpoint."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from surgagent.agent.testing.openai_server import ScriptedOpenAIServer, ScriptedReply
from tests.fixtures.cli import REPO, openai_env, run_cli
from tests.fixtures.videos import damaged_copy, write_video


def test_help_is_instant_and_loads_no_torch() -> None:
    code = (
        "import sys; from typer.testing import CliRunner; from surgagent.cli.main import app; "
        "r = CliRunner().invoke(app, ['--help']); assert r.exit_code == 0, r.output; "
        "assert 'ask' in r.output and 'chat' in r.output; "
        "heavy = ('torch', 'transformers', 'av', 'ultralytics', 'chromadb'); "
        "heavy = [m for m in heavy if m in sys.modules]; "
        "assert not heavy, heavy"
    )
    subprocess.run([sys.executable, "-c", code], check=True, cwd=REPO, timeout=60)
    code = "import sys, surgagent, surgagent.agent.api; assert 'torch' not in sys.modules"
    subprocess.run([sys.executable, "-c", code], check=True, cwd=REPO, timeout=60)


def test_ask_without_a_reachable_model_fails_fast_with_one_sentence() -> None:
    started = time.perf_counter()
    done = run_cli("ask", "examples/sample_case/sample_lapchole.mp4", "Q?")
    elapsed = time.perf_counter() - started
    assert done.returncode == 1
    assert "Traceback" not in done.stderr
    assert "SURGAGENT_PLANNER__" in done.stderr
    assert len(done.stderr.strip().splitlines()) <= 3
    down = run_cli(
        "ask",
        "examples/sample_case/sample_lapchole.mp4",
        "Q?",
        env={
            "SURGAGENT_PLANNER__BACKEND": "openai",
            "SURGAGENT_PLANNER__BASE_URL": "http://127.0.0.1:9/v1",
        },
    )
    assert down.returncode == 1 and "Traceback" not in down.stderr
    assert "127.0.0.1:9" in down.stderr
    # Process start-up included (about 0.8 s here): the graph is not even imported.
    assert elapsed < 2.0


def test_ask_streams_and_prints_json(tmp_path: Path) -> None:
    script = [
        ScriptedReply(
            reasoning="Look first.", tool_calls=[("look_at_frames", {"times": ["00:03"]})]
        ),
        ScriptedReply(reasoning="I saw it.", content="A grasper is visible at [00:03]."),
    ]
    with ScriptedOpenAIServer(script * 2) as server:
        done = run_cli(
            "ask",
            "examples/sample_case/sample_lapchole.mp4",
            "What is at 3 s?",
            env=openai_env(server),
        )
        assert done.returncode == 0, done.stderr
        assert "A grasper is visible at [00:03]." in done.stdout
        assert "look_at_frames" in done.stderr  # the tool step is shown as progress
        assert "I saw it." not in done.stdout  # thinking stays out of the answer
        as_json = run_cli(
            "ask",
            "examples/sample_case/sample_lapchole.mp4",
            "What is at 3 s?",
            "--json",
            env=openai_env(server),
        )
    assert as_json.returncode == 0, as_json.stderr
    result = json.loads(as_json.stdout)
    assert result["status"] == "answered"
    assert result["reasoning"] == ["Look first.", "I saw it."]
    assert result["evidence"][0]["time"] == pytest.approx(3.0, abs=0.1)
    # The frame went to the planner as an image part.
    second = server.requests[-1]["messages"]
    assert any(
        isinstance(m["content"], list) and any(p.get("type") == "image_url" for p in m["content"])
        for m in second
    )


def test_chat_session_resumes_after_a_restart() -> None:
    script = [
        ScriptedReply(tool_calls=[("look_at_frames", {"times": ["00:02"]})]),
        ScriptedReply(content="A grasper is in view at [00:02].", reasoning="I looked."),
        ScriptedReply(content="Still the grasper."),
    ]
    with ScriptedOpenAIServer(script) as server:
        env = openai_env(server)
        first = run_cli(
            "chat",
            "examples/sample_case/sample_lapchole.mp4",
            "--session",
            "s1",
            env=env,
            stdin="what is at 2 s?\n/quit\n",
        )
        assert first.returncode == 0, first.stderr
        assert "A grasper is in view at [00:02]." in first.stdout
        second = run_cli("chat", "--session", "s1", env=env, stdin="and now?\n/evidence\n/trace\n")
    assert second.returncode == 0, second.stderr
    assert "resuming session s1 (1 turn)" in second.stdout
    # The conversation so far is shown before the prompt: question and answer, no thinking.
    resumed = second.stdout.split("resuming session s1")[1]
    assert "what is at 2 s?" in resumed and "A grasper is in view at [00:02]." in resumed
    assert "I looked." not in resumed
    assert "Still the grasper." in second.stdout
    after_answer = second.stdout.split("Still the grasper.")[1]
    assert "[00:02 frame]" in after_answer  # /evidence lists what the session cited
    assert "plan" in after_answer  # /trace shows the last answer's steps
    # The second request carried the whole conversation, tool call and result included.
    roles = [m["role"] for m in server.requests[-1]["messages"]]
    assert roles.count("tool") == 1 and roles.count("assistant") == 2


def test_missing_and_corrupt_videos_are_one_line_errors(tmp_path: Path) -> None:
    broken = tmp_path / "broken.mp4"
    broken.write_bytes(os.urandom(2048))
    with ScriptedOpenAIServer(["never used"]) as server:
        for case in (str(tmp_path / "missing.mp4"), str(broken)):
            done = run_cli("ask", case, "Q?", env=openai_env(server))
            assert done.returncode == 1
            assert "Traceback" not in done.stderr and "error:" in done.stderr


def test_a_damaged_span_goes_back_to_the_planner(tmp_path: Path) -> None:
    intact = write_video(
        tmp_path / "intact.mp4", fps=10, duration=20.0, faststart=True, gop=10, noise=20
    )
    video = damaged_copy(intact, tmp_path / "damaged.mp4", 0.5, 0.6)
    script = [
        ScriptedReply(tool_calls=[("look_at_frames", {"times": ["00:02", "00:11"]})]),
        ScriptedReply(tool_calls=[("look_at_frames", {"times": ["00:02"]})]),
        ScriptedReply(content="At [00:02] the field is clear; 00:11 is unreadable."),
    ]
    with ScriptedOpenAIServer(script) as server:
        env = {**openai_env(server), "SURGAGENT_KNOWLEDGE__ENABLED": "false"}
        done = run_cli("ask", str(video), "What is seen at 00:02 and 00:11?", env=env)
    assert done.returncode == 0, done.stderr
    assert "At [00:02] the field is clear" in done.stdout
    tool_replies = [
        m["content"] for q in server.requests for m in q["messages"] if m["role"] == "tool"
    ]
    assert "damaged.mp4 is damaged between 00:" in tool_replies[0]
    shown = tool_replies[-1]  # the frame travels inside the tool result
    assert shown[0]["text"].startswith("Showing 1 frame at 00:02")
    assert shown[1]["type"] == "image_url"


def test_config_show_and_doctor_json(tmp_path: Path) -> None:
    shown = run_cli("config", "show", "--json", env={"SURGAGENT_STEP_BUDGET": "4"})
    rows = {row["name"]: row for row in json.loads(shown.stdout)}
    assert (
        rows["step_budget"]["value"] == "4"
        and rows["step_budget"]["source"] == "env SURGAGENT_STEP_BUDGET"
    )
    with ScriptedOpenAIServer() as server:
        doctor = run_cli("doctor", "--json", env=openai_env(server))
        assert doctor.returncode == 0, doctor.stdout
        checks = {check["name"]: check for check in json.loads(doctor.stdout)["checks"]}
        assert checks["planner model"]["ok"] and checks["package langgraph"]["ok"]
        assert checks["perception model"]["ok"]  # it follows the planner unless set
        perception_down = {
            **openai_env(server),
            "SURGAGENT_PERCEPTION__BACKEND": "openai",
            "SURGAGENT_PERCEPTION__BASE_URL": "http://127.0.0.1:9/v1",
        }
        doctor = run_cli("doctor", "--json", env=perception_down)
    assert doctor.returncode == 1  # a role that is turned on cannot be reached
    checks = {check["name"]: check for check in json.loads(doctor.stdout)["checks"]}
    assert (
        not checks["perception model"]["ok"]
        and "SURGAGENT_PERCEPTION__" in checks["perception model"]["fix"]
    )


def test_doctor_fails_for_missing_engine_weights(tmp_path: Path) -> None:
    with ScriptedOpenAIServer() as server:
        env = {**openai_env(server), "SURGAGENT_DETECTOR__WEIGHTS": str(tmp_path / "no.pt")}
        doctor = run_cli("doctor", env=env)
    assert doctor.returncode == 1
    assert f"detector: {tmp_path / 'no.pt'} does not exist" in doctor.stdout


def test_doctor_says_which_roles_see_images() -> None:
    with ScriptedOpenAIServer() as server:
        shown = run_cli("doctor", env=openai_env(server)).stdout
        blind = run_cli("doctor", env={**openai_env(server), "SURGAGENT_PLANNER__VISION": "false"})
    said, blind_said = " ".join(shown.split()), " ".join(blind.stdout.split())
    assert "sees images unless its server says the model takes none" in said
    assert "reads frames through ask_perception (planner.vision = false)" in blind_said


def test_index_prints_a_summary_or_json(tmp_path: Path) -> None:
    done = run_cli("index", "examples/sample_case/sample_lapchole.mp4", "--json")
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["frames_written"] > 0
    again = run_cli("index", "examples/sample_case/sample_lapchole.mp4")
    assert again.returncode == 0, again.stderr
    first_line = again.stdout.splitlines()[0]
    assert first_line.startswith("indexed sample-lapchole-") and "{" not in again.stdout
    assert "00:40 of video, 40 frames at 1 fps (0 decoded now, 40 already cached)" in first_line
    assert again.stdout.splitlines()[1].startswith("contact sheet: ")


@pytest.mark.parametrize(
    ("env", "args", "expected"),
    [
        (
            {"SURGAGENT_PLANNER__BACKEND": "tensorflow"},
            ["config", "show"],
            "setting planner.backend = 'tensorflow' (env SURGAGENT_PLANNER__BACKEND) is "
            "invalid: Input should be 'openai', 'transformers' or 'vllm'.",
        ),
        (
            {"SURGAGENT_PLANNER__TIMEOUT": "abc"},
            ["ask", "examples/sample_case/sample_lapchole.mp4", "Q?"],
            "setting planner.timeout = 'abc' (env SURGAGENT_PLANNER__TIMEOUT) is invalid",
        ),
        ({}, ["ask", "x.mp4", "Q?", "--steps", "0"], "setting step_budget = 0 (override)"),
        (
            {},
            ["--config", "missing.toml", "doctor"],
            "the settings file missing.toml does not exist",
        ),
    ],
)
def test_bad_settings_are_one_line_without_a_traceback(
    env: dict[str, str], args: list[str], expected: str
) -> None:
    done = run_cli(*args, env=env)
    assert done.returncode == 1
    assert "Traceback" not in done.stderr
    assert done.stderr.startswith(f"error: {expected}"), done.stderr
    assert len(done.stderr.strip().splitlines()) == 1
    debug = run_cli("--debug", *args, env=env)
    assert debug.returncode == 1 and "Traceback" in debug.stderr


def test_misspelt_keys_in_the_settings_file(tmp_path: Path) -> None:
    config = tmp_path / "surgagent.toml"
    config.write_text('step_budjet = 3\n[planner]\nmodle = "x"\n')
    done = run_cli("--config", str(config), "config", "show")
    assert done.returncode == 1 and "Traceback" not in done.stderr
    assert (
        "unknown setting step_budjet" in done.stderr and "did you mean step_budget?" in done.stderr
    )
    assert "unknown setting planner.modle" in done.stderr and "planner.model?" in done.stderr
    config.write_text("[planner\n")
    broken = run_cli("--config", str(config), "config", "show")
    assert broken.returncode == 1 and "is not valid TOML" in broken.stderr


def test_json_commands_print_a_json_error() -> None:
    done = run_cli("ask", "examples/sample_case/sample_lapchole.mp4", "Q?", "--json")
    assert done.returncode == 1
    error = json.loads(done.stdout)
    assert error["kind"] == "ConfigError" and "SURGAGENT_PLANNER__" in error["error"]
    with ScriptedOpenAIServer(["never used"]) as server:
        missing = run_cli("ask", "nowhere.mp4", "Q?", "--json", env=openai_env(server))
    assert missing.returncode == 1 and json.loads(missing.stdout)["kind"] == "CaseError"


def test_unknown_session_is_named_with_the_recent_ones() -> None:
    script = [ScriptedReply(content="First answer."), ScriptedReply(content="Second answer.")]
    with ScriptedOpenAIServer(script) as server:
        env = openai_env(server)
        for session in ("older", "newer"):
            started = run_cli(
                "chat",
                "examples/sample_case/sample_lapchole.mp4",
                "--session",
                session,
                env=env,
                stdin=f"question in {session}?\n/quit\n",
            )
            assert started.returncode == 0, started.stderr
        unknown = run_cli("chat", "--session", "nope", env=env)
        history = run_cli("chat", "--session", "older", env=env, stdin="/history\n")
    assert unknown.returncode == 1 and "Traceback" not in unknown.stderr
    line = unknown.stderr.strip().replace("\n", " ")
    assert line.startswith("error: session 'nope' is unknown; recent sessions: newer (")
    assert "older (sample-lapchole-" in line and "question in older?" in line
    assert "Give a CASE to start a new session." in line
    assert history.returncode == 0, history.stderr
    assert history.stdout.count("question in older?") == 2  # shown on resume, then /history
    assert "First answer." in history.stdout


def test_chat_survives_a_failed_turn() -> None:
    script = [ScriptedReply(garbage=True), ScriptedReply(content="The grasper, at [00:02].")]
    with ScriptedOpenAIServer(script) as server:
        env = {**openai_env(server), "SURGAGENT_PLANNER__MAX_RETRIES": "0"}
        done = run_cli(
            "chat",
            "examples/sample_case/sample_lapchole.mp4",
            "--session",
            "bumpy",
            env=env,
            stdin="first?\nsecond?\n/history\n",
        )
    assert done.returncode == 0, done.stderr
    assert "Traceback" not in done.stderr + done.stdout
    shown = " ".join(done.stdout.split())  # long lines are wrapped on a terminal
    assert "(it sent a line that is not JSON)" in shown
    assert "The grasper, at [00:02]." in done.stdout  # the next question ran
    # /history lists both turns: the failed one (unanswered) and the one after it.
    assert "you> first?\n(no answer)\nyou> second?\nThe grasper" in done.stdout


def test_a_hung_planner_ends_within_its_tries_with_one_sentence() -> None:
    asked: list[float] = []

    def hang(request: dict[str, object]) -> ScriptedReply:
        asked.append(time.monotonic())
        return ScriptedReply(hang=True)

    with ScriptedOpenAIServer(hang) as server:
        env = {
            **openai_env(server),
            "SURGAGENT_PLANNER__TIMEOUT": "5",
            "SURGAGENT_PLANNER__MAX_RETRIES": "2",
            "SURGAGENT_KNOWLEDGE__ENABLED": "false",
        }
        done = run_cli("ask", "examples/sample_case/sample_lapchole.mp4", "Which tools?", env=env)
        ended = time.monotonic()
        tries = len(server.requests)
    assert done.returncode == 2 and "Traceback" not in done.stderr, done.stderr
    # 3 tries of 5 s and the backoff between them, from the first request to the exit.
    assert ended - asked[0] < 15 + 2, f"{ended - asked[0]:.1f} s"
    assert tries == 3  # one retry policy: nobody retries on top of the backend's
    said = " ".join(done.stdout.split())
    assert "stopped answering: nothing came within 5 s (3 tries)" in said
    assert "raise" not in said.lower()  # it is the server, not the timeout, that is wrong
    # While it waits, the user sees each retry as it happens.
    assert " ".join(done.stderr.split()).count("stopped answering") >= 2


def test_json_of_a_failed_run_keeps_the_steps_before_the_failure() -> None:
    script = [
        ScriptedReply(reasoning="Look.", tool_calls=[("look_at_frames", {"times": ["00:03"]})]),
        ScriptedReply(status=503, error="the GPU worker died"),
    ]
    with ScriptedOpenAIServer(script) as server:
        env = {
            **openai_env(server),
            "SURGAGENT_PLANNER__MAX_RETRIES": "0",
            "SURGAGENT_KNOWLEDGE__ENABLED": "false",
        }
        done = run_cli("ask", "examples/sample_case/sample_lapchole.mp4", "Q?", "--json", env=env)
    assert done.stdout, done.stderr
    result = json.loads(done.stdout)
    assert result["status"] == "error" and "the GPU worker died" in result["answer"]
    steps = [(step["node"], step.get("tool")) for step in result["trace"]]
    assert ("tools", "look_at_frames") in steps, steps
    assert [item["time"] for item in result["evidence"]] == [3.0]


def test_timeout_bounds_a_trickling_server() -> None:
    # One SSE keep-alive every 0.2 s never lets a per-read timeout fire.
    script = [ScriptedReply(content="x" * 64, trickle=0.2)]
    with ScriptedOpenAIServer(script) as server:
        env = {**openai_env(server), "SURGAGENT_PLANNER__TIMEOUT": "2"}
        start = time.monotonic()
        done = run_cli("ask", "examples/sample_case/sample_lapchole.mp4", "Which tools?", env=env)
        took = time.monotonic() - start
    assert done.returncode == 2 and "Traceback" not in done.stderr, done.stderr  # status: error
    assert "(it did not finish within 2 s)" in " ".join(done.stdout.split())
    assert took < 2 + 8  # the deadline plus the start-up of a Python process


def test_two_processes_on_one_session_lose_no_turn(tmp_path: Path) -> None:
    # The two first questions meet here, so the processes' turns surely overlap (without a
    # lock on the session, each then saves a history without the other's turn).
    both_asked = threading.Barrier(2, timeout=3)

    def answer(request: dict[str, object]) -> ScriptedReply:
        # Each turn looks at a frame, then answers: several checkpoints per turn.
        messages = request["messages"]
        assert isinstance(messages, list)
        last = messages[-1]["content"]
        if isinstance(last, str) and last.endswith("?"):
            if last in ("q00?", "q10?"):
                with contextlib.suppress(threading.BrokenBarrierError):
                    both_asked.wait()  # with the lock, the second waits: the barrier gives up
            return ScriptedReply(tool_calls=[("look_at_frames", {"times": ["00:02"]})])
        asked = [m["content"] for m in messages if m["role"] == "user"]
        questions = [q for q in asked if isinstance(q, str) and q.endswith("?")]
        return ScriptedReply(content=f"Answer to {questions[-1]}")

    with ScriptedOpenAIServer(answer, latency=0.2) as server:
        env = openai_env(server)
        logs = [tmp_path / f"chat{who}.err" for who in range(2)]
        chats = [
            subprocess.Popen(
                [sys.executable, "-m", "surgagent", "chat"]
                + ["examples/sample_case/sample_lapchole.mp4", "--session", "shared"],
                stdin=subprocess.PIPE,
                stdout=subprocess.DEVNULL,
                stderr=log.open("w"),
                text=True,
                cwd=REPO,
                env={**os.environ, **env},
            )
            for log in logs
        ]
        questions = [[f"q{who}{n}?" for n in range(3)] for who in range(2)]
        for chat, asked in zip(chats, questions, strict=True):  # both ask before either ends
            assert chat.stdin is not None
            chat.stdin.write("\n".join(asked) + "\n/quit\n")
            chat.stdin.close()
        for chat in chats:
            chat.wait(timeout=120)
        history = run_cli("chat", "--session", "shared", env=env, stdin="/history\n")
    for chat, log in zip(chats, logs, strict=True):
        assert chat.returncode == 0, log.read_text()
    assert history.returncode == 0, history.stderr
    for asked in questions:  # every turn of both processes is in the saved session
        for question in asked:
            assert f"you> {question}" in history.stdout
            assert f"Answer to {question}" in history.stdout


def test_a_damaged_sessions_file_is_one_sentence(isolated_settings: Path) -> None:
    sessions = isolated_settings / "sessions.sqlite"
    sessions.parent.mkdir(parents=True, exist_ok=True)
    sessions.write_bytes(b"this was never a database " * 100)
    with ScriptedOpenAIServer(["never used"]) as server:
        done = run_cli("chat", "--session", "s1", env=openai_env(server), stdin="hi\n")
    assert done.returncode == 1 and "Traceback" not in done.stderr
    message = " ".join(done.stderr.split())
    assert f"the sessions file {sessions} cannot be read (file is not a database)" in message
    assert f"mv {sessions} {sessions}.broken" in message
    assert sessions.read_bytes().startswith(b"this was never")  # left as it was


def test_ctrl_c_stops_a_waiting_request_at_once() -> None:
    with ScriptedOpenAIServer([ScriptedReply(hang=True)] * 3) as server:
        command = [
            sys.executable,
            "-m",
            "surgagent",
            "ask",
            "examples/sample_case/sample_lapchole.mp4",
        ]
        waiting = subprocess.Popen(
            [*command, "Q?"],
            cwd=REPO,
            env={**os.environ, **openai_env(server)},
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        deadline = time.monotonic() + 60
        while not server.requests and time.monotonic() < deadline:
            time.sleep(0.1)  # until the planner's request is in flight (and hanging)
        assert server.requests, "the planner was never asked"
        time.sleep(0.5)
        sent = time.monotonic()
        waiting.send_signal(signal.SIGINT)
        out, err = waiting.communicate(timeout=30)
    assert waiting.returncode == 130 and time.monotonic() - sent < 5
    assert err.strip() == "interrupted" and "Traceback" not in out + err
