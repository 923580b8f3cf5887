"""What the review app keeps on disk besides the agent's sessions: uploads and a session list.

Uploads are checked (type, size, a video that decodes) and copied under
``<data_dir>/uploads/<content hash>/``, never anywhere else; an upload list says who
uploaded each. The session list maps each chat session (a LangGraph thread in the SQLite
checkpointer) to its owner and case, so the page can list a visitor's past sessions of a case
and reopen one after a reload or a restart.

    stored = store_upload(Path("/tmp/gradio/abc/case.mp4"), uploads_dir, max_mb=2048)
    sessions.record("3f2a9c1b", case=stored, title="When is the clipper first used?")
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import re
import shutil
import threading
from datetime import UTC, datetime
from pathlib import Path
from typing import Generic, TypeVar

from pydantic import BaseModel, ValidationError

from surgagent.ui.auth import LOCAL_OWNER

__all__ = [
    "VIDEO_SUFFIXES",
    "SessionIndex",
    "SessionRecord",
    "UploadError",
    "UploadIndex",
    "UploadRecord",
    "store_upload",
]

logger = logging.getLogger(__name__)

VIDEO_SUFFIXES = (".mp4", ".mov", ".mkv", ".avi", ".webm", ".m4v", ".mpg", ".mpeg")


class UploadError(ValueError):
    """An upload that cannot be used as a case; the message says why."""


_MAX_STEM = 80


def _safe_name(name: str) -> str:
    """A file name safe to store: shell- and path-free, the stem cut short, the suffix kept."""
    path = Path(Path(name).name)
    suffix = path.suffix.lower() if path.suffix.lower() in VIDEO_SUFFIXES else ""
    stem = path.name[: -len(suffix)] if suffix else path.name
    stem = re.sub(r"[^A-Za-z0-9._-]+", "_", stem).strip("._") or "case"
    return stem[:_MAX_STEM] + suffix


def store_upload(source: Path, uploads: Path, *, max_mb: float) -> Path:
    """Copy an uploaded video into ``uploads`` (by content hash) and return its new path.

    Raises:
        UploadError: For a file that is not a video by name, too large, or empty.
    """
    source = Path(source)
    if source.suffix.lower() not in VIDEO_SUFFIXES:
        raise UploadError(
            f"{source.name} is not a video file; upload one of {', '.join(VIDEO_SUFFIXES)}"
        )
    size = source.stat().st_size
    if size == 0:
        raise UploadError(f"{source.name} is empty")
    if size > max_mb * 1024 * 1024:
        raise UploadError(f"{source.name} is {size / 2**20:.0f} MB; the limit is {max_mb:g} MB")
    digest = hashlib.sha256()
    with source.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    folder = uploads.resolve() / digest.hexdigest()[:16]
    target = folder / _safe_name(source.name)
    if not target.is_relative_to(uploads.resolve()):  # the name is sanitised; belt and braces
        raise UploadError(f"refusing to store {source.name} outside the uploads folder")
    if not target.exists():
        folder.mkdir(parents=True, exist_ok=True)
        partial = target.with_name(target.name + ".part")
        shutil.copyfile(source, partial)
        os.replace(partial, target)
    return target


class SessionRecord(BaseModel):
    """One chat session: its owner, its case and a title (its first question)."""

    thread_id: str
    owner: str = LOCAL_OWNER  # files from before owners were kept belong to the local user
    case: str
    case_id: str
    key: str | None = None  # how the page names the case; None: an upload (from `case`)
    title: str
    created: str
    updated: str


class UploadRecord(BaseModel):
    """One uploaded case and who uploaded it (a video uploaded twice has two owners)."""

    key: str  # its place in the uploads folder, as the page names it
    owners: list[str]


R = TypeVar("R", bound=BaseModel)


class _RecordFile(Generic[R]):  # noqa: UP046 (Python 3.11 has no class type parameters)
    """Records in a small JSON object file, written atomically and read forgivingly.

    A damaged file is moved aside (kept, never overwritten) and a bad record skipped, each
    with a warning, so the page keeps working.
    """

    model: type[R]

    def __init__(self, path: Path) -> None:
        self.path = path
        self._lock = threading.Lock()

    def _read(self) -> dict[str, R]:
        if not self.path.exists():
            return {}
        try:
            raw = json.loads(self.path.read_text(encoding="utf-8"))
            if not isinstance(raw, dict):
                raise ValueError("not a JSON object of records")
        except (ValueError, UnicodeDecodeError) as error:
            kept = self.path.with_suffix(".broken")
            os.replace(self.path, kept)
            logger.warning("%s cannot be read (%s); moved to %s", self.path, error, kept)
            return {}
        records = {}
        for key, value in raw.items():
            try:
                records[key] = self.model.model_validate(value)
            except ValidationError:
                logger.warning("%s: skipped record %r, which cannot be read", self.path, key)
        return records

    def _write(self, records: dict[str, R]) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        partial = self.path.with_suffix(".tmp")
        partial.write_text(json.dumps({k: v.model_dump() for k, v in records.items()}, indent=1))
        os.replace(partial, self.path)


class SessionIndex(_RecordFile[SessionRecord]):
    """The sessions of the review app, by thread id, each with its owner."""

    model = SessionRecord

    def record(
        self,
        thread_id: str,
        *,
        owner: str = LOCAL_OWNER,
        case: Path,
        case_id: str,
        key: str | None = None,
        title: str,
    ) -> SessionRecord:
        """Add a session or touch an existing one (its title stays the first question)."""
        now = datetime.now(UTC).isoformat(timespec="seconds")
        with self._lock:
            records = self._read()
            old = records.get(thread_id)
            record = SessionRecord(
                thread_id=thread_id,
                owner=old.owner if old else owner,
                case=str(case),
                case_id=case_id,
                key=key,
                title=old.title if old else title[:80],
                created=old.created if old else now,
                updated=now,
            )
            records[thread_id] = record
            self._write(records)
            return record

    def get(self, thread_id: str) -> SessionRecord | None:
        """The session, or None."""
        with self._lock:
            return self._read().get(thread_id)

    def for_case(self, case_id: str, owner: str = LOCAL_OWNER) -> list[SessionRecord]:
        """An owner's sessions of a case, newest first."""
        with self._lock:
            records = [
                r for r in self._read().values() if r.case_id == case_id and r.owner == owner
            ]
        return sorted(records, key=lambda r: r.updated, reverse=True)


class UploadIndex(_RecordFile[UploadRecord]):
    """Who uploaded which case: a visitor sees and opens only their own uploads."""

    model = UploadRecord

    def add(self, key: str, owner: str) -> None:
        """Note that ``owner`` uploaded the case ``key``."""
        with self._lock:
            records = self._read()
            owners = records[key].owners if key in records else []
            if owner not in owners:
                records[key] = UploadRecord(key=key, owners=[*owners, owner])
                self._write(records)

    def keys(self, owner: str) -> set[str]:
        """The cases ``owner`` uploaded."""
        with self._lock:
            return {key for key, record in self._read().items() if owner in record.owners}
