"""The phase segmenter engine and its planner tools ``phase_at`` and ``phase_segments``.

`PhaseSegmenter` loads a trained checkpoint (see `tools.phase_data.train_segmenter`), embeds a
case's frames once a second (features cached per case), runs the MS-TCN head over the whole
video and decodes phases with Viterbi; the `PhasePrediction` is cached per case and model.

    segmenter = PhaseSegmenter.from_checkpoint(Path("phase.pt"))
    prediction = segmenter.predict(case, cache)  # prediction.segments[0].phase == "Preparation"
"""

from __future__ import annotations

import hashlib
import logging
import re
import threading
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, Protocol

import numpy as np
from langchain_core.tools import BaseTool, tool
from langgraph.prebuilt import ToolRuntime
from pydantic import BaseModel, Field, ValidationError, computed_field, field_validator

from tools.base import Evidence, ToolResult, format_time, parse_time
from tools.cache import Case, CaseCache, atomic_write_text
from tools.errors import ConfigError, ToolInputError, suggest
from tools.phase_model import (
    FeatureExtractor,
    PhaseModelSpec,
    build_head,
    forward_transitions,
    head_logits,
    viterbi,
)

__all__ = [
    "PhaseAtArgs",
    "PhaseAtResult",
    "PhaseContext",
    "PhaseEngine",
    "PhasePrediction",
    "PhaseSegment",
    "PhaseSegmenter",
    "PhaseSegmentsArgs",
    "PhaseSegmentsResult",
    "make_phase_tools",
    "phase_at",
    "phase_segments",
]

log = logging.getLogger(__name__)

_PREDICTION_VERSION = "1"
_MAX_LISTED = 12
_MEMO_SIZE = 8  # predictions kept in memory (a long video's is about 1 MB)


class PhaseSegment(BaseModel):
    """One stretch of the case in a single phase."""

    phase: str
    start: float = Field(description="seconds from the start of the case")
    end: float = Field(description="seconds; the segment covers [start, end)")
    confidence: float = Field(description="mean probability of the phase over the segment")

    @computed_field  # type: ignore[prop-decorator]
    @property
    def duration(self) -> float:
        """Length in seconds."""
        return self.end - self.start

    def describe(self) -> str:
        """``Name 05:10-20:45 (15:35, conf 0.91)``."""
        return (
            f"{self.phase} {format_time(self.start)}-{format_time(self.end)} "
            f"({format_time(self.duration)}, conf {self.confidence:.2f})"
        )


class PhasePrediction(BaseModel):
    """A case's phases: segments plus the per-sample labels and probabilities behind them."""

    case_id: str
    model_id: str
    vocabulary: list[str]
    fps: float = Field(description="samples per second of labels and probabilities")
    duration: float
    smoothed: bool = Field(description="whether Viterbi decoding with the transition prior ran")
    segments: list[PhaseSegment]
    labels: list[int] = Field(description="phase index per sample (sample k: k / fps s)")
    probabilities: list[list[float]] = Field(description="per sample, one value per phase")

    def index_at(self, t: float) -> int:
        """The sample covering time ``t`` (clamped to the case)."""
        return max(0, min(len(self.labels) - 1, int(t * self.fps + 1e-9)))

    def segment_at(self, t: float) -> PhaseSegment:
        """The segment covering time ``t`` (the last one from its end on)."""
        for segment in self.segments:
            if t < segment.end:
                return segment
        return self.segments[-1]


def _segments(
    labels: np.ndarray, probs: np.ndarray, vocabulary: Sequence[str], fps: float, duration: float
) -> list[PhaseSegment]:
    edges = np.flatnonzero(np.diff(labels)) + 1
    bounds = zip(np.concatenate(([0], edges)), np.concatenate((edges, [len(labels)])), strict=True)
    return [
        PhaseSegment(
            phase=vocabulary[int(labels[s])],
            start=s / fps,
            end=min(e / fps, duration),
            confidence=round(float(probs[s:e, int(labels[s])].mean()), 4),
        )
        for s, e in bounds
    ]


class PhaseSegmenter:
    """A trained phase segmenter: backbone + MS-TCN head + transition prior.

    Args:
        spec: The model description (vocabulary, backbone, head, normalisation, prior).
        head_state: The head's weights; a randomly initialised head where None.
        device: Torch device for the backbone and head.

    Raises:
        ConfigError: If the weights do not fit the spec (class count, feature size).
    """

    def __init__(
        self, spec: PhaseModelSpec, head_state: dict[str, Any] | None = None, *, device: str = "cpu"
    ) -> None:
        self.extractor = FeatureExtractor(spec.backbone, device=device)
        if not spec.backbone.feature_dim and self.extractor.feature_dim:  # builds the backbone
            spec = spec.model_copy(update={"backbone": self.extractor.spec})
        self.spec = spec
        self.device = device
        classes = len(spec.vocabulary)
        if head_state is not None:
            out_rows = head_state.get("0.output.weight")
            if out_rows is not None and out_rows.shape[0] != classes:
                raise ConfigError(
                    f"the phase head predicts {out_rows.shape[0]} classes but the vocabulary "
                    f"lists {classes} ({', '.join(spec.vocabulary)}); retrain the head for it."
                )
        self.head = build_head(spec.head, spec.backbone.feature_dim, classes)
        if head_state is not None:
            try:
                self.head.load_state_dict(head_state)
            except RuntimeError as exc:
                raise ConfigError(f"phase head weights do not fit their spec: {exc}") from exc
        self.head.eval().to(device)
        digest = hashlib.sha256(spec.model_dump_json().encode())
        for name, tensor in sorted(self.head.state_dict().items()):
            digest.update(name.encode() + tensor.cpu().numpy().tobytes())
        self.model_id = f"phase-{spec.backbone.name}-{digest.hexdigest()[:16]}"
        self._lock = threading.Lock()
        self._memo: dict[tuple[str, bool], PhasePrediction] = {}

    @classmethod
    def from_checkpoint(
        cls, path: Path, *, device: str = "cpu", vocabulary: Sequence[str] | None = None
    ) -> PhaseSegmenter:
        """Load a checkpoint written by `tools.phase_data.train_segmenter`.

        Args:
            path: The checkpoint file.
            device: Torch device (``cpu``, ``cuda``, ``auto``).
            vocabulary: The phase names the caller expects, if it expects some.

        Raises:
            ConfigError: If the file is missing or corrupt, was trained for another vocabulary
                than ``vocabulary``, or its head does not fit its class count.
        """
        from tools.phase_data import read_checkpoint
        from tools.phase_model import resolve_device

        spec, state, _ = read_checkpoint(path)
        if vocabulary is not None and list(vocabulary) != spec.vocabulary:
            raise ConfigError(
                f"{path} was trained for the phases {', '.join(spec.vocabulary)}, not "
                f"{', '.join(vocabulary)}; use weights trained for this vocabulary."
            )
        return cls(spec, state, device=resolve_device(device))

    @property
    def vocabulary(self) -> list[str]:
        """The phase names, in label order."""
        return list(self.spec.vocabulary)

    def transition_prior(self) -> tuple[np.ndarray, np.ndarray]:
        """The Viterbi prior: ``(transitions, initial)``, learned or forward-order."""
        if self.spec.transitions is not None and self.spec.initial is not None:
            return np.asarray(self.spec.transitions), np.asarray(self.spec.initial)
        return forward_transitions(len(self.spec.vocabulary))

    def predict_features(
        self, features: np.ndarray, *, smoothing: bool = True
    ) -> tuple[np.ndarray, np.ndarray]:
        """Phases of a feature sequence (one row per sample).

        Returns:
            ``(labels, probabilities)``: ``(T,)`` ints and ``(T, K)`` final-stage softmax.

        Raises:
            ConfigError: If the features' size is not the backbone's.
        """
        import torch

        dim = self.spec.backbone.feature_dim
        if features.ndim != 2 or features.shape[1] != dim or not len(features):
            raise ConfigError(
                f"features of shape {features.shape} do not fit this head ({dim} per sample)."
            )
        if self.spec.feature_mean is not None and self.spec.feature_std is not None:
            features = (features - np.asarray(self.spec.feature_mean)) / self.spec.feature_std
        x = torch.from_numpy(np.ascontiguousarray(features.T, dtype=np.float32))[None]
        with torch.inference_mode():
            logits = head_logits(self.head, x.to(self.device), self.spec.head.dropout)[-1, 0]
            probs = torch.softmax(logits, dim=0).T.cpu().numpy().astype(np.float64)
        labels = viterbi(probs, *self.transition_prior()) if smoothing else probs.argmax(1)
        return labels, probs

    def predict(
        self,
        case: Case,
        cache: CaseCache,
        *,
        smoothing: bool = True,
        progress: Callable[[int, int], None] | None = None,
    ) -> PhasePrediction:
        """The case's phases; cached per case, model and smoothing (in memory and on disk).

        Args:
            case: An opened case.
            cache: The case cache (features and predictions are kept there).
            smoothing: Decode with Viterbi and the transition prior (else per-sample argmax).
            progress: Called as ``progress(done, total)`` while frames are embedded.

        Raises:
            CaseError: If the video cannot be decoded.
            ConfigError: If the backbone cannot be built or differs from the trained one.
        """
        key = (case.content_hash, smoothing)
        with self._lock:  # parallel tool calls share one computation
            if key not in self._memo:
                self._memo[key] = self._predict(case, cache, smoothing, progress)
                if len(self._memo) > _MEMO_SIZE:
                    self._memo.pop(next(iter(self._memo)))
            return self._memo[key].model_copy(update={"case_id": case.id})

    def _predict(
        self,
        case: Case,
        cache: CaseCache,
        smoothing: bool,
        progress: Callable[[int, int], None] | None,
    ) -> PhasePrediction:
        from tools.phase_data import case_features

        mode = "viterbi" if smoothing else "argmax"
        path = cache.artifact_path(
            case,
            "phases",
            version=_PREDICTION_VERSION,
            model_id=f"{self.model_id}-{mode}",
            suffix=".json",
        )
        if path.is_file():
            try:
                return PhasePrediction.model_validate_json(path.read_text(encoding="utf-8"))
            except (OSError, ValidationError) as exc:
                log.warning("recomputing unreadable cached phases %s: %s", path, exc)
        features = case_features(case, cache, self.extractor, progress=progress)
        labels, probs = self.predict_features(features, smoothing=smoothing)
        fps = self.spec.backbone.fps
        prediction = PhasePrediction(
            case_id=case.id,
            model_id=self.model_id,
            vocabulary=self.vocabulary,
            fps=fps,
            duration=case.duration,
            smoothed=smoothing,
            segments=_segments(labels, probs, self.vocabulary, fps, case.duration),
            labels=[int(v) for v in labels],
            probabilities=np.round(probs, 4).tolist(),
        )
        atomic_write_text(path, prediction.model_dump_json())
        return prediction


# -- the planner tools ----------------------------------------------------------------------


class PhaseEngine(Protocol):
    """What the tools need from ``context.segmenter`` (a `PhaseSegmenter`)."""

    @property
    def vocabulary(self) -> list[str]:
        """The phase names."""
        ...

    def predict(self, case: Case, cache: CaseCache, *, smoothing: bool = True) -> PhasePrediction:
        """The case's phases."""
        ...


class PhaseContext(Protocol):
    """What the phase tools need from the run context (``graphs.context.RunContext``)."""

    @property
    def case(self) -> Case:
        """The case the run is about."""
        ...

    @property
    def cache(self) -> CaseCache:
        """Where work on it is cached."""
        ...

    @property
    def segmenter(self) -> PhaseEngine | None:
        """The phase segmenter, or None where no weights are configured."""
        ...


class PhaseAtResult(ToolResult):
    """The phase under way at one moment."""

    case_id: str
    time: float
    phase: str
    confidence: float = Field(description="the model's probability of the phase at that time")
    segment: PhaseSegment

    def evidence(self) -> list[Evidence]:
        """The segment holding the moment."""
        return [_segment_evidence("phase_at", self.segment, self.case_id)]


class PhaseSegmentsResult(ToolResult):
    """A case's phase segments (all, or one phase's)."""

    case_id: str
    phase: str | None
    duration: float
    segments: list[PhaseSegment]

    def evidence(self) -> list[Evidence]:
        """One segment item per segment."""
        return [_segment_evidence("phase_segments", s, self.case_id) for s in self.segments]


def _segment_evidence(tool_name: str, segment: PhaseSegment, case_id: str) -> Evidence:
    return Evidence(
        kind="segment",
        tool=tool_name,
        time=segment.start,
        end=segment.end,
        summary=f"phase {segment.describe()} in case {case_id}",
    )


def _prediction(runtime: ToolRuntime[PhaseContext, Any]) -> tuple[Case, PhasePrediction]:
    ctx = runtime.context
    if ctx.segmenter is None:
        raise ToolInputError(
            "no phase model is configured for this run; answer from the frames instead."
        )
    return ctx.case, ctx.segmenter.predict(ctx.case, ctx.cache)


def _key(name: str) -> str:
    return re.sub(r"[^a-z0-9]", "", name.lower())


def _phase_name(value: str, vocabulary: Sequence[str]) -> str:
    by_key = {_key(name): name for name in vocabulary}
    if _key(value) in by_key:
        return by_key[_key(value)]
    raise ToolInputError(
        f"unknown phase {value!r}.{suggest(value, vocabulary)} The phases are: "
        f"{', '.join(vocabulary)}."
    )


class PhaseAtArgs(BaseModel):
    """Arguments of `phase_at`."""

    time: str = Field(
        description="The moment to ask about: seconds (75) or a clock time mm:ss / hh:mm:ss "
        "(01:15), within the case."
    )

    @field_validator("time", mode="before")
    @classmethod
    def _number_as_text(cls, value: Any) -> Any:
        return str(value) if isinstance(value, int | float) else value


class PhaseSegmentsArgs(BaseModel):
    """Arguments of `phase_segments`."""

    phase: str | None = Field(
        None,
        description="Only this phase's segments, by name (e.g. CalotTriangleDissection, "
        "ClippingCutting; spaces and case do not matter). Leave empty for the whole timeline.",
    )


@tool(
    "phase_at",
    description="Which surgical phase is under way at a moment of the case, from the phase "
    "recognition model: the phase, the model's confidence, and the start and end of that "
    "phase segment. Use it for 'what is happening at 12:30?'.",
    args_schema=PhaseAtArgs,
    response_format="content_and_artifact",
)
def phase_at(runtime: ToolRuntime[PhaseContext, Any], time: str) -> tuple[str, PhaseAtResult]:
    """Tell the planner the phase at one moment (the description above is what it reads)."""
    moment = parse_time(time)
    case, prediction = _prediction(runtime)
    case.check_time(moment)
    index = prediction.index_at(moment)
    label = prediction.labels[index]
    segment = prediction.segment_at(moment)
    confidence = prediction.probabilities[index][label]
    text = (
        f"At {format_time(moment)} the phase is {segment.phase} (confidence {confidence:.2f}); "
        f"this segment runs {format_time(segment.start)}-{format_time(segment.end)} "
        f"({format_time(segment.duration)} long)."
    )
    result = PhaseAtResult(
        case_id=case.id, time=moment, phase=segment.phase, confidence=confidence, segment=segment
    )
    return text, result


@tool(
    "phase_segments",
    description="The case's surgical phase timeline from the phase recognition model: each "
    "phase segment's start, end and duration. Give a phase to list only its segments (when "
    "did it start or end, how long did it last); leave it empty for the whole timeline.",
    args_schema=PhaseSegmentsArgs,
    response_format="content_and_artifact",
)
def phase_segments(
    runtime: ToolRuntime[PhaseContext, Any], phase: str | None = None
) -> tuple[str, PhaseSegmentsResult]:
    """Tell the planner the phase timeline (the description above is what it reads)."""
    case, prediction = _prediction(runtime)
    name = _phase_name(phase, prediction.vocabulary) if phase else None
    segments = [s for s in prediction.segments if name is None or s.phase == name]
    result = PhaseSegmentsResult(
        case_id=case.id, phase=name, duration=case.duration, segments=segments
    )
    length = format_time(case.duration)
    if name is not None and not segments:
        return f"{name} was not recognised anywhere in this case ({length} long).", result
    listed = "; ".join(segment.describe() for segment in segments[:_MAX_LISTED])
    if len(segments) > _MAX_LISTED:
        listed += f"; and {len(segments) - _MAX_LISTED} more"
    total = sum(segment.duration for segment in segments)
    if name is None:
        head = f"{len(segments)} phase segments in the case ({length} long): "
    else:
        head = f"{name}: {len(segments)} segment(s), {format_time(total)} in all: "
    return head + listed + ".", result


def make_phase_tools() -> list[BaseTool]:
    """The planner tools this module provides."""
    return [phase_at, phase_segments]
