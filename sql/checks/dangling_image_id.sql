-- One row per annotation, person-keypoints annotation or caption whose image_id is not an
-- image of its split.
WITH known AS (
    SELECT DISTINCT split, id FROM images
),
dangling AS (
    SELECT 'annotations' AS table_name, a.split, a.source_file, CAST(a.id AS VARCHAR) AS record_id,
           CAST(a.image_id AS VARCHAR) AS image_id
    FROM annotations AS a
    ANTI JOIN known AS i ON i.split = a.split AND i.id = a.image_id
    UNION ALL
    SELECT 'keypoints', k.split, k.source_file, CAST(k.annotation_id AS VARCHAR), CAST(k.image_id AS VARCHAR)
    FROM keypoints AS k
    ANTI JOIN known AS i ON i.split = k.split AND i.id = k.image_id
    UNION ALL
    SELECT 'captions', c.split, c.source_file, CAST(c.id AS VARCHAR), CAST(c.image_id AS VARCHAR)
    FROM captions AS c
    ANTI JOIN known AS i ON i.split = c.split AND i.id = c.image_id
)
SELECT
    CAST(table_name AS VARCHAR) AS table_name,
    CAST(split AS VARCHAR) AS split,
    CAST(source_file AS VARCHAR) AS source_file,
    CAST(record_id AS VARCHAR) AS record_id,
    CAST(image_id AS VARCHAR) AS image_id
FROM dangling
ORDER BY table_name, split, source_file, record_id;
