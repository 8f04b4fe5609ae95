-- One row per image and split. The instances, keypoints and captions files of a split
-- usually list the same images; the first file by kind (instances, stuff,
-- person_keypoints, captions, image_info) wins. raw_images keeps every file's rows.
CREATE OR REPLACE VIEW images AS
SELECT * EXCLUDE (kind_rank)
FROM (
    SELECT
        *,
        CASE kind
            WHEN 'instances' THEN 0 WHEN 'stuff' THEN 1 WHEN 'person_keypoints' THEN 2
            WHEN 'captions' THEN 3 ELSE 4
        END AS kind_rank
    FROM raw_images
)
QUALIFY row_number() OVER (PARTITION BY split, id ORDER BY kind_rank, source_file) = 1;
