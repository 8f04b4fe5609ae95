-- One row per image and split. The instances, keypoints and captions files of a split
-- usually list the same images; the first file by kind (instances, stuff,
-- person_keypoints, captions, image_info) wins, then the first by name, then the first
-- record. raw_images keeps every file's rows.
-- A GROUP BY on (split, id) rather than a window: DuckDB then knows the view is unique on
-- them and drops a LEFT JOIN to it that no column is read from (a query on the enriched
-- annotations that filters on category or area alone). arg_min_null keeps a NULL value of
-- the winning row.
CREATE OR REPLACE VIEW images AS
WITH ranked AS (
    SELECT
        *,
        struct_pack(
            kind_rank := CASE kind
                WHEN 'instances' THEN 0 WHEN 'stuff' THEN 1 WHEN 'person_keypoints' THEN 2
                WHEN 'captions' THEN 3 ELSE 4
            END,
            source_file := source_file,
            record_index := record_index
        ) AS pick
    FROM raw_images
)
SELECT
    id,
    arg_min_null(file_name, pick) AS file_name,
    arg_min_null(height, pick) AS height,
    arg_min_null(width, pick) AS width,
    arg_min_null(license, pick) AS license,
    arg_min_null(coco_url, pick) AS coco_url,
    arg_min_null(flickr_url, pick) AS flickr_url,
    arg_min_null(date_captured, pick) AS date_captured,
    arg_min_null(extra, pick) AS extra,
    arg_min_null(raw, pick) AS raw,
    arg_min_null(source_file, pick) AS source_file,
    arg_min_null(kind, pick) AS kind,
    arg_min_null(record_index, pick) AS record_index,
    split
FROM ranked
GROUP BY split, id;
