-- One row per split: images (and how many have annotations), annotations, crowd
-- annotations, categories (and how many are used), keypoint annotations, captions,
-- rejected records and the source files it came from.
CREATE OR REPLACE VIEW split_summary AS
WITH splits AS (
    SELECT split FROM raw_info
    UNION
    SELECT split FROM images
),
image_counts AS (
    SELECT
        split,
        count(*) AS images,
        count(*) FILTER (WHERE annotations > 0) AS annotated_images,
        count(*) FILTER (WHERE annotations = 0) AS images_without_annotations
    FROM image_stats
    GROUP BY split
),
annotation_counts AS (
    SELECT
        split,
        count(*) AS annotations,
        count(*) FILTER (WHERE iscrowd <> 0) AS crowd,
        count(DISTINCT category_id) AS categories_used
    FROM annotations
    GROUP BY split
),
category_counts AS (
    SELECT split, count(*) AS categories FROM categories GROUP BY split
),
keypoint_counts AS (
    SELECT split, count(*) AS keypoint_annotations FROM keypoints GROUP BY split
),
caption_counts AS (
    SELECT split, count(*) AS captions FROM captions GROUP BY split
),
reject_counts AS (
    SELECT split, count(*) AS rejects FROM rejects GROUP BY split
),
source_files AS (
    SELECT split, list(DISTINCT source_file ORDER BY source_file) AS source_files
    FROM raw_info
    GROUP BY split
)
SELECT
    s.split,
    CAST(coalesce(i.images, 0) AS BIGINT) AS images,
    CAST(coalesce(i.annotated_images, 0) AS BIGINT) AS annotated_images,
    CAST(coalesce(i.images_without_annotations, 0) AS BIGINT) AS images_without_annotations,
    CAST(coalesce(a.annotations, 0) AS BIGINT) AS annotations,
    CAST(coalesce(a.crowd, 0) AS BIGINT) AS crowd,
    CAST(coalesce(a.annotations, 0) / nullif(i.images, 0) AS DOUBLE) AS annotations_per_image,
    CAST(coalesce(c.categories, 0) AS BIGINT) AS categories,
    CAST(coalesce(a.categories_used, 0) AS BIGINT) AS categories_used,
    CAST(coalesce(k.keypoint_annotations, 0) AS BIGINT) AS keypoint_annotations,
    CAST(coalesce(t.captions, 0) AS BIGINT) AS captions,
    CAST(coalesce(r.rejects, 0) AS BIGINT) AS rejects,
    CAST(coalesce(f.source_files, []) AS VARCHAR[]) AS source_files
FROM splits AS s
LEFT JOIN image_counts AS i ON i.split = s.split
LEFT JOIN annotation_counts AS a ON a.split = s.split
LEFT JOIN category_counts AS c ON c.split = s.split
LEFT JOIN keypoint_counts AS k ON k.split = s.split
LEFT JOIN caption_counts AS t ON t.split = s.split
LEFT JOIN reject_counts AS r ON r.split = s.split
LEFT JOIN source_files AS f ON f.split = s.split
ORDER BY s.split;
