"""knowledge: the curated corpus, the chromadb store, its generations, documents and search.

Everything runs on the real bundled all-MiniLM-L6-v2 and a real chromadb on disk; a second
process reads while this one writes; a tiny random sentence-transformers model stands in
for "another embedding model".
"""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
from filelock import FileLock

from surgagent.knowledge.embeddings import Embedder
from surgagent.knowledge.errors import KnowledgeError, UnknownNameError
from surgagent.knowledge.passages import CORPUS_DIR, Passage, load_corpus
from surgagent.knowledge.store import KnowledgeStore
from surgagent.tools.retrieval.types import TOPICS
from tests.fixtures.documents import pdf_bytes
from tests.fixtures.embeddings import build_tiny_sentence_model
from tests.fixtures.engines import no_network


def passage(pid: str, text: str, topic: str = "cvs", source: str = "SAGES") -> Passage:
    return Passage(id=pid, text=text, title=pid.replace("-", " "), topic=topic, source=source)


SMALL = [
    passage("cvs-criteria", "The critical view of safety has three criteria before clipping."),
    passage("bailout-subtotal", "Subtotal cholecystectomy is a bail-out when anatomy is unclear."),
    passage(
        "checklist-time-out",
        "The WHO time out happens before skin incision.",
        topic="checklist",
        source="World Health Organization",
    ),
]


def small_store(root: Path, embedder: Embedder, corpus: list[Passage] | None = None):
    return KnowledgeStore(root, embedder, corpus=SMALL if corpus is None else corpus)


def write_docs(folder: Path) -> dict[str, Path]:
    folder.mkdir(parents=True, exist_ok=True)
    docs = {
        "md": folder / "protocol.md",
        "txt": folder / "notes.txt",
        "html": folder / "page.html",
        "pdf": folder / "consent.pdf",
    }
    docs["md"].write_text("# Ward protocol\n\n## Clips\n\nPlace three titanium clips.\n")
    docs["txt"].write_text("Irrigate the liver bed with warm saline before closure.\n")
    docs["html"].write_text(
        "<html><head><title>Drains</title></head><body><h1>Drains</h1>"
        "<p>A subhepatic drain is left after subtotal cholecystectomy.</p></body></html>"
    )
    docs["pdf"].write_bytes(pdf_bytes(["Consent covers conversion to open surgery."]))
    return docs


# -- the curated corpus ----------------------------------------------------------------------


def test_corpus_is_complete_and_cites_its_sources() -> None:
    passages = load_corpus()
    assert 60 <= len(passages) <= 150
    assert {p.topic for p in passages} == set(TOPICS) - {"user"}
    assert {p.topic for p in passages} == {d.name for d in CORPUS_DIR.iterdir() if d.is_dir()}
    for p in passages:
        assert p.id.startswith(p.topic + "-"), p.id
        assert p.source and p.document and p.licence and p.section, p.id
        assert 60 <= len(p.text.split()) <= 260, p.id


def test_corpus_errors_name_the_file(tmp_path: Path) -> None:
    (tmp_path / "cvs").mkdir()
    (tmp_path / "cvs" / "a.md").write_text("---\nid: Bad Id\ntitle: t\nsource: s\n---\nText.\n")
    with pytest.raises(KnowledgeError, match=r"a\.md"):
        load_corpus(tmp_path)


# -- building, staleness, rebuilding ---------------------------------------------------------


def test_build_once_then_rebuild_when_the_corpus_changes(tmp_path: Path, minilm: Embedder):
    store = small_store(tmp_path / "k", minilm)
    assert store.stale_reason() == "the store has not been built yet"
    first = store.ensure_current()
    assert (first.generation, first.passages, first.embedding_model) == (1, 3, "all-MiniLM-L6-v2")
    assert store.ensure_current().generation == 1  # current: nothing is redone
    grown = [*SMALL, passage("cvs-doublet", "Two photographs document the view.")]
    store = small_store(tmp_path / "k", minilm, grown)
    assert "the corpus changed" in (store.stale_reason() or "")
    assert store.ensure_current().generation == 2
    assert store.count() == 4
    assert sorted(p.name for p in (tmp_path / "k" / "generations").iterdir()) == [
        "000001",
        "000002",
    ]


def test_changing_the_embedding_model_rebuilds_with_user_documents(
    tmp_path: Path, minilm: Embedder
) -> None:
    store = small_store(tmp_path / "k", minilm)
    store.add_documents([write_docs(tmp_path / "docs")["md"]])
    tiny = Embedder(str(build_tiny_sentence_model(tmp_path / "tiny-st")))
    other = small_store(tmp_path / "k", tiny)
    assert "the configured model is" in (other.stale_reason() or "")
    manifest = other.ensure_current()
    assert manifest.embedding_model == str(tmp_path / "tiny-st")
    assert [d.name for d in manifest.documents.values()] == ["protocol.md"]
    assert other.count() == 4
    hits = other.search("titanium clips", 2)
    assert hits[0].passage.source == "protocol.md"  # BM25 still finds the exact words
    assert other._current_view().collection.get(limit=1, include=["embeddings"])[
        "embeddings"
    ].shape == (1, 32)


# -- user documents --------------------------------------------------------------------------


def test_add_replace_unchanged_and_remove_documents(tmp_path: Path, minilm: Embedder) -> None:
    store = small_store(tmp_path / "k", minilm)
    docs = write_docs(tmp_path / "docs")
    report = store.add_documents(list(docs.values()))
    assert sorted(Path(p).name for p in report.added) == sorted(p.name for p in docs.values())
    assert store.count() == 7 and store.manifest().generation == 2  # type: ignore[union-attr]
    hit = store.search("consent for conversion to open surgery", 1)[0].passage
    assert (hit.source, hit.page, hit.origin, hit.topic) == ("consent.pdf", 1, "user", "user")
    assert store.search("titanium clips", 1)[0].passage.section == "Ward protocol > Clips"

    again = store.add_documents([docs["md"]])
    assert again.unchanged == [str(docs["md"])] and store.manifest().generation == 2  # type: ignore[union-attr]

    docs["md"].write_text("# Ward protocol\n\n## Clips\n\nPlace two absorbable clips.\n")
    replaced = store.add_documents([docs["md"]])
    assert replaced.replaced == {str(docs["md"]): 1}
    texts = [h.passage.text for h in store.search("clips", 8, topic="user")]
    assert "Place two absorbable clips." in texts
    assert not any("titanium" in text for text in texts)

    gone = store.remove_documents(["protocol.md", str(docs["pdf"])])
    assert [r.name for r in gone] == ["protocol.md", "consent.pdf"]
    assert store.count() == 5
    assert {d.name for d in store.documents()} == {"notes.txt", "page.html"}
    with pytest.raises(UnknownNameError, match="Did you mean 'notes.txt'"):
        store.remove_documents(["notes.tx"])


def test_bad_documents_leave_the_store_unchanged(tmp_path: Path, minilm: Embedder) -> None:
    store = small_store(tmp_path / "k", minilm)
    store.ensure_current()
    broken = tmp_path / "broken.pdf"
    broken.write_bytes(b"%PDF-1.4\n this is not a pdf at all")
    empty = tmp_path / "empty.md"
    empty.write_text("  \n")
    report = store.add_documents([broken, empty])
    assert set(report.failed) == {str(broken), str(empty)}
    assert "broken.pdf" in report.failed[str(broken)]
    assert "empty.md" in report.failed[str(empty)]
    assert store.manifest().generation == 1 and store.count() == 3  # type: ignore[union-attr]
    good = write_docs(tmp_path / "docs")["txt"]
    mixed = store.add_documents([broken, good])
    assert list(mixed.added) == [str(good)] and list(mixed.failed) == [str(broken)]
    assert store.count() == 4


def test_documents_over_the_size_limit_are_refused_before_reading(
    tmp_path: Path, minilm: Embedder
) -> None:
    store = KnowledgeStore(tmp_path / "k", minilm, corpus=[], max_document_mb=1)
    huge = tmp_path / "huge.txt"
    huge.write_text("Clip the duct. " * 80_000)  # 1.2 MB
    report = store.add_documents([huge])
    assert report.failed == {
        str(huge.resolve()): f"{huge.resolve()} is 1.1 MB, more than the 1 MB a document may be; "
        "split it, or raise knowledge.max_document_mb"
    }
    assert store.documents() == []


def test_a_long_add_holds_the_writer_lock_only_while_writing(
    tmp_path: Path, minilm: Embedder
) -> None:
    store = small_store(tmp_path / "k", minilm)
    store.ensure_current()
    long = tmp_path / "long.md"
    long.write_text(
        "".join(f"# Step {i}\n\nClip the cystic duct twice, step {i}.\n\n" for i in range(600))
    )
    notes = write_docs(tmp_path / "docs")["txt"]
    seen: list[tuple[int, int]] = []

    def meanwhile(done: int, total: int) -> None:
        if not seen:  # while the long file is embedded, another writer gets the lock at once
            with FileLock(store.root / ".lock", timeout=0):
                pass
            assert small_store(store.root, minilm).add_documents([notes]).added
        seen.append((done, total))

    report = store.add_documents([long], progress=meanwhile)
    assert report.added == {str(long): 600} and seen[-1] == (600, 600) and len(seen) > 1
    assert {d.name for d in store.documents()} == {"long.md", "notes.txt"}  # neither lost
    assert store.count() == 3 + 600 + 1 and store.manifest().generation == 3  # type: ignore[union-attr]


def test_unreadable_manifest_is_a_clear_error_and_rebuild_repairs_it(
    tmp_path: Path, minilm: Embedder
) -> None:
    store = small_store(tmp_path / "k", minilm)
    docs = write_docs(tmp_path / "docs")
    store.add_documents([docs["txt"], docs["md"]])
    (tmp_path / "k" / "manifest.json").write_text("{not json")
    with pytest.raises(KnowledgeError, match="knowledge rebuild"):
        store.search("clips")
    repaired = store.rebuild()
    assert repaired.generation == 3 and store.count() == 5
    assert sorted(d.name for d in store.documents()) == ["notes.txt", "protocol.md"]
    assert store.add_documents([docs["md"]]).replaced == {str(docs["md"]): 1}


# -- search ----------------------------------------------------------------------------------


def test_hybrid_search_finds_exact_terms_and_paraphrases(corpus_store: KnowledgeStore) -> None:
    c3 = corpus_store.search("What does C3 require?", 3)
    assert c3[0].passage.id == "cvs-c3-cystic-plate"
    assert c3[0].keyword is not None  # the exact term came through BM25
    paraphrase = corpus_store.search("the surgeon cannot safely see the anatomy, what now?", 5)
    assert any(h.passage.topic in {"bailout", "safe-chole"} for h in paraphrase)
    assert [h.rank for h in c3] == [1, 2, 3] and c3[0].score >= c3[1].score >= c3[2].score


def test_filters_and_their_errors(corpus_store: KnowledgeStore) -> None:
    hits = corpus_store.search("time out before incision", 4, topic="checklist")
    assert hits and {h.passage.topic for h in hits} == {"checklist"}
    sages = corpus_store.search("strategies", 5, source="sages")
    assert sages and all("sages" in h.passage.source.lower() for h in sages)
    with pytest.raises(UnknownNameError, match=r"Did you mean 'cvs'\? Topics: anatomy"):
        corpus_store.search("x", topic="cv")
    with pytest.raises(UnknownNameError, match="no source matches 'Mayo'"):
        corpus_store.search("x", source="Mayo")


def test_chroma_never_reaches_for_its_default_model(
    tmp_path: Path, minilm: Embedder, monkeypatch: pytest.MonkeyPatch
) -> None:
    from chromadb.utils import embedding_functions

    def forbidden(*args: object, **kwargs: object) -> None:
        raise AssertionError("chromadb's default embedding function was used")

    monkeypatch.setattr(embedding_functions.DefaultEmbeddingFunction, "__call__", forbidden)
    monkeypatch.setattr(embedding_functions.ONNXMiniLM_L6_V2, "__call__", forbidden)
    with no_network() as attempts:
        store = small_store(tmp_path / "k", minilm)
        store.add_documents([write_docs(tmp_path / "docs")["txt"]])
        assert store.search("warm saline", 1)[0].passage.source == "notes.txt"
    assert attempts == []


# -- a second process reads while this one writes --------------------------------------------

READER = """
import json, sys, time
from pathlib import Path
from surgagent.knowledge.embeddings import Embedder
from surgagent.knowledge.store import KnowledgeStore
root, stop, out = map(Path, sys.argv[1:4])
store = KnowledgeStore(root, Embedder(), corpus=[])
with out.open("w") as log:
    while not stop.exists():
        try:
            hits = store.search("batch marker", 50, topic="user")
            sources = sorted({h.passage.source for h in hits})
            log.write(json.dumps({"count": store.count(), "sources": sources}) + "\\n")
        except Exception as error:
            log.write(json.dumps({"error": repr(error)}) + "\\n")
        log.flush()
"""


def test_a_reader_process_never_sees_half_a_write(tmp_path: Path, minilm: Embedder) -> None:
    store = KnowledgeStore(tmp_path / "k", minilm, corpus=[])
    docs = tmp_path / "docs"
    docs.mkdir()
    batches = []
    for b in range(4):  # each batch: 3 files x 2 chunks, all published together
        batch = []
        for f in range(3):
            path = docs / f"batch{b}-file{f}.md"
            paragraphs = [f"Batch marker {b} file {f} part {k}. " + "word " * 150 for k in (1, 2)]
            path.write_text("\n\n".join(paragraphs))
            batch.append(path)
        batches.append(batch)
    store.add_documents(batches[0])
    stop, out = tmp_path / "stop", tmp_path / "seen.jsonl"
    script = textwrap.dedent(READER)
    reader = subprocess.Popen(
        [sys.executable, "-c", script, str(tmp_path / "k"), str(stop), str(out)],
        cwd=Path(__file__).resolve().parents[1],
    )
    try:
        deadline = time.monotonic() + 60
        while (not out.exists() or not out.read_text()) and time.monotonic() < deadline:
            time.sleep(0.2)
        for batch in batches[1:]:
            store.add_documents(batch)
            time.sleep(0.3)
        store.remove_documents([p.name for p in batches[1]])
        time.sleep(0.5)
    finally:
        stop.touch()
        reader.wait(timeout=60)
    seen = [json.loads(line) for line in out.read_text().splitlines()]
    assert seen and not [s for s in seen if "error" in s], seen[:3]
    # Whole batches only: 6 chunks per batch, the same files every time.
    assert {s["count"] for s in seen} <= {6, 12, 18, 24}
    for s in seen:
        assert len(s["sources"]) % 3 == 0
    assert len({s["count"] for s in seen}) >= 2  # it did watch the store change


@pytest.mark.slow
def test_a_damaged_database_is_named_and_rebuild_repairs_it(tmp_path: Path) -> None:
    """chromadb keeps a database open per process, so each step is a new `surgagent` run."""
    from tests.fixtures.cli import run_cli

    env = {"SURGAGENT_KNOWLEDGE__EMBEDDING_MODEL": str(build_tiny_sentence_model(tmp_path / "m"))}
    doc = tmp_path / "ward.md"
    doc.write_text("# Ward protocol\n\nPlace three titanium clips on the duct.\n")
    added = run_cli("knowledge", "add", str(doc), env=env)
    assert added.returncode == 0, added.stderr
    for database in tmp_path.glob("surgagent-data/knowledge/generations/*/chroma.sqlite3"):
        with database.open("r+b") as handle:
            handle.write(b"not a database!!")  # the SQLite header, overwritten
    broken = run_cli("knowledge", "search", "titanium clips", env=env)
    assert broken.returncode == 1 and "Traceback" not in broken.stderr
    message = " ".join(broken.stderr.split())
    assert (
        "the knowledge store's database" in message and "chroma.sqlite3 cannot be read" in message
    )
    assert "run `surgagent knowledge rebuild`" in message
    rebuilt = run_cli("knowledge", "rebuild", env=env)
    assert rebuilt.returncode == 0, rebuilt.stderr
    found = run_cli("knowledge", "search", "titanium clips", "--json", env=env)
    assert found.returncode == 0, found.stderr
    assert json.loads(found.stdout)["hits"][0]["passage"]["source"] == "ward.md"
