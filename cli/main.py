"""The ``surgagent`` command line: ask, chat, index, doctor and config.

surgagent ask examples/sample_case/sample_lapchole.mp4 "When is the clipper used?"
surgagent chat video.mp4 --session review-1
"""

from __future__ import annotations

import json
import logging
import os
import signal
import sys
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer
from rich.console import Console
from rich.markup import escape

from surgagent.agent.errors import UserError
from surgagent.cli._shared import (
    CommandError,
    JsonOpt,
    case_cache,
    emit_json,
    err_console,
    progress_bar,
)
from surgagent.cli.detector import app as detector_app
from surgagent.cli.eval import app as eval_app
from surgagent.cli.knowledge import app as knowledge_app
from surgagent.cli.library import app as library_app
from surgagent.cli.phase import app as phase_app
from surgagent.cli.report import report as report_command
from surgagent.cli.session import app as session_app
from surgagent.cli.users import app as users_app

if TYPE_CHECKING:
    from surgagent.agent.api import AgentEvent, AnswerResult, SessionTurn, SurgicalAgent

__all__ = ["app", "main"]

console = Console()

app = typer.Typer(
    help="SurgAgent: ask questions about surgical videos.\n\n"
    "Examples:\n\n"
    "  surgagent ask examples/sample_case/sample_lapchole.mp4 'Which instruments appear?'\n\n"
    "  surgagent chat video.mp4 --session review-1\n\n"
    "  surgagent doctor",
    no_args_is_help=True,
    rich_markup_mode="rich",
    pretty_exceptions_enable=False,
)
config_app = typer.Typer(help="Show the resolved settings.", no_args_is_help=True)
app.add_typer(config_app, name="config")
app.add_typer(phase_app, name="phase", help="Train, run and evaluate the phase segmenter.")
app.add_typer(detector_app, name="detector", help="Train, run and track the instrument detector.")
app.add_typer(knowledge_app, name="knowledge", help="Search and extend the guideline store.")
app.add_typer(library_app, name="library", help="Index an archive of cases; list, show, remove.")
app.add_typer(users_app, name="users", help="Who may log in to the web app (serve --auth).")
app.add_typer(session_app, name="session", help="Export a saved session's audit trail.")
app.command("report")(report_command)
app.add_typer(
    eval_app, name="eval", help="Build task sets, run the agent and the bare VLM, report."
)

_state: dict[str, Any] = {"debug": False}

CaseArg = Annotated[str, typer.Argument(help="A video file, a frame folder or an indexed case id.")]
BackendOpt = Annotated[
    str | None, typer.Option("--backend", help="Planner backend: openai, transformers, vllm.")
]
ModelOpt = Annotated[str | None, typer.Option("--model", help="Planner model id, path or name.")]
UrlOpt = Annotated[
    str | None, typer.Option("--base-url", help="Planner endpoint (OpenAI-compatible).")
]
ThinkingOpt = Annotated[
    bool | None, typer.Option("--thinking/--no-thinking", help="Let the planner think.")
]
StepsOpt = Annotated[int | None, typer.Option("--steps", help="Most planner steps per answer.")]


@app.callback()
def _main_options(
    config: Annotated[
        Path | None, typer.Option("--config", help="Settings file (default ./surgagent.toml).")
    ] = None,
    debug: Annotated[bool, typer.Option("--debug", help="Show tracebacks and debug logs.")] = False,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="Only print results.")] = False,
) -> None:
    if config is not None:
        os.environ["SURGAGENT_CONFIG"] = str(config)
    _state["debug"] = debug
    _state["quiet"] = quiet
    from rich.logging import RichHandler

    level = logging.DEBUG if debug else (logging.ERROR if quiet else logging.WARNING)
    logging.basicConfig(
        level=level, handlers=[RichHandler(console=err_console, show_path=False)], force=True
    )


@contextmanager
def _friendly_errors(*, exit_on_error: bool = True) -> Iterator[None]:
    """Turn our errors into one red line (tracebacks only with --debug).

    A ``--json`` command also prints the error as a `CommandError` object on stdout, so a
    pipeline reading its output always gets JSON.

    Args:
        exit_on_error: End the command with exit status 1; a chat turn goes on instead.
    """
    from surgagent.knowledge.errors import KnowledgeError
    from surgagent.tools.errors import SurgAgentError

    try:
        yield
    except (SurgAgentError, KnowledgeError) as error:
        if _state["debug"]:
            raise
        if exit_on_error and "--json" in sys.argv[1:]:
            emit_json(CommandError(error=str(error), kind=type(error).__name__))
        err_console.print(
            f"[red]error:[/red] {escape(str(error))}", highlight=False, soft_wrap=True
        )
        if exit_on_error:
            raise SystemExit(1) from None
    except KeyboardInterrupt:
        err_console.print("[yellow]interrupted[/yellow]")
        raise SystemExit(130) from None


def _planner_overrides(
    backend: str | None, model: str | None, base_url: str | None, thinking: bool | None
) -> dict[str, Any]:
    planner = {"backend": backend, "model": model, "base_url": base_url, "thinking": thinking}
    return {"planner": {k: v for k, v in planner.items() if v is not None}}


def _build_agent(overrides: dict[str, Any], **kwargs: Any) -> SurgicalAgent:
    """The agent for a command; an unreachable model stops it before the graph is imported."""
    from surgagent.agent.reach import check_roles
    from surgagent.agent.settings import get_settings

    settings = get_settings(**overrides)
    check_roles(settings)
    from surgagent.agent.api import SurgicalAgent

    return SurgicalAgent.from_settings(settings, check=False, **kwargs)


def _print_result(result: AnswerResult, *, answer: bool) -> None:
    """Print the answer (unless it was streamed), its evidence, citations and status."""
    if answer:
        console.print(result.answer, highlight=False, markup=False)
    seen = [item for item in result.evidence if item.kind != "passage"]
    if seen:
        console.print("\n[bold]Evidence[/bold]")
        for item in seen:
            console.print(f"  {item.label()} {item.summary}", highlight=False, markup=False)
    if result.citations:
        console.print("\n[bold]Guidelines cited[/bold]")
        for citation in result.citations:
            where = ", ".join(str(x) for x in (citation.source, citation.year) if x)
            line = f"  [{citation.passage_id}] {citation.title} ({where})"
            console.print(line, highlight=False, markup=False)
    for warning in result.warnings:
        console.print(f"[yellow]note: {escape(warning)}[/yellow]", highlight=False)
    if result.status != "answered":
        console.print(f"[yellow]status: {result.status}[/yellow]")


def _stream_answer(events: Iterator[AgentEvent], *, show_steps: bool) -> AnswerResult:
    """Print a streamed run: tool steps dimmed, answer tokens as they come."""
    result = None
    streamed = False
    for event in events:
        if event.kind == "tool_call" and show_steps:
            args = json.dumps(event.args, ensure_ascii=False)
            err_console.print(f"[dim]→ {event.tool}({escape(args)})[/dim]", highlight=False)
        elif event.kind == "tool_result" and show_steps and event.error:
            err_console.print(f"[dim red]  {escape(event.text)}[/dim red]", highlight=False)
        elif event.kind == "token":
            console.print(event.text, end="", highlight=False, markup=False)
            streamed = True
        elif event.kind == "answer":
            result = event.result
    assert result is not None, "a stream always ends with an answer event"
    if streamed:
        console.print()
    # After a budget stop or an error, the streamed text may not be the answer: print it.
    _print_result(result, answer=not streamed or result.status == "error")
    return result


@app.command()
def ask(
    case: CaseArg,
    question: Annotated[str, typer.Argument(help="The question about the case.")],
    as_json: JsonOpt = False,
    backend: BackendOpt = None,
    model: ModelOpt = None,
    base_url: UrlOpt = None,
    thinking: ThinkingOpt = None,
    steps: StepsOpt = None,
) -> None:
    """Ask one question about a case and print the grounded answer.

    Example: surgagent ask video.mp4 "When is the clipper first used?" --json
    """
    overrides = _planner_overrides(backend, model, base_url, thinking)
    _answer_once(question, overrides, steps, as_json, case=case)


def _answer_once(
    question: str, overrides: dict[str, Any], steps: int | None, as_json: bool, **where: Any
) -> None:
    """Answer one question (``case=`` or ``library=True``), streamed or as JSON."""
    if steps is not None:
        overrides["step_budget"] = steps
    agent = _build_agent(overrides)
    if as_json:
        result = agent.invoke(question, **where)
        emit_json(result)
    else:
        result = _stream_answer(agent.stream(question, **where), show_steps=not _state.get("quiet"))
    if result.status == "error":
        raise typer.Exit(2)


@app.command()
def cohort(
    question: Annotated[str, typer.Argument(help="The question across the case library.")],
    as_json: JsonOpt = False,
    backend: BackendOpt = None,
    model: ModelOpt = None,
    base_url: UrlOpt = None,
    thinking: ThinkingOpt = None,
    steps: StepsOpt = None,
) -> None:
    """Ask a question across the indexed cases (`surgagent library add`), answered with cases.

    Example: surgagent cohort "Which cases had a Calot's triangle dissection over 10 minutes?"
    """
    overrides = _planner_overrides(backend, model, base_url, thinking)
    _answer_once(question, overrides, steps, as_json, library=True)


def _chat_command(agent: SurgicalAgent, thread_id: str, line: str) -> bool:
    """Run a /command; return False to leave the chat."""
    command = line.strip().lower()
    if command in ("/quit", "/exit"):
        return False
    if command == "/trace":
        result = agent.last_result(thread_id)
        for step in result.trace if result else []:
            what = step.tool or step.node
            extra = f" error: {step.error}" if step.error else ""
            console.print(
                f"  {what} {step.args or ''} {step.duration_s:.2f}s{extra}",
                highlight=False,
                markup=False,
            )
        if result and result.reasoning:
            console.print("[dim]" + escape("\n".join(result.reasoning)) + "[/dim]", highlight=False)
    elif command == "/history":
        _print_turns(agent.turns(thread_id))
    elif command == "/evidence":
        from surgagent.tools.base import Evidence

        for raw in agent.session_evidence(thread_id):
            item = Evidence.model_validate(raw)
            console.print(f"  {item.label()} {item.summary}", highlight=False, markup=False)
    else:
        console.print("commands: /history  /trace  /evidence  /quit")
    return True


_RESUME_TURNS = 3  # turns of a resumed session shown before the prompt


def _print_turns(turns: list[SessionTurn]) -> None:
    for turn in turns:
        console.print(f"[bold cyan]you>[/bold cyan] {escape(turn.question)}", highlight=False)
        console.print(turn.answer or "(no answer)", highlight=False, markup=False)


def _unknown_session(agent: SurgicalAgent, thread_id: str) -> str:
    from surgagent.agent.audit import unknown_session

    return unknown_session(agent, thread_id) + " Give a CASE to start a new session."


@app.command()
def chat(
    case: Annotated[
        str | None, typer.Argument(help="Video, frame folder or case id (not needed to resume).")
    ] = None,
    session: Annotated[
        str | None, typer.Option("--session", "-s", help="Session id to start or resume.")
    ] = None,
    backend: BackendOpt = None,
    model: ModelOpt = None,
    base_url: UrlOpt = None,
    thinking: ThinkingOpt = None,
) -> None:
    """Chat about a case; the session is saved and resumes with --session after a restart.

    In the chat: /history shows the whole conversation, /trace the last answer's tool calls
    and thinking, /evidence the evidence so far; /quit leaves.
    """
    agent = _build_agent(_planner_overrides(backend, model, base_url, thinking), sessions="sqlite")
    thread_id = session or uuid.uuid4().hex[:12]
    past = agent.turns(thread_id)
    if past:
        shown = past[-_RESUME_TURNS:]
        more = f"; the {len(shown)} last shown, /history for all" if len(past) > len(shown) else ""
        noun = "turn" if len(past) == 1 else "turns"
        console.print(f"[dim]resuming session {thread_id} ({len(past)} {noun}{more})[/dim]")
        _print_turns(shown)
    elif case is None:
        raise UserError(_unknown_session(agent, thread_id))
    else:
        console.print(f"[dim]session {thread_id} (resume with --session {thread_id})[/dim]")
    first_case: str | None = case
    while True:
        try:
            line = console.input("[bold cyan]you>[/bold cyan] ")
        except EOFError:
            break
        if not line.strip():
            continue
        if line.startswith("/"):
            if not _chat_command(agent, thread_id, line):
                break
            continue
        with _friendly_errors(exit_on_error=False):
            _stream_answer(
                agent.stream(line, case=first_case, thread_id=thread_id), show_steps=True
            )
            first_case = None


@app.command()
def index(
    case: CaseArg,
    fps: Annotated[float, typer.Option(help="Frames to keep per second of video.")] = 1.0,
    as_json: JsonOpt = False,
) -> None:
    """Probe a case and cache its frames, so later questions start fast."""
    from surgagent.tools.video.engine import index_case, open_case

    cache = case_cache()
    opened = open_case(case, cache)
    enabled = not (_state.get("quiet") or as_json)
    with progress_bar(enabled, f"indexing {opened.id}") as progress:
        result = index_case(opened, cache, fps=fps, progress=progress)
    if as_json:
        emit_json(result)
        return
    from surgagent.tools.base import format_time

    kept = result.frames_total - result.frames_written
    console.print(
        f"indexed {opened.id}: {format_time(opened.duration)} of video, {result.frames_total} "
        f"frames at {result.fps:g} fps ({result.frames_written} decoded now, {kept} already "
        f"cached) in {result.seconds:.1f} s\ncontact sheet: {result.thumbnail}"
        + "".join(f"\nskipped: {damage}" for damage in result.damaged),
        highlight=False,
        markup=False,
        soft_wrap=True,
    )


@config_app.command("show")
def config_show(as_json: JsonOpt = False) -> None:
    """Print every setting, its value and where it came from (default, file, env)."""
    from surgagent.agent.settings import get_settings, setting_sources

    rows = setting_sources(get_settings())
    if as_json:
        data = [{"name": n, "value": str(v), "source": s} for n, v, s in rows]
        sys.stdout.write(json.dumps(data, indent=2) + "\n")
        return
    from rich.table import Table

    table = Table("setting", "value", "source")
    for name, value, source in rows:
        table.add_row(name, str(value), source)
    console.print(table)


@app.command()
def serve(
    host: Annotated[str, typer.Option(help="Interface to bind; 0.0.0.0 shares it.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="Port.")] = 7860,
    auth: Annotated[
        Path | None,
        typer.Option(help="Users file (surgagent users add): each person logs in by name."),
    ] = None,
    token: Annotated[
        str | None,
        typer.Option(envvar="SURGAGENT_UI_TOKEN", help="One shared password for a team."),
    ] = None,
    max_upload_mb: Annotated[float, typer.Option(help="Largest video upload.")] = 4096,
    library: Annotated[
        bool | None,
        typer.Option(
            "--library/--no-library",
            help="Show the case library (cohort view, its cases) to every visitor; "
            "default: only without a login.",
        ),
    ] = None,
) -> None:
    """Start the web case-review app (needs the ``ui`` extra: pip install -e ".[ui]").

    Beyond this machine (--host 0.0.0.0) it needs a login: --auth users.toml keeps each
    person's uploads and sessions their own; --token shares them within a team. The case
    library (surgagent library add) is shown without a login; with one, --library shares it
    with everyone who logs in.

    Example: surgagent serve --host 0.0.0.0 --auth users.toml
    """
    import importlib.util

    from surgagent.agent.settings import get_settings

    if importlib.util.find_spec("gradio") is None:
        raise UserError("the web app needs gradio: pip install -e '.[ui]'")
    from surgagent.ui.auth import Access
    from surgagent.ui.page import serve as serve_app

    access = Access.from_options(auth=auth, token=token)
    serve_app(
        get_settings(),
        host=host,
        port=port,
        access=access,
        max_upload_mb=max_upload_mb,
        library=library,
    )


@app.command()
def doctor(as_json: JsonOpt = False) -> None:
    """Check what is installed, whether the models are reachable, and what to do next.

    Exits 1 when something that is turned on (a model role, engine weights) is not usable.
    """
    from surgagent.cli.doctor import run_checks

    report = run_checks()
    if as_json:
        emit_json(report)
    else:
        for check in report.checks:
            mark = "[green]ok[/green]" if check.ok else "[red]!![/red]"
            line = f"{mark} {check.name}: {escape(check.detail)}"
            console.print(line, highlight=False, soft_wrap=True)
            if not check.ok and check.fix:
                console.print(
                    f"   [dim]→ {escape(check.fix)}[/dim]", highlight=False, soft_wrap=True
                )
    if not report.ok:
        raise typer.Exit(1)


def _interrupted(signum: int, frame: Any) -> None:
    """Ctrl-C: stop at once, with one line and exit status 130.

    A request may be waiting in a worker thread of the graph, which a KeyboardInterrupt in
    the main thread would wait for (up to the model's timeout, per retry). Leaving with
    ``os._exit`` ends it now; what a killed run leaves is what every store here is built to
    survive (SQLite transactions, atomic file writes, dangling tool calls closed on resume).
    """
    sys.stderr.write("interrupted\n")
    sys.stderr.flush()
    os._exit(130)


def main() -> None:
    """Entry point of the ``surgagent`` console script."""
    signal.signal(signal.SIGINT, _interrupted)
    with _friendly_errors():
        app()
