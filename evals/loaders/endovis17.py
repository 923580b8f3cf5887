"""EndoVis2017 loader: locate each robotic instrument of a frame by its box.

Native layout (the Robotic Instrument Segmentation training release, unpacked as
``instrument_1_4_training/`` and ``instrument_5_8_training/``; datasets in the folder or
up to two levels down)::

    instrument_dataset_1/left_frames/frame000.png
    instrument_dataset_1/ground_truth/Left_Prograsp_Forceps_labels/frame000.png
    instrument_dataset_4/ground_truth/Large_Needle_Driver_Left_labels/frame000.png
    instrument_dataset_6/ground_truth/Prograsp_Forceps/frame000.png
    instrument_dataset_7/ground_truth/Left_Bipolar_Forceps/frame000.png

Every folder under ``ground_truth/`` is one instrument, named with or without the
``_labels`` suffix (datasets 6 and 7 drop it), its side (``Left``/``Right``) first or last.
Each holds one mask per frame (non-zero pixels = that instrument, whatever part values it
uses); the box is the extent of the non-zero pixels, normalised by the mask size to 0-1
(x right, y down), one item per (frame, instrument). Empty masks (the instrument is out of
view) and the catch-all ``Other`` folder are left out by design (``include_other=True``
keeps it); unreadable masks are left out and reported.

    items = EndoVis17Loader().load(Path("data/endovis2017"))
    items[0].gold  # {"label": "Prograsp Forceps", "box": [0.41, 0.2, 0.73, 0.66]}
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from surgagent.evals.loaders._base import Loader, case_names, relative, take_options
from surgagent.evals.loaders._report import LoadReport, Skip, Survey, relative_all
from surgagent.evals.records import Media, TaskRecord
from surgagent.tools.vocabulary import mask_folder_instrument

__all__ = [
    "ENDOVIS17_INSTRUMENTS",
    "ENDOVIS17_LABELS",
    "EndoVis17Loader",
    "instrument_name",
    "mask_box",
]

# The instrument types of EndoVis2017 (Allan et al. 2019), and the names its folders use
# for them. "Maryland Bipolar Forceps" (dataset 1) is a bipolar forceps.
ENDOVIS17_INSTRUMENTS = (
    "Bipolar Forceps",
    "Prograsp Forceps",
    "Large Needle Driver",
    "Vessel Sealer",
    "Grasping Retractor",
    "Monopolar Curved Scissors",
    "Ultrasound Probe",
)
# Every label a gold box may carry: the types, dataset 1's name for one, and the catch-all.
ENDOVIS17_LABELS = (*ENDOVIS17_INSTRUMENTS, "Maryland Bipolar Forceps", "Other")
_TYPES = {
    **{name: name for name in ENDOVIS17_INSTRUMENTS},
    "Maryland Bipolar Forceps": "Bipolar Forceps",
    "Other": "Other",
}


def instrument_name(folder: str) -> tuple[str, str | None]:
    """``("Large Needle Driver", "left")`` for ``Left_Large_Needle_Driver_labels``.

    The ``_labels`` suffix is optional and the side may come first or last
    (``Large_Needle_Driver_Left_labels`` gives the same); see `mask_folder_instrument`.
    """
    return mask_folder_instrument(folder)


def mask_box(path: Path) -> tuple[list[float], tuple[int, int]] | None:
    """The normalised ``[x1, y1, x2, y2]`` of a mask's non-zero pixels and its ``(w, h)``.

    Returns:
        None for an empty mask.

    Raises:
        OSError: If the image cannot be read (PIL's ``UnidentifiedImageError`` is one).
    """
    from PIL import Image

    with Image.open(path) as image:
        pixels = np.asarray(image.convert("L"))
    rows = np.flatnonzero(pixels.any(axis=1))
    columns = np.flatnonzero(pixels.any(axis=0))
    if not len(rows):
        return None
    height, width = pixels.shape
    box = [
        columns[0] / width,
        rows[0] / height,
        (columns[-1] + 1) / width,
        (rows[-1] + 1) / height,
    ]
    return [round(float(v), 4) for v in box], (width, height)


def _truth_folders(root: Path) -> list[Path]:
    """Every ``ground_truth`` folder of an instrument dataset, in the root or 1-2 levels down."""
    pattern = "ground_truth"
    found = {*root.glob(pattern), *root.glob(f"*/{pattern}"), *root.glob(f"*/*/{pattern}")}
    return sorted(folder for folder in found if folder.is_dir())


class EndoVis17Loader(Loader):
    """EndoVis2017 robotic instrument segmentation (Allan et al. 2019), as box localisation.

    Task ``endovis17-localization``: gold ``{"label": name, "box": [x1, y1, x2, y2]}``;
    ``meta.side`` is ``left``/``right`` where the folder names one (the question names the
    side then), ``meta.type`` the instrument type. Options: ``include_other`` (default
    False).
    """

    name = "endovis2017"
    tasks = ("endovis17-localization",)
    layout = (
        "instrument_dataset_N/ground_truth/<Instrument>[_labels]/frameXXX.png masks and "
        "instrument_dataset_N/left_frames/frameXXX.png, in the folder or up to two levels down"
    )

    def _load(
        self,
        root: Path,
        tasks: list[str],
        every_s: float | None,
        options: dict[str, Any],
        report: LoadReport,
    ) -> list[TaskRecord]:
        settings = take_options(self.name, options, {"include_other": False})
        folders = self._instrument_folders(root, bool(settings["include_other"]), report)
        if not folders:
            raise self.missing(root, "EndoVis2017 instrument masks")
        cases = case_names(sorted({folder.parent.parent for folder in folders}))
        items = []
        for folder in folders:
            items += self._folder_items(folder, cases[folder.parent.parent], root, report)
        return items

    @staticmethod
    def _instrument_folders(root: Path, include_other: bool, report: LoadReport) -> list[Path]:
        """The instrument folders to read; the others are counted in ``report``."""
        kept: list[Path] = []
        for truth in _truth_folders(root):
            named: dict[tuple[str, str | None], Path] = {}
            for entry in sorted(truth.iterdir()):
                where = relative(entry, root)
                if not entry.is_dir():
                    report.skip(where, "not an instrument folder", Skip.UNRECOGNISED)
                    continue
                label, side = instrument_name(entry.name)
                if label.lower() == "other" and not include_other:
                    reason = "catch-all 'Other' class (include_other=True keeps it)"
                    report.skip(where, reason, Skip.DESIGN)
                    continue
                if (label, side) in named:
                    first = named[(label, side)].name
                    report.skip(where, f"same instrument and side as {first}", Skip.DUPLICATE)
                    continue
                named[(label, side)] = entry
                kept.append(entry)
        return kept

    @staticmethod
    def _folder_items(folder: Path, case: str, root: Path, report: LoadReport) -> list[TaskRecord]:
        dataset = folder.parent.parent
        label, side = instrument_name(folder.name)
        named = f"{side} {label}" if side else label
        slug = "-".join(named.lower().split())
        items = []
        for mask in sorted(folder.iterdir()):
            where = relative(folder, root)
            if mask.suffix.lower() != ".png" or not mask.is_file():
                report.skip(relative(mask, root), "not a PNG mask", Skip.UNRECOGNISED)
                continue
            try:
                found = mask_box(mask)
            # ImportError: ultralytics, once imported, patches PIL to retry an unidentified
            # image with an optional HEIF plugin, which fails when that plugin is missing.
            except (OSError, ImportError) as exc:
                reason = f"unreadable mask ({type(exc).__name__})"
                report.skip(relative(mask, root), reason, Skip.UNREADABLE)
                continue
            if found is None:
                report.skip(where, "empty mask (the instrument is out of view)", Skip.DESIGN)
                continue
            box, (width, height) = found
            frame = relative(dataset / "left_frames" / mask.name, root)
            items.append(
                TaskRecord(
                    id=f"endovis17-localization/{case}/{mask.stem}-{slug}",
                    task="endovis17-localization",
                    dataset="endovis2017",
                    case=case,
                    media=Media(frames=[frame]),
                    question=(
                        f"Locate the {named} in this robotic surgery frame. Answer with its "
                        "bounding box as [x1, y1, x2, y2], normalised to 0-1 (x to the "
                        "right, y down)."
                    ),
                    gold={"label": label, "box": box},
                    meta={
                        "side": side,
                        "type": _TYPES.get(label),
                        "folder": folder.name,
                        "mask": relative(mask, root),
                        "width": width,
                        "height": height,
                    },
                )
            )
        return items

    def survey(self, root: Path, items: Sequence[TaskRecord]) -> Survey:
        """Left frames on disk; the assumption that masks and frames share file names."""
        truths = _truth_folders(root)
        frames = [path for truth in truths for path in (truth.parent / "left_frames").glob("*.png")]
        masks = [mask for truth in truths for mask in truth.glob("*/*.png")]
        annotated = {relative(mask.parents[2] / "left_frames" / mask.name, root) for mask in masks}
        return Survey(
            assumptions=[
                "ground_truth/<Instrument>[_labels]/frameXXX.png is the mask of "
                "left_frames/frameXXX.png (frames sampled at 2 Hz; no video)",
                "a mask's box is its non-zero pixels' extent over the mask's own size",
            ],
            frames=relative_all(frames, root),
            annotated=sorted(annotated),
        )
