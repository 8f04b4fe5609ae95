-- Crowd share: one row per split and category that has crowd annotations, with its
-- annotations, the crowd ones, their share, and the share of the category's mask pixels
-- that are crowd regions.
SELECT
    split,
    category_name,
    CAST(count(*) AS BIGINT) AS annotations,
    CAST(count(*) FILTER (WHERE iscrowd <> 0) AS BIGINT) AS crowd,
    CAST(round(100.0 * count(*) FILTER (WHERE iscrowd <> 0) / count(*), 2) AS DOUBLE) AS percent_crowd,
    CAST(round(100.0 * sum(mask_area) FILTER (WHERE iscrowd <> 0) / nullif(sum(mask_area), 0), 2) AS DOUBLE)
        AS percent_crowd_pixels
FROM annotations_enriched
GROUP BY split, category_name
HAVING count(*) FILTER (WHERE iscrowd <> 0) > 0
ORDER BY split, percent_crowd DESC, category_name;
