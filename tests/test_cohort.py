"""Cohort questions: `query_library` over a real library file, and `invoke(..., library=True)`.

The library is written through the library's own store (six cases with known phases,
instruments and one stored perception answer), then queried read-only; the planner is
scripted, so the numbers in the answers are checked exactly.
"""

from __future__ import annotations

import json
import sqlite3
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from langchain_core.messages import AIMessage, BaseMessage, ToolMessage

from surgagent.agent.api import LIBRARY, SurgicalAgent
from surgagent.agent.errors import UserError
from surgagent.agent.settings import get_settings
from surgagent.agent.testing.scripted import ScriptedChatModel, call, say
from surgagent.library.store import LibraryStore
from surgagent.library.types import CaseIndex, CaseRecord, InstrumentIntervalRow, PhaseSegmentRow
from surgagent.tools.errors import ToolInputError
from surgagent.tools.library.engine import CohortLibrary
from surgagent.tools.library.tools import describe_table
from surgagent.tools.library.types import CohortQuery
from surgagent.tools.results import CohortTable, read_result

# Calot's triangle dissection per case (s): 60-(60+d); the clipper first seen at 100 + 10 k.
CALOT = {"video01": 300.0, "video02": 420.0, "video03": 180.0, "video04": 600.0}
OTHER = {"video05": "2026-11-20", "video06": "2026-12-01"}


def _case(name: str, day: str, procedure: str = "cholecystectomy") -> CaseRecord:
    return CaseRecord(
        id=f"{name}-0000abcd",
        path=Path(f"/archive/{name}.mp4"),
        kind="video",
        stamp="1",
        procedure=procedure,
        date=day,
        duration=1800.0,
        fps=25.0,
        status="indexed",
        indexed_at=datetime.now(UTC),
    )


def _interval(instrument: str, start: float, end: float) -> InstrumentIntervalRow:
    return InstrumentIntervalRow(
        instrument=instrument,
        start_s=start,
        end_s=end,
        samples=int(end - start) + 1,
        mean_score=0.8,
        best_time_s=start,
        best_score=0.9,
        best_box=(0.1, 0.1, 0.4, 0.4),
    )


@pytest.fixture
def library() -> Path:
    path = get_settings().library_db
    store = LibraryStore(path)
    for k, (name, calot) in enumerate(sorted(CALOT.items())):
        phases = [
            PhaseSegmentRow(phase="Preparation", start_s=0, end_s=60, confidence=0.9),
            PhaseSegmentRow(
                phase="CalotTriangleDissection", start_s=60, end_s=60 + calot, confidence=0.8
            ),
            PhaseSegmentRow(
                phase="ClippingCutting", start_s=60 + calot, end_s=900, confidence=0.85
            ),
        ]
        clipper = 100.0 + 10 * k
        instruments = [
            _interval("Grasper", 0, 1790),
            _interval("Clipper", clipper, clipper + 30),
            _interval("Clipper", 800, 830),
        ]
        store.save(
            CaseIndex(
                case=_case(name, f"2026-11-0{k + 1}"),
                phases=phases,
                instruments=instruments,
            )
        )
    for name, day in OTHER.items():  # robotic cases: no Calot phase, no clipper
        store.save(
            CaseIndex(
                case=_case(name, day, procedure="prostatectomy"),
                phases=[PhaseSegmentRow(phase="Preparation", start_s=0, end_s=120)],
                instruments=[_interval("Grasper", 5, 600)],
            )
        )
    with sqlite3.connect(path) as db:  # a perception answer a review stored earlier
        db.execute(
            "INSERT INTO perception_answers (case_id, start_s, end_s, task, question, answer, "
            "created_at) VALUES (?, ?, ?, ?, ?, ?, ?)",
            (
                "video02-0000abcd",
                410.0,
                420.0,
                "cvs",
                "CVS?",
                "Criterion 1: Yes; 100% of the triangle cleared",
                "2026-11-02T10:00:00",
            ),
        )
    return path


def test_phase_durations_across_cases(library: Path) -> None:
    table = CohortLibrary(library).query(
        CohortQuery(measure="phase_duration", phase="CalotTriangleDissection")
    )
    assert table.cases_considered == 6
    assert {row.case_id.split("-")[0]: row.value for row in table.rows} == CALOT
    assert table.stats.count == 4 and table.stats.mean == 375.0 and table.stats.median == 360.0
    assert (table.stats.min, table.stats.min_case) == (180.0, "video03-0000abcd")
    assert (table.stats.max, table.stats.max_case) == (600.0, "video04-0000abcd")
    row = next(r for r in table.rows if r.case_id.startswith("video01"))
    assert (row.start_s, row.end_s, row.span()) == (60.0, 360.0, "01:00-06:00")
    # Longer than 5 minutes, in November, cholecystectomies only.
    long = CohortLibrary(library).query(
        CohortQuery(
            measure="phase_duration",
            phase="CalotTriangleDissection",
            min_value=300.0,
            procedure="Cholecystectomy",
            date_from="2026-11-02",
            date_to="2026-11-30",
        )
    )
    assert [row.case_id for row in long.rows] == ["video02-0000abcd", "video04-0000abcd"]
    assert long.cases_considered == 3


def test_instrument_measures_phase_order_and_findings(library: Path) -> None:
    cohort = CohortLibrary(library)
    first = cohort.query(CohortQuery(measure="instrument_first_use", instrument="Clipper"))
    assert [(r.case_id[:7], r.value) for r in first.rows] == [
        ("video01", 100.0),
        ("video02", 110.0),
        ("video03", 120.0),
        ("video04", 130.0),
    ]
    total = cohort.query(CohortQuery(measure="instrument_total_time", instrument="Clipper"))
    assert {r.value for r in total.rows} == {60.0}
    last = cohort.query(CohortQuery(measure="instrument_last_use", instrument="Grasper"))
    assert sorted(r.value for r in last.rows if r.value is not None) == [600.0] * 2 + [1790.0] * 4
    order = cohort.query(CohortQuery(measure="phase_order", cases=["video01-0000abcd"]))
    (row,) = order.rows
    assert row.text == "Preparation > CalotTriangleDissection > ClippingCutting"
    # A phase as a filter: cases that have it; the robotic cases drop out.
    cases = cohort.query(CohortQuery(measure="cases", phase="CalotTriangleDissection"))
    assert len(cases.rows) == 4 and cases.cases_considered == 4
    found = cohort.query(CohortQuery(measure="perception_finding", finding="100% of"))
    assert [(r.case_id, r.span()) for r in found.rows] == [("video02-0000abcd", "06:50-07:00")]
    # % and _ are literal characters, not LIKE wildcards.
    assert not cohort.query(CohortQuery(measure="perception_finding", finding="1_0")).rows


def test_rows_and_statistics_per_group(library: Path) -> None:
    cohort = CohortLibrary(library)
    phases = cohort.query(CohortQuery(measure="phase_duration", group_by="phase"))
    by_phase = {g.name: g.stats for g in phases.groups}
    assert sorted(by_phase) == ["CalotTriangleDissection", "ClippingCutting", "Preparation"]
    assert (by_phase["Preparation"].count, by_phase["Preparation"].mean) == (6, 80.0)
    assert (by_phase["CalotTriangleDissection"].median, phases.stats.count) == (360.0, 14)
    calot = [r for r in phases.rows if r.group == "CalotTriangleDissection"]
    assert {r.case_id.split("-")[0]: r.value for r in calot} == CALOT
    tools = cohort.query(CohortQuery(measure="instrument_total_time", group_by="instrument"))
    by_tool = {g.name: (g.stats.count, g.stats.min, g.stats.max) for g in tools.groups}
    assert by_tool == {"Clipper": (4, 60.0, 60.0), "Grasper": (6, 595.0, 1790.0)}
    procedures = cohort.query(CohortQuery(measure="cases", group_by="procedure"))
    assert [(g.name, g.stats.count) for g in procedures.groups] == [
        ("cholecystectomy", 4),
        ("prostatectomy", 2),
    ]
    months = cohort.query(CohortQuery(measure="phase_start", phase="Preparation", group_by="month"))
    assert [(g.name, g.stats.count) for g in months.groups] == [("2026-11", 5), ("2026-12", 1)]
    shown = describe_table(tools)
    assert "Clipper: 4 rows; mean 01:00 (60 s)" in shown
    assert "- [video01-0000abcd 01:40-13:50] Clipper: 01:00 (60 s)" in shown
    for wrong in (
        {"measure": "instrument_first_use", "group_by": "phase"},
        {"measure": "phase_order", "group_by": "phase"},
        {"measure": "cases", "group_by": "instrument"},
    ):
        with pytest.raises(ValueError, match="goes with the"):
            CohortQuery.model_validate(wrong)


def test_bad_arguments_are_tool_errors_and_nothing_reaches_sql(library: Path) -> None:
    cohort = CohortLibrary(library)
    with pytest.raises(ToolInputError, match="no phase 'CalotTriangle'.*CalotTriangleDissection"):
        cohort.query(CohortQuery(measure="phase_duration", phase="CalotTriangle"))
    with pytest.raises(ToolInputError, match="no case"):
        cohort.query(CohortQuery(measure="cases", cases=["video01' OR '1'='1"]))
    with pytest.raises(ValueError, match="needs `instrument`"):
        CohortQuery(measure="instrument_first_use")
    with pytest.raises(ValueError, match="pattern"):
        CohortQuery(measure="cases", date_from="2026-11-01; DROP TABLE cases")
    hostile = "x'); DELETE FROM cases; --"
    assert not cohort.query(CohortQuery(measure="perception_finding", finding=hostile)).rows
    assert cohort.overview().cases == 6  # nothing was changed
    with sqlite3.connect(library) as db:
        assert db.execute("SELECT COUNT(*) FROM cases").fetchone()[0] == 6
    empty = CohortLibrary(library.with_name("none.sqlite"))
    with pytest.raises(ToolInputError, match="surgagent library add"):
        empty.overview()


def test_cohort_question_through_the_agent(library: Path) -> None:
    def answer(messages: list[BaseMessage]) -> AIMessage:
        table = read_result(messages[-1])
        assert isinstance(table, CohortTable), messages[-1].text
        top = table.rows[-1]
        return say(
            f"Calot's triangle dissection took {table.stats.mean:.0f} s on average over "
            f"{table.stats.count} cases; longest in {top.case_id} [{top.case_id} {top.span()}]."
        )

    agent = SurgicalAgent.from_settings(
        planner_model=ScriptedChatModel(
            replies=[
                call(
                    "query_library",
                    measure="phase_duration",
                    phase="CalotTriangleDissection",
                    statistics=["count", "mean", "max"],
                ),
                answer,
            ]
        ),
        engines={},
    )
    result = agent.invoke(
        "How long did Calot's triangle dissection take across cases?",
        library=True,
        thread_id="cohort-1",
    )
    assert result.status == "answered" and result.case_id == LIBRARY
    assert result.answer == (
        "Calot's triangle dissection took 375 s on average over 4 cases; longest in "
        "video04-0000abcd [video04-0000abcd 01:00-11:00]."
    )
    cited = {(e.case_id, e.time, e.end) for e in result.evidence}
    assert ("video04-0000abcd", 60.0, 660.0) in cited
    assert any(step.tool == "query_library" for step in result.trace)
    tool_text = next(m for m in agent.history("cohort-1") if isinstance(m, ToolMessage)).text
    assert "mean 06:15 (375 s)" in tool_text and "[video03-0000abcd 01:00-04:00]" in tool_text
    # The planner saw the library described, not a case.
    system = agent.planner.seen[0][0].text  # type: ignore[attr-defined]
    assert "A case library of 6 indexed cases, dated 2026-11-01 to 2026-12-01" in system
    assert "CalotTriangleDissection" in system
    # A library session stays one; a case session cannot turn into one.
    with pytest.raises(UserError, match="across the case library"):
        agent.invoke("and video01?", case="/archive/video01.mp4", thread_id="cohort-1")
    with pytest.raises(UserError, match="names no case"):
        agent.invoke("Q?", case="x.mp4", library=True)


def test_a_query_reads_one_snapshot_while_a_case_is_added(
    library: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from surgagent.tools.library import engine

    checked = engine._check_name
    added: list[str] = []

    def check_then_add(what: str, value: str | None, known: list[str]) -> None:
        checked(what, value, known)
        if not added:  # another process indexes a case between the checks and the rows
            added.append("video07")
            store = LibraryStore(library)
            store.save(CaseIndex(case=_case("video07", "2026-11-09"), phases=[]))

    monkeypatch.setattr(engine, "_check_name", check_then_add)
    table = CohortLibrary(library).query(CohortQuery(measure="cases"))
    assert added and table.cases_considered == 6 and len(table.rows) == 6
    assert CohortLibrary(library).overview().cases == 7  # the next query sees it


def test_a_library_run_reads_the_overview_once_whatever_its_steps(
    library: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    reads: list[int] = []
    overview = CohortLibrary.overview

    def counted(self: CohortLibrary) -> Any:
        reads.append(1)
        return overview(self)

    monkeypatch.setattr(CohortLibrary, "overview", counted)
    steps = [
        call("query_library", measure="cases"),
        call("query_library", measure="phase_order"),
        call("query_library", measure="instrument_first_use", instrument="Clipper"),
        call("query_library", measure="phase_duration", phase="Preparation"),
        say("Six cases."),
    ]
    planner = ScriptedChatModel(replies=steps)
    agent = SurgicalAgent.from_settings(planner_model=planner, engines={}, step_budget=8)
    result = agent.invoke("How many cases?", library=True)
    assert result.status == "answered" and len(planner.seen) == 5
    assert all("A case library of 6 indexed cases" in seen[0].text for seen in planner.seen)
    assert len(reads) == 1  # the check that the library has cases, and the planner's prompt


def test_a_library_question_without_a_library_is_one_sentence() -> None:
    agent = SurgicalAgent.from_settings(
        planner_model=ScriptedChatModel(replies=["never"]), engines={}
    )
    with pytest.raises(UserError, match="the case library is empty: add cases with"):
        agent.invoke("How many cases?", library=True)


def test_surgagent_cohort_answers_from_the_library(library: Path) -> None:
    from surgagent.agent.testing.openai_server import ScriptedOpenAIServer, ScriptedReply
    from tests.fixtures.cli import openai_env, run_cli

    script = [
        ScriptedReply(
            reasoning="Measure the clipper's first use.",
            tool_calls=[
                ("query_library", {"measure": "instrument_first_use", "instrument": "Clipper"})
            ],
        ),
        ScriptedReply(
            content="The clipper came first in video01-0000abcd [video01-0000abcd 01:40]."
        ),
    ]
    with ScriptedOpenAIServer(script) as server:
        env = {**openai_env(server), "SURGAGENT_KNOWLEDGE__ENABLED": "false"}
        done = run_cli("cohort", "When is the clipper first used in each case?", "--json", env=env)
    assert done.returncode == 0, done.stderr
    result = json.loads(done.stdout)
    assert result["case_id"] == "library" and result["warnings"] == []
    assert {(e["case_id"], e["time"]) for e in result["evidence"]} == {
        ("video01-0000abcd", 100.0),
        ("video02-0000abcd", 110.0),
        ("video03-0000abcd", 120.0),
        ("video04-0000abcd", 130.0),
    }
    sent = server.requests[1]["messages"]
    assert "[video01-0000abcd 01:40] 01:40 (100 s)" in sent[-1]["content"]
