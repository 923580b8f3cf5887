"""The case library: a SQLite store of cases and what indexing found in them.

Imports nothing else of SurgAgent's, so any room may read the library (the cohort tool, the
agent); the indexer that fills it is `surgagent.indexing`. Modules: `store` (`LibraryStore`),
`schema` (the documented, versioned tables and their migrations), `types` (the rows),
`errors` (`LibraryError`).

    from surgagent.library.store import LibraryStore
    LibraryStore(data_dir / "library.sqlite").cases(status="indexed")
"""
