"""The web case-review app: a video with its phase ribbon and instrument timeline, and a chat.

Built with Gradio on the agent's public API. Sessions are the agent's SQLite sessions, so a
reload or a restart finds a conversation again (the page keeps ``?session=<id>`` in its URL).
Tools that are not configured are shown as unavailable; a model endpoint that is down shows a
banner and the page keeps working.

    server = ReviewServer(get_settings())
    result = next(stream_answer(server, "When is the clipper first seen?", "case.mp4", "s1"))
"""

from __future__ import annotations

import contextlib
import logging
import os
import shutil
import threading
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

from surgagent.tools.answers import split_thinking
from surgagent.tools.base import format_time
from surgagent.tools.results import DetectionsResult, FramesResult, ToolOutput, read_result
from surgagent.ui import views
from surgagent.ui.store import VIDEO_SUFFIXES, SessionIndex, store_upload

if TYPE_CHECKING:
    from surgagent.agent.api import AnswerResult, SurgicalAgent
    from surgagent.agent.settings import Settings
    from surgagent.tools.cache import Case

__all__ = ["ReviewServer", "key_frames", "new_session_id", "stream_answer"]

logger = logging.getLogger(__name__)


class ReviewServer:
    """State shared by every browser tab: settings, engines, the agent, sessions, uploads.

    Args:
        settings: Resolved settings (data dir, models, tools).
        max_upload_mb: Largest video accepted.
    """

    def __init__(self, settings: Settings, *, max_upload_mb: float = 4096) -> None:
        from surgagent.agent.api import load_engines
        from surgagent.tools.cache import CaseCache

        self.settings = settings
        self.max_upload_mb = max_upload_mb
        self.cache = CaseCache(settings.cache_dir)
        self.sessions = SessionIndex(settings.data_dir / "ui" / "sessions.json")
        self.uploads = settings.data_dir / "uploads"
        self.engines = load_engines(settings)
        self._agent: SurgicalAgent | None = None
        self._lock = threading.Lock()

    # -- the agent, built when its model answers ---------------------------------------------

    def agent(self) -> tuple[SurgicalAgent | None, str | None]:
        """The agent, or None and a sentence saying why (e.g. the model endpoint is down)."""
        from surgagent.agent.api import SurgicalAgent
        from surgagent.tools.errors import SurgAgentError

        with self._lock:
            if self._agent is None:
                try:
                    self._agent = SurgicalAgent.from_settings(
                        self.settings, sessions="sqlite", engines=self.engines
                    )
                except SurgAgentError as error:
                    return None, f"The planner model is not available: {error}"
            return self._agent, None

    def tools(self) -> dict[str, bool]:
        """Which tools this server can offer."""
        options = self.settings
        return {
            "frames": True,
            "perception": options.perception.enabled,
            "instrument detector": "detector" in self.engines,
            "phase segmenter": "segmenter" in self.engines,
            "guidelines": "knowledge" in self.engines,
        }

    # -- cases ---------------------------------------------------------------------------------

    def open(self, path: str | Path) -> Case:
        """Open a case: an uploaded video, by its path or by its key (`case_key`).

        Raises:
            CaseError: If it is not an upload of this server, or cannot be read.
        """
        from surgagent.tools.errors import CaseError
        from surgagent.tools.video.engine import open_case

        uploads = self.uploads.resolve()
        target = (uploads / path).resolve()  # an absolute path stays itself
        if not target.is_relative_to(uploads) or not target.is_file():
            raise CaseError(f"no uploaded case {Path(path).name!r} on this server")
        return open_case(target, self.cache)

    def case_key(self, path: str | Path) -> str:
        """How the page names an uploaded video: its place in the uploads, no server path."""
        return Path(path).resolve().relative_to(self.uploads.resolve()).as_posix()

    def upload(self, temporary: str | Path) -> Path:
        """Check and keep an uploaded video; returns its path in the data dir.

        Raises:
            UploadError: For a wrong type, size or an empty file.
            CaseError: For a file that does not decode as a video.
        """
        from surgagent.tools.errors import CaseError

        try:
            stored = store_upload(Path(temporary), self.uploads, max_mb=self.max_upload_mb)
        finally:
            _discard_gradio_copy(Path(temporary))
        try:
            self.open(stored)  # decodes it now: a corrupt file is refused at once
        except CaseError as error:
            shutil.rmtree(stored.parent, ignore_errors=True)
            # The message names the file as the visitor knows it, not where the server kept it.
            raise CaseError(str(error).replace(str(stored), stored.name)) from error
        return stored

    def known_cases(self) -> list[tuple[str, str]]:
        """(label, key) of every uploaded case; keys are relative, never server paths."""
        videos = [
            p
            for p in self.uploads.glob("*/*")
            if p.suffix.lower() in VIDEO_SUFFIXES and not p.name.endswith(".part")
        ]
        return sorted((p.name, self.case_key(p)) for p in videos)

    def timelines(self, case: Case) -> tuple[str, str]:
        """The phase ribbon and instrument timeline of a case (cached by the engines)."""
        from surgagent.tools.errors import SurgAgentError

        segmenter, detector = self.engines.get("segmenter"), self.engines.get("detector")
        ribbon = '<div class="unavailable">Phase segmenter unavailable (not configured).</div>'
        timeline = (
            '<div class="unavailable">Instrument detector unavailable (not configured).</div>'
        )
        try:
            if segmenter is not None:
                prediction = segmenter.predict(case, self.cache)
                ribbon = views.phase_ribbon(
                    prediction.segments,
                    duration=case.duration,
                    vocabulary=prediction.vocabulary,
                )
            if detector is not None:
                timeline = views.instrument_timeline(
                    detector.track(case, self.cache), duration=case.duration
                )
        except SurgAgentError as error:
            return views.banner(f"Could not analyse the case: {error}"), timeline
        return ribbon, timeline

    # -- sessions ------------------------------------------------------------------------------

    def session_choices(self, case_id: str) -> list[tuple[str, str]]:
        """(label, thread id) of a case's sessions, newest first."""
        return [
            (f"{r.updated[:16].replace('T', ' ')} - {r.title}", r.thread_id)
            for r in self.sessions.for_case(case_id)
        ]

    def chat_history(self, thread_id: str) -> tuple[list[dict[str, str]], AnswerResult | None]:
        """A session's questions and answers for the chat view, and its last result."""
        from langchain_core.messages import AIMessage, HumanMessage

        agent, _ = self.agent()
        if agent is None:
            return [], None
        history: list[dict[str, str]] = []
        for message in agent.history(thread_id):
            if isinstance(message, HumanMessage):
                history.append({"role": "user", "content": message.text})
            elif isinstance(message, AIMessage) and not message.tool_calls and message.text:
                _, answer = split_thinking(message.text)  # as the live answer was split
                history.append({"role": "assistant", "content": views.answer_markdown(answer)})
        return history, agent.last_result(thread_id)

    # -- the page ------------------------------------------------------------------------------

    def launch_options(self, token: str | None = None) -> dict[str, Any]:
        """Keyword arguments of ``Blocks.launch`` this app needs."""
        # Gradio serves files under allowed paths to any visitor: only the uploaded videos,
        # never the rest of the data dir (sessions, knowledge store, cache, settings).
        self.uploads.mkdir(parents=True, exist_ok=True)
        options: dict[str, Any] = {
            "head": views.SEEK_SCRIPT,
            "css": views.STYLE,
            "allowed_paths": [str(self.uploads.resolve())],
            "max_file_size": f"{self.max_upload_mb:g}mb",
            "ssr_mode": False,
            "show_error": False,
            "footer_links": [],
        }
        if token:
            options["auth"] = lambda _user, password: password == token
            options["auth_message"] = "Log in with any name and the server's token as password."
        return options


def _discard_gradio_copy(temporary: Path) -> None:
    """Remove Gradio's temporary copy of an upload (only a file inside its temp dir)."""
    temp_root = os.environ.get("GRADIO_TEMP_DIR")
    if not temp_root:
        return
    root, file = Path(temp_root).resolve(), temporary.resolve()
    if file == root or not file.is_relative_to(root):
        return
    file.unlink(missing_ok=True)
    if file.parent != root:
        with contextlib.suppress(OSError):  # Gradio's folder for this upload, when now empty
            file.parent.rmdir()


def key_frames(server: ReviewServer, thread_id: str) -> list[tuple[Any, str]]:
    """Frames the last answer's tools looked at, with any detection boxes drawn."""
    from langchain_core.messages import HumanMessage

    agent, _ = server.agent()
    if agent is None:
        return []
    turn: list[Any] = []
    for message in reversed(agent.history(thread_id)):
        if isinstance(message, HumanMessage):
            break
        turn.append(message)
    frames: list[tuple[Any, str]] = []
    for message in reversed(turn):
        for path, time, boxes in _shown_frames(read_result(message)):
            if path is None or not path.exists():
                continue
            caption = f"[{format_time(time)}] " + ", ".join(name for name, _ in boxes)
            frames.append((views.draw_boxes(path, boxes), caption.strip()))
    return frames[:12]


Shown = tuple[Path | None, float, list[tuple[str, tuple[float, float, float, float]]]]


def _shown_frames(result: ToolOutput | None) -> list[Shown]:
    """The frames a tool result looked at: (image file, time, detection boxes by name)."""
    if isinstance(result, FramesResult):
        return [(frame.path, frame.time, []) for frame in result.frames]
    if isinstance(result, DetectionsResult):
        return [
            (frame.frame, frame.time, [(d.name, d.box_norm) for d in frame.detections])
            for frame in result.frames
        ]
    return []


def new_session_id() -> str:
    """A fresh session id (short, URL-safe)."""
    return uuid.uuid4().hex[:12]


def stream_answer(
    server: ReviewServer, question: str, case_path: str, thread_id: str
) -> Iterator[tuple[str, AnswerResult | None, str | None]]:
    """Run one question about an uploaded case (path or key).

    Yields:
        (answer text so far, final result or None, error or None).
    """
    agent, problem = server.agent()
    if agent is None:
        yield "", None, problem
        return
    from surgagent.tools.errors import SurgAgentError

    text = ""
    try:
        case = server.open(case_path)
        for event in agent.stream(question, case=case, thread_id=thread_id):
            if event.kind == "token":
                text += event.text
                yield text, None, None
            elif event.kind == "tool_call":
                yield text or f"_calling {event.tool}..._", None, None
            elif event.kind == "answer" and event.result is not None:
                problem = event.result.answer if event.result.status == "error" else None
                yield event.result.answer, event.result, problem
    except SurgAgentError as error:
        yield text, None, str(error)
