-- Boxes per image: one row per split and number of annotations on an image, with how many
-- images have that many and their share of the split's images.
SELECT
    split,
    annotations AS boxes,
    CAST(count(*) AS BIGINT) AS images,
    CAST(round(100.0 * count(*) / sum(count(*)) OVER (PARTITION BY split), 2) AS DOUBLE) AS percent_of_images
FROM image_stats
GROUP BY split, annotations
ORDER BY split, boxes;
