"""The case record and the case cache: where work on a case is kept between runs.

Everything derived from a case (its probe, sampled frames, detections, phase segments) lives
under ``<root>/cases/<content hash>/``, so a copy of the same video shares the work and an
edited one does not. Files are written atomically (a temp file in the same folder, then
``os.replace``): a crash leaves the old file or the new one, never half of one. A registry
(``<root>/cases.json``) remembers every case opened, so a case can be named by its id.

    cache = CaseCache(Path("~/.surgagent/cache").expanduser())
    path = cache.artifact_path(case, "detections", version="1", model_id="yolo11n", suffix=".json")
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import math
import os
import re
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Literal

from filelock import FileLock
from pydantic import BaseModel, ConfigDict, ValidationError

from surgagent.tools.base import format_time
from surgagent.tools.errors import ToolInputError

__all__ = [
    "Case",
    "CaseCache",
    "atomic_write_bytes",
    "atomic_write_text",
    "slugify",
]

log = logging.getLogger(__name__)

_REGISTRY = "cases.json"
_SAFE_PART = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*$")


def slugify(text: str, max_len: int = 40) -> str:
    """Lower-case ``text`` and keep runs of letters and digits joined by ``-``."""
    slug = re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-")[:max_len].strip("-")
    return slug or "case"


class Case(BaseModel):
    """A surgical case: one video file or one folder of frames, probed.

    Times are seconds from the first frame; frame ``i`` shows time ``i / fps``.
    """

    model_config = ConfigDict(frozen=True)

    id: str
    source: Path
    kind: Literal["video", "frames"]
    fps: float
    duration: float
    width: int
    height: int
    frame_count: int
    content_hash: str
    metadata: dict[str, Any] = {}

    def check_time(self, t: float) -> float:
        """Return ``t`` if it lies within the case.

        Raises:
            ToolInputError: If ``t`` is negative or past the end of the case.
        """
        if t < 0 or t > self.duration + 1e-6:
            raise ToolInputError(
                f"time {format_time(t)} is past the end of the case "
                f"({format_time(self.duration)}); ask for a time between 00:00 and "
                f"{format_time(self.duration)}."
                if t >= 0
                else f"time {t} is negative; times are seconds from the start of the case."
            )
        return t

    def frame_index(self, t: float) -> int:
        """The index of the frame nearest time ``t`` (clamped to the case)."""
        return max(0, min(self.frame_count - 1, math.floor(t * self.fps + 0.5)))

    def frame_time(self, index: int) -> float:
        """The time in seconds at which frame ``index`` is shown."""
        return index / self.fps


def atomic_write_bytes(path: Path, data: bytes) -> Path:
    """Write ``data`` to ``path`` through a temp file in the same folder and ``os.replace``.

    Returns:
        ``path``; its parent folder is created where missing.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
        os.replace(tmp, path)
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
    return path


def atomic_write_text(path: Path, text: str) -> Path:
    """Write UTF-8 ``text`` to ``path`` atomically (see `atomic_write_bytes`)."""
    return atomic_write_bytes(path, text.encode("utf-8"))


def read_json_file(path: Path) -> dict[str, Any] | None:
    """Read a JSON object, or None when the file is missing or unreadable."""
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return None
    except (OSError, ValueError) as exc:
        log.warning("ignoring unreadable cache file %s: %s", path, exc)
        return None
    return data if isinstance(data, dict) else None


def _check_part(value: str, what: str) -> str:
    if not _SAFE_PART.match(value):
        raise ValueError(
            f"{what} {value!r} is not a plain name; use letters, digits, '.', '_' and '-'."
        )
    return value


class CaseCache:
    """Per-case work kept on disk, plus the registry of cases opened so far.

    Args:
        root: The cache folder (created on first write).
    """

    def __init__(self, root: Path) -> None:
        self.root = Path(root).expanduser().absolute()

    def __repr__(self) -> str:
        return f"CaseCache({str(self.root)!r})"

    # -- per-case files -------------------------------------------------------------------

    def hash_dir(self, content_hash: str) -> Path:
        """The folder for content with hash ``content_hash`` (not created)."""
        return self.root / "cases" / _check_part(content_hash[:24], "content hash")

    def case_dir(self, case: Case) -> Path:
        """The folder holding everything derived from ``case`` (created)."""
        folder = self.hash_dir(case.content_hash)
        folder.mkdir(parents=True, exist_ok=True)
        return folder

    def _file(self, case: Case, name: str) -> Path:
        parts = Path(name).parts
        if not parts or Path(name).is_absolute():
            raise ValueError(f"cache file name {name!r} must be a relative path")
        for part in parts:
            _check_part(part, "cache file name part")
        return self.case_dir(case).joinpath(*parts)

    def read_json(self, case: Case, name: str) -> dict[str, Any] | None:
        """Read ``name`` (relative to the case folder); None when missing or unreadable."""
        return read_json_file(self._file(case, name))

    def write_json(self, case: Case, name: str, data: dict[str, Any]) -> Path:
        """Write ``data`` as JSON to ``name`` in the case folder, atomically.

        Returns:
            The file written.
        """
        return atomic_write_text(self._file(case, name), json.dumps(data, indent=1, default=str))

    def write_bytes(self, case: Case, name: str, data: bytes) -> Path:
        """Write ``data`` to ``name`` in the case folder, atomically.

        Returns:
            The file written.
        """
        return atomic_write_bytes(self._file(case, name), data)

    def artifact_path(
        self, case: Case, kind: str, *, version: str, model_id: str = "", suffix: str
    ) -> Path:
        """Where a tool keeps one result for ``case``: keyed by content, version and model.

        Args:
            case: The case the result belongs to.
            kind: What the result is, a plain name (``"detections"``, ``"phases"``).
            version: The producing tool's version; bump it to invalidate old results.
            model_id: The model that produced it (hub id or path), if any.
            suffix: File suffix such as ``".json"`` or ``".npz"``.

        Returns:
            A path inside the case folder (its parent exists); write it with
            `atomic_write_bytes` / `atomic_write_text`.

        Raises:
            ValueError: If ``kind`` or ``version`` is not a plain name.
        """
        name = _check_part(version, "version")
        if model_id:
            digest = hashlib.sha256(model_id.encode("utf-8")).hexdigest()[:8]
            name += f"--{slugify(model_id)}-{digest}"
        suffix = suffix if suffix.startswith(".") or not suffix else f".{suffix}"
        folder = self.case_dir(case) / _check_part(kind, "artifact kind")
        folder.mkdir(exist_ok=True)
        return folder / f"{name}{suffix}"

    # -- registry -------------------------------------------------------------------------

    @contextlib.contextmanager
    def _registry_lock(self) -> Iterator[None]:
        """Hold the registry's lock (across processes, on every platform)."""
        self.root.mkdir(parents=True, exist_ok=True)
        with FileLock(self.root / "cases.lock"):
            yield

    def _read_registry(self) -> dict[str, Any]:
        data = read_json_file(self.root / _REGISTRY) or {}
        cases = data.get("cases")
        return cases if isinstance(cases, dict) else {}

    def register(self, case: Case) -> None:
        """Remember ``case`` under its id (replacing an older entry with that id)."""
        with self._registry_lock():
            cases = self._read_registry()
            cases[case.id] = case.model_dump(mode="json")
            text = json.dumps({"version": 1, "cases": cases}, indent=1)
            atomic_write_text(self.root / _REGISTRY, text)

    def lookup(self, case_id: str) -> Case | None:
        """The registered case with id ``case_id``, or None."""
        entry = self._read_registry().get(case_id)
        return self._to_case(case_id, entry) if entry is not None else None

    def list_cases(self) -> list[Case]:
        """Every registered case, in the order they were first registered."""
        found = (self._to_case(key, entry) for key, entry in self._read_registry().items())
        return [case for case in found if case is not None]

    @staticmethod
    def _to_case(case_id: str, entry: Any) -> Case | None:
        try:
            return Case.model_validate(entry)
        except ValidationError as exc:
            log.warning("ignoring registry entry %r: %s", case_id, exc)
            return None
