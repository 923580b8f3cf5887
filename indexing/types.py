"""What the indexer takes and gives: its settings, one task per case, outcomes, a summary.

All are plain pydantic models, so they travel to pool processes and Ray workers as they are.

    config = IndexConfig(cache_dir=Path("~/.surgagent/cache"), detector=DetectorJob(weights=w))
    summary.indexed  # ids of the cases indexed by this run
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from surgagent.library.types import CaseIndex

__all__ = [
    "Backend",
    "CaseOutcome",
    "CaseTask",
    "DetectorJob",
    "FailedCase",
    "IndexConfig",
    "IndexSummary",
    "PhaseJob",
    "file_stamp",
]

Backend = Literal["local", "ray"]


def file_stamp(path: Path) -> str:
    """Size and modification time of a file (cheap: no byte is read)."""
    stat = path.stat()
    return f"{stat.st_size}:{stat.st_mtime_ns}"


class DetectorJob(BaseModel):
    """How to run the instrument detector (from the ``detector`` settings)."""

    model_config = ConfigDict(frozen=True)

    weights: Path
    imgsz: int = 640
    conf: float = 0.25
    iou: float = 0.5
    device: str = "cpu"
    fps: float = Field(1.0, gt=0, description="samples per second tracked into the timeline")


class PhaseJob(BaseModel):
    """How to run the phase segmenter (from the ``phase`` settings)."""

    model_config = ConfigDict(frozen=True)

    weights: Path
    device: str = "cpu"


class IndexConfig(BaseModel):
    """What indexing does to each case; the same for every worker."""

    model_config = ConfigDict(frozen=True)

    cache_dir: Path = Field(description="the case cache (shared storage on a cluster)")
    frames_fps: float = Field(1.0, gt=0, description="frames sampled per second")
    max_side: int = Field(896, gt=0, description="sampled frames fit this side")
    detector: DetectorJob | None = None
    phase: PhaseJob | None = None
    procedure: str | None = Field(None, description="for cases whose notes name none")

    def uses_cuda(self) -> bool:
        """Whether an engine is set to run on a CUDA device."""
        jobs = [job for job in (self.detector, self.phase) if job is not None]
        return any(job.device.startswith("cuda") for job in jobs)

    def key(self) -> str:
        """What a case indexed with this config was indexed with; a change re-indexes it.

        The engines' settings and their weights files' sizes and times count; the device,
        the cache folder and the default procedure do not.
        """
        parts = [f"frames={self.frames_fps:g}@{self.max_side}"]
        if self.detector is not None:
            job = self.detector
            parts.append(
                f"detector={job.weights}:{file_stamp(job.weights)}:i{job.imgsz}:c{job.conf:g}"
                f":u{job.iou:g}:f{job.fps:g}"
            )
        if self.phase is not None:
            parts.append(f"phase={self.phase.weights}:{file_stamp(self.phase.weights)}")
        return hashlib.sha256("\n".join(parts).encode()).hexdigest()[:16]


class CaseTask(BaseModel):
    """One case to index: where it is and its stamp when the run began."""

    path: Path
    stamp: str


class CaseOutcome(BaseModel):
    """What indexing one case gave: its rows, ready for the store (a failed one has none)."""

    path: Path
    index: CaseIndex

    @property
    def failed(self) -> bool:
        """Whether the case could not be indexed (``index.case.error`` says why)."""
        return self.index.case.status == "failed"


class FailedCase(BaseModel):
    """A case that could not be indexed, and why."""

    path: Path
    error: str


class IndexSummary(BaseModel):
    """What one ``library add`` did."""

    library: Path
    backend: Backend
    workers: int
    found: int = Field(description="cases found under the paths given")
    indexed: list[str] = Field(description="ids of the cases indexed by this run")
    skipped: list[str] = Field(description="ids of cases already indexed and unchanged")
    failed: list[FailedCase] = []
    duplicates: list[FailedCase] = Field(
        [], description="cases whose content is already in the library under another path"
    )
    ignored: list[Path] = Field([], description="files under the folders that are no case")
    seconds: float
