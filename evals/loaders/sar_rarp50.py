"""SAR-RARP50 loader: which suturing action is in progress at a moment of the video.

Native layout (the EndoVis 2022 SAR-RARP50 release; video folders in the folder or one
level down, e.g. ``train1/``, ``train2/``, ``test/``)::

    video_1/video_left.avi
    video_1/action_discrete.txt      "frame_index,action_id" rows, no header, at 10 Hz
                                     (frame indices plain or zero-padded: 000000006,1)

Frame indices count frames of the 60 fps video, one row every 6 frames, so the moment of a
row is ``frame / 60`` s (``video_fps`` option). Questions are asked at ``0, every_s, ...``
seconds (default 10 s) while the annotation lasts (up to the last row plus one row step);
the label at t is that of the last row at or before t. ``surgagent eval check`` compares
the row step with 6 and the last row with the video's length.

    items = SarRarp50Loader().load(Path("data/SAR-RARP50"))
    items[0].gold  # "Picking-up the needle"
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from surgagent.evals.loaders._base import (
    AnnotationError,
    Loader,
    case_names,
    clock,
    relative,
    sample_times,
    take_options,
    time_tag,
)
from surgagent.evals.loaders._report import (
    CaseTiming,
    LoadReport,
    Survey,
    TimingNote,
    compare_timing,
    steps_of,
)
from surgagent.evals.records import Media, TaskRecord
from surgagent.tools.vocabulary import SAR_RARP50_ACTIONS

__all__ = ["ROW_STEP", "SarRarp50Loader", "read_action_file"]

ROW_STEP = 6  # video frames between two rows (10 Hz of a 60 fps video)
_NAME = "action_discrete.txt"


def read_action_file(path: Path) -> tuple[np.ndarray, np.ndarray]:
    """``(frames, action_ids)`` of an ``action_discrete.txt`` file, in frame order.

    Raises:
        AnnotationError: For a row that is not ``frame,action`` with a known action id, or a
            file without rows (naming the file and line).
    """
    try:
        lines = path.read_text(encoding="utf-8-sig").splitlines()
    except (OSError, UnicodeDecodeError) as exc:
        raise AnnotationError.at(path, None, f"cannot read the action labels ({exc}).") from exc
    frames: list[int] = []
    actions: list[int] = []
    for number, line in enumerate(lines, start=1):
        parts = [p.strip() for p in line.replace(";", ",").split(",")]
        if parts == [""]:
            continue
        if len(parts) != 2 or not parts[0].isdigit() or not parts[1].isdigit():
            raise AnnotationError.at(path, number, f"{line.strip()!r} is not 'frame,action_id'.")
        if int(parts[1]) >= len(SAR_RARP50_ACTIONS):
            raise AnnotationError.at(
                path,
                number,
                f"action id {parts[1]} is not one of 0-{len(SAR_RARP50_ACTIONS) - 1}.",
            )
        frames.append(int(parts[0]))
        actions.append(int(parts[1]))
    if not frames:
        raise AnnotationError.at(path, None, "no annotated rows.")
    order = np.argsort(frames, kind="stable")
    return np.asarray(frames)[order], np.asarray(actions)[order]


class SarRarp50Loader(Loader):
    """SAR-RARP50 (Psychogyios et al. 2023): suturing actions in prostatectomy videos.

    Task ``sar-rarp50-action``: gold is one of the 8 action names; ``meta.action_id`` the
    dataset's id. Options: ``video_fps`` (default 60).
    """

    name = "sar-rarp50"
    tasks = ("sar-rarp50-action",)
    layout = (
        "video_N/action_discrete.txt ('frame,action_id' rows) next to video_N/video_left.avi, "
        "in the folder or one level down (train1/, train2/, test/)"
    )
    default_every_s = 10.0

    def _load(
        self,
        root: Path,
        tasks: list[str],
        every_s: float | None,
        options: dict[str, Any],
        report: LoadReport,
    ) -> list[TaskRecord]:
        video_fps = float(take_options(self.name, options, {"video_fps": 60.0})["video_fps"])
        files = _action_files(root)
        if not files:
            raise self.missing(root, "SAR-RARP50 action files (action_discrete.txt)")
        cases = case_names([path.parent for path in files])
        choices = list(SAR_RARP50_ACTIONS)
        items = []
        for path in files:
            frames, actions = read_action_file(path)
            folder = path.parent
            case = cases[folder]
            video = relative(folder / "video_left.avi", root)
            split = folder.parent.name if folder.parent != root else ""
            duration = (int(frames[-1]) + ROW_STEP) / video_fps
            for t in sample_times(duration, every_s or 10.0):
                row = int(np.searchsorted(frames, t * video_fps + 1e-6, side="right")) - 1
                row = max(row, 0)
                action = int(actions[row])
                items.append(
                    TaskRecord(
                        id=f"sar-rarp50-action/{case}/{time_tag(t)}",
                        task="sar-rarp50-action",
                        dataset="sar-rarp50",
                        case=case,
                        media=Media(video=video, start=t, times=[t]),
                        question=(
                            f"Which suturing action is being performed at {clock(t)} of this "
                            f"robotic prostatectomy video? Choose one of: {'; '.join(choices)}."
                        ),
                        choices=choices,
                        gold=SAR_RARP50_ACTIONS[action],
                        meta={
                            "seconds": t,
                            "action_id": action,
                            "frame": int(frames[row]),
                            "split": split,
                            "video_fps": video_fps,
                        },
                    )
                )
        return items

    def survey(self, root: Path, items: Sequence[TaskRecord]) -> Survey:
        """Videos on disk; each file's row step against 6 and its last row against the video."""
        fps = 60.0
        for item in items:
            if item.meta.get("video_fps"):
                fps = float(item.meta["video_fps"])
        files = _action_files(root)
        name = "video_left.avi"
        videos = {*root.glob(name), *root.glob(f"*/{name}"), *root.glob(f"*/*/{name}")}
        survey = Survey(
            assumptions=[
                f"action_discrete.txt frame indices count frames of the {fps:g} fps "
                "video_left.avi next to it",
                f"one row every {ROW_STEP} frames ({fps / ROW_STEP:g} Hz); a row's action "
                "lasts until the next row",
            ],
            frames=sorted(relative(video, root) for video in videos),
        )
        for path in files:
            where = relative(path, root)
            try:
                frames, _ = read_action_file(path)
            except AnnotationError:
                continue  # the load itself reports it
            steps = steps_of(frames.tolist())
            odd = {step: n for step, n in steps.items() if step != ROW_STEP}
            if odd:
                shown = ", ".join(f"{step} ({n}x)" for step, n in sorted(odd.items())[:4])
                survey.notes.append(
                    TimingNote(
                        path=where,
                        problem=f"rows not {ROW_STEP} frames apart: steps {shown}",
                        count=sum(odd.values()),
                    )
                )
            last = int(frames[-1])
            timing = CaseTiming(
                case=path.parent.name,
                annotation=where,
                last_frame=last,
                annotated_s=round((last + ROW_STEP) / fps, 3),
                assumed_fps=fps,
            )
            video = path.parent / "video_left.avi"
            survey.timings.append(compare_timing(timing, video, root, slack_s=ROW_STEP / fps))
        return survey


def _action_files(root: Path) -> list[Path]:
    return sorted({*root.glob(_NAME), *root.glob(f"*/{_NAME}"), *root.glob(f"*/*/{_NAME}")})
