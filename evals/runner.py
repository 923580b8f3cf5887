"""The eval runner: several systems answer the same task items, concurrently and resumably.

Each finished (item, system) pair is appended to ``results.jsonl`` in the run folder as soon as
it is done, so a killed run loses at most the items in flight and a rerun skips what is
finished. Failed items are recorded with their error and tried again with
``retry_failed=True``. Work runs in threads (model calls are I/O bound) under one concurrency
limit; with ``context="case"`` the items of one case form one conversation, in order.

    summary = run_eval(Path("tasks.jsonl"), Path("runs/r1"), systems, concurrency=8)
    print(summary.done, summary.failed)
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
import time
from collections import defaultdict
from collections.abc import Callable, Iterator, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from pathlib import Path
from typing import Literal, Protocol

from filelock import FileLock
from filelock import Timeout as FileLockTimeout
from pydantic import BaseModel

from surgagent.evals.records import (
    ResultRecord,
    TaskRecord,
    append_result,
    read_results,
    read_tasks,
    shard,
)

__all__ = ["EvalSystem", "RunManifest", "RunSummary", "results_files", "run_eval"]

logger = logging.getLogger(__name__)

Context = Literal["fresh", "case"]
Progress = Callable[[int, int], None]


class EvalSystem(Protocol):
    """Something that answers task items: the agent, the bare VLM, the agent with oracles."""

    name: str

    def answer(self, item: TaskRecord, thread_id: str | None) -> ResultRecord:
        """Answer ``item``; ``thread_id`` continues a conversation (``context="case"``).

        Failures are returned as ``status="failed"`` results, not raised.
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
            raise ValueError(
                f"{run_dir} holds a run of task set {old.tasks_name} version "
                f"{old.tasks_version}, not {manifest.tasks_version}; use another --out folder"
            )
        if old.context != manifest.context:
            raise ValueError(
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


def _units(
    pending: list[tuple[str, TaskRecord, int]], context: Context
) -> list[list[tuple[str, TaskRecord, int]]]:
    """Units of work: one item each, or one case's items in order (one conversation)."""
    if context == "fresh":
        return [[entry] for entry in pending]
    grouped: dict[tuple[str, str], list[tuple[str, TaskRecord, int]]] = defaultdict(list)
    for entry in pending:
        grouped[(entry[0], entry[1].case or entry[1].id)].append(entry)
    return list(grouped.values())


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
        ValueError: If the run folder holds another task set or context, a bad shard, or
            another process is writing the same results file.
    """
    began = time.perf_counter()
    header, tasks = read_tasks(tasks_file)
    if shard_spec is not None:
        tasks = shard(tasks, *shard_spec)
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
        counts = {"done": 0, "failed": 0}
        write_lock = threading.Lock()

        def run_unit(unit: list[tuple[str, TaskRecord, int]]) -> None:
            for system_name, item, attempt in unit:
                system = systems[system_name]
                thread = None
                if context == "case":
                    thread = f"{system_name}:{item.case or item.id}:{attempt}"
                result = system.answer(item, thread)
                result = result.model_copy(update={"attempt": attempt, "context": context})
                with write_lock:
                    append_result(results_path, result)
                    counts["done" if result.status == "ok" else "failed"] += 1
                    if progress:
                        progress(counts["done"] + counts["failed"], len(pending))

        asyncio.run(_run_units(_units(pending, context), run_unit, concurrency))
        return RunSummary(
            run_dir=str(run_dir),
            results_file=str(results_path),
            planned=len(pending),
            done=counts["done"],
            skipped=skipped,
            failed=counts["failed"],
            seconds=round(time.perf_counter() - began, 3),
        )


@contextlib.contextmanager
def _only_writer(results_path: Path) -> Iterator[None]:
    """Hold the results file for this process; a second run on it is refused at once."""
    lock = FileLock(results_path.with_suffix(".lock"), timeout=0)
    try:
        lock.acquire()
    except FileLockTimeout:
        raise ValueError(
            f"{results_path} is being written by another eval run; wait for it to finish, or "
            "give this one its own --out (or --shard)"
        ) from None
    try:
        yield
    finally:
        lock.release()


async def _run_units(
    units: list[list[tuple[str, TaskRecord, int]]],
    run_unit: Callable[[list[tuple[str, TaskRecord, int]]], None],
    concurrency: int,
) -> None:
    """Run units in a thread pool, at most ``concurrency`` at once, failing on the first bug."""
    if not units:
        return
    loop = asyncio.get_running_loop()
    with ThreadPoolExecutor(max_workers=max(1, concurrency), thread_name_prefix="eval") as pool:
        await asyncio.gather(*(loop.run_in_executor(pool, run_unit, unit) for unit in units))


def read_manifest(run_dir: Path) -> RunManifest:
    """The run folder's ``run.json``.

    Raises:
        ValueError: If the folder holds no run.
    """
    path = run_dir / "run.json"
    if not path.exists():
        raise ValueError(f"{run_dir} holds no eval run (no run.json)")
    return RunManifest.model_validate_json(path.read_text())
