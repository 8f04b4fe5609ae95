-- One row per split and category: the counts of category_counts (annotations, images,
-- crowd, mean and median `area`, COCO's area buckets) with the category's name and
-- supercategory. Categories without annotations appear with zero counts and NULL areas.
CREATE OR REPLACE VIEW category_stats AS
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
LEFT JOIN category_counts AS p ON p.split = c.split AND p.category_id = c.id
ORDER BY c.split, c.id;
