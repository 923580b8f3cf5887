"""``surgagent detector``: train, run, evaluate and feed the YOLO instrument detector.

surgagent detector convert voc m2cai16-tool-locations data/m2cai
surgagent detector train --data data/m2cai/data.yaml --epochs 50 --out runs/m2cai
"""

from __future__ import annotations

import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager, redirect_stdout
from enum import StrEnum
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer
from pydantic import BaseModel
from rich.console import Console

from surgagent.cli._shared import JsonOpt, case_cache, emit_json, progress_bar

if TYPE_CHECKING:
    from surgagent.tools.detector.engine import InstrumentDetector

__all__ = ["TrainSummary", "app"]

console = Console()

app = typer.Typer(
    help="Train, run and evaluate the YOLO instrument detector, and convert datasets for it.\n\n"
    "Examples:\n\n"
    "  surgagent detector convert voc m2cai16-tool-locations data/m2cai\n\n"
    "  surgagent detector train --data data/m2cai/data.yaml --epochs 50 --out runs/m2cai\n\n"
    "  surgagent detector predict video.mp4 --weights runs/m2cai/weights/best.pt "
    "--times 01:05,02:30\n\n"
    "  surgagent detector track video.mp4 --weights runs/m2cai/weights/best.pt --fps 1 --json",
    no_args_is_help=True,
    rich_markup_mode="rich",
)


class ConvertKind(StrEnum):
    """Source annotation styles `convert` reads."""

    voc = "voc"
    coco = "coco"
    masks = "masks"


class TrainSummary(BaseModel):
    """What `train` did."""

    weights: Path
    data_yaml: Path
    epochs: int
    imgsz: int
    device: str
    seconds: float


CaseArg = Annotated[str, typer.Argument(help="A video file, a frame folder or a case id.")]
WeightsOpt = Annotated[Path, typer.Option("--weights", help="YOLO .pt weights (from `train`).")]
DeviceOpt = Annotated[str, typer.Option(help="Torch device: cpu, cuda, cuda:1, mps.")]
ImgszOpt = Annotated[int, typer.Option(help="Image size in pixels (a multiple of 32).")]
ConfOpt = Annotated[float, typer.Option(help="Drop detections below this confidence.")]
ClassesOpt = Annotated[
    str | None,
    typer.Option(
        "--classes",
        help="Comma-separated class names in label order (default: Cholec80's 7 tools; for "
        "masks: the mask folder names).",
    ),
]


def _setup() -> Path:
    """Keep ultralytics offline, with its settings in our data dir, logging to stderr."""
    import logging

    from surgagent.agent.settings import get_settings
    from surgagent.tools.detector.yolo import ensure_offline

    folder = ensure_offline(get_settings().data_dir / "ultralytics")
    for handler in logging.getLogger("ultralytics").handlers:
        if isinstance(handler, logging.StreamHandler) and handler.stream is sys.__stdout__:
            handler.setStream(sys.stderr)  # stdout carries results (--json) only
    return folder


@contextmanager
def _stdout_to_stderr() -> Iterator[None]:
    """Ultralytics' progress bars print to stdout; keep them off the results."""
    with redirect_stdout(sys.stderr):
        yield


def _detector(weights: Path, imgsz: int, conf: float, device: str) -> InstrumentDetector:
    from surgagent.tools.detector.engine import InstrumentDetector

    _setup()
    return InstrumentDetector.from_weights(weights, imgsz=imgsz, conf=conf, device=device)


def _times(values: list[str] | None) -> list[float] | None:
    from surgagent.tools.base import parse_time

    if not values:
        return None
    return [parse_time(part) for value in values for part in value.split(",") if part.strip()]


@app.command()
def train(
    data: Annotated[Path, typer.Option("--data", help="The dataset's data.yaml.")],
    out: Annotated[Path, typer.Option("--out", help="Run folder (weights in OUT/weights).")],
    epochs: Annotated[int, typer.Option(min=1, help="Passes over the training images.")] = 50,
    imgsz: ImgszOpt = 640,
    batch: Annotated[int, typer.Option(min=1, help="Images per batch.")] = 16,
    model: Annotated[
        str, typer.Option(help="Architecture YAML (from scratch) or .pt weights to fine-tune.")
    ] = "yolo11n.yaml",
    device: DeviceOpt = "cpu",
    as_json: JsonOpt = False,
) -> None:
    """Train a detector on a YOLO dataset (see `convert`) and print the best weights."""
    from surgagent.tools.detector.train import train_detector

    _setup()
    began = time.perf_counter()
    with _stdout_to_stderr(), progress_bar(not as_json, "training") as progress:
        weights = train_detector(
            data,
            epochs=epochs,
            imgsz=imgsz,
            out_dir=out,
            device=device,
            batch=batch,
            model=model,
            progress=progress,
        )
    summary = TrainSummary(
        weights=weights,
        data_yaml=data.resolve(),
        epochs=epochs,
        imgsz=imgsz,
        device=device,
        seconds=round(time.perf_counter() - began, 1),
    )
    if as_json:
        emit_json(summary)
    else:
        console.print(f"wrote {weights} ({summary.seconds:.0f} s)", highlight=False)


@app.command()
def predict(
    case: CaseArg,
    weights: WeightsOpt,
    times: Annotated[
        list[str] | None,
        typer.Option("--times", help="Moments (75, 01:15; comma-separated or repeated)."),
    ] = None,
    imgsz: ImgszOpt = 640,
    conf: ConfOpt = 0.25,
    device: DeviceOpt = "cpu",
    as_json: JsonOpt = False,
) -> None:
    """Detect instruments at given moments (default: 8 moments spread over the case)."""
    from surgagent.tools.detector.types import DetectionsResult
    from surgagent.tools.video.engine import clip_times, open_case

    cache = case_cache()
    opened = open_case(case, cache)
    detector = _detector(weights, imgsz, conf, device)
    wanted = _times(times) or clip_times(0.0, max(0.0, opened.duration - 1 / opened.fps), 8)
    with _stdout_to_stderr():
        frames = detector.detect(opened, wanted, cache)
    result = DetectionsResult(
        case_id=opened.id,
        model_id=detector.model_id,
        class_names=detector.class_names,
        frames=frames,
    )
    if as_json:
        emit_json(result)
        return
    from rich.table import Table

    from surgagent.tools.base import format_time

    table = Table("time", "instrument", "confidence", "box [x1, y1, x2, y2]", title=opened.id)
    for frame in frames:
        for det in frame.detections or []:
            box = ", ".join(f"{v:.3f}" for v in det.box_surgvlm())
            table.add_row(format_time(frame.time), det.name, f"{det.confidence:.2f}", box)
        if not frame.detections:
            table.add_row(format_time(frame.time), "-", "", "")
    console.print(table)


@app.command()
def track(
    case: CaseArg,
    weights: WeightsOpt,
    fps: Annotated[float, typer.Option(help="Frames per second to track at.")] = 1.0,
    start: Annotated[str | None, typer.Option(help="Start (seconds or mm:ss).")] = None,
    end: Annotated[str | None, typer.Option(help="End (seconds or mm:ss).")] = None,
    imgsz: ImgszOpt = 640,
    conf: ConfOpt = 0.25,
    device: DeviceOpt = "cpu",
    as_json: JsonOpt = False,
) -> None:
    """Track instruments through a case and print when each is visible (cached)."""
    from surgagent.tools.base import format_time, parse_time
    from surgagent.tools.video.engine import open_case

    cache = case_cache()
    opened = open_case(case, cache)
    detector = _detector(weights, imgsz, conf, device)
    with _stdout_to_stderr(), progress_bar(not as_json, f"tracking {opened.id}") as progress:
        timeline = detector.track(
            opened,
            cache,
            fps=fps,
            start=None if start is None else parse_time(start),
            end=None if end is None else parse_time(end),
            progress=progress,
        )
    if as_json:
        emit_json(timeline)
        return
    from rich.table import Table

    table = Table("instrument", "from", "to", "frames", "max conf", "best at", title=opened.id)
    for i in timeline.intervals:
        table.add_row(
            i.instrument,
            format_time(i.start),
            format_time(i.end),
            str(i.frames),
            f"{i.max_confidence:.2f}",
            format_time(i.best_time),
        )
    console.print(table)
    unseen = [n for n in timeline.class_names if n not in timeline.seen()]
    if unseen:
        console.print(f"not seen: {', '.join(unseen)}", highlight=False)


@app.command("eval")
def evaluate(
    weights: WeightsOpt,
    data: Annotated[Path, typer.Option("--data", help="The dataset's data.yaml (val split).")],
    imgsz: ImgszOpt = 640,
    device: DeviceOpt = "cpu",
    as_json: JsonOpt = False,
) -> None:
    """Score weights on a dataset's validation split (precision, recall, mAP)."""
    from surgagent.tools.detector.train import evaluate_detector

    _setup()
    with _stdout_to_stderr():
        metrics = evaluate_detector(weights, data, imgsz=imgsz, device=device)
    if as_json:
        emit_json(metrics)
        return
    console.print(
        f"{metrics.images} images: precision {metrics.precision:.3f}, recall "
        f"{metrics.recall:.3f}, mAP50 {metrics.map50:.3f}, mAP50-95 {metrics.map50_95:.3f}",
        highlight=False,
    )


@app.command()
def convert(
    kind: Annotated[ConvertKind, typer.Argument(help="voc, coco or masks.")],
    src: Annotated[Path, typer.Argument(help="The source dataset (folder, or COCO .json).")],
    out: Annotated[Path, typer.Argument(help="Folder to write the YOLO dataset into.")],
    classes: ClassesOpt = None,
    images: Annotated[
        Path | None, typer.Option("--images", help="coco: folder of the images.")
    ] = None,
    as_json: JsonOpt = False,
) -> None:
    """Convert annotations (VOC XML, COCO JSON, instrument masks) to a YOLO dataset."""
    from surgagent.tools.detector import convert as convert_to
    from surgagent.tools.detector.data import DEFAULT_CLASSES, inspect_dataset

    names = [n.strip() for n in classes.split(",") if n.strip()] if classes else None
    vocabulary: Any = names or DEFAULT_CLASSES
    if kind is ConvertKind.voc:
        data_yaml = convert_to.convert_voc(src, out, class_names=vocabulary)
    elif kind is ConvertKind.coco:
        data_yaml = convert_to.convert_coco(src, out, class_names=vocabulary, images_dir=images)
    else:
        data_yaml = convert_to.convert_masks(src, out, class_names=names)
    summary = inspect_dataset(data_yaml)
    if as_json:
        emit_json(summary)
        return
    console.print(
        f"wrote {data_yaml}: images {summary.images}, boxes {summary.boxes}", highlight=False
    )
