"""The case library: its SQLite store, finding cases, and ``surgagent library`` end to end.

The slow tests build an archive of six Cholec80-named cases with known phases and
instruments (the tool-chain test's bordered-phase videos: a Hook while the triangle is
dissected, a Clipper while clipping, a Grasper throughout) plus one corrupt file, index it
with the real engines (the session's tiny detector and a phase segmenter trained here), kill
the indexer with SIGKILL midway, resume, and check that finished cases were not redone and
that the stored segments and intervals are the ones the videos show; once on the local
backend and once on a local Ray instance.
"""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import sys
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import pytest
from typer.testing import CliRunner

from surgagent.cli.main import app
from surgagent.indexing.discovery import discover_cases, source_stamp
from surgagent.indexing.types import CaseTask, IndexConfig, IndexSummary
from surgagent.library.errors import LibraryError
from surgagent.library.schema import SCHEMA_VERSION
from surgagent.library.store import LibraryStore
from surgagent.library.types import (
    CaseIndex,
    CaseRecord,
    DetectionSecond,
    InstrumentIntervalRow,
    PhaseSegmentRow,
)
from surgagent.tools.cache import CaseCache
from surgagent.tools.errors import ConfigError
from tests.fixtures.cli import REPO, run_cli
from tests.fixtures.engines import IMGSZ, SIZE, TinyDetector
from tests.fixtures.videos import corrupt_copy, write_frame_folder, write_video

TABLES = {
    "cases",
    "phase_segments",
    "instrument_intervals",
    "detections_per_second",
    "perception_answers",
    "sessions",
}


def record(case_id: str, path: Path, **extra: object) -> CaseRecord:
    fields: dict[str, object] = {
        "id": case_id,
        "path": path,
        "kind": "video",
        "stamp": "1:1",
        "status": "indexed",
        "indexed_at": datetime.now(UTC),
        "duration": 30.0,
        **extra,
    }
    return CaseRecord.model_validate(fields)


def sample_index(case_id: str = "video01-1a2b3c4d", path: Path = Path("/data/video01.mp4")):
    return CaseIndex(
        case=record(case_id, path, procedure="cholecystectomy", date="2024-03-05"),
        phases=[
            PhaseSegmentRow(phase="Preparation", start_s=0, end_s=12, confidence=0.9),
            PhaseSegmentRow(phase="CalotTriangleDissection", start_s=12, end_s=30, confidence=0.8),
        ],
        instruments=[
            InstrumentIntervalRow(
                instrument="Grasper",
                start_s=0,
                end_s=29,
                samples=30,
                mean_score=0.8,
                best_time_s=4,
                best_score=0.95,
                best_box=(0.1, 0.2, 0.3, 0.4),
            )
        ],
        detections=[DetectionSecond(second=0, instrument="Grasper", count=1, max_score=0.9)],
    )


# -- the store ------------------------------------------------------------------------------


def test_a_new_library_has_the_documented_tables_in_wal_mode(tmp_path: Path) -> None:
    store = LibraryStore(tmp_path / "library.sqlite")
    assert store.migrate() == SCHEMA_VERSION
    with sqlite3.connect(store.path) as db:
        names = {row[0] for row in db.execute("SELECT name FROM sqlite_master WHERE type='table'")}
        assert db.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION
        assert db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    assert names == TABLES
    assert store.cases() == []


def test_migrations_upgrade_an_older_library_and_keep_its_rows(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import surgagent.library.store as store_module

    store = LibraryStore(tmp_path / "library.sqlite")
    store.save(sample_index())
    step = ("ALTER TABLE cases ADD COLUMN surgeon TEXT",)
    monkeypatch.setattr(store_module, "MIGRATIONS", (*store_module.MIGRATIONS, step))
    monkeypatch.setattr(store_module, "SCHEMA_VERSION", SCHEMA_VERSION + 1)
    assert LibraryStore(store.path).migrate() == SCHEMA_VERSION + 1
    with sqlite3.connect(store.path) as db:
        assert db.execute("SELECT id, surgeon FROM cases").fetchall() == [
            ("video01-1a2b3c4d", None)
        ]


def test_a_library_from_a_newer_version_or_not_a_library_is_refused(tmp_path: Path) -> None:
    newer = tmp_path / "newer.sqlite"
    with sqlite3.connect(newer) as db:
        db.execute("PRAGMA user_version = 99")
    with pytest.raises(LibraryError, match="newer than this SurgAgent knows.*upgrade"):
        LibraryStore(newer).cases()
    junk = tmp_path / "junk.sqlite"
    junk.write_bytes(b"these are not the bytes of a database" * 100)
    with pytest.raises(LibraryError, match="is not a case library"):
        LibraryStore(junk).cases()


def test_saving_a_case_again_replaces_all_its_rows(tmp_path: Path) -> None:
    store = LibraryStore(tmp_path / "library.sqlite")
    first = sample_index()
    store.save(first)
    assert store.get("video01-1a2b3c4d") == first
    assert store.get("video01").case.id == "video01-1a2b3c4d"  # a unique start of an id
    again = first.model_copy(update={"phases": first.phases[:1], "detections": []})
    store.save(again)
    assert store.get("/data/video01.mp4") == again
    with sqlite3.connect(store.path) as db:
        assert db.execute("SELECT count(*) FROM phase_segments").fetchone()[0] == 1
        assert db.execute("SELECT count(*) FROM detections_per_second").fetchone()[0] == 0


def test_a_write_that_fails_midway_leaves_nothing_of_the_case(tmp_path: Path) -> None:
    store = LibraryStore(tmp_path / "library.sqlite")
    broken = sample_index()
    broken.phases.append(broken.phases[0])  # the same (case, start) twice: the insert fails
    with pytest.raises(sqlite3.IntegrityError):
        store.save(broken)
    assert store.cases() == []
    with sqlite3.connect(store.path) as db:
        for table in ("phase_segments", "instrument_intervals", "detections_per_second"):
            assert db.execute(f"SELECT count(*) FROM {table}").fetchone()[0] == 0


def test_unknown_cases_are_named_with_close_ids(tmp_path: Path) -> None:
    store = LibraryStore(tmp_path / "library.sqlite")
    with pytest.raises(LibraryError, match="it is empty: add cases"):
        store.get("video01")
    store.save(sample_index())
    store.save(sample_index("video02-9b666099", Path("/data/video02.mp4")))
    with pytest.raises(LibraryError, match="Did you mean video01-1a2b3c4d"):
        store.get("video01-1a2b3c4e")
    with pytest.raises(LibraryError, match="starts 2 case ids"):
        store.get("video0")


def test_removing_a_case_keeps_its_sessions_and_perception_answers(tmp_path: Path) -> None:
    store = LibraryStore(tmp_path / "library.sqlite")
    store.save(sample_index())
    now = datetime.now(UTC).isoformat()
    with sqlite3.connect(store.path) as db:
        db.execute(
            "INSERT INTO sessions VALUES ('review-1', 'video01-1a2b3c4d', ?, ?, 2)", (now, now)
        )
        db.execute(
            "INSERT INTO perception_answers (case_id, start_s, end_s, task, question, answer, "
            "created_at) VALUES ('video01-1a2b3c4d', 10, 10, 'cvs', 'CVS?', 'No', ?)",
            (now,),
        )
    assert store.remove("video01").id == "video01-1a2b3c4d"
    assert store.cases() == []
    with sqlite3.connect(store.path) as db:
        assert db.execute("SELECT count(*) FROM instrument_intervals").fetchone()[0] == 0
        assert db.execute("SELECT count(*) FROM sessions").fetchone()[0] == 1
        assert db.execute("SELECT count(*) FROM perception_answers").fetchone()[0] == 1


def test_the_reader_connection_refuses_writes(tmp_path: Path) -> None:
    store = LibraryStore(tmp_path / "library.sqlite")
    store.save(sample_index())
    with store.reader() as db:
        assert db.execute("SELECT phase FROM phase_segments ORDER BY start_s").fetchone()[0] == (
            "Preparation"
        )
        with pytest.raises(sqlite3.OperationalError, match="readonly|read-only"):
            db.execute("DELETE FROM cases")


WRITER = """
import sys
from datetime import UTC, datetime
from pathlib import Path
from surgagent.library.store import LibraryStore
from surgagent.library.types import CaseIndex, CaseRecord, PhaseSegmentRow

store, name = LibraryStore(Path(sys.argv[1])), sys.argv[2]
for k in range(40):
    case = CaseRecord(id=f"{name}-{k:03d}", path=Path(f"/data/{name}/{k}.mp4"), stamp="1:1",
                      status="indexed", indexed_at=datetime.now(UTC))
    phases = [PhaseSegmentRow(phase=f"P{j}", start_s=j, end_s=j + 1) for j in range(20)]
    store.save(CaseIndex(case=case, phases=phases))
"""


def test_two_processes_write_one_library_without_losing_a_case(tmp_path: Path) -> None:
    path = tmp_path / "library.sqlite"  # both create and migrate it too
    writers = [
        subprocess.Popen([sys.executable, "-c", WRITER, str(path), name], cwd=REPO)
        for name in ("alpha", "beta")
    ]
    assert [writer.wait(timeout=120) for writer in writers] == [0, 0]
    store = LibraryStore(path)
    assert len(store.cases(status="indexed")) == 80
    with sqlite3.connect(path) as db:
        assert db.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
        assert db.execute("SELECT count(*) FROM phase_segments").fetchone()[0] == 80 * 20


OPENER = """
import sys, time
from pathlib import Path
from surgagent.agent.api import sqlite_checkpointer
from surgagent.library.store import LibraryStore

folder, me = Path(sys.argv[1]), sys.argv[2]
(folder / f"ready-{me}").touch()
while not (folder / "go").exists():
    pass
start = time.monotonic()
for k in range(int(sys.argv[3])):  # every process opens each new file at the same instant
    while time.monotonic() < start + 0.15 * k:
        pass
    sqlite_checkpointer(folder / f"sessions-{k}.sqlite")
    LibraryStore(folder / f"library-{k}.sqlite").migrate()
"""


def test_processes_opening_a_new_sessions_file_or_library_at_once_all_succeed(
    tmp_path: Path,
) -> None:
    # Turning a new SQLite file to WAL fails at once, without waiting, when another process
    # does it too: two chats started together used to stop on "database is locked".
    openers = [
        subprocess.Popen(
            [sys.executable, "-c", OPENER, str(tmp_path), str(me), "12"],
            cwd=REPO,
            stderr=subprocess.PIPE,
            text=True,
        )
        for me in range(4)
    ]
    deadline = time.monotonic() + 120
    while len(list(tmp_path.glob("ready-*"))) < len(openers) and time.monotonic() < deadline:
        time.sleep(0.05)
    (tmp_path / "go").touch()
    errors = [opener.communicate(timeout=120)[1] for opener in openers]
    assert [opener.returncode for opener in openers] == [0] * 4, "\n".join(errors)


# -- finding cases --------------------------------------------------------------------------


def test_cases_are_found_in_folders_and_other_files_are_reported(tmp_path: Path) -> None:
    archive = tmp_path / "cholec80"
    write_video(archive / "videos" / "video01.mp4", fps=5, duration=1.0)
    write_video(archive / "videos" / "video02.mp4", fps=5, duration=1.0)
    (archive / "videos" / "video02.json").write_text('{"procedure": "cholecystectomy"}')
    (archive / "videos" / "preview.png").write_bytes(b"png")  # beside videos: not frames
    (archive / "phase_annotations").mkdir()
    (archive / "phase_annotations" / "video01-phase.txt").write_text("Frame\tPhase\n")
    (archive / "README.md").write_text("Cholec80")
    (archive / "license.pdf").write_bytes(b"%PDF")
    write_frame_folder(archive / "frames" / "video03", count=3, fps=1)
    (archive / ".hidden").mkdir()
    write_video(archive / ".hidden" / "video09.mp4", fps=5, duration=1.0)

    cases, ignored = discover_cases([archive, archive / "videos" / "video01.mp4"])
    names = [path.relative_to(archive.resolve()).as_posix() for path in cases]
    assert names == ["frames/video03", "videos/video01.mp4", "videos/video02.mp4"]
    assert sorted(p.name for p in ignored) == ["license.pdf", "preview.png"]
    with pytest.raises(FileNotFoundError, match="no such file or folder"):
        discover_cases([archive / "missing"])


def test_a_stamp_changes_with_the_case_or_its_notes(tmp_path: Path) -> None:
    video = write_video(tmp_path / "video01.mp4", fps=5, duration=1.0)
    before = source_stamp(video)
    assert source_stamp(video) == before
    (tmp_path / "video01.json").write_text('{"date": "2024-03-05"}')
    assert source_stamp(video) != before
    folder = write_frame_folder(tmp_path / "video02", count=3, fps=1)
    stamp = source_stamp(folder)
    (folder / "notes.md").write_text("Difficult dissection.")
    assert source_stamp(folder) != stamp


# -- indexing without engines ---------------------------------------------------------------


def invoke(*args: str) -> str:
    result = CliRunner().invoke(app, list(args))
    assert result.exit_code == 0, result.output
    return result.stdout


def test_library_add_list_show_remove_without_engines(
    tmp_path: Path, isolated_settings: Path
) -> None:
    archive = tmp_path / "archive"
    write_video(archive / "video01.mp4", fps=5, duration=4.0)
    write_video(archive / "video02.mp4", fps=5, duration=3.0)
    (archive / "video02.json").write_text('{"procedure": "cholecystectomy", "date": "2024-03-05"}')
    write_video(archive / "video03.mp4", fps=5, duration=2.0)
    (archive / "video03.json").write_text('{"date": "05/03/2024"}')
    corrupt_copy(archive / "video01.mp4", archive / "video04.mp4")

    summary = IndexSummary.model_validate_json(
        invoke("library", "add", str(archive), "--procedure", "appendectomy", "--json")
    )
    assert len(summary.indexed) == 2 and summary.skipped == [] and summary.found == 4
    failed = {item.path.name: item.error for item in summary.failed}
    assert "not an ISO date; write it as YYYY-MM-DD" in failed["video03.mp4"]
    assert "video04.mp4 is not a readable video" in failed["video04.mp4"]

    listing = json.loads(invoke("library", "list", "--json"))
    assert listing["schema_version"] == SCHEMA_VERSION
    by_name = {Path(case["path"]).name: case for case in listing["cases"]}
    assert by_name["video02.mp4"]["procedure"] == "cholecystectomy"
    assert by_name["video02.mp4"]["date"] == "2024-03-05"
    assert by_name["video01.mp4"]["procedure"] == "appendectomy"
    assert by_name["video01.mp4"]["frames"] == 4
    assert by_name["video04.mp4"]["status"] == "failed"
    case_id = by_name["video01.mp4"]["id"]
    assert (isolated_settings / "cache" / "cases").is_dir()  # frames are in the case cache

    shown = CaseIndex.model_validate_json(invoke("library", "show", case_id, "--json"))
    assert shown.case.duration == pytest.approx(4.0) and shown.phases == []

    again = IndexSummary.model_validate_json(invoke("library", "add", str(archive), "--json"))
    assert sorted(again.skipped) == sorted(summary.indexed) and again.indexed == []
    assert len(again.failed) == 2  # failed cases are tried again

    removed = json.loads(invoke("library", "remove", case_id, "--json"))
    assert removed["removed"]["id"] == case_id
    assert case_id not in invoke("library", "list")


def test_library_errors_are_one_line_with_what_to_do(tmp_path: Path) -> None:
    done = run_cli("library", "show", "video01")
    assert done.returncode == 1
    assert "error: the library has no case 'video01'; it is empty" in done.stderr
    assert "Traceback" not in done.stderr
    done = run_cli("library", "add", str(tmp_path))
    assert done.returncode == 1 and "no video file or frame folder found" in done.stderr
    done = run_cli("library", "add", str(tmp_path), "--address", "ray://head:10001")
    assert done.returncode == 1 and "--address and --gpus-per-worker are for the ray" in done.stderr


def test_the_ray_backend_without_ray_says_how_to_install_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from surgagent.indexing._ray import ray_outcomes

    monkeypatch.setitem(sys.modules, "ray", None)  # import ray now fails
    task = CaseTask(path=tmp_path / "video01.mp4", stamp="1:1")
    with pytest.raises(ConfigError, match=r'pip install "surgagent\[cluster\]"'):
        next(ray_outcomes([task], IndexConfig(cache_dir=tmp_path), workers=2))


# -- an archive with engines: kill, resume, check -------------------------------------------

# Phase durations (s) of the archive's cases; each case shows PHASES in order.
ARCHIVE = {
    "video01": [11, 9, 10],
    "video02": [8, 12, 10],
    "video03": [13, 7, 10],
    "video04": [10, 10, 10],
    "video05": [9, 11, 10],
    "video06": [12, 8, 10],
}


@dataclass
class Archive:
    folder: Path
    env: dict[str, str]


@pytest.fixture(scope="module")
def archive(tmp_path_factory: pytest.TempPathFactory, tiny_detector: TinyDetector) -> Archive:
    from tests.test_tool_chain import make_case, train_chain_segmenter

    root = tmp_path_factory.mktemp("library")
    checkpoint = train_chain_segmenter(root / "train", CaseCache(root / "train-cache"))
    folder = root / "cholec80" / "videos"
    for k, (name, durations) in enumerate(ARCHIVE.items(), start=1):
        make_case(folder / f"{name}.mp4", root / "annotations" / f"{name}-phase.txt", durations, k)
        notes = {"procedure": "cholecystectomy", "date": f"2024-03-{k:02d}"}
        (folder / f"{name}.json").write_text(json.dumps(notes))
    corrupt_copy(folder / "video01.mp4", folder / "video07.mp4")
    env = {
        "SURGAGENT_DETECTOR__WEIGHTS": str(tiny_detector.weights),
        "SURGAGENT_DETECTOR__IMGSZ": str(IMGSZ),
        "SURGAGENT_PHASE__WEIGHTS": str(checkpoint),
    }
    assert SIZE == (160, 128)  # the detector's training size, which make_case draws at
    return Archive(folder, env)


def indexed_now(db: Path) -> dict[str, str]:
    """The indexed cases' ids and write times, read as another process would."""
    if not db.exists():
        return {}
    try:
        with sqlite3.connect(db, timeout=10) as connection:
            rows = connection.execute("SELECT id, indexed_at FROM cases WHERE status = 'indexed'")
            return dict(rows.fetchall())
    except sqlite3.OperationalError:  # the schema is not written yet
        return {}


def add_and_kill(archive: Archive, db: Path, after: int, *options: str) -> dict[str, str]:
    """Run ``library add`` and SIGKILL it (and all it started) once ``after`` cases are in."""
    log = db.parent / "killed-run.log"
    db.parent.mkdir(parents=True, exist_ok=True)
    with log.open("w") as output:
        process = subprocess.Popen(
            [sys.executable, "-m", "surgagent", "library", "add", str(archive.folder), *options],
            env={**os.environ, **archive.env},
            cwd=REPO,
            stdout=output,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # its own process group: Ray's processes die with it
        )
        deadline = time.monotonic() + 240
        while len(indexed_now(db)) < after:
            assert process.poll() is None, log.read_text()
            assert time.monotonic() < deadline, log.read_text()
            time.sleep(0.05)
        os.killpg(process.pid, signal.SIGKILL)
        process.wait(timeout=30)
    return indexed_now(db)


def check_archive(store: LibraryStore) -> None:
    """Every case's stored phases and instruments are those its video shows (to 1 s)."""
    from tests.test_tool_chain import PHASES

    cases = {case.path.stem: case for case in store.cases()}
    assert cases["video07"].status == "failed"
    assert "video07.mp4 is not a readable video" in (cases["video07"].error or "")
    for k, (name, durations) in enumerate(ARCHIVE.items(), start=1):
        index = store.get(cases[name].id)
        assert index.case.status == "indexed" and index.case.date == f"2024-03-{k:02d}"
        assert index.case.phase_model and index.case.detector_model
        bounds = [0, durations[0], durations[0] + durations[1], sum(durations)]
        assert [s.phase for s in index.phases] == PHASES, name
        for segment, start, end in zip(index.phases, bounds[:-1], bounds[1:], strict=True):
            assert abs(segment.start_s - start) <= 1 and abs(segment.end_s - end) <= 1, name
        known = {
            "Grasper": (0, sum(durations) - 1),
            "Hook": (0, durations[0] - 1),
            "Clipper": (durations[0], durations[0] + durations[1] - 1),
        }
        seen = {i.instrument: (i.start_s, i.end_s) for i in index.instruments}
        assert len(index.instruments) == len(seen) == 3, (name, index.instruments)
        for instrument, (start, end) in known.items():
            got = seen[instrument]
            assert abs(got[0] - start) <= 1 and abs(got[1] - end) <= 1, (name, instrument, got)
        clipper = [d.second for d in index.detections if d.instrument == "Clipper"]
        assert abs(clipper[0] - known["Clipper"][0]) <= 1
        assert abs(clipper[-1] - known["Clipper"][1]) <= 1


def resume_and_check(store: LibraryStore, before: dict[str, str], summary: IndexSummary) -> None:
    assert 1 <= len(before) < len(ARCHIVE)
    assert sorted(summary.skipped) == sorted(before)  # finished cases were not redone ...
    assert len(summary.indexed) == len(ARCHIVE) - len(before)
    assert [item.path.name for item in summary.failed] == ["video07.mp4"]
    after = indexed_now(store.path)
    assert {case: after[case] for case in before} == before  # ... nor rewritten
    check_archive(store)
    ask_the_cohort(store)


def ask_the_cohort(store: LibraryStore) -> None:
    """Cohort questions on the indexed archive, through the agent and a scripted planner."""
    from langchain_core.messages import AIMessage, BaseMessage

    from surgagent.agent.api import SurgicalAgent
    from surgagent.agent.testing.scripted import ScriptedChatModel, calls, say
    from surgagent.tools.results import CohortTable, read_result

    tables: list[CohortTable] = []

    def answer(messages: list[BaseMessage]) -> AIMessage:
        for message in messages[-2:]:
            table = read_result(message)
            assert isinstance(table, CohortTable), message.text
            tables.append(table)
        clipping, clipper = tables
        return say(
            f"Clipping and cutting lasted {clipping.stats.mean:.1f} s on average over "
            f"{clipping.stats.count} cases, longest in {clipping.stats.max_case}; the clipper "
            f"was first seen at a median {clipper.stats.median:.0f} s."
        )

    agent = SurgicalAgent.from_settings(
        planner_model=ScriptedChatModel(
            replies=[
                calls(
                    ("query_library", {"measure": "phase_duration", "phase": "ClippingCutting"}),
                    ("query_library", {"measure": "instrument_first_use", "instrument": "Clipper"}),
                ),
                answer,
            ]
        ),
        engines={},
    )
    result = agent.invoke("How long was clipping, and when did the clipper appear?", library=True)
    assert result.status == "answered", result.answer
    # The numbers are exactly the library's, and the library's are the videos' (to 1 s).
    stored = {case.path.stem: store.get(case.id) for case in store.cases(status="indexed")}
    durations = {
        name: sum(s.end_s - s.start_s for s in index.phases if s.phase == "ClippingCutting")
        for name, index in stored.items()
    }
    clipping, clipper = tables
    assert clipping.cases_considered == len(ARCHIVE) and clipping.stats.count == len(ARCHIVE)
    assert {row.case_id.split("-")[0]: row.value for row in clipping.rows} == durations
    mean = sum(durations.values()) / len(durations)
    longest = max(durations, key=lambda name: durations[name])
    assert f"lasted {mean:.1f} s on average over 6 cases, longest in {longest}-" in result.answer
    for name, value in durations.items():
        assert abs(value - ARCHIVE[name][1]) <= 2, (name, value)
    firsts = {row.case_id.split("-")[0]: row.value for row in clipper.rows}
    assert firsts.keys() == ARCHIVE.keys()
    for name, first in firsts.items():
        assert first is not None and abs(first - ARCHIVE[name][0]) <= 1, (name, first)


def test_library_add_resumes_after_a_kill_and_stores_the_known_timelines(
    archive: Archive, isolated_settings: Path
) -> None:
    store = LibraryStore(isolated_settings / "library.sqlite")
    before = add_and_kill(archive, store.path, 2, "--workers", "1")
    with sqlite3.connect(store.path) as db:  # the case in flight left no row behind
        orphans = db.execute(
            "SELECT count(*) FROM phase_segments WHERE case_id NOT IN (SELECT id FROM cases)"
        ).fetchone()[0]
    assert orphans == 0 and len(store.cases()) == len(before)

    done = run_cli("library", "add", str(archive.folder), "--workers", "2", "--json",
                   env=archive.env, timeout=300)  # fmt: skip
    assert done.returncode == 0, done.stderr
    resume_and_check(store, before, IndexSummary.model_validate_json(done.stdout))
    listed = run_cli("library", "list", env={**archive.env, "COLUMNS": "160"})
    ids = [case.id for case in store.cases()]
    assert all(case_id in listed.stdout for case_id in ids), listed.stdout
    assert listed.stdout.count("detector, phase") == len(ARCHIVE), listed.stdout


def test_library_add_on_a_local_ray_resumes_after_a_kill(
    archive: Archive, isolated_settings: Path
) -> None:
    pytest.importorskip("ray", reason='needs Ray: pip install -e ".[cluster]"')
    import ray

    from surgagent.indexing.runner import index_cases
    from surgagent.indexing.types import DetectorJob, PhaseJob

    store = LibraryStore(isolated_settings / "library.sqlite")
    before = add_and_kill(archive, store.path, 2, "--workers", "2", "--backend", "ray")

    config = IndexConfig(
        cache_dir=isolated_settings / "cache",
        detector=DetectorJob(weights=Path(archive.env["SURGAGENT_DETECTOR__WEIGHTS"]), imgsz=IMGSZ),
        phase=PhaseJob(weights=Path(archive.env["SURGAGENT_PHASE__WEIGHTS"])),
    )
    ray.init(num_cpus=2, include_dashboard=False, logging_level="WARNING")
    try:
        summary = index_cases([archive.folder], store, config, workers=2, backend="ray")
    finally:
        ray.shutdown()
    resume_and_check(store, before, summary)


def test_indexing_stops_at_once_on_weights_that_cannot_load(
    tmp_path: Path, isolated_settings: Path
) -> None:
    write_video(tmp_path / "video01.mp4", fps=5, duration=1.0)
    bad = tmp_path / "broken.pt"
    bad.write_bytes(b"not weights")
    done = run_cli("library", "add", str(tmp_path), env={"SURGAGENT_PHASE__WEIGHTS": str(bad)})
    assert done.returncode == 1, done.stderr
    assert "error:" in done.stderr and "Traceback" not in done.stderr
    assert LibraryStore(isolated_settings / "library.sqlite").cases() == []
    missing = run_cli(
        "library", "add", str(tmp_path), env={"SURGAGENT_DETECTOR__WEIGHTS": str(tmp_path / "x")}
    )
    assert missing.returncode == 1 and "the detector weights" in missing.stderr


def test_the_library_knows_which_sessions_discussed_a_case() -> None:
    from surgagent.agent.testing.openai_server import ScriptedOpenAIServer, ScriptedReply
    from tests.fixtures.cli import openai_env

    sample = "examples/sample_case/sample_lapchole.mp4"
    cvs = "Criterion 1: Yes; Criterion 2: No; Criterion 3: No."
    script = [
        ScriptedReply(
            tool_calls=[
                ("ask_perception", {"question": "CVS?", "task": "cvs", "times": ["3", "4"]})
            ]
        ),
        ScriptedReply(content=cvs),  # perception's reply
        ScriptedReply(content="Only criterion 1 is met at [00:03]."),
        ScriptedReply(content="Nothing more to add."),
    ]
    with ScriptedOpenAIServer(script) as server:
        env = {**openai_env(server), "SURGAGENT_KNOWLEDGE__ENABLED": "false"}
        added = run_cli("library", "add", sample, "--json", env=env)
        assert added.returncode == 0, added.stderr
        chat = run_cli(
            "chat", sample, "--session", "review-9", env=env, stdin="CVS at 3 s?\nAnd?\n/quit\n"
        )
        assert chat.returncode == 0, chat.stderr
        shown = run_cli("library", "show", "sample-lapchole", "--json", env=env)
    index = CaseIndex.model_validate_json(shown.stdout)
    (session,) = index.sessions
    assert (session.thread_id, session.turns) == ("review-9", 2)
    assert session.case_id == index.case.id and session.first_at <= session.last_at
    (answer,) = index.answers
    assert (answer.task, answer.start_s, answer.end_s, answer.answer) == ("cvs", 3.0, 4.0, cvs)
    assert answer.parsed == "[true, false, false]" and answer.thread_id == "review-9"
