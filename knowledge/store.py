"""The knowledge store: guideline passages and user documents in chromadb, searched hybrid.

Each state of the store is a *generation*: a chromadb folder that is never changed once
published. A writer (under a file lock) builds the next generation beside the current one,
then switches ``manifest.json`` to it with one atomic rename, so a process reading at the
same time sees the old store or the new one, never half of either. The manifest records the
embedding model and corpus version that built the store; when either changes, the store is
rebuilt (user documents keep their text and are embedded again).

Search fuses dense similarity (chromadb, sentence-transformers) with BM25 keyword scores by
reciprocal-rank fusion, so both paraphrases and exact terms ("C3", "Hartmann's pouch") land.

    store = KnowledgeStore(data_dir / "knowledge")
    store.ensure_current()                      # builds or rebuilds when needed
    hits = store.search("What does C3 require?", k=5)
"""

from __future__ import annotations

import contextlib
import difflib
import functools
import hashlib
import logging
import os
import shutil
import sqlite3
import threading
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, NamedTuple

from filelock import FileLock

from surgagent.knowledge._view import StoreView, allowed_rows, chroma_where, where_conditions
from surgagent.knowledge.documents import MAX_DOCUMENT_MB, document_id, read_document
from surgagent.knowledge.embeddings import Embedder
from surgagent.knowledge.errors import DocumentError, KnowledgeError, UnknownNameError
from surgagent.knowledge.keyword import KeywordIndex
from surgagent.knowledge.passages import Passage, corpus_version, load_corpus
from surgagent.knowledge.records import (
    AddReport,
    DocumentRecord,
    Hit,
    Manifest,
    now,
    recovered_documents,
)

if TYPE_CHECKING:
    import numpy as np
    from numpy.typing import NDArray

__all__ = ["AddReport", "DocumentRecord", "Hit", "KnowledgeStore", "Manifest", "Progress"]

logger = logging.getLogger(__name__)

COLLECTION = "passages"
# Candidates each ranker contributes before fusion, and the fusion constant (Cormack 2009).
CANDIDATES = 30
RRF_K = 60
_EMBED_BATCH = 256  # passages embedded per step (one progress report each)
_WRITE_BATCH = 4096  # passages per chromadb write (its maximum is about 5,400)

_NOT_BUILT = "the knowledge store in {root} is not built; run `surgagent knowledge rebuild`"

Progress = Callable[[int, int], None]  # (done, total)


class _Prepared(NamedTuple):
    """A file read and chunked for `KnowledgeStore.add_documents`."""

    path: Path
    digest: str
    chunks: list[Passage]


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


class KnowledgeStore:
    """The guideline and document store under ``root``.

    Args:
        root: Folder of the store (``<data_dir>/knowledge``); created on first build.
        embedder: The embedding model (the bundled all-MiniLM-L6-v2 by default).
        corpus: The curated passages (the bundled corpus by default).
    """

    def __init__(
        self,
        root: Path,
        embedder: Embedder | None = None,
        corpus: Sequence[Passage] | None = None,
        *,
        max_document_mb: float = MAX_DOCUMENT_MB,
    ) -> None:
        self.root = Path(root)
        self.max_document_mb = max_document_mb
        self.embedder = embedder or Embedder()
        self._corpus = list(corpus) if corpus is not None else None
        self._view: StoreView | None = None
        self._view_signature: tuple[int, int, int] | None = None
        self._lock = threading.Lock()

    # -- state -----------------------------------------------------------------------------

    @property
    def corpus(self) -> list[Passage]:
        """The curated passages this store is built from."""
        if self._corpus is None:
            self._corpus = load_corpus()
        return self._corpus

    @functools.cached_property
    def corpus_version(self) -> str:
        """The content hash of `corpus` (hashed once: every search checks it)."""
        return corpus_version(self.corpus)

    def manifest(self) -> Manifest | None:
        """The published manifest, or None before the first build."""
        try:
            return Manifest.model_validate_json((self.root / "manifest.json").read_text())
        except FileNotFoundError:
            return None
        except ValueError as error:
            raise KnowledgeError(
                f"the knowledge store manifest in {self.root} is unreadable ({error}); "
                "run `surgagent knowledge rebuild`"
            ) from error

    def stale_reason(self, manifest: Manifest | None = None) -> str | None:
        """Why the store must be rebuilt (not built, other model, other corpus), or None."""
        manifest = manifest or self.manifest()
        if manifest is None:
            return "the store has not been built yet"
        if manifest.embedding_model != self.embedder.model_id:
            return (
                f"it was built with {manifest.embedding_model}, "
                f"the configured model is {self.embedder.model_id}"
            )
        version = self.corpus_version
        if manifest.corpus_version != version:
            return f"the corpus changed ({manifest.corpus_version} -> {version})"
        return None

    def ensure_current(self, progress: Progress | None = None) -> Manifest:
        """Build or rebuild the store if it is missing or stale; returns the manifest."""
        manifest = self.manifest()
        if self.stale_reason(manifest) is None:
            assert manifest is not None
            return manifest
        with self._writing():
            manifest = self.manifest()  # another process may have rebuilt meanwhile
            reason = self.stale_reason(manifest)
            if reason is None:
                assert manifest is not None
                return manifest
            logger.info("building the knowledge store: %s", reason)
            return self._rebuild(manifest, progress)

    def rebuild(self, progress: Progress | None = None) -> Manifest:
        """Embed everything again into a fresh generation (user documents included).

        This also repairs a store whose manifest is unreadable: user documents are recovered
        from the newest generation on disk that still opens.
        """
        with self._writing():
            try:
                manifest = self.manifest()
            except KnowledgeError as error:
                logger.warning("rebuilding without the manifest: %s", error)
                manifest = None
            return self._rebuild(manifest, progress)

    def documents(self) -> list[DocumentRecord]:
        """The user documents in the store, by name."""
        manifest = self.manifest()
        return sorted(manifest.documents.values(), key=lambda d: d.name) if manifest else []

    def count(self) -> int:
        """Passages in the published generation (from its manifest: nothing is opened).

        Raises:
            KnowledgeError: If the store is not built.
        """
        manifest = self.manifest()
        if manifest is None:
            raise KnowledgeError(_NOT_BUILT.format(root=self.root))
        return manifest.passages

    # -- writing ---------------------------------------------------------------------------

    def add_documents(self, paths: Sequence[Path], progress: Progress | None = None) -> AddReport:
        """Ingest files (markdown, text, HTML, PDF); a changed file replaces its chunks.

        Files are read, chunked and embedded before the writer lock is taken (progress is
        reported per embedded batch), so a long add holds up no other writer; the lock is
        held only to apply the change and publish it. Files that cannot be read are reported
        in ``failed`` and change nothing; the others are published together in one new
        generation.
        """
        report = AddReport()
        known = self.manifest()
        ready: list[_Prepared] = []
        for path in paths:
            path = Path(path).expanduser().resolve()
            try:
                digest = _sha256(path)
                chunks = read_document(path, max_mb=self.max_document_mb)
            except DocumentError as error:
                report.failed[str(path)] = str(error)
                continue
            old = known.documents.get(document_id(path)) if known else None
            if old is not None and old.sha256 == digest:
                report.unchanged.append(str(path))
            else:
                ready.append(_Prepared(path, digest, chunks))
        passages = [chunk for item in ready for chunk in item.chunks]
        vectors = self._embed(passages, progress)
        with self._writing():
            manifest = self._current_or_rebuilt(progress)
            records = dict(manifest.documents)
            new: list[Passage] = []
            remove: list[str] = []
            for item in ready:  # against the store as it is now: another writer may have run
                doc = document_id(item.path)
                old = records.get(doc)
                if old is not None and old.sha256 == item.digest:
                    report.unchanged.append(str(item.path))
                    continue
                if old is not None:
                    remove += old.chunks
                    report.replaced[str(item.path)] = len(item.chunks)
                else:
                    report.added[str(item.path)] = len(item.chunks)
                new += item.chunks
                records[doc] = DocumentRecord(
                    id=doc,
                    path=str(item.path),
                    name=item.path.name,
                    sha256=item.digest,
                    chunks=[c.id for c in item.chunks],
                    added=now(),
                )
            if report.added or report.replaced:
                rows = {p.id: row for row, p in enumerate(passages)}
                chosen = vectors[[rows[p.id] for p in new]]
                self._publish_change(manifest, records, new, chosen, remove)
        return report

    def remove_documents(self, names: Sequence[str]) -> list[DocumentRecord]:
        """Remove user documents by file name, path or document id; returns what went.

        Raises:
            KnowledgeError: If a name matches no document (nothing is removed then).
        """
        with self._writing():
            manifest = self._current_or_rebuilt(None)
            records = dict(manifest.documents)
            gone = [self._find_document(records, name) for name in names]
            for record in gone:
                records.pop(record.id, None)
            chunk_ids = [chunk for record in gone for chunk in record.chunks]
            if gone:
                self._publish_change(manifest, records, [], self._embed([], None), chunk_ids)
            return gone

    @staticmethod
    def _find_document(records: dict[str, DocumentRecord], name: str) -> DocumentRecord:
        for record in records.values():
            if name in (record.id, record.name, record.path) or (
                Path(name).expanduser().resolve() == Path(record.path)
            ):
                return record
        names = sorted(r.name for r in records.values())
        close = difflib.get_close_matches(name, names, n=1)
        hint = f" Did you mean {close[0]!r}?" if close else ""
        listing = ", ".join(names) or "none"
        raise UnknownNameError(f"no document {name!r} in the store.{hint} Documents: {listing}.")

    @contextlib.contextmanager
    def _writing(self) -> Iterator[None]:
        """Hold the store's writer lock (across processes) while changing it."""
        self.root.mkdir(parents=True, exist_ok=True)
        with FileLock(self.root / ".lock"):
            yield

    def _current_or_rebuilt(self, progress: Progress | None) -> Manifest:
        manifest = self.manifest()
        if self.stale_reason(manifest) is None:
            assert manifest is not None
            return manifest
        return self._rebuild(manifest, progress)

    def _rebuild(self, old: Manifest | None, progress: Progress | None) -> Manifest:
        on_disk = self._generations_on_disk()
        user, documents = self._user_passages(old, on_disk)
        passages = [*self.corpus, *user]
        generation = max([0, *on_disk]) + 1
        collection = self._client(generation).create_collection(
            COLLECTION,
            embedding_function=self.embedder.chroma_function(),
            metadata={"hnsw:space": "cosine", "embedding_model": self.embedder.model_id},
        )
        self._write(collection, passages, self._embed(passages, progress))
        manifest = Manifest(
            generation=generation,
            embedding_model=self.embedder.model_id,
            corpus_version=self.corpus_version,
            passages=len(passages),
            documents=documents,
            built=now(),
        )
        self._publish(manifest, old)
        return manifest

    def _user_passages(
        self, old: Manifest | None, on_disk: list[int]
    ) -> tuple[list[Passage], dict[str, DocumentRecord]]:
        """The user documents to carry into a rebuild, from the newest readable source.

        The published generation first, then older ones on disk; where no database can be
        read, the documents the manifest lists are read again from their files, if they are
        still there unchanged (the others are named in a warning: add them again).
        """
        newest_first = sorted(on_disk, reverse=True)
        if old is not None:
            newest_first = [old.generation, *(g for g in newest_first if g != old.generation)]
        for generation in newest_first:
            try:
                view = self._open(generation)
            except KnowledgeError as error:
                logger.warning("%s; trying an older copy", error)
                continue
            rows = [r for r, m in enumerate(view.metadatas) if m["origin"] == "user"]
            user = [view.passage(r) for r in rows]
            same = old is not None and generation == old.generation
            return user, (old.documents if same and old else recovered_documents(user))
        user, documents = [], {}
        for key, record in (old.documents if old else {}).items():
            path = Path(record.path)
            if path.is_file() and _sha256(path) == record.sha256:
                user += read_document(path, max_mb=self.max_document_mb)
                documents[key] = record
            else:
                logger.warning("%s could not be recovered; add it again", record.path)
        return user, documents

    def _publish_change(
        self,
        old: Manifest,
        records: dict[str, DocumentRecord],
        new: list[Passage],
        vectors: NDArray[np.float32],
        remove: list[str],
    ) -> None:
        generation = old.generation + 1
        target = self._generation_dir(generation)
        shutil.rmtree(target, ignore_errors=True)  # left by a writer that crashed
        shutil.copytree(self._generation_dir(old.generation), target)
        collection = self._client(generation).get_collection(
            COLLECTION, embedding_function=self.embedder.chroma_function()
        )
        if remove:
            collection.delete(ids=remove)
        self._write(collection, new, vectors)
        count = collection.count()
        manifest = old.model_copy(
            update={"generation": generation, "documents": records, "passages": count}
        )
        self._publish(manifest, old)

    def _embed(self, passages: Sequence[Passage], progress: Progress | None) -> NDArray[np.float32]:
        """The vectors of ``passages``, `_EMBED_BATCH` at a time (one progress report each)."""
        import numpy as np

        total = len(passages)
        if not total:
            return np.empty((0, 0), dtype=np.float32)  # loads no model
        vectors = []
        for start in range(0, total, _EMBED_BATCH):
            batch = passages[start : start + _EMBED_BATCH]
            vectors.append(self.embedder.embed([_embedding_text(p) for p in batch]))
            if progress:
                progress(start + len(batch), total)
        return np.concatenate(vectors)

    @staticmethod
    def _write(collection: Any, passages: Sequence[Passage], vectors: NDArray[np.float32]) -> None:
        """Add passages with their vectors, `_WRITE_BATCH` at a time.

        chromadb's ``add`` has a high fixed cost per call, so rows are written in large
        batches (below chromadb's own maximum batch size).
        """
        for start in range(0, len(passages), _WRITE_BATCH):
            chunk = passages[start : start + _WRITE_BATCH]
            collection.add(
                ids=[p.id for p in chunk],
                embeddings=vectors[start : start + len(chunk)],
                documents=[p.text for p in chunk],
                metadatas=[p.metadata() for p in chunk],
            )

    def _publish(self, manifest: Manifest, old: Manifest | None) -> None:
        """Switch readers to ``manifest`` atomically, then drop generations before ``old``."""
        path = self.root / "manifest.json"
        temporary = path.with_suffix(f".tmp{os.getpid()}")
        temporary.write_text(manifest.model_dump_json(indent=1))
        os.replace(temporary, path)
        keep = {manifest.generation, old.generation if old else -1}
        for generation in self._generations_on_disk():
            if generation not in keep:
                folder = self._generation_dir(generation)
                _release(folder)
                shutil.rmtree(folder, ignore_errors=True)

    # -- reading ---------------------------------------------------------------------------

    def _generations_on_disk(self) -> list[int]:
        folder = self.root / "generations"
        if not folder.is_dir():
            return []
        return sorted(int(p.name) for p in folder.iterdir() if p.name.isdigit())

    def _generation_dir(self, generation: int) -> Path:
        return self.root / "generations" / f"{generation:06d}"

    def _client(self, generation: int) -> Any:
        import chromadb
        from chromadb.config import Settings as ChromaSettings

        folder = self._generation_dir(generation)
        folder.mkdir(parents=True, exist_ok=True)
        return chromadb.PersistentClient(
            str(folder), settings=ChromaSettings(anonymized_telemetry=False)
        )

    @contextlib.contextmanager
    def _reading(self, generation: int) -> Iterator[None]:
        """Turn chromadb's failures on a damaged database into one `KnowledgeError`."""
        from chromadb.errors import ChromaError

        try:
            yield
        except (ChromaError, sqlite3.DatabaseError) as error:
            database = self._generation_dir(generation) / "chroma.sqlite3"
            raise KnowledgeError(
                f"the knowledge store's database {database} cannot be read ({error}); "
                "run `surgagent knowledge rebuild` to build it again"
            ) from error

    def _open(self, generation: int) -> StoreView:
        import numpy as np

        with self._reading(generation):
            collection = self._client(generation).get_collection(
                COLLECTION, embedding_function=self.embedder.chroma_function()
            )
            data = collection.get(include=["documents", "metadatas"])
        texts = list(data["documents"] or [])
        metadatas = [dict(m) for m in data["metadatas"] or []]
        keyword = KeywordIndex(
            [f"{m.get('title', '')} {t}" for t, m in zip(texts, metadatas, strict=True)]
        )
        ids = list(data["ids"])
        row = {pid: k for k, pid in enumerate(ids)}
        topics = np.array([m["topic"] for m in metadatas], dtype=str)
        sources = np.array([m["source"] for m in metadatas], dtype=str)
        return StoreView(
            generation,
            collection,
            ids,
            texts,
            metadatas,
            keyword,
            row,
            topics,
            sources,
            sorted(set(topics.tolist())),
            sorted(set(sources.tolist())),
        )

    def _current_view(self) -> StoreView:
        """The published generation, reopened when a writer has switched it.

        A publish replaces ``manifest.json`` (a new inode), so comparing its stat is enough
        to notice; the manifest itself is only parsed when it changed.
        """
        try:
            stat = (self.root / "manifest.json").stat()
        except FileNotFoundError:
            stat = None
        signature = (stat.st_ino, stat.st_mtime_ns, stat.st_size) if stat else None
        with self._lock:
            if self._view is not None and signature == self._view_signature:
                return self._view
            manifest = self.manifest()
            if manifest is None:
                raise KnowledgeError(_NOT_BUILT.format(root=self.root))
            if self._view is None or self._view.generation != manifest.generation:
                self._view = self._open(manifest.generation)
            self._view_signature = signature
            return self._view

    def search(
        self,
        query: str,
        k: int = 5,
        *,
        topic: str | None = None,
        source: str | None = None,
    ) -> list[Hit]:
        """The ``k`` best passages for ``query``, dense and keyword ranks fused.

        Args:
            query: What to look for, in plain words.
            k: How many passages to return.
            topic: Only this corpus topic (``cvs``, ``bailout``, ..., ``user``).
            source: Only passages whose source or document name contains this text.

        Raises:
            KnowledgeError: For an unknown topic or source (the message lists the options),
                or a store that is not built.
        """
        view = self._current_view()
        where = where_conditions(view, topic, source)
        allowed = None if where is None else allowed_rows(view, where)
        vector = self.embedder.embed([query])
        with self._reading(view.generation):
            result = view.collection.query(
                query_embeddings=vector,
                n_results=min(CANDIDATES, len(view.ids)),
                where=chroma_where(where),
                include=["distances"],
            )
        dense = [
            (view.row[pid], 1.0 - float(distance))
            for pid, distance in zip(result["ids"][0], result["distances"][0], strict=True)
        ]
        keyword = view.keyword.top(view.keyword.scores(query), CANDIDATES, allowed)
        fused: dict[int, float] = {}
        for ranking in (dense, keyword):
            for rank, (row, _) in enumerate(ranking):
                fused[row] = fused.get(row, 0.0) + 1.0 / (RRF_K + rank + 1)
        dense_of, keyword_of = dict(dense), dict(keyword)
        best = sorted(fused, key=lambda row: (-fused[row], view.ids[row]))[:k]
        return [
            Hit(
                passage=view.passage(row),
                score=round(fused[row], 6),
                rank=rank,
                dense=dense_of.get(row),
                keyword=keyword_of.get(row),
            )
            for rank, row in enumerate(best, start=1)
        ]


def _embedding_text(passage: Passage) -> str:
    """What is embedded: the title and section give short passages their context."""
    head = " - ".join(part for part in (passage.title, passage.section) if part)
    return f"{head}\n{passage.text}" if head else passage.text


def _release(folder: Path) -> None:
    """Forget chromadb's cached client for ``folder`` before it is deleted."""
    from chromadb.api.shared_system_client import SharedSystemClient

    system = SharedSystemClient._identifier_to_system.pop(str(folder), None)
    if system is not None:
        with contextlib.suppress(Exception):
            system.stop()
