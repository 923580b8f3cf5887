"""The cohort tool's arguments and result: a question across the case library, as a table.

query = CohortQuery(measure="phase_duration", phase="CalotTriangleDissection")
table.rows[0]  # CohortRow(case_id="video01-1a2b3c4d", start_s=310.0, end_s=1205.0, value=895.0)
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, Field, model_validator

from surgagent.tools.base import Evidence, ToolResult, format_time

__all__ = [
    "CohortGroup",
    "CohortQuery",
    "CohortRow",
    "CohortStats",
    "CohortTable",
    "GroupBy",
    "Measure",
    "Statistic",
]

Measure = Literal[
    "cases",
    "phase_duration",
    "phase_start",
    "phase_order",
    "instrument_first_use",
    "instrument_last_use",
    "instrument_total_time",
    "perception_finding",
]
Statistic = Literal["count", "mean", "median", "min", "max"]
GroupBy = Literal["phase", "instrument", "procedure", "month"]

_NEEDS: dict[str, str] = {
    "phase_duration": "phase",
    "phase_start": "phase",
    "instrument_first_use": "instrument",
    "instrument_last_use": "instrument",
    "instrument_total_time": "instrument",
    "perception_finding": "finding",
}
_DATE = r"^\d{4}-\d{2}-\d{2}$"
_ALL_STATISTICS: tuple[Statistic, ...] = ("count", "mean", "median", "min", "max")


class CohortQuery(BaseModel):
    """Arguments of `query_library`: what to measure in each case, which cases, which numbers."""

    measure: Measure = Field(
        description="What to measure in each case: 'cases' (the matching cases and their "
        "durations), 'phase_duration' (seconds spent in `phase`), 'phase_start' (when `phase` "
        "first starts), 'phase_order' (the order of phases), 'instrument_first_use' / "
        "'instrument_last_use' (when `instrument` is first / last seen), "
        "'instrument_total_time' (seconds `instrument` is visible), 'perception_finding' "
        "(stored perception answers containing `finding`)."
    )
    phase: str | None = Field(
        None,
        description="A phase name as the library lists it (e.g. CalotTriangleDissection); "
        "needed for phase_duration and phase_start, a filter (cases that have it) otherwise.",
    )
    instrument: str | None = Field(
        None,
        description="An instrument name as the library lists it (e.g. Clipper); needed for the "
        "instrument_* measures, a filter (cases where it is seen) otherwise.",
    )
    finding: str | None = Field(
        None,
        min_length=2,
        description="Words to look for in stored perception answers (perception_finding).",
    )
    cases: list[str] | None = Field(
        None, description="Only these case ids (as the library lists them)."
    )
    procedure: str | None = Field(None, description="Only cases of this procedure.")
    date_from: str | None = Field(None, pattern=_DATE, description="Only cases on or after.")
    date_to: str | None = Field(None, pattern=_DATE, description="Only cases on or before.")
    min_value: float | None = Field(
        None, description="Keep rows whose value is at least this (seconds for times)."
    )
    max_value: float | None = Field(
        None, description="Keep rows whose value is at most this (seconds for times)."
    )
    statistics: list[Statistic] = Field(
        default_factory=lambda: list(_ALL_STATISTICS),
        description="Summary numbers over the rows' values.",
    )
    group_by: GroupBy | None = Field(
        None,
        description="Rows and statistics per group: 'phase' (phase_duration / phase_start of "
        "every phase, `phase` may be left out), 'instrument' (the instrument_* measures of "
        "every instrument, `instrument` may be left out), 'procedure', or 'month' (YYYY-MM of "
        "the case's date).",
    )

    @model_validator(mode="after")
    def _complete(self) -> CohortQuery:
        needed = _NEEDS.get(self.measure)
        if self.group_by in ("phase", "instrument"):
            if needed != self.group_by or self.measure == "phase_order":
                raise ValueError(
                    f"group_by {self.group_by!r} goes with the {self.group_by} measures "
                    f"({', '.join(m for m, n in _NEEDS.items() if n == self.group_by)})"
                )
            needed = None  # every phase (or instrument), one group each
        if needed and not getattr(self, needed):
            raise ValueError(f"measure {self.measure!r} needs `{needed}`")
        if self.date_from and self.date_to and self.date_from > self.date_to:
            raise ValueError(f"date_from {self.date_from} is after date_to {self.date_to}")
        return self


class CohortRow(BaseModel):
    """One case's (or one stored answer's) line of the table, with the time range it rests on."""

    case_id: str
    group: str | None = Field(None, description="the row's group, where the query groups")
    start_s: float | None = None
    end_s: float | None = None
    value: float | None = Field(None, description="the measured number (seconds for times)")
    text: str | None = Field(None, description="the measured text (phase order, an answer)")

    def span(self) -> str:
        """The row's times as ``mm:ss`` or ``mm:ss-mm:ss`` (empty when it has none)."""
        if self.start_s is None:
            return ""
        if self.end_s is None or self.end_s == self.start_s:
            return format_time(self.start_s)
        return f"{format_time(self.start_s)}-{format_time(self.end_s)}"


class CohortStats(BaseModel):
    """Summary numbers over the rows' values; the cases holding the extremes are named."""

    count: int | None = None
    mean: float | None = None
    median: float | None = None
    min: float | None = None
    min_case: str | None = None
    max: float | None = None
    max_case: str | None = None


class CohortGroup(BaseModel):
    """The statistics of one group of rows (a phase, instrument, procedure or month)."""

    name: str
    stats: CohortStats


class CohortTable(ToolResult):
    """The result of `query_library`: one row per case (or stored answer) and the statistics."""

    kind: Literal["cohort_table"] = "cohort_table"
    query: CohortQuery
    cases_considered: int = Field(description="indexed cases that passed the filters")
    rows: list[CohortRow]
    stats: CohortStats
    groups: list[CohortGroup] = Field(
        default_factory=list, description="per-group statistics, where the query groups"
    )
    unit: Literal["seconds", "none"] = "seconds"

    def evidence(self) -> list[Evidence]:
        """Each row as evidence naming its case and time range."""
        items = []
        for row in self.rows:
            what = row.text if row.text is not None else ""
            if row.value is not None and row.text is None:
                what = f"{row.value:g}"
            items.append(
                Evidence(
                    kind="tool_output",
                    tool="query_library",
                    summary=" ".join(
                        f"{row.case_id}: {self.query.measure} {row.group or ''} {what}".split()
                    ),
                    time=row.start_s,
                    end=row.end_s if row.end_s != row.start_s else None,
                    case_id=row.case_id,
                )
            )
        return items
