"""The systems an eval compares: the agent, the bare VLM (``direct``), the agent with oracles.

Both systems get the same text (`prompt_of`, made as the item's `TaskSpec` says) and the
same frames: ``direct`` sends the item's frames with the question to the planner model in one
call; the agent gets the item's case (the video, or a small case made of the item's frames)
and decides itself what to look at.
``agent-oracle`` is the agent whose detector and phase tools answer from the gold
annotations, the upper bound that separates planning errors from perception errors.

    systems = make_systems(["agent", "direct"], media_root=Path("data/cholec80"))
    result = systems["direct"].answer(item, thread_id=None)

A system returns the `KNOWN_FAILURES` (backend, case, refused request, timeout) as failed
results and lets anything else through: the runner stops on it.
"""

from __future__ import annotations

import hashlib
import tempfile
import threading
import time
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from surgagent.agent.errors import CaseError
from surgagent.evals.metrics import item_correct
from surgagent.evals.records import ResultRecord, TaskRecord, Usage
from surgagent.evals.runner import KNOWN_FAILURES, failed_result
from surgagent.evals.tasks import get_task

if TYPE_CHECKING:
    from surgagent.agent.api import SurgicalAgent
    from surgagent.agent.settings import Settings
    from surgagent.tools.cache import CaseCache
    from surgagent.tools.vision import VisionBackend

__all__ = ["AgentSystem", "DirectSystem", "SYSTEMS", "make_systems", "prompt_of"]

SYSTEMS = ("agent", "direct", "agent-oracle")


def prompt_of(item: TaskRecord) -> str:
    """The text every system is asked, made by the item's task spec (`TaskSpec.prompt`).

    Raises:
        ValueError: For an item of an unregistered task.
    """
    return get_task(item.task).prompt(item)


def _scored(item: TaskRecord, system: str, text: str, **fields: Any) -> ResultRecord:
    parsed = get_task(item.task).parse(item, text)
    return ResultRecord(
        item_id=item.id,
        task=item.task,
        system=system,
        status="ok",
        answer=text,
        parsed=parsed.value if parsed.ok else None,
        parse_error=None if parsed.ok else parsed.error,
        gold=item.gold,
        correct=item_correct(item, parsed),
        **fields,
    )


class _Media:
    """Resolves an item's media to files, and frame items to small cases of their own."""

    def __init__(self, root: Path, cases_dir: Path) -> None:
        self.root = root
        self.cases_dir = cases_dir
        self._making = threading.Lock()  # items sharing frames may be run at the same time

    def path(self, name: str) -> Path:
        path = Path(name).expanduser()
        return path if path.is_absolute() else self.root / path

    def case(self, item: TaskRecord) -> Path:
        """The video, or a folder of symlinks to the item's frames (a frame-folder case).

        Raises:
            CaseError: If the item has neither a video nor frames.
        """
        if item.media.video:
            return self.path(item.media.video)
        if not item.media.frames:
            raise CaseError(f"item {item.id} has neither a video nor frames; rebuild the task set")
        key = hashlib.sha256("\n".join(item.media.frames).encode()).hexdigest()[:16]
        folder = self.cases_dir / key
        with self._making:
            if not folder.exists():
                self.cases_dir.mkdir(parents=True, exist_ok=True)
                # A staging folder of its own, renamed into place whole: a shard in another
                # process making the same case cannot see it half made.
                staging = Path(tempfile.mkdtemp(prefix=f"{key}.", dir=self.cases_dir))
                for k, frame in enumerate(item.media.frames):
                    source = self.path(frame)
                    link = staging / f"frame_{k:04d}{source.suffix.lower()}"
                    link.symlink_to(source.resolve())
                try:
                    staging.rename(folder)
                except OSError:
                    if not folder.is_dir():
                        raise
                    for link in staging.iterdir():  # the other process made it first
                        link.unlink()
                    staging.rmdir()
        return folder

    def images(self, item: TaskRecord, cache: CaseCache, max_side: int) -> list[Any]:
        """The frames ``direct`` sends: the listed frames, or the video at the item's times."""
        from surgagent.tools.video.engine import load_image, open_case, sample_frames

        if item.media.frames:
            return [load_image(self.path(frame)) for frame in item.media.frames]
        case = open_case(self.case(item), cache)
        times = list(item.media.times) or [item.media.start or 0.0]
        return [load_image(f.path) for f in sample_frames(case, times, cache, max_side=max_side)]


class DirectSystem:
    """The bare VLM: one call with the item's frames and the question, no tools."""

    def __init__(self, model: VisionBackend, media: _Media, cache: CaseCache, max_side: int):
        self.name = "direct"
        self.model = model
        self.media = media
        self.cache = cache
        self.max_side = max_side

    def answer(self, item: TaskRecord, thread_id: str | None) -> ResultRecord:
        """Ask the model once (conversations do not apply: every call stands alone)."""
        began = time.perf_counter()
        try:
            images = self.media.images(item, self.cache, self.max_side)
            reply = self.model.answer(images, prompt_of(item))
        except KNOWN_FAILURES as error:
            return failed_result(item, self.name, str(error), time.perf_counter() - began)
        usage = Usage(
            prompt_tokens=reply.usage.prompt_tokens,
            completion_tokens=reply.usage.completion_tokens,
            images=len(images),
            latency_s=round(time.perf_counter() - began, 3),
        )
        trace = [{"node": "direct", "images": len(images), "reasoning": reply.reasoning or ""}]
        return _scored(item, self.name, reply.text, usage=usage, trace=trace)


class AgentSystem:
    """The case-review agent: the graph plans, calls tools and answers."""

    def __init__(self, name: str, agent: SurgicalAgent, media: _Media) -> None:
        self.name = name
        self.agent = agent
        self.media = media

    def answer(self, item: TaskRecord, thread_id: str | None) -> ResultRecord:
        """Run the graph on the item's case (continuing ``thread_id`` where given)."""
        began = time.perf_counter()
        try:
            result = self.agent.invoke(
                prompt_of(item), case=self.media.case(item), thread_id=thread_id
            )
        except KNOWN_FAILURES as error:
            return failed_result(item, self.name, str(error), time.perf_counter() - began)
        latency = time.perf_counter() - began
        if result.status == "error":
            return failed_result(item, self.name, result.answer, latency)
        usage = Usage(
            prompt_tokens=result.usage.prompt_tokens,
            completion_tokens=result.usage.completion_tokens,
            images=result.usage.images,
            latency_s=round(latency, 3),
        )
        trace = [step.model_dump(mode="json") for step in result.trace]
        return _scored(item, self.name, result.answer, usage=usage, trace=trace)


def make_systems(
    names: Sequence[str],
    *,
    media_root: Path,
    work_dir: Path,
    settings: Settings | None = None,
    oracle_root: Path | None = None,
) -> dict[str, Any]:
    """Build the named systems on one planner model (loaded once, shared).

    Args:
        names: Any of ``agent``, ``direct``, ``agent-oracle``.
        media_root: Folder that relative media paths are relative to (the dataset root).
        work_dir: Where frame-item cases are made (inside the run folder).
        settings: Agent settings (resolved ones by default).
        oracle_root: The Cholec80-layout dataset whose annotations the oracles read
            (``media_root`` by default).

    Raises:
        ValueError: For an unknown system name.
        ConfigError: If the planner model cannot be reached.
    """
    from surgagent.agent.api import SurgicalAgent
    from surgagent.agent.settings import get_settings

    unknown = [name for name in names if name not in SYSTEMS]
    if unknown:
        raise ValueError(f"unknown system(s) {', '.join(unknown)}; choose from {SYSTEMS}")
    settings = settings or get_settings()
    media = _Media(media_root, work_dir / "cases")
    agent = SurgicalAgent.from_settings(settings)
    systems: dict[str, Any] = {}
    for name in names:
        if name == "direct":
            max_side = settings.planner.max_image_side
            systems[name] = DirectSystem(agent.planner, media, agent.cache, max_side)  # type: ignore[arg-type]
        elif name == "agent":
            systems[name] = AgentSystem(name, agent, media)
        else:
            from surgagent.evals.oracle import oracle_engines

            engines = oracle_engines(oracle_root or media_root)
            oracle = SurgicalAgent(
                settings, agent.planner, vision=agent.vision, knowledge=agent.knowledge, **engines
            )
            systems[name] = AgentSystem(name, oracle, media)
    return systems
