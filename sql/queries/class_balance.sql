-- Class balance: one row per split and category with its annotations, their share of the
-- split's annotations, the images it is on and its rank in the split (1 = most frequent).
SELECT
    split,
    category_id,
    category_name,
    supercategory,
    annotations,
    CAST(round(100.0 * annotations / nullif(sum(annotations) OVER (PARTITION BY split), 0), 2) AS DOUBLE)
        AS percent_of_split,
    images,
    CAST(rank() OVER (PARTITION BY split ORDER BY annotations DESC) AS BIGINT) AS rank_in_split
FROM category_stats
ORDER BY split, annotations DESC, category_id;
