"""Benchmark: ``library add`` against running the engines alone over the same cases.

Both sides start cold (a fresh case cache, the engines loaded inside the timed run) and
index the same synthetic cases (25 fps H.264, 640x360 by default):

- engines alone: open each case, track instruments with the detector, predict its phases;
- library add: `index_cases` on the local backend with 1 worker (the same, plus the sampled
  frames and contact sheet in the case cache and the rows in the SQLite library), then with
  2 workers (a process pool, each process loading its own engines).

The detector is an untrained YOLO11n with Cholec80's seven classes (nothing is downloaded),
the phase segmenter a random-init resnet18 backbone at 224 px with the default MS-TCN head:
their costs are the real ones, their answers meaningless. The ratio is library add (1
worker) over engines alone (target <= 1.15); the speed-up is 1 worker over 2.

    python bench/library.py                          # 4 cases of 60 s
    python bench/library.py --cases 8 --duration 120 --imgsz 320 --json
"""

from __future__ import annotations

import argparse
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
from bench.index import moving_scene  # noqa: E402
from bench.vision import _untrained_weights  # noqa: E402

TARGET_RATIO = 1.15


def _scene(case: int) -> Callable[[int, int, int], Any]:
    """Each case its own frames: identical videos would share their cached work."""
    return lambda index, width, height: moving_scene(index + case * 100_000, width, height)


def _phase_checkpoint(folder: Path) -> Path:
    """A phase segmenter with a random-init resnet18 backbone and head, saved as a checkpoint."""
    from surgagent.tools.phase.checkpoint import save_checkpoint
    from surgagent.tools.phase.engine import PhaseSegmenter
    from surgagent.tools.phase.model import PhaseModelSpec
    from surgagent.tools.vocabulary import CHOLEC80_PHASES

    segmenter = PhaseSegmenter(PhaseModelSpec(vocabulary=list(CHOLEC80_PHASES)))
    path = folder / "phase-random.pt"
    save_checkpoint(path, segmenter.spec, segmenter.head.state_dict())
    return path


def _engines_alone(videos: list[Path], cache_dir: Path, config: Any) -> float:
    from surgagent.tools.cache import CaseCache
    from surgagent.tools.detector.engine import InstrumentDetector
    from surgagent.tools.phase.engine import PhaseSegmenter
    from surgagent.tools.video.engine import open_case

    began = time.perf_counter()
    job = config.detector
    detector = InstrumentDetector.from_weights(job.weights, imgsz=job.imgsz, device=job.device)
    segmenter = PhaseSegmenter.from_checkpoint(config.phase.weights, device=config.phase.device)
    cache = CaseCache(cache_dir)
    for video in videos:
        case = open_case(video, cache)
        detector.track(case, cache)
        segmenter.predict(case, cache)
    return time.perf_counter() - began


def _library_add(videos: list[Path], root: Path, config: Any, workers: int) -> float:
    from surgagent.indexing.runner import index_cases
    from surgagent.library.store import LibraryStore

    store = LibraryStore(root / "library.sqlite")
    began = time.perf_counter()
    summary = index_cases(videos, store, config, workers=workers)
    seconds = time.perf_counter() - began
    if summary.failed or len(summary.indexed) != len(videos):
        raise SystemExit(f"library add did not index every case: {summary.failed}")
    return seconds


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cases", type=int, default=4)
    parser.add_argument("--duration", type=float, default=60.0, help="seconds per case")
    parser.add_argument("--size", default="640x360", help="frame size WxH")
    parser.add_argument("--imgsz", type=int, default=640, help="detector inference size")
    parser.add_argument("--repeats", type=int, default=1, help="runs per side (median)")
    parser.add_argument("--device", default="cpu", help="engines' device: cpu, cuda")
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    args = parser.parse_args(argv)

    from surgagent.indexing.types import DetectorJob, IndexConfig, PhaseJob
    from tests.fixtures.videos import write_video

    width, height = (int(v) for v in args.size.split("x"))
    with tempfile.TemporaryDirectory(prefix="surgagent-bench-") as tmp:
        root = Path(tmp)
        videos = [
            write_video(
                root / "cases" / f"video{k:02d}.mp4",
                fps=25,
                duration=args.duration,
                size=(width, height),
                frame_fn=_scene(k),
            )
            for k in range(1, args.cases + 1)
        ]
        weights = _untrained_weights(root)
        detector = DetectorJob(weights=weights, imgsz=args.imgsz, device=args.device)
        phase = PhaseJob(weights=_phase_checkpoint(root), device=args.device)
        times: dict[str, list[float]] = {"alone": [], "add1": [], "add2": []}
        for rep in range(args.repeats):  # interleaved, so load from elsewhere hits all sides
            config = IndexConfig(cache_dir=root / f"alone{rep}")
            config = config.model_copy(update={"detector": detector, "phase": phase})
            times["alone"].append(_engines_alone(videos, config.cache_dir, config))
            for workers in (1, 2):
                run = root / f"add{workers}-{rep}"
                config = IndexConfig(cache_dir=run / "cache", detector=detector, phase=phase)
                times[f"add{workers}"].append(_library_add(videos, run, config, workers))

    median = {name: statistics.median(values) for name, values in times.items()}
    per_case = median["add1"] / args.cases

    def rate(seconds: float) -> float:
        return round(args.cases * 60 / seconds, 2)

    report = {
        "cases": args.cases,
        "case": f"{args.duration:g} s, 25 fps, {args.size}, h264",
        "detector_imgsz": args.imgsz,
        "device": args.device,
        "engines_alone_s": round(median["alone"], 2),
        "library_add_1_worker_s": round(median["add1"], 2),
        "library_add_2_workers_s": round(median["add2"], 2),
        "cases_per_min_engines_alone": rate(median["alone"]),
        "cases_per_min_1_worker": rate(median["add1"]),
        "cases_per_min_2_workers": rate(median["add2"]),
        "ratio_add_over_alone": round(median["add1"] / median["alone"], 3),
        "speedup_2_over_1_worker": round(median["add1"] / median["add2"], 3),
        "seconds_per_video_minute": round(per_case / (args.duration / 60), 2),
        "target_ratio": TARGET_RATIO,
        "repeats": args.repeats,
    }
    if args.json:
        print(json.dumps(report, indent=2))
    else:
        print_table([{"measure": key, "value": value} for key, value in report.items()])
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
