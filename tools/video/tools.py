"""The planner's `look_at_frames` tool: frames at given times or a sampled clip, as images.

It reads the case, cache and frame budget from the run context and returns the frames
as the artifact, so the graph can show them to the planner.

    tools = make_video_tools()  # [look_at_frames]
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Protocol

from langchain_core.messages import BaseMessage
from langchain_core.tools import BaseTool, tool
from langgraph.prebuilt import ToolRuntime
from pydantic import BaseModel, Field, field_validator

from surgagent.tools.base import (
    TIME_HELP,
    format_time,
    images_shown_this_turn,
    parse_time,
)
from surgagent.tools.cache import Case, CaseCache
from surgagent.tools.errors import ToolInputError
from surgagent.tools.video.engine import clip_times, sample_frames
from surgagent.tools.video.types import FramesResult

if TYPE_CHECKING:
    pass

__all__ = [
    "FramesContext",
    "LookAtFramesArgs",
    "look_at_frames",
    "make_video_tools",
]


# -- the look_at_frames tool ----------------------------------------------------------------


class FramesContext(Protocol):
    """What `look_at_frames` needs from the run context (the graph's ``RunContext``)."""

    @property
    def case(self) -> Case:
        """The case the run is about."""
        ...

    @property
    def cache(self) -> CaseCache:
        """Where its frames are cached."""
        ...

    @property
    def frame_budget(self) -> int:
        """Most frames shown in one answer."""
        ...

    @property
    def max_image_side(self) -> int:
        """Frames are scaled down to fit this side."""
        ...


_DEFAULT_CLIP_COUNT = 4


class LookAtFramesArgs(BaseModel):
    """Arguments of `look_at_frames`: either ``times`` or a clip ``start``-``end`` + ``count``."""

    times: list[str] | None = Field(
        None,
        description=f'Moments to look at, each {TIME_HELP}, e.g. ["00:05", "01:30"]. '
        "Leave empty to sample a clip with start/end/count instead.",
    )
    start: str | None = Field(None, description=f"Start of a clip to sample, {TIME_HELP}.")
    end: str | None = Field(None, description=f"End of the clip, {TIME_HELP}.")
    count: int | None = Field(
        None, ge=1, description="How many evenly spaced frames to take from the clip (default 4)."
    )

    @field_validator("times", mode="before")
    @classmethod
    def _numbers_as_text(cls, value: Any) -> Any:
        if isinstance(value, int | float | str):
            value = [value]
        if isinstance(value, list):
            return [str(v) if isinstance(v, int | float) else v for v in value]
        return value

    @field_validator("start", "end", mode="before")
    @classmethod
    def _number_as_text(cls, value: Any) -> Any:
        return str(value) if isinstance(value, int | float) else value

    def wanted_times(self) -> list[float]:
        """The moments asked for, in seconds: ``times``, or ``count`` spread over a clip.

        Raises:
            ToolInputError: If neither or both ways are given, or a time is malformed.
        """
        clip = (self.start, self.end, self.count)
        if self.times and any(v is not None for v in clip):
            raise ToolInputError("give either times or start/end/count, not both.")
        if self.times:
            return [parse_time(t) for t in self.times]
        if self.start is None or self.end is None:
            raise ToolInputError(
                "say which frames to show: times=[...], or start and end (with count) for a clip."
            )
        count = self.count or _DEFAULT_CLIP_COUNT
        return clip_times(parse_time(self.start), parse_time(self.end), count)


_MAX_LISTED = 16


def _messages_of(state: Any) -> list[BaseMessage]:
    """The message list of a graph state (a dict, a dataclass-like object, or the list)."""
    if isinstance(state, dict):
        return list(state.get("messages", []))
    return list(state if isinstance(state, list) else getattr(state, "messages", []))


_LOOK_DESCRIPTION = (
    "Look at frames of the case video: the images are shown to you after this call. Give "
    "exact moments (times) or a clip (start, end, count). Each frame counts against this "
    "answer's frame budget, so look at few frames, well chosen."
)


@tool(
    "look_at_frames",
    description=_LOOK_DESCRIPTION,
    args_schema=LookAtFramesArgs,
    response_format="content_and_artifact",
)
def look_at_frames(
    runtime: ToolRuntime[FramesContext, Any],
    times: list[str] | None = None,
    start: str | None = None,
    end: str | None = None,
    count: int | None = None,
) -> tuple[str, FramesResult]:
    """Show the planner frames of its case (the description above is what it reads)."""
    ctx = runtime.context
    case = ctx.case
    wanted = LookAtFramesArgs(times=times, start=start, end=end, count=count).wanted_times()
    left = ctx.frame_budget - images_shown_this_turn(_messages_of(runtime.state))
    if len(wanted) > left:
        raise ToolInputError(
            f"asked for {len(wanted)} frames but only {max(left, 0)} of this answer's "
            f"{ctx.frame_budget} are left; "
            + (f"ask for at most {left}." if left > 0 else "answer from what you have seen.")
        )
    frames = sample_frames(case, wanted, ctx.cache, max_side=ctx.max_image_side)
    listed = ", ".join(format_time(frame.time, tenths=True) for frame in frames[:_MAX_LISTED])
    if len(frames) > _MAX_LISTED:
        listed += f" and {len(frames) - _MAX_LISTED} more"
    noun = "frame" if len(frames) == 1 else "frames"
    text = (
        f"Showing {len(frames)} {noun} at {listed} (case {format_time(case.duration)} long); "
        f"{left - len(frames)} frames left this answer."
    )
    return text, FramesResult(case_id=case.id, frames=frames)


def make_video_tools() -> list[BaseTool]:
    """The planner tools this module provides."""
    return [look_at_frames]
