"""``surgagent knowledge``: the guideline store: add documents, search, list, remove, rebuild.

surgagent knowledge add protocols/*.pdf notes.md
surgagent knowledge search "bail-out options for a frozen hepatocystic triangle" -k 5 --json
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from pydantic import BaseModel
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from surgagent.agent.errors import UserError
from surgagent.cli._shared import JsonOpt, emit_json, err_console, progress_bar
from surgagent.knowledge.errors import UnknownNameError
from surgagent.knowledge.records import DocumentRecord, Hit
from surgagent.knowledge.store import KnowledgeStore

__all__ = ["app"]

console = Console()

app = typer.Typer(
    help="The guideline store the planner cites: curated guidelines plus your documents.\n\n"
    "Examples:\n\n"
    "  surgagent knowledge add hospital_protocol.pdf notes/*.md\n\n"
    '  surgagent knowledge search "What does C3 require?" -k 3\n\n'
    "  surgagent knowledge list\n\n"
    "  surgagent knowledge remove hospital_protocol.pdf\n\n"
    "  surgagent knowledge rebuild",
    no_args_is_help=True,
    rich_markup_mode="rich",
)


class SearchOutput(BaseModel):
    """``knowledge search --json``."""

    query: str
    hits: list[Hit]


class DocumentsOutput(BaseModel):
    """``knowledge list --json`` and ``knowledge remove --json``."""

    documents: list[DocumentRecord]
    passages: int


def _store() -> KnowledgeStore:
    from surgagent.agent.api import open_knowledge_store
    from surgagent.agent.settings import get_settings

    return open_knowledge_store(get_settings())


def _ready_store(show_progress: bool) -> KnowledgeStore:
    """The store, built first where it is missing or stale (with a progress bar)."""
    store = _store()
    reason = store.stale_reason()
    if reason is not None:
        err_console.print(f"building the knowledge store ({reason})")
        with progress_bar(show_progress, "embedding passages") as report:
            store.ensure_current(progress=report)
    return store


@app.command()
def add(
    paths: Annotated[list[Path], typer.Argument(help="Markdown, text, HTML or PDF files.")],
    as_json: JsonOpt = False,
) -> None:
    """Add documents (a changed file replaces its earlier chunks); each is cited by file."""
    store = _ready_store(not as_json)
    with progress_bar(not as_json, "adding documents") as report:
        result = store.add_documents(paths, progress=report)
    if as_json:
        emit_json(result)
    else:
        for path, chunks in result.added.items():
            console.print(f"added    {path} ({chunks} chunks)")
        for path, chunks in result.replaced.items():
            console.print(f"replaced {path} ({chunks} chunks)")
        for path in result.unchanged:
            console.print(f"unchanged {path}")
    if result.failed:
        raise UserError("; ".join(result.failed.values()))


@app.command("list")
def list_documents(as_json: JsonOpt = False) -> None:
    """List the documents you added (the curated guidelines are always there)."""
    store = _ready_store(not as_json)
    output = DocumentsOutput(documents=store.documents(), passages=store.count())
    if as_json:
        emit_json(output)
        return
    table = Table("document", "chunks", "added", "path")
    for record in output.documents:
        table.add_row(record.name, str(len(record.chunks)), record.added, record.path)
    console.print(table)
    console.print(
        f"{len(output.documents)} documents; {output.passages} passages with the curated corpus."
    )


@app.command()
def remove(
    names: Annotated[list[str], typer.Argument(help="File names, paths or document ids.")],
    as_json: JsonOpt = False,
) -> None:
    """Remove documents you added."""
    store = _ready_store(not as_json)
    gone = store.remove_documents(names)
    if as_json:
        emit_json(DocumentsOutput(documents=gone, passages=store.count()))
        return
    for record in gone:
        console.print(f"removed {record.name} ({len(record.chunks)} chunks)")


@app.command()
def rebuild(as_json: JsonOpt = False) -> None:
    """Embed everything again (after changing the embedding model, or to repair the store)."""
    store = _store()
    with progress_bar(not as_json, "embedding passages") as report:
        manifest = store.rebuild(progress=report)
    if as_json:
        emit_json(manifest)
    else:
        console.print(
            f"built generation {manifest.generation}: {manifest.passages} passages, "
            f"{len(manifest.documents)} documents, model {manifest.embedding_model}"
        )


@app.command()
def search(
    query: Annotated[str, typer.Argument(help="What to look for.")],
    k: Annotated[int, typer.Option("-k", "--k", min=1, max=50, help="Passages to show.")] = 5,
    topic: Annotated[str | None, typer.Option(help="Only this topic (cvs, bailout, ...).")] = None,
    source: Annotated[str | None, typer.Option(help="Only sources containing this.")] = None,
    as_json: JsonOpt = False,
) -> None:
    """Search the store as the planner does (dense and keyword ranks fused)."""
    store = _ready_store(not as_json)
    try:
        hits = store.search(query, k, topic=topic, source=source)
    except UnknownNameError as error:
        raise UserError(str(error)) from error
    if as_json:
        emit_json(SearchOutput(query=query, hits=hits))
        return
    for hit in hits:
        passage = hit.passage
        where = ", ".join(str(x) for x in (passage.source, passage.year, passage.section) if x)
        head = escape(f"{hit.rank}. [{passage.id}]")
        console.print(f"[bold]{head}[/bold] {escape(passage.title)}", highlight=False)
        console.print(f"   [dim]{escape(where)} | score {hit.score:.4f}[/dim]", highlight=False)
        excerpt = passage.text[:300] + ("..." if len(passage.text) > 300 else "")
        console.print(f"   {excerpt}\n", highlight=False, markup=False)
