"""The case library's SQLite schema and its migrations.

The schema version lives in ``PRAGMA user_version``. `MIGRATIONS` is the ordered list of
steps: step ``n`` (1-based) takes a database from version ``n - 1`` to ``n``. A database is
brought up to date step by step, each step in its own transaction, so a crash leaves it at
one version or the next, never between. To change the schema, append a step; never edit a
released one.

Tables (version 1). Times are seconds from the start of the case; ``*_at`` are ISO 8601 UTC.

``cases``: one row per case.
    ``id`` (key: ``<name>-<first 8 hex of the content hash>``, the id ``surgagent ask`` takes),
    ``path`` (unique, resolved), ``kind`` (``video`` | ``frames``), ``content_hash``,
    ``stamp`` (sizes and modification times when indexed; a changed file is indexed again),
    ``index_key`` (frame rate and engine weights indexing ran with), ``procedure``, ``date``
    (ISO date, from the case's notes), ``notes``, ``duration``, ``fps``, ``width``,
    ``height``, ``frames`` and ``frames_fps`` (frames sampled into the case cache),
    ``detector_model``, ``detector_fps``, ``phase_model``, ``status`` (``indexed`` |
    ``failed``), ``indexed_at``, ``index_seconds``, ``error`` (why a failed case failed).

``phase_segments``: the phase segmenter's segments.
    ``case_id``, ``phase``, ``start_s``, ``end_s`` (the segment covers ``[start_s, end_s)``),
    ``confidence`` (mean probability of the phase over the segment).

``instrument_intervals``: when each instrument is visible, from the tracked detector.
    ``case_id``, ``instrument``, ``start_s``, ``end_s`` (first and last sample seen in),
    ``samples``, ``mean_score``, ``best_time_s``, ``best_score``, ``best_box`` (JSON
    ``[x1, y1, x2, y2]``, fractions 0-1).

``detections_per_second``: the detector's per-second summary.
    ``case_id``, ``second`` (covers ``[second, second + 1)``), ``instrument``, ``count``
    (boxes over that second's samples), ``max_score``.

``perception_answers``: perception answers already obtained about a case (filled by runs).
    ``id``, ``case_id``, ``start_s``, ``end_s``, ``task``, ``question``, ``answer``,
    ``parsed`` (JSON), ``model``, ``thread_id``, ``created_at``.

``sessions``: which chat sessions discussed a case (filled by runs).
    ``thread_id``, ``case_id``, ``first_at``, ``last_at``, ``turns``.

Rows of the first three tables belong to their case (``ON DELETE CASCADE``) and are written
in the same transaction as its ``cases`` row. Perception answers and sessions are keyed by
the content-based case id but not tied to a ``cases`` row: removing a case from the library
keeps its audit trail, and it links up again when the case is added back.

    for step in MIGRATIONS[current:]: ...
    SCHEMA_VERSION == len(MIGRATIONS)
"""

from __future__ import annotations

__all__ = ["MIGRATIONS", "SCHEMA_VERSION"]

_V1 = (
    """CREATE TABLE cases (
        id TEXT PRIMARY KEY,
        path TEXT NOT NULL UNIQUE,
        kind TEXT NOT NULL DEFAULT '',
        content_hash TEXT,
        stamp TEXT NOT NULL,
        index_key TEXT NOT NULL DEFAULT '',
        procedure TEXT,
        date TEXT,
        notes TEXT,
        duration REAL,
        fps REAL,
        width INTEGER,
        height INTEGER,
        frames INTEGER,
        frames_fps REAL,
        detector_model TEXT,
        detector_fps REAL,
        phase_model TEXT,
        status TEXT NOT NULL CHECK (status IN ('indexed', 'failed')),
        indexed_at TEXT NOT NULL,
        index_seconds REAL,
        error TEXT
    )""",
    """CREATE TABLE phase_segments (
        case_id TEXT NOT NULL REFERENCES cases (id) ON DELETE CASCADE,
        phase TEXT NOT NULL,
        start_s REAL NOT NULL,
        end_s REAL NOT NULL,
        confidence REAL,
        PRIMARY KEY (case_id, start_s)
    )""",
    """CREATE TABLE instrument_intervals (
        case_id TEXT NOT NULL REFERENCES cases (id) ON DELETE CASCADE,
        instrument TEXT NOT NULL,
        start_s REAL NOT NULL,
        end_s REAL NOT NULL,
        samples INTEGER NOT NULL,
        mean_score REAL NOT NULL,
        best_time_s REAL NOT NULL,
        best_score REAL NOT NULL,
        best_box TEXT NOT NULL,
        PRIMARY KEY (case_id, instrument, start_s)
    )""",
    """CREATE TABLE detections_per_second (
        case_id TEXT NOT NULL REFERENCES cases (id) ON DELETE CASCADE,
        second INTEGER NOT NULL,
        instrument TEXT NOT NULL,
        count INTEGER NOT NULL,
        max_score REAL NOT NULL,
        PRIMARY KEY (case_id, second, instrument)
    )""",
    """CREATE TABLE perception_answers (
        id INTEGER PRIMARY KEY,
        case_id TEXT NOT NULL,
        start_s REAL NOT NULL,
        end_s REAL NOT NULL,
        task TEXT NOT NULL,
        question TEXT NOT NULL,
        answer TEXT NOT NULL,
        parsed TEXT,
        model TEXT,
        thread_id TEXT,
        created_at TEXT NOT NULL
    )""",
    """CREATE TABLE sessions (
        thread_id TEXT NOT NULL,
        case_id TEXT NOT NULL,
        first_at TEXT NOT NULL,
        last_at TEXT NOT NULL,
        turns INTEGER NOT NULL DEFAULT 0,
        PRIMARY KEY (thread_id, case_id)
    )""",
    "CREATE INDEX cases_procedure ON cases (procedure, date)",
    "CREATE INDEX phase_segments_phase ON phase_segments (phase)",
    "CREATE INDEX instrument_intervals_instrument ON instrument_intervals (instrument)",
    "CREATE INDEX perception_answers_case ON perception_answers (case_id, task)",
    "CREATE INDEX sessions_case ON sessions (case_id)",
)

# Step n takes the database from version n - 1 to n; append, never edit.
MIGRATIONS: tuple[tuple[str, ...], ...] = (_V1,)
SCHEMA_VERSION = len(MIGRATIONS)
