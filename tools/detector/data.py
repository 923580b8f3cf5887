"""Detector training data: YOLO datasets, their ``data.yaml``, checking and writing them.

A YOLO dataset is ``images/<split>/x.jpg`` beside ``labels/<split>/x.txt`` (one
``class cx cy w h`` line per box, fractions 0-1) and a ``data.yaml`` naming the classes.
`surgagent.tools.detector.convert` writes such datasets from public annotation styles.

    summary = inspect_dataset(Path("data/m2cai/data.yaml"))  # every label line checked
    root, names, splits = read_data_yaml(Path("data/m2cai/data.yaml"))
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pydantic import BaseModel

from surgagent.tools.errors import ConfigError, suggest

__all__ = [
    "DEFAULT_CLASSES",
    "IMAGE_SUFFIXES",
    "DatasetItem",
    "YoloBox",
    "DatasetSummary",
    "class_index",
    "dataset_images",
    "image_size",
    "inspect_dataset",
    "label_path",
    "read_data_yaml",
    "stable_split",
    "write_dataset",
    "yolo_box",
]

log = logging.getLogger(__name__)

DEFAULT_CLASSES: tuple[str, ...] = (
    "Grasper",
    "Bipolar",
    "Hook",
    "Scissors",
    "Clipper",
    "Irrigator",
    "SpecimenBag",
)
"""Cholec80's seven tools, in its annotation order: the default detector vocabulary."""

IMAGE_SUFFIXES = frozenset({".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp"})
_SPLITS = ("train", "val")
VAL_FRACTION = 0.2  # share of images a hash split sends to validation

YoloBox = tuple[int, float, float, float, float]  # class, cx, cy, w, h (normalised)


class DatasetSummary(BaseModel):
    """What a YOLO dataset holds, per split; `inspect_dataset` builds it after checking labels."""

    data_yaml: Path
    root: Path
    class_names: list[str]
    images: dict[str, int]
    boxes: dict[str, int]
    boxes_per_class: dict[str, int]


# -- data.yaml ------------------------------------------------------------------------------


def _load_yaml(path: Path) -> dict[str, Any]:
    import yaml

    if not path.is_file():
        raise ConfigError(f"dataset file {path} does not exist; give the data.yaml of a dataset.")
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (yaml.YAMLError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{path} is not valid YAML ({exc}); fix or regenerate it.") from exc
    if not isinstance(data, dict):
        raise ConfigError(f"{path} must be a mapping with path, train, val and names keys.")
    return data


def _names_of(data: dict[str, Any], path: Path) -> list[str]:
    names = data.get("names")
    if isinstance(names, dict):
        try:
            order = sorted(names, key=int)
        except (TypeError, ValueError):
            raise ConfigError(f"{path}: names keys must be class numbers 0, 1, ...") from None
        if [int(k) for k in order] != list(range(len(order))):
            raise ConfigError(f"{path}: names must number the classes 0..{len(order) - 1}.")
        names = [names[k] for k in order]
    if not isinstance(names, list) or not names or not all(isinstance(n, str) for n in names):
        raise ConfigError(f"{path}: names must list the class names, e.g. names: [Grasper, Hook].")
    if "nc" in data and data["nc"] != len(names):
        raise ConfigError(
            f"{path}: nc is {data['nc']} but names lists {len(names)} classes; make them agree."
        )
    return list(names)


def read_data_yaml(path: Path) -> tuple[Path, list[str], dict[str, list[Path]]]:
    """Read a YOLO ``data.yaml``: its root folder, class names and image sources per split.

    Relative paths are taken from the YAML's own folder (``path:`` first, if given).

    Returns:
        ``(root, class_names, {"train": [...], "val": [...]})``; sources are folders or
        ``.txt`` lists of images.

    Raises:
        ConfigError: If the file is missing or malformed, or a split is missing.
    """
    path = Path(path).expanduser().resolve()
    data = _load_yaml(path)
    names = _names_of(data, path)
    root = Path(str(data.get("path") or path.parent)).expanduser()
    root = root if root.is_absolute() else (path.parent / root).resolve()
    splits: dict[str, list[Path]] = {}
    for split in _SPLITS:
        value = data.get(split)
        if not value:
            raise ConfigError(f"{path} has no {split!r} entry; name the {split} images folder.")
        items = value if isinstance(value, list) else [value]
        splits[split] = [p if (p := Path(str(v))).is_absolute() else root / p for v in items]
    return root, names, splits


def dataset_images(source: Path) -> list[Path]:
    """The images of one split source: a folder (searched recursively) or a ``.txt`` list.

    Raises:
        ConfigError: If the source does not exist.
    """
    if source.is_dir():
        return sorted(p for p in source.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES)
    if source.is_file() and source.suffix == ".txt":
        lines = source.read_text(encoding="utf-8").split()
        return [p if (p := Path(x)).is_absolute() else source.parent / p for x in lines]
    raise ConfigError(f"image source {source} does not exist; check the dataset's data.yaml.")


def label_path(image: Path) -> Path:
    """Where YOLO looks for an image's labels: ``.../images/x.jpg`` -> ``.../labels/x.txt``."""
    text = str(image)
    marker = f"{os.sep}images{os.sep}"
    head, sep, tail = text.rpartition(marker)
    if not sep:
        return image.with_suffix(".txt")
    return Path(f"{head}{os.sep}labels{os.sep}{tail}").with_suffix(".txt")


def _check_label_line(line: str, nc: int, where: str) -> int:
    parts = line.split()
    try:
        cls, values = int(parts[0]), [float(v) for v in parts[1:]]
    except ValueError:
        raise ConfigError(f"{where}: {line!r} is not 'class cx cy w h' numbers.") from None
    if len(values) != 4 and (len(values) < 6 or len(values) % 2):
        raise ConfigError(f"{where}: expected 'class cx cy w h' (or a polygon), got {line!r}.")
    if not 0 <= cls < nc:
        raise ConfigError(
            f"{where}: class {cls} does not exist; the dataset names {nc} classes (0..{nc - 1}). "
            "Fix the label or the names in data.yaml."
        )
    if any(v < -1e-3 or v > 1 + 1e-3 for v in values):
        raise ConfigError(f"{where}: coordinates must be fractions 0-1 of the image, got {line!r}.")
    return cls


def inspect_dataset(data_yaml: Path) -> DatasetSummary:
    """Check a YOLO dataset (every label line) and count its images and boxes.

    Raises:
        ConfigError: If the YAML, a split folder or a label line is malformed, a class id is
            out of range, or a split has no images.
    """
    root, names, splits = read_data_yaml(data_yaml)
    images: dict[str, int] = {}
    boxes: dict[str, int] = {}
    per_class: Counter[str] = Counter()
    for split, sources in splits.items():
        files = [image for source in sources for image in dataset_images(source)]
        if not files:
            raise ConfigError(f"the {split} split of {data_yaml} has no images ({sources[0]}).")
        images[split], boxes[split] = len(files), 0
        for image in files:
            labels = label_path(image)
            if not labels.is_file():
                continue  # an image without a label file is a negative example
            for number, line in enumerate(labels.read_text(encoding="utf-8").splitlines(), 1):
                if line.strip():
                    cls = _check_label_line(line, len(names), f"{labels}:{number}")
                    per_class[names[cls]] += 1
                    boxes[split] += 1
    return DatasetSummary(
        data_yaml=Path(data_yaml).resolve(),
        root=root,
        class_names=names,
        images=images,
        boxes=boxes,
        boxes_per_class={name: per_class[name] for name in names},
    )


# -- writing datasets -------------------------------------------------------------


def _norm(name: str) -> str:
    return "".join(ch for ch in name.lower() if ch.isalnum())


def class_index(name: str, class_names: Sequence[str], where: str) -> int:
    """The index of ``name`` in ``class_names``, ignoring case, spaces, ``_`` and ``-``.

    Raises:
        ConfigError: If no class matches; the message lists them and suggests the closest.
    """
    wanted = _norm(name)
    for index, known in enumerate(class_names):
        if _norm(known) == wanted:
            return index
    raise ConfigError(
        f"{where}: class {name!r} is not one of {', '.join(class_names)}."
        f"{suggest(name, class_names)} Pass the dataset's class names (--classes) to convert it."
    )


@dataclass
class DatasetItem:
    """One image to write, its boxes and split; items of one ``group`` share a split."""

    image: Path
    name: str
    split: str
    boxes: list[YoloBox] = field(default_factory=list)
    group: str = ""  # items of one group (a video) always share a split


def stable_split(key: str, val_fraction: float = VAL_FRACTION) -> str:
    """A stable ``"train"``/``"val"`` choice from a key (a frame name or a whole video)."""
    digest = hashlib.sha1(key.encode("utf-8")).digest()
    return "val" if int.from_bytes(digest[:4], "big") / 2**32 < val_fraction else "train"


def yolo_box(cls: int, x1: float, y1: float, x2: float, y2: float, w: float, h: float) -> YoloBox:
    """A pixel box ``x1, y1, x2, y2`` in a ``w x h`` image as a YOLO label (clipped)."""
    x1, x2 = max(0.0, min(x1, w)), max(0.0, min(x2, w))
    y1, y2 = max(0.0, min(y1, h)), max(0.0, min(y2, h))
    return cls, (x1 + x2) / 2 / w, (y1 + y2) / 2 / h, (x2 - x1) / w, (y2 - y1) / h


def _place(source: Path, target: Path) -> None:
    if target.exists():
        target.unlink()
    try:
        os.link(source, target)
    except OSError:  # another file system, or links not allowed
        shutil.copy2(source, target)


def write_dataset(items: list[DatasetItem], out_dir: Path, class_names: Sequence[str]) -> Path:
    """Write images (hard-linked, else copied), labels and ``data.yaml`` under ``out_dir``.

    A split left empty by hashing gets the last (val) or first (train) item's group.

    Returns:
        The ``data.yaml`` (JSON, which is valid YAML).

    Raises:
        ConfigError: If there are no items.
    """
    if not items:
        raise ConfigError("no annotated images were found to convert; check the source folder.")
    for wanted, pick in (("val", items[-1]), ("train", items[0])):
        # A small source whose hash split left one side empty still gets both splits.
        if len(items) > 1 and all(item.split != wanted for item in items):
            for item in items:
                if (item.group or item.name) == (pick.group or pick.name):
                    item.split = wanted
    out_dir = out_dir.expanduser().resolve()
    for split in _SPLITS:
        (out_dir / "images" / split).mkdir(parents=True, exist_ok=True)
        (out_dir / "labels" / split).mkdir(parents=True, exist_ok=True)
    for item in items:
        _place(item.image, out_dir / "images" / item.split / f"{item.name}{item.image.suffix}")
        rows = [
            f"{c} {cx:.6f} {cy:.6f} {w:.6f} {h:.6f}"
            for c, cx, cy, w, h in item.boxes
            if w > 0 and h > 0
        ]
        text = "\n".join(rows) + ("\n" if rows else "")
        (out_dir / "labels" / item.split / f"{item.name}.txt").write_text(text, encoding="utf-8")
    data = {
        "path": str(out_dir),
        "train": "images/train",
        "val": "images/val",
        "nc": len(class_names),
        "names": dict(enumerate(class_names)),
    }
    path = out_dir / "data.yaml"
    path.write_text(json.dumps(data, indent=1) + "\n", encoding="utf-8")  # JSON is valid YAML
    log.info("wrote %d images to %s", len(items), out_dir)
    return path


def image_size(path: Path) -> tuple[int, int]:
    """``(width, height)`` of an image file.

    Raises:
        ConfigError: If it cannot be read.
    """
    from PIL import Image

    try:
        with Image.open(path) as image:
            return image.size
    except OSError as exc:
        raise ConfigError(f"{path} is not a readable image ({exc}).") from exc
