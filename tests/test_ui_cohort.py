"""The review app's cohort view and report download, without a browser.

A library of three cases (the sample video under three names, with known phases and
instruments) is written with the library's own store; the app reads it through the cohort
tool's engine. Who sees it: the local user of a server without a login, or everyone who logs
in when the server shares it (``serve --library``); nobody else, and never a server path.
"""

from __future__ import annotations

import re
import shutil
import zipfile
from datetime import UTC, datetime
from pathlib import Path

import pytest

from surgagent.agent.settings import get_settings
from surgagent.agent.testing.openai_server import ScriptedOpenAIServer
from surgagent.library.store import LibraryStore
from surgagent.library.types import CaseIndex, CaseRecord, InstrumentIntervalRow, PhaseSegmentRow
from surgagent.tools.library.types import (
    CohortGroup,
    CohortQuery,
    CohortRow,
    CohortStats,
    CohortTable,
)
from surgagent.ui import views
from surgagent.ui.app import LIBRARY_KEY, NotYours, ReviewServer
from surgagent.ui.auth import Access
from tests.fixtures.cli import REPO

SAMPLE = REPO / "examples" / "sample_case" / "sample_lapchole.mp4"
# (case id, seconds of CalotTriangleDissection from its start, Clipper first seen)
CASES = [("alpha-00000001", 4.0, 9.0), ("beta-00000002", 6.0, 11.0), ("gamma-00000003", 9.0, 13.0)]


@pytest.fixture
def library(isolated_settings: Path, tmp_path: Path) -> Path:
    """Three indexed cases in the data dir's library; their videos live outside it."""
    archive = tmp_path / "archive"
    archive.mkdir()
    store = LibraryStore(get_settings().library_db)
    for case_id, calot, clipper in CASES:
        video = archive / f"{case_id.split('-')[0]}.mp4"
        shutil.copyfile(SAMPLE, video)
        store.save(
            CaseIndex(
                case=CaseRecord(
                    id=case_id,
                    path=video,
                    kind="video",
                    stamp="1:1",
                    status="indexed",
                    indexed_at=datetime.now(UTC),
                    duration=20.0,
                ),
                phases=[
                    PhaseSegmentRow(phase="Preparation", start_s=0, end_s=2),
                    PhaseSegmentRow(phase="CalotTriangleDissection", start_s=2, end_s=2 + calot),
                ],
                instruments=[
                    InstrumentIntervalRow(
                        instrument="Clipper",
                        start_s=clipper,
                        end_s=clipper + 2,
                        samples=3,
                        mean_score=0.8,
                        best_time_s=clipper,
                        best_score=0.9,
                        best_box=(0.1, 0.1, 0.3, 0.3),
                    )
                ],
            )
        )
    return archive


def test_the_cohort_view_plots_every_case_with_a_click_that_opens_it(library: Path) -> None:
    server = ReviewServer(get_settings())  # no login: the library is this user's
    durations = server.cohort("phase duration")
    calot = [r for r in durations.rows if r.group == "CalotTriangleDissection"]
    assert [(r.case_id, r.value, r.start_s) for r in calot] == [
        (case_id, seconds, 2.0) for case_id, seconds, _ in CASES
    ]
    plot = views.cohort_plot(durations)
    points = re.findall(r'<circle class="pt"[^>]*data-case="([^"]+)" data-seek="([^"]+)"', plot)
    assert sorted(points) == sorted(
        [(case_id, "2.00") for case_id, *_ in CASES] + [(c, "0.00") for c, *_ in CASES]
    )
    table = views.cohort_table(durations, what="phase duration")
    assert table.count("<tr data-case=") == 6 and "median 00:06" in table
    first_use = server.cohort("instrument first use")
    assert [(r.group, r.case_id, r.start_s) for r in first_use.rows] == [
        ("Clipper", c, t) for c, _, t in CASES
    ]
    # A click opens the case: its video is served from Gradio's folder, never the archive.
    case = server.open(LIBRARY_KEY + "beta-00000002", "local")
    shown = server.media(case, LIBRARY_KEY + "beta-00000002")
    assert shown is not None and not Path(shown).is_relative_to(library)
    assert Path(shown).read_bytes() == SAMPLE.read_bytes()


def test_library_answers_link_only_the_cases_it_knows() -> None:
    text = "Longest in [beta-00000002 00:02-00:08]; [nothing-1 00:03] and [00:04] stay text."
    shown = views.cohort_answer_markdown(text, ["beta-00000002"])
    assert '<a class="seek" href="#case=beta-00000002@2.00">' in shown
    assert "[nothing-1 00:03]" in shown and 'href="#case=nothing' not in shown
    assert "[00:04]" in shown


def test_names_in_the_cohort_view_are_escaped() -> None:
    stats = CohortStats(count=1, median=3.0, min=3.0, max=3.0, min_case="x", max_case="x")
    table = CohortTable(
        query=CohortQuery(measure="cases", group_by="procedure"),
        cases_considered=1,
        rows=[
            CohortRow(
                case_id='x"><script>alert(1)</script>', group="<b>phase</b>", start_s=0, value=3.0
            )
        ],
        stats=stats,
        groups=[CohortGroup(name="<b>phase</b>", stats=stats)],
    )
    for html in (views.cohort_plot(table), views.cohort_table(table, what="<i>")):
        assert "<script>" not in html and "<b>phase" not in html and "&lt;script&gt;" in html


def test_with_a_login_the_library_is_shared_only_when_asked(library: Path) -> None:
    closed = ReviewServer(get_settings(), access=Access(token="team-secret"))
    assert not closed.library_shared and closed.library_ids() == []
    with pytest.raises(NotYours):
        closed.cohort("phase duration")
    with pytest.raises(NotYours, match="shares no library case") as refused:
        closed.open(LIBRARY_KEY + "alpha-00000001", "team")
    assert str(library) not in str(refused.value)
    shared = ReviewServer(get_settings(), access=Access(token="team-secret"), library=True)
    assert shared.library_ids() == [c for c, *_ in CASES]
    # Only exact ids of indexed cases open: no path, prefix or other file.
    for asked in (str(library / "alpha.mp4"), "alpha", "../../etc/passwd", "alpha-00000001/"):
        with pytest.raises(NotYours):
            shared.open(LIBRARY_KEY + asked, "team")


def test_a_report_download_names_no_server_path(library: Path) -> None:
    with ScriptedOpenAIServer(["never asked"]) as model:
        settings = get_settings(
            planner={"backend": "openai", "base_url": model.base_url, "model": "Qwen/Qwen3.5-9B"},
            perception={"enabled": False},
            knowledge={"enabled": False},
        )
        server = ReviewServer(settings)
        key = LIBRARY_KEY + "alpha-00000001"
        made = {form: server.report(key, None, "local", form) for form in ("html", "pdf", "md")}
    page = made["html"].read_text(encoding="utf-8")
    assert "alpha.mp4#t=" in page or "alpha.mp4" in page
    for private in (str(library), str(settings.data_dir), str(settings.cache_dir)):
        assert private not in page
    assert made["pdf"].read_bytes().startswith(b"%PDF")
    with zipfile.ZipFile(made["md"]) as archive:
        names = archive.namelist()
        markdown = archive.read(f"{made['md'].stem}.md").decode()
    assert names[0] == f"{made['md'].stem}.md" and str(library) not in markdown
    for file in made.values():  # handed to the browser from Gradio's folder only
        assert not file.is_relative_to(library)
