"""``surgagent library``: the case library: add (index) cases, list them, show one, remove one.

surgagent library add cholec80/videos --workers 2
surgagent library show video01-1a2b3c4d --json
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from contextlib import contextmanager
from enum import StrEnum
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer
from pydantic import BaseModel
from rich import box
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from surgagent.agent.errors import UserError
from surgagent.cli._shared import JsonOpt, emit_json, err_console, progress_bar
from surgagent.library.errors import LibraryError
from surgagent.library.store import LibraryStore
from surgagent.library.types import CaseIndex, CaseRecord
from surgagent.tools.base import format_time

if TYPE_CHECKING:
    from surgagent.indexing.runner import CaseEvent
    from surgagent.indexing.types import IndexConfig, IndexSummary

__all__ = ["app"]

console = Console()

app = typer.Typer(
    help="The case library: index an archive of cases once, then ask across them.\n\n"
    "Examples:\n\n"
    "  surgagent library add cholec80/videos --workers 2\n\n"
    "  surgagent library add /archive --workers 16 --backend ray --address ray://head:10001\n\n"
    "  surgagent library list\n\n"
    "  surgagent library show video01-1a2b3c4d\n\n"
    "  surgagent library remove video01-1a2b3c4d",
    no_args_is_help=True,
    rich_markup_mode="rich",
)

CaseRefArg = Annotated[str, typer.Argument(help="A case id, or its video file or frame folder.")]


class BackendChoice(StrEnum):
    """Where the cases are indexed."""

    local = "local"
    ray = "ray"


class LibraryListing(BaseModel):
    """``library list --json``."""

    library: Path
    schema_version: int
    cases: list[CaseRecord]


class RemovedCase(BaseModel):
    """``library remove --json``."""

    library: Path
    removed: CaseRecord


def _store() -> LibraryStore:
    from surgagent.agent.settings import get_settings

    return LibraryStore(get_settings().library_db)


@contextmanager
def _library_errors() -> Iterator[None]:
    """The library's errors as the one-line errors every command prints."""
    try:
        yield
    except LibraryError as error:
        raise UserError(str(error)) from error


def _config(fps: float, procedure: str | None) -> IndexConfig:
    """What to do to each case, from the settings: the engines that have weights."""
    from surgagent.agent.settings import get_settings
    from surgagent.indexing.types import DetectorJob, IndexConfig, PhaseJob

    settings = get_settings()
    found = settings.detector
    detector = phase = None
    if found.weights:
        detector = DetectorJob(
            weights=Path(found.weights).expanduser().resolve(),
            imgsz=found.imgsz,
            conf=found.conf,
            iou=found.iou,
            device=found.device,
            fps=found.fps,
        )
    if settings.phase.weights:
        weights = Path(settings.phase.weights).expanduser().resolve()
        phase = PhaseJob(weights=weights, device=settings.phase.device)
    return IndexConfig(
        cache_dir=settings.cache_dir.resolve(),
        frames_fps=fps,
        detector=detector,
        phase=phase,
        procedure=procedure,
    )


def _quiet() -> bool:
    # `surgagent --quiet` raises the log level to ERROR; per-case lines follow it.
    return logging.getLogger().getEffectiveLevel() >= logging.ERROR


_MARKS = {
    "indexed": "[green]indexed[/green]",
    "skipped": "[dim]already indexed[/dim]",
    "failed": "[red]failed[/red]",
    "duplicate": "[yellow]duplicate[/yellow]",
}


def _print_event(event: CaseEvent) -> None:
    took = f" in {event.seconds:.1f} s" if event.seconds else ""
    detail = f": {escape(event.detail)}" if event.detail and event.status != "skipped" else ""
    name = event.case_id if event.status in ("indexed", "skipped") else str(event.path)
    err_console.print(
        f"[{event.done}/{event.total}] {_MARKS[event.status]} {escape(name)}{took}{detail}",
        highlight=False,
        soft_wrap=True,
    )


def _print_summary(summary: IndexSummary) -> None:
    console.print(
        f"{len(summary.indexed)} indexed, {len(summary.skipped)} already indexed, "
        f"{len(summary.failed)} failed, {len(summary.duplicates)} duplicates of "
        f"{summary.found} cases in {summary.seconds:.1f} s ({summary.backend}, "
        f"{summary.workers} workers) -> {summary.library}",
        highlight=False,
        soft_wrap=True,
    )
    for failed in summary.failed:
        line = f"[red]failed[/red] {escape(str(failed.path))}: {escape(failed.error)}"
        err_console.print(line, highlight=False, soft_wrap=True)
    if summary.ignored:
        shown = ", ".join(str(path) for path in summary.ignored[:5])
        more = f" and {len(summary.ignored) - 5} more" if len(summary.ignored) > 5 else ""
        err_console.print(
            f"[yellow]ignored {len(summary.ignored)} files that are not videos, frame folders "
            f"or notes:[/yellow] {escape(shown)}{more}",
            highlight=False,
            soft_wrap=True,
        )


@app.command("add")
def add(
    paths: Annotated[
        list[Path], typer.Argument(help="Video files, frame folders, or folders of cases.")
    ],
    workers: Annotated[
        int, typer.Option("--workers", "-w", min=1, help="Cases indexed at once.")
    ] = 1,
    backend: Annotated[
        BackendChoice,
        typer.Option(
            help="local: processes on this machine; ray: a Ray cluster (extra).",
            case_sensitive=False,
        ),
    ] = BackendChoice.local,
    address: Annotated[
        str | None,
        typer.Option(help="Ray cluster address, e.g. ray://head:10001 (default: Ray here)."),
    ] = None,
    gpus_per_worker: Annotated[
        float | None,
        typer.Option(help="GPUs Ray reserves per worker (default 1 when an engine uses CUDA)."),
    ] = None,
    fps: Annotated[float, typer.Option(help="Frames sampled into the cache per second.")] = 1.0,
    procedure: Annotated[
        str | None, typer.Option(help="Procedure of cases whose notes name none.")
    ] = None,
    reindex: Annotated[
        bool, typer.Option(help="Index every case again, even those indexed and unchanged.")
    ] = False,
    as_json: JsonOpt = False,
) -> None:
    """Register and index cases: probe, sampled frames, instrument timeline, phase segments.

    The detector and phase segmenter run where the settings give their weights
    (detector.weights, phase.weights). Each case is indexed once: a case already indexed
    and unchanged is skipped, so after an interruption the same command goes on where it
    stopped. A case that cannot be read is recorded as failed, with the reason.

    Example: surgagent library add cholec80/videos --workers 2 --procedure cholecystectomy
    """
    from surgagent.indexing.runner import index_cases

    config = _config(fps, procedure)
    store = _store()
    show = not (as_json or _quiet())
    with _library_errors(), progress_bar(show, "indexing cases") as progress:

        def on_case(event: CaseEvent) -> None:
            progress(event.done, event.total)
            if show:
                _print_event(event)

        summary = index_cases(
            paths,
            store,
            config,
            workers=workers,
            backend=backend.value,
            address=address,
            gpus_per_worker=gpus_per_worker,
            reindex=reindex,
            on_case=on_case,
        )
    if as_json:
        emit_json(summary)
    else:
        _print_summary(summary)
    if summary.failed and not (summary.indexed or summary.skipped or summary.duplicates):
        raise typer.Exit(1)  # nothing usable came of it: a pipeline must not go on as if it did


@app.command("list")
def list_cases(as_json: JsonOpt = False) -> None:
    """List the library's cases: status, procedure, date, length, engines run."""
    store = _store()
    with _library_errors():
        version = store.migrate()
        cases = store.cases()
    if as_json:
        emit_json(LibraryListing(library=store.path, schema_version=version, cases=cases))
        return
    if not cases:
        console.print(f"the library ({store.path}) is empty: surgagent library add PATH...")
        return
    table = Table(box=box.SIMPLE)
    for name in ("case", "status", "date", "length"):
        table.add_column(name, no_wrap=True)
    table.add_column("procedure", overflow="fold")
    table.add_column("engines")
    for case in cases:
        engines = ", ".join(
            name
            for name, model in (("detector", case.detector_model), ("phase", case.phase_model))
            if model
        )
        length = format_time(case.duration) if case.duration is not None else ""
        status = case.status if case.status == "indexed" else f"[red]{case.status}[/red]"
        table.add_row(
            escape(case.id),
            status,
            case.date or "",
            length,
            escape(case.procedure or ""),
            engines or ("none" if case.status == "indexed" else ""),
        )
    console.print(table)
    for case in cases:
        if case.error:
            line = f"[red]{escape(case.id)}[/red] ({escape(str(case.path))}): {escape(case.error)}"
            err_console.print(line, highlight=False, soft_wrap=True)


def _print_case(index: CaseIndex) -> None:
    case = index.case
    facts = [
        f"[bold]{escape(case.id)}[/bold]  {escape(str(case.path))}",
        f"status: {case.status}" + (f" ({escape(case.error)})" if case.error else ""),
    ]
    if case.duration is not None:
        facts.append(
            f"length {format_time(case.duration)} at {case.fps:g} fps, {case.width}x{case.height}"
            f"; {case.frames} frames sampled at {case.frames_fps:g}/s"
        )
    if case.procedure or case.date:
        facts.append(f"procedure: {escape(case.procedure or '?')}, date: {case.date or '?'}")
    console.print("\n".join(facts), highlight=False, soft_wrap=True)
    if index.phases:
        table = Table("phase", "from", "to", "length", "confidence", title="Phases")
        for s in index.phases:
            table.add_row(
                s.phase,
                format_time(s.start_s),
                format_time(s.end_s),
                format_time(s.end_s - s.start_s),
                f"{s.confidence:.2f}" if s.confidence is not None else "",
            )
        console.print(table)
    if index.instruments:
        table = Table(
            "instrument", "from", "to", "samples", "best at", "score", title="Instruments"
        )
        for i in index.instruments:
            table.add_row(
                i.instrument,
                format_time(i.start_s),
                format_time(i.end_s),
                str(i.samples),
                format_time(i.best_time_s),
                f"{i.best_score:.2f}",
            )
        console.print(table)
    if case.status == "indexed" and not (index.phases or index.instruments):
        console.print(
            "[dim]no engine ran on it: set detector.weights / phase.weights, then "
            "`surgagent library add` it again.[/dim]"
        )
    if index.sessions:
        table = Table("session", "first", "last", "turns", title="Sessions that discussed it")
        for session in index.sessions:
            table.add_row(
                escape(session.thread_id),
                f"{session.first_at:%Y-%m-%d %H:%M}",
                f"{session.last_at:%Y-%m-%d %H:%M}",
                str(session.turns),
            )
        console.print(table)
    if index.answers:
        table = Table("at", "task", "answer", "session", title="Perception answers")
        for answer in index.answers:
            span = format_time(answer.start_s)
            if answer.end_s != answer.start_s:
                span += f"-{format_time(answer.end_s)}"
            table.add_row(span, answer.task, escape(answer.answer[:120]), answer.thread_id or "")
        console.print(table)


@app.command("show")
def show(case: CaseRefArg, as_json: JsonOpt = False) -> None:
    """Show one case: its facts, phase segments and instrument intervals (--json: all rows)."""
    with _library_errors():
        index = _store().get(case)
    if as_json:
        emit_json(index)
    else:
        _print_case(index)


@app.command("remove")
def remove(case: CaseRefArg, as_json: JsonOpt = False) -> None:
    """Take a case out of the library (its sessions and perception answers are kept)."""
    store = _store()
    with _library_errors():
        removed = store.remove(case)
    if as_json:
        emit_json(RemovedCase(library=store.path, removed=removed))
    else:
        console.print(f"removed {removed.id} ({removed.path}) from {store.path}", highlight=False)
