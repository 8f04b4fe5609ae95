-- One row per record that an ingest with --on-bad-record skip left out, with the reason.
CREATE OR REPLACE VIEW rejects AS
SELECT * FROM raw_rejects;
