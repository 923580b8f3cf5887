"""The YOLO instrument detector: detection and ByteTrack tracking over cases, cached.

`InstrumentDetector` wraps ultralytics YOLO weights (imported on first use, set up offline by
`surgagent.tools.detector.yolo`); its results are cached per case content, weights and
settings. The rest of the room: the planner tools (`surgagent.tools.detector.tools`), result
types (`.types`), training (`.train`), datasets (`.data`) and converters (`.convert`).

    detector = InstrumentDetector.from_weights("runs/cholec/weights/best.pt")
    timeline = detector.track(case, cache, fps=1.0)  # timeline.first_seen("Clipper")
"""

from __future__ import annotations

import contextlib
import logging
import threading
from collections.abc import Callable, Iterable, Iterator, Sequence
from itertools import islice
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pydantic import BaseModel

from surgagent.tools.base import format_time
from surgagent.tools.cache import Case, CaseCache, atomic_write_text, read_json_file, slugify
from surgagent.tools.detector.types import (
    Detection,
    FrameDetections,
    InstrumentTimeline,
    box_iou,
    build_timeline,
)
from surgagent.tools.errors import ConfigError, ToolInputError
from surgagent.tools.video.decode import fit_size, folder_images, video_images
from surgagent.tools.video.engine import load_image, sample_frames
from surgagent.tools.video.opening import hash_file

if TYPE_CHECKING:
    from PIL.Image import Image

__all__ = ["InstrumentDetector"]

log = logging.getLogger(__name__)

_VERSION = "1"
_TRACK_LOW = 0.1  # ByteTrack's second-stage threshold: weak boxes only extend tracks
_BACKFILL_IOU = 0.2  # a new track's birth box, one sample earlier, overlaps at least this


def _chunks(items: Iterable[Any], size: int) -> Iterator[list[Any]]:
    iterator = iter(items)
    while chunk := list(islice(iterator, size)):
        yield chunk


class InstrumentDetector:
    """YOLO weights plus the settings they run with; build it with `from_weights`."""

    def __init__(
        self,
        model: Any,
        *,
        weights: Path,
        weights_hash: str,
        imgsz: int = 640,
        conf: float = 0.25,
        iou: float = 0.5,
        device: str = "cpu",
        track_fps: float = 1.0,
        batch: int = 8,
    ) -> None:
        self._model = model
        self._lock = threading.Lock()
        self.weights, self.weights_hash = weights, weights_hash
        self.imgsz, self.conf, self.iou, self.device = imgsz, conf, iou, device
        self.track_fps, self.batch = track_fps, batch
        names = model.names
        self.class_names: list[str] = [str(names[k]) for k in sorted(names)]

    def __repr__(self) -> str:
        return f"InstrumentDetector({str(self.weights)!r}, classes={len(self.class_names)})"

    @property
    def yolo(self) -> Any:
        """The underlying ``ultralytics.YOLO`` model (for validation or export)."""
        return self._model

    @classmethod
    def from_weights(
        cls,
        weights: str | Path,
        *,
        imgsz: int = 640,
        conf: float = 0.25,
        iou: float = 0.5,
        device: str = "cpu",
        track_fps: float = 1.0,
        batch: int = 8,
        class_names: Sequence[str] | None = None,
    ) -> InstrumentDetector:
        """Load YOLO detection weights.

        Args:
            weights: A ``.pt`` file trained for detection (`train_detector` writes one).
            imgsz: Inference size (pixels, a multiple of 32).
            conf: Detections below this confidence are dropped.
            iou: Non-maximum suppression IoU threshold.
            device: ``cpu``, ``cuda``, ``cuda:1``, ``mps``.
            track_fps: Samples per second the tools track at.
            batch: Frames per inference batch.
            class_names: The classes the caller expects; checked against the weights.

        Returns:
            The detector; its ``class_names`` come from the weights.

        Raises:
            ConfigError: If the file is missing, corrupt or not a YOLO detection model, a
                setting is out of range, or the weights' classes differ from ``class_names``.
        """
        from surgagent.tools.detector.yolo import check_device, load_yolo

        if imgsz < 32 or imgsz % 32:
            raise ConfigError(f"imgsz={imgsz} must be a multiple of 32 (e.g. 320, 640).")
        if not (0 < conf < 1 and 0 < iou <= 1 and track_fps > 0 and batch >= 1):
            raise ConfigError(
                f"conf={conf}, iou={iou}, track_fps={track_fps}, batch={batch}: conf and iou "
                "are fractions between 0 and 1 (e.g. 0.25 and 0.5), track_fps is positive and "
                "batch at least 1."
            )
        path = Path(weights).expanduser().resolve()
        model = load_yolo(path)
        check_device(device)
        detector = cls(
            model,
            weights=path,
            weights_hash=hash_file(path),
            imgsz=imgsz,
            conf=conf,
            iou=iou,
            device=device,
            track_fps=track_fps,
            batch=batch,
        )
        if class_names is not None:
            detector.check_classes(class_names, "the configured vocabulary")
        return detector

    @property
    def model_id(self) -> str:
        """Weights (name and content hash) and settings: the cache key of its results."""
        name = slugify(self.weights.stem, 16)
        return f"{name}-{self.weights_hash[:12]}-i{self.imgsz}-c{self.conf:g}-u{self.iou:g}"

    def check_classes(self, names: Sequence[str], source: str) -> None:
        """Check that ``names`` are exactly the weights' classes, in order.

        Raises:
            ConfigError: If they differ; the message shows both lists.
        """
        if list(names) != self.class_names:
            raise ConfigError(
                f"{self.weights.name} detects {len(self.class_names)} classes "
                f"({', '.join(self.class_names)}) but {source} has {len(names)} "
                f"({', '.join(names)}); use weights trained on those classes, or retrain."
            )

    # -- inference ------------------------------------------------------------------------

    def _predict(self, images: Sequence[Any], conf: float) -> list[Any]:
        """Ultralytics results for one batch of images."""
        with self._lock:  # an ultralytics predictor is not safe to share between threads
            return list(
                self._model.predict(
                    images,
                    imgsz=self.imgsz,
                    conf=conf,
                    iou=self.iou,
                    device=self.device,
                    verbose=False,
                )
            )

    def _detections(self, result: Any, size: tuple[int, int] | None) -> list[Detection]:
        boxes = result.boxes
        if boxes is None or not len(boxes):
            return []
        height, width = result.orig_shape
        out_w, out_h = size or (width, height)
        xyxy = boxes.xyxy.cpu().numpy().tolist()
        scores = boxes.conf.cpu().numpy().tolist()
        classes = boxes.cls.cpu().numpy().astype(int).tolist()
        found = []
        for (x1, y1, x2, y2), score, cls in zip(xyxy, scores, classes, strict=True):
            norm = (x1 / width, y1 / height, x2 / width, y2 / height)
            clipped = tuple(min(1.0, max(0.0, v)) for v in norm)
            found.append(
                Detection(
                    name=self.class_names[cls],
                    class_id=cls,
                    confidence=round(float(score), 4),
                    box=(
                        clipped[0] * out_w,
                        clipped[1] * out_h,
                        clipped[2] * out_w,
                        clipped[3] * out_h,
                    ),
                    box_norm=(clipped[0], clipped[1], clipped[2], clipped[3]),
                )
            )
        return found

    def predict_images(
        self, images: Sequence[Image | Any], *, size: tuple[int, int] | None = None
    ) -> list[list[Detection]]:
        """Detect instruments in images (PIL, or BGR numpy arrays), in batches.

        Args:
            images: The images.
            size: ``(width, height)`` the pixel boxes refer to (default: each image's own).

        Returns:
            One list of detections per image, most confident first.
        """
        found = []
        for chunk in _chunks(images, self.batch):  # results (with their images) die per batch
            found += [self._detections(r, size) for r in self._predict(chunk, self.conf)]
        return found

    def _artifact(self, case: Case, cache: CaseCache, kind: str, extra: str = "") -> Path:
        model_id = self.model_id + extra
        return cache.artifact_path(case, kind, version=_VERSION, model_id=model_id, suffix=".json")

    def detect(self, case: Case, times: Sequence[float], cache: CaseCache) -> list[FrameDetections]:
        """Detect instruments in the frames nearest ``times`` (cached per frame).

        Args:
            case: An opened case.
            times: Seconds from the start, within the case.
            cache: The case cache (frames and detections are kept there).

        Returns:
            One `FrameDetections` per time, in the order given.

        Raises:
            ToolInputError: If ``times`` is empty or a time lies outside the case.
            CaseError: If the video cannot be decoded there.
        """
        if not times:
            raise ToolInputError("no times given; say at which moments to look for instruments.")
        frames = sample_frames(case, times, cache, max_side=self.imgsz)
        path = self._artifact(case, cache, "detections")
        stored = (read_json_file(path) or {}).get("frames", {})
        missing = {frame.index: frame for frame in frames if str(frame.index) not in stored}
        if missing:
            images = [load_image(frame.path) for frame in missing.values()]
            found = self.predict_images(images, size=(case.width, case.height))
            for (index, frame), detections in zip(missing.items(), found, strict=True):
                stored[str(index)] = FrameDetections(
                    time=frame.time,
                    index=index,
                    width=case.width,
                    height=case.height,
                    frame=frame.path,
                    detections=detections,
                ).model_dump(mode="json")
            atomic_write_text(path, _DetectionsFile(frames=stored).model_dump_json())
        return [
            FrameDetections.model_validate(stored[str(f.index)]).model_copy(
                update={"frame": f.path}
            )
            for f in frames
        ]

    # -- tracking -------------------------------------------------------------------------

    def track(
        self,
        case: Case,
        cache: CaseCache,
        *,
        fps: float | None = None,
        start: float | None = None,
        end: float | None = None,
        max_gap: int = 1,
        progress: Callable[[int, int], None] | None = None,
    ) -> InstrumentTimeline:
        """Track instruments with ByteTrack over frames sampled at ``fps``; cached.

        Args:
            case: An opened case.
            cache: The case cache.
            fps: Samples per second (default ``track_fps``).
            start: Where to start (seconds; default the beginning).
            end: Where to stop (seconds; default the end).
            max_gap: Gaps of at most this many samples do not split an interval.
            progress: Called as ``progress(done, total)`` after each sample.

        Returns:
            The `InstrumentTimeline` of the stretch.

        Raises:
            ToolInputError: If the range is empty or outside the case, or ``fps`` is not
                positive.
            CaseError: If the video cannot be decoded.
        """
        fps = self.track_fps if fps is None else fps
        if not fps > 0:
            raise ToolInputError(f"fps={fps} must be positive, e.g. 1 for one sample a second.")
        t0 = case.check_time(0.0 if start is None else start)
        t1 = case.check_time(case.duration if end is None else end)
        if t1 <= t0:
            raise ToolInputError(
                f"the time range {format_time(t0)}-{format_time(t1)} is empty; "
                "the end must come after the start."
            )
        # Samples from t0 to t1 inclusive, but none at the very end of the case: the last
        # frame is shown before ``duration``, so a case of 12 s at 2/s has 24 samples.
        count = int((t1 - t0) * fps + 1e-9) + 1
        times = [t0 + k / fps for k in range(count)]
        times = [t for t in times if t < case.duration - 1e-9] or [t0]
        indices = sorted({case.frame_index(t) for t in times})
        path = self._artifact(case, cache, "tracks", f"-f{fps:g}-s{t0:g}-e{t1:g}-g{max_gap}")
        cached = read_json_file(path)
        if cached is not None:
            with contextlib.suppress(ValueError):
                timeline = InstrumentTimeline.model_validate(cached)
                if progress is not None:
                    progress(timeline.samples, timeline.samples)
                return timeline
        frames = self._track_frames(case, indices, progress)
        timeline = build_timeline(
            frames,
            case_id=case.id,
            class_names=self.class_names,
            fps=fps,
            start=t0,
            end=t1,
            model_id=self.model_id,
            max_gap=max_gap,
        )
        atomic_write_text(path, timeline.model_dump_json())
        return timeline

    def _track_frames(
        self, case: Case, indices: list[int], progress: Callable[[int, int], None] | None
    ) -> list[FrameDetections]:
        from surgagent.tools.detector.yolo import new_tracker

        low = min(self.conf, _TRACK_LOW)
        tracker = new_tracker(high=self.conf, low=low)
        size = fit_size(case.width, case.height, self.imgsz)
        if case.kind == "frames":
            source = folder_images(case.source, indices, size, expected=case.frame_count)
        else:
            begin = float(case.metadata.get("start_time", 0.0))
            source = video_images(case.source, indices, size, fps=case.fps, start_time=begin)
        out: list[FrameDetections] = []
        previous: list[Detection] = []
        seen: set[int] = set()
        if progress is not None:
            progress(0, len(indices))
        with contextlib.closing(source) as images:
            for chunk in _chunks(images, self.batch):
                results = self._predict([image for _, image in chunk], low)
                for (index, _), result in zip(chunk, results, strict=True):
                    raw = self._detections(result, (case.width, case.height))
                    rows = tracker.update(result.boxes.cpu().numpy(), result.orig_img)
                    kept = [
                        raw[int(row[7])].model_copy(update={"track_id": int(row[4])})
                        for row in rows
                    ]
                    if out:
                        self._backfill(out[-1], previous, kept, seen)
                    seen.update(det.track_id for det in kept if det.track_id is not None)
                    out.append(
                        FrameDetections(
                            time=case.frame_time(index),
                            index=index,
                            width=case.width,
                            height=case.height,
                            detections=kept,
                        )
                    )
                    previous = raw
                    if progress is not None:
                        progress(len(out), len(indices))
        return out

    def _backfill(
        self,
        before: FrameDetections,
        candidates: list[Detection],
        kept: list[Detection],
        seen: set[int],
    ) -> None:
        """Credit a new track's birth sample, which ByteTrack holds back until confirmed."""
        taken = [det.box for det in before.detections]
        for det in kept:
            if det.track_id in seen:
                continue
            fits = [
                c
                for c in candidates
                if c.class_id == det.class_id and c.confidence >= self.conf and c.box not in taken
            ]
            best = max(fits, key=lambda c: box_iou(c.box_norm, det.box_norm), default=None)
            if best is not None and box_iou(best.box_norm, det.box_norm) >= _BACKFILL_IOU:
                before.detections.append(best.model_copy(update={"track_id": det.track_id}))
                taken.append(best.box)


class _DetectionsFile(BaseModel):
    """The detections cache file of one case and detector: frame index -> detections."""

    frames: dict[str, Any]
