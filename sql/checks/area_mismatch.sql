-- One row per annotation whose stored `area` is far from the pixel count of its mask:
-- off by more than 16 pixels and by more than 30% of the larger of the two. COCO's
-- polygon areas are computed on the polygon, not the pixels (small objects differ by up
-- to ~13%), and its crowd areas by up to ~22%: both stay inside.
SELECT
    split,
    source_file,
    id AS annotation_id,
    image_id,
    iscrowd,
    segmentation_format,
    area,
    mask_area,
    CAST(abs(area - mask_area) / greatest(area, mask_area) AS DOUBLE) AS relative_difference
FROM annotations
WHERE area IS NOT NULL
  AND mask_area IS NOT NULL
  AND abs(area - mask_area) > 16
  AND abs(area - mask_area) > 0.3 * greatest(area, mask_area)
ORDER BY split, source_file, id;
