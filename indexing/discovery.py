"""Finding the cases under the paths given to ``library add``, and telling changed ones.

A case is a video file, or a folder holding frames (jpg/png) and no video. A folder of
cases is walked down to its cases (hidden entries skipped); notes beside them (``.md``,
``.json``, ``.txt``) are read with their case, and any other file is reported as ignored.

    cases, ignored = discover_cases([Path("cholec80/videos")])
    source_stamp(cases[0])  # changes when the video or its notes change
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Sequence
from pathlib import Path

from surgagent.indexing.types import file_stamp
from surgagent.tools.video.decode import IMAGE_SUFFIXES, VIDEO_SUFFIXES

__all__ = ["discover_cases", "source_stamp"]

_NOTE_SUFFIXES = frozenset({".md", ".json", ".txt"})


def _holds_frames(folder: Path) -> bool:
    """Whether a folder is a frame folder: images in it, and no video beside them."""
    with os.scandir(folder) as entries:
        suffixes = {Path(e.name).suffix.lower() for e in entries if e.is_file()}
    return bool(suffixes & IMAGE_SUFFIXES) and not suffixes & VIDEO_SUFFIXES


def _walk(folder: Path, cases: list[Path], ignored: list[Path]) -> None:
    if _holds_frames(folder):
        cases.append(folder)
        return
    for entry in sorted(folder.iterdir()):
        if entry.name.startswith("."):
            continue
        if entry.is_dir():
            _walk(entry, cases, ignored)
        elif entry.suffix.lower() in VIDEO_SUFFIXES:
            cases.append(entry)
        elif entry.suffix.lower() not in _NOTE_SUFFIXES:
            ignored.append(entry)


def discover_cases(paths: Sequence[Path]) -> tuple[list[Path], list[Path]]:
    """The cases under ``paths``, each once, resolved and in a stable order.

    Args:
        paths: Video files, frame folders, or folders of cases. A file given by name is
            always a case (a bad one fails with its reason when indexed).

    Returns:
        ``(cases, ignored)``: the cases, and the files under the folders that are neither a
        case nor a note.

    Raises:
        FileNotFoundError: If a path does not exist.
    """
    cases: list[Path] = []
    ignored: list[Path] = []
    for given in paths:
        path = Path(given).expanduser()
        if not path.exists():
            raise FileNotFoundError(f"no such file or folder: {path.absolute()}; check the path.")
        path = path.resolve()
        if path.is_dir():
            _walk(path, cases, ignored)
        else:
            cases.append(path)
    return list(dict.fromkeys(cases)), ignored


def source_stamp(path: Path) -> str:
    """A cheap signature of a case and its notes: sizes and modification times, no bytes.

    For a video: the file and its ``<stem>.json`` / ``<stem>.md`` / ``notes.md``; for a
    frame folder: every file in it and its ``<folder>.md``.
    """
    if path.is_dir():
        digest = hashlib.sha256()
        for entry in sorted(path.iterdir()):
            if entry.is_file():
                digest.update(f"{entry.name}\0{file_stamp(entry)}\n".encode())
        sidecars = [path.with_suffix(".md")]
        head = f"dir:{digest.hexdigest()[:16]}"
    else:
        sidecars = [path.with_suffix(".json"), path.with_suffix(".md"), path.parent / "notes.md"]
        head = file_stamp(path)
    notes = [f"{p.name}={file_stamp(p)}" for p in sidecars if p.is_file()]
    return ";".join([head, *notes])
