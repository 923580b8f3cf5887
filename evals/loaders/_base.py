"""The loader base class and helpers the dataset loaders share (times, ids, errors, options).

A loader turns one dataset's *native* files into `TaskRecord` items; this module holds what
every loader needs: task-name checks, the sampling grid for dense video annotations,
``mm:ss`` clocks, item-id tags and errors that name the file and line at fault. What a
loader leaves out goes in its `LoadReport` (``_report.py``), returned with the items by
`Loader.load_with_report`.

    times = sample_times(duration=125.0, every_s=60.0)  # [0.0, 60.0, 120.0]
    tag = time_tag(60.0)  # "t0060"
"""

from __future__ import annotations

import difflib
import logging
import math
from abc import ABC, abstractmethod
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any, ClassVar

from surgagent.evals.loaders._report import LoadReport, LoadResult, Survey, relative
from surgagent.evals.records import TaskRecord

__all__ = [
    "AnnotationError",
    "Loader",
    "case_names",
    "clock",
    "close_match",
    "relative",
    "sample_times",
    "take_options",
    "time_tag",
]

log = logging.getLogger(__name__)


class AnnotationError(ValueError):
    """An annotation file that cannot be read as its dataset writes it (names file and line)."""

    @classmethod
    def at(cls, path: Path, line: int | None, problem: str) -> AnnotationError:
        """An error for ``path`` (and ``line`` where known) saying what is wrong there."""
        where = f"{path} line {line}" if line is not None else str(path)
        return cls(f"{where}: {problem}")


def close_match(value: str, options: Iterable[str]) -> str:
    """A ``" Did you mean 'x'?"`` hint for ``value`` among ``options``, or ``""``."""
    close = difflib.get_close_matches(value, list(options), n=1, cutoff=0.5)
    return f" Did you mean {close[0]!r}?" if close else ""


def sample_times(duration: float, every_s: float) -> list[float]:
    """Times ``0, every_s, 2*every_s, ...`` strictly before ``duration`` (seconds).

    Raises:
        ValueError: If ``every_s`` is not positive.
    """
    if every_s <= 0:
        raise ValueError(f"every_s={every_s}: the sampling step must be a positive number of s.")
    if duration <= 0:
        return []
    count = math.ceil(duration / every_s - 1e-9)
    return [round(k * every_s, 6) for k in range(count)]


def clock(seconds: float) -> str:
    """``mm:ss`` (or ``h:mm:ss`` past an hour) of a time in seconds, rounded down."""
    total = int(seconds + 1e-6)
    hours, rest = divmod(total, 3600)
    minutes, secs = divmod(rest, 60)
    return f"{hours}:{minutes:02d}:{secs:02d}" if hours else f"{minutes:02d}:{secs:02d}"


def time_tag(seconds: float) -> str:
    """The id detail of a moment: ``t0060`` for 60 s, ``t0060.500`` for 60.5 s (sortable)."""
    if float(seconds).is_integer():
        return f"t{int(seconds):04d}"
    return f"t{seconds:08.3f}"


def case_names(folders: Sequence[Path]) -> dict[Path, str]:
    """A case id per folder: its name, prefixed by its parent's where two names clash."""
    counts = Counter(folder.name for folder in folders)
    return {
        folder: folder.name if counts[folder.name] == 1 else f"{folder.parent.name}-{folder.name}"
        for folder in folders
    }


def take_options(
    dataset: str, options: Mapping[str, Any], defaults: Mapping[str, Any]
) -> dict[str, Any]:
    """``defaults`` updated by ``options``.

    Raises:
        ValueError: For an option the loader does not know, naming the ones it does.
    """
    for key in options:
        if key not in defaults:
            known = ", ".join(sorted(defaults)) or "none"
            raise ValueError(
                f"{dataset}: unknown loader option {key!r}.{close_match(key, defaults)} "
                f"Options: {known}."
            )
    return {**defaults, **options}


class Loader(ABC):
    """Turns one dataset's native layout into task items.

    Attributes:
        name: The dataset name (the `LOADERS` key).
        tasks: The task names the loader can produce.
        layout: The native files it reads, for error messages.
        default_every_s: Sampling step (s) of dense video annotations (None: not sampled).
    """

    name: ClassVar[str]
    tasks: ClassVar[tuple[str, ...]]
    layout: ClassVar[str]
    default_every_s: ClassVar[float | None] = None

    def load(
        self,
        root: Path,
        *,
        tasks: Sequence[str] | None = None,
        every_s: float | None = None,
        **options: Any,
    ) -> list[TaskRecord]:
        """Items of ``tasks`` (all the loader's tasks where None) from the dataset at ``root``.

        What was left out is logged (a warning where it was not by the dataset's design);
        `load_with_report` returns it instead.

        Args:
            root: The dataset folder as downloaded (or a file, for QA-JSON datasets).
            tasks: Task names to produce; all of `tasks` where None.
            every_s: Sampling step in seconds for dense video annotations
                (`default_every_s` where None; ignored by frame datasets).
            **options: Loader-specific options (see the loader's docstring).

        Returns:
            The items, sorted by id.

        Raises:
            ValueError: For an unknown task or option, a bad step, a missing or empty root,
                or no annotation files where the layout puts them.
            AnnotationError: For a malformed annotation file (naming the file and line).
        """
        loaded = self.load_with_report(root, tasks=tasks, every_s=every_s, **options)
        loaded.report.log(log)
        return loaded.items

    def load_with_report(
        self,
        root: Path,
        *,
        tasks: Sequence[str] | None = None,
        every_s: float | None = None,
        **options: Any,
    ) -> LoadResult:
        """Like `load`, but returns the `LoadReport` of what was left out with the items.

        Raises:
            ValueError: As `load`.
            AnnotationError: As `load`.
        """
        wanted = self.check_tasks(tasks)
        step = self.default_every_s if every_s is None else float(every_s)
        if step is not None and not step > 0:
            raise ValueError(f"every_s={every_s}: the sampling step must be positive seconds.")
        root = Path(root).expanduser()
        if not root.exists():
            raise ValueError(f"{self.name}: no such file or folder {root}; expected {self.layout}")
        if root.is_dir() and not any(root.iterdir()):
            raise ValueError(f"{self.name}: {root} is empty; expected {self.layout}")
        report = LoadReport(dataset=self.name, root=str(root))
        records = self._load(root, wanted, step, dict(options), report)
        return LoadResult(sorted(records, key=lambda record: record.id), report)

    def survey(self, root: Path, items: Sequence[TaskRecord]) -> Survey:
        """What `surgagent eval check` compares ``items`` against (frames on disk, timing).

        The base class knows nothing of the layout and returns an empty survey.
        """
        return Survey()

    def check_tasks(self, tasks: Sequence[str] | None) -> list[str]:
        """The requested task names, in the loader's order.

        Raises:
            ValueError: For a name the loader cannot produce, suggesting the closest.
        """
        if tasks is None:
            return list(self.tasks)
        if isinstance(tasks, str):
            tasks = [tasks]
        for task in tasks:
            if task not in self.tasks:
                raise ValueError(
                    f"{self.name} has no task {task!r}.{close_match(task, self.tasks)} "
                    f"Its tasks: {', '.join(self.tasks)}."
                )
        return [task for task in self.tasks if task in tasks]

    def missing(self, root: Path, what: str) -> ValueError:
        """The error for a root without the annotation files ``what`` describes."""
        return ValueError(f"{self.name}: found no {what} under {root}; expected {self.layout}")

    @abstractmethod
    def _load(
        self,
        root: Path,
        tasks: list[str],
        every_s: float | None,
        options: dict[str, Any],
        report: LoadReport,
    ) -> list[TaskRecord]:
        """Build the items, counting in ``report`` all that is left out, with its reason.

        ``root`` exists and is not an empty folder.
        """
