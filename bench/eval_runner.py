"""Benchmark: eval runner throughput against a model server with 200 ms latency per call.

A scripted OpenAI-compatible server on loopback, in its own process like a real one, answers
every chat call after a fixed delay (default 200 ms) and serves at most ``--server-limit``
calls at once, like a busy vLLM. The
runner answers a synthetic task set (one small frame per item) with the bare-VLM system
(``direct``: one call per item) and the agent (``agent``: the planner looks at the frame,
then answers: two calls per item) at concurrency 1, 8 and 32. The speed-up over concurrency 1
is compared with the ideal: with ``w = min(concurrency, server limit)`` calls at once, ``n``
items take ``ceil(n / w)`` waves, so the ideal speed-up is ``n / ceil(n / w)``; the target is
at least 0.8 of it.

    python bench/eval_runner.py                    # 96 items, concurrency 1 8 32
    python bench/eval_runner.py --items 96 --latency 0.2 --server-limit 16 --json
"""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

TARGET = 0.8


def _task_set(folder: Path, count: int) -> Path:
    """``count`` phase questions, each about its own small frame image."""
    from PIL import Image

    from surgagent.evals.records import Media, TaskRecord, write_tasks
    from surgagent.tools.vocabulary import CHOLEC80_PHASES

    items = []
    for k in range(count):
        frame = folder / "frames" / f"frame{k:04d}.png"
        frame.parent.mkdir(parents=True, exist_ok=True)
        Image.new("RGB", (64, 48), (40 + k % 200, 60, 90)).save(frame)
        items.append(
            TaskRecord(
                id=f"cholec80-phase/bench/{k:04d}",
                task="cholec80-phase",
                dataset="cholec80",
                case=f"bench{k:04d}",
                media=Media(frames=[str(frame)]),
                question=f"Item {k:04d}: which surgical phase is shown?",
                choices=list(CHOLEC80_PHASES),
                gold=CHOLEC80_PHASES[k % 7],
            )
        )
    path = folder / "tasks.jsonl"
    write_tasks(path, items, name="bench")
    return path


def _script(request: dict[str, Any]) -> Any:
    from surgagent.agent.testing.openai_server import ScriptedReply

    looked = any(m["role"] == "tool" for m in request["messages"])
    if request.get("tools") and not looked:
        return ScriptedReply(tool_calls=[("look_at_frames", {"times": ["0"]})])
    return ScriptedReply(content="The phase is CalotTriangleDissection.")


_SERVER = """
import subprocess
import sys
sys.path[:0] = [{repo!r}, {bench!r}]
from surgagent.agent.testing.openai_server import ScriptedOpenAIServer
from eval_runner import _script
with ScriptedOpenAIServer(_script, latency={latency}, max_concurrency={limit}) as server:
    print(server.base_url, flush=True)
    sys.stdin.read()  # serve until the benchmark closes our stdin
"""


@contextlib.contextmanager
def _server(latency: float, limit: int) -> Iterator[str]:
    """The scripted server in a child process; yields its base URL."""
    here = Path(__file__).resolve().parent
    code = _SERVER.format(repo=str(here.parent), bench=str(here), latency=latency, limit=limit)
    child = subprocess.Popen(
        [sys.executable, "-c", code], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
    )
    try:
        assert child.stdout is not None
        yield child.stdout.readline().strip()
    finally:
        assert child.stdin is not None
        child.stdin.close()
        child.wait(timeout=30)


def _measure(
    system_name: str, concurrency: int, tasks: Path, base_url: str, work: Path
) -> tuple[float, int]:
    """Seconds to answer the whole task set, and the items answered."""
    from surgagent.agent.settings import get_settings
    from surgagent.evals.runner import run_eval
    from surgagent.evals.systems import make_systems

    settings = get_settings(
        planner={"backend": "openai", "base_url": base_url, "max_retries": 0},
        perception={"enabled": False},
        knowledge={"enabled": False},
        data_dir=work / "data",
    )
    run_dir = work / f"run-{system_name}-{concurrency}"
    systems = make_systems(
        [system_name], media_root=tasks.parent, work_dir=run_dir, settings=settings
    )
    began = time.perf_counter()
    summary = run_eval(tasks, run_dir, systems, concurrency=concurrency)
    elapsed = time.perf_counter() - began
    if summary.failed:
        raise RuntimeError(f"{summary.failed} items failed at concurrency {concurrency}")
    return elapsed, summary.done


def main(argv: list[str] | None = None) -> int:
    """Print items/s per system and concurrency; exit 1 if a speed-up misses the target."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--items", type=int, default=96)
    parser.add_argument("--latency", type=float, default=0.2, help="seconds per model call")
    parser.add_argument("--server-limit", type=int, default=32, help="calls served at once")
    parser.add_argument("--concurrency", type=int, nargs="+", default=[1, 8, 32])
    parser.add_argument("--systems", nargs="+", default=["direct", "agent"])
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args(argv)

    rows = []
    with tempfile.TemporaryDirectory(prefix="surgagent-bench-") as tmp:
        work = Path(tmp)
        tasks = _task_set(work, args.items)
        with _server(args.latency, args.server_limit) as base_url:
            for system in args.systems:
                base_rate = None
                for concurrency in args.concurrency:
                    seconds, done = _measure(system, concurrency, tasks, base_url, work)
                    rate = done / seconds
                    base_rate = base_rate or rate
                    ideal = done / math.ceil(done / min(concurrency, args.server_limit))
                    efficiency = (rate / base_rate) / ideal
                    rows.append(
                        {
                            "system": system,
                            "concurrency": concurrency,
                            "items": done,
                            "seconds": round(seconds, 2),
                            "items_per_s": round(rate, 2),
                            "speedup": round(rate / base_rate, 2),
                            "ideal": round(ideal, 2),
                            "efficiency": round(efficiency, 3),
                            "ok": efficiency >= TARGET,
                        }
                    )
    if args.json:
        print(json.dumps(rows, indent=2))
    else:
        print(
            f"{args.items} items, {args.latency * 1000:.0f} ms per call, server limit "
            f"{args.server_limit}; target: speed-up >= {TARGET} x the ideal (waves of "
            "min(concurrency, limit) calls)"
        )
        columns = list(rows[0])
        print("  ".join(f"{c:>11}" for c in columns))
        for row in rows:
            print("  ".join(f"{row[c]!s:>11}" for c in columns))
    return 0 if all(row["ok"] for row in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
