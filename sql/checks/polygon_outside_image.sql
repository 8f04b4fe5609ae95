-- One row per polygon annotation whose every polygon lies entirely outside its image
-- (its vertices' extent does not overlap [0, width] x [0, height]): the mask is empty.
SELECT
    split,
    source_file,
    id AS annotation_id,
    image_id,
    file_name,
    CAST(width AS BIGINT) AS width,
    CAST(height AS BIGINT) AS height,
    CAST(len(polygons) AS BIGINT) AS polygon_count,
    mask_area
FROM annotations_enriched
WHERE polygons IS NOT NULL
  AND len(polygons) > 0
  AND width IS NOT NULL
  AND list_bool_and(list_transform(polygons, lambda poly:
        len(poly) < 2
        OR list_max(poly[1:-1:2]) <= 0 OR list_min(poly[1:-1:2]) >= width
        OR list_max(poly[2:-1:2]) <= 0 OR list_min(poly[2:-1:2]) >= height))
ORDER BY split, source_file, id;
