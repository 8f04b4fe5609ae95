-- One row per record the ingest left out (--on-bad-record skip), with the reason.
SELECT
    split,
    source_file,
    section,
    record_id,
    reason
FROM rejects
ORDER BY split, source_file, section, record_index;
