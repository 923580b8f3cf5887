"""Benchmark: the vision engines on the CPU against their plain libraries.

Detector: `InstrumentDetector.predict_images` against ultralytics' own ``model.predict`` on
the same frames (854x480 synthetic scenes, Cholec80's size), in the same batches, at imgsz
320 and 640. Both load the same weights; ours adds the lock, batching and the conversion of
every box to `Detection` models. The ratio is our time over theirs (target <= 1.15).

Without ``--weights`` an untrained YOLO11n with Cholec80's 7 classes is built (nothing is
downloaded); it finds almost no boxes, so give trained weights to time post-processing too.

    python bench/vision.py                         # detector at imgsz 320 and 640
    python bench/vision.py --frames 64 --repeats 5 --weights runs/m2cai/weights/best.pt --json
"""

from __future__ import annotations

import argparse
import functools
import json
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

TARGET_RATIO = 1.15
FRAME_SIZE = (854, 480)

Row = dict[str, Any]


def _frames(count: int) -> list[Any]:
    """Synthetic instrument scenes at Cholec80's frame size, as PIL images."""
    import numpy as np
    from PIL import Image

    from tests.fixtures.yolo import SHAPES, draw_scene, random_objects

    rng = np.random.default_rng(0)
    names = list(SHAPES)
    return [
        Image.fromarray(draw_scene(*FRAME_SIZE, random_objects(rng, names), seed=k))
        for k in range(count)
    ]


def _untrained_weights(folder: Path) -> Path:
    """YOLO11n with Cholec80's seven classes, untrained, saved as a .pt file."""
    from tools._ultralytics import ensure_offline
    from tools.detector_data import DEFAULT_CLASSES

    ensure_offline()
    from ultralytics import YOLO
    from ultralytics.nn.tasks import DetectionModel

    yolo = YOLO("yolo11n.yaml")
    yolo.model = DetectionModel("yolo11n.yaml", nc=len(DEFAULT_CLASSES), verbose=False)
    yolo.model.names = dict(enumerate(DEFAULT_CLASSES))
    path = folder / "yolo11n-untrained.pt"
    yolo.save(path)
    return path


def _interleaved(runs: list[Callable[[], Any]], repeats: int) -> list[float]:
    """Median seconds of each run, timed in turn so load changes hit all of them alike."""
    times: list[list[float]] = [[] for _ in runs]
    for _ in range(repeats):
        for k, run in enumerate(runs):
            began = time.perf_counter()
            run()
            times[k].append(time.perf_counter() - began)
    return [statistics.median(t) for t in times]


def _plain_predict(model: Any, frames: list[Any], imgsz: int, batch: int) -> int:
    """Plain ultralytics: ``model.predict`` batch by batch; returns the boxes found."""
    found = 0
    for k in range(0, len(frames), batch):
        results = model.predict(
            frames[k : k + batch], imgsz=imgsz, conf=0.25, iou=0.5, device="cpu", verbose=False
        )
        found += sum(len(r.boxes) for r in results)
    return found


def _our_predict(detector: Any, frames: list[Any]) -> int:
    return sum(len(found) for found in detector.predict_images(frames))


def detector_section(args: argparse.Namespace) -> list[Row]:
    """Frames per second of our detector and of plain ultralytics, per image size."""
    from tools._ultralytics import ensure_offline
    from tools.detector import InstrumentDetector

    with tempfile.TemporaryDirectory(prefix="surgagent-bench-") as tmp:
        ensure_offline(Path(tmp) / "ultralytics")
        from ultralytics import YOLO

        weights = Path(args.weights) if args.weights else _untrained_weights(Path(tmp))
        frames = _frames(args.frames)
        rows = []
        for imgsz in args.imgsz:
            ours = InstrumentDetector.from_weights(
                weights, imgsz=imgsz, conf=0.25, iou=0.5, batch=args.batch
            )
            run_ours = functools.partial(_our_predict, ours, frames)
            run_plain = functools.partial(
                _plain_predict, YOLO(str(weights)), frames, imgsz, args.batch
            )
            boxes = run_ours(), run_plain()  # warm-up: model fusing, first allocations
            t_ours, t_plain = _interleaved([run_ours, run_plain], args.repeats)
            rows.append(
                {
                    "bench": "detector",
                    "imgsz": imgsz,
                    "frames": len(frames),
                    "boxes": boxes[0],
                    "plain_boxes": boxes[1],
                    "ours_fps": round(len(frames) / t_ours, 2),
                    "plain_fps": round(len(frames) / t_plain, 2),
                    "ratio": round(t_ours / t_plain, 3),
                    "target": TARGET_RATIO,
                }
            )
        return rows


# name -> section; each returns rows with at least "bench", "ratio" and "target".
SECTIONS: dict[str, Callable[[argparse.Namespace], list[Row]]] = {
    "detector": detector_section,
}


def _print_table(rows: list[Row]) -> None:
    columns = list(dict.fromkeys(key for row in rows for key in row))
    widths = {c: max(len(c), *(len(str(row.get(c, ""))) for row in rows)) for c in columns}
    print("  ".join(c.ljust(widths[c]) for c in columns))
    for row in rows:
        print("  ".join(str(row.get(c, "")).ljust(widths[c]) for c in columns))


def main(argv: list[str] | None = None) -> int:
    """Run the chosen sections, print a table (or JSON); exit 1 if a ratio misses its target."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--only", choices=sorted(SECTIONS), action="append", help="sections")
    parser.add_argument("--frames", type=int, default=48, help="frames per timing run")
    parser.add_argument("--repeats", type=int, default=5, help="timing runs (median kept)")
    parser.add_argument("--batch", type=int, default=8, help="frames per inference batch")
    parser.add_argument("--imgsz", type=int, nargs="+", default=[320, 640])
    parser.add_argument("--weights", help="detector .pt weights (default: untrained yolo11n)")
    parser.add_argument("--json", action="store_true", help="print the rows as JSON")
    args = parser.parse_args(argv)
    rows = [row for name in args.only or list(SECTIONS) for row in SECTIONS[name](args)]
    if args.json:
        print(json.dumps(rows, indent=2))
    else:
        _print_table(rows)
    return 0 if all(row["ratio"] <= row["target"] for row in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
