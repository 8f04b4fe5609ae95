-- One row per detection of a model run (`cocolake ingest-results`), with its image, its
-- category and COCO's area bucket of the detection's `area` (small < 32², medium < 96²).
CREATE OR REPLACE VIEW predictions AS
SELECT
    p.*,
    i.file_name,
    CAST(i.height AS BIGINT) AS height,
    CAST(i.width AS BIGINT) AS width,
    c.name AS category_name,
    c.supercategory,
    CAST(
        CASE
            WHEN p.area IS NULL THEN NULL
            WHEN p.area < 32 * 32 THEN 'small'
            WHEN p.area < 96 * 96 THEN 'medium'
            ELSE 'large'
        END AS VARCHAR
    ) AS area_bucket
FROM raw_predictions AS p
LEFT JOIN images AS i ON i.split = p.split AND i.id = p.image_id
LEFT JOIN categories AS c ON c.split = p.split AND c.id = p.category_id;
