"""Cholec80 loader: phase, next-phase, tool-presence and multi-step questions from the videos.

Native layout (the CAMMA download, unpacked; the folder itself or a ``cholec80/`` inside it)::

    videos/video01.mp4
    phase_annotations/video01-phase.txt   "Frame<TAB>Phase" header, one row per frame (25 fps)
    tool_annotations/video01-tool.txt     "Frame<TAB>Grasper<TAB>...<TAB>SpecimenBag" header,
                                          one 0/1 row every 25 frames

Video lengths come from the annotations (no video is decoded); a missing video file is still
referenced as ``videos/<case>.mp4`` (``surgagent eval check`` reports it, and compares each
phase file's length with its video's). Questions are asked at ``0, every_s, 2*every_s, ...``
seconds (default 60 s). Files in the annotation folders not named ``*-phase.txt`` /
``*-tool.txt``, and videos whose tool file is missing for the tool tasks, are reported.

    items = Cholec80Loader().load(Path("data/cholec80"), tasks=["cholec80-phase"])
    items[0].gold  # "Preparation"
"""

from __future__ import annotations

import random
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from surgagent.evals.loaders._base import (
    Loader,
    clock,
    relative,
    sample_times,
    take_options,
    time_tag,
)
from surgagent.evals.loaders._cholec80_tracks import (
    VIDEO_FPS,
    PhaseTrack,
    ToolTrack,
    read_phase_file,
    read_tool_file,
)
from surgagent.evals.loaders._report import (
    CaseTiming,
    LoadReport,
    Skip,
    Survey,
    TimingNote,
    compare_timing,
    relative_all,
    steps_of,
)
from surgagent.evals.records import Media, TaskRecord
from surgagent.tools.vocabulary import CHOLEC80_PHASES, CHOLEC80_TOOLS

__all__ = ["Cholec80Loader"]

_VIDEO_SUFFIXES = (".mp4", ".avi", ".mkv", ".mov", ".webm")
_NEEDS_PHASES = {"cholec80-phase", "cholec80-phase-next", "cholec80-multistep"}
_NEEDS_TOOLS = {"cholec80-tools", "cholec80-multistep"}
# Tools whose first appearance marks a step of the operation (the Grasper is there from the
# start, so "when did it first appear" would be a trivial question).
_MILESTONE_TOOLS = ("Clipper", "Scissors", "SpecimenBag")
_SPREAD = 8  # frames shown for whole-video questions


def _phase_items(
    case: str, media_video: str, phases: PhaseTrack, every_s: float
) -> list[TaskRecord]:
    items = []
    for t in sample_times(phases.duration, every_s):
        items.append(
            TaskRecord(
                id=f"cholec80-phase/{case}/{time_tag(t)}",
                task="cholec80-phase",
                dataset="cholec80",
                case=case,
                media=Media(video=media_video, start=t, times=[t]),
                question=(
                    f"Which surgical phase of this laparoscopic cholecystectomy is in progress "
                    f"at {clock(t)}?"
                ),
                choices=list(CHOLEC80_PHASES),
                gold=phases.at(t),
                meta={"seconds": t, "fps": phases.fps},
            )
        )
    return items


def _next_items(
    case: str, media_video: str, phases: PhaseTrack, every_s: float
) -> list[TaskRecord]:
    runs = phases.runs()
    run_of = np.repeat(np.arange(len(runs)), [end - start for _, start, end in runs])
    items = []
    for t in sample_times(phases.duration, every_s):
        run = int(run_of[phases.index(t)])
        if run == len(runs) - 1:
            continue
        current, _, end = runs[run]
        following = runs[run + 1][0]
        items.append(
            TaskRecord(
                id=f"cholec80-phase-next/{case}/{time_tag(t)}",
                task="cholec80-phase-next",
                dataset="cholec80",
                case=case,
                media=Media(video=media_video, start=t, times=[t]),
                question=(
                    f"At {clock(t)} of this laparoscopic cholecystectomy, which surgical phase "
                    f"will come next, after the one in progress?"
                ),
                choices=list(CHOLEC80_PHASES),
                gold=CHOLEC80_PHASES[following],
                meta={
                    "seconds": t,
                    "current": CHOLEC80_PHASES[current],
                    "seconds_to_next": round(end / phases.fps - t, 3),
                },
            )
        )
    return items


def _tool_items(case: str, media_video: str, tools: ToolTrack, every_s: float) -> list[TaskRecord]:
    return [
        TaskRecord(
            id=f"cholec80-tools/{case}/{time_tag(t)}",
            task="cholec80-tools",
            dataset="cholec80",
            case=case,
            media=Media(video=media_video, start=t, times=[t]),
            question=(
                f"Which surgical tools are visible at {clock(t)}? List every one that applies "
                f"from: {', '.join(CHOLEC80_TOOLS)} (or none)."
            ),
            choices=list(CHOLEC80_TOOLS),
            gold=tools.at(t),
            meta={"seconds": t},
        )
        for t in sample_times(tools.duration, every_s)
    ]


def _multistep_questions(
    case: str, phases: PhaseTrack, tools: ToolTrack
) -> list[tuple[str, str, str, list[str], str, dict[str, Any]]]:
    """``(kind, slug, question, choices, gold, meta)`` for one video."""
    rng = random.Random(f"cholec80-multistep:{case}")  # str seeds are stable across runs
    questions = []
    for tool in _MILESTONE_TOOLS:
        seen = tools.first_seen(tool)
        if seen is not None:
            question = (
                f"Which surgical phase was in progress when the {tool} first appeared in this "
                f"video?"
            )
            meta = {"tool": tool, "first_seen_s": seen}
            gold = phases.at(seen)
            choices = list(CHOLEC80_PHASES)
            questions.append(("phase-at-first-tool", tool.lower(), question, choices, gold, meta))
    row_phase = np.asarray([phases.index(float(f) / tools.video_fps) for f in tools.frames])
    row_phase = phases.labels[row_phase]
    used: dict[bool, list[tuple[str, str]]] = {True: [], False: []}
    for tool in CHOLEC80_TOOLS[1:]:
        column = tools.present[:, CHOLEC80_TOOLS.index(tool)]
        for label in np.unique(row_phase).tolist():
            hit = bool(np.any(column & (row_phase == label)))
            used[hit].append((tool, CHOLEC80_PHASES[label]))
    for answer in (True, False):  # one yes and one no question where the video allows
        if used[answer]:
            tool, phase = rng.choice(used[answer])
            question = (
                f"Is the {tool} used during the {phase} phase in this video? Answer yes or no."
            )
            slug = f"{tool.lower()}-{phase.lower()}"
            meta = {"tool": tool, "phase": phase}
            gold = "yes" if answer else "no"
            questions.append(("tool-in-phase", slug, question, ["yes", "no"], gold, meta))
    lengths = {CHOLEC80_PHASES[p]: 0.0 for p in np.unique(phases.labels).tolist()}
    for label, start, end in phases.runs():
        lengths[CHOLEC80_PHASES[label]] += (end - start) / phases.fps
    pairs = [(a, b) for i, a in enumerate(lengths) for b in list(lengths)[i + 1 :]]
    pairs = [(a, b) for a, b in pairs if abs(lengths[a] - lengths[b]) >= 1.0]
    if pairs:
        a, b = sorted(rng.choice(pairs), key=CHOLEC80_PHASES.index)
        question = f"Which phase lasted longer in this video, {a} or {b}?"
        meta = {"seconds": {a: round(lengths[a], 1), b: round(lengths[b], 1)}}
        gold = a if lengths[a] > lengths[b] else b
        slug = f"{a.lower()}-{b.lower()}"
        questions.append(("longer-phase", slug, question, [a, b], gold, meta))
    firsts = {tool: tools.first_seen(tool) for tool in CHOLEC80_TOOLS[1:]}  # not the Grasper
    seen_tools = {tool: s for tool, s in firsts.items() if s is not None}
    orders = [(a, b) for a in seen_tools for b in seen_tools if a < b]
    orders = [(a, b) for a, b in orders if seen_tools[a] != seen_tools[b]]
    if orders:
        a, b = sorted(rng.choice(orders), key=CHOLEC80_TOOLS.index)
        question = f"Which tool appeared first in this video, the {a} or the {b}?"
        gold = a if seen_tools[a] < seen_tools[b] else b
        meta = {"first_seen_s": {a: seen_tools[a], b: seen_tools[b]}}
        questions.append(("tool-order", f"{a.lower()}-{b.lower()}", question, [a, b], gold, meta))
    return questions


def _multistep_items(
    case: str, media_video: str, phases: PhaseTrack, tools: ToolTrack
) -> list[TaskRecord]:
    duration = phases.duration
    times = [round((k + 0.5) * duration / _SPREAD, 3) for k in range(_SPREAD)]
    return [
        TaskRecord(
            id=f"cholec80-multistep/{case}/{kind}-{slug}",
            task="cholec80-multistep",
            dataset="cholec80",
            case=case,
            media=Media(video=media_video, start=0.0, end=round(duration, 3), times=times),
            question=question,
            choices=choices,
            gold=gold,
            meta={"kind": kind, **meta},
        )
        for kind, slug, question, choices, gold, meta in _multistep_questions(case, phases, tools)
    ]


class Cholec80Loader(Loader):
    """Cholec80 (Twinanda et al. 2017): 80 cholecystectomy videos, phases and tools.

    Tasks: ``cholec80-phase`` (the phase at t), ``cholec80-phase-next`` (the phase after the
    current one, at times inside a phase that is not the video's last run;
    ``meta.seconds_to_next``), ``cholec80-tools`` (tools present at t) and
    ``cholec80-multistep`` (per video, questions combining phases and tools over the whole
    video: ``meta.kind`` is ``phase-at-first-tool``, ``tool-in-phase``, ``longer-phase`` or
    ``tool-order``). Options: none.
    """

    name = "cholec80"
    tasks = ("cholec80-phase", "cholec80-phase-next", "cholec80-tools", "cholec80-multistep")
    layout = (
        "phase_annotations/videoNN-phase.txt (Frame<TAB>Phase rows at 25 fps), "
        "tool_annotations/videoNN-tool.txt (Frame<TAB>Grasper...SpecimenBag rows every 25 "
        "frames) and videos/videoNN.mp4, in the folder or a cholec80/ folder inside it"
    )
    default_every_s = 60.0

    def _load(
        self,
        root: Path,
        tasks: list[str],
        every_s: float | None,
        options: dict[str, Any],
        report: LoadReport,
    ) -> list[TaskRecord]:
        take_options(self.name, options, {})
        step = every_s or 60.0
        base = _base(root)
        phase_files = _files(base, "phase", root, report)
        tool_files = _files(base, "tool", root, report)
        if not phase_files and not tool_files:
            raise self.missing(root, "Cholec80 phase or tool annotation files")
        explicit = set(tasks) != set(self.tasks)
        if explicit and _NEEDS_PHASES & set(tasks) and not phase_files:
            raise self.missing(root, "phase annotation files (phase_annotations/*-phase.txt)")
        if explicit and _NEEDS_TOOLS & set(tasks) and not tool_files:
            raise self.missing(root, "tool annotation files (tool_annotations/*-tool.txt)")
        needs_tools = bool(_NEEDS_TOOLS & set(tasks))
        items: list[TaskRecord] = []
        for case in sorted(set(phase_files) | set(tool_files)):
            video = _video_path(base, case, root)
            phases = read_phase_file(phase_files[case]) if case in phase_files else None
            tools = read_tool_file(tool_files[case]) if case in tool_files and needs_tools else None
            _report_incomplete(case, phase_files, tool_files, tasks, root, report)
            items.extend(self._case_items(case, video, phases, tools, tasks, step))
        return items

    def survey(self, root: Path, items: Sequence[TaskRecord]) -> Survey:
        """Videos on disk; each phase file's length and tool rows against the video."""
        base = _base(root)
        videos = base / "videos"
        found = sorted(videos.iterdir()) if videos.is_dir() else []
        found = [path for path in found if path.suffix.lower() in _VIDEO_SUFFIXES]
        survey = Survey(
            assumptions=[
                f"phase rows count frames of the {VIDEO_FPS:g} fps video, one row per frame",
                f"tool rows every {VIDEO_FPS:g} frames (1 per second)",
                "videoNN-phase.txt / videoNN-tool.txt belong to videos/videoNN.<mp4|avi|...>",
            ],
            frames=relative_all(found, root),
        )
        for case, path in _files(base, "phase", root, None).items():
            try:
                phases = read_phase_file(path)
            except ValueError:
                continue  # the load itself reports it
            rows = len(phases.labels)
            timing = CaseTiming(
                case=case,
                annotation=relative(path, root),
                last_frame=round((rows - 1) * VIDEO_FPS / phases.fps),
                annotated_s=round(phases.duration, 3),
                assumed_fps=VIDEO_FPS,
            )
            video = next((p for p in found if p.stem == case), None)
            survey.timings.append(compare_timing(timing, video, root, slack_s=1.0))
        for path in _files(base, "tool", root, None).values():
            survey.notes += _tool_step_notes(path, root)
        return survey

    @staticmethod
    def _case_items(
        case: str,
        video: str,
        phases: PhaseTrack | None,
        tools: ToolTrack | None,
        tasks: Sequence[str],
        step: float,
    ) -> list[TaskRecord]:
        items: list[TaskRecord] = []
        if phases is not None and "cholec80-phase" in tasks:
            items += _phase_items(case, video, phases, step)
        if phases is not None and "cholec80-phase-next" in tasks:
            items += _next_items(case, video, phases, step)
        if tools is not None and "cholec80-tools" in tasks:
            items += _tool_items(case, video, tools, step)
        if phases is not None and tools is not None and "cholec80-multistep" in tasks:
            items += _multistep_items(case, video, phases, tools)
        return items


def _base(root: Path) -> Path:
    for folder in (root, root / "cholec80", root / "Cholec80"):
        if (folder / "phase_annotations").is_dir() or (folder / "tool_annotations").is_dir():
            return folder
    return root


def _files(base: Path, kind: str, root: Path, report: LoadReport | None) -> dict[str, Path]:
    """Case -> ``<case>-<kind>.txt`` of ``<kind>_annotations/``; other files are reported."""
    folder = base / f"{kind}_annotations"
    files: dict[str, Path] = {}
    for path in sorted(folder.iterdir()) if folder.is_dir() else []:
        if path.is_file() and path.name.endswith(f"-{kind}.txt"):
            files[path.name[: -len(f"-{kind}.txt")]] = path
        elif report is not None:
            reason = f"not a videoNN-{kind}.txt annotation file"
            report.skip(relative(path, root), reason, Skip.UNRECOGNISED)
    return files


def _report_incomplete(
    case: str,
    phase_files: dict[str, Path],
    tool_files: dict[str, Path],
    tasks: Iterable[str],
    root: Path,
    report: LoadReport,
) -> None:
    """Count a video whose phase or tool file is missing for the tasks asked."""
    wanted = set(tasks)
    if case in phase_files and case not in tool_files and wanted & _NEEDS_TOOLS:
        reason = f"no tool_annotations/{case}-tool.txt: no tool or multi-step items"
        report.skip(relative(phase_files[case], root), reason, Skip.INCOMPLETE)
    if case in tool_files and case not in phase_files and wanted & _NEEDS_PHASES:
        reason = f"no phase_annotations/{case}-phase.txt: no phase or multi-step items"
        report.skip(relative(tool_files[case], root), reason, Skip.INCOMPLETE)


def _tool_step_notes(path: Path, root: Path) -> list[TimingNote]:
    """A note where tool rows are not one every 25 frames."""
    try:
        tools = read_tool_file(path)
    except ValueError:
        return []  # the load itself reports it
    odd = {s: n for s, n in steps_of(tools.frames.tolist()).items() if s != int(VIDEO_FPS)}
    if not odd:
        return []
    shown = ", ".join(f"{step} ({n}x)" for step, n in sorted(odd.items())[:4])
    problem = f"tool rows not {VIDEO_FPS:g} frames apart: steps {shown}"
    return [TimingNote(path=relative(path, root), problem=problem, count=sum(odd.values()))]


def _video_path(base: Path, case: str, root: Path) -> str:
    for suffix in _VIDEO_SUFFIXES:
        candidate = base / "videos" / f"{case}{suffix}"
        if candidate.is_file():
            return relative(candidate, root)
    return relative(base / "videos" / f"{case}.mp4", root)
