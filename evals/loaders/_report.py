"""What a loader could not turn into items, and what it found on disk besides its items.

Loaders fill a `LoadReport` as they go: every folder, file or row they look at and do not
turn into an item is counted there with its reason, so nothing is dropped silently. A
`Survey` is what `surgagent eval check` compares the items against: the frames on disk,
the frame-rate and numbering assumptions, and each video's length.

    report = LoadReport(dataset="endovis2017", root="data/ev17")
    report.skip("instrument_dataset_1/ground_truth/Other_labels", "catch-all class", Skip.DESIGN)
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path

from pydantic import BaseModel, Field

from surgagent.evals.records import TaskRecord

__all__ = [
    "CaseTiming",
    "LoadReport",
    "LoadResult",
    "Skip",
    "SkippedEntry",
    "Survey",
    "TimingNote",
    "VideoLength",
    "compare_timing",
    "relative",
    "relative_all",
    "steps_of",
    "video_length",
]


def relative(path: Path, root: Path) -> str:
    """``path`` relative to ``root`` in POSIX form (absolute where it lies outside)."""
    try:
        return path.relative_to(root).as_posix()
    except ValueError:
        return path.as_posix()


_EXAMPLES = 5


class Skip(StrEnum):
    """Why something was not turned into items.

    ``design``: the dataset's own convention (an empty mask, an interpolated row, the
    catch-all class); ``unreadable``: a file that cannot be read; ``no_media``: an
    annotation whose frame or video is missing; ``unrecognised``: a folder or file that does
    not fit the layout; ``duplicate``: an entry that repeats one already read;
    ``incomplete``: an annotation whose companion file (e.g. the tool file of a video) is
    missing; ``renamed``: an entry kept under a new id because its id repeats an earlier
    one's.
    """

    DESIGN = "design"
    UNREADABLE = "unreadable"
    NO_MEDIA = "no_media"
    UNRECOGNISED = "unrecognised"
    DUPLICATE = "duplicate"
    INCOMPLETE = "incomplete"
    RENAMED = "renamed"


class SkippedEntry(BaseModel):
    """One folder, file or group of rows a loader left out, and why.

    Attributes:
        path: The folder or file, relative to the dataset root.
        reason: What was wrong with it or why it is left out, in words.
        kind: The class of reason (`Skip`).
        count: How many entries (rows, masks, files) of ``path`` share this reason.
        examples: A few of them (e.g. the rows' frames), where ``path`` holds many.
    """

    path: str
    reason: str
    kind: Skip
    count: int = Field(1, ge=1)
    examples: list[str] = Field(default_factory=list)


class LoadReport(BaseModel):
    """Everything a loader left out of a dataset, with reasons."""

    dataset: str
    root: str
    skipped: list[SkippedEntry] = Field(default_factory=list)

    def skip(
        self, path: str, reason: str, kind: Skip, count: int = 1, example: str | None = None
    ) -> None:
        """Count ``count`` entries of ``path`` left out for ``reason`` (merged with the same).

        ``example`` names the entry (a row's frame, say); the first few are kept.
        """
        if count < 1:
            return
        for entry in self.skipped:
            if (entry.path, entry.reason, entry.kind) == (path, reason, kind):
                entry.count += count
                if example is not None and len(entry.examples) < _EXAMPLES:
                    entry.examples.append(example)
                return
        examples = [example] if example is not None else []
        self.skipped.append(
            SkippedEntry(path=path, reason=reason, kind=kind, count=count, examples=examples)
        )

    def total(self, *, problems_only: bool = False) -> int:
        """Entries left out (only those that are not the dataset's design, if asked)."""
        return sum(
            entry.count
            for entry in self.skipped
            if not (problems_only and entry.kind is Skip.DESIGN)
        )

    def summary(self, limit: int = 5) -> str:
        """One line per reason (at most ``limit``, the largest first), for a log message."""
        totals: dict[tuple[Skip, str], int] = {}
        for entry in self.skipped:
            key = (entry.kind, entry.reason)
            totals[key] = totals.get(key, 0) + entry.count
        ranked = sorted(totals.items(), key=lambda pair: (-pair[1], pair[0]))
        lines = [f"{count} x {reason} ({kind.value})" for (kind, reason), count in ranked]
        more = len(lines) - limit
        return "; ".join(lines[:limit]) + (f"; and {more} more reasons" if more > 0 else "")

    def log(self, logger: logging.Logger) -> None:
        """Log the summary: a warning where a problem was found, info where all is by design."""
        if not self.skipped:
            return
        problems = self.total(problems_only=True)
        level = logging.WARNING if problems else logging.INFO
        logger.log(
            level,
            "%s: left out %d entries under %s (%d not by the dataset's design): %s. "
            "Run `surgagent eval check` for the full list.",
            self.dataset,
            self.total(),
            self.root,
            problems,
            self.summary(),
        )


@dataclass(frozen=True)
class LoadResult:
    """A loader's items (sorted by id) and its report of what it left out."""

    items: list[TaskRecord]
    report: LoadReport


class CaseTiming(BaseModel):
    """One annotation file's time span against its video's, where there is a video.

    Attributes:
        case: The case (video) id.
        annotation: The annotation file, relative to the dataset root.
        last_frame: The last annotated frame number.
        annotated_s: Seconds the annotation covers at the assumed frame rate.
        assumed_fps: The frame rate the frame numbers are taken to count.
        video: The video file, relative to the root (None where the layout has none).
        video_fps: The video's frame rate, where it could be read.
        video_s: The video's length in seconds, where it could be read.
        agrees: Whether the annotation fits the video (None where nothing to compare).
        error: Whether the disagreement puts items at wrong times (another frame rate, rows
            past the video's end, an unreadable video), rather than an annotation that
            stops before the video does.
        note: What disagrees, in words.
    """

    case: str
    annotation: str
    last_frame: int
    annotated_s: float
    assumed_fps: float
    video: str | None = None
    video_fps: float | None = None
    video_s: float | None = None
    agrees: bool | None = None
    error: bool = False
    note: str = ""


class TimingNote(BaseModel):
    """A disagreement between a file and the frame-rate or numbering assumption.

    ``error`` marks one that puts items at wrong times (e.g. a video at another frame rate);
    others (an irregular row step) are warnings.
    """

    path: str
    problem: str
    count: int = 1
    error: bool = False


class Survey(BaseModel):
    """What the files hold besides the items, for `surgagent eval check`.

    Attributes:
        assumptions: The frame-rate and numbering assumptions the loader uses, in words.
        frames: Media files on disk that annotations could refer to (relative to the root).
        annotated: Media files the annotations refer to, items or not (e.g. frames left
            out by ``every_s`` or as empty); None where they are exactly the items' media.
        timings: Per annotation file, its span against its video's.
        notes: Disagreements between the files and the assumptions.
    """

    assumptions: list[str] = Field(default_factory=list)
    frames: list[str] = Field(default_factory=list)
    annotated: list[str] | None = None
    timings: list[CaseTiming] = Field(default_factory=list)
    notes: list[TimingNote] = Field(default_factory=list)


class VideoLength(BaseModel):
    """A video's frame rate, frame count and length, or why they could not be read."""

    fps: float = 0.0
    frames: int = 0
    seconds: float = 0.0
    error: str | None = None


def video_length(path: Path) -> VideoLength:
    """Probe a video's rate and length (decodes one frame; needs PyAV).

    Returns:
        The length, or a `VideoLength` whose ``error`` says why it could not be read.
    """
    from surgagent.tools.errors import CaseError
    from surgagent.tools.video.decode import probe_video

    try:
        probe = probe_video(path)
    except (CaseError, ImportError) as exc:
        return VideoLength(error=str(exc))
    return VideoLength(fps=probe.fps, frames=probe.frame_count, seconds=probe.duration)


def compare_timing(
    timing: CaseTiming, video: Path | None, root: Path, slack_s: float
) -> CaseTiming:
    """``timing`` completed with its video's rate and length and whether they agree.

    The annotation agrees when the video has the assumed rate and the annotated span ends
    within ``slack_s`` of the video's end (one annotation step, typically). Another rate,
    rows past the end or an unreadable video are errors; an annotation that stops more than
    ``slack_s`` before the end is a disagreement but not an error.
    """
    if video is None or not video.is_file():
        return timing
    length = video_length(video)
    update: dict[str, object] = {"video": relative(video, root)}
    if length.error:
        note = f"cannot read the video: {length.error}"
        return timing.model_copy(update={**update, "agrees": False, "error": True, "note": note})
    update.update(video_fps=round(length.fps, 3), video_s=round(length.seconds, 3))
    errors, others = [], []
    if abs(length.fps - timing.assumed_fps) > 0.01 * timing.assumed_fps:
        errors.append(f"the video runs at {length.fps:g} fps, not {timing.assumed_fps:g}")
    if timing.annotated_s > length.seconds + slack_s:
        errors.append(
            f"frame {timing.last_frame} ({timing.annotated_s:.1f} s) is past the video's end "
            f"({length.seconds:.1f} s)"
        )
    elif timing.annotated_s < length.seconds - slack_s:
        others.append(
            f"the annotation stops at {timing.annotated_s:.1f} s of a {length.seconds:.1f} s video"
        )
    problems = errors + others
    update.update(agrees=not problems, error=bool(errors), note="; ".join(problems))
    return timing.model_copy(update=update)


def relative_all(paths: Iterable[Path], root: Path) -> list[str]:
    """Sorted POSIX paths of ``paths`` relative to ``root``."""
    return sorted(relative(path, root) for path in paths)


def steps_of(numbers: Sequence[int]) -> dict[int, int]:
    """How often each step between consecutive sorted numbers occurs."""
    ordered = sorted(numbers)
    counts: dict[int, int] = {}
    for a, b in zip(ordered, ordered[1:], strict=False):
        counts[b - a] = counts.get(b - a, 0) + 1
    return counts
