"""Cholec80-format phase annotations: reading, writing, aligning and pairing with videos.

A phase file has a ``Frame<TAB>Phase`` header, then one row per video frame (e.g.
``video01-phase.txt`` next to ``video01.mp4``).

    labels = read_cholec80_phase_file(Path("video01-phase.txt"), CHOLEC80_PHASES)
    pairs = find_training_pairs(Path("videos"), Path("phase_annotations"))
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np

from surgagent.tools.cache import atomic_write_text
from surgagent.tools.errors import CaseError, ConfigError, suggest
from surgagent.tools.video.decode import VIDEO_SUFFIXES
from surgagent.tools.vocabulary import CHOLEC80_PHASES

__all__ = [
    "align_labels",
    "check_vocabulary",
    "find_training_pairs",
    "read_cholec80_phase_file",
    "write_cholec80_phase_file",
]


# -- annotation files -----------------------------------------------------------------------


def check_vocabulary(vocabulary: Sequence[str] | None) -> list[str]:
    """The phase names to use: Cholec80's seven where None.

    Raises:
        ConfigError: If the list is empty, has fewer than two names, or repeats a name.
    """
    names = [str(name).strip() for name in (vocabulary or CHOLEC80_PHASES)]
    if len(names) < 2 or not all(names):
        raise ConfigError(f"a phase vocabulary needs at least two non-empty names, got {names}.")
    repeated = sorted({name for name in names if names.count(name) > 1})
    if repeated:
        raise ConfigError(f"phase names repeat in the vocabulary: {', '.join(repeated)}.")
    return names


def _phase_index(token: str, vocabulary: Sequence[str], path: Path, line: int) -> int:
    if token in vocabulary:
        return vocabulary.index(token)
    if token.isdigit() and int(token) < len(vocabulary):
        return int(token)  # some tools write indices instead of names
    raise CaseError(
        f"{path.name} line {line}: unknown phase {token!r}.{suggest(token, vocabulary)} "
        f"Known phases: {', '.join(vocabulary)}; pass the procedure's vocabulary if it differs."
    )


def read_cholec80_phase_file(
    path: Path, vocabulary: Sequence[str], *, video_fps: float = 25.0
) -> tuple[np.ndarray, float]:
    """Read a Cholec80 phase file: a ``Frame<TAB>Phase`` header, then ``frame<TAB>name`` rows.

    Rows must step by a constant number of frames; their rate is ``video_fps / step`` (25 fps
    for the original annotations, 1 fps for files written every 25th frame).

    Args:
        path: The file.
        vocabulary: Phase names in label order (a row may also give a label index).
        video_fps: The frame rate of the video the frame numbers count.

    Returns:
        ``(labels, fps)``: int label indices, one per row, and their rate.

    Raises:
        CaseError: If the file is missing or unreadable, has no rows, uneven frame steps, or
            a phase outside the vocabulary.
    """
    try:
        lines = Path(path).read_text(encoding="utf-8-sig").splitlines()
    except (OSError, UnicodeDecodeError) as exc:
        raise CaseError(f"cannot read phase annotations {path} ({exc}).") from exc
    frames: list[int] = []
    labels: list[int] = []
    for number, line in enumerate(lines, start=1):
        parts = line.split()
        if not parts or (number == 1 and parts[0].lower() == "frame"):
            continue
        if len(parts) != 2 or not parts[0].isdigit():
            raise CaseError(
                f"{path.name} line {number}: {line.strip()!r} is not 'frame<TAB>phase'; "
                "Cholec80 phase files have a 'Frame\\tPhase' header and one row per frame."
            )
        frames.append(int(parts[0]))
        labels.append(_phase_index(parts[1], vocabulary, Path(path), number))
    if not labels:
        raise CaseError(f"{path} has no annotated frames; it covers an empty range of video.")
    steps = set(np.diff(frames).tolist()) if len(frames) > 1 else {1}
    if len(steps) != 1 or min(steps) < 1:
        raise CaseError(
            f"{path.name}: frame numbers must rise by a constant step (found steps "
            f"{sorted(steps)[:5]}); write one row per frame or per fixed number of frames."
        )
    return np.asarray(labels, dtype=np.int64), video_fps / steps.pop()


def write_cholec80_phase_file(
    path: Path,
    labels: Sequence[int] | np.ndarray,
    vocabulary: Sequence[str],
    *,
    fps: float = 1.0,
    video_fps: float = 25.0,
) -> Path:
    """Write labels sampled at ``fps`` as a Cholec80 phase file (frame numbers at ``video_fps``).

    Returns:
        ``path`` (written atomically).
    """
    step = video_fps / fps
    rows = [f"{round(k * step)}\t{vocabulary[int(label)]}" for k, label in enumerate(labels)]
    return atomic_write_text(Path(path), "Frame\tPhase\n" + "\n".join(rows) + "\n")


def align_labels(labels: np.ndarray, labels_fps: float, count: int, fps: float) -> np.ndarray:
    """The labels at the ``count`` feature times ``k / fps`` (nearest annotated frame).

    Samples past the annotations' end are left out, so the result may be shorter than
    ``count``.
    """
    index = np.floor(np.arange(count) * labels_fps / fps + 0.5).astype(np.int64)
    return labels[index[index < len(labels)]]


def find_training_pairs(videos_dir: Path, annotations_dir: Path) -> list[tuple[Path, Path]]:
    """Match ``<name>.<video suffix>`` with ``<name>-phase.txt`` (or ``<name>.txt``).

    Raises:
        ConfigError: If a folder is missing or no video has an annotation file.
    """
    for folder in (videos_dir, annotations_dir):
        if not Path(folder).is_dir():
            raise ConfigError(f"no such folder: {folder}; check the path.")
    videos = sorted(p for p in Path(videos_dir).iterdir() if p.suffix.lower() in VIDEO_SUFFIXES)
    pairs = []
    for video in videos:
        for name in (f"{video.stem}-phase.txt", f"{video.stem}.txt"):
            if (Path(annotations_dir) / name).is_file():
                pairs.append((video, Path(annotations_dir) / name))
                break
    if not pairs:
        found = ", ".join(p.name for p in videos[:5]) or "no videos"
        raise ConfigError(
            f"no video in {videos_dir} ({found}) has a phase file in {annotations_dir}; "
            "name them like video01.mp4 and video01-phase.txt."
        )
    return pairs
