"""Endoscapes2023 loader: the three critical-view-of-safety criteria of a frame.

Native layout (the ``endoscapes.zip`` release; the unpacked ``endoscapes/`` folder itself, or
a folder holding it)::

    endoscapes/all_metadata.csv     vid, frame, avg_cvs, C1, C2, C3, is_ds_keyframe,
                                    cvs_annotator_1, cvs_annotator_2, cvs_annotator_3, ...
    endoscapes/train/8_14775.jpg    frames named <vid>_<frame>.jpg, in train/ val/ test/
    endoscapes/val/...  endoscapes/test/...

``C1``-``C3`` are the three annotators' scores averaged; a criterion counts as achieved when
its average is at least 0.5. Rows without ``cvs_annotator_1`` are interpolated between the
annotated frames and are left out (by design) unless ``annotated_only=False``. Without
``all_metadata.csv``, other ``*metadata*.csv`` files with the vid/frame/C1-C3 columns in the
folder or its split folders (e.g. per split) are read the same way. Images are looked up in
the folder that holds the metadata (its split folders first), so the metadata and the
frames always come from one ``endoscapes/``. Frame numbers count 25 fps video frames, so
``meta.seconds`` is ``frame / 25``. Rows whose image is missing and rows that repeat a frame
are left out and reported.

    items = EndoscapesLoader().load(Path("data/endoscapes"))
    items[0].gold  # [False, True, False]
"""

from __future__ import annotations

import csv
from collections import Counter
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

from surgagent.evals.loaders._base import AnnotationError, Loader, relative, take_options
from surgagent.evals.loaders._report import LoadReport, Skip, Survey, relative_all, steps_of
from surgagent.evals.records import Media, TaskRecord
from surgagent.tools.vocabulary import CVS_CRITERIA

__all__ = ["EndoscapesLoader"]

_VIDEO_FPS = 25.0
_REQUIRED = ("vid", "frame", "C1", "C2", "C3")
_IMAGE_SUFFIXES = (".jpg", ".jpeg")  # the PNGs of the release are masks
_SPLITS = ("train", "val", "test")
_QUESTION = (
    "Assess the critical view of safety (CVS) in this laparoscopic cholecystectomy frame. "
    "For each criterion, answer Yes or No.\n"
    + "\n".join(f"Criterion {k}: {text}." for k, text in enumerate(CVS_CRITERIA, start=1))
    + "\nAnswer as: Criterion 1: Yes/No; Criterion 2: Yes/No; Criterion 3: Yes/No."
)


def _number(path: Path, line: int, column: str, value: str | None) -> float:
    try:
        return float(value or "")
    except ValueError:
        raise AnnotationError.at(path, line, f"{column}={value!r} is not a number.") from None


def _rows(path: Path, annotated_only: bool) -> Iterator[tuple[int, dict[str, Any] | None]]:
    """``(line, row)`` of the metadata rows, checked; ``row`` is None for one left out."""
    try:
        handle = path.open(encoding="utf-8-sig", newline="")
    except OSError as exc:
        raise AnnotationError.at(path, None, f"cannot read the metadata ({exc}).") from exc
    with handle:
        reader = csv.DictReader(handle)
        missing = [c for c in _REQUIRED if c not in (reader.fieldnames or [])]
        if missing:
            problem = f"missing column(s) {', '.join(missing)}; expected {', '.join(_REQUIRED)}."
            raise AnnotationError.at(path, 1, problem)
        filtered = annotated_only and "cvs_annotator_1" in (reader.fieldnames or [])
        for row in reader:
            line = reader.line_num
            if filtered and not (row.get("cvs_annotator_1") or "").strip():
                yield line, None
                continue
            yield line, row


def _image_index(base: Path) -> dict[str, Path]:
    """Frame file stem -> JPEG path, split folders (train/val/test) first, then the others."""
    index: dict[str, Path] = {}
    subfolders = sorted(p for p in base.iterdir() if p.is_dir())
    folders = [
        *[base / split for split in _SPLITS if (base / split).is_dir()],
        *[p for p in subfolders if p.name not in _SPLITS],
        base,
    ]
    for folder in folders:
        for path in sorted(folder.iterdir()):
            if path.suffix.lower() in _IMAGE_SUFFIXES:
                index.setdefault(path.stem, path)
    return index


class EndoscapesLoader(Loader):
    """Endoscapes2023 (Murali et al. 2023): CVS criteria of cholecystectomy frames.

    Task ``endoscapes-cvs``: gold ``[c1, c2, c3]`` booleans (average score >= 0.5);
    ``meta.scores`` keeps the averages, ``meta.split`` the frame's folder. Options:
    ``annotated_only`` (default True).
    """

    name = "endoscapes2023"
    tasks = ("endoscapes-cvs",)
    layout = (
        "all_metadata.csv (vid, frame, C1, C2, C3 columns) with frames <vid>_<frame>.jpg in "
        "train/ val/ test/, in the folder or an endoscapes/ folder inside it"
    )

    def _load(
        self,
        root: Path,
        tasks: list[str],
        every_s: float | None,
        options: dict[str, Any],
        report: LoadReport,
    ) -> list[TaskRecord]:
        settings = take_options(self.name, options, {"annotated_only": True})
        base = _base(root)
        files = list(_metadata_files(base))
        if not files:
            raise self.missing(root, "Endoscapes metadata (all_metadata.csv)")
        images = _image_index(base)
        items: dict[str, TaskRecord] = {}
        first: dict[str, str] = {}
        for path in files:
            where = relative(path, root)
            for line, row in _rows(path, bool(settings["annotated_only"])):
                if row is None:
                    reason = "interpolated row, no annotator (annotated_only=False keeps it)"
                    report.skip(where, reason, Skip.DESIGN)
                    continue
                vid = _number(path, line, "vid", row["vid"])
                frame = int(_number(path, line, "frame", row["frame"]))
                case = str(int(vid)) if vid.is_integer() else str(vid)
                image = images.get(f"{case}_{frame}")
                if image is None:
                    reason = "no frame image <vid>_<frame>.jpg in train/ val/ test/"
                    report.skip(
                        where, reason, Skip.NO_MEDIA, example=f"line {line}: {case}_{frame}"
                    )
                    continue
                scores = [_number(path, line, c, row[c]) for c in ("C1", "C2", "C3")]
                record = self._item(case, frame, scores, image, root, row)
                if record.id in items:
                    reason = "repeats a frame already read"
                    report.skip(
                        where, reason, Skip.DUPLICATE, example=f"line {line}: {first[record.id]}"
                    )
                    continue
                items[record.id] = record
                first[record.id] = f"{where} line {line}"
        return list(items.values())

    @staticmethod
    def _item(
        case: str, frame: int, scores: list[float], image: Path, root: Path, row: dict[str, Any]
    ) -> TaskRecord:
        meta: dict[str, Any] = {
            "frame": frame,
            "seconds": frame / _VIDEO_FPS,
            "scores": scores,
            "split": image.parent.name if image.parent.name in _SPLITS else "",
        }
        if row.get("is_ds_keyframe") not in (None, ""):
            meta["is_ds_keyframe"] = str(row["is_ds_keyframe"]).strip().lower() == "true"
        return TaskRecord(
            id=f"endoscapes-cvs/{case}/f{frame:06d}",
            task="endoscapes-cvs",
            dataset="endoscapes2023",
            case=case,
            media=Media(frames=[relative(image, root)], times=[frame / _VIDEO_FPS]),
            question=_QUESTION,
            gold=[score >= 0.5 for score in scores],
            meta=meta,
        )

    def survey(self, root: Path, items: Sequence[TaskRecord]) -> Survey:
        """Frame images on disk; the frame-rate assumption and the row steps seen."""
        base = _base(root)
        images = _image_index(base) if base.is_dir() else {}
        annotated = []
        for path in _metadata_files(base):
            for line, row in _rows(path, False):
                if row is not None:
                    vid = _number(path, line, "vid", row["vid"])
                    case = str(int(vid)) if vid.is_integer() else str(vid)
                    image = images.get(f"{case}_{int(_number(path, line, 'frame', row['frame']))}")
                    if image is not None:
                        annotated.append(relative(image, root))
        by_case: dict[str, list[int]] = {}
        for item in items:
            by_case.setdefault(item.case, []).append(int(item.meta["frame"]))
        steps: Counter[int] = Counter()
        for frames in by_case.values():
            steps.update(steps_of(frames))
        assumptions = [
            "frame numbers count 25 fps video frames (meta.seconds = frame / 25)",
            "<vid>_<frame>.jpg in train/ val/ test/ next to the metadata is row (vid, frame)",
        ]
        if steps:
            step, count = steps.most_common(1)[0]
            assumptions.append(
                f"seen: items of one video most often {step} frames "
                f"({step / _VIDEO_FPS:g} s) apart ({count} of {sum(steps.values())} steps)"
            )
        return Survey(
            assumptions=assumptions,
            frames=relative_all(images.values(), root),
            annotated=annotated,
        )


def _base(root: Path) -> Path:
    """The folder holding the metadata: ``root`` or its ``endoscapes/`` (the zip's folder)."""
    for folder in (root, root / "endoscapes", root / "Endoscapes2023", root / "endoscapes2023"):
        if any(_metadata_files(folder)):
            return folder
    return root


def _metadata_files(folder: Path) -> Iterator[Path]:
    """``all_metadata.csv``, else ``*metadata*.csv`` in ``folder`` and its split folders."""
    if not folder.is_dir():
        return
    preferred = folder / "all_metadata.csv"
    if preferred.is_file():
        yield preferred
        return
    yield from sorted(folder.glob("*metadata*.csv"))
    for split in _SPLITS:
        yield from sorted((folder / split).glob("*metadata*.csv"))
