"""EndoVis2018-VQA loader: the classification questions of Surgical-VQA (Seenivasan et al.).

Native layout (``EndoVis-18-VQA``, as read by the Surgical-VQA data loaders; sequences in
the folder or one level down)::

    seq_1/left_frames/frame000.png
    seq_1/vqa/Classification/frame000_QA.txt    one "question|answer" per line

A line may join several questions with ``&`` that share one answer; each becomes an item.
The image of ``frameXXX_QA.txt`` is ``left_frames/frameXXX.png``. Choices and gold are the
18 answer classes of the Surgical-VQA classifier spelt as the files spell them
(``Tissue_Manipulation``, ``Tool_Manipulation``, ``Ultrasound_Sensing``); the question shows
them readable ("Tissue Manipulation"), and an answer spelt otherwise ("Tissue Manipulation")
is taken as its class. An answer outside the classes stays as written and is added to the
choices (``surgagent eval check`` names it). Files under ``Classification/`` not named
``*_QA.txt`` are left out and reported. Sequences 1, 5 and 16 are the usual validation split
(``meta.split``).

    items = EndoVis18VQALoader().load(Path("data/EndoVis-18-VQA"))
    items[0].question, items[0].gold  # ("what organ is being operated? ...", "kidney")
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from surgagent.evals.loaders._base import (
    AnnotationError,
    Loader,
    case_names,
    relative,
    take_options,
)
from surgagent.evals.loaders._report import LoadReport, Skip, Survey, relative_all
from surgagent.evals.records import Media, TaskRecord

__all__ = ["ENDOVIS18_VQA_CLASSES", "EndoVis18VQALoader", "answer_class"]

# The answer classes in the order and spelling of the Surgical-VQA EndoVis18 loaders.
ENDOVIS18_VQA_CLASSES = (
    "kidney",
    "Idle",
    "Grasping",
    "Retraction",
    "Tissue_Manipulation",
    "Tool_Manipulation",
    "Cutting",
    "Cauterization",
    "Suction",
    "Looping",
    "Suturing",
    "Clipping",
    "Staple",
    "Ultrasound_Sensing",
    "left-top",
    "right-top",
    "left-bottom",
    "right-bottom",
)
_VALIDATION_SEQUENCES = {"seq_1", "seq_5", "seq_16"}
_IMAGE_FOLDERS = ("left_frames", "left_fr")


def _key(text: str) -> str:
    return re.sub(r"[^a-z0-9]+", "", text.lower())


_BY_KEY = {_key(label): label for label in ENDOVIS18_VQA_CLASSES}


def answer_class(answer: str) -> str | None:
    """The class an answer names, whatever its spacing (``Tissue Manipulation`` too)."""
    return _BY_KEY.get(_key(answer))


def _kind(question: str) -> str:
    text = question.lower()
    if "organ" in text:
        return "organ"
    if "where" in text or "locat" in text:
        return "location"
    return "state"


def read_qa_file(path: Path) -> list[tuple[int, str, str]]:
    """``(line, question, answer)`` of a ``frameXXX_QA.txt`` file, ``&``-joined questions split.

    Raises:
        AnnotationError: For a line that is not ``question|answer`` (naming file and line).
    """
    try:
        lines = path.read_text(encoding="utf-8-sig").splitlines()
    except (OSError, UnicodeDecodeError) as exc:
        raise AnnotationError.at(path, None, f"cannot read the QA file ({exc}).") from exc
    pairs = []
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        parts = line.split("|")
        if len(parts) != 2 or not parts[0].strip() or not parts[1].strip():
            raise AnnotationError.at(path, number, f"{line.strip()!r} is not 'question|answer'.")
        answer = parts[1].strip()
        for question in parts[0].split("&"):
            if question.strip():
                pairs.append((number, question.strip(), answer))
    return pairs


class EndoVis18VQALoader(Loader):
    """EndoVis2018-VQA (Seenivasan et al. 2022): organ, tool-state and location questions.

    Task ``endovis18-vqa``: gold is the answer class; ``meta.kind`` is ``organ``,
    ``state`` or ``location``. Options: none.
    """

    name = "endovis2018-vqa"
    tasks = ("endovis18-vqa",)
    layout = (
        "seq_N/vqa/Classification/frameXXX_QA.txt ('question|answer' lines) with "
        "seq_N/left_frames/frameXXX.png, in the folder or one level down"
    )

    def _load(
        self,
        root: Path,
        tasks: list[str],
        every_s: float | None,
        options: dict[str, Any],
        report: LoadReport,
    ) -> list[TaskRecord]:
        take_options(self.name, options, {})
        files = []
        for path in _question_files(root):
            if path.name.endswith("_QA.txt"):
                files.append(path)
            else:
                report.skip(relative(path, root), "not a frameXXX_QA.txt file", Skip.UNRECOGNISED)
        if not files:
            raise self.missing(root, "EndoVis18-VQA question files")
        sequences = case_names(sorted({path.parents[2] for path in files}))
        loaded = [(path, read_qa_file(path)) for path in files]
        answers = {a for _, pairs in loaded for _, _, a in pairs}
        extra = sorted(a for a in answers if answer_class(a) is None)
        choices = [*ENDOVIS18_VQA_CLASSES, *extra]
        items = []
        for path, pairs in loaded:
            sequence = path.parents[2]
            case = sequences[sequence]
            frame = path.name[: -len("_QA.txt")]
            folder = next(
                (name for name in _IMAGE_FOLDERS if (sequence / name).is_dir()), _IMAGE_FOLDERS[0]
            )
            image = relative(sequence / folder / f"{frame}.png", root)
            for index, (line, question, answer) in enumerate(pairs):
                items.append(
                    TaskRecord(
                        id=f"endovis18-vqa/{case}/{frame}-q{index:02d}",
                        task="endovis18-vqa",
                        dataset="endovis2018-vqa",
                        case=case,
                        media=Media(frames=[image]),
                        question=question,
                        choices=choices,
                        gold=answer_class(answer) or answer,
                        meta={
                            "kind": _kind(question),
                            "source": relative(path, root),
                            "line": line,
                            "split": "val" if sequence.name in _VALIDATION_SEQUENCES else "train",
                        },
                    )
                )
        return items

    def survey(self, root: Path, items: Sequence[TaskRecord]) -> Survey:
        """Frame images on disk; the assumption that a QA file names its frame."""
        sequences = {path.parents[2] for path in _question_files(root)}
        frames = [
            image
            for sequence in sequences
            for name in _IMAGE_FOLDERS
            for image in (sequence / name).glob("*.png")
        ]
        return Survey(
            assumptions=[
                "seq_N/vqa/Classification/frameXXX_QA.txt asks about "
                "seq_N/left_frames/frameXXX.png (still frames; no video)"
            ],
            frames=relative_all(frames, root),
        )


def _question_files(root: Path) -> list[Path]:
    pattern = "seq_*/vqa/Classification/*.txt"
    return sorted({*root.glob(pattern), *root.glob(f"*/{pattern}")})
