"""Indexing one case: open it, sample its frames, run the configured engines, build its rows.

A `CaseIndexer` loads its engines once, on its first case, and keeps them for every case
after: one per process of the local pool, one per Ray actor. Work lands in the case cache
as ``surgagent index`` and the planner tools leave it, so a case indexed here is instant to
ask about, and indexing it again after a crash reuses what was done.

    indexer = CaseIndexer(IndexConfig(cache_dir=cache_dir, phase=PhaseJob(weights=w)))
    outcome = indexer.index(CaseTask(path=video, stamp=source_stamp(video)))
"""

from __future__ import annotations

import logging
import math
import time
from collections import defaultdict
from datetime import UTC, date, datetime
from typing import TYPE_CHECKING, Any

from surgagent.indexing.types import CaseOutcome, CaseTask, IndexConfig
from surgagent.library.types import (
    CaseIndex,
    CaseRecord,
    DetectionSecond,
    InstrumentIntervalRow,
    PhaseSegmentRow,
)
from surgagent.tools.cache import Case, CaseCache
from surgagent.tools.errors import CaseError, ConfigError, SurgAgentError

if TYPE_CHECKING:
    from surgagent.tools.detector.engine import InstrumentDetector
    from surgagent.tools.detector.types import InstrumentTimeline
    from surgagent.tools.phase.engine import PhaseSegmenter

__all__ = [
    "CaseIndexer",
    "detections_per_second",
    "index_in_pool_worker",
    "start_pool_worker",
]

log = logging.getLogger(__name__)

# What makes one case fail without stopping the others: our own errors (unreadable or
# damaged video, bad notes), the file system's, and a decoder's or engine's on odd input.
# Engine settings that cannot work (ConfigError) stop the whole run instead.
_CASE_ERRORS = (SurgAgentError, OSError, ValueError, RuntimeError)


def detections_per_second(timeline: InstrumentTimeline) -> list[DetectionSecond]:
    """Per whole second and instrument: boxes over that second's samples, best score."""
    found: dict[tuple[int, str], list[float]] = defaultdict(list)
    for frame in timeline.frames:
        second = math.floor(frame.time + 1e-9)
        for detection in frame.detections:
            found[second, detection.name].append(detection.confidence)
    return [
        DetectionSecond(second=second, instrument=name, count=len(scores), max_score=max(scores))
        for (second, name), scores in sorted(found.items())
    ]


def _iso_date(value: Any, case: Case) -> str | None:
    if value is None or value == "":
        return None
    text = str(value)
    try:
        return date.fromisoformat(text).isoformat()
    except ValueError:
        try:
            return datetime.fromisoformat(text).date().isoformat()
        except ValueError:
            where = case.metadata.get("notes_file") or "the case's notes"
            raise CaseError(
                f"the date {text!r} of {case.source.name} (from its .json or case.json, or "
                f"{where}) is not an ISO date; write it as YYYY-MM-DD and add the case again."
            ) from None


class CaseIndexer:
    """Indexes cases one at a time with engines loaded once (on the first case).

    Args:
        config: What to do to each case.
    """

    def __init__(self, config: IndexConfig) -> None:
        self.config = config
        self.cache = CaseCache(config.cache_dir)
        self._loaded = False
        self._detector: InstrumentDetector | None = None
        self._segmenter: PhaseSegmenter | None = None

    def load(self) -> None:
        """Load the configured engines (once).

        Raises:
            ConfigError: If weights are missing, corrupt, or the device is not there.
        """
        if self._loaded:
            return
        if self.config.detector is not None:
            from surgagent.tools.detector.engine import InstrumentDetector

            job = self.config.detector
            self._detector = InstrumentDetector.from_weights(
                job.weights,
                imgsz=job.imgsz,
                conf=job.conf,
                iou=job.iou,
                device=job.device,
                track_fps=job.fps,
            )
        if self.config.phase is not None:
            from surgagent.tools.phase.engine import PhaseSegmenter

            self._segmenter = PhaseSegmenter.from_checkpoint(
                self.config.phase.weights, device=self.config.phase.device
            )
        self._loaded = True

    def index(self, task: CaseTask) -> CaseOutcome:
        """Index one case; a case that cannot be read comes back failed, with the reason.

        Raises:
            ConfigError: If the engines cannot be loaded (no case could be indexed).
        """
        self.load()
        began = time.perf_counter()
        try:
            index = self._index(task)
        except ConfigError:
            raise
        except _CASE_ERRORS as error:
            log.debug("indexing %s failed", task.path, exc_info=True)
            reason = str(error) if isinstance(error, SurgAgentError) else repr(error)
            index = CaseIndex(
                case=CaseRecord(
                    id=_failed_id(task),
                    path=task.path,
                    stamp=task.stamp,
                    status="failed",
                    indexed_at=datetime.now(UTC),
                    index_seconds=round(time.perf_counter() - began, 3),
                    error=reason,
                )
            )
            return CaseOutcome(path=task.path, index=index)
        index.case.index_seconds = round(time.perf_counter() - began, 3)
        return CaseOutcome(path=task.path, index=index)

    def _index(self, task: CaseTask) -> CaseIndex:
        from surgagent.tools.video.engine import index_case, open_case

        config = self.config
        case = open_case(task.path, self.cache)
        sampled = index_case(case, self.cache, fps=config.frames_fps, max_side=config.max_side)
        notes = case.metadata
        procedure = notes.get("procedure") or config.procedure
        record = CaseRecord(
            id=case.id,
            path=case.source,
            kind=case.kind,
            content_hash=case.content_hash,
            stamp=task.stamp,
            index_key=config.key(),
            procedure=str(procedure) if procedure else None,
            date=_iso_date(notes.get("date"), case),
            notes=notes.get("notes"),
            duration=case.duration,
            fps=case.fps,
            width=case.width,
            height=case.height,
            frames=sampled.frames_total,
            frames_fps=config.frames_fps,
            status="indexed",
            indexed_at=datetime.now(UTC),
        )
        index = CaseIndex(case=record)
        if self._detector is not None:
            timeline = self._detector.track(case, self.cache)
            record.detector_model, record.detector_fps = timeline.model_id, timeline.fps
            index.instruments = [
                InstrumentIntervalRow(
                    instrument=interval.instrument,
                    start_s=interval.start,
                    end_s=interval.end,
                    samples=interval.frames,
                    mean_score=interval.mean_confidence,
                    best_time_s=interval.best_time,
                    best_score=interval.max_confidence,
                    best_box=interval.best_box,
                )
                for interval in timeline.intervals
            ]
            index.detections = detections_per_second(timeline)
        if self._segmenter is not None:
            prediction = self._segmenter.predict(case, self.cache)
            record.phase_model = prediction.model_id
            index.phases = [
                PhaseSegmentRow(
                    phase=s.phase, start_s=s.start, end_s=s.end, confidence=s.confidence
                )
                for s in prediction.segments
            ]
        record.indexed_at = datetime.now(UTC)
        return index


def _failed_id(task: CaseTask) -> str:
    """An id for a case that could not be opened (its content hash is unknown)."""
    import hashlib

    from surgagent.tools.cache import slugify

    digest = hashlib.sha256(str(task.path).encode()).hexdigest()[:8]
    return f"{slugify(task.path.stem)}-unreadable-{digest}"


# -- the local pool's processes -------------------------------------------------------------

_pool_indexer: list[CaseIndexer] = []  # this process's indexer, once the pool starts it


def start_pool_worker(config: IndexConfig, threads: int) -> None:
    """Set up a pool process: its indexer, and torch held to its share of the cores."""
    if config.detector is not None or config.phase is not None:
        import torch

        torch.set_num_threads(max(1, threads))
    _pool_indexer[:] = [CaseIndexer(config)]


def index_in_pool_worker(task: CaseTask) -> CaseOutcome:
    """Index one case in a pool process started by `start_pool_worker`."""
    return _pool_indexer[0].index(task)
