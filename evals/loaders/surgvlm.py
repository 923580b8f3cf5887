r"""SurgVLM / SurgSigma-style QA loader: question-answer items in JSON or JSONL.

Accepted item shapes (one file may mix them; a JSON file holds a list, or an object with a
``data``/``items``/``annotations``/``questions`` list; JSONL one object a line)::

    {"id": "1", "image": "cholec80/video01/000025.jpg", "question": "...", "answer": "...",
     "task": "phase", "choices": [...]}
    {"id": "2", "images": [...], "conversations": [{"from": "human", "value": "<image>\n..."},
                                                    {"from": "gpt", "value": "..."}]}
    {"video": "clip.mp4", "messages": [{"role": "user", "content": "..."},
                                       {"role": "assistant", "content": "..."}]}

Each human/gpt pair of a conversation becomes one item. An id the source repeats gets
``~2``, ``~3``... so both items are kept; the load report counts each such repeat. Media
paths are taken relative to the JSON file's folder and stored relative to the dataset root.
``meta.qa_type`` is the item's ``task``/``type``/``qa_type``/``question_type``/``category``
mapped to the parser family (phase, step, action, triplet, cvs, box, grid, instrument,
tissue, ...); the raw value stays in ``meta.qa_type_raw``. The exact SurgSigma-DB field
names were not verified.

    items = SurgVLMLoader().load(Path("data/surgsigma/test.jsonl"))
    items[0].meta["qa_type"]  # "phase"
"""

from __future__ import annotations

import json
import re
from collections import Counter
from pathlib import Path
from typing import Any

from surgagent.evals.loaders._base import AnnotationError, Loader, relative, take_options
from surgagent.evals.loaders._report import LoadReport, Skip
from surgagent.evals.records import Media, TaskRecord

__all__ = ["SurgVLMLoader", "qa_type"]

_TYPE_KEYS = ("task", "type", "qa_type", "question_type", "category")
_LIST_KEYS = ("data", "items", "annotations", "questions")
# First match wins: grid before localisation, triplet before instrument, ...
_QA_TYPES = (
    ("grid", ("grid",)),
    ("box", ("bbox", "box", "locali", "detect", "ground")),
    ("triplet", ("triplet",)),
    ("cvs", ("cvs", "critical view", "critical_view")),
    ("phase", ("phase",)),
    ("step", ("step",)),
    ("action", ("action", "gesture")),
    ("tissue", ("tissue", "anatomy", "organ")),
    ("instrument", ("instrument", "tool")),
)
_PLACEHOLDER = re.compile(r"<(?:image|video)>\s*", re.I)


def qa_type(raw: str | None) -> str:
    """The parser family of an item's task/type label (``open`` where none fits)."""
    if not raw:
        return "open"
    text = str(raw).lower().replace("-", " ").replace("_", " ")
    for name, keys in _QA_TYPES:
        if any(key.replace("_", " ") in text for key in keys):
            return name
    return "_".join(text.split()) or "open"


def _read(path: Path) -> list[tuple[int | None, Any]]:
    """``(line, item)`` of a JSON or JSONL file (line None for a JSON list)."""
    try:
        text = path.read_text(encoding="utf-8-sig")
    except (OSError, UnicodeDecodeError) as exc:
        raise AnnotationError.at(path, None, f"cannot read the QA file ({exc}).") from exc
    if path.suffix.lower() == ".jsonl":
        items: list[tuple[int | None, Any]] = []
        for number, line in enumerate(text.splitlines(), start=1):
            if line.strip():
                try:
                    items.append((number, json.loads(line)))
                except json.JSONDecodeError as exc:
                    raise AnnotationError.at(path, number, f"not valid JSON ({exc.msg}).") from exc
        return items
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise AnnotationError.at(path, exc.lineno, f"not valid JSON ({exc.msg}).") from exc
    if isinstance(data, dict):
        data = next((data[k] for k in _LIST_KEYS if isinstance(data.get(k), list)), None)
    if not isinstance(data, list):
        raise AnnotationError.at(path, None, "expected a list of QA items (or {'data': [...]}).")
    return [(None, item) for item in data]


def _turns(item: dict[str, Any]) -> list[tuple[str, str]]:
    """``(question, answer)`` pairs of an item, in order."""
    if "question" in item and "answer" in item:
        return [(str(item["question"]), str(item["answer"]))]
    turns = item.get("conversations") or item.get("messages") or []
    pairs = []
    question = None
    for turn in turns if isinstance(turns, list) else []:
        if not isinstance(turn, dict):
            continue
        speaker = str(turn.get("from") or turn.get("role") or "").lower()
        text = turn.get("value", turn.get("content"))
        if not isinstance(text, str):
            continue
        if speaker in ("human", "user"):
            question = text
        elif speaker in ("gpt", "assistant", "model") and question is not None:
            pairs.append((question, text))
            question = None
    return pairs


def _media_paths(item: dict[str, Any], folder: Path, root: Path) -> tuple[list[str], str | None]:
    def place(value: Any) -> str:
        path = Path(str(value))
        return path.as_posix() if path.is_absolute() else relative(folder / path, root)

    frames: list[Any] = []
    for key in ("image", "images", "frames"):
        value = item.get(key)
        frames += value if isinstance(value, list) else [value] if value else []
    video = item.get("video")
    return [place(f) for f in frames], place(video) if isinstance(video, str) and video else None


def _case(item: dict[str, Any], frames: list[str], video: str | None, fallback: str) -> str:
    for key in ("case", "video_id", "case_id"):
        if item.get(key) not in (None, ""):
            return str(item[key])
    if video:
        return Path(video).stem
    if frames and Path(frames[0]).parent.name:
        return Path(frames[0]).parent.name
    return fallback


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "_", text).strip("_") or "item"


class SurgVLMLoader(Loader):
    """SurgVLM-DB / SurgSigma-DB style QA items, as task ``surgvlm-qa``.

    ``root`` is a JSON/JSONL file or a folder of them (searched one level down). Gold is
    the answer text; ``meta.qa_type`` tells the scorer which parser to use. Options: none.
    """

    name = "surgvlm"
    tasks = ("surgvlm-qa",)
    layout = (
        "JSON or JSONL QA files (items with image/images/video and question+answer or "
        "LLaVA-style conversations), given as the file or a folder holding them"
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
        if root.is_file():
            files, base = [root], root.parent
        else:
            patterns = ("*.json", "*.jsonl", "*/*.json", "*/*.jsonl")
            files = sorted({p for pattern in patterns for p in root.glob(pattern)})
            base = root
        if not files:
            raise self.missing(root, "QA files (*.json, *.jsonl)")
        items: list[TaskRecord] = []
        seen: Counter[str] = Counter()
        for path in files:
            for index, (line, item) in enumerate(_read(path)):
                where = f"item {index}" if line is None else f"item at line {line}"
                if not isinstance(item, dict):
                    raise AnnotationError.at(path, line, f"{where} is not an object.")
                turns = _turns(item)
                if not turns:
                    raise AnnotationError.at(
                        path, line, f"{where} has no question+answer or human/gpt conversation."
                    )
                records = self._item_records(path, base, index, item, turns, seen)
                for record in records:
                    if "~" in record.id.rsplit("/", 1)[-1]:
                        reason = "id repeats an earlier item's; kept with a ~N suffix"
                        where = relative(path, base)
                        report.skip(where, reason, Skip.RENAMED, example=record.id)
                items += records
        return items

    @staticmethod
    def _item_records(
        path: Path,
        base: Path,
        index: int,
        item: dict[str, Any],
        turns: list[tuple[str, str]],
        seen: Counter[str],
    ) -> list[TaskRecord]:
        frames, video = _media_paths(item, path.parent, base)
        case = _slug(_case(item, frames, video, path.stem))
        raw_type = next((str(item[k]) for k in _TYPE_KEYS if item.get(k)), None)
        name = _slug(str(item.get("id", f"{path.stem}-{index:05d}")))
        choices = item.get("choices") or item.get("options")
        records = []
        for turn, (question, answer) in enumerate(turns):
            detail = name if len(turns) == 1 else f"{name}-q{turn}"
            key = f"surgvlm-qa/{case}/{detail}"
            seen[key] += 1
            if seen[key] > 1:  # repeated ids in the source stay distinct items
                key = f"{key}~{seen[key]}"
            records.append(
                TaskRecord(
                    id=key,
                    task="surgvlm-qa",
                    dataset="surgvlm",
                    case=case,
                    media=Media(video=video, frames=frames),
                    question=_PLACEHOLDER.sub("", question).strip() or question,
                    choices=[str(c) for c in choices] if isinstance(choices, list) else None,
                    gold=answer.strip(),
                    meta={
                        "qa_type": qa_type(raw_type),
                        "qa_type_raw": raw_type,
                        "source": path.name,
                        "turn": turn,
                    },
                )
            )
        return records
