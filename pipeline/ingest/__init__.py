"""ingest: sources → plan → tasks → validate → commit, as Dask graphs.

Modules, in the order a record meets them: ``sources`` (resolve and open any fsspec URL),
``filesets`` (directories of per-image documents), ``scan`` (JSON structure → record
spans), ``tasks`` (plan a file, parse and flatten a chunk, write its parts), ``flatten``
(records → Arrow columns), ``graph`` (the Dask graphs), ``run`` (scheduler, compute,
validate, commit). Imports the shared core only (errors, config, schema, jsontext,
warehouse, masks).
"""
