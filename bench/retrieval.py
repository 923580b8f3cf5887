"""Benchmark: the knowledge store's ingestion and search against plain chromadb.

Ingestion: `KnowledgeStore.ensure_current` building a store of N synthetic surgical chunks
(seeded, 60-150 words each, realistic vocabulary so BM25 and the dense ranker both work)
against a plain loop over the same texts: the same `Embedder` embeds them and
``collection.add`` writes them (ids, documents, metadatas) to a fresh chromadb collection.
Ours also hashes the corpus, writes the manifest and builds a new generation. The ratio is
our time over plain (reported, no target). Embedding is most of both and takes minutes, so
each runs once; to see the stores' own work without the embedding's noise, both then write
the vectors of the first pass again (interleaved, median of 3). Wall and CPU seconds are
given (CPU time is less disturbed by other processes on the machine).

Query latency: per query, `KnowledgeStore.search(query, k)` (dense + BM25 fused by RRF)
against raw chromadb on the same collection: the same `Embedder` embeds the query, then
``collection.query(query_embeddings=..., n_results=k)``. Both include the query embedding
(what a user waits for). Extra rows, no target: ours with a topic filter against raw with
the same ``where``, and the embedding alone. The variants run interleaved per query, in a
rotating order, after a warm-up; p50 and p95 are reported, and ours / raw must be <= 1.2
for both (exit 1 otherwise).

On a 2-core CPU the model embeds only about 30-40 chunks/s, so the default run (10,000
chunks, two embedding passes) takes about 13 minutes there; ``--chunks 1000`` about 1.5.

    python bench/retrieval.py                              # 10,000 chunks, 200 queries
    python bench/retrieval.py --chunks 1000 --queries 50 --json
    python bench/retrieval.py --keep /tmp/retrieval-bench  # keep the stores for a look
"""

from __future__ import annotations

import argparse
import json
import random
import shutil
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench._table import print_table  # noqa: E402 (after the path is set)
from surgagent.knowledge.embeddings import Embedder
from surgagent.knowledge.passages import Passage
from surgagent.knowledge.store import KnowledgeStore, _embedding_text

TARGET_RATIO = 1.2
WARMUP_QUERIES = 10
SEED = 20240601

Row = dict[str, Any]

# -- synthetic corpus and questions ----------------------------------------------------------

TOPICS = ["cvs", "bailout", "anatomy", "phases", "instruments", "energy"]
SOURCES = [
    "SAGES Safe Cholecystectomy Task Force",
    "Tokyo Guidelines 2018",
    "Strasberg SM, Brunt LM",
    "Cholec80 annotation protocol",
    "EAES consensus",
]
PHASES = [
    "preparation",
    "Calot's triangle dissection",
    "clipping and cutting",
    "gallbladder dissection",
    "gallbladder packaging",
    "cleaning and coagulation",
    "gallbladder retraction",
]
INSTRUMENTS = [
    "grasper",
    "bipolar forceps",
    "monopolar hook",
    "scissors",
    "clip applier",
    "irrigator",
    "specimen bag",
    "Maryland dissector",
    "harmonic scalpel",
    "suction cannula",
]
ANATOMY = [
    "cystic duct",
    "cystic artery",
    "common bile duct",
    "common hepatic duct",
    "Hartmann's pouch",
    "hepatocystic triangle",
    "cystic plate",
    "liver bed",
    "gallbladder fundus",
    "right hepatic artery",
    "Rouviere's sulcus",
    "duodenum",
    "omentum",
    "lymph node of Lund",
]
ACTIONS = [
    "retracts",
    "dissects",
    "clips",
    "divides",
    "coagulates",
    "irrigates",
    "grasps",
    "exposes",
    "elevates",
    "aspirates",
]
FINDINGS = ["inflamed", "adherent", "thickened", "friable", "bleeding", "oedematous", "distended"]
TERMS = [
    "C1",
    "C2",
    "C3",
    "TG18 grade I",
    "TG18 grade II",
    "TG18 grade III",
    "Parkland grade 4",
    "Strasberg type A",
    "Strasberg type D",
    "Strasberg type E2",
    "Bismuth class III",
]
SENTENCES = [
    "During {phase} the {instrument} {action} the {anatomy} while the assistant keeps the "
    "fundus retracted cephalad.",
    "When the {anatomy} is {finding}, the surgeon {action} it with the {instrument} in short "
    "controlled steps of about {n} mm.",
    "Criterion {term} is documented only after the {anatomy} has been cleared of fat and "
    "fibrous tissue.",
    "In {term} cases the {anatomy} is often {finding}, so conversion or a bailout procedure "
    "should be considered before {phase}.",
    "The {instrument} is introduced through the {n} mm port and {action} the {anatomy} under "
    "direct vision.",
    "A {finding} {anatomy} increases the risk of bile duct injury, especially during {phase}.",
    "Energy at {w} W applied with the {instrument} near the {anatomy} can cause thermal "
    "spread of several millimetres.",
    "Annotators label the frame as {phase} once the {instrument} first {action} the "
    "{anatomy}, typically around minute {n}.",
    "Two structures, the cystic duct and cystic artery, should be seen entering the "
    "gallbladder before anything is clipped ({term}).",
    "If the {anatomy} cannot be identified after {n} minutes of dissection, a time-out is "
    "called and the plan is reviewed.",
    "Placing {k} clips on the {anatomy} and dividing between them is standard during {phase}.",
    "The {instrument} should stay above Rouviere's sulcus to keep away from the common bile "
    "duct while it {action} the {anatomy}.",
]
QUESTIONS = [
    "What does {term} require?",
    "When is {term} met during {phase}?",
    "How should Hartmann's pouch be retracted during {phase}?",
    "Which instrument {action} the {anatomy}?",
    "What to do when the {anatomy} is {finding}?",
    "Management of {term} cholecystitis",
    "Is it safe to use the {instrument} near the {anatomy}?",
    "How many clips on the {anatomy} before dividing it?",
    "Hartmann's pouch",
    "{term}",
    "risk of bile duct injury when the {anatomy} is {finding}",
    "what power setting for the {instrument} close to the {anatomy}",
]


def _fill(template: str, rng: random.Random) -> str:
    return template.format(
        phase=rng.choice(PHASES),
        instrument=rng.choice(INSTRUMENTS),
        anatomy=rng.choice(ANATOMY),
        action=rng.choice(ACTIONS),
        finding=rng.choice(FINDINGS),
        term=rng.choice(TERMS),
        n=rng.randint(2, 45),
        w=rng.choice([20, 25, 30, 35, 40, 60]),
        k=rng.randint(2, 4),
    )


def synthetic_passages(count: int, seed: int = SEED) -> list[Passage]:
    """``count`` chunks of 60-150 words built from surgical vocabulary, the same every run."""
    rng = random.Random(seed)
    passages = []
    for k in range(count):
        target = rng.randint(60, 150)
        words: list[str] = []
        while len(words) < target:
            sentence = _fill(rng.choice(SENTENCES), rng).split()
            if len(words) >= 60 and len(words) + len(sentence) > 150:
                break
            words += sentence
        topic = rng.choice(TOPICS)
        passages.append(
            Passage(
                id=f"syn-{k:06d}",
                text=" ".join(words),
                title=f"{rng.choice(ANATOMY).capitalize()} in {rng.choice(PHASES)}",
                topic=topic,
                source=rng.choice(SOURCES),
                year=rng.randint(1995, 2024),
                section=f"{topic} {rng.randint(1, 9)}.{rng.randint(1, 9)}",
            )
        )
    return passages


def synthetic_questions(count: int, seed: int = SEED + 1) -> list[str]:
    """``count`` user questions, a few of them bare exact terms ("C3", "Hartmann's pouch")."""
    rng = random.Random(seed)
    return [_fill(QUESTIONS[k % len(QUESTIONS)], rng) for k in range(count)]


# -- ingestion -------------------------------------------------------------------------------


def _progress(label: str) -> Callable[[int, int], None]:
    """A progress callback that redraws one line on a terminal and stays quiet otherwise."""

    def report(done: int, total: int) -> None:
        if sys.stderr.isatty():
            end = "\n" if done >= total else ""
            print(f"\r{label}: {done}/{total}", end=end, file=sys.stderr, flush=True)

    return report


class _Timer:
    """Wall and CPU seconds of a block (CPU time is less disturbed by other processes)."""

    def __enter__(self) -> _Timer:
        self._wall, self._cpu = time.perf_counter(), time.process_time()
        return self

    def __exit__(self, *exc: object) -> None:
        self.wall = time.perf_counter() - self._wall
        self.cpu = time.process_time() - self._cpu


class _PrecomputedEmbedder(Embedder):
    """The same model id, but vectors looked up from a previous pass instead of computed."""

    def __init__(self, texts: list[str], vectors: Any) -> None:
        super().__init__()
        self._rows = {text: row for row, text in enumerate(texts)}
        self._vectors = vectors

    def embed(self, texts: Any) -> Any:
        return self._vectors[[self._rows[text] for text in texts]]


def _plain_collection(folder: Path, embedder: Embedder) -> tuple[Any, Any]:
    import chromadb
    from chromadb.config import Settings as ChromaSettings

    client = chromadb.PersistentClient(
        str(folder), settings=ChromaSettings(anonymized_telemetry=False)
    )
    collection = client.create_collection(
        "plain",
        embedding_function=embedder.chroma_function(),  # never called: vectors are given
        metadata={"hnsw:space": "cosine"},
    )
    return client, collection


def plain_ingest(
    folder: Path, embedder: Embedder, passages: list[Passage], vectors: Any = None
) -> tuple[_Timer, Any]:
    """Plain chromadb: embed every text (unless ``vectors`` are given), ``collection.add`` all.

    Returns the timing and the vectors.
    """
    # A user starting from strings and dicts has these already: built outside the timing.
    texts = [_embedding_text(p) for p in passages]
    ids = [p.id for p in passages]
    documents = [p.text for p in passages]
    metadatas = [p.metadata() for p in passages]

    with _Timer() as timer:
        client, collection = _plain_collection(folder, embedder)
        if vectors is None:
            vectors = embedder.embed(texts)
        step = client.get_max_batch_size()
        for start in range(0, len(ids), step):
            end = start + step
            collection.add(
                ids=ids[start:end],
                embeddings=vectors[start:end],
                documents=documents[start:end],
                metadatas=metadatas[start:end],
            )
    assert collection.count() == len(passages)
    return timer, vectors


def _ours_ingest(folder: Path, embedder: Embedder, passages: list[Passage]) -> _Timer:
    store = KnowledgeStore(folder, embedder, corpus=passages)
    with _Timer() as timer:
        manifest = store.ensure_current(progress=_progress(f"ingest {folder.name}"))
    assert manifest.passages == len(passages)
    return timer


def _ingest_row(variant: str, chunks: int, timer: _Timer, baseline: _Timer | None) -> Row:
    return {
        "bench": "ingest",
        "variant": variant,
        "chunks": chunks,
        "seconds": round(timer.wall, 2),
        "cpu_s": round(timer.cpu, 2),
        "passages_per_s": round(chunks / timer.wall, 1),
        "ratio": round(timer.wall / baseline.wall, 3) if baseline else 1.0,
        "cpu_ratio": round(timer.cpu / baseline.cpu, 3) if baseline else 1.0,
        "target": "report only" if baseline else "baseline",
        "ok": True,
    }


def ingest_section(
    root: Path, embedder: Embedder, passages: list[Passage], repeats: int = 3
) -> tuple[list[Row], KnowledgeStore]:
    """Passages per second of `ensure_current` and of plain embed + add; the built store."""
    count = len(passages)
    embedder.embed([_embedding_text(p) for p in passages[:64]])  # warm-up: load the model
    # One pass each with the model (embedding 10k chunks takes minutes): plain, then ours.
    plain, vectors = plain_ingest(root / "plain", embedder, passages)
    ours = _ours_ingest(root / "store", embedder, passages)

    # Embedding is >95% of both, so its noise hides the stores' own work. Time that alone:
    # both write the vectors of the first pass (interleaved, median of ``repeats``).
    precomputed = _PrecomputedEmbedder([_embedding_text(p) for p in passages], vectors)
    timed: dict[str, list[_Timer]] = {"plain": [], "ours": []}
    for rep in range(repeats):
        timed["plain"].append(
            plain_ingest(root / f"vectors-plain{rep}", precomputed, passages, vectors)[0]
        )
        timed["ours"].append(_ours_ingest(root / f"vectors-ours{rep}", precomputed, passages))
    plain_add, ours_add = (
        sorted(timers, key=lambda t: t.wall)[len(timers) // 2] for timers in timed.values()
    )

    # What every later process start pays on a store that is already current.
    reopened = KnowledgeStore(root / "store", embedder, corpus=passages)
    with _Timer() as current:
        reopened.ensure_current()
    # The first search of a process opens the generation: reads every passage back and
    # builds the BM25 index (the search itself is a few ms of that).
    with _Timer() as first:
        reopened.search("critical view of safety", k=5)

    rows = [
        _ingest_row("ours: KnowledgeStore.ensure_current", count, ours, plain),
        _ingest_row("plain: embed + collection.add", count, plain, None),
        _ingest_row("ours, vectors precomputed", count, ours_add, plain_add),
        _ingest_row("plain add, vectors precomputed", count, plain_add, None),
    ]
    for variant, timer in [
        ("ensure_current, already current", current),
        ("first search (opens store)", first),
    ]:
        rows.append(
            {
                "bench": "ingest",
                "variant": variant,
                "chunks": count,
                "seconds": round(timer.wall, 3),
                "cpu_s": round(timer.cpu, 3),
                "target": "report only",
                "ok": True,
            }
        )
    return rows, reopened


# -- query latency ---------------------------------------------------------------------------


def _percentiles(seconds: list[float]) -> tuple[float, float]:
    """p50 and p95 in milliseconds."""
    p95 = statistics.quantiles(seconds, n=20, method="inclusive")[-1]
    return statistics.median(seconds) * 1000, p95 * 1000


def query_section(store: KnowledgeStore, questions: list[str], k: int) -> list[Row]:
    """p50 / p95 of our search and of raw chromadb, both with the query embedding."""
    embedder = store.embedder
    # Private, but a benchmark may reach in: the very collection our search queries.
    collection = store._current_view().collection
    topics = sorted(TOPICS)

    def ours(q: str, n: int) -> Any:
        return store.search(q, k=k)

    def raw(q: str, n: int) -> Any:
        vector = embedder.embed([q])
        return collection.query(
            query_embeddings=vector,
            n_results=k,
            include=["documents", "metadatas", "distances"],
        )

    def raw_topic(q: str, n: int) -> Any:
        vector = embedder.embed([q])
        return collection.query(
            query_embeddings=vector,
            n_results=k,
            where={"topic": topics[n % len(topics)]},
            include=["documents", "metadatas", "distances"],
        )

    def ours_topic(q: str, n: int) -> Any:
        return store.search(q, k=k, topic=topics[n % len(topics)])

    def embed(q: str, n: int) -> Any:
        return embedder.embed([q])

    raw_name, raw_topic_name = "raw: embed + query", "raw: embed + query(where=topic)"
    # variant -> (run, the variant its ratios are against)
    variants: dict[str, tuple[Callable[[str, int], Any], str]] = {
        raw_name: (raw, raw_name),
        "ours: store.search": (ours, raw_name),
        raw_topic_name: (raw_topic, raw_topic_name),
        "ours: store.search(topic=...)": (ours_topic, raw_topic_name),
        "embedding alone": (embed, raw_name),
    }
    names = list(variants)
    for n, q in enumerate(questions[:WARMUP_QUERIES]):
        for name in names:
            variants[name][0](q, n)
    times: dict[str, list[float]] = {name: [] for name in names}
    for n, q in enumerate(questions):
        shift = n % len(names)  # rotate the order so no variant always runs first
        for name in names[shift:] + names[:shift]:
            began = time.perf_counter()
            variants[name][0](q, n)
            times[name].append(time.perf_counter() - began)

    rows = []
    for name, (_, against) in variants.items():
        p50, p95 = _percentiles(times[name])
        base50, base95 = _percentiles(times[against])
        row: Row = {
            "bench": "query",
            "variant": name,
            "chunks": store.count(),
            "queries": len(questions),
            "k": k,
            "p50_ms": round(p50, 2),
            "p95_ms": round(p95, 2),
            "vs": against,
            "ratio_p50": round(p50 / base50, 3),
            "ratio_p95": round(p95 / base95, 3),
            "target": "baseline" if name == against else "report only",
            "ok": True,
        }
        if name == "ours: store.search":
            row["target"] = f"ratios <= {TARGET_RATIO}"
            row["ok"] = p50 / base50 <= TARGET_RATIO and p95 / base95 <= TARGET_RATIO
        rows.append(row)
    return rows


def main(argv: list[str] | None = None) -> int:
    """Build, query, print a table (or JSON); exit 1 if the latency ratio target is missed."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--chunks", type=int, default=10_000, help="synthetic chunks to ingest")
    parser.add_argument("--queries", type=int, default=200, help="timed queries")
    parser.add_argument("--k", type=int, default=5, help="results per query")
    parser.add_argument("--json", action="store_true", help="print the rows as JSON")
    parser.add_argument("--keep", help="build the stores in this folder and keep them")
    args = parser.parse_args(argv)
    if args.chunks < args.k or args.queries < 2 or args.k < 1:
        parser.error("need --k >= 1, --chunks >= --k and --queries >= 2")

    if args.keep:
        root = Path(args.keep).expanduser().resolve()
        if root.exists() and any(root.iterdir()):
            parser.error(f"--keep {root}: the folder is not empty")
        root.mkdir(parents=True, exist_ok=True)
    else:
        root = Path(tempfile.mkdtemp(prefix="surgagent-bench-"))
    try:
        passages = synthetic_passages(args.chunks)
        questions = synthetic_questions(args.queries)
        embedder = Embedder()
        ingest, store = ingest_section(root, embedder, passages)
        if not args.json:
            print_table(ingest)
            print()
        query = query_section(store, questions, args.k)
        if not args.json:
            print_table(query)
    finally:
        if not args.keep:
            shutil.rmtree(root, ignore_errors=True)
    rows = ingest + query
    if args.json:
        print(json.dumps(rows, indent=2))
    return 0 if all(row["ok"] for row in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
