"""The planner's `query_library` tool: cohort questions across the indexed cases.

tools = make_library_tools()  # bind to the planner; RunContext.library must be set
"""

from __future__ import annotations

from typing import Any, Protocol

from langchain_core.tools import BaseTool, tool
from langgraph.prebuilt import ToolRuntime

from surgagent.tools.base import format_time
from surgagent.tools.errors import ToolInputError
from surgagent.tools.library.engine import CohortLibrary
from surgagent.tools.library.types import (
    CohortQuery,
    CohortStats,
    CohortTable,
    GroupBy,
    Measure,
    Statistic,
)

__all__ = ["describe_table", "make_library_tools"]

_ROWS_SHOWN = 30


class LibraryContext(Protocol):
    """What the cohort tool needs from the run context."""

    @property
    def library(self) -> CohortLibrary | None:
        """The case library, or None where none is open."""
        ...


_DESCRIPTION = (
    "Answer a question across the indexed case library: one row per case (its id and time "
    "range) with the measured value, and summary statistics (count, mean, median, min, max "
    "naming the case). Measures: phase durations and start times, phase order, when an "
    "instrument is first or last seen and how long it is visible, stored perception findings; "
    "filter by case ids, procedure, dates, a phase or instrument present, and a value range "
    "(seconds); group by phase, instrument, procedure or month for statistics per group. "
    "Cite rows as [case-id mm:ss]. Call it once per measure; compare results across calls "
    "case by case."
)


def _value(table: CohortTable, value: float | None) -> str:
    if value is None:
        return "-"
    if table.unit == "seconds":
        return f"{format_time(value)} ({value:.0f} s)"
    return f"{value:g}"


def _numbers(table: CohortTable, stats: CohortStats) -> str:
    return "; ".join(
        f"{name} {_value(table, getattr(stats, name))}"
        + (f" ({getattr(stats, name + '_case')})" if name in ("min", "max") else "")
        for name in ("mean", "median", "min", "max")
        if getattr(stats, name) is not None
    )


def describe_table(table: CohortTable) -> str:
    """The planner's view of a table: what was asked, the statistics, the rows (bounded)."""
    query = table.query
    subject = query.phase or query.instrument or query.finding or ""
    lines = [
        f"{query.measure}{' of ' + subject if subject else ''}: {len(table.rows)} rows over "
        f"{table.cases_considered} indexed cases that pass the filters."
    ]
    numbers = _numbers(table, table.stats)
    if numbers:
        lines.append("Statistics: " + numbers + ".")
    for group in table.groups:
        lines.append(f"{group.name}: {group.stats.count} rows; {_numbers(table, group.stats)}.")
    for row in table.rows[:_ROWS_SHOWN]:
        shown = row.text if row.text is not None else _value(table, row.value)
        label = f"{row.group}: " if row.group is not None else ""
        lines.append(f"- [{row.case_id} {row.span()}] {label}{shown}".replace(" ]", "]"))
    if len(table.rows) > _ROWS_SHOWN:
        lines.append(f"... {len(table.rows) - _ROWS_SHOWN} more rows: narrow the filters.")
    if not table.rows:
        lines.append("No case matches: say so, or widen the filters.")
    return "\n".join(lines)


@tool(
    "query_library",
    description=_DESCRIPTION,
    args_schema=CohortQuery,
    response_format="content_and_artifact",
)
def query_library_tool(
    runtime: ToolRuntime[LibraryContext, Any],
    measure: Measure,
    phase: str | None = None,
    instrument: str | None = None,
    finding: str | None = None,
    cases: list[str] | None = None,
    procedure: str | None = None,
    date_from: str | None = None,
    date_to: str | None = None,
    min_value: float | None = None,
    max_value: float | None = None,
    statistics: list[Statistic] | None = None,
    group_by: GroupBy | None = None,
) -> tuple[str, CohortTable]:
    """Run a cohort query on the run's library (the description above is the manual)."""
    library = runtime.context.library
    if library is None:
        raise ToolInputError("no case library is open in this session")
    args: dict[str, Any] = {
        "measure": measure,
        "phase": phase,
        "instrument": instrument,
        "finding": finding,
        "cases": cases,
        "procedure": procedure,
        "date_from": date_from,
        "date_to": date_to,
        "min_value": min_value,
        "max_value": max_value,
        "group_by": group_by,
    }
    if statistics is not None:
        args["statistics"] = statistics
    table = library.query(CohortQuery.model_validate(args))
    return describe_table(table), table


def make_library_tools() -> list[BaseTool]:
    """The cohort tool, for a run whose context has a library."""
    return [query_library_tool]
