"""Cases and their frames: open a video or frame folder, sample frames, index a case.

A case is probed once (the probe is cached by content hash), registered by id, and
every frame decoded from it is kept as a JPEG in the case cache, so asking twice never
decodes twice.

    case = open_case("examples/sample_case/sample_lapchole.mp4", CaseCache(Path("/tmp/c")))
    frames = sample_frames(case, [5.0, 10.0], cache)  # Frame(time=5.0, path=.../00000125.jpg)
"""

from __future__ import annotations

import contextlib
import logging
import math
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from surgagent.tools.base import (
    format_time,
)
from surgagent.tools.cache import Case, CaseCache
from surgagent.tools.errors import CaseError, ToolInputError, suggest
from surgagent.tools.video.decode import (
    DamagedVideo,
    contact_sheet,
    encode_jpeg,
    fit_size,
    folder_images,
    video_images,
)
from surgagent.tools.video.opening import looks_like_id, open_frame_folder, open_video_file
from surgagent.tools.video.types import Frame, IndexResult

if TYPE_CHECKING:
    from PIL.Image import Image

__all__ = [
    "clip_times",
    "index_case",
    "load_image",
    "open_case",
    "sample_frames",
]

log = logging.getLogger(__name__)

_CONTACT_TILES = 12


# -- opening cases --------------------------------------------------------------------------


def open_case(ref: str | Path, cache: CaseCache) -> Case:
    """Open a case by video path, frame-folder path or registered id, and register it.

    Args:
        ref: A video file (mp4, avi, mkv, mov, webm), a folder of jpg/png frames (sorted by
            name; fps from an optional ``case.json``, else 1), or a registered case id.
        cache: The case cache (probes are cached there by content hash).

    Returns:
        The case; notes found next to it (``<stem>.md``, ``notes.md``, ``<stem>.json``) are
        in ``metadata``.

    Raises:
        CaseError: If the path is missing, the file is empty, corrupt, truncated or not a
            video, the folder holds no images, or the id is unknown.
    """
    path, known = Path(ref).expanduser(), None
    if not path.exists():
        text = str(ref)
        known = cache.lookup(text)
        if known is not None:
            if not known.source.exists():
                raise CaseError(
                    f"case {text!r} was opened from {known.source}, which no longer exists; "
                    "open the file at its new path."
                )
            path = known.source
        else:
            if looks_like_id(text):
                ids = [case.id for case in cache.list_cases()]
                raise CaseError(
                    f"no case with id {text!r} is registered.{suggest(text, ids)} "
                    "Open a video or frame folder by its path first."
                )
            raise CaseError(f"no such file or folder: {path.absolute()}; check the path.")
    path = path.resolve()
    case = open_frame_folder(path, cache) if path.is_dir() else open_video_file(path, cache)
    if known is not None and known.id != case.id:
        log.warning("case %s changed on disk since it was opened; it is now %s", known.id, case.id)
    if cache.lookup(case.id) != case:
        cache.register(case)
    return case


# -- frames ---------------------------------------------------------------------------------


def clip_times(start: float, end: float, count: int) -> list[float]:
    """``count`` evenly spaced times from ``start`` to ``end``, both included.

    Raises:
        ToolInputError: If ``end`` is before ``start`` or ``count`` is below 1.
    """
    if count < 1:
        raise ToolInputError(f"count={count} frames is too few; ask for at least 1.")
    if end < start:
        raise ToolInputError(
            f"the clip ends ({format_time(end)}) before it starts ({format_time(start)}); "
            "swap start and end."
        )
    if count == 1:
        return [(start + end) / 2]
    step = (end - start) / (count - 1)
    return [start + i * step for i in range(count)]


def _frame_name(long_side: int, index: int) -> str:
    return f"frames/{long_side}/{index:08d}.jpg"


def _extract(
    case: Case,
    cache: CaseCache,
    indices: Sequence[int],
    max_side: int,
    on_frame: Callable[[], None] | None = None,
) -> tuple[int, list[DamagedVideo]]:
    """Decode ``indices`` into the cache, around any damaged spans of the video.

    Returns:
        How many frames were written, and the damaged spans that held wanted frames.
    """
    size = fit_size(case.width, case.height, max_side)
    wanted, written, damage = sorted(set(indices)), 0, []
    while wanted:
        if case.kind == "frames":
            source = folder_images(case.source, wanted, size, expected=case.frame_count)
        else:
            start = float(case.metadata.get("start_time", 0.0))
            source = video_images(case.source, wanted, size, fps=case.fps, start_time=start)
        done: set[int] = set()
        try:
            with contextlib.closing(source) as images:
                for index, image in images:
                    cache.write_bytes(case, _frame_name(max(size), index), encode_jpeg(image))
                    done.add(index)
                    if on_frame is not None:
                        on_frame()
            wanted = []
        except DamagedVideo as error:
            undone = [i for i in wanted if i not in done]
            left = [i for i in undone if not error.covers(case.frame_time(i))]
            if len(left) < len(undone):
                damage.append(error)
            elif not done:
                raise  # decoding fails before any frame it could skip to
            wanted = left
        written += len(done)
    return written, damage


def _plan(case: Case, times: Sequence[float], cache: CaseCache, max_side: int) -> list[Frame]:
    """The frames nearest ``times`` and where the cache keeps them (nothing is decoded)."""
    indices = [case.frame_index(case.check_time(t)) for t in times]
    width, height = fit_size(case.width, case.height, max_side)
    folder = cache.case_dir(case)
    return [
        Frame(
            time=case.frame_time(index),
            index=index,
            path=folder / _frame_name(max(width, height), index),
            width=width,
            height=height,
        )
        for index in indices
    ]


def _missing(frames: Sequence[Frame]) -> list[int]:
    return sorted({frame.index for frame in frames if not frame.path.exists()})


def sample_frames(
    case: Case, times: Sequence[float], cache: CaseCache, *, max_side: int = 896
) -> list[Frame]:
    """The frames nearest ``times``, decoded in one pass (or read from the cache).

    Args:
        case: An opened case.
        times: Seconds from the start, each within ``[0, case.duration]``; any order.
        cache: The case cache; frames decoded before are not decoded again.
        max_side: Frames are scaled down to fit this side.

    Returns:
        One `Frame` per time, in the order given.

    Raises:
        ToolInputError: If a time lies outside the case.
        CaseError: If the video cannot be decoded up to a wanted time.
        DamagedVideo: If a wanted time lies in a damaged span (the frames outside it are
            decoded and cached, so asking again without it is instant).
    """
    frames = _plan(case, times, cache, max_side)
    missing = _missing(frames)
    if missing:
        _, damage = _extract(case, cache, missing, max_side)
        if damage:
            raise damage[0]
    return frames


def load_image(path: Path) -> Image:
    """Load an image file (a cached frame) as an RGB PIL image.

    Raises:
        CaseError: If the file is missing or not an image.
    """
    from PIL import Image as PILImage

    try:
        with PILImage.open(path) as image:
            return image.convert("RGB")
    except OSError as exc:
        raise CaseError(f"frame image {path} cannot be read ({exc}); sample it again.") from exc


# -- indexing -------------------------------------------------------------------------------


def index_case(
    case: Case,
    cache: CaseCache,
    *,
    fps: float = 1.0,
    max_side: int = 896,
    progress: Callable[[int, int], None] | None = None,
) -> IndexResult:
    """Sample the case at ``fps`` in one sequential pass into the cache, plus a contact sheet.

    The frames land where `sample_frames` looks, so later looks are instant. A rerun skips
    frames already written, so an interrupted index resumes where it stopped. Damaged spans
    of a video are skipped and named in the result.

    Args:
        case: An opened case.
        cache: The case cache.
        fps: Frames per second to keep (1.0: one a second).
        max_side: Frames are scaled down to fit this side (as in `sample_frames`).
        progress: Called as ``progress(done, total)`` after each frame (and once at the start).

    Returns:
        The `IndexResult`; ``thumbnail`` is the contact sheet.

    Raises:
        ValueError: If ``fps`` is not positive.
        CaseError: If the video cannot be decoded at all past some point.
    """
    if not fps > 0:
        raise ValueError(f"fps={fps} must be positive, e.g. 1.0 for one frame a second.")
    began = time.perf_counter()
    count = max(1, math.ceil(case.duration * fps - 1e-9))
    times = [min(k / fps, case.duration) for k in range(count)]
    frames = list({frame.index: frame for frame in _plan(case, times, cache, max_side)}.values())
    missing = _missing(frames)
    total, done = len(frames), len(frames) - len(missing)
    if progress is not None:
        progress(done, total)

    def tick() -> None:
        nonlocal done
        done += 1
        if progress is not None:
            progress(done, total)

    written, damage = _extract(case, cache, missing, max_side, tick) if missing else (0, [])
    sheet = cache.case_dir(case) / "index" / "contact.jpg"
    frames = [frame for frame in frames if frame.path.exists()]
    if frames and (written or not sheet.exists()):
        shown = min(_CONTACT_TILES, len(frames))
        picks = [frames[round(j * (len(frames) - 1) / max(1, shown - 1))] for j in range(shown)]
        tiles = [(frame.path, format_time(frame.time)) for frame in picks]
        cache.write_bytes(case, "index/contact.jpg", contact_sheet(tiles))
    result = IndexResult(
        case_id=case.id,
        fps=fps,
        frames_total=total,
        frames_written=written,
        damaged=[str(error) for error in damage],
        seconds=time.perf_counter() - began,
        thumbnail=sheet,
    )
    cache.write_json(case, "index/index.json", result.model_dump(mode="json"))
    return result
