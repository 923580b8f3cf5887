"""Cases and their frames: open a video or frame folder, sample frames, index, look at frames.

A case is probed once (the probe is cached by content hash), registered by id, and every frame
decoded from it is kept as a JPEG in the case cache, so asking twice never decodes twice.

    case = open_case("examples/sample_case/sample_lapchole.mp4", CaseCache(Path("/tmp/cache")))
    frames = sample_frames(case, [5.0, 10.0], cache)  # Frame(time=5.0, path=.../00000125.jpg)
"""

from __future__ import annotations

import contextlib
import logging
import math
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from langchain_core.messages import BaseMessage
from langchain_core.tools import BaseTool, tool
from langgraph.prebuilt import ToolRuntime
from pydantic import BaseModel, Field, field_validator

from tools._decode import contact_sheet, encode_jpeg, fit_size, folder_images, video_images
from tools._open import looks_like_id, open_frame_folder, open_video_file
from tools.base import TIME_HELP, Evidence, ToolResult, format_time, images_shown_this_turn, parse_time
from tools.cache import Case, CaseCache
from tools.errors import CaseError, ToolInputError, suggest

if TYPE_CHECKING:
    from PIL.Image import Image

__all__ = [
    "Case",
    "CaseCache",
    "Frame",
    "FramesContext",
    "FramesResult",
    "IndexResult",
    "LookAtFramesArgs",
    "clip_times",
    "index_case",
    "load_image",
    "look_at_frames",
    "make_video_tools",
    "open_case",
    "sample_frames",
]

log = logging.getLogger(__name__)

_CONTACT_TILES = 12


class Frame(BaseModel):
    """One frame of a case, kept as a JPEG in the case cache."""

    time: float = Field(description="seconds from the start of the case")
    index: int = Field(description="frame number in the video (0-based)")
    path: Path
    width: int
    height: int


class IndexResult(BaseModel):
    """What `index_case` did."""

    case_id: str
    fps: float
    frames_total: int
    frames_written: int
    seconds: float
    thumbnail: Path


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
) -> int:
    """Decode ``indices`` into the cache; returns how many frames were written."""
    size = fit_size(case.width, case.height, max_side)
    if case.kind == "frames":
        source = folder_images(case.source, indices, size, expected=case.frame_count)
    else:
        start = float(case.metadata.get("start_time", 0.0))
        source = video_images(case.source, indices, size, fps=case.fps, start_time=start)
    written = 0
    with contextlib.closing(source) as images:
        for index, image in images:
            cache.write_bytes(case, _frame_name(max(size), index), encode_jpeg(image))
            written += 1
            if on_frame is not None:
                on_frame()
    return written


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
    """
    frames = _plan(case, times, cache, max_side)
    missing = _missing(frames)
    if missing:
        _extract(case, cache, missing, max_side)
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
    frames already written, so an interrupted index resumes where it stopped.

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
        CaseError: If the video cannot be decoded to its end.
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

    written = _extract(case, cache, missing, max_side, tick) if missing else 0
    sheet = cache.case_dir(case) / "index" / "contact.jpg"
    if written or not sheet.exists():
        shown = min(_CONTACT_TILES, len(frames))
        picks = [frames[round(j * (len(frames) - 1) / max(1, shown - 1))] for j in range(shown)]
        tiles = [(frame.path, format_time(frame.time)) for frame in picks]
        cache.write_bytes(case, "index/contact.jpg", contact_sheet(tiles))
    result = IndexResult(
        case_id=case.id,
        fps=fps,
        frames_total=total,
        frames_written=written,
        seconds=time.perf_counter() - began,
        thumbnail=sheet,
    )
    cache.write_json(case, "index/index.json", result.model_dump(mode="json"))
    return result


# -- the look_at_frames tool ----------------------------------------------------------------


class FramesContext(Protocol):
    """What `look_at_frames` needs from the run context (``graphs.context.RunContext``)."""

    @property
    def case(self) -> Case:
        """The case the run is about."""
        ...

    @property
    def cache(self) -> CaseCache:
        """Where its frames are cached."""
        ...

    @property
    def frame_budget(self) -> int:
        """Most frames shown in one answer."""
        ...

    @property
    def max_image_side(self) -> int:
        """Frames are scaled down to fit this side."""
        ...


class FramesResult(ToolResult):
    """The frames `look_at_frames` showed."""

    case_id: str
    frames: list[Frame]

    def evidence(self) -> list[Evidence]:
        """One frame item per frame shown."""
        return [
            Evidence(
                kind="frame",
                tool="look_at_frames",
                time=frame.time,
                frame=str(frame.path),
                summary=f"frame {frame.index} at {format_time(frame.time, tenths=True)} of case {self.case_id}",
            )
            for frame in self.frames
        ]

    def image_paths(self) -> list[Path]:
        """The JPEG files of the frames, in order."""
        return [frame.path for frame in self.frames]



_DEFAULT_CLIP_COUNT = 4


class LookAtFramesArgs(BaseModel):
    """Arguments of `look_at_frames`: either ``times`` or a clip ``start``-``end`` + ``count``."""

    times: list[str] | None = Field(
        None,
        description=f'Moments to look at, each {TIME_HELP}, e.g. ["00:05", "01:30"]. '
        "Leave empty to sample a clip with start/end/count instead.",
    )
    start: str | None = Field(None, description=f"Start of a clip to sample, {TIME_HELP}.")
    end: str | None = Field(None, description=f"End of the clip, {TIME_HELP}.")
    count: int | None = Field(
        None, ge=1, description="How many evenly spaced frames to take from the clip (default 4)."
    )

    @field_validator("times", mode="before")
    @classmethod
    def _numbers_as_text(cls, value: Any) -> Any:
        if isinstance(value, int | float | str):
            value = [value]
        if isinstance(value, list):
            return [str(v) if isinstance(v, int | float) else v for v in value]
        return value

    @field_validator("start", "end", mode="before")
    @classmethod
    def _number_as_text(cls, value: Any) -> Any:
        return str(value) if isinstance(value, int | float) else value

    def wanted_times(self) -> list[float]:
        """The moments asked for, in seconds: ``times``, or ``count`` spread over a clip.

        Raises:
            ToolInputError: If neither or both ways are given, or a time is malformed.
        """
        clip = (self.start, self.end, self.count)
        if self.times and any(v is not None for v in clip):
            raise ToolInputError("give either times or start/end/count, not both.")
        if self.times:
            return [parse_time(t) for t in self.times]
        if self.start is None or self.end is None:
            raise ToolInputError(
                "say which frames to show: times=[...], or start and end (with count) for a clip."
            )
        count = self.count or _DEFAULT_CLIP_COUNT
        return clip_times(parse_time(self.start), parse_time(self.end), count)


_MAX_LISTED = 16



def _messages_of(state: Any) -> list[BaseMessage]:
    """The message list of a graph state (a dict, a dataclass-like object, or the list)."""
    if isinstance(state, dict):
        return list(state.get("messages", []))
    return list(state if isinstance(state, list) else getattr(state, "messages", []))


_LOOK_DESCRIPTION = (
    "Look at frames of the case video: the images are shown to you after this call. Give "
    "exact moments (times) or a clip (start, end, count). Each frame counts against this "
    "answer's frame budget, so look at few frames, well chosen."
)


@tool(
    "look_at_frames",
    description=_LOOK_DESCRIPTION,
    args_schema=LookAtFramesArgs,
    response_format="content_and_artifact",
)
def look_at_frames(
    runtime: ToolRuntime[FramesContext, Any],
    times: list[str] | None = None,
    start: str | None = None,
    end: str | None = None,
    count: int | None = None,
) -> tuple[str, FramesResult]:
    """Show the planner frames of its case (the description above is what it reads)."""
    ctx = runtime.context
    case = ctx.case
    wanted = LookAtFramesArgs(times=times, start=start, end=end, count=count).wanted_times()
    left = ctx.frame_budget - images_shown_this_turn(_messages_of(runtime.state))
    if len(wanted) > left:
        raise ToolInputError(
            f"asked for {len(wanted)} frames but only {max(left, 0)} of this answer's "
            f"{ctx.frame_budget} are left; "
            + (f"ask for at most {left}." if left > 0 else "answer from what you have seen.")
        )
    frames = sample_frames(case, wanted, ctx.cache, max_side=ctx.max_image_side)
    listed = ", ".join(format_time(frame.time, tenths=True) for frame in frames[:_MAX_LISTED])
    if len(frames) > _MAX_LISTED:
        listed += f" and {len(frames) - _MAX_LISTED} more"
    noun = "frame" if len(frames) == 1 else "frames"
    text = (
        f"Showing {len(frames)} {noun} at {listed} (case {format_time(case.duration)} long); "
        f"{left - len(frames)} frames left this answer."
    )
    return text, FramesResult(case_id=case.id, frames=frames)


def make_video_tools() -> list[BaseTool]:
    """The planner tools this module provides."""
    return [look_at_frames]
