"""Converters from public instrument annotations to YOLO detection datasets.

Pascal VOC XML (m2cai16-tool-locations), COCO JSON (boxes, polygons or uncompressed RLE;
e.g. CholecInstanceSeg exports) and per-instrument masks (EndoVis2017: one mask png per
instrument and frame, one box per connected component). Images are hard-linked (copied
across file systems), never re-encoded.

    data_yaml = convert_voc(Path("m2cai16-tool-locations"), Path("data/m2cai"))
    data_yaml = convert_masks(Path("endovis17/train"), Path("data/endovis"))
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from surgagent.tools.detector.data import (
    DEFAULT_CLASSES,
    DatasetItem,
    YoloBox,
    class_index,
    image_size,
    stable_split,
    write_dataset,
    yolo_box,
)
from surgagent.tools.errors import ConfigError
from surgagent.tools.vocabulary import mask_folder_instrument

__all__ = ["convert_coco", "convert_masks", "convert_voc", "mask_class_names"]


# -- Pascal VOC (m2cai16-tool-locations) ----------------------------------------------------


def _xml_number(node: Any, tag: str, where: str) -> float:
    text = node.findtext(tag)
    try:
        return float(text)
    except (TypeError, ValueError):
        raise ConfigError(f"{where}: <{tag}> is missing or not a number ({text!r}).") from None


def _voc_sets(src: Path) -> dict[str, str]:
    sets = src / "ImageSets" / "Main"
    chosen: dict[str, str] = {}
    for split, names in (("train", ("train", "trainval")), ("val", ("val", "test"))):
        for name in names:
            listing = sets / f"{name}.txt"
            if listing.is_file():
                chosen.update({stem: split for stem in listing.read_text().split()})
                break
    return chosen


def _voc_image(src: Path, xml: Path, filename: str | None) -> Path:
    stem = Path(filename).stem if filename else xml.stem
    for folder in (src / "JPEGImages", xml.parent, src / "images"):
        if filename and (folder / filename).is_file():
            return folder / filename
        for suffix in (".jpg", ".jpeg", ".png"):
            if (folder / f"{stem}{suffix}").is_file():
                return folder / f"{stem}{suffix}"
    raise ConfigError(f"{xml}: its image {filename or stem!r} is not in {src / 'JPEGImages'}.")


def convert_voc(src: Path, out_dir: Path, *, class_names: Sequence[str] = DEFAULT_CLASSES) -> Path:
    """Convert a Pascal VOC dataset (``Annotations/*.xml``, ``JPEGImages/``) to YOLO format.

    The split follows ``ImageSets/Main/{train,trainval}.txt`` and ``{val,test}.txt`` where
    present, otherwise a stable hash of each file name (about 20% validation).

    Args:
        src: The VOC folder (m2cai16-tool-locations layout).
        out_dir: Where the YOLO dataset is written.
        class_names: The vocabulary; object names match it ignoring case and separators.

    Returns:
        The written ``data.yaml``.

    Raises:
        ConfigError: If there are no XML files, one is malformed, an image is missing, or an
            object has a class outside ``class_names``.
    """
    import xml.etree.ElementTree as ElementTree

    src = Path(src).expanduser()
    annotations = src / "Annotations" if (src / "Annotations").is_dir() else src
    xmls = sorted(annotations.rglob("*.xml")) if src.is_dir() else []
    if not xmls:
        raise ConfigError(
            f"no VOC .xml annotations under {src}; give the folder with Annotations/."
        )
    sets = _voc_sets(src)
    items = []
    for xml in xmls:
        try:
            root = ElementTree.parse(xml).getroot()
        except ElementTree.ParseError as exc:
            raise ConfigError(f"{xml} is not valid XML ({exc}).") from exc
        image = _voc_image(src, xml, root.findtext("filename"))
        size = root.find("size")
        w, h = (
            (0.0, 0.0)
            if size is None
            else (_xml_number(size, "width", str(xml)), _xml_number(size, "height", str(xml)))
        )
        if w <= 0 or h <= 0:
            w, h = image_size(image)
        item = DatasetItem(image, xml.stem, sets.get(xml.stem) or stable_split(xml.stem))
        for obj in root.iter("object"):
            cls = class_index(obj.findtext("name") or "", class_names, str(xml))
            box = obj.find("bndbox")
            if box is None:
                raise ConfigError(f"{xml}: an <object> has no <bndbox>.")
            x1, y1, x2, y2 = (
                _xml_number(box, t, str(xml)) for t in ("xmin", "ymin", "xmax", "ymax")
            )
            item.boxes.append(yolo_box(cls, x1 - 1, y1 - 1, x2, y2, w, h))  # VOC is 1-based
        items.append(item)
    return write_dataset(items, out_dir, class_names)


# -- COCO JSON ------------------------------------------------------------------------------


def _rle_box(rle: dict[str, Any], where: str) -> tuple[float, float, float, float]:
    counts, (h, w) = rle.get("counts"), rle.get("size", (0, 0))
    if not isinstance(counts, list):
        raise ConfigError(f"{where}: compressed RLE needs a bbox; export the boxes with it.")
    import numpy as np

    if sum(counts) != h * w:
        raise ConfigError(f"{where}: RLE counts add up to {sum(counts)} pixels, not {h}x{w}.")
    flat = np.zeros(h * w, dtype=bool)
    position = 0
    for k, run in enumerate(counts):
        if k % 2:
            flat[position : position + run] = True
        position += run
    ys, xs = np.nonzero(flat.reshape(w, h).T)  # COCO RLE runs down columns
    if not len(xs):
        return 0.0, 0.0, 0.0, 0.0
    return float(xs.min()), float(ys.min()), float(xs.max() + 1), float(ys.max() + 1)


def _coco_box(ann: dict[str, Any], where: str) -> tuple[float, float, float, float]:
    bbox, seg = ann.get("bbox"), ann.get("segmentation")
    if isinstance(bbox, list) and len(bbox) == 4 and bbox[2] > 0 and bbox[3] > 0:
        x, y, w, h = (float(v) for v in bbox)
        return x, y, x + w, y + h
    if isinstance(seg, list) and seg and all(isinstance(p, list) and len(p) >= 6 for p in seg):
        xs = [float(v) for polygon in seg for v in polygon[0::2]]
        ys = [float(v) for polygon in seg for v in polygon[1::2]]
        return min(xs), min(ys), max(xs), max(ys)
    if isinstance(seg, dict):
        return _rle_box(seg, where)
    raise ConfigError(f"{where}: annotation {ann.get('id')} has neither a bbox nor a segmentation.")


def _coco_items(
    path: Path, images_dir: Path | None, class_names: Sequence[str]
) -> list[DatasetItem]:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
        images, annotations = data["images"], data["annotations"]
        categories = {c["id"]: c["name"] for c in data["categories"]}
    except (ValueError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{path} is not valid JSON ({exc}).") from exc
    except (KeyError, TypeError) as exc:
        raise ConfigError(
            f"{path} is not COCO JSON: missing {exc}; it needs images, annotations and categories."
        ) from None
    folders = [f for f in (images_dir, path.parent, path.parent / "images") if f is not None]
    lowered = path.stem.lower()
    fixed = (
        "val" if "val" in lowered or "test" in lowered else "train" if "train" in lowered else ""
    )
    items: dict[Any, DatasetItem] = {}
    sizes: dict[Any, tuple[float, float]] = {}
    for info in images:
        name = str(info.get("file_name", ""))
        if "id" not in info or not name:
            raise ConfigError(f"{path}: an entry of images lacks its id or file_name: {info}.")
        found = next((f / name for f in folders if (f / name).is_file()), None)
        if found is None:
            raise ConfigError(
                f"{path}: image {name!r} is in none of {[str(f) for f in folders]}; "
                "pass the images folder (--images)."
            )
        key = name.replace("/", "_").rsplit(".", 1)[0]
        items[info["id"]] = DatasetItem(found, key, fixed or stable_split(key))
        sizes[info["id"]] = (info.get("width") or 0, info.get("height") or 0)
    for ann in annotations:
        where = f"{path} annotation {ann.get('id')}"
        item = items.get(ann.get("image_id"))
        if item is None:
            raise ConfigError(f"{where}: image_id {ann.get('image_id')} is not in images.")
        if ann.get("category_id") not in categories:
            raise ConfigError(f"{where}: category_id {ann.get('category_id')} is not listed.")
        cls = class_index(categories[ann["category_id"]], class_names, where)
        w, h = sizes[ann["image_id"]]
        if not w or not h:
            w, h = sizes[ann["image_id"]] = image_size(item.image)
        item.boxes.append(yolo_box(cls, *_coco_box(ann, where), w, h))
    return list(items.values())


def convert_coco(
    src: Path,
    out_dir: Path,
    *,
    class_names: Sequence[str] = DEFAULT_CLASSES,
    images_dir: Path | None = None,
) -> Path:
    """Convert COCO JSON annotations (boxes, polygons or RLE masks) to YOLO format.

    ``src`` is one JSON file or a folder of them; a file whose name says ``train`` /
    ``val`` / ``test`` goes to that split, others are split by a stable hash of the image
    name. Images are looked up in ``images_dir``, beside the JSON, or in ``images/`` there.

    Args:
        src: A COCO JSON file, or a folder of them.
        out_dir: Where the YOLO dataset is written.
        class_names: The vocabulary; category names match it ignoring case and separators.
        images_dir: Folder holding the images named by ``file_name``.

    Returns:
        The written ``data.yaml``.

    Raises:
        ConfigError: If the JSON is not COCO, an image is missing, an annotation has no
            usable geometry, or a category is outside ``class_names``.
    """
    src = Path(src).expanduser()
    files = sorted(src.glob("*.json")) if src.is_dir() else [src]
    if not files or not files[0].is_file():
        raise ConfigError(f"no COCO .json file at {src}; give the annotation file or its folder.")
    items = [item for path in files for item in _coco_items(path, images_dir, class_names)]
    return write_dataset(items, out_dir, class_names)


# -- instrument masks (EndoVis2017) ---------------------------------------------------------

_IMAGE_FOLDERS = ("left_frames", "images", "frames")
_MASK_FOLDERS = ("ground_truth", "masks")


def _mask_class(folder: str) -> str:
    """``Left_Prograsp_Forceps_labels`` (or ``Prograsp_Forceps_Left``) -> ``Prograsp_Forceps``."""
    return mask_folder_instrument(folder)[0].replace(" ", "_")


def _components(mask: Any, min_area: int) -> list[tuple[int, int, int, int]]:
    from scipy import ndimage

    labelled, _count = ndimage.label(mask)
    boxes = []
    for k, found in enumerate(ndimage.find_objects(labelled), 1):
        if found is not None and int((labelled[found] == k).sum()) >= min_area:
            ys, xs = found
            boxes.append((xs.start, ys.start, xs.stop, ys.stop))
    return boxes


def _read_mask(path: Path) -> Any:
    import numpy as np
    from PIL import Image

    try:
        with Image.open(path) as image:
            if image.mode in ("1", "L", "P", "I", "I;16"):  # values (or palette indices) as is
                mask = np.asarray(image)
            else:  # colour masks: any lit channel is instrument
                mask = np.asarray(image.convert("RGB")).max(axis=-1)
    except OSError as exc:
        raise ConfigError(f"{path} is not a readable mask image ({exc}).") from exc
    return mask


def _mask_units(src: Path) -> list[tuple[Path, Path]]:
    """``(image folder, mask folder)`` of every video under ``src`` (or ``src`` itself)."""
    units = []
    for folder in [src, *sorted(p for p in src.iterdir() if p.is_dir())]:
        images = next((folder / n for n in _IMAGE_FOLDERS if (folder / n).is_dir()), None)
        masks = next((folder / n for n in _MASK_FOLDERS if (folder / n).is_dir()), None)
        if images is not None and masks is not None:
            units.append((images, masks))
    return units


def _mask_boxes(
    masks: Path, stem: str, size: tuple[int, int], class_names: Sequence[str], min_frac: float
) -> list[YoloBox]:
    w, h = size
    min_area = max(1, round(min_frac * w * h))
    boxes: list[YoloBox] = []
    for folder in sorted(p for p in masks.iterdir() if p.is_dir()):
        found = [folder / f"{stem}{s}" for s in (".png", ".jpg", ".bmp", ".tif")]
        mask_file = next((p for p in found if p.is_file()), None)
        if mask_file is None:
            continue
        mask = _read_mask(mask_file)
        if mask.shape[:2] != (h, w):
            raise ConfigError(f"{mask_file} is {mask.shape[1]}x{mask.shape[0]}, its frame {w}x{h}.")
        cls = class_index(_mask_class(folder.name), class_names, str(folder))
        boxes += [yolo_box(cls, *b, w, h) for b in _components(mask > 0, min_area)]
    flat = next(
        (
            masks / f"{stem}{s}"
            for s in (".png", ".bmp", ".tif")
            if (masks / f"{stem}{s}").is_file()
        ),
        None,
    )
    if flat is not None:  # one mask per frame whose pixel values are class numbers + 1
        mask = _read_mask(flat)
        for value in sorted(int(v) for v in set(mask.ravel().tolist()) if v):
            if value > len(class_names):
                raise ConfigError(f"{flat}: value {value} is past the {len(class_names)} classes.")
            boxes += [yolo_box(value - 1, *b, w, h) for b in _components(mask == value, min_area)]
    return boxes


def mask_class_names(src: Path) -> list[str]:
    """The instrument classes named by the mask folders under ``src`` (sorted, unique)."""
    src = Path(src).expanduser()
    if not src.is_dir():
        return []
    names = {
        _mask_class(folder.name)
        for _, masks in _mask_units(src)
        for folder in masks.iterdir()
        if folder.is_dir()
    }
    return sorted(names)


def convert_masks(
    src: Path,
    out_dir: Path,
    *,
    class_names: Sequence[str] | None = None,
    min_area: float = 0.0005,
) -> Path:
    """Convert instrument masks to YOLO boxes (one box per connected component).

    Layout (EndoVis2017): ``src/<video>/left_frames/<frame>.png`` with
    ``src/<video>/ground_truth/<Left_Class_Name_labels>/<frame>.png`` binary masks (any
    non-zero pixel is instrument); ``images/`` and ``masks/`` work too, as does a single
    ``masks/<frame>.png`` whose pixel values are class numbers + 1. Whole videos go to one
    split, so neighbouring frames never straddle train and val.

    Args:
        src: The dataset folder (or one video folder).
        out_dir: Where the YOLO dataset is written.
        class_names: The vocabulary; by default the class folder names found
            (``Left_Prograsp_Forceps_labels`` -> ``Prograsp_Forceps``).
        min_area: Components smaller than this fraction of the frame are dropped (specks).

    Returns:
        The written ``data.yaml``.

    Raises:
        ConfigError: If no frame/mask folders are found, a mask is unreadable or of another
            size than its frame, or a class is outside ``class_names``.
    """
    src = Path(src).expanduser()
    units = _mask_units(src) if src.is_dir() else []
    if not units:
        raise ConfigError(
            f"no frames+masks folders under {src}; expected <video>/left_frames (or images) "
            "beside <video>/ground_truth (or masks)."
        )
    names = list(class_names) if class_names else mask_class_names(src) or list(DEFAULT_CLASSES)
    from surgagent.tools.video.decode import list_images

    items = []
    for images, masks in units:
        video = images.parent.name
        split = stable_split(video) if len(units) > 1 else ""
        for image in list_images(images):
            key = f"{video}_{image.stem}"
            boxes = _mask_boxes(masks, image.stem, image_size(image), names, min_area)
            group = video if split else ""
            items.append(DatasetItem(image, key, split or stable_split(key), boxes, group))
    return write_dataset(items, out_dir, names)
