-- One row per category and split; the person_keypoints file's row (with keypoint names
-- and skeleton) wins over the instances file's row for the same id.
CREATE OR REPLACE VIEW categories AS
SELECT * EXCLUDE (kind_rank)
FROM (
    SELECT
        *,
        CASE kind WHEN 'person_keypoints' THEN 0 WHEN 'instances' THEN 1 ELSE 2 END AS kind_rank
    FROM raw_categories
)
QUALIFY row_number() OVER (PARTITION BY split, id ORDER BY kind_rank, source_file) = 1;
