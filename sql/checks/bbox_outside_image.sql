-- One row per annotation whose box reaches more than 1 pixel beyond its image
-- (x < -1, y < -1, x + w > width + 1 or y + h > height + 1). The pixel of slack allows for
-- boxes rounded outwards; COCO's own boxes stay inside.
SELECT
    split,
    source_file,
    id AS annotation_id,
    image_id,
    file_name,
    bbox,
    CAST(width AS BIGINT) AS width,
    CAST(height AS BIGINT) AS height
FROM annotations_enriched
WHERE width IS NOT NULL
  AND len(bbox) = 4
  AND (bbox_x < -1 OR bbox_y < -1 OR bbox_x + bbox_w > width + 1 OR bbox_y + bbox_h > height + 1)
ORDER BY split, source_file, id;
