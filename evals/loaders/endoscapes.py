"""Endoscapes2023 loader: the three critical-view-of-safety criteria of a frame.

Native layout (the ``endoscapes.zip`` release, unpacked; the folder itself or an
``endoscapes/`` inside it)::

    all_metadata.csv        vid, frame, avg_cvs, C1, C2, C3, is_ds_keyframe,
                            cvs_annotator_1, cvs_annotator_2, cvs_annotator_3, ...
    train/8_14775.jpg       frames named <vid>_<frame>.jpg, in train/ val/ test/ (...)

``C1``-``C3`` are the three annotators' scores averaged; a criterion counts as achieved when
its average is at least 0.5. Rows without ``cvs_annotator_1`` are interpolated between the
annotated frames and are skipped unless ``annotated_only=False``. Another
``*metadata*.csv`` with the vid/frame/C1-C3 columns (e.g. per split) is read the same way.
Frame numbers count 25 fps video frames, so ``meta.seconds`` is ``frame / 25``.

    items = EndoscapesLoader().load(Path("data/endoscapes"))
    items[0].gold  # [False, True, False]
"""

from __future__ import annotations

import csv
import logging
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from surgagent.evals.loaders._base import AnnotationError, Loader, relative, take_options
from surgagent.evals.records import Media, TaskRecord
from surgagent.tools.vocabulary import CVS_CRITERIA

__all__ = ["EndoscapesLoader"]

log = logging.getLogger(__name__)

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


def _rows(path: Path, annotated_only: bool) -> Iterator[tuple[int, dict[str, Any]]]:
    """``(line, row)`` of the metadata rows to use, checked."""
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
    ``meta.scores`` keeps the averages, ``meta.split`` the frame's folder. Rows whose frame
    image cannot be found are skipped (logged). Options: ``annotated_only`` (default True).
    """

    name = "endoscapes2023"
    tasks = ("endoscapes-cvs",)
    layout = (
        "all_metadata.csv (vid, frame, C1, C2, C3 columns) with frames <vid>_<frame>.jpg in "
        "train/ val/ test/, in the folder or an endoscapes/ folder inside it"
    )

    def _load(
        self, root: Path, tasks: list[str], every_s: float | None, options: dict[str, Any]
    ) -> list[TaskRecord]:
        settings = take_options(self.name, options, {"annotated_only": True})
        base = next(
            (f for f in (root, root / "endoscapes") if any(_metadata_files(f))),
            root,
        )
        files = list(_metadata_files(base))
        if not files:
            raise self.missing(root, "Endoscapes metadata (all_metadata.csv)")
        images = _image_index(base)
        items: dict[str, TaskRecord] = {}
        skipped = 0
        for path in files:
            for line, row in _rows(path, bool(settings["annotated_only"])):
                vid = _number(path, line, "vid", row["vid"])
                frame = int(_number(path, line, "frame", row["frame"]))
                case = str(int(vid)) if vid.is_integer() else str(vid)
                image = images.get(f"{case}_{frame}")
                if image is None:
                    skipped += 1
                    continue
                scores = [_number(path, line, c, row[c]) for c in ("C1", "C2", "C3")]
                record = self._item(case, frame, scores, image, root, row)
                items.setdefault(record.id, record)
        if skipped:
            log.warning("endoscapes: skipped %d rows whose frame image is missing", skipped)
        if not items and skipped:
            raise ValueError(
                f"{self.name}: none of the {skipped} annotated frames has an image under "
                f"{base}; expected <vid>_<frame>.jpg in train/ val/ test/."
            )
        return list(items.values())

    @staticmethod
    def _item(
        case: str, frame: int, scores: list[float], image: Path, root: Path, row: dict[str, Any]
    ) -> TaskRecord:
        meta: dict[str, Any] = {
            "frame": frame,
            "seconds": frame / _VIDEO_FPS,
            "scores": scores,
            "split": image.parent.name if image.parent != root else "",
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


def _metadata_files(folder: Path) -> Iterator[Path]:
    if not folder.is_dir():
        return
    preferred = folder / "all_metadata.csv"
    if preferred.is_file():
        yield preferred
        return
    yield from sorted(folder.glob("*metadata*.csv"))
    for split in sorted(p for p in folder.iterdir() if p.is_dir()):
        yield from sorted(split.glob("*metadata*.csv"))
