"""The retrieval room: guideline passages from the knowledge store, quoted as data.

``engine`` (search and quoting), ``tools`` (``search_guidelines``), ``types``.
"""
