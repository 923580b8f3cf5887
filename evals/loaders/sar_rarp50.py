"""SAR-RARP50 loader: which suturing action is in progress at a moment of the video.

Native layout (the EndoVis 2022 SAR-RARP50 release; video folders in the folder or one
level down, e.g. ``train1/``, ``train2/``, ``test/``)::

    video_1/video_left.avi
    video_1/action_discrete.txt      "frame_index,action_id" rows, no header, at 10 Hz

Frame indices count frames of the 60 fps video (the toolkit samples every 6th frame), so the
moment of a row is ``frame / 60`` s (``video_fps`` option). Questions are asked at
``0, every_s, ...`` seconds (default 10 s) while the annotation lasts; the label at t is
that of the last row at or before t.

    items = SarRarp50Loader().load(Path("data/SAR-RARP50"))
    items[0].gold  # "Picking-up the needle"
"""

from __future__ import annotations

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
from surgagent.evals.records import Media, TaskRecord
from surgagent.tools.vocabulary import SAR_RARP50_ACTIONS

__all__ = ["SarRarp50Loader", "read_action_file"]


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
        self, root: Path, tasks: list[str], every_s: float | None, options: dict[str, Any]
    ) -> list[TaskRecord]:
        video_fps = float(take_options(self.name, options, {"video_fps": 60.0})["video_fps"])
        name = "action_discrete.txt"
        files = sorted({*root.glob(name), *root.glob(f"*/{name}"), *root.glob(f"*/*/{name}")})
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
            duration = (int(frames[-1]) + 1) / video_fps
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
                        },
                    )
                )
        return items
