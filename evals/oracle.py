"""Oracle engines: a phase segmenter and instrument detector that answer from gold labels.

With them, the agent's phase and instrument tools are always right, so an ``agent-oracle``
score shows how well the planner uses perfect tools; the gap to ``agent`` is what imperfect
perception costs. They read a Cholec80-layout dataset: ``phase_annotations/<case>-phase.txt``
(25 fps) and ``tool_annotations/<case>-tool.txt`` (one row per 25 frames, 0/1 per tool).

    engines = oracle_engines(Path("data/cholec80"))
    agent = SurgicalAgent(settings, planner, **engines)
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from surgagent.tools.cache import Case, CaseCache
from surgagent.tools.detector.types import (
    Detection,
    FrameDetections,
    InstrumentTimeline,
    build_timeline,
)
from surgagent.tools.errors import ToolInputError
from surgagent.tools.phase.annotations import read_cholec80_phase_file
from surgagent.tools.phase.types import PhasePrediction, PhaseSegment
from surgagent.tools.vocabulary import CHOLEC80_PHASES, CHOLEC80_TOOLS

__all__ = ["OracleDetector", "OracleSegmenter", "oracle_engines"]

_FULL_FRAME = (0.0, 0.0, 1.0, 1.0)


def _annotation(root: Path, folder: str, case: Case, suffix: str) -> Path:
    """The annotation file of ``case``, found by its video's name (``video41.mp4``)."""
    name = case.source.stem
    path = root / folder / f"{name}{suffix}"
    if not path.exists():
        raise ToolInputError(f"the oracle has no annotation for case {name!r} (looked for {path}).")
    return path


class OracleSegmenter:
    """Phases straight from the case's Cholec80 phase annotation, at 1 sample per second."""

    def __init__(self, root: Path, vocabulary: Sequence[str] = CHOLEC80_PHASES) -> None:
        self.root = root
        self.vocabulary = list(vocabulary)
        self.model_id = f"oracle:{root.name}/phase_annotations"

    def predict(self, case: Case, cache: CaseCache, **_: Any) -> PhasePrediction:
        """The gold segments of ``case`` (confidence 1)."""
        path = _annotation(self.root, "phase_annotations", case, "-phase.txt")
        labels, fps = read_cholec80_phase_file(path, self.vocabulary)
        step = max(1, round(fps))  # one sample per second
        per_second = labels[::step]
        edges = np.flatnonzero(np.diff(per_second)) + 1
        starts = np.concatenate(([0], edges))
        ends = np.concatenate((edges, [len(per_second)]))
        duration = len(labels) / fps
        segments = [
            PhaseSegment(
                phase=self.vocabulary[int(per_second[s])],
                start=float(s),
                end=float(min(e, duration)),
                confidence=1.0,
            )
            for s, e in zip(starts, ends, strict=True)
        ]
        probabilities = np.eye(len(self.vocabulary))[per_second]
        return PhasePrediction(
            case_id=case.id,
            model_id=self.model_id,
            vocabulary=self.vocabulary,
            fps=1.0,
            duration=duration,
            smoothed=False,
            segments=segments,
            labels=[int(v) for v in per_second],
            probabilities=probabilities.tolist(),
        )


class OracleDetector:
    """Instrument presence straight from the case's Cholec80 tool annotation.

    Cholec80 marks presence only, so every detection spans the whole frame.
    """

    def __init__(self, root: Path, class_names: Sequence[str] = CHOLEC80_TOOLS) -> None:
        self.root = root
        self.class_names = list(class_names)
        self.model_id = f"oracle:{root.name}/tool_annotations"
        self.conf = 1.0
        self.imgsz = 640

    def _presence(self, case: Case) -> tuple[np.ndarray, np.ndarray]:
        """Times (s) of the annotated rows and their 0/1 presence per class."""
        path = _annotation(self.root, "tool_annotations", case, "-tool.txt")
        rows = [line.split() for line in path.read_text().splitlines()[1:] if line.strip()]
        frames = np.array([int(row[0]) for row in rows])
        presence = np.array([[int(v) for v in row[1:]] for row in rows], dtype=bool)
        return frames / 25.0, presence

    def _frame(self, case: Case, times: np.ndarray, presence: np.ndarray, t: float) -> Any:
        row = int(np.abs(times - t).argmin())
        detections = [
            Detection(
                name=name,
                class_id=k,
                confidence=1.0,
                box=(0.0, 0.0, float(case.width or 1), float(case.height or 1)),
                box_norm=_FULL_FRAME,
                track_id=k + 1,
            )
            for k, name in enumerate(self.class_names)
            if presence[row, k]
        ]
        width, height = case.width or 1, case.height or 1
        return FrameDetections(
            time=float(t),
            index=int(t * case.fps),
            width=width,
            height=height,
            detections=detections,
        )

    def detect(self, case: Case, times: Sequence[float], cache: CaseCache) -> list[FrameDetections]:
        """The instruments annotated nearest each time."""
        if not times:
            raise ToolInputError("no times given.")
        stamps, presence = self._presence(case)
        return [self._frame(case, stamps, presence, t) for t in times]

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
        """The annotated presence as a timeline (one sample per annotated second)."""
        stamps, presence = self._presence(case)
        lo, hi = start or 0.0, end if end is not None else float(stamps[-1]) + 1.0
        frames = [self._frame(case, stamps, presence, t) for t in stamps if lo <= t <= hi]
        return build_timeline(
            frames,
            case_id=case.id,
            class_names=self.class_names,
            fps=1.0,
            start=lo,
            end=hi,
            model_id=self.model_id,
            max_gap=max_gap,
        )


def oracle_engines(root: Path) -> dict[str, Any]:
    """``detector`` and ``segmenter`` oracles for the dataset at ``root``."""
    return {"detector": OracleDetector(root), "segmenter": OracleSegmenter(root)}
