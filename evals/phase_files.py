"""Cholec80-format phase files scored by folder: pairing gold and predictions by video.

One implementation for `surgagent phase eval` and `surgagent eval score`: files pair by video
name, both sides are taken at one rate, and `surgagent.evals.phase_metrics.evaluate_videos`
scores them.

    pairs = read_phase_pairs(Path("gold"), Path("pred"), CHOLEC80_PHASES, fps=1.0)
    print(score_cholec80_dirs("gold", "pred", variant="matlab")["accuracy"])
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from surgagent.evals.phase_metrics import Variant, evaluate_videos, resample_labels

__all__ = ["phase_files", "read_phase_pairs", "score_cholec80_dirs"]


def phase_files(folder: Path) -> dict[str, Path]:
    """Phase files of a folder by video name (``video41-phase.txt`` -> ``video41``).

    Raises:
        ValueError: For a missing folder, no files, or two files of one video.
    """
    if not folder.is_dir():
        raise ValueError(f"no such folder: {folder}")
    files: dict[str, Path] = {}
    for path in sorted(folder.glob("*.txt")):
        name = re.sub(r"([-_](phase|pred|preds|prediction|predictions))+$", "", path.stem)
        if name in files:
            raise ValueError(f"{files[name].name} and {path.name} in {folder} are both {name}")
        files[name] = path
    if not files:
        raise ValueError(f"no phase files (*.txt) in {folder}")
    return files


def score_cholec80_dirs(
    gold_dir: Path | str,
    pred_dir: Path | str,
    *,
    variant: Variant = "matlab",
    phases: Sequence[str] | None = None,
    fps: float = 1.0,
    video_fps: float = 25.0,
) -> dict[str, Any]:
    """Video-level Cholec80 phase metrics from two folders of Cholec80-format phase files.

    Files pair by video name (``video41-phase.txt``, ``video41_pred.txt`` and ``video41.txt``
    are all ``video41``); either side may be at 25 fps or any constant step, both are taken at
    ``fps`` and scored by `surgagent.evals.phase_metrics.evaluate_videos`.

    Args:
        gold_dir: Ground-truth phase files.
        pred_dir: Predicted phase files.
        variant: ``matlab``, ``intended`` or ``strict`` (named in the result).
        phases: Phase names in label order; Cholec80's seven where None.
        fps: The rate both are scored at (1 in the Cholec80 protocol).
        video_fps: The frame rate the files' frame numbers count.

    Returns:
        ``variant``, ``videos`` (names), ``accuracy``, ``precision``, ``recall``, ``jaccard``
        (percent) with ``*_std``, ``per_phase`` and ``phases``.

    Raises:
        ValueError: If a video lacks a prediction or ground truth (named), or the two cover
            different lengths.
        CaseError: If a file cannot be read (from `surgagent.tools.phase.train`).
    """
    from surgagent.tools.phase.annotations import check_vocabulary

    names = check_vocabulary(phases)
    videos = read_phase_pairs(Path(gold_dir), Path(pred_dir), names, fps=fps, video_fps=video_fps)
    result = evaluate_videos(videos, phases=names, fps=fps, variant=variant).to_dict()
    keys = ("accuracy", "precision", "recall", "jaccard")
    return {
        "variant": result["variant"],
        "videos": sorted(videos),
        **{k: result[k] for key in keys for k in (key, f"{key}_std")},
        "per_phase": {
            phase: {key: result[f"{key}_per_phase"][p] for key in keys[1:]}
            for p, phase in enumerate(names)
        },
        "phases": names,
        "fps": fps,
        "relaxation_s": result["relaxation_s"],
    }


def read_phase_pairs(
    gold_dir: Path,
    pred_dir: Path,
    vocabulary: Sequence[str],
    *,
    fps: float = 1.0,
    video_fps: float = 25.0,
) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """Gold and predicted labels per video, both at ``fps`` and of equal length.

    A difference of a couple of samples at the end (frame-count rounding) is trimmed; more
    means the files were not made for the same video.

    Raises:
        ValueError: If a video lacks a prediction or ground truth (named), or the two cover
            different lengths.
        CaseError: If a file cannot be read (from `surgagent.tools.phase.train`).
    """
    from surgagent.tools.phase.annotations import read_cholec80_phase_file

    gold_files, pred_files = phase_files(gold_dir), phase_files(pred_dir)
    missing = sorted(set(gold_files) - set(pred_files))
    if missing:
        raise ValueError(
            f"{len(missing)} of {len(gold_files)} gold videos have no prediction in {pred_dir} "
            f"({', '.join(missing[:5])}); predict them all, or point the gold folder at the "
            "videos to score"
        )
    extra = sorted(set(pred_files) - set(gold_files))
    if extra:
        raise ValueError(f"{gold_dir} has no ground truth for {', '.join(extra)} (in {pred_dir})")
    slack = max(2, round(2 * fps))
    pairs = {}
    for name in sorted(gold_files):
        arrays = []
        for path in (gold_files[name], pred_files[name]):
            labels, rate = read_cholec80_phase_file(path, vocabulary, video_fps=video_fps)
            arrays.append(resample_labels(labels, rate, fps))
        gold, pred = arrays
        if abs(len(gold) - len(pred)) > slack:
            raise ValueError(
                f"{name}: the ground truth covers {len(gold) / fps:.0f} s but the prediction "
                f"{len(pred) / fps:.0f} s; were they made for the same video?"
            )
        size = min(len(gold), len(pred))
        pairs[name] = (gold[:size], pred[:size])
    return pairs
