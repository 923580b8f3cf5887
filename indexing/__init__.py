"""The indexer: fills the case library by running the engines over many cases, once each.

One task per case, on a local process pool or on a Ray cluster (the ``cluster`` extra); the
driver writes every outcome through `surgagent.library.store.LibraryStore`. Modules:
`runner` (`index_cases`, the driver), `worker` (`CaseIndexer`, one case), `discovery`
(finding cases under folders), `types` (config, tasks, outcomes, summary), `_ray`.

    from surgagent.indexing.runner import index_cases
    index_cases([Path("cholec80/videos")], store, config, workers=2, backend="local")
"""
