-- One row per license and split (the files of a split repeat the same list).
CREATE OR REPLACE VIEW licenses AS
SELECT *
FROM raw_licenses
QUALIFY row_number() OVER (PARTITION BY split, id ORDER BY source_file, record_index) = 1;
