"""Okapi BM25 keyword ranking over an inverted index, for exact surgical terms.

Dense embeddings blur short exact terms ("C3", "Hartmann's pouch", "TG18"); BM25 finds them.
Scoring touches only the postings of the query's terms, so a query over 10,000 passages
costs well under a millisecond.

    index = KeywordIndex(["The critical view of safety ...", ...])
    index.top(index.scores("what does C3 require"), 5)   # [(row, score), ...]
"""

from __future__ import annotations

import math
import re
from collections import Counter
from collections.abc import Sequence

import numpy as np

__all__ = ["KeywordIndex", "tokenize"]

_TOKEN = re.compile(r"[a-z0-9]+")
_STOPWORDS = frozenset(
    "a an and are as at be by can do does for from how i in is it its of on or s should "
    "that the their there these this to was what when where which who why with".split()
)


def tokenize(text: str) -> list[str]:
    """Lower-case word and number tokens without stop words ("Hartmann's" -> "hartmann")."""
    return [t for t in _TOKEN.findall(text.lower()) if t not in _STOPWORDS]


class KeywordIndex:
    """BM25 (k1, b) over ``texts``; rows are the texts' positions.

    Args:
        texts: The documents, in row order.
        k1: Term-frequency saturation.
        b: Length normalisation.
    """

    def __init__(self, texts: Sequence[str], *, k1: float = 1.2, b: float = 0.75) -> None:
        self.size = len(texts)
        counts = [Counter(tokenize(text)) for text in texts]
        lengths = np.array([sum(c.values()) for c in counts], dtype=np.float32)
        average = float(lengths.mean()) if self.size else 0.0
        norm = k1 * (1 - b + b * lengths / max(average, 1e-9))
        rows: dict[str, list[int]] = {}
        freqs: dict[str, list[int]] = {}
        for row, counter in enumerate(counts):
            for term, freq in counter.items():
                rows.setdefault(term, []).append(row)
                freqs.setdefault(term, []).append(freq)
        # Per term: the rows it occurs in and its precomputed BM25 contribution there.
        self._postings: dict[str, tuple[np.ndarray, np.ndarray]] = {}
        for term, term_rows in rows.items():
            r = np.array(term_rows, dtype=np.int64)
            f = np.array(freqs[term], dtype=np.float32)
            df = len(term_rows)
            idf = math.log(1 + (self.size - df + 0.5) / (df + 0.5))
            self._postings[term] = (r, idf * f * (k1 + 1) / (f + norm[r]))

    def scores(self, query: str) -> np.ndarray:
        """BM25 score of every row for ``query`` (zeros where no term matches)."""
        total = np.zeros(self.size, dtype=np.float32)
        for term in set(tokenize(query)):
            posting = self._postings.get(term)
            if posting is not None:
                total[posting[0]] += posting[1]
        return total

    def top(
        self, scores: np.ndarray, k: int, allowed: np.ndarray | None = None
    ) -> list[tuple[int, float]]:
        """The ``k`` best rows with a positive score, best first, among ``allowed`` rows."""
        if allowed is not None:
            scores = np.where(allowed, scores, 0.0)
        k = min(k, int(np.count_nonzero(scores > 0)))
        if k == 0:
            return []
        best = np.argpartition(-scores, k - 1)[:k]
        best = best[np.argsort(-scores[best], kind="stable")]
        return [(int(row), float(scores[row])) for row in best]
