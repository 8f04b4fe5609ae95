"""ingest: sources → plan → tasks → validate → commit, as Dask graphs.

Modules, in the order a record meets them: ``sources`` (resolve and open any fsspec URL,
read ranges), ``download`` (the verified cache and the one retry loop), ``filesets``
(directories of per-image documents), ``structure`` (where strings and brackets are),
``scan`` (a document's record arrays or a results file's list → record spans), ``plan``
(a document's shape, kind, split, id types and chunks), ``tasks`` (run a chunk: read,
parse, flatten, write its parts), ``parse`` (a chunk's bytes → records), ``flatten``
(records → Arrow columns, by ``records``' checks and ``encode``'s mask columns), ``graph``
(the Dask graphs), ``validate`` (checks across files, chunks and batches), ``run``
(scheduler, compute, commit), ``cluster`` (where the tasks run), ``warm`` and ``nopandas``
(what a process that runs tasks has done before the first). Imports the shared core only (errors, config, schema, jsontext,
warehouse, masks).
"""
