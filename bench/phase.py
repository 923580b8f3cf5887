"""Benchmark: the phase segmenter's head + Viterbi over a 60-minute video's cached features.

Once a case's features are cached, re-predicting its phases costs only the MS-TCN head (the
default trained size: 4 stages x 10 layers x 64 channels) over the whole sequence and the
Viterbi decoding. This times both on random features of a 60 min video at 1 fps
(3600 x feature-dim, 2048 = resnet50), on the CPU, against a target of 2 s.

    python bench/phase.py                      # 60 min, resnet50-size features, 5 repeats
    python bench/phase.py --minutes 90 --feature-dim 512 --json
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

TARGET_S = 2.0


def _measure(minutes: float, feature_dim: int, repeats: int) -> dict[str, Any]:
    import numpy as np
    import torch

    from tools.phase import PhaseSegmenter
    from tools.phase_model import BackboneSpec, HeadConfig, PhaseModelSpec, viterbi
    from tools.vocabulary import CHOLEC80_PHASES

    spec = PhaseModelSpec(
        vocabulary=list(CHOLEC80_PHASES),
        backbone=BackboneSpec(name="resnet50", feature_dim=feature_dim),
        head=HeadConfig(),
    )
    segmenter = PhaseSegmenter(spec, device="cpu")
    samples = round(minutes * 60 * spec.backbone.fps)
    rng = np.random.default_rng(0)
    features = rng.standard_normal((samples, feature_dim), dtype=np.float32)
    segmenter.predict_features(features[:100])  # warm up torch
    total, head_only, decode = [], [], []
    for _ in range(repeats):
        began = time.perf_counter()
        labels, probs = segmenter.predict_features(features, smoothing=True)
        total.append(time.perf_counter() - began)
        began = time.perf_counter()
        segmenter.predict_features(features, smoothing=False)
        head_only.append(time.perf_counter() - began)
        began = time.perf_counter()
        viterbi(probs, *segmenter.transition_prior())
        decode.append(time.perf_counter() - began)
    assert len(labels) == samples
    return {
        "samples": samples,
        "feature_dim": feature_dim,
        "head": spec.head.model_dump(),
        "torch_threads": torch.get_num_threads(),
        "total_s": statistics.median(total),
        "head_s": statistics.median(head_only),
        "viterbi_s": statistics.median(decode),
        "repeats": repeats,
        "target_s": TARGET_S,
    }


def bench_phase(minutes: float = 60.0, feature_dim: int = 2048, repeats: int = 5) -> list[str]:
    """Time head + Viterbi on cached features; returns report lines."""
    r = _measure(minutes, feature_dim, repeats)
    verdict = "ok" if r["total_s"] < TARGET_S else "SLOWER THAN TARGET"
    return [
        f"phase segmenter on cached features: {r['samples']} samples x {r['feature_dim']} "
        f"(a {minutes:g} min video at 1 fps), CPU, {r['torch_threads']} torch threads, "
        f"median of {r['repeats']}",
        f"MS-TCN head ({r['head']['stages']} stages x {r['head']['layers']} layers x "
        f"{r['head']['channels']} ch): {r['head_s']:.3f} s",
        f"Viterbi decoding       : {r['viterbi_s']:.3f} s",
        f"head + Viterbi         : {r['total_s']:.3f} s (target < {TARGET_S:g} s: {verdict})",
    ]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--minutes", type=float, default=60.0, help="video length")
    parser.add_argument("--feature-dim", type=int, default=2048, help="2048 resnet50, 512 r18")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    args = parser.parse_args()
    if args.json:
        print(json.dumps(_measure(args.minutes, args.feature_dim, args.repeats), indent=2))
        return
    for line in bench_phase(args.minutes, args.feature_dim, args.repeats):
        print(line)


if __name__ == "__main__":
    main()
