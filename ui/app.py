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
from typing import TYPE_CHECKING, Any, Literal

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
    from surgagent.tools.library.types import CohortTable

__all__ = [
    "LIBRARY_KEY",
    "NotYours",
    "ReviewServer",
    "answer_with_warnings",
    "key_frames",
    "stream_answer",
]

logger = logging.getLogger(__name__)

LIBRARY_KEY = "library:"  # page keys of library cases: "library:<case id>" (uploads: a path)
CohortMeasure = Literal[
    "phase duration", "phase start", "instrument time in view", "instrument first use"
]
ReportForm = Literal["html", "pdf", "md"]


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
        self,
        settings: Settings,
        *,
        max_upload_mb: float = 4096,
        access: Access | None = None,
        library: bool | None = None,
    ) -> None:
        from surgagent.agent.api import load_engines
        from surgagent.tools.cache import CaseCache

        self.settings = settings
        self.max_upload_mb = max_upload_mb
        self.access = access or Access()
        # The case library names cases by server paths and holds every indexed case: without
        # a login only this machine's user sees the page, with one it is shared on request.
        self.library_shared = (not self.access.enabled) if library is None else library
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
        """Open a case by its key: an upload of ``owner`` (`case_key`), or a library case.

        Raises:
            NotYours: If it is not an upload of ``owner`` on this server, nor a case of a
                library this server shares.
            CaseError: If it cannot be read.
        """
        from surgagent.tools.video.engine import open_case

        if key.startswith(LIBRARY_KEY):
            return open_case(self._library_path(key.removeprefix(LIBRARY_KEY), owner), self.cache)
        uploads = self.uploads.resolve()
        target = (uploads / key).resolve()
        allowed = target.is_relative_to(uploads) and target.is_file()
        if not allowed or self.case_key(target) not in self.upload_owners.keys(owner):
            logger.warning("review app: %r asked for case %r, not theirs; refused", owner, key)
            raise NotYours(f"you have no uploaded case {Path(key).name!r} on this server")
        return open_case(target, self.cache)

    def _library_path(self, case_id: str, owner: str) -> Path:
        """Where the library keeps case ``case_id``, if this server shares the library."""
        record = None
        if self.library_shared and self.settings.library_db.is_file():
            from surgagent.library.errors import LibraryError
            from surgagent.library.store import LibraryStore

            with contextlib.suppress(LibraryError):
                record = LibraryStore(self.settings.library_db).find(case_id)
        if record is None or record.id != case_id:
            logger.warning("review app: %r asked for library case %r; refused", owner, case_id)
            raise NotYours(f"this server shares no library case {case_id[:40]!r}")
        return record.path

    def library_ids(self) -> list[str]:
        """The ids of the library's indexed cases (none when the library is not shared)."""
        if not self.library_shared or not self.settings.library_db.is_file():
            return []
        from surgagent.library.store import LibraryStore

        return [record.id for record in LibraryStore(self.settings.library_db).cases("indexed")]

    def cohort(self, measure: CohortMeasure) -> CohortTable:
        """A cohort view measure over the library, per phase or instrument it knows.

        Raises:
            NotYours: If this server does not share its library.
        """
        from surgagent.tools.library.engine import CohortLibrary
        from surgagent.tools.library.types import CohortQuery

        if not self.library_ids():
            raise NotYours("this server shares no case library")
        tool_measure, group = {
            "phase duration": ("phase_duration", "phase"),
            "phase start": ("phase_start", "phase"),
            "instrument time in view": ("instrument_total_time", "instrument"),
            "instrument first use": ("instrument_first_use", "instrument"),
        }[measure]
        query = CohortQuery.model_validate({"measure": tool_measure, "group_by": group})
        return CohortLibrary(self.settings.library_db).query(query)

    def ask_library(self, question: str, owner: str) -> AnswerResult:
        """Answer ``question`` across the shared library, in a fresh session of ``owner``.

        Raises:
            NotYours: If this server does not share its library.
            SurgAgentError: If the planner is not available or the run fails to start.
        """
        from surgagent.tools.errors import BackendError

        if not self.library_ids():
            raise NotYours("this server shares no case library")
        agent, problem = self.agent()
        if agent is None:
            raise BackendError(problem or "the planner is not available", retryable=False)
        return agent.invoke(question, library=True, thread_id=self.new_session(owner))

    def report(self, key: str, thread_id: str | None, owner: str, form: ReportForm) -> Path:
        """A downloadable report of the case ``key`` (with the session, if it is about it).

        The report names the case as the page does, never by its server path; its timestamps
        link to the video's file name, so they work beside a copy of the video.

        Raises:
            NotYours: If the case or session is not the visitor's.
            SurgAgentError: If the case cannot be read or the agent is not available.
        """
        from surgagent.reports import build_report, markdown_assets, render_html, render_markdown
        from surgagent.tools.errors import BackendError

        case = self.open(key, owner)
        session = None
        if thread_id is not None and self.check_session(thread_id, owner) == key:
            session = thread_id
        agent, problem = self.agent()
        if agent is None:
            raise BackendError(problem or "the planner is not available", retryable=False)
        name = Path(key.removeprefix(LIBRARY_KEY)).name
        link = case.source.name if case.kind == "video" else None
        made = build_report(agent, case, thread_id=session, video_url=link)
        made.case.source = name
        folder = self._scratch() / "reports" / secrets.token_hex(8)
        folder.mkdir(parents=True)
        stem = f"{case.id}-report"
        if form == "pdf":
            from surgagent.reports import render_pdf

            target = folder / f"{stem}.pdf"
            target.write_bytes(render_pdf(made))
        elif form == "html":
            target = folder / f"{stem}.html"
            target.write_text(render_html(made), encoding="utf-8")
        else:
            import zipfile

            target = folder / f"{stem}.zip"
            with zipfile.ZipFile(target, "w", zipfile.ZIP_DEFLATED) as archive:
                archive.writestr(f"{stem}.md", render_markdown(made, assets=f"{stem}_files"))
                for file, data in markdown_assets(made).items():
                    archive.writestr(f"{stem}_files/{file}", data)
        return target

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

    def known_cases(self, owner: str, opened: str | None = None) -> list[tuple[str, str]]:
        """(label, key) of the cases ``owner`` uploaded, and the library case ``opened``.

        Keys are relative or library ids, never server paths.
        """
        known = sorted((Path(key).name, key) for key in self.upload_owners.keys(owner))
        if opened is not None and opened.startswith(LIBRARY_KEY):
            known.append((f"{opened.removeprefix(LIBRARY_KEY)} (library)", opened))
        return known

    def _scratch(self) -> Path:
        """Gradio's temporary folder, the only one whose files it hands to the browser."""
        return Path(os.environ.get("GRADIO_TEMP_DIR") or self.settings.data_dir / "ui" / "tmp")

    def media(self, case: Case, key: str) -> str | None:
        """The case's video as a file Gradio may hand to the browser (None for frame folders).

        Gradio serves what handlers return from its own temporary folder; the uploads folder
        and the library's folders are never served. A hard link there (a copy across file
        systems) costs nothing.
        """
        if case.kind != "video":
            return None
        target = self._scratch() / "cases" / key  # an upload's key ends in its file name
        if key.startswith(LIBRARY_KEY):
            library_id = key.removeprefix(LIBRARY_KEY)
            target = self._scratch() / "cases" / "library" / library_id / case.source.name
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
            return record.key or self.case_key(record.case)
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
                    thread_id,
                    owner=owner,
                    case=case.source,
                    case_id=case.id,
                    key=key,
                    title=question,
                )
                problem = event.result.answer if event.result.status == "error" else None
                yield event.result.answer, event.result, problem
    except SurgAgentError as error:
        yield text, None, str(error)
