"""``surgagent session export``: a saved session's audit trail, as JSON lines or markdown.

The records are `surgagent.agent.audit`'s; this module only writes them.

surgagent session export review-1 --format md --out review-1.md
surgagent session export review-1 | jq 'select(.type == "tool_call")'
"""

from __future__ import annotations

from enum import StrEnum
from pathlib import Path
from typing import Annotated

import typer

__all__ = ["app"]

app = typer.Typer(help="Export saved chat sessions.", no_args_is_help=True)


class ExportFormat(StrEnum):
    """Formats of ``session export``."""

    jsonl = "jsonl"
    md = "md"


@app.command("export")
def export(
    session: Annotated[str, typer.Argument(help="The session id (chat --session).")],
    format: Annotated[
        ExportFormat, typer.Option("--format", "-f", help="jsonl (one record a line) or md.")
    ] = ExportFormat.jsonl,
    out: Annotated[Path | None, typer.Option("--out", "-o", help="Write here, not stdout.")] = None,
) -> None:
    """Export a session's audit trail: turns, tool calls, models, weights and prompt hashes.

    Example: surgagent session export review-1 --format md --out review-1.md
    """
    import sys

    from surgagent.agent.api import SurgicalAgent
    from surgagent.agent.audit import build_export, to_markdown
    from surgagent.agent.settings import get_settings

    agent = SurgicalAgent.from_settings(get_settings(), sessions="sqlite", engines={}, check=False)
    trail = build_export(agent, session)
    if format is ExportFormat.md:
        text = to_markdown(trail)
    else:
        text = "".join(record.model_dump_json() + "\n" for record in trail.records())
    if out is None:
        sys.stdout.write(text)
        return
    from surgagent.agent.errors import UserError
    from surgagent.tools.cache import atomic_write_text

    try:
        atomic_write_text(out, text)
    except OSError as error:
        reason = error.strerror or str(error)
        raise UserError(f"cannot write {out} ({reason}); choose another --out file") from error
