"""Training and evaluating the YOLO instrument detector on YOLO-format datasets.

Training checks the dataset first (every label line), writes the resolved ``data.yaml`` into
the run folder and runs ultralytics offline; on the CPU without workers or mixed precision.

    weights = train_detector(Path("m2cai/data.yaml"), epochs=50, imgsz=640, out_dir=Path("runs/m2"))
    metrics = evaluate_detector(weights, Path("m2cai/data.yaml"))
"""

from __future__ import annotations

import json
import logging
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

from pydantic import BaseModel

from surgagent.tools.cache import atomic_write_text
from surgagent.tools.detector.data import inspect_dataset, read_data_yaml
from surgagent.tools.errors import ConfigError

__all__ = ["DetectorMetrics", "evaluate_detector", "train_detector"]

log = logging.getLogger(__name__)


def train_detector(
    data_yaml: Path,
    *,
    epochs: int,
    imgsz: int,
    out_dir: Path,
    device: str = "cpu",
    batch: int = 16,
    model: str | Path = "yolo11n.yaml",
    progress: Callable[[int, int], None] | None = None,
    options: dict[str, Any] | None = None,
) -> Path:
    """Train a YOLO detector on a YOLO dataset (checked first) and return the best weights.

    Args:
        data_yaml: The dataset's ``data.yaml`` (a converter writes one).
        epochs: Training epochs.
        imgsz: Training image size (a multiple of 32).
        out_dir: The run folder: weights in ``out_dir/weights``, the dataset file used in
            ``out_dir/data.yaml``.
        device: ``cpu``, ``cuda``, ``0``, ``mps``; on the CPU mixed precision is off.
        batch: Images per batch.
        model: Architecture YAML (``yolo11n.yaml`` trains from scratch) or ``.pt`` weights
            to fine-tune (their classes are replaced by the dataset's).
        progress: Called as ``progress(epoch, epochs)`` after each epoch.
        options: More ultralytics training arguments (``lr0``, ``mosaic``, ``patience``...).

    Returns:
        The best weights (``out_dir/weights/best.pt``; ``last.pt`` if there is no best).

    Raises:
        ConfigError: If the dataset is malformed (see `inspect_dataset`), a setting is out
            of range, or the model cannot be built.
    """
    from surgagent.tools.detector.yolo import train_yolo

    if epochs < 1 or imgsz < 32 or imgsz % 32 or batch < 1:
        raise ConfigError(
            f"epochs={epochs}, imgsz={imgsz}, batch={batch}: epochs and batch must be at least 1 "
            "and imgsz a multiple of 32 (e.g. 640)."
        )
    summary = inspect_dataset(data_yaml)
    root, names, splits = read_data_yaml(data_yaml)
    out_dir = Path(out_dir).expanduser().resolve()
    out_dir.mkdir(parents=True, exist_ok=True)
    resolved = {
        "path": str(root),
        "train": [str(p) for p in splits["train"]],
        "val": [str(p) for p in splits["val"]],
        "nc": len(names),
        "names": dict(enumerate(names)),
    }
    data_file = atomic_write_text(out_dir / "data.yaml", json.dumps(resolved, indent=1))
    on_cpu = device.lower() == "cpu"
    args: dict[str, Any] = {
        "epochs": epochs,
        "imgsz": imgsz,
        "batch": batch,
        "device": device,
        "plots": False,
        **({"workers": 0, "amp": False} if on_cpu else {}),
        **(options or {}),
    }
    log.info("training on %s: %s images, %s boxes", data_yaml, summary.images, summary.boxes)
    run = train_yolo(model, data_file, out_dir, progress=progress, **args)
    for name in ("best.pt", "last.pt"):
        if (run / "weights" / name).is_file():
            return run / "weights" / name
    raise ConfigError(f"training wrote no weights into {run / 'weights'}; see the log above.")


class DetectorMetrics(BaseModel):
    """Box metrics of weights on a dataset's validation split."""

    weights: Path
    data_yaml: Path
    images: int
    precision: float
    recall: float
    map50: float
    map50_95: float
    per_class_map50_95: dict[str, float]


def evaluate_detector(
    weights: Path, data_yaml: Path, *, imgsz: int = 640, device: str = "cpu"
) -> DetectorMetrics:
    """Validate weights on a dataset's ``val`` split (ultralytics' COCO-style metrics).

    Raises:
        ConfigError: If the weights cannot be loaded, or their classes are not the
            dataset's (a different count or order).
    """
    from surgagent.tools.detector.engine import InstrumentDetector

    detector = InstrumentDetector.from_weights(weights, imgsz=imgsz, device=device)
    summary = inspect_dataset(data_yaml)
    detector.check_classes(summary.class_names, f"dataset {data_yaml}")
    with tempfile.TemporaryDirectory(prefix="surgagent-val-") as tmp:
        args = {"workers": 0} if device.lower() == "cpu" else {}
        found = detector.yolo.val(
            data=str(summary.data_yaml),
            imgsz=imgsz,
            device=device,
            plots=False,
            verbose=False,
            project=tmp,
            name="val",
            **args,
        )
    box = found.box
    per_class = {detector.class_names[int(c)]: float(box.maps[int(c)]) for c in box.ap_class_index}
    return DetectorMetrics(
        weights=detector.weights,
        data_yaml=summary.data_yaml,
        images=summary.images["val"],
        precision=float(box.mp),
        recall=float(box.mr),
        map50=float(box.map50),
        map50_95=float(box.map),
        per_class_map50_95=per_class,
    )
