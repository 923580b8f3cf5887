"""Frame features for the phase segmenter, computed once per case and cached.

Features (one row a second) are keyed by content hash + backbone + fps, so predicting
again or training another head never decodes the video twice.

    features = case_features(case, cache, extractor, fps=1.0)  # (seconds, dim)
"""

from __future__ import annotations

import contextlib
import io
import itertools
import logging
from collections.abc import Callable, Iterator
from typing import Any

import numpy as np

from surgagent.tools.cache import Case, CaseCache, atomic_write_bytes
from surgagent.tools.phase.model import (
    FeatureExtractor,
    samples_in,
)
from surgagent.tools.video.decode import folder_images, video_images

__all__ = [
    "case_features",
]

log = logging.getLogger(__name__)
_FEATURES_VERSION = "1"
_BATCH = 32


# -- features -------------------------------------------------------------------------------


def case_features(
    case: Case,
    cache: CaseCache,
    extractor: FeatureExtractor,
    *,
    progress: Callable[[int, int], None] | None = None,
) -> np.ndarray:
    """Per-second features of a case, computed once and cached by content + backbone + fps.

    Args:
        case: An opened case.
        cache: The case cache.
        extractor: The backbone; only run when the features are not cached.
        progress: Called as ``progress(done, total)`` while frames are embedded.

    Returns:
        A float32 array, one row per sample at ``extractor.spec.fps`` (``k / fps`` seconds).

    Raises:
        CaseError: If the video cannot be decoded.
        ConfigError: If the backbone cannot be built or run.
    """
    fps = extractor.spec.fps
    path = cache.artifact_path(
        case,
        "phase-features",
        version=_FEATURES_VERSION,
        model_id=extractor.cache_key(),
        suffix=".npy",
    )
    count = samples_in(case.duration, fps)
    if path.is_file():
        try:
            cached = np.load(path, allow_pickle=False)
            if cached.ndim == 2 and len(cached) == count:
                return cached
        except (OSError, ValueError) as exc:
            log.warning("recomputing unreadable cached features %s: %s", path, exc)
    indices = [case.frame_index(min(k / fps, case.duration)) for k in range(count)]
    rows: dict[int, np.ndarray] = {}
    for batch_indices, images in _image_batches(
        case, sorted(set(indices)), extractor.spec.image_size
    ):
        for index, row in zip(batch_indices, extractor.embed(images), strict=True):
            rows[index] = row
        if progress is not None:
            progress(len(rows), len(set(indices)))
    features = np.stack([rows[index] for index in indices]).astype(np.float32)
    buffer = io.BytesIO()
    np.save(buffer, features, allow_pickle=False)
    atomic_write_bytes(path, buffer.getvalue())
    return features


def _image_batches(
    case: Case, indices: list[int], side: int
) -> Iterator[tuple[list[int], list[Any]]]:
    size = (side, side)  # the model's input size: frames are squashed, as in training
    if case.kind == "frames":
        source = folder_images(case.source, indices, size, expected=case.frame_count)
    else:
        start = float(case.metadata.get("start_time", 0.0))
        source = video_images(case.source, indices, size, fps=case.fps, start_time=start)
    with contextlib.closing(source) as images:
        while batch := list(itertools.islice(images, _BATCH)):
            yield [index for index, _ in batch], [image for _, image in batch]
