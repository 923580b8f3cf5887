"""The perception tool's arguments, task styles and result.

args = PerceptionArgs(question="Which instruments?", task="instrument_recognition",
times=["01:05"])
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field

from surgagent.tools.base import Evidence, ToolResult
from surgagent.tools.video.tools import LookAtFramesArgs
from surgagent.tools.vision import Usage

__all__ = [
    "PerceptionArgs",
    "PerceptionResult",
    "PerceptionTask",
]

PerceptionTask = Literal[
    "open",
    "instrument_recognition",
    "instrument_localization",
    "grid",
    "tissue_recognition",
    "tissue_localization",
    "action",
    "triplet",
    "cvs",
    "phase",
]


class PerceptionArgs(LookAtFramesArgs):
    """Arguments of `ask_perception`: the question, its task style and which frames."""

    question: str = Field(
        description="What to ask about the frames, in plain words, e.g. 'Is the cystic duct "
        "clipped?' or 'Where is the hook?'.",
        min_length=3,
    )
    task: PerceptionTask = Field(
        "open",
        description="How to ask and read the answer: open (free text), instrument_recognition, "
        "instrument_localization (boxes), grid (3x3 area), tissue_recognition, "
        "tissue_localization, action, triplet (instrument-verb-target), cvs (critical view "
        "of safety, 3 criteria), phase.",
    )


class PerceptionResult(ToolResult):
    """The perception model's answer: raw text, parsed value and any disagreement."""

    kind: Literal["perception"] = "perception"
    case_id: str
    task: PerceptionTask
    question: str
    times: list[float]
    frames: list[str]
    answer: str
    parsed: Any = Field(
        None,
        description="the answer read by the shared parser (surgagent.tools.answers), as the "
        "evals read it: a phase name, instrument names, [c1, c2, c3] for CVS, "
        "[[instrument, verb, target], ...], grid cells, or [{label, box}, ...] with 0-1 boxes",
    )
    parse_error: str | None = None
    disagreements: list[str] = Field(default_factory=list)
    model: str = ""
    usage: Usage = Field(default_factory=Usage)

    def evidence(self) -> list[Evidence]:
        """One tool-output item spanning the frames that were asked about."""
        return [
            Evidence(
                kind="tool_output",
                tool="ask_perception",
                time=self.times[0],
                end=self.times[-1] if len(self.times) > 1 else None,
                frame=self.frames[0] if self.frames else None,
                summary=f"{self.task}: {self.answer[:160]}",
            )
        ]
