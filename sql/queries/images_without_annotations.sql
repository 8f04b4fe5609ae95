-- Images without annotations: one row per image that no annotation of its split points
-- at, with its size and captions.
SELECT
    split,
    image_id,
    file_name,
    width,
    height,
    captions
FROM image_stats
WHERE annotations = 0
ORDER BY split, image_id;
