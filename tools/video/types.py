"""What the video room returns: sampled frames, an index summary, frames shown.

frame = Frame(time=5.0, index=125, path=Path(".../00000125.jpg"))
FramesResult(case_id="c1", frames=[frame]).evidence()  # one frame item
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Literal

from pydantic import BaseModel, Field

from surgagent.tools.base import (
    Evidence,
    ToolResult,
    format_time,
)

if TYPE_CHECKING:
    pass

__all__ = [
    "Frame",
    "FramesResult",
    "IndexResult",
]


class Frame(BaseModel):
    """One frame of a case, kept as a JPEG in the case cache."""

    time: float = Field(description="seconds from the start of the case")
    index: int = Field(description="frame number in the video (0-based)")
    path: Path
    width: int
    height: int


class IndexResult(BaseModel):
    """What `index_case` did."""

    case_id: str
    fps: float
    frames_total: int
    frames_written: int
    seconds: float
    damaged: list[str] = []  # one sentence per damaged span skipped
    thumbnail: Path


class FramesResult(ToolResult):
    """The frames `look_at_frames` showed."""

    kind: Literal["frames"] = "frames"
    case_id: str
    frames: list[Frame]

    def evidence(self) -> list[Evidence]:
        """One frame item per frame shown."""
        return [
            Evidence(
                kind="frame",
                tool="look_at_frames",
                time=frame.time,
                frame=str(frame.path),
                summary=f"frame {frame.index} at {format_time(frame.time, tenths=True)} "
                f"of case {self.case_id}",
            )
            for frame in self.frames
        ]

    def image_paths(self) -> list[Path]:
        """The JPEG files of the frames, in order."""
        return [frame.path for frame in self.frames]
