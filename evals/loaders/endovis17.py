"""EndoVis2017 loader: locate each robotic instrument of a frame by its box.

Native layout (the Robotic Instrument Segmentation training release; datasets in the folder
or one level down, e.g. ``train/instrument_dataset_1``)::

    instrument_dataset_1/left_frames/frame000.png
    instrument_dataset_1/ground_truth/Left_Prograsp_Forceps_labels/frame000.png
    instrument_dataset_1/ground_truth/Maryland_Bipolar_Forceps_labels/frame000.png

Each ``<Instrument>_labels`` folder holds one mask per frame (non-zero pixels = that
instrument, whatever part values it uses); the box is the extent of the non-zero pixels,
normalised by the mask size to 0-1 (x right, y down), one item per (frame, instrument).
Empty masks and the catch-all ``Other_labels`` are skipped (``include_other=True`` keeps it).

    items = EndoVis17Loader().load(Path("data/endovis2017"))
    items[0].gold  # {"label": "Prograsp Forceps", "box": [0.41, 0.2, 0.73, 0.66]}
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from surgagent.evals.loaders._base import (
    AnnotationError,
    Loader,
    case_names,
    relative,
    take_options,
)
from surgagent.evals.records import Media, TaskRecord

__all__ = ["EndoVis17Loader", "instrument_name", "mask_box"]

_SIDES = ("left", "right")


def instrument_name(folder: str) -> tuple[str, str | None]:
    """``("Prograsp Forceps", "left")`` for ``Left_Prograsp_Forceps_labels``."""
    stem = folder[: -len("_labels")] if folder.endswith("_labels") else folder
    words = [w for w in stem.replace("-", "_").split("_") if w]
    side = words[0].lower() if words and words[0].lower() in _SIDES else None
    if side is not None:
        words = words[1:]
    return " ".join(words), side


def mask_box(path: Path) -> tuple[list[float], tuple[int, int]] | None:
    """The normalised ``[x1, y1, x2, y2]`` of a mask's non-zero pixels and its ``(w, h)``.

    Returns:
        None for an empty mask.

    Raises:
        AnnotationError: If the image cannot be read.
    """
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as image:
            pixels = np.asarray(image.convert("L"))
    except (OSError, UnidentifiedImageError) as exc:
        raise AnnotationError.at(path, None, f"cannot read the mask ({exc}).") from exc
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


class EndoVis17Loader(Loader):
    """EndoVis2017 robotic instrument segmentation (Allan et al. 2019), as box localisation.

    Task ``endovis17-localization``: gold ``{"label": name, "box": [x1, y1, x2, y2]}``;
    ``meta.side`` is ``left``/``right`` for the two same-type instruments a frame may
    hold (the question names the side then). Options: ``include_other`` (default False).
    """

    name = "endovis2017"
    tasks = ("endovis17-localization",)
    layout = (
        "instrument_dataset_N/ground_truth/<Instrument>_labels/frameXXX.png masks and "
        "instrument_dataset_N/left_frames/frameXXX.png, in the folder or one level down"
    )

    def _load(
        self, root: Path, tasks: list[str], every_s: float | None, options: dict[str, Any]
    ) -> list[TaskRecord]:
        settings = take_options(self.name, options, {"include_other": False})
        pattern = "ground_truth/*_labels"
        folders = sorted(
            {*root.glob(pattern), *root.glob(f"*/{pattern}"), *root.glob(f"*/*/{pattern}")}
        )
        if not settings["include_other"]:
            folders = [f for f in folders if not f.name.lower().startswith("other")]
        if not folders:
            raise self.missing(root, "EndoVis2017 instrument masks")
        cases = case_names(sorted({folder.parent.parent for folder in folders}))
        items = []
        for folder in folders:
            dataset = folder.parent.parent
            label, side = instrument_name(folder.name)
            named = f"{side} {label}" if side else label
            slug = "-".join(named.lower().split())
            for mask in sorted(folder.glob("*.png")):
                found = mask_box(mask)
                if found is None:
                    continue
                box, (width, height) = found
                frame = relative(dataset / "left_frames" / mask.name, root)
                items.append(
                    TaskRecord(
                        id=f"endovis17-localization/{cases[dataset]}/{mask.stem}-{slug}",
                        task="endovis17-localization",
                        dataset="endovis2017",
                        case=cases[dataset],
                        media=Media(frames=[frame]),
                        question=(
                            f"Locate the {named} in this robotic surgery frame. Answer with its "
                            "bounding box as [x1, y1, x2, y2], normalised to 0-1 (x to the "
                            "right, y down)."
                        ),
                        gold={"label": label, "box": box},
                        meta={
                            "side": side,
                            "mask": relative(mask, root),
                            "width": width,
                            "height": height,
                        },
                    )
                )
        return items
