"""Time to stream a long reply in small chunks, against the same reply in one chunk.

A reply streamed token by token arrives in thousands of chunks; the client's cost per chunk
must not grow with what came before it (a string grown by every chunk, or a tag searched
for in all the text so far, makes a long reply quadratic). Each size is streamed through
the scripted OpenAI-compatible server twice: in ``--chunk`` characters a chunk and in one
chunk (the baseline: the same bytes with no per-chunk work). The ``vs 1st`` column compares
each size's time per MB with the smallest size's: near 1 is linear.

    python bench/streaming.py --sizes 0.25 0.5 1 --chunk 64
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from _table import Row, print_table  # noqa: E402


def stream_seconds(megabytes: float, chunk_chars: int) -> float:
    """Seconds to stream (and merge) one reply of ``megabytes`` in ``chunk_chars`` chunks.

    The long part is thinking left inline in the content by a server without a reasoning
    parser, the hardest case: until ``</think>`` comes the client cannot tell thinking from
    answer and holds the text back.
    """
    from langchain_core.messages import HumanMessage

    from surgagent.agent.backends.openai import OpenAIChat
    from surgagent.agent.settings import ModelSettings
    from surgagent.agent.testing.openai_server import ScriptedOpenAIServer, ScriptedReply

    text = ("The clip sits on the cystic duct. " * 40_000)[: int(megabytes * 1_000_000)]
    reply = ScriptedReply(content="The clip is on the duct.", reasoning=text, reasoning_field=None)
    with ScriptedOpenAIServer([reply], chunk_chars=chunk_chars, models=["bench"]) as server:
        settings = ModelSettings(
            backend="openai", model="bench", base_url=server.base_url, thinking=True
        )
        chat = OpenAIChat(settings=settings)
        start = time.perf_counter()
        merged = None
        for piece in chat.stream([HumanMessage("Describe the clip.")]):
            merged = piece if merged is None else merged + piece
        elapsed = time.perf_counter() - start
    assert merged is not None and merged.content == reply.content
    return elapsed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=float, nargs="+", default=[0.25, 0.5, 1.0])
    parser.add_argument("--chunk", type=int, default=64, help="characters per streamed chunk")
    args = parser.parse_args()
    rows: list[Row] = []
    first_rate: float | None = None
    stream_seconds(0.01, args.chunk)  # warm up: imports, first connection
    for size in args.sizes:
        chunked = stream_seconds(size, args.chunk)
        whole = stream_seconds(size, 10**9)
        rate = chunked / size
        first_rate = first_rate or rate
        rows.append(
            {
                "MB": size,
                "chunks": int(size * 1_000_000 / args.chunk),
                "chunked s": f"{chunked:.2f}",
                "one chunk s": f"{whole:.2f}",
                "s per MB": f"{rate:.2f}",
                "vs 1st": f"{rate / first_rate:.2f}",
            }
        )
    print_table(rows)


if __name__ == "__main__":
    main()
