"""Cholec80 annotation files as tracks: phase labels per frame, tool presence per second.

The Cholec80 loader reads these; they hold the annotations at their own rate and answer
"what was there at t seconds" without decoding any video.

    tools = read_tool_file(Path("tool_annotations/video01-tool.txt"))
    tools.at(60.0)  # ["Grasper", "Hook"]
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from surgagent.evals.loaders._base import AnnotationError, close_match
from surgagent.tools.vocabulary import CHOLEC80_PHASES, CHOLEC80_TOOLS

__all__ = ["VIDEO_FPS", "PhaseTrack", "ToolTrack", "read_phase_file", "read_tool_file"]

VIDEO_FPS = 25.0


@dataclass(frozen=True)
class PhaseTrack:
    """Phase label indices (into CHOLEC80_PHASES) at ``fps`` rows per second."""

    labels: np.ndarray
    fps: float

    @property
    def duration(self) -> float:
        """Seconds the annotation covers."""
        return len(self.labels) / self.fps

    def index(self, seconds: float) -> int:
        """The row at a time (clamped to the annotated range)."""
        return min(len(self.labels) - 1, max(0, math.floor(seconds * self.fps + 1e-6)))

    def at(self, seconds: float) -> str:
        """The phase name at a time."""
        return CHOLEC80_PHASES[int(self.labels[self.index(seconds)])]

    def runs(self) -> list[tuple[int, int, int]]:
        """``(label, first_row, end_row)`` of each run of one phase, in order."""
        starts = [0, *(np.flatnonzero(np.diff(self.labels)) + 1).tolist()]
        ends = [*starts[1:], len(self.labels)]
        return [(int(self.labels[a]), a, b) for a, b in zip(starts, ends, strict=True)]


@dataclass(frozen=True)
class ToolTrack:
    """Tool presence rows: ``frames`` (video frame numbers) and ``present`` (rows x 7 bools)."""

    frames: np.ndarray
    present: np.ndarray
    video_fps: float = VIDEO_FPS

    @property
    def duration(self) -> float:
        """Seconds the annotation covers (one step past the last row)."""
        step = int(self.frames[1] - self.frames[0]) if len(self.frames) > 1 else self.video_fps
        return (int(self.frames[-1]) + step) / self.video_fps

    def at(self, seconds: float) -> list[str]:
        """Tools present at a time (the last row at or before it), in CHOLEC80_TOOLS order."""
        row = int(np.searchsorted(self.frames, seconds * self.video_fps + 1e-6, side="right")) - 1
        row = max(0, min(row, len(self.frames) - 1))
        return [tool for tool, on in zip(CHOLEC80_TOOLS, self.present[row], strict=True) if on]

    def first_seen(self, tool: str) -> float | None:
        """Seconds of the first row showing ``tool`` (None if it never appears)."""
        rows = np.flatnonzero(self.present[:, CHOLEC80_TOOLS.index(tool)])
        return float(self.frames[rows[0]]) / self.video_fps if len(rows) else None


def _tool_header(path: Path, tokens: list[str]) -> list[int]:
    columns = []
    for name in tokens[1:]:
        if name not in CHOLEC80_TOOLS:
            raise AnnotationError.at(
                path,
                1,
                f"unknown tool column {name!r}.{close_match(name, CHOLEC80_TOOLS)} "
                f"Cholec80 tools: {', '.join(CHOLEC80_TOOLS)}.",
            )
        columns.append(CHOLEC80_TOOLS.index(name))
    return columns


def read_tool_file(path: Path, *, video_fps: float = VIDEO_FPS) -> ToolTrack:
    """Read a Cholec80 tool file (``Frame`` + one 0/1 column per tool, a row every 25 frames).

    Raises:
        AnnotationError: For an unreadable file, an unknown tool column or a malformed row
            (naming the file and line).
    """
    try:
        lines = path.read_text(encoding="utf-8-sig").splitlines()
    except (OSError, UnicodeDecodeError) as exc:
        raise AnnotationError.at(path, None, f"cannot read the tool annotations ({exc}).") from exc
    columns = list(range(len(CHOLEC80_TOOLS)))
    frames: list[int] = []
    rows: list[list[bool]] = []
    for number, line in enumerate(lines, start=1):
        tokens = line.split()
        if not tokens:
            continue
        if not frames and tokens[0].lower() == "frame":
            columns = _tool_header(path, tokens)
            continue
        values = tokens[1:]
        if (
            len(values) != len(columns)
            or not tokens[0].isdigit()
            or any(v not in ("0", "1") for v in values)
        ):
            raise AnnotationError.at(
                path,
                number,
                f"{line.strip()!r} is not 'frame' followed by {len(columns)} 0/1 tool columns.",
            )
        row = [False] * len(CHOLEC80_TOOLS)
        for column, value in zip(columns, values, strict=True):
            row[column] = value == "1"
        frames.append(int(tokens[0]))
        rows.append(row)
    if not frames:
        raise AnnotationError.at(path, None, "no annotated rows.")
    return ToolTrack(np.asarray(frames), np.asarray(rows, dtype=bool), video_fps)


def read_phase_file(path: Path) -> PhaseTrack:
    """Read a Cholec80 phase file (``Frame<TAB>Phase`` rows) as a track.

    Raises:
        AnnotationError: For an unreadable or malformed file (naming the file and line).
    """
    from surgagent.tools.errors import CaseError
    from surgagent.tools.phase.annotations import read_cholec80_phase_file

    try:
        labels, fps = read_cholec80_phase_file(path, CHOLEC80_PHASES, video_fps=VIDEO_FPS)
    except CaseError as exc:
        raise AnnotationError(f"{exc} (in {path})") from exc
    return PhaseTrack(labels, fps)
