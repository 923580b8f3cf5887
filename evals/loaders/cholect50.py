"""CholecT50 loader: which action triplets ⟨instrument, verb, target⟩ a frame shows.

Native layout (CAMMA-public/cholect50 ``docs/README-Format.md``; the folder itself or a
``CholecT50/`` inside it)::

    videos/VID01/000000.png ...   frames at 1 fps, named by the zero-padded frame id
    labels/VID01.json             {"fps", "num_frames", "categories", "annotations"}

``annotations`` maps each frame id to a list of triplet instances, each a 15-number vector
``[triplet, instrument, score, x, y, w, h, verb, target, score, x, y, w, h, phase]`` (the
official loader reads the triplet at 0, instrument 1, verb 7, target 8, phase 14); ``-1``
means none. Triplet ids are named by the file's ``categories["triplet"]`` (a dict of
per-task tables in the challenge-val v1.5 files, a list of them in README-Format) where
present, otherwise by the 100-class table of ivtmetrics' ``maps.txt`` below.

Frame ids count frames of the 1 fps frame folders and may be sparse (not every second is
annotated). ``every_s`` keeps one frame per ``every_s`` seconds: the first kept frame of
each window ``[k * every_s, (k + 1) * every_s)``. Frames with only null triplets and frames
between the windows' picks are left out by design (counted in the load report).

    items = CholecT50Loader().load(Path("data/CholecT50"))
    items[0].gold  # [["grasper", "retract", "gallbladder"], ["hook", "dissect", "gallbladder"]]
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from surgagent.evals.loaders._base import AnnotationError, Loader, relative, take_options
from surgagent.evals.loaders._report import (
    CaseTiming,
    LoadReport,
    Skip,
    Survey,
    TimingNote,
    relative_all,
)
from surgagent.evals.records import Media, TaskRecord
from surgagent.tools.vocabulary import CHOLECT50_INSTRUMENTS, CHOLECT50_TARGETS, CHOLECT50_VERBS

__all__ = ["CHOLECT50_PHASES", "CHOLECT50_TRIPLETS", "CholecT50Loader", "triplet_names"]

# Triplet id -> "instrument,verb,target" (CAMMA-public/ivtmetrics maps.txt order).
CHOLECT50_TRIPLETS = (
    "grasper,dissect,cystic_plate", "grasper,dissect,gallbladder", "grasper,dissect,omentum",
    "grasper,grasp,cystic_artery", "grasper,grasp,cystic_duct", "grasper,grasp,cystic_pedicle",
    "grasper,grasp,cystic_plate", "grasper,grasp,gallbladder", "grasper,grasp,gut",
    "grasper,grasp,liver", "grasper,grasp,omentum", "grasper,grasp,peritoneum",
    "grasper,grasp,specimen_bag", "grasper,pack,gallbladder", "grasper,retract,cystic_duct",
    "grasper,retract,cystic_pedicle", "grasper,retract,cystic_plate",
    "grasper,retract,gallbladder", "grasper,retract,gut", "grasper,retract,liver",
    "grasper,retract,omentum", "grasper,retract,peritoneum",
    "bipolar,coagulate,abdominal_wall_cavity", "bipolar,coagulate,blood_vessel",
    "bipolar,coagulate,cystic_artery", "bipolar,coagulate,cystic_duct",
    "bipolar,coagulate,cystic_pedicle", "bipolar,coagulate,cystic_plate",
    "bipolar,coagulate,gallbladder", "bipolar,coagulate,liver", "bipolar,coagulate,omentum",
    "bipolar,coagulate,peritoneum", "bipolar,dissect,adhesion", "bipolar,dissect,cystic_artery",
    "bipolar,dissect,cystic_duct", "bipolar,dissect,cystic_plate",
    "bipolar,dissect,gallbladder", "bipolar,dissect,omentum", "bipolar,grasp,cystic_plate",
    "bipolar,grasp,liver", "bipolar,grasp,specimen_bag", "bipolar,retract,cystic_duct",
    "bipolar,retract,cystic_pedicle", "bipolar,retract,gallbladder", "bipolar,retract,liver",
    "bipolar,retract,omentum", "hook,coagulate,blood_vessel", "hook,coagulate,cystic_artery",
    "hook,coagulate,cystic_duct", "hook,coagulate,cystic_pedicle",
    "hook,coagulate,cystic_plate", "hook,coagulate,gallbladder", "hook,coagulate,liver",
    "hook,coagulate,omentum", "hook,cut,blood_vessel", "hook,cut,peritoneum",
    "hook,dissect,blood_vessel", "hook,dissect,cystic_artery", "hook,dissect,cystic_duct",
    "hook,dissect,cystic_plate", "hook,dissect,gallbladder", "hook,dissect,omentum",
    "hook,dissect,peritoneum", "hook,retract,gallbladder", "hook,retract,liver",
    "scissors,coagulate,omentum", "scissors,cut,adhesion", "scissors,cut,blood_vessel",
    "scissors,cut,cystic_artery", "scissors,cut,cystic_duct", "scissors,cut,cystic_plate",
    "scissors,cut,liver", "scissors,cut,omentum", "scissors,cut,peritoneum",
    "scissors,dissect,cystic_plate", "scissors,dissect,gallbladder", "scissors,dissect,omentum",
    "clipper,clip,blood_vessel", "clipper,clip,cystic_artery", "clipper,clip,cystic_duct",
    "clipper,clip,cystic_pedicle", "clipper,clip,cystic_plate", "irrigator,aspirate,fluid",
    "irrigator,dissect,cystic_duct", "irrigator,dissect,cystic_pedicle",
    "irrigator,dissect,cystic_plate", "irrigator,dissect,gallbladder",
    "irrigator,dissect,omentum", "irrigator,irrigate,abdominal_wall_cavity",
    "irrigator,irrigate,cystic_pedicle", "irrigator,irrigate,liver",
    "irrigator,retract,gallbladder", "irrigator,retract,liver", "irrigator,retract,omentum",
    "grasper,null_verb,null_target", "bipolar,null_verb,null_target",
    "hook,null_verb,null_target", "scissors,null_verb,null_target",
    "clipper,null_verb,null_target", "irrigator,null_verb,null_target",
)  # fmt: skip
CHOLECT50_PHASES = (
    "preparation",
    "carlot-triangle-dissection",
    "clipping-and-cutting",
    "gallbladder-dissection",
    "gallbladder-packaging",
    "cleaning-and-coagulation",
    "gallbladder-extraction",
)

_QUESTION = (
    "Which surgical action triplets <instrument, verb, target> are happening in this frame of "
    "a laparoscopic cholecystectomy? Answer with every triplet as [instrument, verb, target], "
    "or [] if there is none. Instruments: {instruments}. Verbs: {verbs}. Targets: {targets}."
)


def _categories(data: Mapping[str, Any], key: str) -> dict[int, str]:
    categories = data.get("categories")
    if isinstance(categories, list):  # README-Format calls it a list of per-task dicts
        merged: dict[str, Any] = {}
        for entry in categories:
            if isinstance(entry, dict):
                merged.update(entry)
        categories = merged
    table = categories.get(key) if isinstance(categories, dict) else None
    if not isinstance(table, dict):
        return {}
    return {int(k): str(v) for k, v in table.items() if str(k).lstrip("-").isdigit()}


def triplet_names(data: Mapping[str, Any] | None = None) -> dict[int, list[str]]:
    """Triplet id -> ``[instrument, verb, target]``: the label file's own table, else ours."""
    table = _categories(data or {}, "triplet") or dict(enumerate(CHOLECT50_TRIPLETS))
    return {k: [part.strip() for part in v.split(",")] for k, v in table.items()}


def _read_labels(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as exc:
        raise AnnotationError.at(path, exc.lineno, f"not valid JSON ({exc.msg}).") from exc
    except (OSError, UnicodeDecodeError) as exc:
        raise AnnotationError.at(path, None, f"cannot read the label file ({exc}).") from exc
    if not isinstance(data, dict) or not isinstance(data.get("annotations"), dict):
        raise AnnotationError.at(
            path, None, "no 'annotations' object mapping frame ids to triplet vectors."
        )
    return data


def _frame_triplets(
    path: Path, frame: str, instances: Any, names: Mapping[int, list[str]]
) -> tuple[list[int], int | None]:
    """Triplet ids (ascending, unique, nulls dropped) and phase id of one frame."""
    if not isinstance(instances, list):
        raise AnnotationError.at(path, None, f"frame {frame}: expected a list of vectors.")
    ids: set[int] = set()
    phase = None
    for number, vector in enumerate(instances):
        if (
            not isinstance(vector, list)
            or not vector
            or not all(isinstance(v, int | float) for v in vector)
        ):
            raise AnnotationError.at(
                path, None, f"frame {frame}, instance {number}: {vector!r} is not a number vector."
            )
        triplet = int(vector[0])
        if len(vector) > 14 and vector[14] >= 0:
            phase = int(vector[14])
        if triplet < 0:
            continue
        if triplet not in names:
            raise AnnotationError.at(
                path, None, f"frame {frame}, instance {number}: unknown triplet id {triplet}."
            )
        ids.add(triplet)
    return sorted(ids), phase


def _base(root: Path) -> Path:
    for folder in (root, root / "CholecT50", root / "cholect50"):
        if (folder / "labels").is_dir():
            return folder
    return root


def _frame_ids(path: Path, data: Mapping[str, Any]) -> list[int]:
    """The annotation keys as frame numbers, ascending.

    Raises:
        AnnotationError: For a key that is not a whole number.
    """
    keys = []
    for key in data["annotations"]:
        if not str(key).isdigit():
            raise AnnotationError.at(path, None, f"frame id {key!r} is not a number.")
        keys.append(int(key))
    return sorted(keys)


def one_per_window(times: Sequence[float], every_s: float) -> list[int]:
    """Indices of the first of ``times`` (ascending) in each window of ``every_s`` seconds."""
    chosen, last = [], None
    for index, seconds in enumerate(times):
        window = math.floor(seconds / every_s + 1e-9)
        if window != last:
            chosen.append(index)
            last = window
    return chosen


class CholecT50Loader(Loader):
    """CholecT50 (Nwoye et al. 2022): 50 videos, frames at 1 fps with action triplets.

    Task ``cholect50-triplet``: gold is the sorted list of ``[instrument, verb, target]``
    names in the frame. ``every_s`` keeps one frame per ``every_s`` seconds of video
    (default 1 s: every annotated frame). Options: ``keep_empty`` (default False) also
    keeps frames without a triplet, with gold ``[]``.
    """

    name = "cholect50"
    tasks = ("cholect50-triplet",)
    layout = (
        "labels/VIDxx.json (CholecT50 label JSON) and videos/VIDxx/000000.png frames, "
        "in the folder or a CholecT50/ folder inside it"
    )
    default_every_s = 1.0

    def _load(
        self,
        root: Path,
        tasks: list[str],
        every_s: float | None,
        options: dict[str, Any],
        report: LoadReport,
    ) -> list[TaskRecord]:
        keep_empty = bool(take_options(self.name, options, {"keep_empty": False})["keep_empty"])
        base = _base(root)
        files = sorted((base / "labels").glob("*.json")) if (base / "labels").is_dir() else []
        if not files:
            raise self.missing(root, "CholecT50 label files (labels/VIDxx.json)")
        question = _QUESTION.format(
            instruments=", ".join(CHOLECT50_INSTRUMENTS),
            verbs=", ".join(CHOLECT50_VERBS),
            targets=", ".join(CHOLECT50_TARGETS),
        )
        items: list[TaskRecord] = []
        for path in files:
            items.extend(
                self._video_items(path, base, root, question, every_s or 1.0, keep_empty, report)
            )
        return items

    @staticmethod
    def _video_items(
        path: Path,
        base: Path,
        root: Path,
        question: str,
        every_s: float,
        keep_empty: bool,
        report: LoadReport,
    ) -> list[TaskRecord]:
        data = _read_labels(path)
        case = path.stem
        where = relative(path, root)
        fps = float(data.get("fps") or 1.0)
        names = triplet_names(data)
        phases = _categories(data, "phase") or dict(enumerate(CHOLECT50_PHASES))
        frames_dir = base / "videos" / case
        kept: list[tuple[int, list[int], int | None]] = []
        for frame in _frame_ids(path, data):
            ids, phase = _frame_triplets(path, str(frame), data["annotations"][str(frame)], names)
            if ids or keep_empty:
                kept.append((frame, ids, phase))
            else:
                reason = "frame without a triplet (keep_empty=True keeps it)"
                report.skip(where, reason, Skip.DESIGN)
        chosen = one_per_window([frame / fps for frame, _, _ in kept], every_s)
        reason = f"not the first frame of its {every_s:g} s window (every_s)"
        report.skip(where, reason, Skip.DESIGN, count=len(kept) - len(chosen))
        items = []
        for frame, ids, phase in (kept[index] for index in chosen):
            meta: dict[str, Any] = {"frame": frame, "triplet_ids": ids, "fps": fps}
            if phase is not None and phase in phases:
                meta["phase"] = phases[phase]
            items.append(
                TaskRecord(
                    id=f"cholect50-triplet/{case}/f{frame:06d}",
                    task="cholect50-triplet",
                    dataset="cholect50",
                    case=case,
                    media=Media(
                        frames=[relative(frames_dir / f"{frame:06d}.png", root)],
                        times=[frame / fps],
                    ),
                    question=question,
                    gold=[names[i] for i in ids],
                    meta=meta,
                )
            )
        return items

    def survey(self, root: Path, items: Sequence[TaskRecord]) -> Survey:
        """Frames on disk; each label file's frame ids against its ``num_frames`` and fps."""
        base = _base(root)
        frames = sorted((base / "videos").glob("*/*.png")) if (base / "videos").is_dir() else []
        survey = Survey(
            assumptions=[
                "labels/VIDxx.json frame id N is videos/VIDxx/{N:06d}.png, at N / fps s "
                "(fps from the file, 1 where absent)",
                "frame ids may be sparse; they must stay below the file's num_frames",
            ],
            frames=relative_all(frames, root),
            annotated=[],
        )
        annotated: list[str] = []
        for path in sorted((base / "labels").glob("*.json")):
            try:
                data = _read_labels(path)
                ids = _frame_ids(path, data)
            except AnnotationError:
                continue  # the load itself reports it
            folder = base / "videos" / path.stem
            annotated += [relative(folder / f"{frame:06d}.png", root) for frame in ids]
            if not ids:
                continue
            fps = float(data.get("fps") or 1.0)
            where = relative(path, root)
            if fps != 1.0:
                survey.notes.append(
                    TimingNote(path=where, problem=f"fps is {fps:g}, not the 1 fps of the release")
                )
            count = data.get("num_frames")
            beyond = [i for i in ids if isinstance(count, int) and i >= count]
            if beyond:
                note = f"frame ids from {beyond[0]} are at or past num_frames={count}"
            else:
                note = f"{len(ids)} annotated frame ids of {count} frames" if count else ""
            survey.timings.append(
                CaseTiming(
                    case=path.stem,
                    annotation=where,
                    last_frame=ids[-1],
                    annotated_s=(ids[-1] + 1) / fps,
                    assumed_fps=fps,
                    agrees=not beyond,
                    error=bool(beyond),
                    note=note,
                )
            )
        survey.annotated = annotated
        return survey
