"""Cohort questions over the case library: typed queries compiled to read-only SQL.

The library is the SQLite file `surgagent library add` fills (schema: `surgagent.library.schema`).
A `CohortQuery` picks a measure from a fixed set and filters; its SQL is put together from
fixed fragments, and every value the planner wrote reaches SQLite as a bound parameter. The
connection is opened read-only (``mode=ro`` and ``PRAGMA query_only``), so no query can change
the library, and holds one read transaction, so a query's name checks and rows come from one
snapshot while cases are added beside it.

    library = CohortLibrary(settings.data_dir / "library.sqlite")
    table = library.query(CohortQuery(measure="phase_duration", phase="ClippingCutting"))
"""

from __future__ import annotations

import sqlite3
import statistics
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from pydantic import BaseModel

from surgagent.tools.errors import BackendError, ToolInputError, suggest
from surgagent.tools.library.types import (
    CohortGroup,
    CohortQuery,
    CohortRow,
    CohortStats,
    CohortTable,
)

__all__ = ["CohortLibrary", "LibraryOverview"]

_TEXT_LIMIT = 200  # characters of a stored answer shown in a row

# The measure's rows: (case, group, start, end, value, text), grouped by case (and group)
# where it aggregates. {group} is one of `_GROUPS`. A phase or instrument bound as NULL
# means every one: the query then groups by it (`CohortQuery` checks).
_MEASURES: dict[str, str] = {
    "cases": "SELECT c.id, {group}, 0.0, c.duration, c.duration, NULL FROM cases c WHERE {where}",
    "phase_duration": (
        "SELECT c.id, {group}, MIN(p.start_s), MAX(p.end_s), SUM(p.end_s - p.start_s), NULL "
        "FROM cases c JOIN phase_segments p ON p.case_id = c.id "
        "AND p.phase = COALESCE(?, p.phase) WHERE {where} GROUP BY c.id, {group}"
    ),
    "phase_start": (
        "SELECT c.id, {group}, MIN(p.start_s), NULL, MIN(p.start_s), NULL "
        "FROM cases c JOIN phase_segments p ON p.case_id = c.id "
        "AND p.phase = COALESCE(?, p.phase) WHERE {where} GROUP BY c.id, {group}"
    ),
    "phase_order": (
        "SELECT c.id, {group}, p.start_s, p.end_s, NULL, p.phase "
        "FROM cases c JOIN phase_segments p ON p.case_id = c.id "
        "WHERE {where} ORDER BY c.id, p.start_s"
    ),
    "instrument_first_use": (
        "SELECT c.id, {group}, MIN(i.start_s), NULL, MIN(i.start_s), NULL "
        "FROM cases c JOIN instrument_intervals i ON i.case_id = c.id "
        "AND i.instrument = COALESCE(?, i.instrument) WHERE {where} GROUP BY c.id, {group}"
    ),
    "instrument_last_use": (
        "SELECT c.id, {group}, MAX(i.end_s), NULL, MAX(i.end_s), NULL "
        "FROM cases c JOIN instrument_intervals i ON i.case_id = c.id "
        "AND i.instrument = COALESCE(?, i.instrument) WHERE {where} GROUP BY c.id, {group}"
    ),
    "instrument_total_time": (
        "SELECT c.id, {group}, MIN(i.start_s), MAX(i.end_s), SUM(i.end_s - i.start_s), NULL "
        "FROM cases c JOIN instrument_intervals i ON i.case_id = c.id "
        "AND i.instrument = COALESCE(?, i.instrument) WHERE {where} GROUP BY c.id, {group}"
    ),
    "perception_finding": (
        "SELECT c.id, {group}, a.start_s, a.end_s, NULL, a.answer "
        "FROM cases c JOIN perception_answers a ON a.case_id = c.id "
        "AND a.answer LIKE ? ESCAPE '\\' "
        "WHERE {where} ORDER BY c.id, a.start_s"
    ),
}
# The group column of each `CohortQuery.group_by` (fixed SQL, never the planner's text).
_GROUPS: dict[str | None, str] = {
    None: "NULL",
    "procedure": "COALESCE(c.procedure, '(not recorded)')",
    "month": "COALESCE(substr(c.date, 1, 7), '(undated)')",
    "phase": "p.phase",
    "instrument": "i.instrument",
}


class LibraryOverview(BaseModel):
    """What the library holds, for the planner's system prompt and for checking names."""

    cases: int
    procedures: list[str]
    first_date: str | None
    last_date: str | None
    phases: list[str]
    instruments: list[str]
    case_ids: list[str]

    def describe(self) -> str:
        """A few lines for the planner: how many cases, of what, and the names it may use."""
        dates = f", dated {self.first_date} to {self.last_date}" if self.first_date else ", undated"
        shown = ", ".join(self.case_ids[:20]) + (" ..." if len(self.case_ids) > 20 else "")
        return "\n".join(
            [
                f"A case library of {self.cases} indexed cases{dates}.",
                f"Procedures: {', '.join(self.procedures) or '(not recorded)'}.",
                f"Phases: {', '.join(self.phases) or '(no phase segmenter ran)'}.",
                f"Instruments: {', '.join(self.instruments) or '(no detector ran)'}.",
                f"Case ids: {shown or '(none)'}.",
            ]
        )


class CohortLibrary:
    """Read-only cohort queries over one library file."""

    def __init__(self, path: Path) -> None:
        self.path = path

    @contextmanager
    def _connect(self) -> Iterator[sqlite3.Connection]:
        if not self.path.is_file():
            raise ToolInputError(
                "the case library is empty: add cases with `surgagent library add DIR` first"
            )
        try:
            connection = sqlite3.connect(f"{self.path.resolve().as_uri()}?mode=ro", uri=True)
        except sqlite3.Error as error:
            raise BackendError(
                f"the case library {self.path} cannot be opened: {error}", retryable=False
            ) from None
        try:
            connection.execute("PRAGMA query_only = ON")
            # One read transaction: every statement on this connection sees one snapshot,
            # even while `surgagent library add` commits cases beside it (WAL).
            connection.execute("BEGIN")
            yield connection
        except sqlite3.DatabaseError as error:
            raise BackendError(
                f"the case library {self.path} cannot be read ({error})", retryable=False
            ) from None
        finally:
            connection.close()

    def overview(self) -> LibraryOverview:
        """How many cases, procedures, dates, and the phase and instrument names it holds.

        Raises:
            ToolInputError: If there is no library file yet.
            BackendError: If the library file cannot be read.
        """
        with self._connect() as db:
            return _overview(db)

    def query(self, query: CohortQuery) -> CohortTable:
        """Run ``query``: one row per case (or stored answer), with summary statistics.

        Raises:
            ToolInputError: For a phase, instrument or case the library does not know (the
                message names the closest and lists the known ones), or an empty library.
            BackendError: If the library file cannot be read.
        """
        where, params = _filters(query)
        sql = _MEASURES[query.measure].format(where=where, group=_GROUPS[query.group_by])
        leading: list[Any] = []
        if query.measure.startswith("phase_") and query.measure != "phase_order":
            leading = [query.phase]
        elif query.measure.startswith("instrument_"):
            leading = [query.instrument]
        elif query.measure == "perception_finding":
            leading = [f"%{_escape_like(query.finding or '')}%"]
        with self._connect() as db:  # the names are checked against the rows queried
            known = _overview(db)
            _check_name("phase", query.phase, known.phases)
            _check_name("instrument", query.instrument, known.instruments)
            for case in query.cases or []:
                _check_name("case", case, known.case_ids)
            considered = db.execute(f"SELECT COUNT(*) FROM cases c WHERE {where}", params)
            count = int(considered.fetchone()[0])
            raw = db.execute(sql, [*leading, *params]).fetchall()
        rows = _phase_orders(raw) if query.measure == "phase_order" else [_row(r) for r in raw]
        rows = [row for row in rows if _within(row.value, query.min_value, query.max_value)]
        unit = "none" if query.measure in ("phase_order", "perception_finding") else "seconds"
        names = sorted({row.group for row in rows if row.group is not None})
        groups = [
            CohortGroup(name=n, stats=_stats([r for r in rows if r.group == n], query.statistics))
            for n in names
        ]
        return CohortTable(
            query=query,
            cases_considered=count,
            rows=rows,
            stats=_stats(rows, query.statistics),
            groups=groups,
            unit=unit,
        )


def _overview(db: sqlite3.Connection) -> LibraryOverview:
    ids = [r[0] for r in db.execute("SELECT id FROM cases WHERE status = 'indexed'")]
    procedures = _column(db, "SELECT DISTINCT procedure FROM cases WHERE status='indexed'")
    first, last = db.execute(
        "SELECT MIN(date), MAX(date) FROM cases WHERE status = 'indexed'"
    ).fetchone()
    return LibraryOverview(
        cases=len(ids),
        procedures=procedures,
        first_date=first,
        last_date=last,
        phases=_column(db, "SELECT DISTINCT phase FROM phase_segments"),
        instruments=_column(db, "SELECT DISTINCT instrument FROM instrument_intervals"),
        case_ids=sorted(ids),
    )


def _column(db: sqlite3.Connection, sql: str) -> list[str]:
    return sorted(str(row[0]) for row in db.execute(sql) if row[0] is not None)


def _check_name(what: str, value: str | None, known: Sequence[str]) -> None:
    if value is None or value in known:
        return
    listed = ", ".join(known[:30]) or "none"
    raise ToolInputError(
        f"the library has no {what} {value!r}.{suggest(value, known)} Known: {listed}."
    )


def _filters(query: CohortQuery) -> tuple[str, list[Any]]:
    """The WHERE clause over ``cases c`` and its parameters (values only ever bound)."""
    clauses = ["c.status = 'indexed'"]
    params: list[Any] = []
    if query.cases:
        clauses.append(f"c.id IN ({', '.join('?' for _ in query.cases)})")
        params += query.cases
    if query.procedure:
        clauses.append("c.procedure = ? COLLATE NOCASE")
        params.append(query.procedure)
    if query.date_from:
        clauses.append("c.date >= ?")
        params.append(query.date_from)
    if query.date_to:
        clauses.append("c.date <= ?")
        params.append(query.date_to)
    if query.phase and not query.measure.startswith("phase_"):
        clauses.append(
            "EXISTS (SELECT 1 FROM phase_segments f WHERE f.case_id = c.id AND f.phase = ?)"
        )
        params.append(query.phase)
    if query.instrument and not query.measure.startswith("instrument_"):
        clauses.append(
            "EXISTS (SELECT 1 FROM instrument_intervals f "
            "WHERE f.case_id = c.id AND f.instrument = ?)"
        )
        params.append(query.instrument)
    return " AND ".join(clauses), params


def _escape_like(text: str) -> str:
    return text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")


def _row(raw: Sequence[Any]) -> CohortRow:
    case, group, start, end, value, text = raw
    if text is not None and len(text) > _TEXT_LIMIT:
        text = text[: _TEXT_LIMIT - 1] + "…"
    return CohortRow(case_id=case, group=group, start_s=start, end_s=end, value=value, text=text)


def _phase_orders(raw: Sequence[Sequence[Any]]) -> list[CohortRow]:
    """One row per case: its phases in order, repeats of a phase in a row merged."""
    orders: dict[str, list[str]] = {}
    spans: dict[str, tuple[float, float]] = {}
    groups: dict[str, str | None] = {}
    for case, group, start, end, _, phase in raw:
        phases = orders.setdefault(case, [])
        if not phases or phases[-1] != phase:
            phases.append(phase)
        spans[case] = (spans.get(case, (start, end))[0], end)
        groups[case] = group
    return [
        CohortRow(
            case_id=c, group=groups[c], start_s=spans[c][0], end_s=spans[c][1], text=" > ".join(p)
        )
        for c, p in orders.items()
    ]


def _within(value: float | None, low: float | None, high: float | None) -> bool:
    if value is None:
        return low is None and high is None
    return (low is None or value >= low) and (high is None or value <= high)


def _stats(rows: Sequence[CohortRow], wanted: Sequence[str]) -> CohortStats:
    numbers = [(row.value, row.case_id) for row in rows if row.value is not None]
    stats = CohortStats(count=len(rows) if "count" in wanted else None)
    if not numbers:
        return stats
    values = [value for value, _ in numbers]
    if "mean" in wanted:
        stats.mean = statistics.fmean(values)
    if "median" in wanted:
        stats.median = statistics.median(values)
    if "min" in wanted:
        stats.min, stats.min_case = min(numbers)
    if "max" in wanted:
        stats.max, stats.max_case = max(numbers)
    return stats
