"""The case library's store: one SQLite file of cases and what indexing found in them.

Every write is one transaction (``BEGIN IMMEDIATE``): a case's row and its phase segments,
instrument intervals and per-second detections appear together or not at all, so a killed
indexer never leaves half a case visible. The file is in WAL mode with a busy timeout, so
several processes may read and write one library at once (on a local disk: SQLite's WAL
does not work over network file systems). The schema is documented and migrated in
`surgagent.library.schema`.

    store = LibraryStore(settings.data_dir / "library.sqlite")
    store.save(CaseIndex(case=record, phases=[...]))
    store.get("video01-1a2b3c4d").phases
"""

from __future__ import annotations

import difflib
import json
import sqlite3
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from filelock import FileLock, Timeout

from surgagent.library.errors import LibraryError
from surgagent.library.schema import MIGRATIONS, SCHEMA_VERSION
from surgagent.library.types import (
    CaseIndex,
    CaseRecord,
    CaseStatus,
    DetectionSecond,
    InstrumentIntervalRow,
    PerceptionAnswerRow,
    PhaseSegmentRow,
    SessionRow,
)

__all__ = ["LibraryStore"]

_CASE_COLUMNS = tuple(CaseRecord.model_fields)
_PHASE_COLUMNS = tuple(PhaseSegmentRow.model_fields)
_INTERVAL_COLUMNS = tuple(InstrumentIntervalRow.model_fields)
_DETECTION_COLUMNS = tuple(DetectionSecond.model_fields)
_CHILD_TABLES = {  # table -> (columns, order)
    "phase_segments": (_PHASE_COLUMNS, "start_s"),
    "instrument_intervals": (_INTERVAL_COLUMNS, "start_s, instrument"),
    "detections_per_second": (_DETECTION_COLUMNS, "second, instrument"),
}


def _insert(table: str, columns: Sequence[str], *, with_case: bool = False) -> str:
    names = ("case_id", *columns) if with_case else tuple(columns)
    return (
        f"INSERT INTO {table} ({', '.join(names)}) "
        f"VALUES ({', '.join(':' + name for name in names)})"
    )


class LibraryStore:
    """The case library in one SQLite file (created and migrated on first use).

    Args:
        path: The database file, e.g. ``data_dir / "library.sqlite"``.
        timeout: Seconds a write waits for another process's write to finish.
    """

    def __init__(self, path: Path, *, timeout: float = 60.0) -> None:
        self.path = Path(path).expanduser().absolute()
        self.timeout = timeout
        self._migrated = False

    def __repr__(self) -> str:
        return f"LibraryStore({str(self.path)!r})"

    # -- connections ----------------------------------------------------------------------

    def _open(self) -> sqlite3.Connection:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        connection = sqlite3.connect(self.path, timeout=self.timeout, isolation_level=None)
        connection.row_factory = sqlite3.Row
        try:
            connection.execute(f"PRAGMA busy_timeout = {int(self.timeout * 1000)}")
            connection.execute("PRAGMA journal_mode = WAL")
            connection.execute("PRAGMA synchronous = NORMAL")  # safe in WAL mode
            connection.execute("PRAGMA foreign_keys = ON")
        except sqlite3.DatabaseError as exc:
            connection.close()
            if isinstance(exc, sqlite3.OperationalError) and "locked" in str(exc):
                raise LibraryError(
                    f"{self.path} is locked by another process for more than "
                    f"{self.timeout:g} s ({exc}); try again when it has finished."
                ) from exc
            raise LibraryError(
                f"{self.path} is not a case library ({exc}); move it away, or point "
                "SURGAGENT_DATA_DIR at another folder."
            ) from exc
        return connection

    def migrate(self) -> int:
        """Bring the database up to `SCHEMA_VERSION`, one transaction per step.

        Returns:
            The schema version now.

        Raises:
            LibraryError: If the file is not a library, or was written by a newer SurgAgent.
        """
        # Turning a new file to WAL needs every other connection out of the way, and two
        # processes doing it at once fail at once, without waiting: one migrates at a time.
        lock = FileLock(f"{self.path}.migrate.lock", timeout=self.timeout)
        try:
            with lock:
                version = self._migrate()
        except Timeout as exc:
            raise LibraryError(
                f"{self.path} is being set up by another process for more than "
                f"{self.timeout:g} s; try again when it has finished."
            ) from exc
        self._migrated = True
        return version

    def _migrate(self) -> int:
        connection = self._open()
        try:
            version = self._version(connection)
            while version < SCHEMA_VERSION:
                connection.execute("BEGIN IMMEDIATE")
                try:
                    if self._version(connection) == version:  # no other process did it first
                        for statement in MIGRATIONS[version]:
                            connection.execute(statement)
                        connection.execute(f"PRAGMA user_version = {version + 1}")
                    connection.execute("COMMIT")
                except BaseException:
                    connection.execute("ROLLBACK")
                    raise
                version = self._version(connection)
        finally:
            connection.close()
        return version

    def _version(self, connection: sqlite3.Connection) -> int:
        version = int(connection.execute("PRAGMA user_version").fetchone()[0])
        if version > SCHEMA_VERSION:
            raise LibraryError(
                f"{self.path} has library schema version {version}, newer than this SurgAgent "
                f"knows ({SCHEMA_VERSION}); upgrade SurgAgent (pip install -U surgagent)."
            )
        return version

    @contextmanager
    def _connect(self, *, write: bool = False) -> Iterator[sqlite3.Connection]:
        """A connection; with ``write``, inside one transaction committed at the end."""
        if not self._migrated:
            self.migrate()
        connection = self._open()
        try:
            if write:
                connection.execute("BEGIN IMMEDIATE")
            yield connection
            if write:
                connection.execute("COMMIT")
        except BaseException:
            if connection.in_transaction:
                connection.execute("ROLLBACK")
            raise
        finally:
            connection.close()

    @contextmanager
    def reader(self) -> Iterator[sqlite3.Connection]:
        """A read-only connection (for queries over the library, e.g. cohort questions).

        SQLite refuses any write through it; rows come as `sqlite3.Row`.
        """
        if not self._migrated:
            self.migrate()
        connection = sqlite3.connect(
            f"{self.path.as_uri()}?mode=ro", uri=True, timeout=self.timeout
        )
        connection.row_factory = sqlite3.Row
        try:
            connection.execute("PRAGMA query_only = ON")
            yield connection
        finally:
            connection.close()

    # -- writing --------------------------------------------------------------------------

    def save(self, index: CaseIndex) -> None:
        """Write one case and its rows in one transaction, replacing its earlier rows.

        A row with the same id or the same path is replaced (with its segments, intervals
        and detections): re-indexing a changed file leaves only the new results.
        """
        record = index.case.model_dump(mode="json")
        with self._connect(write=True) as db:
            db.execute("DELETE FROM cases WHERE id = ? OR path = ?", (record["id"], record["path"]))
            db.execute(_insert("cases", _CASE_COLUMNS), record)
            rows: dict[str, list[dict[str, Any]]] = {
                "phase_segments": [row.model_dump() for row in index.phases],
                "instrument_intervals": [
                    {**row.model_dump(), "best_box": json.dumps(list(row.best_box))}
                    for row in index.instruments
                ],
                "detections_per_second": [row.model_dump() for row in index.detections],
            }
            for table, (columns, _) in _CHILD_TABLES.items():
                values = [{**row, "case_id": record["id"]} for row in rows[table]]
                if values:
                    db.executemany(_insert(table, columns, with_case=True), values)

    def record_turn(self, session: SessionRow, answers: Sequence[PerceptionAnswerRow] = ()) -> None:
        """Note one turn of a session on a case, with the perception answers it obtained.

        The session's row is created or extended (``first_at`` kept, ``last_at`` and
        ``turns`` updated); both writes are one transaction.
        """
        row = session.model_dump(mode="json")
        with self._connect(write=True) as db:
            db.execute(
                "INSERT INTO sessions (thread_id, case_id, first_at, last_at, turns) "
                "VALUES (:thread_id, :case_id, :first_at, :last_at, :turns) "
                "ON CONFLICT (thread_id, case_id) DO UPDATE SET "
                "last_at = excluded.last_at, turns = excluded.turns",
                row,
            )
            columns = tuple(PerceptionAnswerRow.model_fields)
            db.executemany(
                _insert("perception_answers", columns),
                [answer.model_dump(mode="json") for answer in answers],
            )

    def sessions(self, case_id: str) -> list[SessionRow]:
        """The sessions that discussed a case (by its id), most recent first."""
        with self._connect() as db:
            rows = db.execute(
                "SELECT thread_id, case_id, first_at, last_at, turns FROM sessions "
                "WHERE case_id = ? ORDER BY last_at DESC",
                (case_id,),
            ).fetchall()
        return [SessionRow.model_validate(dict(row)) for row in rows]

    def perception_answers(self, case_id: str) -> list[PerceptionAnswerRow]:
        """The perception answers sessions obtained about a case, in time order."""
        columns = tuple(PerceptionAnswerRow.model_fields)
        with self._connect() as db:
            rows = db.execute(
                f"SELECT {', '.join(columns)} FROM perception_answers WHERE case_id = ? "
                "ORDER BY start_s, created_at",
                (case_id,),
            ).fetchall()
        return [PerceptionAnswerRow.model_validate(dict(row)) for row in rows]

    def remove(self, ref: str) -> CaseRecord:
        """Take a case out of the library (its segments, intervals and detections too).

        Perception answers and sessions about it stay (they are the audit trail) and link up
        again if it is added back.

        Returns:
            The removed case.

        Raises:
            LibraryError: If no case has that id or path.
        """
        record = self.get(ref).case
        with self._connect(write=True) as db:
            db.execute("DELETE FROM cases WHERE id = ?", (record.id,))
        return record

    # -- reading --------------------------------------------------------------------------

    def cases(self, status: CaseStatus | None = None) -> list[CaseRecord]:
        """The cases in the library (all, or those with ``status``), by id."""
        query = f"SELECT {', '.join(_CASE_COLUMNS)} FROM cases"
        with self._connect() as db:
            if status is None:
                rows = db.execute(f"{query} ORDER BY id").fetchall()
            else:
                rows = db.execute(f"{query} WHERE status = ? ORDER BY id", (status,)).fetchall()
        return [CaseRecord.model_validate(dict(row)) for row in rows]

    def indexed(self) -> dict[Path, tuple[str, str, str]]:
        """Per indexed case's path, its ``(id, stamp, index_key)``: what adding may skip."""
        query = "SELECT path, id, stamp, index_key FROM cases WHERE status = 'indexed'"
        with self._connect() as db:
            rows = db.execute(query).fetchall()
        return {Path(path): (case_id, stamp, key) for path, case_id, stamp, key in rows}

    def find(self, ref: str) -> CaseRecord | None:
        """The case with id ``ref``, or whose video or folder is at path ``ref``; else None."""
        query = f"SELECT {', '.join(_CASE_COLUMNS)} FROM cases WHERE id = ? OR path = ?"
        path = str(Path(ref).expanduser().resolve())
        with self._connect() as db:
            row = db.execute(query, (ref, path)).fetchone()
        return CaseRecord.model_validate(dict(row)) if row is not None else None

    def get(self, ref: str) -> CaseIndex:
        """A case and everything indexing stored about it.

        Args:
            ref: The case id (or the start of just one id), or the path of its video file
                or frame folder.

        Raises:
            LibraryError: If no case has that id or path; the message lists close ids.
        """
        record = self.find(ref) or self._by_prefix(ref)
        if record is None:
            raise LibraryError(self._unknown(ref))
        found: dict[str, list[dict[str, Any]]] = {}
        with self._connect() as db:
            for table, (columns, order) in _CHILD_TABLES.items():
                query = f"SELECT {', '.join(columns)} FROM {table} WHERE case_id = ? ORDER BY "
                rows = db.execute(query + order, (record.id,)).fetchall()
                found[table] = [dict(row) for row in rows]
        for row in found["instrument_intervals"]:
            row["best_box"] = tuple(json.loads(row["best_box"]))
        return CaseIndex(
            case=record,
            phases=[PhaseSegmentRow.model_validate(r) for r in found["phase_segments"]],
            instruments=[
                InstrumentIntervalRow.model_validate(r) for r in found["instrument_intervals"]
            ],
            detections=[DetectionSecond.model_validate(r) for r in found["detections_per_second"]],
            sessions=self.sessions(record.id),
            answers=self.perception_answers(record.id),
        )

    def _by_prefix(self, ref: str) -> CaseRecord | None:
        """The one case whose id starts with ``ref`` (``video01`` for ``video01-1a2b3c4d``)."""
        ids = [case.id for case in self.cases() if case.id.startswith(ref)]
        return self.find(ids[0]) if len(ids) == 1 else None

    def _unknown(self, ref: str) -> str:
        with self._connect() as db:
            ids = [row[0] for row in db.execute("SELECT id FROM cases ORDER BY id").fetchall()]
        if not ids:
            return (
                f"the library has no case {ref!r}; it is empty: add cases with "
                "`surgagent library add PATH...`."
            )
        starting = [case_id for case_id in ids if case_id.startswith(ref)]
        if len(starting) > 1:
            return (
                f"{ref!r} starts {len(starting)} case ids ({', '.join(starting[:5])}); "
                "give more of the id."
            )
        close = difflib.get_close_matches(ref, ids, n=3)
        hint = f" Did you mean {', '.join(close)}?" if close else ""
        return (
            f"the library has no case with id or path {ref!r}.{hint} "
            "`surgagent library list` shows them all."
        )
