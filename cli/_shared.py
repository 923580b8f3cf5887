"""Pieces every ``surgagent`` command uses: the case cache, JSON output, a progress bar.

Also the option types several commands share (``--json``, the Cholec80 metric variant).

with progress_bar(not as_json, f"indexing {case.id}") as report:
index_case(case, cache, progress=report)
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from enum import StrEnum
from typing import TYPE_CHECKING, Annotated

import typer
from pydantic import BaseModel
from rich.console import Console

if TYPE_CHECKING:
    from surgagent.tools.cache import CaseCache

__all__ = [
    "CommandError",
    "JsonOpt",
    "VariantChoice",
    "case_cache",
    "emit_json",
    "err_console",
    "progress_bar",
]

err_console = Console(stderr=True)

JsonOpt = Annotated[bool, typer.Option("--json", help="Print the result as JSON.")]


class VariantChoice(StrEnum):
    """How the Cholec80 relaxed boundary is applied (see evals.phase_metrics)."""

    matlab = "matlab"
    intended = "intended"
    strict = "strict"


def case_cache() -> CaseCache:
    """The case cache the settings point at."""
    from surgagent.agent.settings import get_settings
    from surgagent.tools.cache import CaseCache

    return CaseCache(get_settings().cache_dir)


class CommandError(BaseModel):
    """What a ``--json`` command prints on stdout when it fails."""

    error: str
    kind: str


def emit_json(result: BaseModel) -> None:
    """Print a result model as JSON on stdout (the ``--json`` output of every command)."""
    sys.stdout.write(result.model_dump_json(indent=2) + "\n")


@contextmanager
def progress_bar(enabled: bool, label: str) -> Iterator[Callable[[int, int], None]]:
    """A progress bar on stderr, yielded as the ``(done, total)`` callback long work takes."""
    from rich.progress import Progress

    with Progress(console=err_console, disable=not enabled, transient=True) as bar:
        task = bar.add_task(label, total=None)
        yield lambda done, total: bar.update(task, completed=done, total=total)
