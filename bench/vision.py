"""Benchmark: the vision engines on the CPU, against their plain libraries or targets.

Detector: `InstrumentDetector.predict_images` against ultralytics' own ``model.predict`` on
the same frames (854x480 synthetic scenes, Cholec80's size), in the same batches, at imgsz
320 and 640. Both load the same weights; ours adds the lock, batching and the conversion of
every box to `Detection` models. The ratio is our time over theirs (target <= 1.15).

Without ``--weights`` an untrained YOLO11n with Cholec80's 7 classes is built (nothing is
downloaded); it finds almost no boxes, so give trained weights to time post-processing too.

Phase segmenter: once a case's features are cached, re-predicting its phases costs only the
MS-TCN head (the default trained size: 4 stages x 10 layers x 64 channels) and the Viterbi
decoding. Both are timed on random features of a 60 min video at 1 fps (3600 x 2048, the
resnet50 feature size), against a target of 2 s; the ratio is head + Viterbi over head alone.

    python bench/vision.py                         # both sections
    python bench/vision.py --only detector --frames 64 --weights runs/m2cai/weights/best.pt
    python bench/vision.py --only phase --minutes 90 --feature-dim 512 --json
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

from bench._table import print_table  # noqa: E402 (after the path is set)

TARGET_RATIO = 1.15
PHASE_TARGET_S = 2.0
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
    from surgagent.tools.detector.data import DEFAULT_CLASSES
    from surgagent.tools.detector.yolo import ensure_offline

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
    from surgagent.tools.detector.engine import InstrumentDetector
    from surgagent.tools.detector.yolo import ensure_offline

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
                    "target": f"ratio <= {TARGET_RATIO}",
                    "ok": t_ours / t_plain <= TARGET_RATIO,
                }
            )
        return rows


def phase_section(args: argparse.Namespace) -> list[Row]:
    """Head + Viterbi seconds over a long video's cached features, against the target."""
    import numpy as np
    import torch

    from surgagent.tools.phase.engine import PhaseSegmenter
    from surgagent.tools.phase.model import BackboneSpec, HeadConfig, PhaseModelSpec
    from surgagent.tools.vocabulary import CHOLEC80_PHASES

    spec = PhaseModelSpec(
        vocabulary=list(CHOLEC80_PHASES),
        backbone=BackboneSpec(name="resnet50", feature_dim=args.feature_dim),
        head=HeadConfig(),
    )
    segmenter = PhaseSegmenter(spec, device="cpu")
    samples = round(args.minutes * 60 * spec.backbone.fps)
    features = np.random.default_rng(0).standard_normal((samples, args.feature_dim), np.float32)
    segmenter.predict_features(features[:100])  # warm-up: first allocations
    t_total, t_head = _interleaved(
        [
            functools.partial(segmenter.predict_features, features, smoothing=True),
            functools.partial(segmenter.predict_features, features, smoothing=False),
        ],
        args.repeats,
    )
    head = spec.head
    return [
        {
            "bench": "phase",
            "minutes": args.minutes,
            "samples": samples,
            "feature_dim": args.feature_dim,
            "head": f"{head.stages}x{head.layers}x{head.channels}",
            "torch_threads": torch.get_num_threads(),
            "head_s": round(t_head, 3),
            "viterbi_s": round(t_total - t_head, 3),
            "total_s": round(t_total, 3),
            "ratio": round(t_total / t_head, 3),
            "target": f"total_s < {PHASE_TARGET_S:g}",
            "ok": t_total < PHASE_TARGET_S,
        }
    ]


# name -> section; each returns rows with at least "bench", "ratio", "target" and "ok".
SECTIONS: dict[str, Callable[[argparse.Namespace], list[Row]]] = {
    "detector": detector_section,
    "phase": phase_section,
}


def main(argv: list[str] | None = None) -> int:
    """Run the chosen sections, print a table (or JSON); exit 1 if a row misses its target."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--only", choices=sorted(SECTIONS), action="append", help="sections")
    parser.add_argument("--frames", type=int, default=48, help="frames per timing run")
    parser.add_argument("--repeats", type=int, default=5, help="timing runs (median kept)")
    parser.add_argument("--batch", type=int, default=8, help="frames per inference batch")
    parser.add_argument("--imgsz", type=int, nargs="+", default=[320, 640])
    parser.add_argument("--weights", help="detector .pt weights (default: untrained yolo11n)")
    parser.add_argument("--minutes", type=float, default=60.0, help="phase: video length")
    parser.add_argument("--feature-dim", type=int, default=2048, help="phase: 2048 r50, 512 r18")
    parser.add_argument("--json", action="store_true", help="print the rows as JSON")
    args = parser.parse_args(argv)
    rows: list[Row] = []
    for name in args.only or list(SECTIONS):
        section = SECTIONS[name](args)
        rows += section
        if not args.json:
            print_table(section)
            print()
    if args.json:
        print(json.dumps(rows, indent=2))
    return 0 if all(row["ok"] for row in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
