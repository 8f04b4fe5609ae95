-- Tiny objects: one row per split and category with its annotations, how many are tiny
-- (area < 16², a quarter of COCO's small threshold) and small (area < 32²), and their
-- shares; the categories with the most tiny objects first.
SELECT
    split,
    category_name,
    CAST(count(*) AS BIGINT) AS annotations,
    CAST(count(*) FILTER (WHERE area < 16 * 16) AS BIGINT) AS tiny,
    CAST(round(100.0 * count(*) FILTER (WHERE area < 16 * 16) / count(*), 2) AS DOUBLE) AS percent_tiny,
    CAST(count(*) FILTER (WHERE area < 32 * 32) AS BIGINT) AS small,
    CAST(round(100.0 * count(*) FILTER (WHERE area < 32 * 32) / count(*), 2) AS DOUBLE) AS percent_small
FROM annotations_enriched
GROUP BY split, category_name
ORDER BY split, percent_tiny DESC, annotations DESC, category_name;
