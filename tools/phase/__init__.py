"""The phase room: the temporal phase segmenter over a whole case.

``engine`` (`PhaseSegmenter`), ``tools`` (``phase_at``, ``phase_segments``), ``types``
(segments, predictions, tool results), ``model`` (backbone, MS-TCN head, Viterbi),
``features`` (cached frame features), ``annotations`` (Cholec80 phase files),
``checkpoint`` and ``train``.
"""
