"""Phase segmenter data and training: Cholec80-format annotations, cached features, the loop.

Annotations are Cholec80 phase files (a ``Frame<TAB>Phase`` header, then one row per video
frame, e.g. ``video01-phase.txt`` next to ``video01.mp4``). Frame features are computed once
per case (1 a second) and cached by content hash + backbone + fps, so training several heads
or predicting again never decodes the video twice.

    ckpt = train_segmenter(Path("cholec80/videos"), Path("cholec80/phase_annotations"),
                           out=Path("phase.pt"), backbone="resnet50", epochs=50)
"""

from __future__ import annotations

import contextlib
import io
import itertools
import json
import logging
import pickle
import tempfile
import zipfile
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any, Literal

import numpy as np
from pydantic import BaseModel, ValidationError

from tools._decode import VIDEO_SUFFIXES, folder_images, video_images
from tools.cache import Case, CaseCache, atomic_write_bytes, atomic_write_text
from tools.errors import CaseError, ConfigError, suggest
from tools.phase_model import (
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
    samples_in,
)
from tools.vocabulary import CHOLEC80_PHASES

__all__ = [
    "CHECKPOINT_FORMAT",
    "TrainProgress",
    "align_labels",
    "case_features",
    "check_vocabulary",
    "find_training_pairs",
    "read_checkpoint",
    "read_cholec80_phase_file",
    "train_segmenter",
    "write_cholec80_phase_file",
]

log = logging.getLogger(__name__)

CHECKPOINT_FORMAT = "surgagent-phase-segmenter"
_CHECKPOINT_VERSION = 1
_FEATURES_VERSION = "1"
_BATCH = 32
# What torch.load raises on a truncated, corrupt or foreign file.
_LOAD_ERRORS = (
    OSError,
    RuntimeError,
    ValueError,
    EOFError,
    pickle.UnpicklingError,
    zipfile.BadZipFile,
)


# -- annotation files -----------------------------------------------------------------------


def check_vocabulary(vocabulary: Sequence[str] | None) -> list[str]:
    """The phase names to use: Cholec80's seven where None.

    Raises:
        ConfigError: If the list is empty, has fewer than two names, or repeats a name.
    """
    names = [str(name).strip() for name in (vocabulary or CHOLEC80_PHASES)]
    if len(names) < 2 or not all(names):
        raise ConfigError(f"a phase vocabulary needs at least two non-empty names, got {names}.")
    repeated = sorted({name for name in names if names.count(name) > 1})
    if repeated:
        raise ConfigError(f"phase names repeat in the vocabulary: {', '.join(repeated)}.")
    return names


def _phase_index(token: str, vocabulary: Sequence[str], path: Path, line: int) -> int:
    if token in vocabulary:
        return vocabulary.index(token)
    if token.isdigit() and int(token) < len(vocabulary):
        return int(token)  # some tools write indices instead of names
    raise CaseError(
        f"{path.name} line {line}: unknown phase {token!r}.{suggest(token, vocabulary)} "
        f"Known phases: {', '.join(vocabulary)}; pass the procedure's vocabulary if it differs."
    )


def read_cholec80_phase_file(
    path: Path, vocabulary: Sequence[str], *, video_fps: float = 25.0
) -> tuple[np.ndarray, float]:
    """Read a Cholec80 phase file: a ``Frame<TAB>Phase`` header, then ``frame<TAB>name`` rows.

    Rows must step by a constant number of frames; their rate is ``video_fps / step`` (25 fps
    for the original annotations, 1 fps for files written every 25th frame).

    Args:
        path: The file.
        vocabulary: Phase names in label order (a row may also give a label index).
        video_fps: The frame rate of the video the frame numbers count.

    Returns:
        ``(labels, fps)``: int label indices, one per row, and their rate.

    Raises:
        CaseError: If the file is missing or unreadable, has no rows, uneven frame steps, or
            a phase outside the vocabulary.
    """
    try:
        lines = Path(path).read_text(encoding="utf-8-sig").splitlines()
    except (OSError, UnicodeDecodeError) as exc:
        raise CaseError(f"cannot read phase annotations {path} ({exc}).") from exc
    frames: list[int] = []
    labels: list[int] = []
    for number, line in enumerate(lines, start=1):
        parts = line.split()
        if not parts or (number == 1 and parts[0].lower() == "frame"):
            continue
        if len(parts) != 2 or not parts[0].isdigit():
            raise CaseError(
                f"{path.name} line {number}: {line.strip()!r} is not 'frame<TAB>phase'; "
                "Cholec80 phase files have a 'Frame\\tPhase' header and one row per frame."
            )
        frames.append(int(parts[0]))
        labels.append(_phase_index(parts[1], vocabulary, Path(path), number))
    if not labels:
        raise CaseError(f"{path} has no annotated frames; it covers an empty range of video.")
    steps = set(np.diff(frames).tolist()) if len(frames) > 1 else {1}
    if len(steps) != 1 or min(steps) < 1:
        raise CaseError(
            f"{path.name}: frame numbers must rise by a constant step (found steps "
            f"{sorted(steps)[:5]}); write one row per frame or per fixed number of frames."
        )
    return np.asarray(labels, dtype=np.int64), video_fps / steps.pop()


def write_cholec80_phase_file(
    path: Path,
    labels: Sequence[int] | np.ndarray,
    vocabulary: Sequence[str],
    *,
    fps: float = 1.0,
    video_fps: float = 25.0,
) -> Path:
    """Write labels sampled at ``fps`` as a Cholec80 phase file (frame numbers at ``video_fps``).

    Returns:
        ``path`` (written atomically).
    """
    step = video_fps / fps
    rows = [f"{round(k * step)}\t{vocabulary[int(label)]}" for k, label in enumerate(labels)]
    return atomic_write_text(Path(path), "Frame\tPhase\n" + "\n".join(rows) + "\n")


def align_labels(labels: np.ndarray, labels_fps: float, count: int, fps: float) -> np.ndarray:
    """The labels at the ``count`` feature times ``k / fps`` (nearest annotated frame).

    Samples past the annotations' end are left out, so the result may be shorter than
    ``count``.
    """
    index = np.floor(np.arange(count) * labels_fps / fps + 0.5).astype(np.int64)
    return labels[index[index < len(labels)]]


def find_training_pairs(videos_dir: Path, annotations_dir: Path) -> list[tuple[Path, Path]]:
    """Match ``<name>.<video suffix>`` with ``<name>-phase.txt`` (or ``<name>.txt``).

    Raises:
        ConfigError: If a folder is missing or no video has an annotation file.
    """
    for folder in (videos_dir, annotations_dir):
        if not Path(folder).is_dir():
            raise ConfigError(f"no such folder: {folder}; check the path.")
    videos = sorted(p for p in Path(videos_dir).iterdir() if p.suffix.lower() in VIDEO_SUFFIXES)
    pairs = []
    for video in videos:
        for name in (f"{video.stem}-phase.txt", f"{video.stem}.txt"):
            if (Path(annotations_dir) / name).is_file():
                pairs.append((video, Path(annotations_dir) / name))
                break
    if not pairs:
        found = ", ".join(p.name for p in videos[:5]) or "no videos"
        raise ConfigError(
            f"no video in {videos_dir} ({found}) has a phase file in {annotations_dir}; "
            "name them like video01.mp4 and video01-phase.txt."
        )
    return pairs


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


# -- checkpoints ----------------------------------------------------------------------------


def _save_checkpoint(path: Path, spec: PhaseModelSpec, state: dict[str, Any], **extra: Any) -> None:
    import torch

    buffer = io.BytesIO()
    payload = {
        "format": CHECKPOINT_FORMAT,
        "version": _CHECKPOINT_VERSION,
        "spec": spec.model_dump_json(),
        "head_state": state,
        **extra,
    }
    torch.save(payload, buffer)
    atomic_write_bytes(path, buffer.getvalue())


def read_checkpoint(path: Path) -> tuple[PhaseModelSpec, dict[str, Any], dict[str, Any]]:
    """Read a phase-segmenter checkpoint written by `train_segmenter`.

    Returns:
        ``(spec, head_state, payload)``; the payload also holds training history.

    Raises:
        ConfigError: If the file is missing, not a checkpoint of ours, or corrupt.
    """
    import torch

    path = Path(path).expanduser()
    if not path.is_file():
        raise ConfigError(
            f"no phase-segmenter weights at {path}; train some with "
            "`surgagent phase train` or give the right --weights path."
        )
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except _LOAD_ERRORS as exc:
        raise ConfigError(
            f"{path} is not a readable phase checkpoint ({exc}); retrain it."
        ) from exc
    if not isinstance(payload, dict) or payload.get("format") != CHECKPOINT_FORMAT:
        raise ConfigError(f"{path} is not a phase-segmenter checkpoint of SurgAgent.")
    try:
        spec = PhaseModelSpec.model_validate_json(payload["spec"])
        state = dict(payload["head_state"])
    except (KeyError, TypeError, ValidationError) as exc:
        raise ConfigError(f"{path} is a damaged phase checkpoint ({exc}); retrain it.") from exc
    return spec, state, payload


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
    from tools.video import open_case

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
            _save_checkpoint(
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
