"""The run context: what one graph run works with, passed as LangGraph's ``context``.

Nodes read it through ``Runtime[RunContext]``; tools through ``ToolRuntime.context``. It is
frozen: a run never changes its case, models or budgets, and what it reads once (the
library's overview) is kept on it for the run's steps.

    graph.invoke({"messages": [...]}, context=RunContext(case=case, cache=cache, planner=model))
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property
from typing import TYPE_CHECKING, Any, Literal

if TYPE_CHECKING:
    from surgagent.graphs.protocols import PlannerModel
    from surgagent.graphs.result import ModelUse
    from surgagent.tools.cache import Case, CaseCache
    from surgagent.tools.library.engine import CohortLibrary, LibraryOverview
    from surgagent.tools.vision import VisionBackend

__all__ = ["RunContext"]


@dataclass(frozen=True)
class RunContext:
    """Per-run inputs shared by the graph's nodes and tools.

    Attributes:
        case: The surgical case being reviewed, or None for a question across the library.
        cache: Where work on cases is cached.
        planner: The planner chat model (tools are bound per run).
        vision: The perception backend, or None where none is configured.
        knowledge: The guideline store, or None where none is configured.
        detector: The instrument detector engine, or None where no weights are configured.
        segmenter: The phase segmenter engine, or None where no weights are configured.
        library: The case library, for questions across cases (``case`` is None then).
        step_budget: Most planner turns in one answer.
        frame_budget: Most frames shown to the planner in one answer.
        tool_retries: Retries of a tool whose backend failed.
        planner_vision: Show the planner frames as images: True, False, or ``auto`` (yes,
            until its backend learns that the served model takes none).
        max_image_side: Frames shown to the planner are resized to fit this side.
        settings: The agent's settings object, for tools that need more.
        models: The models this run uses, stamped into its result.
    """

    case: Case | None
    cache: CaseCache
    planner: PlannerModel
    vision: VisionBackend | None = None
    knowledge: Any | None = None
    detector: Any | None = None
    segmenter: Any | None = None
    library: CohortLibrary | None = None
    step_budget: int = 8
    frame_budget: int = 12
    tool_retries: int = 2
    planner_vision: bool | Literal["auto"] = "auto"
    max_image_side: int = 896
    settings: Any = None
    models: tuple[ModelUse, ...] = ()

    @cached_property
    def library_overview(self) -> LibraryOverview | None:
        """What the library holds (None without one), read once per run whatever its steps.

        Raises:
            ToolInputError: If there is no library file yet.
            BackendError: If the library file cannot be read.
        """
        return self.library.overview() if self.library is not None else None

    @property
    def subject(self) -> str:
        """What the run is about, for the planner: the case, or the library's contents."""
        from surgagent.graphs.turn import describe_case

        if self.case is not None:
            return describe_case(self.case)
        if self.library_overview is not None:
            return self.library_overview.describe()
        return "(no case)"

    @property
    def subject_id(self) -> str:
        """The case id, or ``library`` for a question across the library."""
        return self.case.id if self.case is not None else "library"

    @property
    def planner_sees_images(self) -> bool:
        """Whether frames from tools go to the planner as images (`planner_vision`)."""
        if self.planner_vision == "auto":
            return getattr(self.planner, "takes_images", None) is not False
        return self.planner_vision
