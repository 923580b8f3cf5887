"""Ultralytics, offline: the only module that imports it, after making sure it stays off the net.

Ultralytics reads its environment once, at import: `ensure_offline` sets ``YOLO_OFFLINE``,
``YOLO_AUTOINSTALL`` and ``YOLO_CONFIG_DIR`` first, then turns the integrations off and puts
a font where ``train()`` would otherwise download ``Arial.ttf``. Every entry point here
calls it, so no other code needs to remember.

    model = load_yolo(Path("runs/shapes/weights/best.pt"))  # ultralytics YOLO, task "detect"
    tracker = new_tracker(high=0.25, low=0.1)  # a fresh ByteTrack
"""

from __future__ import annotations

import logging
import os
import shutil
import sys
import threading
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from surgagent.tools.errors import ConfigError

__all__ = [
    "check_device",
    "ensure_offline",
    "load_yolo",
    "new_tracker",
    "train_yolo",
    "ultralytics_config_dir",
]

log = logging.getLogger(__name__)

_lock = threading.Lock()
_ready: list[Path] = []  # the config folder, once set up
# Everything in ultralytics' settings that could phone home or log to a service.
_OFF = ("sync", "clearml", "comet", "dvc", "mlflow", "raytune", "tensorboard", "wandb")
_FONTS = ("Arial.ttf", "Arial.Unicode.ttf")


def ultralytics_config_dir() -> Path:
    """The default folder for ultralytics' settings: ``$SURGAGENT_DATA_DIR/ultralytics``."""
    data_dir = os.environ.get("SURGAGENT_DATA_DIR") or "~/.surgagent"
    return Path(data_dir).expanduser() / "ultralytics"


def _place_fonts(folder: Path) -> None:
    import matplotlib

    source = Path(matplotlib.get_data_path()) / "fonts" / "ttf" / "DejaVuSans.ttf"
    folder.mkdir(parents=True, exist_ok=True)
    for name in _FONTS:
        if not (folder / name).exists():
            shutil.copyfile(source, folder / name)


def ensure_offline(config_dir: Path | None = None) -> Path:
    """Set ultralytics up so that it never reaches the network; safe to call many times.

    Args:
        config_dir: Where ultralytics keeps its settings, fonts and stray runs (used only by
            the first call in a process; default `ultralytics_config_dir`). A
            ``YOLO_CONFIG_DIR`` already in the environment wins.

    Returns:
        The folder ultralytics actually uses for its settings.
    """
    with _lock:
        if _ready:
            return _ready[0]
        late = "ultralytics" in sys.modules
        os.environ["YOLO_OFFLINE"] = "1"
        os.environ["YOLO_AUTOINSTALL"] = "false"
        os.environ.setdefault("YOLO_CONFIG_DIR", str(config_dir or ultralytics_config_dir()))
        import ultralytics.utils as yolo_utils

        if late and (yolo_utils.ONLINE or yolo_utils.AUTOINSTALL):
            log.warning(
                "ultralytics was imported before SurgAgent could set it up offline; set "
                "YOLO_OFFLINE=1 and YOLO_AUTOINSTALL=false in the environment to be sure."
            )
        folder = Path(yolo_utils.USER_CONFIG_DIR)
        _place_fonts(folder)
        wanted: dict[str, Any] = dict.fromkeys(_OFF, False)
        wanted.update(vscode_msg=False, openvino_msg=False, runs_dir=str(folder / "runs"))
        changed = {k: v for k, v in wanted.items() if yolo_utils.SETTINGS.get(k) != v}
        if changed:
            yolo_utils.SETTINGS.update(changed)
        _ready.append(folder)
        return folder


def _reason(exc: BaseException) -> str:
    lines = [line for line in str(exc).splitlines() if line.strip()]
    text = lines[0] if lines else type(exc).__name__
    return text.replace("ERROR ❌️", "").strip()[:240]


def load_yolo(weights: Path) -> Any:
    """Load YOLO detection weights (a ``.pt`` file) on the CPU.

    Args:
        weights: The weights file.

    Returns:
        The ``ultralytics.YOLO`` model.

    Raises:
        ConfigError: If the file is missing, not a ``.pt`` file, cannot be loaded (corrupt,
            truncated, not an ultralytics checkpoint) or is not a detection model.
    """
    path = Path(weights).expanduser()
    if not path.is_file():
        raise ConfigError(
            f"detector weights {path} do not exist; train some with `surgagent detector train` "
            "or point the detector at a YOLO .pt file."
        )
    if path.suffix != ".pt":
        raise ConfigError(
            f"{path} is not a PyTorch .pt file; the detector loads YOLO .pt weights "
            "(exported formats such as onnx are not supported)."
        )
    ensure_offline()
    from ultralytics import YOLO

    try:
        model = YOLO(str(path))
        task = getattr(model, "task", None) or model.model.args.get("task")
        names = model.names
    except Exception as exc:  # ultralytics raises TypeError, AttributeError, KeyError, ...
        raise ConfigError(
            f"{path} cannot be loaded as YOLO weights ({_reason(exc)}); the file may be "
            "truncated or corrupt, or not an ultralytics checkpoint. Train or copy it again."
        ) from exc
    if task != "detect" or not isinstance(names, dict) or not names:
        raise ConfigError(
            f"{path} is a YOLO {task} model, not a detection model; give weights trained with "
            "`surgagent detector train` (task=detect)."
        )
    return model


def check_device(device: str) -> None:
    """Check that ``device`` (``cpu``, ``cuda``, ``cuda:1``, ``0``, ``mps``) exists here.

    Raises:
        ConfigError: If it does not, saying which to use instead.
    """
    if device.strip().lower() == "cpu":
        return
    ensure_offline()
    from ultralytics.utils.torch_utils import select_device

    try:
        select_device(device, verbose=False)
    except Exception as exc:  # ultralytics raises ValueError; torch may raise RuntimeError
        raise ConfigError(
            f"device {device!r} cannot be used here ({_reason(exc)}); use cpu, or cuda / "
            "cuda:N where an NVIDIA GPU is present."
        ) from exc


def new_tracker(*, high: float, low: float) -> Any:
    """A fresh ByteTrack tracker (ultralytics' defaults, confidence thresholds replaced).

    Args:
        high: Detections at or above this start and extend tracks.
        low: Detections between ``low`` and ``high`` only extend existing tracks.
    """
    ensure_offline()
    from ultralytics.trackers.byte_tracker import BYTETracker
    from ultralytics.utils import YAML, IterableSimpleNamespace
    from ultralytics.utils.checks import check_yaml

    config = YAML.load(check_yaml("bytetrack.yaml"))
    config.update(track_high_thresh=high, new_track_thresh=high, track_low_thresh=low)
    return BYTETracker(args=IterableSimpleNamespace(**config))


def train_yolo(
    model: str | Path,
    data_yaml: Path,
    out_dir: Path,
    *,
    progress: Callable[[int, int], None] | None = None,
    **args: Any,
) -> Path:
    """Train an ultralytics YOLO detector; returns the run folder (``out_dir``).

    Args:
        model: An architecture YAML (``yolo11n.yaml``: from scratch) or ``.pt`` weights to
            fine-tune.
        data_yaml: The dataset.
        out_dir: The run folder; weights land in ``out_dir/weights``.
        progress: Called as ``progress(epoch, epochs)`` after each epoch.
        **args: Ultralytics training arguments (epochs, imgsz, batch, device, ...).

    Raises:
        ConfigError: If the model cannot be built or loaded.
    """
    ensure_offline()
    from ultralytics import YOLO

    text = str(model)
    if text.endswith(".pt"):
        yolo = load_yolo(Path(text))
    else:
        try:
            yolo = YOLO(text, task="detect")
        except Exception as exc:  # a bad architecture file
            raise ConfigError(f"cannot build a YOLO model from {text!r} ({_reason(exc)}).") from exc
    if progress is not None:
        yolo.add_callback(
            "on_train_epoch_end", lambda trainer: progress(trainer.epoch + 1, trainer.epochs)
        )
    out_dir = Path(out_dir).expanduser().resolve()
    settings: Mapping[str, Any] = {
        "project": str(out_dir.parent),
        "name": out_dir.name,
        "exist_ok": True,
        "verbose": False,
        **args,
    }
    try:
        yolo.train(data=str(data_yaml), **settings)
    except (FileNotFoundError, SyntaxError, KeyError) as exc:  # ultralytics' dataset checks
        raise ConfigError(f"ultralytics refused the dataset {data_yaml}: {_reason(exc)}") from exc
    return Path(yolo.trainer.save_dir)
