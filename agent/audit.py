"""A saved session's audit trail: what each answer rested on, as typed records.

Every turn and tool call (arguments, result summary, duration, error), the planner and
perception models the turns ran with and their endpoints, the detector and segmenter
weights' SHA-256, the prompt files' content hashes and the case's content hash.
``surgagent session export`` writes it as JSON lines or markdown.

    trail = build_export(agent, "review-1")
    text = to_markdown(trail)  # or: record.model_dump_json() for record in trail.records()
"""

from __future__ import annotations

import datetime
import hashlib
import importlib.metadata
import json
import logging
from importlib import resources
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, Literal, TypeAlias

from pydantic import BaseModel, Field

from surgagent.tools.vision import Usage

if TYPE_CHECKING:
    from langchain_core.messages import BaseMessage

    from surgagent.agent.api import SurgicalAgent
    from surgagent.agent.settings import ModelSettings, Settings
    from surgagent.graphs.result import AnswerResult, ModelUse

__all__ = [
    "ExportRecord",
    "SessionExport",
    "build_export",
    "to_markdown",
    "unknown_session",
    "weights_sha256",
]

logger = logging.getLogger(__name__)

_SUMMARY_CHARS = 300  # of a tool's reply to the planner, kept per call
_PROMPTS = ("agent/prompts/planner_system.md", "agent/prompts/final_answer.md")
_LIBRARY_PROMPT = "agent/prompts/planner_library.md"  # sessions across the case library


class SessionHeader(BaseModel):
    """The session, its case and when it was exported."""

    type: Literal["session"] = "session"
    thread_id: str
    case_id: str | None
    case_source: str | None = Field(description="the case's video file or frame folder")
    case_content_hash: str | None = Field(description="None where the case is not registered")
    started: str | None
    updated: str | None
    turns: int
    exported_at: str
    surgagent_version: str


class ModelRecord(BaseModel):
    """A model role the session's turns ran with, and the model names the session recorded.

    Turns saved before runs recorded their models fall back to the settings at export.
    """

    type: Literal["model"] = "model"
    role: Literal["planner", "perception"]
    enabled: bool
    backend: str
    model: str
    endpoint: str | None = Field(description="the server's URL; None for in-process backends")
    seen: list[str] = Field(description="model names the session's replies and results name")
    source: Literal["run", "settings"] = Field(
        "settings", description="run: stamped by the turns that used it; settings: at export"
    )
    turns: list[int] = Field(
        default_factory=list,
        description="0-based turns that used it (run), or that recorded no models (settings)",
    )


class WeightsRecord(BaseModel):
    """An engine's weights file as configured at export, with its SHA-256."""

    type: Literal["weights"] = "weights"
    role: Literal["detector", "segmenter"]
    path: str
    sha256: str | None
    size: int | None
    error: str | None = None
    seen: list[str] = Field(default_factory=list, description="model ids the results name")


class PromptRecord(BaseModel):
    """A prompt file the session's runs used, by content hash (SHA-256)."""

    type: Literal["prompt"] = "prompt"
    name: str
    sha256: str


class TurnRecord(BaseModel):
    """One question and its answer, with status, grounding warnings and evidence."""

    type: Literal["turn"] = "turn"
    index: int
    question: str
    answer: str
    status: str | None = Field(description="None where the turn's answer was never saved")
    warnings: list[str] = Field(default_factory=list)
    citations: list[str] = Field(default_factory=list)
    evidence: list[str] = Field(default_factory=list)
    reasoning: list[str] = Field(default_factory=list)
    usage: Usage = Field(default_factory=Usage)


class ToolCallRecord(BaseModel):
    """One tool call of a turn: arguments, outcome, duration, and the model behind it."""

    type: Literal["tool_call"] = "tool_call"
    turn: int
    call_id: str
    tool: str
    args: dict[str, Any]
    status: Literal["ok", "error", "unanswered"]
    duration_s: float = 0.0
    summary: str = ""
    error: str | None = None
    result_kind: str | None = None
    model: str | None = None


ExportRecord: TypeAlias = Annotated[
    SessionHeader | ModelRecord | WeightsRecord | PromptRecord | TurnRecord | ToolCallRecord,
    Field(discriminator="type"),
]


class SessionExport(BaseModel):
    """A session's audit trail: header, configuration, then turns and tool calls."""

    header: SessionHeader
    models: list[ModelRecord]
    weights: list[WeightsRecord]
    prompts: list[PromptRecord]
    turns: list[TurnRecord]
    tool_calls: list[ToolCallRecord]

    def records(self) -> list[ExportRecord]:
        """Every record in file order (each turn followed by its tool calls)."""
        records: list[ExportRecord] = [self.header, *self.models, *self.weights, *self.prompts]
        for turn in self.turns:
            records.append(turn)
            records += [call for call in self.tool_calls if call.turn == turn.index]
        return records


def weights_sha256(path: Path, cache_file: Path) -> str:
    """The SHA-256 of a weights file, computed once per path, mtime and size.

    Raises:
        OSError: If the file cannot be read.
    """
    from surgagent.tools.cache import atomic_write_text, read_json_file

    stat = path.stat()
    key = str(path.resolve())
    stamp = {"mtime_ns": stat.st_mtime_ns, "size": stat.st_size}
    known = read_json_file(cache_file) or {}
    entry = known.get(key)
    if isinstance(entry, dict) and {k: entry.get(k) for k in stamp} == stamp:
        return str(entry["sha256"])
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    known[key] = {**stamp, "sha256": digest.hexdigest()}
    try:
        atomic_write_text(cache_file, json.dumps(known, indent=1))
    except OSError as error:  # the hash is right; it is only computed again next time
        logger.warning("could not keep the weights hash in %s: %s", cache_file, error)
    return digest.hexdigest()


def _weights(role: Literal["detector", "segmenter"], named: str, cache: Path) -> WeightsRecord:
    path = Path(named).expanduser()
    try:
        return WeightsRecord(
            role=role, path=str(path), sha256=weights_sha256(path, cache), size=path.stat().st_size
        )
    except OSError as error:
        reason = error.strerror or str(error)
        return WeightsRecord(role=role, path=str(path), sha256=None, size=None, error=reason)


def _prompt(name: str) -> PromptRecord | None:
    """The prompt file ``name`` by content hash; None where there is none (a bad task name)."""
    package, _, file = name.replace("/", ".").removesuffix(".md").rpartition(".")
    try:
        data = resources.files(f"surgagent.{package}").joinpath(f"{file}.md").read_bytes()
    except (FileNotFoundError, ModuleNotFoundError):
        return None
    return PromptRecord(name=name, sha256=hashlib.sha256(data).hexdigest())


def _tool_calls(messages: list[BaseMessage]) -> tuple[list[ToolCallRecord], dict[str, set[str]]]:
    """Each tool call with its outcome, and the model names seen per role."""
    from langchain_core.messages import AIMessage, HumanMessage, ToolMessage

    from surgagent.tools.base import ToolRecord
    from surgagent.tools.results import DetectionsResult, PerceptionResult, read_result

    seen: dict[str, set[str]] = {"planner": set(), "perception": set(), "detector": set()}
    calls: dict[str, ToolCallRecord] = {}
    turn = -1
    for message in messages:
        if isinstance(message, HumanMessage):
            turn += 1
        elif isinstance(message, AIMessage):
            if message.response_metadata.get("model_name"):
                seen["planner"].add(str(message.response_metadata["model_name"]))
            wanted = [(c["id"], c["name"], c["args"]) for c in message.tool_calls]
            wanted += [
                (c["id"], c["name"] or "?", {"unreadable": c["args"]})
                for c in message.invalid_tool_calls
            ]
            for call_id, name, args in wanted:
                calls[call_id or ""] = ToolCallRecord(
                    turn=max(turn, 0), call_id=call_id or "", tool=name, args=args,
                    status="unanswered",
                )  # fmt: skip
        elif isinstance(message, ToolMessage) and message.tool_call_id in calls:
            record = calls[message.tool_call_id]
            text = message.text
            record.duration_s = ToolRecord.of(message).duration_s
            if message.status == "error":
                record.status, record.error = "error", text
                continue
            record.status, record.summary = "ok", text[:_SUMMARY_CHARS]
            try:
                result = read_result(message)
            except ValueError as error:  # written by an incompatible version
                record.error = str(error)
                continue
            record.result_kind = result.kind if result is not None else None
            if isinstance(result, PerceptionResult) and result.model:
                record.model = result.model
                seen["perception"].add(result.model)
            elif isinstance(result, DetectionsResult):
                record.model = result.model_id
                seen["detector"].add(result.model_id)
    return list(calls.values()), seen


def _turn(index: int, question: str, answer: str, result: AnswerResult | None) -> TurnRecord:
    if result is None:
        return TurnRecord(index=index, question=question, answer=answer, status=None)
    return TurnRecord(
        index=index,
        question=question,
        answer=result.answer,
        status=result.status,
        warnings=result.warnings,
        citations=[c.passage_id for c in result.citations],
        evidence=[f"{e.label()} {e.summary}" for e in result.evidence],
        reasoning=result.reasoning,
        usage=result.usage,
    )


def build_export(agent: SurgicalAgent, thread_id: str) -> SessionExport:
    """The audit trail of session ``thread_id``.

    Models are those each turn recorded it ran with (the settings at export stand in for
    turns saved before runs recorded them, marked ``source="settings"``); weights and
    prompts are those configured when exporting. Each model record also lists the model
    names the session's own replies and results recorded.

    Raises:
        UserError: If the session is unknown; the message lists the recent sessions.
    """
    from surgagent.agent.api import LIBRARY
    from surgagent.agent.errors import UserError

    messages = agent.history(thread_id)
    if not messages:
        raise UserError(unknown_session(agent, thread_id))
    settings: Settings = agent.settings
    config: Any = {"configurable": {"thread_id": thread_id}}
    history = list(agent.graph.get_state_history(config))
    state = history[0].values
    case_id = state.get("case_id")
    case = agent.cache.lookup(case_id) if case_id else None
    calls, seen = _tool_calls(messages)
    results = agent.turn_results(thread_id)
    turns = [
        _turn(k, turn.question, turn.answer, result)
        for k, (turn, result) in enumerate(zip(agent.turns(thread_id), results, strict=True))
    ]
    tasks = sorted({c.args.get("task", "open") for c in calls if c.tool == "ask_perception"})
    prompts = [*_PROMPTS, *(f"tools/perception/prompts/perception_{t}.md" for t in tasks)]
    if case_id == LIBRARY:
        prompts[0] = _LIBRARY_PROMPT
    hashes = settings.cache_dir / "weights-sha256.json"
    engines: list[tuple[Literal["detector", "segmenter"], str | None]] = [
        ("detector", settings.detector.weights),
        ("segmenter", settings.phase.weights),
    ]
    weights = [_weights(role, named, hashes) for role, named in engines if named]
    for record in weights:
        record.seen = sorted(seen.get(record.role, set()))
    return SessionExport(
        header=SessionHeader(
            thread_id=thread_id,
            case_id=case_id,
            case_source=str(case.source) if case else None,
            case_content_hash=case.content_hash if case else None,
            started=history[-1].created_at,
            updated=history[0].created_at,
            turns=len(turns),
            exported_at=datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
            surgagent_version=importlib.metadata.version("surgagent"),
        ),
        models=_models(results, settings, seen),
        weights=weights,
        prompts=[found for name in prompts if (found := _prompt(name)) is not None],
        turns=turns,
        tool_calls=calls,
    )


def _models(
    results: list[AnswerResult | None], settings: Settings, seen: dict[str, set[str]]
) -> list[ModelRecord]:
    """The models the turns recorded, in order of first use, with the turns that used each.

    The settings at export stand in for turns that recorded none (saved before runs kept
    their models, or never answered), and say so (``source="settings"``).
    """
    used: dict[ModelUse, ModelRecord] = {}
    unstamped: list[int] = []
    for k, result in enumerate(results):
        if result is None or not result.models:
            unstamped.append(k)
            continue
        for m in result.models:
            record = used.setdefault(
                m,
                ModelRecord(
                    role=m.role,
                    enabled=True,
                    backend=m.backend,
                    model=m.model,
                    endpoint=m.endpoint,
                    seen=sorted(seen[m.role]),
                    source="run",
                ),
            )
            record.turns.append(k)
    records = list(used.values())
    if unstamped or not records:
        records += [
            _model("planner", settings.planner, True, seen, unstamped),
            _model("perception", settings.perception, settings.perception.enabled, seen, unstamped),
        ]
    return records


def _model(
    role: Literal["planner", "perception"],
    options: ModelSettings,
    enabled: bool,
    seen: dict[str, set[str]],
    turns: list[int],
) -> ModelRecord:
    return ModelRecord(
        role=role,
        enabled=enabled,
        backend=options.backend,
        model=options.model,
        endpoint=options.base_url if options.backend == "openai" else None,
        seen=sorted(seen[role]),
        source="settings",
        turns=turns,
    )


def unknown_session(agent: SurgicalAgent, thread_id: str) -> str:
    """One sentence naming an unknown session and listing the recent ones."""
    recent = agent.sessions(limit=5)
    listed = "; ".join(
        f"{s.thread_id} ({s.case_id or 'no case'}, {s.turns} turns, last: {s.last_question[:40]!r})"
        for s in recent
    )
    known = f"recent sessions: {listed}" if recent else "there are no saved sessions yet"
    return f"session {thread_id!r} is unknown; {known}."


def to_markdown(export: SessionExport) -> str:
    """The audit trail as a readable markdown document."""
    head = export.header
    lines = [
        f"# Session {head.thread_id}",
        "",
        f"- case: {head.case_id or 'unknown'} ({head.case_source or 'not registered'})",
        f"- case content hash: `{head.case_content_hash or 'unknown'}`",
        f"- started {head.started}, updated {head.updated}, {head.turns} turns",
        f"- exported {head.exported_at} by surgagent {head.surgagent_version}",
        "",
        "## Models (as the turns ran), weights and prompts (as configured at export)",
        "",
    ]
    for m in export.models:
        where = m.endpoint or "in process"
        state = "" if m.enabled else " (off)"
        turns = f"turn{'s' if len(m.turns) > 1 else ''} {', '.join(str(k + 1) for k in m.turns)}"
        if m.source == "run":
            when = f", used in {turns}"
        else:  # the turns recorded no models: saved by an older version, or never answered
            when = f", as configured at export ({turns} recorded no models)" if m.turns else ""
        used = f"; the session recorded {', '.join(m.seen)}" if m.seen else ""
        lines.append(f"- {m.role}{state}: {m.model} via {m.backend} ({where}){when}{used}")
    for w in export.weights:
        digest = f"sha256 `{w.sha256}`" if w.sha256 else f"unreadable: {w.error}"
        lines.append(f"- {w.role} weights: {w.path}, {digest}")
    lines += [f"- prompt {p.name}: sha256 `{p.sha256}`" for p in export.prompts]
    for turn in export.turns:
        lines += ["", f"## Turn {turn.index + 1}", "", f"**Question:** {turn.question}", ""]
        lines += [f"**Answer** ({turn.status or 'not saved'}): {turn.answer}", ""]
        lines += [f"> **Warning:** {w}\n" for w in turn.warnings]
        for call in (c for c in export.tool_calls if c.turn == turn.index):
            args = json.dumps(call.args, ensure_ascii=False)
            lines.append(f"- `{call.tool}({args})` {call.status}, {call.duration_s:.2f} s")
            outcome = call.error or call.summary
            if outcome:
                lines.append("  " + " ".join(outcome.split())[:_SUMMARY_CHARS])
        if turn.evidence:
            lines += ["", "Evidence:", *(f"- {item}" for item in turn.evidence)]
        if turn.citations:
            lines += ["", "Cited passages: " + ", ".join(turn.citations)]
    return "\n".join(lines) + "\n"
