"""The phase segmenter's model: a frame feature extractor, an MS-TCN head and Viterbi decoding.

Frames (1 a second) go through a torchvision backbone without its classifier; the whole
video's feature sequence goes through a multi-stage temporal convolutional network (MS-TCN:
each stage a stack of dilated residual 1-D convolutions, every stage after the first refining
the previous stage's class probabilities); Viterbi decoding with a phase-transition prior then
turns per-second probabilities into phases that follow the procedure's order.

    extractor = FeatureExtractor(BackboneSpec(name="resnet18", image_size=224))
    head = build_head(HeadConfig(), extractor.feature_dim, num_classes=7)
"""

from __future__ import annotations

import functools
import hashlib
import json
import logging
import math
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import numpy as np
from pydantic import BaseModel, Field

from surgagent.tools.errors import ConfigError, suggest

if TYPE_CHECKING:
    import torch
    from PIL.Image import Image

__all__ = [
    "BackboneSpec",
    "FeatureExtractor",
    "HeadConfig",
    "PhaseModelSpec",
    "build_head",
    "forward_transitions",
    "head_logits",
    "head_loss",
    "learned_transitions",
    "resolve_device",
    "samples_in",
    "viterbi",
]

log = logging.getLogger(__name__)

_HEAD_ATTRS = ("fc", "classifier", "heads", "head")
_MEAN = (0.485, 0.456, 0.406)  # ImageNet statistics, which torchvision weights expect
_STD = (0.229, 0.224, 0.225)
_FINGERPRINT_DIMS = 16


@functools.lru_cache(maxsize=16)
def _file_digest(path: str, size: int, mtime_ns: int) -> str:
    """Content hash of a weights file (cached while its size and mtime stay the same)."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()[:12]


class BackboneSpec(BaseModel):
    """Which frame feature extractor to use, and how frames are sampled for it."""

    name: str = Field("resnet18", description="torchvision model name, e.g. resnet50")
    weights: str | None = Field(
        None,
        description="None (random init, seeded), a torchvision weights name (DEFAULT, "
        "IMAGENET1K_V1; fetched where the machine can), or a local state-dict file",
    )
    image_size: int = Field(224, ge=16, description="frames are resized to this square side")
    fps: float = Field(1.0, gt=0, description="frames per second fed to the model")
    seed: int = Field(0, description="seed of the random init when weights is None")
    feature_dim: int = Field(0, ge=0, description="size of one frame's feature vector")
    fingerprint: list[float] = Field(
        default_factory=list, description="features of a fixed probe image (detects drift)"
    )

    def weights_id(self) -> str:
        """A short stable name of the weights (a local file's content hash included)."""
        if self.weights is None:
            return f"random{self.seed}"
        path = Path(self.weights).expanduser()
        if path.is_file():
            stat = path.stat()
            digest = _file_digest(str(path.resolve()), stat.st_size, stat.st_mtime_ns)
            return f"{path.stem}-{digest}"
        return self.weights

    def cache_key(self) -> str:
        """The key features are cached under: backbone, weights, size, fps and fingerprint."""
        probe = json.dumps([float(f"{v:.3g}") for v in self.fingerprint])
        digest = hashlib.sha256(probe.encode()).hexdigest()[:10]
        return f"{self.name}|{self.weights_id()}|{self.image_size}px|{self.fps:g}fps|{digest}"


class HeadConfig(BaseModel):
    """The MS-TCN head's shape and loss weights (defaults from the MS-TCN paper)."""

    stages: int = Field(4, ge=1, description="refinement stages")
    layers: int = Field(10, ge=1, description="dilated residual layers per stage (dilation 2^i)")
    channels: int = Field(64, ge=1, description="feature maps inside each stage")
    dropout: float = Field(0.5, ge=0, lt=1)
    smooth_weight: float = Field(0.15, ge=0, description="weight of the smoothing loss")
    smooth_clamp: float = Field(16.0, gt=0, description="truncation of the smoothing loss")


class PhaseModelSpec(BaseModel):
    """Everything a checkpoint says about its model, apart from the head's weights."""

    vocabulary: list[str]
    backbone: BackboneSpec = Field(default_factory=BackboneSpec)
    head: HeadConfig = Field(default_factory=HeadConfig)
    feature_mean: list[float] | None = None
    feature_std: list[float] | None = None
    prior: Literal["learned", "forward"] = "learned"
    transitions: list[list[float]] | None = Field(
        None, description="transition probabilities between phases (row: from)"
    )
    initial: list[float] | None = Field(None, description="probability of the first phase")


def resolve_device(device: str) -> str:
    """Check a torch device name (``cpu``, ``cuda``, ``cuda:1``, ``mps``, ``auto``).

    Raises:
        ConfigError: If the name is invalid or the device is not available.
    """
    import torch

    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    try:
        parsed = torch.device(device)
    except (RuntimeError, ValueError) as exc:
        raise ConfigError(f"device {device!r} is not a torch device; use cpu or cuda.") from exc
    if parsed.type == "cuda" and not torch.cuda.is_available():
        raise ConfigError(f"device {device!r} asked for but no CUDA GPU is visible; use cpu.")
    return device


def _load_backbone(spec: BackboneSpec) -> Any:
    """The torchvision model named by ``spec`` with its classifier replaced by an identity."""
    import torch
    from torchvision import models

    try:
        builder = models.get_model_builder(spec.name)
    except ValueError:
        names = models.list_models()
        raise ConfigError(
            f"unknown backbone {spec.name!r}.{suggest(spec.name, names)} Use a torchvision "
            "model name such as resnet18, resnet50, mobilenet_v3_small or efficientnet_b0."
        ) from None
    path = Path(spec.weights).expanduser() if spec.weights else None
    if spec.weights is None or (path is not None and path.is_file()):
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(spec.seed)
            model = builder(weights=None)
    else:
        chosen = _named_weights(spec)
        try:
            model = builder(weights=chosen)  # downloaded once into torch's hub cache
        except (OSError, RuntimeError) as exc:
            raise ConfigError(
                f"could not fetch {spec.name} weights {spec.weights} ({exc}); download them "
                "where there is internet and pass the state-dict file's path instead."
            ) from exc
    for attr in _HEAD_ATTRS:
        if hasattr(model, attr):
            setattr(model, attr, torch.nn.Identity())
            break
    if path is not None and path.is_file():
        _load_state(model, path, spec.name)
    return model.eval()


def _named_weights(spec: BackboneSpec) -> Any:
    from torchvision import models

    enum = models.get_model_weights(spec.name)
    names = ["DEFAULT", *(member.name for member in enum)]
    if spec.weights not in names:
        raise ConfigError(
            f"{spec.weights!r} is neither a file nor weights of {spec.name}."
            f"{suggest(spec.weights or '', names)} Use one of {', '.join(names)} or a "
            "local state-dict path."
        )
    return enum.DEFAULT if spec.weights == "DEFAULT" else enum[spec.weights]


def _load_state(model: Any, path: Path, name: str) -> None:
    import torch

    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except (OSError, RuntimeError, ValueError, EOFError) as exc:
        raise ConfigError(f"{path} is not a readable state dict ({exc}).") from exc
    if isinstance(state, dict) and isinstance(state.get("state_dict"), dict):
        state = state["state_dict"]
    if not isinstance(state, dict):
        raise ConfigError(f"{path} holds no state dict; save one with torch.save(m.state_dict()).")
    heads = tuple(f"{attr}." for attr in _HEAD_ATTRS)
    state = {k.removeprefix("module."): v for k, v in state.items()}
    state = {k: v for k, v in state.items() if not k.startswith(heads)}
    try:
        missing = model.load_state_dict(state, strict=False).missing_keys
    except RuntimeError as exc:
        raise ConfigError(f"{path} does not fit a {name} backbone: {exc}") from exc
    if missing:
        raise ConfigError(
            f"{path} lacks {len(missing)} weights of a {name} backbone (e.g. {missing[0]}); "
            "is it the right architecture?"
        )


def _probe_image(size: int) -> np.ndarray:
    """A fixed colourful test card: features of it fingerprint a backbone."""
    ys, xs = np.mgrid[0:size, 0:size] / max(1, size - 1)
    card = np.stack([xs, ys, (np.sin(6 * xs) * np.cos(4 * ys) + 1) / 2], axis=-1)
    return (card * 255).astype(np.uint8)


class FeatureExtractor:
    """Per-frame features from a torchvision backbone; the model is built on first use.

    Args:
        spec: The backbone. If it carries a fingerprint (from a checkpoint), the built model
            must reproduce it.
        device: Torch device for the backbone.
    """

    def __init__(self, spec: BackboneSpec, *, device: str = "cpu") -> None:
        self.spec = spec
        self.device = device
        self._model: Any = None

    def _ready(self) -> Any:
        if self._model is None:
            import torch

            model = _load_backbone(self.spec).to(resolve_device(self.device))
            self._model = model
            probe = self._embed_arrays([_probe_image(self.spec.image_size)])[0]
            fingerprint = [float(v) for v in probe[:_FINGERPRINT_DIMS]]
            fingerprint += [float(probe.mean()), float(probe.std())]
            expected = self.spec.fingerprint
            scale = max(1e-30, float(np.abs(fingerprint).max()))
            if expected and not np.allclose(expected, fingerprint, rtol=2e-2, atol=1e-3 * scale):
                self._model = None
                raise ConfigError(
                    f"the {self.spec.name} backbone ({self.spec.weights_id()}) built here gives "
                    "other features than the one the phase head was trained on (torch "
                    f"{torch.__version__}; different weights or library versions); use the "
                    "same weights, or retrain the head."
                )
            self.spec = self.spec.model_copy(
                update={"fingerprint": fingerprint, "feature_dim": len(probe)}
            )
        return self._model

    @property
    def feature_dim(self) -> int:
        """Size of one frame's feature vector (builds the model if the spec does not say)."""
        if not self.spec.feature_dim:
            self._ready()
        return self.spec.feature_dim

    def cache_key(self) -> str:
        """What cached features of this extractor are keyed by (see `BackboneSpec`)."""
        if not self.spec.fingerprint:
            self._ready()
        return self.spec.cache_key()

    def _embed_arrays(self, frames: Sequence[np.ndarray]) -> np.ndarray:
        import torch

        batch = torch.from_numpy(np.stack(frames)).permute(0, 3, 1, 2).float().div_(255)
        mean = torch.tensor(_MEAN).view(1, 3, 1, 1)
        std = torch.tensor(_STD).view(1, 3, 1, 1)
        batch = ((batch - mean) / std).to(next(self._model.parameters()).device)
        with torch.inference_mode():
            try:
                out = self._model(batch)
            except RuntimeError as exc:
                raise ConfigError(
                    f"{self.spec.name} cannot embed {self.spec.image_size}px frames ({exc}); "
                    "choose another image size (224 suits every torchvision model)."
                ) from exc
        return out.flatten(1).float().cpu().numpy()

    def embed(self, images: Sequence[Image]) -> np.ndarray:
        """Features of RGB images: an ``(N, feature_dim)`` float32 array.

        Raises:
            ConfigError: If the backbone cannot be built, fetched or run, or differs from the
                one the spec's fingerprint came from.
        """
        self._ready()
        side = self.spec.image_size
        frames = [np.asarray(image.convert("RGB").resize((side, side))) for image in images]
        return self._embed_arrays(frames).astype(np.float32)


# -- the MS-TCN head ------------------------------------------------------------------------


def build_head(config: HeadConfig, in_dim: int, num_classes: int) -> torch.nn.Module:
    """An MS-TCN head: ``config.stages`` stages of dilated residual 1-D convolutions.

    Args:
        config: The head's shape.
        in_dim: Size of one frame's feature vector.
        num_classes: Number of phases.

    Returns:
        A module list of stages (run it with `head_logits`).
    """
    from torch import nn

    stages = nn.ModuleList()
    width = config.channels
    for stage in range(config.stages):
        layers = nn.ModuleList(
            nn.ModuleDict(
                {
                    "dilated": nn.Conv1d(width, width, 3, padding=2**i, dilation=2**i),
                    "pointwise": nn.Conv1d(width, width, 1),
                }
            )
            for i in range(config.layers)
        )
        stages.append(
            nn.ModuleDict(
                {
                    "input": nn.Conv1d(in_dim if stage == 0 else num_classes, width, 1),
                    "layers": layers,
                    "output": nn.Conv1d(width, num_classes, 1),
                }
            )
        )
    return stages


def head_logits(head: torch.nn.Module, features: torch.Tensor, dropout: float) -> torch.Tensor:
    """Run the head over ``(batch, feature_dim, time)`` features.

    Returns:
        Logits of every stage, ``(stages, batch, classes, time)``; the last is the output.
    """
    import torch
    import torch.nn.functional as F

    outputs: list[torch.Tensor] = []
    for index, stage in enumerate(head):
        x = features if index == 0 else F.softmax(outputs[-1], dim=1)
        x = stage["input"](x)
        for layer in stage["layers"]:
            update = layer["pointwise"](F.relu(layer["dilated"](x)))
            x = x + F.dropout(update, dropout, head.training)
        outputs.append(stage["output"](x))
    return torch.stack(outputs)


def head_loss(logits: torch.Tensor, target: torch.Tensor, config: HeadConfig) -> torch.Tensor:
    """Cross-entropy plus the truncated smoothing loss, summed over stages.

    The smoothing term is the mean squared difference of neighbouring samples'
    log-probabilities (the earlier one detached), each clamped at ``config.smooth_clamp``.

    Args:
        logits: ``(stages, 1, classes, time)`` from `head_logits`.
        target: ``(time,)`` label indices.
        config: The head's loss weights.
    """
    import torch.nn.functional as F

    total = logits.new_zeros(())
    for out in logits:
        total = total + F.cross_entropy(out.transpose(1, 2).flatten(0, 1), target)
        if out.shape[-1] > 1 and config.smooth_weight:
            logp = F.log_softmax(out, dim=1)
            step = F.mse_loss(logp[:, :, 1:], logp.detach()[:, :, :-1], reduction="none")
            total = total + config.smooth_weight * step.clamp(0, config.smooth_clamp).mean()
    return total


# -- transition priors and Viterbi ----------------------------------------------------------


def learned_transitions(
    sequences: Iterable[np.ndarray], num_classes: int, *, pseudo_count: float = 1.0
) -> tuple[np.ndarray, np.ndarray]:
    """Transition and first-phase probabilities counted from label sequences (one per video).

    Every transition gets ``pseudo_count`` extra, so unseen ones stay possible but costly.

    Returns:
        ``(transitions, initial)``: a row-stochastic ``(K, K)`` matrix (row: from) and ``(K,)``.
    """
    counts = np.full((num_classes, num_classes), pseudo_count, dtype=np.float64)
    first = np.full(num_classes, pseudo_count, dtype=np.float64)
    for labels in sequences:
        labels = np.asarray(labels, dtype=np.int64)
        if labels.size:
            first[labels[0]] += 1
            np.add.at(counts, (labels[:-1], labels[1:]), 1)
    return counts / counts.sum(1, keepdims=True), first / first.sum()


def forward_transitions(
    num_classes: int, *, mean_run: float = 120.0, backward: float = 1e-6
) -> tuple[np.ndarray, np.ndarray]:
    """A forward-order prior: stay, or move on (mostly to the next phase), rarely go back.

    Args:
        num_classes: Number of phases.
        mean_run: Expected length of a phase in samples (sets the probability of leaving).
        backward: Total probability of moving to an earlier phase.

    Returns:
        ``(transitions, initial)`` as in `learned_transitions`; the first phase is likely first.
    """
    leave = 1.0 / max(mean_run, 1.0)
    trans = np.zeros((num_classes, num_classes))
    for i in range(num_classes):
        ahead = num_classes - i - 1
        trans[i, i] = 1.0 - leave if ahead else 1.0 - backward
        if ahead:
            weights = 0.1 ** np.arange(ahead)  # the next phase most, skips rarely
            trans[i, i + 1 :] = (leave - backward) * weights / weights.sum()
        if i:
            trans[i, :i] = backward / i
        trans[i] /= trans[i].sum()
    initial = np.full(num_classes, 0.05 / max(1, num_classes - 1))
    initial[0] = 0.95 if num_classes > 1 else 1.0
    return trans, initial / initial.sum()


def viterbi(probs: np.ndarray, transitions: np.ndarray, initial: np.ndarray) -> np.ndarray:
    """The most likely phase sequence given per-sample probabilities and a transition prior.

    Args:
        probs: ``(T, K)`` per-sample class probabilities (used as emission scores).
        transitions: ``(K, K)`` transition probabilities, row = from.
        initial: ``(K,)`` probabilities of the first phase.

    Returns:
        ``(T,)`` int labels.
    """
    log_p = np.log(np.clip(np.asarray(probs, dtype=np.float64), 1e-12, None))
    log_t = np.log(np.clip(transitions, 1e-300, None))
    steps, k = log_p.shape
    back = np.zeros((steps, k), dtype=np.int64)
    score = np.log(np.clip(initial, 1e-300, None)) + log_p[0]
    columns = np.arange(k)
    for t in range(1, steps):
        candidates = score[:, None] + log_t
        best = candidates.argmax(axis=0)
        back[t] = best
        score = candidates[best, columns] + log_p[t]
    path = np.empty(steps, dtype=np.int64)
    path[-1] = int(score.argmax())
    for t in range(steps - 1, 0, -1):
        path[t - 1] = back[t, path[t]]
    return path


def samples_in(duration: float, fps: float) -> int:
    """How many samples at ``fps`` cover ``duration`` seconds (at least one)."""
    return max(1, math.ceil(duration * fps - 1e-9))
