"""The web case-review app: a video with its phase ribbon and instrument timeline, and a chat.

Built with Gradio on the agent's public API. Sessions are the agent's SQLite sessions, so a
reload or a restart finds a conversation again (the page keeps ``?session=<id>`` in its URL).
Tools that are not configured are shown as unavailable; a model endpoint that is down shows a
banner and the page keeps working.

Everything a visitor makes belongs to them (`surgagent.ui.auth`): the server picks each
session's id, binds it to its owner and refuses, with a log line, any session or upload that
is not the visitor's. Sessions of ``surgagent chat`` are never offered on the web.

    server = ReviewServer(get_settings())
    thread_id = server.new_session("local")
    result = next(stream_answer(server, "When is the clipper first seen?", key, thread_id, "local"))
"""

from __future__ import annotations

import contextlib
import html
import logging
import os
import secrets
import shutil
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

from surgagent.tools.answers import split_thinking
from surgagent.tools.base import format_time
from surgagent.tools.results import DetectionsResult, FramesResult, ToolOutput, read_result
from surgagent.ui import views
from surgagent.ui.auth import Access
from surgagent.ui.store import SessionIndex, UploadIndex, store_upload

if TYPE_CHECKING:
    from surgagent.agent.api import AnswerResult, SurgicalAgent
    from surgagent.agent.settings import Settings
    from surgagent.tools.cache import Case

__all__ = ["NotYours", "ReviewServer", "answer_with_warnings", "key_frames", "stream_answer"]

logger = logging.getLogger(__name__)


class NotYours(LookupError):
    """A session or case the visitor may not open; the message does not say whether it exists."""


class ReviewServer:
    """State shared by every browser tab: settings, engines, the agent, sessions, uploads.

    Args:
        settings: Resolved settings (data dir, models, tools).
        max_upload_mb: Largest video accepted.
        access: How visitors log in (default: no login, one local user).
    """

    def __init__(
        self, settings: Settings, *, max_upload_mb: float = 4096, access: Access | None = None
    ) -> None:
        from surgagent.agent.api import load_engines
        from surgagent.tools.cache import CaseCache

        self.settings = settings
        self.max_upload_mb = max_upload_mb
        self.access = access or Access()
        self.cache = CaseCache(settings.cache_dir)
        self.sessions = SessionIndex(settings.data_dir / "ui" / "sessions.json")
        self.uploads = settings.data_dir / "uploads"
        self.upload_owners = UploadIndex(settings.data_dir / "ui" / "uploads.json")
        self.engines = load_engines(settings)
        self._agent: SurgicalAgent | None = None
        self._lock = threading.Lock()
        self._fresh: dict[str, str] = {}  # sessions made but not asked in yet: id -> owner

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

    def open(self, key: str, owner: str) -> Case:
        """Open an uploaded case by its key (`case_key`), if ``owner`` uploaded it.

        Raises:
            NotYours: If it is not an upload of ``owner`` on this server.
            CaseError: If it cannot be read.
        """
        from surgagent.tools.video.engine import open_case

        uploads = self.uploads.resolve()
        target = (uploads / key).resolve()
        allowed = target.is_relative_to(uploads) and target.is_file()
        if not allowed or self.case_key(target) not in self.upload_owners.keys(owner):
            logger.warning("review app: %r asked for case %r, not theirs; refused", owner, key)
            raise NotYours(f"you have no uploaded case {Path(key).name!r} on this server")
        return open_case(target, self.cache)

    def case_key(self, path: str | Path) -> str:
        """How the page names an uploaded video: its place in the uploads, no server path."""
        return Path(path).resolve().relative_to(self.uploads.resolve()).as_posix()

    def upload(self, temporary: str | Path, owner: str) -> str:
        """Check and keep a video ``owner`` uploaded; returns its key.

        Raises:
            UploadError: For a wrong type, size or an empty file.
            CaseError: For a file that does not decode as a video.
        """
        from surgagent.tools.errors import CaseError
        from surgagent.tools.video.engine import open_case

        try:
            stored = store_upload(Path(temporary), self.uploads, max_mb=self.max_upload_mb)
        finally:
            _discard_gradio_copy(Path(temporary))
        try:
            open_case(stored, self.cache)  # decodes it now: a corrupt file is refused at once
        except CaseError as error:
            shutil.rmtree(stored.parent, ignore_errors=True)
            # The message names the file as the visitor knows it, not where the server kept it.
            raise CaseError(str(error).replace(str(stored), stored.name)) from error
        key = self.case_key(stored)
        self.upload_owners.add(key, owner)
        return key

    def known_cases(self, owner: str) -> list[tuple[str, str]]:
        """(label, key) of the cases ``owner`` uploaded; keys are relative, never server paths."""
        return sorted((Path(key).name, key) for key in self.upload_owners.keys(owner))

    def media(self, case: Case) -> str:
        """The case's video as a file Gradio may hand to the browser.

        Gradio serves what handlers return from its own temporary folder; the uploads folder
        itself is never served. A hard link there (a copy across file systems) costs nothing.
        """
        folder = Path(os.environ.get("GRADIO_TEMP_DIR") or self.settings.data_dir / "ui" / "tmp")
        target = folder / "cases" / self.case_key(case.source)
        if not target.exists():
            target.parent.mkdir(parents=True, exist_ok=True)
            try:
                os.link(case.source, target)
            except OSError:
                shutil.copyfile(case.source, target)
        return str(target)

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

    def new_session(self, owner: str) -> str:
        """A fresh session of ``owner``: a random id made here, never taken from a visitor."""
        thread_id = "web-" + secrets.token_urlsafe(12)
        with self._lock:
            self._fresh[thread_id] = owner
        return thread_id

    def check_session(self, thread_id: str, owner: str) -> str | None:
        """The key of the session's case (None while nothing was asked), if ``owner``'s.

        Raises:
            NotYours: For a session of someone else, of ``surgagent chat``, or unknown.
        """
        record = self.sessions.get(thread_id)
        if record is not None and record.owner == owner:
            return self.case_key(record.case)
        with self._lock:
            if record is None and self._fresh.get(thread_id) == owner:
                return None
        logger.warning("review app: %r asked for session %r, not theirs; refused", owner, thread_id)
        raise NotYours(f"you have no session {thread_id[:24]!r} on this server")

    def session_choices(self, case_id: str, owner: str) -> list[tuple[str, str]]:
        """(label, thread id) of ``owner``'s sessions of a case, newest first."""
        return [
            (f"{r.updated[:16].replace('T', ' ')} - {r.title}", r.thread_id)
            for r in self.sessions.for_case(case_id, owner)
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
        result = agent.last_result(thread_id)
        if result is not None and history and history[-1]["role"] == "assistant":
            history[-1]["content"] = answer_with_warnings(result.answer, result)
        return history, result

    # -- the page ------------------------------------------------------------------------------

    def launch_options(self) -> dict[str, Any]:
        """Keyword arguments of ``Blocks.launch`` this app needs."""
        # Gradio serves files under allowed paths to any visitor: none. What the page shows
        # (videos, key frames) Gradio copies into its own temporary folder (see `media`).
        options: dict[str, Any] = {
            "head": views.SEEK_SCRIPT,
            "css": views.STYLE,
            "allowed_paths": [],
            "max_file_size": f"{self.max_upload_mb:g}mb",
            "ssr_mode": False,
            "show_error": False,
            "footer_links": [],
        }
        if self.access.users is not None:
            options["auth"] = self.access.check
            options["auth_message"] = "Log in with your SurgAgent review name and password."
        elif self.access.token is not None:
            options["auth"] = self.access.check
            options["auth_message"] = "Log in with any name and the server's token as password."
        return options


def answer_with_warnings(text: str, result: AnswerResult | None) -> str:
    """The answer for the chat, with its grounding warnings (if any) under it."""
    shown = views.answer_markdown(text)
    if result is None or not result.warnings:
        return shown
    notes = "\n\n".join(f"> **Unsupported:** {html.escape(w)}" for w in result.warnings)
    return f"{shown}\n\n{notes}"


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
    # Callers have checked that the session is the visitor's (`ReviewServer.check_session`).
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


def stream_answer(
    server: ReviewServer, question: str, key: str, thread_id: str, owner: str
) -> Iterator[tuple[str, AnswerResult | None, str | None]]:
    """Run one question of ``owner`` about an uploaded case (by key) in their session.

    Yields:
        (answer text so far, final result or None, error or None).
    """
    try:
        known = server.check_session(thread_id, owner)
        if known is not None and known != key:
            raise NotYours("this session is about another case; start a new one")
        case = server.open(key, owner)
    except NotYours as error:
        yield "", None, str(error)
        return
    agent, problem = server.agent()
    if agent is None:
        yield "", None, problem
        return
    from surgagent.tools.errors import SurgAgentError

    text = ""
    try:
        for event in agent.stream(question, case=case, thread_id=thread_id):
            if event.kind == "token":
                text += event.text
                yield text, None, None
            elif event.kind == "tool_call":
                yield text or f"_calling {event.tool}..._", None, None
            elif event.kind == "answer" and event.result is not None:
                server.sessions.record(
                    thread_id, owner=owner, case=case.source, case_id=case.id, title=question
                )
                problem = event.result.answer if event.result.status == "error" else None
                yield event.result.answer, event.result, problem
    except SurgAgentError as error:
        yield text, None, str(error)
