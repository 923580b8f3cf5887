"""Indexing many cases into the library: one task per case, on a process pool or on Ray.

The driver (this module) finds the cases, skips those already indexed and unchanged, hands
the rest out one task per case, and writes each outcome through the `LibraryStore` as it
arrives, in one transaction per case. A run that is killed loses only the cases in flight;
running it again picks up where it stopped. A case that cannot be read is stored as failed,
with the reason, and the others go on.

    summary = index_cases([Path("cholec80/videos")], store, config, workers=2)
    summary = index_cases(paths, store, config, workers=8, backend="ray", address="ray://head:10001")
"""

from __future__ import annotations

import logging
import multiprocessing
import os
import time
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ProcessPoolExecutor, as_completed
from pathlib import Path
from typing import Literal

from pydantic import BaseModel

from surgagent.indexing.discovery import discover_cases, source_stamp
from surgagent.indexing.types import (
    Backend,
    CaseOutcome,
    CaseTask,
    FailedCase,
    IndexConfig,
    IndexSummary,
)
from surgagent.indexing.worker import CaseIndexer, index_in_pool_worker, start_pool_worker
from surgagent.library.store import LibraryStore
from surgagent.tools.errors import CaseError, ConfigError

__all__ = ["CaseEvent", "index_cases"]

log = logging.getLogger(__name__)


class CaseEvent(BaseModel):
    """One case done (or skipped), as the progress display shows it."""

    path: Path
    case_id: str
    status: Literal["indexed", "failed", "duplicate", "skipped"]
    seconds: float = 0.0
    detail: str = ""
    done: int
    total: int


def _local_outcomes(
    tasks: Sequence[CaseTask], config: IndexConfig, workers: int
) -> Iterator[CaseOutcome]:
    """Outcomes from this process (one worker) or a pool of ``workers`` processes."""
    if workers == 1 or len(tasks) == 1:
        indexer = CaseIndexer(config)
        for task in tasks:
            yield indexer.index(task)
        return
    workers = min(workers, len(tasks))
    threads = max(1, (os.cpu_count() or 1) // workers)
    # spawn, not fork: a forked copy of a process that has started torch's threads can hang.
    pool = ProcessPoolExecutor(
        max_workers=workers,
        mp_context=multiprocessing.get_context("spawn"),
        initializer=start_pool_worker,
        initargs=(config, threads),
    )
    try:
        futures = [pool.submit(index_in_pool_worker, task) for task in tasks]
        for future in as_completed(futures):
            yield future.result()
    finally:
        pool.shutdown(wait=True, cancel_futures=True)


def _outcomes(
    tasks: Sequence[CaseTask],
    config: IndexConfig,
    *,
    workers: int,
    backend: Backend,
    address: str | None,
    gpus_per_worker: float | None,
) -> Iterator[CaseOutcome]:
    if backend == "ray":
        from surgagent.indexing._ray import ray_outcomes

        return ray_outcomes(
            tasks, config, workers=workers, address=address, gpus_per_worker=gpus_per_worker
        )
    return _local_outcomes(tasks, config, workers)


def _check(
    config: IndexConfig,
    workers: int,
    backend: str,
    address: str | None,
    gpus_per_worker: float | None,
) -> None:
    if workers < 1:
        raise ConfigError(f"workers={workers}; give at least 1.")
    if backend not in ("local", "ray"):
        raise ConfigError(f"backend {backend!r} is unknown; use local or ray.")
    if backend == "local" and (address is not None or gpus_per_worker is not None):
        raise ConfigError(
            "--address and --gpus-per-worker are for the ray backend; add --backend ray."
        )
    for name, job in (("detector", config.detector), ("phase", config.phase)):
        if job is not None and not job.weights.is_file():
            raise ConfigError(
                f"the {name} weights {job.weights} do not exist; fix {name}.weights in the "
                f"settings (SURGAGENT_{name.upper()}__WEIGHTS) or unset it."
            )


def index_cases(
    paths: Sequence[Path],
    store: LibraryStore,
    config: IndexConfig,
    *,
    workers: int = 1,
    backend: Backend = "local",
    address: str | None = None,
    gpus_per_worker: float | None = None,
    reindex: bool = False,
    on_case: Callable[[CaseEvent], None] | None = None,
) -> IndexSummary:
    """Index the cases under ``paths`` into the library, each once.

    Args:
        paths: Video files, frame folders, or folders of cases.
        store: The library the results are written to (by this process only).
        config: What to do to each case (frame rate, engines).
        workers: Cases indexed at once (processes, or Ray actors).
        backend: ``local`` (this machine: a process pool) or ``ray`` (a Ray cluster).
        address: The Ray cluster (``ray://head:10001``, ``auto``); a local Ray instance is
            started where None.
        gpus_per_worker: GPUs Ray reserves per worker (default 1 where an engine's device
            is CUDA, else 0).
        reindex: Index every case again, even those indexed and unchanged.
        on_case: Called after each case (and once per skipped case), for progress.

    Returns:
        What was indexed, skipped, failed and ignored.

    Raises:
        CaseError: If no case is found under ``paths``, or a path does not exist.
        ConfigError: If the engines cannot be loaded, or the backend is not available.
    """
    began = time.perf_counter()
    _check(config, workers, backend, address, gpus_per_worker)
    try:
        cases, ignored = discover_cases(paths)
    except FileNotFoundError as error:
        raise CaseError(str(error)) from error
    if not cases:
        given = ", ".join(str(path) for path in paths)
        raise CaseError(
            f"no video file or frame folder found under {given}; give videos "
            "(mp4, avi, mkv, ...) or folders of jpg/png frames."
        )
    for path in ignored:
        log.info("ignoring %s: not a video, a frame folder or a note", path)
    key, done = config.key(), store.indexed()
    tasks: list[CaseTask] = []
    summary = IndexSummary(
        library=store.path,
        backend=backend,
        workers=workers,
        found=len(cases),
        indexed=[],
        skipped=[],
        ignored=ignored,
        seconds=0.0,
    )

    def report(
        path: Path, case_id: str, status: str, seconds: float = 0.0, detail: str = ""
    ) -> None:
        if on_case is not None:
            count = len(summary.indexed) + len(summary.skipped) + len(summary.failed)
            count += len(summary.duplicates)
            on_case(
                CaseEvent.model_validate(
                    {
                        "path": path,
                        "case_id": case_id,
                        "status": status,
                        "seconds": seconds,
                        "detail": detail,
                        "done": count,
                        "total": len(cases),
                    }
                )
            )

    for path in cases:
        stamp = source_stamp(path)
        known = done.get(path)
        if not reindex and known is not None and known[1:] == (stamp, key):
            summary.skipped.append(known[0])
            report(path, known[0], "skipped", detail="already indexed")
        else:
            tasks.append(CaseTask(path=path, stamp=stamp))
    if tasks:
        for outcome in _outcomes(
            tasks,
            config,
            workers=workers,
            backend=backend,
            address=address,
            gpus_per_worker=gpus_per_worker,
        ):
            _record(outcome, store, summary, report)
    summary.seconds = round(time.perf_counter() - began, 3)
    return summary


def _record(
    outcome: CaseOutcome,
    store: LibraryStore,
    summary: IndexSummary,
    report: Callable[..., None],
) -> None:
    """Write one outcome to the store and the summary (a copy of a stored case is not)."""
    record = outcome.index.case
    seconds = record.index_seconds or 0.0
    if outcome.failed:
        store.save(outcome.index)
        summary.failed.append(FailedCase(path=outcome.path, error=record.error or ""))
        report(outcome.path, record.id, "failed", seconds, record.error or "")
        return
    same = store.find(record.id)
    if same is not None and same.path != record.path and same.path.exists():
        note = f"same content as {same.path} (case {same.id}), which the library keeps"
        summary.duplicates.append(FailedCase(path=outcome.path, error=note))
        report(outcome.path, record.id, "duplicate", seconds, note)
        return
    store.save(outcome.index)
    summary.indexed.append(record.id)
    index = outcome.index
    found = []
    if record.phase_model:
        found.append(f"{len(index.phases)} phase segments")
    if record.detector_model:
        found.append(f"{len(index.instruments)} instrument intervals")
    detail = ", ".join(found) or f"{record.frames} frames (no engine configured)"
    report(outcome.path, record.id, "indexed", seconds, detail)
