-- One row per object annotation, with its image, its category, COCO's area bucket
-- (small < 32², medium < 96², large otherwise, on `area`) and the box in pixels and
-- normalised to the image size. `mask_area` is the pixel count of the RLE mask.
CREATE OR REPLACE VIEW annotations_enriched AS
SELECT
    a.*,
    i.file_name,
    CAST(i.height AS BIGINT) AS height,
    CAST(i.width AS BIGINT) AS width,
    c.name AS category_name,
    c.supercategory,
    CAST(
        CASE
            WHEN a.area IS NULL THEN NULL
            WHEN a.area < 32 * 32 THEN 'small'
            WHEN a.area < 96 * 96 THEN 'medium'
            ELSE 'large'
        END AS VARCHAR
    ) AS area_bucket,
    CAST(a.bbox[1] AS DOUBLE) AS bbox_x,
    CAST(a.bbox[2] AS DOUBLE) AS bbox_y,
    CAST(a.bbox[3] AS DOUBLE) AS bbox_w,
    CAST(a.bbox[4] AS DOUBLE) AS bbox_h,
    CAST((a.bbox[1] + a.bbox[3] / 2) / i.width AS DOUBLE) AS bbox_cx_norm,
    CAST((a.bbox[2] + a.bbox[4] / 2) / i.height AS DOUBLE) AS bbox_cy_norm,
    CAST(a.bbox[3] / i.width AS DOUBLE) AS bbox_w_norm,
    CAST(a.bbox[4] / i.height AS DOUBLE) AS bbox_h_norm
FROM annotations AS a
LEFT JOIN images AS i ON i.split = a.split AND i.id = a.image_id
LEFT JOIN categories AS c ON c.split = a.split AND c.id = a.category_id;
