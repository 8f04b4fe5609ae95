-- One row per split and category: its annotations (crowd included, as pycocotools'
-- getAnnIds(catIds=...) counts them), the images they are on, the crowd annotations,
-- mean and median `area`, and COCO's area buckets (small < 32², medium < 96², large).
-- Categories without annotations appear with zero counts and NULL areas.
-- It reads `annotations`, not `annotations_enriched`: every column it needs is there, and
-- the enriched view's joins (one row per annotation either way) cost a third of its time.
CREATE OR REPLACE VIEW category_stats AS
WITH per_category AS (
    SELECT
        split,
        category_id,
        count(*) AS annotations,
        count(DISTINCT image_id) AS images,
        count(*) FILTER (WHERE iscrowd <> 0) AS crowd,
        avg(area) AS mean_area,
        median(area) AS median_area,
        -- area_bucket's thresholds (annotations_enriched) on the number itself: the same
        -- counts without building the bucket string of every row
        count(*) FILTER (WHERE area < 32 * 32) AS small,
        count(*) FILTER (WHERE area >= 32 * 32 AND area < 96 * 96) AS medium,
        count(*) FILTER (WHERE area >= 96 * 96) AS large
    FROM annotations
    GROUP BY split, category_id
)
SELECT
    c.split,
    c.id AS category_id,
    c.name AS category_name,
    c.supercategory,
    CAST(coalesce(p.annotations, 0) AS BIGINT) AS annotations,
    CAST(coalesce(p.images, 0) AS BIGINT) AS images,
    CAST(coalesce(p.crowd, 0) AS BIGINT) AS crowd,
    CAST(p.mean_area AS DOUBLE) AS mean_area,
    CAST(p.median_area AS DOUBLE) AS median_area,
    CAST(coalesce(p.small, 0) AS BIGINT) AS small,
    CAST(coalesce(p.medium, 0) AS BIGINT) AS medium,
    CAST(coalesce(p.large, 0) AS BIGINT) AS large
FROM categories AS c
LEFT JOIN per_category AS p ON p.split = c.split AND p.category_id = c.id
ORDER BY c.split, c.id;
