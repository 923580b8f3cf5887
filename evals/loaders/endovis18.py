"""EndoVis2018-VQA loader: the classification questions of Surgical-VQA (Seenivasan et al.).

Native layout (``EndoVis-18-VQA``, as read by the Surgical-VQA data loaders; sequences in
the folder or one level down)::

    seq_1/left_frames/frame000.png
    seq_1/vqa/Classification/frame000_QA.txt    one "question|answer" per line

A line may join several questions with ``&`` that share one answer; each becomes an item.
The image of ``frameXXX_QA.txt`` is ``left_frames/frameXXX.png``. Choices are the 18
answer classes of the Surgical-VQA classifier, plus any other answer the files contain.
Sequences 1, 5 and 16 are the usual validation split (``meta.split``).

    items = EndoVis18VQALoader().load(Path("data/EndoVis-18-VQA"))
    items[0].question, items[0].gold  # ("what organ is being operated?", "kidney")
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from surgagent.evals.loaders._base import (
    AnnotationError,
    Loader,
    case_names,
    relative,
    take_options,
)
from surgagent.evals.records import Media, TaskRecord

__all__ = ["ENDOVIS18_VQA_CLASSES", "EndoVis18VQALoader"]

ENDOVIS18_VQA_CLASSES = (
    "kidney",
    "Idle",
    "Grasping",
    "Retraction",
    "Tissue Manipulation",
    "Tool Manipulation",
    "Cutting",
    "Cauterization",
    "Suction",
    "Looping",
    "Suturing",
    "Clipping",
    "Staple",
    "Ultrasound Sensing",
    "left-top",
    "right-top",
    "left-bottom",
    "right-bottom",
)
_VALIDATION_SEQUENCES = {"seq_1", "seq_5", "seq_16"}


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
        self, root: Path, tasks: list[str], every_s: float | None, options: dict[str, Any]
    ) -> list[TaskRecord]:
        take_options(self.name, options, {})
        pattern = "seq_*/vqa/Classification/*.txt"
        files = sorted({*root.glob(pattern), *root.glob(f"*/{pattern}")})
        if not files:
            raise self.missing(root, "EndoVis18-VQA question files")
        sequences = case_names(sorted({path.parents[2] for path in files}))
        loaded = [(path, read_qa_file(path)) for path in files]
        extra = sorted({a for _, pairs in loaded for _, _, a in pairs} - set(ENDOVIS18_VQA_CLASSES))
        choices = [*ENDOVIS18_VQA_CLASSES, *extra]
        items = []
        for path, pairs in loaded:
            sequence = path.parents[2]
            case = sequences[sequence]
            frame = path.stem.split("_")[0]
            image = relative(sequence / "left_frames" / f"{frame}.png", root)
            for index, (line, question, answer) in enumerate(pairs):
                items.append(
                    TaskRecord(
                        id=f"endovis18-vqa/{case}/{frame}-q{index:02d}",
                        task="endovis18-vqa",
                        dataset="endovis2018-vqa",
                        case=case,
                        media=Media(frames=[image]),
                        question=f"{question} Answer with one of: {', '.join(choices)}.",
                        choices=choices,
                        gold=answer,
                        meta={
                            "kind": _kind(question),
                            "source": relative(path, root),
                            "line": line,
                            "split": "val" if sequence.name in _VALIDATION_SEQUENCES else "train",
                        },
                    )
                )
        return items
