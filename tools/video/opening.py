"""How `surgagent.tools.video.engine.open_case` turns a path into a `Case`: hashing, probing, notes.

The probe is cached under the content hash, so reopening a case reads one small JSON file.

    case = open_video_file(Path("/data/case.mp4").resolve(), cache)
    case = open_frame_folder(Path("/data/frames").resolve(), cache)
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from surgagent.tools.cache import Case, CaseCache, atomic_write_text, read_json_file, slugify
from surgagent.tools.errors import CaseError
from surgagent.tools.video.decode import (
    IMAGE_SUFFIXES,
    VIDEO_SUFFIXES,
    VideoProbe,
    list_images,
    probe_video,
)

__all__ = [
    "hash_file",
    "hash_frame_folder",
    "looks_like_id",
    "open_frame_folder",
    "open_video_file",
]

log = logging.getLogger(__name__)

_PROBE_VERSION = 1
_HASH_CHUNK = 4 << 20  # files above 2 chunks hash their size, first and last chunk


def hash_file(path: Path) -> str:
    """Content hash of a file: all its bytes, or size + first and last 4 MiB when large."""
    size = path.stat().st_size
    digest = hashlib.sha256(b"surgagent-file-v1\0" + size.to_bytes(8, "little"))
    with path.open("rb") as handle:
        if size <= 2 * _HASH_CHUNK:
            digest.update(handle.read())
        else:
            digest.update(handle.read(_HASH_CHUNK))
            handle.seek(size - _HASH_CHUNK)
            digest.update(handle.read(_HASH_CHUNK))
    return digest.hexdigest()


def hash_frame_folder(images: Sequence[Path], info: Path) -> str:
    """Content hash of a frame folder: image names, sizes and mtimes, plus ``case.json``."""
    digest = hashlib.sha256(b"surgagent-frames-v1\0")
    for image in images:
        stat = image.stat()
        digest.update(f"{image.name}\0{stat.st_size}\0{stat.st_mtime_ns}\n".encode())
    if info.is_file():
        digest.update(info.read_bytes())
    return digest.hexdigest()


def _read_notes(*candidates: Path) -> dict[str, Any]:
    for path in candidates:
        if path.is_file():
            return {
                "notes": path.read_text(encoding="utf-8", errors="replace"),
                "notes_file": str(path),
            }
    return {}


def _sidecar(path: Path) -> dict[str, Any]:
    if not path.is_file():
        return {}
    data = read_json_file(path)
    if data is None:
        log.warning("ignoring %s: it is not a JSON object", path)
    return data or {}


def _cached_probe(cache: CaseCache, content_hash: str) -> dict[str, Any] | None:
    probe = read_json_file(cache.hash_dir(content_hash) / "probe.json")
    return probe if probe and probe.get("version") == _PROBE_VERSION else None


def _store_probe(cache: CaseCache, content_hash: str, probe: dict[str, Any]) -> None:
    data = {"version": _PROBE_VERSION, **probe}
    atomic_write_text(cache.hash_dir(content_hash) / "probe.json", json.dumps(data))


def open_video_file(path: Path, cache: CaseCache) -> Case:
    """Build the `Case` of a video file (probe cached by content hash).

    Raises:
        CaseError: If the file is empty, an image, or not a readable video.
    """
    if path.stat().st_size == 0:
        raise CaseError(f"{path} is empty (0 bytes); the copy or download probably failed.")
    if path.suffix.lower() in IMAGE_SUFFIXES:
        raise CaseError(f"{path} is a single image; put the frames in a folder and open that.")
    content_hash = hash_file(path)
    probe = _cached_probe(cache, content_hash)
    if probe is None:
        probe = probe_video(path).model_dump()
        _store_probe(cache, content_hash, probe)
    info = VideoProbe.model_validate(probe)
    metadata = {
        **_sidecar(path.with_suffix(".json")),
        **_read_notes(path.with_suffix(".md"), path.parent / "notes.md"),
        "codec": info.codec,
        "start_time": info.start_time,
    }
    return Case(
        id=f"{slugify(path.stem)}-{content_hash[:8]}",
        source=path,
        kind="video",
        content_hash=content_hash,
        metadata=metadata,
        **info.model_dump(include={"fps", "duration", "width", "height", "frame_count"}),
    )


def open_frame_folder(folder: Path, cache: CaseCache) -> Case:
    """Build the `Case` of a folder of frames (fps from ``case.json``, else 1).

    Raises:
        CaseError: If the folder has no images, a bad ``case.json`` or an unreadable image.
    """
    images = list_images(folder)
    if not images:
        videos = sorted(p.name for p in folder.iterdir() if p.suffix.lower() in VIDEO_SUFFIXES)
        hint = f"; to open a video in it, give the file, e.g. {videos[0]!r}" if videos else ""
        raise CaseError(f"folder {folder} has no .jpg or .png frames{hint}.")
    info_path = folder / "case.json"
    info = _sidecar(info_path)
    if info_path.is_file() and not info:
        raise CaseError(f'{info_path} is not a JSON object; write e.g. {{"fps": 25}}.')
    fps = info.pop("fps", 1.0)
    if not isinstance(fps, int | float) or not math.isfinite(fps) or fps <= 0:
        raise CaseError(f"{info_path} gives fps={fps!r}; it must be a positive number.")
    content_hash = hash_frame_folder(images, info_path)
    probe = _cached_probe(cache, content_hash)
    if probe is None:
        from PIL import Image

        try:
            with Image.open(images[0]) as first:
                width, height = first.size
        except OSError as exc:
            raise CaseError(f"{images[0]} is not a readable image ({exc}).") from exc
        probe = {"width": width, "height": height}
        _store_probe(cache, content_hash, probe)
    notes = _read_notes(folder / "notes.md", folder.with_suffix(".md"))
    return Case(
        id=f"{slugify(folder.name)}-{content_hash[:8]}",
        source=folder,
        kind="frames",
        fps=float(fps),
        duration=len(images) / fps,
        width=probe["width"],
        height=probe["height"],
        frame_count=len(images),
        content_hash=content_hash,
        metadata={**info, **notes},
    )


def looks_like_id(ref: str) -> bool:
    """Whether a reference that is no existing path was meant as a case id."""
    suffix = Path(ref).suffix.lower()
    return "/" not in ref and "\\" not in ref and suffix not in VIDEO_SUFFIXES | IMAGE_SUFFIXES
