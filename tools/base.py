"""What every tool shares: the evidence model, the result base class, the call record, times.

Tools return ``(short_text, result)`` pairs; ``result`` subclasses `ToolResult` so the graph
can collect evidence and images from it without knowing the tool (the union of all results
is `surgagent.tools.results`). The tools node keeps a `ToolRecord` on each tool message.

    seconds = parse_time("01:02:03")  # 3723.0
"""

from __future__ import annotations

import math
import re
from collections.abc import Sequence
from pathlib import Path
from typing import Literal

from langchain_core.messages import BaseMessage, HumanMessage, ToolMessage
from pydantic import BaseModel, ConfigDict

from surgagent.tools.errors import ToolInputError

__all__ = [
    "TIME_HELP",
    "Evidence",
    "ToolRecord",
    "ToolResult",
    "format_time",
    "images_shown_this_turn",
    "parse_time",
]

_RECORD_KEY = "surgagent_tool"
_CLOCK = re.compile(r"^(?:(\d+):)?(\d{1,2}):(\d{1,2}(?:\.\d+)?)$")


class Evidence(BaseModel):
    """One item an answer can cite: a moment, a span, a frame, a tool output or a passage.

    ``frame`` is an image file of the frame; ``source`` names where a passage comes from and
    ``ref`` is its passage id. ``case_id`` names the case of evidence gathered across a
    library of cases (within one case's review it is the run's case, and left out).
    """

    model_config = ConfigDict(frozen=True)

    kind: Literal["frame", "segment", "detection", "tool_output", "passage"]
    tool: str
    summary: str
    time: float | None = None
    end: float | None = None
    frame: str | None = None
    source: str | None = None
    ref: str | None = None
    case_id: str | None = None

    def label(self) -> str:
        """A short human reference such as ``[01:05 frame]`` or ``[video03 00:10-00:42 ...]``."""
        if self.time is None:
            return f"[{self.case_id}]" if self.case_id else f"[{self.tool}]"
        span = format_time(self.time)
        if self.end is not None:
            span += f"-{format_time(self.end)}"
        if self.case_id:
            span = f"{self.case_id} {span}"
        return f"[{span} {self.kind}]"


class ToolResult(BaseModel):
    """Base class of tool artifacts: the full result kept for the UI, evals and the answer."""

    def evidence(self) -> list[Evidence]:
        """The citable items this result contributes; none by default."""
        return []

    def image_paths(self) -> list[Path]:
        """Image files to show a vision-capable planner next to the text; none by default."""
        return []


class ToolRecord(BaseModel):
    """What the tools node saw of one tool call, kept on its message beside the result.

    ``images`` are the image files the result showed (they count against the frame budget),
    ``backend_failure`` marks a call whose backend failed for good, which ends the run.
    """

    duration_s: float = 0.0
    images: list[str] = []
    backend_failure: bool = False

    @classmethod
    def of(cls, message: BaseMessage) -> ToolRecord:
        """The record on a tool message (an empty one where the tools node left none)."""
        return cls.model_validate(message.response_metadata.get(_RECORD_KEY) or {})

    def attach(self, message: BaseMessage) -> None:
        """Store this record on ``message`` (as plain data, so checkpoints keep it)."""
        message.response_metadata = {
            **message.response_metadata,
            _RECORD_KEY: self.model_dump(mode="json"),
        }


def parse_time(value: str | float | int) -> float:
    """Parse seconds (``75``, ``"75.5"``) or a clock time (``"01:15"``, ``"00:01:15.5"``).

    Raises:
        ToolInputError: If the value is negative, not finite or not a time.
    """
    if isinstance(value, int | float):
        seconds = float(value)
    else:
        text = value.strip().lower().removesuffix("s").strip()
        match = _CLOCK.match(text)
        if match:
            hours, minutes, secs = match.groups()
            seconds = int(hours or 0) * 3600 + int(minutes) * 60 + float(secs)
        else:
            try:
                seconds = float(text)
            except ValueError:
                raise ToolInputError(
                    f"{value!r} is not a time; give seconds (75) or mm:ss / hh:mm:ss (01:15)."
                ) from None
    if not math.isfinite(seconds) or seconds < 0:
        raise ToolInputError(f"{value!r} is not a valid time; times are seconds from 0.")
    return seconds


TIME_HELP = "seconds (75) or a clock time mm:ss / hh:mm:ss (01:15)"


def format_time(seconds: float, *, tenths: bool = False) -> str:
    """Format seconds as ``mm:ss`` (or ``h:mm:ss`` from one hour on).

    With ``tenths``, tenths of a second are added where they are not zero (``01:05.4``).
    """
    if tenths:
        whole_s, tenth = divmod(round(seconds * 10), 10)
        return format_time(whole_s) + (f".{tenth}" if tenth else "")
    whole = int(round(seconds))
    hours, rest = divmod(whole, 3600)
    minutes, secs = divmod(rest, 60)
    return f"{hours}:{minutes:02d}:{secs:02d}" if hours else f"{minutes:02d}:{secs:02d}"


def images_shown_this_turn(messages: Sequence[BaseMessage]) -> int:
    """Count the images tool results attached since the user's last message.

    Tools that return frames use this count to keep within the run's frame budget.
    """
    shown = 0
    for message in reversed(messages):
        if isinstance(message, HumanMessage):
            break
        if isinstance(message, ToolMessage):
            shown += len(ToolRecord.of(message).images)
    return shown
