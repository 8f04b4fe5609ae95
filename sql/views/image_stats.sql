-- One row per image and split: its annotations (crowd included, as pycocotools'
-- getAnnIds(imgIds=...) counts them), distinct categories, crowd annotations, the
-- annotations with keypoints, labelled keypoints and captions. Images without
-- annotations appear with zero counts.
CREATE OR REPLACE VIEW image_stats AS
WITH per_image AS (
    SELECT
        split,
        image_id,
        count(*) AS annotations,
        count(DISTINCT category_id) AS distinct_categories,
        count(*) FILTER (WHERE iscrowd <> 0) AS crowd
    FROM annotations
    GROUP BY split, image_id
),
per_image_keypoints AS (
    SELECT
        split,
        image_id,
        count(*) AS keypoint_annotations,
        sum(num_keypoints) AS labeled_keypoints
    FROM keypoints
    GROUP BY split, image_id
),
per_image_captions AS (
    SELECT split, image_id, count(*) AS captions
    FROM captions
    GROUP BY split, image_id
)
SELECT
    i.split,
    i.id AS image_id,
    i.file_name,
    CAST(i.width AS BIGINT) AS width,
    CAST(i.height AS BIGINT) AS height,
    CAST(coalesce(a.annotations, 0) AS BIGINT) AS annotations,
    CAST(coalesce(a.distinct_categories, 0) AS BIGINT) AS distinct_categories,
    CAST(coalesce(a.crowd, 0) AS BIGINT) AS crowd,
    CAST(coalesce(k.keypoint_annotations, 0) AS BIGINT) AS keypoint_annotations,
    CAST(coalesce(k.labeled_keypoints, 0) AS BIGINT) AS labeled_keypoints,
    CAST(coalesce(c.captions, 0) AS BIGINT) AS captions
FROM images AS i
LEFT JOIN per_image AS a ON a.split = i.split AND a.image_id = i.id
LEFT JOIN per_image_keypoints AS k ON k.split = i.split AND k.image_id = i.id
LEFT JOIN per_image_captions AS c ON c.split = i.split AND c.image_id = i.id
ORDER BY i.split, i.id;
