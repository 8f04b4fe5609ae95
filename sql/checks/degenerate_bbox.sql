-- One row per annotation whose box is missing, is not 4 finite numbers, or has a width or
-- height <= 0.
SELECT
    split,
    source_file,
    id AS annotation_id,
    image_id,
    bbox,
    CAST(
        CASE
            WHEN bbox IS NULL THEN 'no bbox'
            WHEN len(bbox) <> 4 THEN 'bbox has ' || len(bbox) || ' numbers; expected [x, y, w, h]'
            WHEN NOT list_bool_and(list_transform(bbox, lambda b_v: b_v IS NOT NULL AND isfinite(b_v)))
                THEN 'bbox has a value that is not a finite number'
            ELSE 'bbox width or height <= 0'
        END AS VARCHAR
    ) AS problem
FROM annotations
WHERE bbox IS NULL
   OR len(bbox) <> 4
   OR NOT list_bool_and(list_transform(bbox, lambda b_v: b_v IS NOT NULL AND isfinite(b_v)))
   OR bbox[3] <= 0
   OR bbox[4] <= 0
ORDER BY split, source_file, id;
