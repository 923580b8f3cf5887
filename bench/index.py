"""Benchmark: `index_case` against a plain PyAV loop doing the same work.

Both sides decode a synthetic 25 fps 640x360 H.264 video from start to end, keep one frame a
second, convert it to RGB and write it as a JPEG (quality 90) to disk. `index_case` also
hashes and probes the file, registers the case, writes the contact sheet and its summary:
that overhead is counted on its side. The cache is cold for every repetition; a last run
re-indexes a warm cache (nothing to decode).

    python bench/index.py                  # 60 s video, 5 repetitions
    python bench/index.py --duration 30 --repeats 3 --json
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from surgagent.tools.cache import CaseCache
from surgagent.tools.video.decode import JPEG_QUALITY
from surgagent.tools.video.engine import index_case, open_case
from tests.fixtures.videos import write_video  # noqa: E402

TARGET_RATIO = 1.2


def moving_scene(index: int, width: int, height: int) -> np.ndarray:
    """A drifting colour gradient with a moving bar: cheap to draw, realistic to decode."""
    ys, xs = np.mgrid[0:height, 0:width]
    frame = np.empty((height, width, 3), dtype=np.uint8)
    frame[..., 0] = (xs + index * 3) % 256
    frame[..., 1] = (ys * 2 + index) % 256
    frame[..., 2] = ((xs + ys) // 2 + index * 5) % 256
    bar = (index * 7) % width
    frame[:, bar : bar + 24] = 230
    return frame


def plain_pyav(video: Path, out: Path, fps_keep: float) -> int:
    """Decode every frame; keep one per ``1 / fps_keep`` s as a JPEG file. Returns the count."""
    import av

    out.mkdir(parents=True, exist_ok=True)
    kept = 0
    with av.open(str(video)) as container:
        stream = container.streams.video[0]
        stream.thread_type = "AUTO"
        step = float(stream.average_rate) / fps_keep
        for index, frame in enumerate(container.decode(stream)):
            if index == round(kept * step):
                frame.to_image().save(out / f"{index:08d}.jpg", quality=JPEG_QUALITY)
                kept += 1
    return kept


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--duration", type=float, default=60.0, help="video length in seconds")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--fps", type=float, default=1.0, help="frames kept per second")
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory(prefix="surgagent-bench-") as tmp:
        root = Path(tmp)
        video = write_video(
            root / "bench.mp4",
            fps=25,
            duration=args.duration,
            size=(640, 360),
            frame_fn=moving_scene,
        )
        baseline, ours = [], []
        frames = 0
        for rep in range(args.repeats):  # interleaved, so load from elsewhere hits both
            began = time.perf_counter()
            kept = plain_pyav(video, root / f"plain{rep}", args.fps)
            baseline.append(time.perf_counter() - began)

            cache = CaseCache(root / f"cache{rep}")
            began = time.perf_counter()
            result = index_case(open_case(video, cache), cache, fps=args.fps)
            ours.append(time.perf_counter() - began)
            frames = result.frames_written
            if frames != kept:
                raise SystemExit(f"frame counts differ: index_case {frames}, plain {kept}")

        began = time.perf_counter()
        warm = index_case(open_case(video, cache), cache, fps=args.fps)
        warm_s = time.perf_counter() - began
        assert warm.frames_written == 0

    report = {
        "video": f"{args.duration:g} s, 25 fps, 640x360, h264",
        "frames_kept": frames,
        "plain_pyav_s": statistics.median(baseline),
        "index_case_s": statistics.median(ours),
        "ratio": statistics.median(ours) / statistics.median(baseline),
        "warm_reindex_s": warm_s,
        "repeats": args.repeats,
        "target_ratio": TARGET_RATIO,
    }
    if args.json:
        print(json.dumps(report, indent=2))
        return
    print(f"video: {report['video']}, {frames} frames kept, median of {args.repeats} runs")
    print(f"plain PyAV decode + JPEG  : {report['plain_pyav_s']:.3f} s")
    print(f"open_case + index_case    : {report['index_case_s']:.3f} s (cold cache)")
    print(f"ratio                     : {report['ratio']:.2f}x (target <= {TARGET_RATIO}x)")
    print(f"warm re-index             : {warm_s * 1000:.1f} ms")


if __name__ == "__main__":
    main()
