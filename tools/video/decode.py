"""Decoding for the video room: probing, one-pass frame decoding, frame folders, JPEGs.

Videos go through PyAV, frame folders through Pillow. Every FFmpeg failure becomes a
`CaseError` naming the file (and, mid-decode, a `DamagedVideo` naming the damaged span),
so callers never see ``av.error`` types.

    info = probe_video(Path("case.mp4"))
    images = video_images(Path("case.mp4"), [0, 25], (320, 240), fps=info.fps)  # (index, PIL)
"""

from __future__ import annotations

import contextlib
import io
import math
import re
from collections.abc import Generator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pydantic import BaseModel

from surgagent.tools.base import format_time
from surgagent.tools.errors import CaseError

if TYPE_CHECKING:
    from av.container import InputContainer
    from av.video.frame import VideoFrame
    from av.video.stream import VideoStream
    from PIL.Image import Image

__all__ = [
    "IMAGE_SUFFIXES",
    "JPEG_QUALITY",
    "SEEK_GAP",
    "VIDEO_SUFFIXES",
    "DamagedVideo",
    "VideoProbe",
    "contact_sheet",
    "decode_frames",
    "encode_jpeg",
    "fit_size",
    "folder_images",
    "list_images",
    "probe_video",
    "video_images",
]

VIDEO_SUFFIXES = frozenset({".mp4", ".m4v", ".avi", ".mkv", ".mov", ".webm", ".mpg", ".mpeg"})
IMAGE_SUFFIXES = frozenset({".jpg", ".jpeg", ".png"})

JPEG_QUALITY = 90
# Seek rather than decode through when the next wanted frame is this many seconds ahead:
# sequential decoding costs ~12 ms per second of 25 fps SD video here, a seek ~30 ms.
SEEK_GAP = 5.0
# Probe reports may overstate the length by a few frames; a frame asked for this close to
# where decoding ended is served by the last frame instead of failing.
_END_SLACK_S = 1.0


class VideoProbe(BaseModel):
    """What probing a video file found."""

    fps: float
    duration: float
    width: int
    height: int
    frame_count: int
    start_time: float = 0.0
    codec: str = ""
    format: str = ""


def fit_size(width: int, height: int, max_side: int) -> tuple[int, int]:
    """``(width, height)`` scaled down (never up) so the longer side is at most ``max_side``."""
    scale = min(1.0, max_side / max(width, height))
    return max(1, round(width * scale)), max(1, round(height * scale))


def encode_jpeg(image: Image, quality: int = JPEG_QUALITY) -> bytes:
    """Encode a PIL image as JPEG bytes."""
    buffer = io.BytesIO()
    image.convert("RGB").save(buffer, format="JPEG", quality=quality)
    return buffer.getvalue()


def _reason(exc: BaseException) -> str:
    text = getattr(exc, "strerror", None) or str(exc)
    return str(text).split(":")[0].strip().rstrip(".").lower() or type(exc).__name__


def _open(path: Path) -> InputContainer:
    import av

    try:
        return av.open(str(path), mode="r")
    except FileNotFoundError:
        raise CaseError(f"no such file: {path}; check the path.") from None
    except (av.error.FFmpegError, OSError, UnicodeDecodeError) as exc:
        raise CaseError(
            f"{path} is not a readable video ({_reason(exc)}); it may be truncated or corrupt, "
            "or not a video at all: open an mp4, avi, mkv, mov or webm file."
        ) from exc


def _rate(stream: VideoStream) -> float:
    for rate in (stream.average_rate, stream.guessed_rate, stream.base_rate):
        if rate and math.isfinite(float(rate)) and float(rate) > 0:
            return float(rate)
    return 0.0


def _count_packets(container: InputContainer, stream: VideoStream) -> int:
    return sum(1 for packet in container.demux(stream) if packet.size)


def probe_video(path: Path) -> VideoProbe:
    """Read a video's frame rate, length, size and frame count, decoding only its first frame.

    Args:
        path: The video file.

    Returns:
        The probe; ``duration`` is ``frame_count / fps``.

    Raises:
        CaseError: If the file is missing, not a video, has no video stream or no
            decodable frame.
    """
    import av

    with _open(path) as container:
        if not container.streams.video:
            raise CaseError(f"{path} has no video stream; open a video file or a frame folder.")
        stream = container.streams.video[0]
        fps = _rate(stream)
        if not fps:
            raise CaseError(f"{path} does not say its frame rate; re-encode it (e.g. to mp4).")
        try:
            first = next(container.decode(stream), None)
        except av.error.FFmpegError as exc:
            raise CaseError(
                f"{path} has no decodable frame ({_reason(exc)}); the file is probably corrupt."
            ) from exc
        if first is None:
            raise CaseError(f"{path} has no video frames; the file is probably truncated.")
        frame_count = int(stream.frames or 0)
        if not frame_count:
            seconds = _container_seconds(container, stream)
            if seconds:
                frame_count = max(1, round(seconds * fps))
            else:
                container.seek(0)
                frame_count = _count_packets(container, stream)
        return VideoProbe(
            fps=fps,
            duration=frame_count / fps,
            width=first.width,
            height=first.height,
            frame_count=frame_count,
            start_time=float(first.time or 0.0),
            codec=stream.codec_context.name,
            format=container.format.name,
        )


def _container_seconds(container: InputContainer, stream: VideoStream) -> float:
    if stream.duration and stream.time_base:
        return float(stream.duration * stream.time_base)
    if container.duration:
        return container.duration / 1_000_000
    return 0.0


class DamagedVideo(CaseError):
    """Part of a video cannot be decoded; frames outside ``[start, end)`` still can.

    Args:
        name: The file's name.
        start: Time of the last frame decoded before the damage (seconds).
        end: Where decoding works again, or None if it does not before the end.
        reason: FFmpeg's complaint, in a few words.
    """

    def __init__(self, name: str, start: float, end: float | None, reason: str) -> None:
        self.start, self.end = start, end
        first = format_time(math.floor(start))  # whole seconds, rounded towards the good side
        if end is None:
            span = f"from {first} to its end"
            usable = f"frames up to {first} can be: ask for those"
        else:
            last = format_time(math.ceil(end))
            span = f"between {first} and {last}"
            usable = f"frames up to {first} and from {last} on can be: ask for those"
        super().__init__(
            f"{name} is damaged {span} ({reason}); frames there cannot be decoded, {usable}."
        )

    def covers(self, seconds: float) -> bool:
        """Whether a frame at ``seconds`` lies in the damaged span."""
        return seconds > self.start and (self.end is None or seconds < self.end)


def _decodes_at(container: InputContainer, stream: VideoStream, at: float, fps: float) -> bool:
    """Whether decoding from the keyframe before ``at`` reaches ``at`` without an error."""
    import av

    time_base = stream.time_base
    if not time_base:
        return False
    try:
        container.seek(int(at / time_base), stream=stream, backward=True)
        for frame in container.decode(stream):
            if frame.time is not None and frame.time >= at - 0.5 / fps:
                return True
    except av.error.FFmpegError:
        return False
    return False  # the stream ended first


def _damaged_span(
    path: Path, good: float | None, bad: float, fps: float, start_time: float
) -> tuple[float, float | None]:
    """The span around ``bad`` (seconds) that does not decode, to about a second.

    Probes outwards at doubling steps until a seek decodes, then halves the interval, so a
    long damaged span costs a few dozen seeks rather than a decode through it. ``good`` is
    a time known to decode, if any. The end is None if decoding never works again.
    """
    with _open(path) as container:
        stream = container.streams.video[0]
        length = _container_seconds(container, stream)

        def decodes(at: float) -> bool:
            return _decodes_at(container, stream, start_time + at, fps)

        def edge(inside: float, outside: float) -> float:
            while abs(outside - inside) > 1.0:
                middle = (inside + outside) / 2
                inside, outside = (inside, middle) if decodes(middle) else (middle, outside)
            return outside

        before, step = good, 1.0
        while before is None or bad - before > step:
            probe = max(0.0, bad - step)
            if decodes(probe):
                before = probe
                break
            if probe == 0.0:
                before = 0.0
                break
            step *= 2
        after, step = None, 1.0
        while after is None and bad + step <= length:
            if decodes(bad + step):
                after = bad + step
            step *= 2
        start = edge(bad, before) if before is not None else 0.0
        return start, (edge(bad, after) if after is not None else None)


def _damage(
    path: Path, good: float | None, bad: float, exc: BaseException, fps: float, start: float
) -> CaseError:
    try:
        begins, ends = _damaged_span(path, good, bad, fps, start)
    except CaseError:
        begins, ends = good or 0.0, None
    return DamagedVideo(path.name, begins, ends, _reason(exc))


def decode_frames(
    path: Path,
    indices: Sequence[int],
    *,
    fps: float,
    start_time: float = 0.0,
    seek_gap: float = SEEK_GAP,
) -> Generator[tuple[int, VideoFrame], None, None]:
    """Decode the frames with the given indices in one pass, seeking across long gaps.

    Frame ``i`` is the one shown at ``start_time + i / fps``; where the stream has no frame
    with exactly that index, the nearest decoded one is used.

    Args:
        path: The video file.
        indices: Frame indices wanted (any order, repeats ignored).
        fps: The video's frame rate (from the probe).
        start_time: The first frame's presentation time (from the probe).
        seek_gap: Seek instead of decoding through gaps longer than this (seconds).

    Yields:
        ``(index, frame)`` pairs in ascending index order.

    Raises:
        CaseError: If the file cannot be opened, or decoding ends before a wanted frame
            (a truncated file), naming the time reached.
        DamagedVideo: If decoding fails before a wanted frame, naming the damaged span.
    """
    import av

    targets = sorted(set(indices))
    if not targets:
        return
    gap = max(1, round(seek_gap * fps))
    with _open(path) as container:
        stream = container.streams.video[0]
        stream.thread_type = "AUTO"
        k, last, last_index = 0, None, -1
        seek_to = targets[0] if targets[0] > gap else None
        # A seek lands on the keyframe before its target; once one lands no further than where
        # decoding already was (long keyframe intervals), seeking cannot help this file.
        time_base = stream.time_base
        can_seek = bool(time_base)
        while k < len(targets):
            landed_at = None
            if seek_to is not None and can_seek and time_base:
                offset = (start_time + seek_to / fps) / time_base
                container.seek(int(offset), stream=stream, backward=True)
                landed_at = last_index
            seek_to, prev, prev_index = None, None, -1
            try:
                for frame in container.decode(stream):
                    index = _index_of(frame, fps, start_time, prev_index)
                    if landed_at is not None:
                        can_seek, landed_at = index > landed_at, None
                    while k < len(targets) and index >= targets[k]:
                        use_prev = prev is not None and targets[k] - prev_index < index - targets[k]
                        yield targets[k], (prev if use_prev and prev is not None else frame)
                        k += 1
                    prev, prev_index = frame, index
                    if k < len(targets) and targets[k] - index > gap and can_seek:
                        seek_to = targets[k]
                    if k == len(targets) or seek_to is not None:
                        break
            except av.error.FFmpegError as exc:
                if prev is not None:
                    good: float | None = prev_index / fps
                    bad = (prev_index + 1) / fps
                else:  # failed before the first frame after a seek (or the start)
                    good = last_index / fps if last_index >= 0 else None
                    bad = (targets[k] if k < len(targets) else 0) / fps
                raise _damage(path, good, bad, exc, fps, start_time) from exc
            if prev is not None:
                last, last_index = prev, prev_index
            if seek_to is None:
                break  # all found, or the stream ended
        _serve_tail(path, targets[k:], last, last_index, fps)
        yield from ((target, last) for target in targets[k:] if last is not None)


def _index_of(frame: VideoFrame, fps: float, start_time: float, prev_index: int) -> int:
    if frame.time is None:  # no timestamp: count on from the previous frame
        return prev_index + 1
    return round((frame.time - start_time) * fps)


def _serve_tail(
    path: Path, remaining: Sequence[int], last: Any, last_index: int, fps: float
) -> None:
    """Check that frames asked for after the stream ended lie close to its end."""
    if not remaining:
        return
    if last is None or (remaining[-1] - last_index) / fps > _END_SLACK_S:
        reached = max(last_index, 0) / fps
        raise CaseError(
            f"{path.name} ends at {format_time(reached)} before the frame at "
            f"{format_time(remaining[-1] / fps)} that its header promises; the file is probably "
            "truncated."
        )


def _natural_key(name: str) -> list[Any]:
    return [int(part) if part.isdigit() else part for part in re.split(r"(\d+)", name.lower())]


def list_images(folder: Path) -> list[Path]:
    """The jpg/png files in ``folder``, in natural name order (``f2`` before ``f10``)."""
    images = [p for p in folder.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file()]
    return sorted(images, key=lambda p: _natural_key(p.name))


def folder_images(
    folder: Path, indices: Sequence[int], size: tuple[int, int], *, expected: int
) -> Generator[tuple[int, Image], None, None]:
    """Load the frames with the given indices from a frame folder, resized to ``size``.

    Args:
        folder: The frame folder.
        indices: Frame indices wanted (any order, repeats ignored).
        size: ``(width, height)`` of the images yielded.
        expected: How many images the folder held when it was opened.

    Yields:
        ``(index, RGB image)`` pairs in ascending index order.

    Raises:
        CaseError: If the folder changed since it was opened or an image cannot be read.
    """
    from PIL import Image as PILImage

    images = list_images(folder)
    if len(images) != expected:
        raise CaseError(
            f"folder {folder} changed since it was opened ({len(images)} images, "
            f"{expected} expected); open it again."
        )
    for index in sorted(set(indices)):
        try:
            with PILImage.open(images[index]) as image:
                image.draft("RGB", size)
                resized = image.convert("RGB").resize(size, PILImage.Resampling.BILINEAR)
        except OSError as exc:
            raise CaseError(f"{images[index]} is not a readable image ({exc}).") from exc
        yield index, resized


def video_images(
    path: Path, indices: Sequence[int], size: tuple[int, int], *, fps: float, start_time: float
) -> Generator[tuple[int, Image], None, None]:
    """Decode the frames with the given indices (see `decode_frames`) as images of ``size``.

    Yields:
        ``(index, RGB image)`` pairs in ascending index order.

    Raises:
        CaseError: As `decode_frames`.
    """
    frames = decode_frames(path, indices, fps=fps, start_time=start_time)
    with contextlib.closing(frames):
        for index, frame in frames:
            if (frame.width, frame.height) == size:
                yield index, frame.to_image()
            else:
                yield index, frame.to_image(width=size[0], height=size[1], interpolation="AREA")


def contact_sheet(
    tiles: Sequence[tuple[Path, str]], *, tile_width: int = 160, columns: int = 4
) -> bytes:
    """A JPEG grid of images, each labelled in its lower left corner.

    Args:
        tiles: ``(image file, label)`` pairs, in reading order (at least one).
        tile_width: Width of each tile; heights follow the first image's aspect.
        columns: Most tiles in a row.

    Returns:
        The JPEG bytes.
    """
    from PIL import Image as PILImage
    from PIL import ImageDraw

    with PILImage.open(tiles[0][0]) as first:
        tile_height = max(1, round(tile_width * first.height / first.width))
    columns = min(columns, len(tiles))
    rows = math.ceil(len(tiles) / columns)
    sheet = PILImage.new("RGB", (columns * tile_width, rows * tile_height), "black")
    draw = ImageDraw.Draw(sheet)
    for j, (path, label) in enumerate(tiles):
        x, y = (j % columns) * tile_width, (j // columns) * tile_height
        with PILImage.open(path) as image:
            image.draft("RGB", (tile_width, tile_height))  # JPEGs decode at reduced scale
            sheet.paste(image.convert("RGB").resize((tile_width, tile_height)), (x, y))
        draw.rectangle((x, y + tile_height - 14, x + 6 * len(label) + 6, y + tile_height), "black")
        draw.text((x + 3, y + tile_height - 13), label, fill="white")
    return encode_jpeg(sheet, quality=85)
