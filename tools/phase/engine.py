"""The phase segmenter engine: a trained checkpoint run over a whole case.

`PhaseSegmenter` loads a checkpoint (see `surgagent.tools.phase.train`), embeds a case's
frames once a second (features cached per case), runs the MS-TCN head over the whole
video and decodes phases with Viterbi; the `PhasePrediction` is cached per case and model.

    segmenter = PhaseSegmenter.from_checkpoint(Path("phase.pt"))
    prediction = segmenter.predict(case, cache)  # prediction.segments[0].phase == "Preparation"
"""

from __future__ import annotations

import hashlib
import logging
import threading
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, Protocol

import numpy as np
from pydantic import ValidationError

from surgagent.tools.cache import Case, CaseCache, atomic_write_text
from surgagent.tools.errors import ConfigError
from surgagent.tools.phase.model import (
    FeatureExtractor,
    PhaseModelSpec,
    build_head,
    forward_transitions,
    head_logits,
    viterbi,
)
from surgagent.tools.phase.types import PhasePrediction, PhaseSegment

__all__ = [
    "PhaseEngine",
    "PhaseSegmenter",
]

log = logging.getLogger(__name__)

_PREDICTION_VERSION = "1"
_MEMO_SIZE = 8  # predictions kept in memory (a long video's is about 1 MB)


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
        """Load a checkpoint written by `surgagent.tools.phase.train.train_segmenter`.

        Args:
            path: The checkpoint file.
            device: Torch device (``cpu``, ``cuda``, ``auto``).
            vocabulary: The phase names the caller expects, if it expects some.

        Raises:
            ConfigError: If the file is missing or corrupt, was trained for another vocabulary
                than ``vocabulary``, or its head does not fit its class count.
        """
        from surgagent.tools.phase.checkpoint import read_checkpoint
        from surgagent.tools.phase.model import resolve_device

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
        from surgagent.tools.phase.features import case_features

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
