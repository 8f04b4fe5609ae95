-- Category co-occurrence: one row per split and pair of categories found on the same image,
-- with the images that have both and that share of the images having either (Jaccard).
WITH image_categories AS (
    SELECT DISTINCT a.split, a.image_id, a.category_id, c.name AS category_name
    FROM annotations AS a
    JOIN categories AS c ON c.split = a.split AND c.id = a.category_id
),
per_category AS (
    SELECT split, category_id, count(*) AS images
    FROM image_categories
    GROUP BY split, category_id
),
pairs AS (
    SELECT
        x.split,
        x.category_id AS category_a,
        y.category_id AS category_b,
        x.category_name AS name_a,
        y.category_name AS name_b,
        count(*) AS images
    FROM image_categories AS x
    JOIN image_categories AS y
        ON y.split = x.split AND y.image_id = x.image_id AND y.category_id > x.category_id
    GROUP BY x.split, x.category_id, y.category_id, x.category_name, y.category_name
)
SELECT
    p.split,
    p.name_a AS category_a,
    p.name_b AS category_b,
    CAST(p.images AS BIGINT) AS images,
    CAST(round(p.images / (ca.images + cb.images - p.images), 4) AS DOUBLE) AS jaccard
FROM pairs AS p
JOIN per_category AS ca ON ca.split = p.split AND ca.category_id = p.category_a
JOIN per_category AS cb ON cb.split = p.split AND cb.category_id = p.category_b
ORDER BY p.split, p.images DESC, p.name_a, p.name_b;
