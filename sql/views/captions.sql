-- One row per caption.
CREATE OR REPLACE VIEW captions AS
SELECT * FROM raw_captions;
