"""Eval records: task items (what to ask), results (what a system answered) and their files.

A *task set* is a JSONL file of `TaskRecord` lines with a header line naming its version, so
a run can say exactly which items it scored. A *run* appends one `ResultRecord` per finished
item and system to ``results.jsonl``, so a rerun resumes where it stopped.

    tasks = read_tasks("cholec80.jsonl")
    write_tasks("cholec80-sample.jsonl", tasks[:50], name="cholec80-sample")
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

__all__ = [
    "TASK_SET_FORMAT",
    "Media",
    "ResultRecord",
    "TaskRecord",
    "TaskSetHeader",
    "Usage",
    "append_result",
    "read_results",
    "read_tasks",
    "shard",
    "write_tasks",
]

log = logging.getLogger(__name__)

TASK_SET_FORMAT = "surgagent-tasks/1"


class Media(BaseModel):
    """What the question is about: a video span, or frame images.

    Attributes:
        video: Video file (absolute, or relative to the task file's folder).
        start: Start of the span in seconds (the question's moment where ``end`` is None).
        end: End of the span in seconds.
        frames: Frame image files (absolute or relative to the task file's folder).
        times: Video times (s) of ``frames``, or of the frames to show from ``video``.
    """

    model_config = ConfigDict(frozen=True)

    video: str | None = None
    start: float | None = Field(None, ge=0)
    end: float | None = Field(None, ge=0)
    frames: list[str] = Field(default_factory=list)
    times: list[float] = Field(default_factory=list)


class TaskRecord(BaseModel):
    """One eval item.

    Attributes:
        id: Unique within the task set, e.g. ``cholec80-phase/video41/t0125``.
        task: Registered task name, e.g. ``cholec80-phase``, ``cholect50-triplet``,
            ``endoscapes-cvs``, ``multistep-cvs-before-clip``.
        dataset: Dataset the item comes from (``cholec80``, ``cholect50``, ...).
        case: The case (video) id, so items of one case can share a conversation.
        media: What to look at.
        question: The question as asked to every system.
        choices: Options for multiple-choice items.
        gold: The reference answer in the task's structured form (a label, a list of
            labels, three booleans for CVS, a box, ...).
        meta: Anything else a metric or report needs (fps, phase vocabulary, source file).
    """

    model_config = ConfigDict(frozen=True)

    id: str = Field(min_length=1)
    task: str = Field(min_length=1)
    dataset: str = Field(min_length=1)
    case: str = ""
    media: Media = Field(default_factory=Media)
    question: str = Field(min_length=1)
    choices: list[str] | None = None
    gold: Any
    meta: dict[str, Any] = Field(default_factory=dict)


class TaskSetHeader(BaseModel):
    """First line of a task file: its format, name, version (content hash) and size."""

    format: Literal["surgagent-tasks/1"] = "surgagent-tasks/1"
    name: str
    version: str
    items: int
    meta: dict[str, Any] = Field(default_factory=dict)


class Usage(BaseModel):
    """Tokens, images and time one item cost."""

    prompt_tokens: int = 0
    completion_tokens: int = 0
    images: int = 0
    latency_s: float = 0.0


class ResultRecord(BaseModel):
    """One system's answer to one item, as appended to ``results.jsonl``.

    Attributes:
        item_id: The `TaskRecord` id.
        task: Its task name (copied, so reports need no task file).
        system: ``agent``, ``direct``, ``agent-oracle``, ...
        status: ``ok`` (answered; it may still be wrong or unparseable) or ``failed``
            (the system errored; see ``error``).
        answer: The system's final text.
        parsed: The answer in the task's structured form, or None when unparseable.
        parse_error: Why the answer could not be parsed.
        gold: The reference answer (copied from the item).
        correct: Item-level correctness where the task defines it.
        error: The failure, for ``status="failed"``.
        trace: The agent's steps (tool calls, durations), or the direct request.
        usage: Tokens, images and latency.
        context: ``fresh`` or ``case`` (one conversation per case).
        attempt: 1 for the first try, more after ``--retry-failed``.
    """

    item_id: str
    task: str
    system: str
    status: Literal["ok", "failed"]
    answer: str = ""
    parsed: Any = None
    parse_error: str | None = None
    gold: Any = None
    correct: bool | None = None
    error: str | None = None
    trace: list[dict[str, Any]] = Field(default_factory=list)
    usage: Usage = Field(default_factory=Usage)
    context: Literal["fresh", "case"] = "fresh"
    attempt: int = 1


def _version(tasks: Sequence[TaskRecord]) -> str:
    digest = hashlib.sha256()
    for task in tasks:
        digest.update(task.model_dump_json().encode())
    return digest.hexdigest()[:12]


def write_tasks(
    path: Path | str, tasks: Sequence[TaskRecord], *, name: str, meta: dict[str, Any] | None = None
) -> TaskSetHeader:
    """Write a task set (header line, then one item per line) atomically.

    Raises:
        ValueError: If two items share an id.
    """
    seen: set[str] = set()
    for task in tasks:
        if task.id in seen:
            raise ValueError(f"two items share the id {task.id!r}")
        seen.add(task.id)
    header = TaskSetHeader(name=name, version=_version(tasks), items=len(tasks), meta=meta or {})
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_suffix(path.suffix + ".tmp")
    with temporary.open("w", encoding="utf-8") as out:
        out.write(header.model_dump_json() + "\n")
        for task in tasks:
            out.write(task.model_dump_json() + "\n")
    os.replace(temporary, path)
    return header


def read_tasks(path: Path | str) -> tuple[TaskSetHeader, list[TaskRecord]]:
    """Read a task set; a file without a header gets one computed from its items.

    Raises:
        ValueError: Naming the line, if a line is not a valid item (or the header lies).
    """
    path = Path(path)
    header: TaskSetHeader | None = None
    tasks: list[TaskRecord] = []
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        if not line.strip():
            continue
        try:
            data = json.loads(line)
            if number == 1 and "format" in data:
                header = TaskSetHeader.model_validate(data)
                continue
            tasks.append(TaskRecord.model_validate(data))
        except (json.JSONDecodeError, ValidationError) as error:
            raise ValueError(f"{path}:{number}: not a valid task record: {error}") from error
    if header is None:
        header = TaskSetHeader(name=path.stem, version=_version(tasks), items=len(tasks))
    elif header.items != len(tasks):
        raise ValueError(f"{path}: the header says {header.items} items, the file has {len(tasks)}")
    return header, tasks


def shard(tasks: Sequence[TaskRecord], index: int, count: int) -> list[TaskRecord]:
    """Shard ``index`` of ``count`` (0-based): whole cases stay together, by a stable hash.

    Every item lands in exactly one shard, whatever machine computes it, so shards run on
    different GPUs or servers can simply be merged.

    Raises:
        ValueError: For an index outside ``0..count-1``.
    """
    if not 0 <= index < count:
        raise ValueError(f"shard {index}/{count}: the index must be in 0..{count - 1}")

    def owner(task: TaskRecord) -> int:
        key = (task.case or task.id).encode()
        return int.from_bytes(hashlib.sha256(key).digest()[:8], "big") % count

    return [task for task in tasks if owner(task) == index]


def append_result(path: Path, result: ResultRecord) -> None:
    """Append one result line and flush it to disk (a crash loses at most the line in flight).

    A line torn by an earlier crash is ended first, so it can never swallow this record.
    """
    with path.open("a+b") as out:
        if out.tell() > 0:
            out.seek(-1, os.SEEK_END)
            if out.read(1) != b"\n":
                out.write(b"\n")
        out.write(result.model_dump_json().encode("utf-8") + b"\n")
        out.flush()
        os.fsync(out.fileno())


def read_results(paths: Path | Iterable[Path]) -> Iterator[ResultRecord]:
    """Results from one or more ``results.jsonl`` files.

    A line that is not a result (torn by a killed process, or edited by hand) is skipped and
    logged with its file and line number; it never stops the others from being read.
    """
    for path in [paths] if isinstance(paths, Path) else paths:
        if not path.exists():
            continue
        lines = path.read_text(encoding="utf-8", errors="replace").splitlines()
        for number, line in enumerate(lines, start=1):
            if not line.strip():
                continue
            try:
                yield ResultRecord.model_validate_json(line)
            except ValidationError as error:
                reason = error.errors()[0]["msg"] if error.errors() else str(error)
                log.warning("%s:%d: skipped a line that is not a result (%s)", path, number, reason)
