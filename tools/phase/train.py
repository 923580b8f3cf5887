"""Training the phase segmenter on Cholec80-format annotations.

Frame features come from the feature cache (`surgagent.tools.phase.features`), so
training several heads never decodes a video twice; a killed run resumes from its
last epoch.

    ckpt = train_segmenter(Path("cholec80/videos"), Path("cholec80/phase_annotations"),
                           out=Path("phase.pt"), backbone="resnet50", epochs=50)
"""

from __future__ import annotations

import contextlib
import json
import logging
import tempfile
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, Literal

import numpy as np
from pydantic import BaseModel

from surgagent.tools.cache import CaseCache
from surgagent.tools.errors import ConfigError
from surgagent.tools.phase.annotations import (
    align_labels,
    check_vocabulary,
    find_training_pairs,
    read_cholec80_phase_file,
)
from surgagent.tools.phase.checkpoint import read_checkpoint, save_checkpoint
from surgagent.tools.phase.features import case_features
from surgagent.tools.phase.model import (
    BackboneSpec,
    FeatureExtractor,
    HeadConfig,
    PhaseModelSpec,
    build_head,
    forward_transitions,
    head_logits,
    head_loss,
    learned_transitions,
    resolve_device,
)

__all__ = [
    "TrainProgress",
    "train_segmenter",
]

log = logging.getLogger(__name__)


# -- training -------------------------------------------------------------------------------


class TrainProgress(BaseModel):
    """One progress event of `train_segmenter`."""

    stage: Literal["features", "train"]
    done: int
    total: int
    video: str | None = None
    loss: float | None = None
    accuracy: float | None = None


def _load_examples(
    pairs: list[tuple[Path, Path]],
    cache: CaseCache,
    extractor: FeatureExtractor,
    vocabulary: list[str],
    report: Callable[[TrainProgress], None],
) -> list[tuple[str, np.ndarray, np.ndarray]]:
    from surgagent.tools.video.engine import open_case

    opened = []
    for video, annotation in pairs:  # read every annotation before the slow part
        case = open_case(video, cache)
        labels, labels_fps = read_cholec80_phase_file(annotation, vocabulary, video_fps=case.fps)
        opened.append((video.stem, case, labels, labels_fps))
    examples = []
    for name, case, labels, labels_fps in opened:

        def tick(done: int, total: int, name: str = name) -> None:
            report(TrainProgress(stage="features", done=done, total=total, video=name))

        features = case_features(case, cache, extractor, progress=tick)
        aligned = align_labels(labels, labels_fps, len(features), extractor.spec.fps)
        if len(aligned) < len(features):
            log.warning(
                "%s: annotations end %d s before the video; training on the annotated part",
                name,
                (len(features) - len(aligned)) / extractor.spec.fps,
            )
        examples.append((name, features[: len(aligned)], aligned))
    return examples


def train_segmenter(
    videos_dir: Path,
    annotations_dir: Path,
    *,
    out: Path,
    backbone: str = "resnet18",
    epochs: int = 50,
    vocabulary: Sequence[str] | None = None,
    device: str = "cpu",
    progress: Callable[[TrainProgress], None] | None = None,
    cache: CaseCache | None = None,
    weights: str | None = None,
    image_size: int = 224,
    fps: float = 1.0,
    head: HeadConfig | None = None,
    prior: Literal["learned", "forward"] = "learned",
    lr: float = 5e-4,
    seed: int = 0,
    resume: bool = False,
) -> Path:
    """Train an MS-TCN phase head on a folder of videos with Cholec80-format annotations.

    The checkpoint is rewritten after every epoch; ``resume=True`` continues from it.

    Args:
        videos_dir: Folder of videos (``video01.mp4``, ...).
        annotations_dir: Folder of phase files (``video01-phase.txt``, ...).
        out: The checkpoint file to write.
        backbone: torchvision model name for frame features.
        epochs: Passes over the training videos (in total, when resuming).
        vocabulary: Phase names in label order; Cholec80's seven where None.
        device: Torch device (``cpu``, ``cuda``, ``auto``).
        progress: Called with a `TrainProgress` per feature batch and per epoch.
        cache: Case cache for features (a temporary one where None: nothing is kept).
        weights: Backbone weights (see `BackboneSpec.weights`); random init where None.
        image_size: Frames are resized to this square side.
        fps: Frames per second the head sees.
        head: The head's shape; MS-TCN defaults where None.
        prior: Transition prior for Viterbi decoding: counted from the annotations
            (``learned``) or a forward-order prior (``forward``).
        lr: Adam learning rate.
        seed: Seed of the head's initialisation and the video order.
        resume: Continue training the checkpoint at ``out`` (same settings required).

    Returns:
        ``out``.

    Raises:
        ConfigError: For missing folders, no matched videos, a bad backbone, vocabulary or
            device, or a checkpoint to resume that was trained otherwise.
        CaseError: For an unreadable video or annotation file.
    """
    if epochs < 1:
        raise ConfigError(f"epochs={epochs}; train for at least 1 epoch.")
    vocab = check_vocabulary(vocabulary)
    pairs = find_training_pairs(Path(videos_dir), Path(annotations_dir))
    device = resolve_device(device)
    report = progress or (lambda event: None)
    with contextlib.ExitStack() as stack:
        if cache is None:
            cache = CaseCache(Path(stack.enter_context(tempfile.TemporaryDirectory())))
        backbone_spec = BackboneSpec(
            name=backbone, weights=weights, image_size=image_size, fps=fps, seed=seed
        )
        extractor = FeatureExtractor(backbone_spec, device=device)
        examples = _load_examples(pairs, cache, extractor, vocab, report)
    stacked = np.concatenate([features for _, features, _ in examples])
    std = stacked.std(0)
    if prior == "learned":
        trans, initial = learned_transitions([labels for *_, labels in examples], len(vocab))
    else:
        trans, initial = forward_transitions(len(vocab), mean_run=_mean_run(examples))
    spec = PhaseModelSpec(
        vocabulary=vocab,
        backbone=extractor.spec,
        head=head or HeadConfig(),
        feature_mean=stacked.mean(0).tolist(),
        feature_std=np.where(std > 0, std, 1.0).tolist(),
        prior=prior,
        transitions=trans.tolist(),
        initial=initial.tolist(),
    )
    _fit(
        spec,
        examples,
        out=Path(out),
        epochs=epochs,
        lr=lr,
        seed=seed,
        device=device,
        resume=resume,
        report=report,
    )
    return Path(out)


def _mean_run(examples: list[tuple[str, np.ndarray, np.ndarray]]) -> float:
    runs = sum(int(np.count_nonzero(np.diff(labels))) + 1 for *_, labels in examples)
    return sum(len(labels) for *_, labels in examples) / max(1, runs)


def _resume_state(out: Path, spec: PhaseModelSpec) -> dict[str, Any] | None:
    if not out.is_file():
        return None
    old, _, payload = read_checkpoint(out)
    same = (old.vocabulary, old.backbone.cache_key(), old.head) == (
        spec.vocabulary,
        spec.backbone.cache_key(),
        spec.head,
    )
    if not same:
        raise ConfigError(
            f"{out} was trained with another vocabulary, backbone or head; resume with the "
            "same settings, or write a new checkpoint with --out."
        )
    return payload


def _fit(
    spec: PhaseModelSpec,
    examples: list[tuple[str, np.ndarray, np.ndarray]],
    *,
    out: Path,
    epochs: int,
    lr: float,
    seed: int,
    device: str,
    resume: bool,
    report: Callable[[TrainProgress], None],
) -> None:
    import torch

    mean, std = np.asarray(spec.feature_mean), np.asarray(spec.feature_std)
    tensors = [
        (
            torch.from_numpy(((features - mean) / std).T.astype(np.float32))[None].to(device),
            torch.from_numpy(labels).to(device),
        )
        for _, features, labels in examples
    ]
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        head = build_head(spec.head, spec.backbone.feature_dim, len(spec.vocabulary)).to(device)
    optimizer = torch.optim.Adam(head.parameters(), lr=lr)
    history: list[dict[str, float]] = []
    payload = _resume_state(out, spec) if resume else None
    if payload is not None:
        head.load_state_dict(payload["head_state"])
        optimizer.load_state_dict(payload["optimizer"])
        history = list(payload.get("history", []))
    # Dropout draws from torch's global generator: seed it too (per start epoch, so a resumed
    # run is as reproducible as a fresh one), without disturbing the caller's random state.
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed + len(history))
        order = np.random.default_rng(seed)
        for epoch in range(len(history), epochs):
            head.train()
            loss_sum, correct, seen = 0.0, 0, 0
            for index in order.permutation(len(tensors)):
                features, target = tensors[index]
                logits = head_logits(head, features, spec.head.dropout)
                loss = head_loss(logits, target, spec.head)
                optimizer.zero_grad()
                loss.backward()
                optimizer.step()
                loss_sum += loss.item()
                correct += int((logits[-1, 0].argmax(0) == target).sum())
                seen += len(target)
            history.append(
                {"epoch": epoch + 1, "loss": loss_sum / len(tensors), "accuracy": correct / seen}
            )
            state = {k: v.detach().cpu() for k, v in head.state_dict().items()}
            save_checkpoint(
                out,
                spec,
                state,
                optimizer=optimizer.state_dict(),
                history=history,
                videos=[name for name, *_ in examples],
            )
            last = history[-1]
            report(
                TrainProgress(
                    stage="train",
                    done=epoch + 1,
                    total=epochs,
                    loss=last["loss"],
                    accuracy=last["accuracy"],
                )
            )
    log.info("phase head trained: %s", json.dumps(history[-1:]))
