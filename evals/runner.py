"""The eval runner: several systems answer the same task items, concurrently and resumably.

Each finished (item, system) pair is appended to ``results.jsonl`` in the run folder as soon as
it is done, so a killed run loses at most the items in flight and a rerun skips what is
finished. The failures an eval expects (`KNOWN_FAILURES`: a backend down or timing out, a case
that cannot be read, a request the agent refuses) are recorded as failed items and tried again
with ``retry_failed=True``; anything else is a bug: pending work is cancelled, the items in
flight finish and are kept, and the error is raised with its traceback. Work runs in threads
(model calls are I/O bound) under one concurrency limit; with ``context="case"`` the items of
one case form one conversation, in order.

    summary = run_eval(Path("tasks.jsonl"), Path("runs/r1"), systems, concurrency=8)
    print(summary.done, summary.failed)
"""

from __future__ import annotations

import contextlib
import logging
import threading
import time
from collections import defaultdict
from collections.abc import Callable, Iterator, Mapping, Sequence
from concurrent.futures import FIRST_EXCEPTION, ThreadPoolExecutor, wait
from datetime import UTC, datetime
from pathlib import Path
from typing import Literal, Protocol

from filelock import FileLock
from filelock import Timeout as FileLockTimeout
from pydantic import BaseModel

from surgagent.agent.errors import (
    BackendError,
    CaseError,
    RunRefused,
    ToolInputError,
    UserError,
)
from surgagent.evals.records import (
    ResultRecord,
    TaskRecord,
    Usage,
    append_result,
    read_results,
    read_tasks,
    shard,
)
from surgagent.evals.tasks import TASKS, get_task

__all__ = [
    "KNOWN_FAILURES",
    "EvalSystem",
    "RunRefused",
    "RunManifest",
    "RunSummary",
    "failed_result",
    "results_files",
    "run_eval",
]

logger = logging.getLogger(__name__)

Context = Literal["fresh", "case"]
Progress = Callable[[int, int], None]
Unit = list[tuple[str, TaskRecord, int]]

# What may fail one item without stopping the run: the model or its server (down, refusing,
# timing out), the item's case or frames (missing, corrupt), a request the agent refuses as
# asked. Parse failures are not errors at all: an unparseable answer is an ``ok`` result that
# scores as wrong. A `ConfigError` (the settings cannot run) or anything else stops the run.
KNOWN_FAILURES: tuple[type[Exception], ...] = (
    BackendError,
    CaseError,
    ToolInputError,
    UserError,
    TimeoutError,
)


class EvalSystem(Protocol):
    """Something that answers task items: the agent, the bare VLM, the agent with oracles."""

    name: str

    def answer(self, item: TaskRecord, thread_id: str | None) -> ResultRecord:
        """Answer ``item``; ``thread_id`` continues a conversation (``context="case"``).

        The `KNOWN_FAILURES` are returned as ``status="failed"`` results (the runner records
        them too where they are raised); anything else raised stops the run.
        """
        ...


class RunManifest(BaseModel):
    """``run.json``: what a run folder holds, so a resume never mixes two task sets."""

    tasks_file: str
    tasks_name: str
    tasks_version: str
    systems: list[str]
    context: Context
    shard: str | None = None
    started: str
    meta: dict[str, str] = {}


class RunSummary(BaseModel):
    """What one call of `run_eval` did."""

    run_dir: str
    results_file: str
    planned: int
    done: int
    skipped: int
    failed: int
    seconds: float


def failed_result(item: TaskRecord, system: str, error: str, latency_s: float) -> ResultRecord:
    """The result of an item that failed with one of the `KNOWN_FAILURES`."""
    return ResultRecord(
        item_id=item.id,
        task=item.task,
        system=system,
        status="failed",
        gold=item.gold,
        error=error,
        usage=Usage(latency_s=round(latency_s, 3)),
    )


def results_files(run_dir: Path) -> list[Path]:
    """Every results file of a run folder (one per shard), in name order."""
    return sorted(run_dir.glob("results*.jsonl"))


def _results_name(shard_spec: tuple[int, int] | None) -> str:
    if shard_spec is None:
        return "results.jsonl"
    return f"results.shard-{shard_spec[0]}-of-{shard_spec[1]}.jsonl"


def _check_manifest(run_dir: Path, manifest: RunManifest) -> None:
    path = run_dir / "run.json"
    if path.exists():
        old = RunManifest.model_validate_json(path.read_text())
        if old.tasks_version != manifest.tasks_version:
            raise RunRefused(
                f"{run_dir} holds a run of task set {old.tasks_name} version "
                f"{old.tasks_version}, not {manifest.tasks_version}; use another --out folder"
            )
        if old.context != manifest.context:
            raise RunRefused(
                f"{run_dir} was run with --context {old.context}; resume it the same way "
                "or use another --out folder"
            )
        manifest.systems = sorted(set(old.systems) | set(manifest.systems))
        manifest.started = old.started
    run_dir.mkdir(parents=True, exist_ok=True)
    path.write_text(manifest.model_dump_json(indent=1))


def _pending(
    tasks: Sequence[TaskRecord],
    systems: Sequence[str],
    previous: Sequence[ResultRecord],
    retry_failed: bool,
) -> tuple[list[tuple[str, TaskRecord, int]], int]:
    """(system, item, attempt) still to run, and how many were skipped as finished."""
    latest: dict[tuple[str, str], ResultRecord] = {}
    for result in previous:
        latest[(result.system, result.item_id)] = result
    pending, skipped = [], 0
    for system in systems:
        for item in tasks:
            last = latest.get((system, item.id))
            if last is None:
                pending.append((system, item, 1))
            elif last.status == "failed" and retry_failed:
                pending.append((system, item, last.attempt + 1))
            else:
                skipped += 1
    return pending, skipped


def _units(pending: Unit, context: Context) -> list[Unit]:
    """Units of work: one item each, or one case's items in order (one conversation)."""
    if context == "fresh":
        return [[entry] for entry in pending]
    grouped: dict[tuple[str, str], Unit] = defaultdict(list)
    for entry in pending:
        grouped[(entry[0], entry[1].case or entry[1].id)].append(entry)
    return list(grouped.values())


def _check_tasks(tasks_file: Path, tasks: Sequence[TaskRecord]) -> None:
    """Every task of the set has a spec, so nothing is run that cannot be scored.

    Raises:
        RunRefused: For a task without a spec, naming the closest registered one.
    """
    TASKS.check()
    for name in sorted({item.task for item in tasks}):
        try:
            get_task(name)
        except ValueError as error:
            raise RunRefused(f"{tasks_file}: {error}") from None


def run_eval(
    tasks_file: Path,
    run_dir: Path,
    systems: Mapping[str, EvalSystem],
    *,
    concurrency: int = 4,
    context: Context = "fresh",
    retry_failed: bool = False,
    shard_spec: tuple[int, int] | None = None,
    progress: Progress | None = None,
) -> RunSummary:
    """Run ``systems`` on the task set, appending results to the run folder.

    Args:
        tasks_file: A task set (`surgagent.evals.records.write_tasks`).
        run_dir: The run folder (created; an existing one is resumed).
        systems: Name -> system, e.g. ``{"agent": ..., "direct": ...}``.
        concurrency: Units of work in flight at once (threads).
        context: ``fresh`` (each item alone) or ``case`` (one conversation per case).
        retry_failed: Run items whose last attempt failed again.
        shard_spec: ``(i, n)``: only shard i of n (0-based), written to its own file.
        progress: Called with ``(finished, planned)`` after each item.

    Raises:
        RunRefused: Before anything runs, if the task set cannot be read or has a task
            without a spec, the shard is bad, the run folder holds another task set or
            context, or another process is writing the same results file.
        Exception: Whatever a system raised that is not one of the `KNOWN_FAILURES` (a bug),
            with its traceback, after the items in flight finished; no further item is
            started, and every finished result is in the results file, so a rerun resumes.
    """
    began = time.perf_counter()
    try:
        header, tasks = read_tasks(tasks_file)
        if shard_spec is not None:
            tasks = shard(tasks, *shard_spec)
    except ValueError as error:  # their documented input errors
        raise RunRefused(str(error)) from error
    _check_tasks(tasks_file, tasks)
    manifest = RunManifest(
        tasks_file=str(Path(tasks_file).resolve()),
        tasks_name=header.name,
        tasks_version=header.version,
        systems=sorted(systems),
        context=context,
        shard=f"{shard_spec[0]}/{shard_spec[1]}" if shard_spec else None,
        started=datetime.now(UTC).isoformat(timespec="seconds"),
    )
    _check_manifest(run_dir, manifest)
    results_path = run_dir / _results_name(shard_spec)
    with _only_writer(results_path):
        previous = list(read_results(results_path))
        pending, skipped = _pending(tasks, sorted(systems), previous, retry_failed)
        work = _Work(systems, context, results_path, len(pending), progress)
        try:
            _run_units(_units(pending, context), work, concurrency)
        except Exception as error:
            finished = work.counts["done"] + work.counts["failed"]
            note = (
                f"eval run stopped: {finished} of {len(pending)} items finished and are kept in "
                f"{results_path}; the rest were not run. Fix the cause and rerun to resume."
            )
            error.add_note(note)
            logger.error("%s (%s: %s)", note, type(error).__name__, error)
            raise
        return RunSummary(
            run_dir=str(run_dir),
            results_file=str(results_path),
            planned=len(pending),
            done=work.counts["done"],
            skipped=skipped,
            failed=work.counts["failed"],
            seconds=round(time.perf_counter() - began, 3),
        )


class _Work:
    """Runs units of work, appending each result as it finishes.

    No item starts once `stop` is set (by a bug in another unit, or an interrupt).
    """

    def __init__(
        self,
        systems: Mapping[str, EvalSystem],
        context: Context,
        results_path: Path,
        planned: int,
        progress: Progress | None,
    ) -> None:
        self.systems = systems
        self.context = context
        self.results_path = results_path
        self.planned = planned
        self.progress = progress
        self.counts = {"done": 0, "failed": 0}
        self.stop = threading.Event()
        self._lock = threading.Lock()

    def __call__(self, unit: Unit) -> None:
        for system_name, item, attempt in unit:
            if self.stop.is_set():
                return
            thread = None
            if self.context == "case":
                thread = f"{system_name}:{item.case or item.id}:{attempt}"
            began = time.perf_counter()
            try:
                result = self.systems[system_name].answer(item, thread)
            except KNOWN_FAILURES as error:
                why, elapsed = f"{type(error).__name__}: {error}", time.perf_counter() - began
                result = failed_result(item, system_name, why, elapsed)
            except Exception as error:
                error.add_note(f"raised while {system_name} answered item {item.id}")
                raise
            result = result.model_copy(update={"attempt": attempt, "context": self.context})
            with self._lock:
                append_result(self.results_path, result)
                self.counts["done" if result.status == "ok" else "failed"] += 1
                if self.progress:
                    self.progress(self.counts["done"] + self.counts["failed"], self.planned)


@contextlib.contextmanager
def _only_writer(results_path: Path) -> Iterator[None]:
    """Hold the results file for this process; a second run on it is refused at once."""
    lock = FileLock(results_path.with_suffix(".lock"), timeout=0)
    try:
        lock.acquire()
    except FileLockTimeout:
        raise RunRefused(
            f"{results_path} is being written by another eval run; wait for it to finish, or "
            "give this one its own --out (or --shard)"
        ) from None
    try:
        yield
    finally:
        lock.release()


def _run_units(units: list[Unit], work: _Work, concurrency: int) -> None:
    """Run units in a thread pool, at most ``concurrency`` at once, stopping on the first bug.

    A unit that raises sets ``work.stop`` before its thread can take another unit, so no item
    starts after it; units not started are cancelled, those in flight finish their current
    item. Then the first error is raised again (an interrupt stops the same way).
    """
    if not units:
        return
    errors: list[BaseException] = []

    def guarded(unit: Unit) -> None:
        try:
            work(unit)
        except BaseException as error:
            errors.append(error)
            work.stop.set()
            raise

    pool = ThreadPoolExecutor(max_workers=max(1, concurrency), thread_name_prefix="eval")
    try:
        wait([pool.submit(guarded, unit) for unit in units], return_when=FIRST_EXCEPTION)
    finally:
        work.stop.set()  # after a bug or an interrupt; a no-op once every unit is done
        pool.shutdown(wait=True, cancel_futures=True)
    if errors:
        raise errors[0]


def read_manifest(run_dir: Path) -> RunManifest:
    """The run folder's ``run.json``.

    Raises:
        ValueError: If the folder holds no run.
    """
    path = run_dir / "run.json"
    if not path.exists():
        raise ValueError(f"{run_dir} holds no eval run (no run.json)")
    return RunManifest.model_validate_json(path.read_text())
