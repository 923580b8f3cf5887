"""The public Python API: `SurgicalAgent` answers questions about surgical cases.

agent = SurgicalAgent.from_settings()
result = agent.invoke("When is the clipper first used?", case="video.mp4")
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import sqlite3
import threading
import uuid
import weakref
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from langchain_core.messages import (
    AIMessage,
    AIMessageChunk,
    BaseMessage,
    HumanMessage,
    ToolMessage,
)
from langchain_core.runnables import RunnableConfig
from langgraph.checkpoint.base import BaseCheckpointSaver
from pydantic import BaseModel, Field

from surgagent.agent.errors import UserError
from surgagent.agent.prompts import load_prompt
from surgagent.agent.settings import Settings, get_settings
from surgagent.graphs.case_review import build_case_review_graph, recursion_limit
from surgagent.graphs.context import RunContext
from surgagent.graphs.nodes import Prompts
from surgagent.graphs.result import AnswerResult, ModelUse
from surgagent.graphs.turn import close_dangling_calls
from surgagent.tools.answers import split_thinking
from surgagent.tools.cache import Case, CaseCache
from surgagent.tools.video.engine import open_case
from surgagent.tools.video.tools import make_video_tools

if TYPE_CHECKING:
    from langchain_core.tools import BaseTool
    from langgraph.graph.state import CompiledStateGraph

    from surgagent.graphs.protocols import PlannerModel
    from surgagent.knowledge.store import KnowledgeStore
    from surgagent.tools.detector.engine import InstrumentDetector
    from surgagent.tools.phase.engine import PhaseSegmenter
    from surgagent.tools.vision import VisionBackend

__all__ = ["LIBRARY", "AgentEvent", "AnswerResult", "SessionInfo", "SessionTurn", "SurgicalAgent"]

logger = logging.getLogger(__name__)


LIBRARY = "library"  # the case id of sessions that ask across the case library
_SESSION_SCAN = 500  # newest checkpoints read to find the recent sessions
_SQLITE_BUSY_S = 30.0  # how long a sessions-file statement waits for another process's write
_SESSION_WAIT_S = 300.0  # how long a turn waits for another process's turn on its session


class SessionTurn(BaseModel):
    """One question of a session and the answer it got (empty while unanswered)."""

    question: str
    answer: str = ""


class SessionInfo(BaseModel):
    """A saved session, as listed to pick one to resume."""

    thread_id: str
    case_id: str | None
    updated: str = Field(description="ISO time of the session's last checkpoint")
    turns: int
    last_question: str


class AgentEvent(BaseModel):
    """One event of a streamed run.

    Attributes:
        kind: ``token`` (answer text), ``reasoning`` (thinking text), ``tool_call``,
            ``tool_result`` or ``answer`` (the last event, carrying ``result``).
        text: The text of a token, reasoning piece or tool result.
        tool: The tool of a tool call or result.
        args: The arguments of a tool call.
        error: Whether a tool result is an error.
        result: The final `AnswerResult` (``answer`` events only).
    """

    kind: Literal["token", "reasoning", "tool_call", "tool_result", "answer"]
    text: str = ""
    tool: str | None = None
    args: dict[str, Any] | None = None
    error: bool = False
    result: AnswerResult | None = None


def offered_tools(
    *, vision: bool, detector: bool = False, segmenter: bool = False, knowledge: bool = False
) -> list[BaseTool]:
    """The planner's tools: frames always, each model-backed tool only where it is configured.

    Args:
        vision: Whether a perception model is available.
        detector: Whether an instrument detector is loaded.
        segmenter: Whether a phase segmenter is loaded.
        knowledge: Whether a knowledge store is configured.
    """
    tools = make_video_tools()
    if vision:
        from surgagent.tools.perception.tools import make_perception_tools

        tools += make_perception_tools()
    if detector:
        from surgagent.tools.detector.tools import make_detector_tools

        tools += make_detector_tools()
    if segmenter:
        from surgagent.tools.phase.tools import make_phase_tools

        tools += make_phase_tools()
    if knowledge:
        from surgagent.tools.retrieval.tools import make_retrieval_tools

        tools += make_retrieval_tools()
    return tools


def settings_tools(settings: Settings) -> list[BaseTool]:
    """The tools `SurgicalAgent.from_settings(settings)` offers, found without loading a model."""
    return offered_tools(
        vision=settings.perception.enabled,
        detector=settings.detector.weights is not None,
        segmenter=settings.phase.weights is not None,
        knowledge=settings.knowledge.enabled,
    )


def load_engines(settings: Settings) -> dict[str, Any]:
    """Load the configured engines: detector, phase segmenter and knowledge store.

    The detector and segmenter load where the settings name weights; the knowledge store is
    opened, and built on its first search (or ahead with ``surgagent knowledge rebuild``).

    Raises:
        ConfigError: If configured weights are missing, corrupt or of the wrong kind.
    """
    engines: dict[str, Any] = {}
    options = settings.detector
    if options.weights:
        from surgagent.tools.detector.engine import InstrumentDetector

        engines["detector"] = InstrumentDetector.from_weights(
            options.weights,
            imgsz=options.imgsz,
            conf=options.conf,
            iou=options.iou,
            device=options.device,
            track_fps=options.fps,
        )
    checkpoint = settings.phase.weights
    if checkpoint:
        from surgagent.tools.phase.engine import PhaseSegmenter

        engines["segmenter"] = PhaseSegmenter.from_checkpoint(
            Path(checkpoint).expanduser(), device=settings.phase.device
        )
    if settings.knowledge.enabled:
        engines["knowledge"] = open_knowledge_store(settings)
    return engines


def open_knowledge_store(settings: Settings) -> KnowledgeStore:
    """The knowledge store the settings describe (nothing is loaded or built yet)."""
    from surgagent.knowledge.embeddings import Embedder
    from surgagent.knowledge.store import KnowledgeStore

    options = settings.knowledge
    embedder = Embedder(options.embedding_model, device=options.device)
    return KnowledgeStore(
        settings.knowledge_dir, embedder, max_document_mb=settings.knowledge.max_document_mb
    )


class SurgicalAgent:
    """Answers questions about a surgical case with a planner model and tools.

    Build it with `from_settings`. Sessions are LangGraph threads: pass the same
    ``thread_id`` to continue a conversation; a thread stays with its first case.

    Attributes:
        settings: The resolved settings.
        graph: The compiled LangGraph graph (``invoke``/``stream``/``astream_events`` work).
        cache: The case cache.
    """

    def __init__(
        self,
        settings: Settings,
        planner: PlannerModel,
        *,
        vision: VisionBackend | None = None,
        detector: InstrumentDetector | None = None,
        segmenter: PhaseSegmenter | None = None,
        knowledge: KnowledgeStore | None = None,
        tools: list[BaseTool] | None = None,
        checkpointer: BaseCheckpointSaver[Any] | None = None,
    ) -> None:
        from langgraph.checkpoint.memory import InMemorySaver

        self.settings = settings
        self.planner = planner
        self.vision = vision
        self.detector = detector
        self.segmenter = segmenter
        self.knowledge = knowledge
        if tools is None:
            tools = offered_tools(
                vision=vision is not None,
                detector=detector is not None,
                segmenter=segmenter is not None,
                knowledge=knowledge is not None,
            )
        self.tools = tools
        self.cache = CaseCache(settings.cache_dir)
        prompts = Prompts(system=load_prompt("planner_system"), final=load_prompt("final_answer"))
        # Sessions in memory die with the process, so saving a checkpoint after every step
        # buys nothing there: save once per run. A persistent store saves every step, so a
        # crash loses at most the step in flight.
        self._durability: Literal["exit", "async"] = "exit" if checkpointer is None else "async"
        # One turn at a time per session: across processes (a lock file) where sessions
        # outlive the process, across threads where they live in memory.
        self._turn_locks: Path | None = None
        if checkpointer is not None:
            self._turn_locks = settings.sessions_db.with_name("sessions.locks")
        self._thread_locks: weakref.WeakValueDictionary[str, threading.Lock] = (
            weakref.WeakValueDictionary()
        )
        self._thread_locks_guard = threading.Lock()
        self._checkpointer = checkpointer or InMemorySaver()
        self.graph: CompiledStateGraph[Any, RunContext, Any, Any] = build_case_review_graph(
            self.tools, prompts, checkpointer=self._checkpointer
        )
        self._library_graph: CompiledStateGraph[Any, RunContext, Any, Any] | None = None

    @property
    def library_graph(self) -> CompiledStateGraph[Any, RunContext, Any, Any]:
        """The graph that answers across the case library (cohort tool, guidelines).

        It shares the case graph's sessions: a session is about one case or the library.
        """
        if self._library_graph is None:
            from surgagent.tools.library.tools import make_library_tools

            tools = make_library_tools()
            if self.knowledge is not None:
                from surgagent.tools.retrieval.tools import make_retrieval_tools

                tools += make_retrieval_tools()
            prompts = Prompts(
                system=load_prompt("planner_library"), final=load_prompt("final_answer")
            )
            self._library_graph = build_case_review_graph(
                tools, prompts, checkpointer=self._checkpointer
            )
        return self._library_graph

    @classmethod
    def from_settings(
        cls,
        settings: Settings | None = None,
        *,
        planner_model: PlannerModel | None = None,
        vision_model: VisionBackend | None = None,
        sessions: Literal["memory", "sqlite"] = "memory",
        checkpointer: BaseCheckpointSaver[Any] | None = None,
        engines: dict[str, Any] | None = None,
        check: bool = True,
        **overrides: Any,
    ) -> SurgicalAgent:
        """Build an agent from settings (`get_settings` plus ``overrides`` by default).

        Args:
            settings: Settings to use instead of the resolved ones.
            planner_model: A ready planner model instead of the configured backend (tests,
                notebooks).
            vision_model: A ready perception backend instead of the configured one. With a
                ready ``planner_model`` and no ``vision_model``, no perception tool is offered.
            sessions: ``memory`` (sessions live as long as the agent) or ``sqlite``
                (kept in ``settings.sessions_db``, surviving restarts).
            checkpointer: Any LangGraph checkpointer; overrides ``sessions``.
            engines: Ready engines (`load_engines` output) instead of loading them again.
            check: Check first that the configured model roles can be reached
                (`surgagent.agent.reach.check_roles`); off when the caller has just done so.
            **overrides: Settings overrides, e.g. ``step_budget=4``.

        Raises:
            ConfigError: If the planner or perception model cannot be reached, or configured
                detector or segmenter weights cannot be loaded; the message says what to do.
        """
        settings = settings or get_settings(**overrides)
        planner, vision = planner_model, vision_model
        if planner is None:
            from surgagent.agent.backends import load_backend
            from surgagent.agent.reach import check_roles

            if check:
                check_roles(settings)
            planner = load_backend(settings.planner, role="planner")
            if vision is None and settings.perception.enabled:
                vision = load_backend(settings.perception, role="perception")
        if checkpointer is None and sessions == "sqlite":
            checkpointer = sqlite_checkpointer(settings.sessions_db)
        if engines is None:
            engines = load_engines(settings)
        return cls(settings, planner, vision=vision, checkpointer=checkpointer, **engines)

    def open_case(self, case: str | Path | Case) -> Case:
        """Open a case by video path, frame folder or indexed case id.

        Raises:
            CaseError: If it is missing, unreadable or unknown.
        """
        return case if isinstance(case, Case) else open_case(case, self.cache)

    def run_context(self, case: Case | None) -> RunContext:
        """The run context for one question about ``case`` (None: across the case library)."""
        library = None
        if case is None:
            from surgagent.tools.library.engine import CohortLibrary

            library = CohortLibrary(self.settings.library_db)
        return RunContext(
            case=case,
            library=library,
            cache=self.cache,
            planner=self.planner,
            vision=self.vision,
            detector=self.detector,
            segmenter=self.segmenter,
            knowledge=self.knowledge,
            step_budget=self.settings.step_budget,
            frame_budget=self.settings.frame_budget,
            tool_retries=self.settings.tool_retries,
            planner_vision=self.settings.planner.vision,
            max_image_side=self.settings.planner.max_image_side,
            settings=self.settings,
            models=self._models_used(perception=case is not None),
        )

    def _models_used(self, *, perception: bool) -> tuple[ModelUse, ...]:
        """The planner's model, and the perception model where the run can ask it.

        Args:
            perception: Whether the run's graph offers the perception tool (a case's does,
                the library's does not).
        """
        used = [_model_use("planner", self.planner)]
        if perception and self.vision is not None:
            used.append(_model_use("perception", self.vision))
        return tuple(used)

    def session_case(
        self, case: str | Path | Case | None, known: str | None, thread_id: str
    ) -> Case:
        """The case a turn of session ``thread_id`` is about.

        Args:
            case: The case asked about, or None to keep the session's.
            known: The id of the case the session is already about, or None for a new one.
            thread_id: The session, named in errors.

        Raises:
            CaseError: If the case cannot be opened.
            UserError: If a new session names no case, or the case is not the session's.
        """
        if known == LIBRARY:
            raise UserError(
                f"session {thread_id!r} asks across the case library, not about one case; "
                "ask it with library=True (surgagent cohort), or start a new session"
            )
        if case is None:
            if known is None:
                raise UserError(f"session {thread_id!r} is new: say which case it is about")
            case = known
        opened = self.open_case(case)
        if known is not None and known != opened.id:
            raise UserError(
                f"session {thread_id!r} is about case {known!r}, not {opened.id!r}; "
                "start a new session for another case"
            )
        return opened

    def _library_session(
        self, case: str | Path | Case | None, known: str | None, context: RunContext
    ) -> None:
        """Check a library question: no case named, a library session, a library to ask.

        The library's overview read here is the one the run's planner is shown.

        Raises:
            UserError: If a case is named, the session is about a case, or the library is empty.
        """
        if case is not None:
            raise UserError("a question across the library names no case; leave the case out")
        if known not in (None, LIBRARY):
            raise UserError(
                f"this session is about case {known!r}; start a new session to ask across "
                "the library"
            )
        from surgagent.tools.errors import ToolInputError

        try:
            overview = context.library_overview
        except ToolInputError as error:
            raise UserError(str(error)) from None
        if overview is None or not overview.cases:
            raise UserError(
                "the case library has no indexed case yet: add cases with "
                "`surgagent library add DIR`"
            )

    def _prepare(
        self, question: str, case: str | Path | Case | None, thread_id: str, library: bool
    ) -> tuple[dict[str, Any], RunnableConfig, RunContext]:
        if not question.strip():
            raise UserError("the question is empty; ask something about the case")
        config: RunnableConfig = {
            "configurable": {"thread_id": thread_id},
            "recursion_limit": recursion_limit(self.settings.step_budget),
        }
        state = self.graph.get_state(config).values
        opened = None if library else self.session_case(case, state.get("case_id"), thread_id)
        context = self.run_context(opened)
        if library:
            self._library_session(case, state.get("case_id"), context)
        repairs = close_dangling_calls(state.get("messages", []))
        if repairs:
            logger.warning("session %s: closed %d interrupted tool calls", thread_id, len(repairs))
        inputs = {
            "messages": [*repairs, HumanMessage(content=question)],
            "case_id": opened.id if opened is not None else LIBRARY,
            "error": None,
            "result": None,
        }
        return inputs, config, context

    @contextlib.contextmanager
    def _turn(self, thread_id: str) -> Iterator[None]:
        """Hold ``thread_id`` for one turn, so two turns never fork its history.

        A second process (or thread) asking in the same session waits for the first turn to
        end, up to `_SESSION_WAIT_S`, then gives up with a sentence.

        Raises:
            UserError: If the session stays busy.
        """
        if self._turn_locks is None:
            with self._thread_locks_guard:
                lock = self._thread_locks.setdefault(thread_id, threading.Lock())
            if not lock.acquire(timeout=_SESSION_WAIT_S):
                raise UserError(f"session {thread_id!r} is busy answering another question")
            try:
                yield
            finally:
                lock.release()
            return
        from filelock import FileLock, Timeout

        self._turn_locks.mkdir(parents=True, exist_ok=True)
        name = hashlib.sha256(thread_id.encode()).hexdigest()[:24]
        file_lock = FileLock(self._turn_locks / f"{name}.lock")
        try:
            file_lock.acquire(timeout=0)
        except Timeout:
            logger.warning(
                "session %s is answering a question in another process; waiting for it",
                thread_id,
            )
            try:
                file_lock.acquire(timeout=_SESSION_WAIT_S)
            except Timeout:
                raise UserError(
                    f"session {thread_id!r} is still busy in another process after "
                    f"{_SESSION_WAIT_S:g} s; ask again when it has answered"
                ) from None
        try:
            yield
        finally:
            file_lock.release()

    def invoke(
        self,
        question: str,
        *,
        case: str | Path | Case | None = None,
        thread_id: str | None = None,
        library: bool = False,
    ) -> AnswerResult:
        """Answer ``question`` about ``case`` (or the session's case) and return the result.

        With ``library=True`` the question is asked across the case library instead (no
        case): the planner queries the indexed cases (`surgagent library add`) and cites
        them as ``[case-id mm:ss]``. One turn runs at a time in a session: another process's
        turn on it is waited for.

        Raises:
            CaseError: If the case cannot be opened.
            UserError: If the session is about another case (or the library), the question is
                empty, or a library question finds no indexed case.
        """
        thread_id = thread_id or uuid.uuid4().hex
        graph = self.library_graph if library else self.graph
        with self._turn(thread_id):
            inputs, config, context = self._prepare(question, case, thread_id, library)
            state = graph.invoke(inputs, config, context=context, durability=self._durability)
            self._note_turn(thread_id, state)
            return self._result(state, config)

    def stream(
        self,
        question: str,
        *,
        case: str | Path | Case | None = None,
        thread_id: str | None = None,
        library: bool = False,
    ) -> Iterator[AgentEvent]:
        """Like `invoke`, but yield tokens, thinking and tool steps as they happen.

        The last event has ``kind="answer"`` and carries the `AnswerResult`.
        """
        thread_id = thread_id or uuid.uuid4().hex
        graph = self.library_graph if library else self.graph
        with self._turn(thread_id):
            inputs, config, context = self._prepare(question, case, thread_id, library)
            for mode, payload in graph.stream(
                inputs,
                config,
                context=context,
                stream_mode=["messages", "updates"],
                durability=self._durability,
            ):
                if mode == "messages":
                    yield from _token_events(*payload)
                elif mode == "updates" and isinstance(payload, dict):
                    for node, update in payload.items():
                        if update:
                            yield from _step_events(node, update)
            final = self.graph.get_state(config).values
            self._note_turn(thread_id, final)
            yield AgentEvent(kind="answer", result=self._result(final, config))

    def _note_turn(self, thread_id: str, state: dict[str, Any]) -> None:
        """Note a saved session's turn in the case library's sessions index.

        The library then knows which sessions discussed a case and the perception answers
        they obtained (`surgagent library show CASE`). Only sessions that outlive the
        process are noted; a failure to write is logged, never raised: the answer stands.
        """
        case_id = state.get("case_id")
        if self._turn_locks is None or not case_id or case_id == LIBRARY:
            return
        import json
        from datetime import UTC, datetime

        from surgagent.library.errors import LibraryError
        from surgagent.library.store import LibraryStore
        from surgagent.library.types import PerceptionAnswerRow, SessionRow
        from surgagent.tools.results import PerceptionResult, read_result

        messages = state.get("messages", [])
        now = datetime.now(UTC)
        turn_start = max(
            (k for k, m in enumerate(messages) if isinstance(m, HumanMessage)), default=0
        )
        answers = []
        for message in messages[turn_start:]:
            result = read_result(message)
            if isinstance(result, PerceptionResult) and result.times:
                answers.append(
                    PerceptionAnswerRow(
                        case_id=result.case_id,
                        start_s=min(result.times),
                        end_s=max(result.times),
                        task=result.task,
                        question=result.question,
                        answer=result.answer,
                        parsed=json.dumps(result.parsed) if result.parsed is not None else None,
                        model=result.model or None,
                        thread_id=thread_id,
                        created_at=now,
                    )
                )
        session = SessionRow(
            thread_id=thread_id,
            case_id=case_id,
            first_at=now,
            last_at=now,
            turns=sum(isinstance(m, HumanMessage) for m in messages),
        )
        try:
            LibraryStore(self.settings.library_db).record_turn(session, answers)
        except (LibraryError, sqlite3.Error, OSError) as error:
            logger.warning("the case library's session index was not updated: %s", error)

    def history(self, thread_id: str) -> list[BaseMessage]:
        """The messages of a session so far (empty for an unknown session)."""
        state = self.graph.get_state({"configurable": {"thread_id": thread_id}})
        return list(state.values.get("messages", []))

    def turns(self, thread_id: str) -> list[SessionTurn]:
        """The questions and answers of a session so far, oldest first (thinking left out)."""
        return _turns(self.history(thread_id))

    def sessions(self, limit: int = 10) -> list[SessionInfo]:
        """The most recently updated sessions, newest first (empty without a checkpointer).

        Reads at most a few hundred of the newest checkpoints, so it stays quick on a large
        sessions file; a session not updated among them is not listed.
        """
        saver = self.graph.checkpointer
        if not isinstance(saver, BaseCheckpointSaver):
            return []
        newest: dict[str, str] = {}
        for item in saver.list(None, limit=_SESSION_SCAN):
            thread_id = str(item.config["configurable"]["thread_id"])
            newest.setdefault(thread_id, str(item.checkpoint["ts"]))
            if len(newest) == limit:
                break
        infos = []
        for thread_id, updated in newest.items():
            state = self.graph.get_state({"configurable": {"thread_id": thread_id}}).values
            turns = _turns(state.get("messages", []))
            infos.append(
                SessionInfo(
                    thread_id=thread_id,
                    case_id=state.get("case_id"),
                    updated=updated,
                    turns=len(turns),
                    last_question=turns[-1].question if turns else "",
                )
            )
        return infos

    def session_evidence(self, thread_id: str) -> list[dict[str, Any]]:
        """Every evidence item cited in a session so far."""
        state = self.graph.get_state({"configurable": {"thread_id": thread_id}})
        return list(state.values.get("evidence", []))

    def last_result(self, thread_id: str) -> AnswerResult | None:
        """The session's most recent answer, if any."""
        state = self.graph.get_state({"configurable": {"thread_id": thread_id}})
        raw = state.values.get("result")
        return AnswerResult.model_validate(raw) if raw else None

    def turn_results(self, thread_id: str) -> list[AnswerResult | None]:
        """Each turn's answer, oldest first, read back from the session's saved checkpoints.

        A turn whose answer was never saved (its process was stopped mid-run) is None.
        """
        config: RunnableConfig = {"configurable": {"thread_id": thread_id}}
        found: dict[int, AnswerResult] = {}
        for snapshot in self.graph.get_state_history(config):  # newest first
            raw = snapshot.values.get("result")
            if raw:
                messages = snapshot.values.get("messages", [])
                turn = sum(isinstance(m, HumanMessage) for m in messages) - 1
                found.setdefault(turn, AnswerResult.model_validate(raw))
        results: list[AnswerResult | None] = []
        for turn in range(len(self.turns(thread_id))):
            result = found.get(turn)
            if result is not None:
                result.thread_id = thread_id
            results.append(result)
        return results

    @staticmethod
    def _result(state: dict[str, Any], config: RunnableConfig) -> AnswerResult:
        result = AnswerResult.model_validate(state["result"])
        result.thread_id = config["configurable"]["thread_id"]
        return result


def _model_use(role: Literal["planner", "perception"], model: object) -> ModelUse:
    """What ``model`` is, for its run's result: a configured backend by its own settings.

    A model object handed to the agent ready-made (tests, notebooks) is named by its class
    and, where it has one, its ``model_id``; the settings do not describe it.
    """
    from surgagent.agent.backends.base import ChatBackend

    if isinstance(model, ChatBackend):
        options = model.settings
        endpoint = options.base_url if options.backend == "openai" else None
        return ModelUse(role=role, backend=options.backend, model=options.model, endpoint=endpoint)
    kind = type(model)
    name = f"{kind.__module__}.{kind.__qualname__}"
    return ModelUse(role=role, backend=name, model=str(getattr(model, "model_id", name)))


def _turns(messages: Sequence[BaseMessage]) -> list[SessionTurn]:
    """Questions and their final answers, from a session's messages."""
    turns: list[SessionTurn] = []
    for message in messages:
        if isinstance(message, HumanMessage):
            turns.append(SessionTurn(question=message.text))
        elif turns and isinstance(message, AIMessage) and not message.tool_calls:
            turns[-1].answer = split_thinking(message.text)[1]
    return turns


def sqlite_checkpointer(path: Path) -> BaseCheckpointSaver[Any]:
    """A LangGraph SQLite checkpointer at ``path`` (created with its folder if missing).

    Several processes may open the same file at once (two chats on one session): the
    first-time set-up runs under a file lock beside the database, and every statement waits
    up to `_SQLITE_BUSY_S` for another process's write instead of failing at once.

    Raises:
        UserError: If the file is not a readable sessions database (the message says how to
            start afresh without losing it), or another process keeps it locked.
    """
    from filelock import FileLock, Timeout
    from langgraph.checkpoint.sqlite import SqliteSaver

    path.parent.mkdir(parents=True, exist_ok=True)
    connection = sqlite3.connect(str(path), timeout=_SQLITE_BUSY_S, check_same_thread=False)
    saver = SqliteSaver(connection)
    try:
        with FileLock(f"{path}.setup.lock", timeout=_SQLITE_BUSY_S):
            saver.setup()  # reads the schema: a file that is not a database fails here
            connection.execute("SELECT thread_id FROM checkpoints LIMIT 1").fetchall()
    except (Timeout, sqlite3.OperationalError) as error:
        connection.close()
        if isinstance(error, sqlite3.OperationalError) and not _is_busy(error):
            raise _unreadable_sessions(path, error) from error
        raise UserError(
            f"the sessions file {path} is locked by another process ({error}) for more than "
            f"{_SQLITE_BUSY_S:g} s; try again when it has finished"
        ) from error
    except sqlite3.DatabaseError as error:
        connection.close()
        raise _unreadable_sessions(path, error) from error
    return saver


def _is_busy(error: sqlite3.OperationalError) -> bool:
    return "locked" in str(error) or "busy" in str(error)


def _unreadable_sessions(path: Path, error: sqlite3.DatabaseError) -> UserError:
    return UserError(
        f"the sessions file {path} cannot be read ({error}); move it aside "
        f"(mv {path} {path}.broken) to start with no saved sessions"
    )


def _token_events(chunk: BaseMessage, metadata: dict[str, Any]) -> Iterator[AgentEvent]:
    if metadata.get("langgraph_node") not in ("plan", "answer"):
        return
    if not isinstance(chunk, AIMessageChunk | AIMessage):
        return
    thinking = chunk.additional_kwargs.get("reasoning_content")
    if thinking:
        yield AgentEvent(kind="reasoning", text=str(thinking))
    if chunk.text:
        yield AgentEvent(kind="token", text=chunk.text)


def _step_events(node: str, update: dict[str, Any]) -> Iterator[AgentEvent]:
    for message in update.get("messages", []):
        if node == "plan" and isinstance(message, AIMessage):
            for call in message.tool_calls:
                yield AgentEvent(kind="tool_call", tool=call["name"], args=call["args"])
        elif isinstance(message, ToolMessage):
            yield AgentEvent(
                kind="tool_result",
                tool=message.name,
                text=message.text,
                error=message.status == "error",
            )
