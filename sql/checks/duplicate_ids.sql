-- One row per id that more than one record of a split uses: annotations and captions
-- across the split's files (a person-keypoints file repeating an instances annotation is
-- not a duplicate), images and categories within one file.
WITH duplicates AS (
    SELECT 'annotations' AS table_name, split, CAST(id AS VARCHAR) AS id, count(*) AS copies,
           list(DISTINCT source_file ORDER BY source_file) AS source_files
    FROM annotations
    GROUP BY split, id
    HAVING count(*) > 1
    UNION ALL
    SELECT 'captions', split, CAST(id AS VARCHAR), count(*), list(DISTINCT source_file ORDER BY source_file)
    FROM captions
    GROUP BY split, id
    HAVING count(*) > 1
    UNION ALL
    SELECT 'images', split, CAST(id AS VARCHAR), count(*), list(DISTINCT source_file ORDER BY source_file)
    FROM raw_images
    GROUP BY split, source_file, id
    HAVING count(*) > 1
    UNION ALL
    SELECT 'categories', split, CAST(id AS VARCHAR), count(*), list(DISTINCT source_file ORDER BY source_file)
    FROM raw_categories
    GROUP BY split, source_file, id
    HAVING count(*) > 1
)
SELECT
    CAST(table_name AS VARCHAR) AS table_name,
    CAST(split AS VARCHAR) AS split,
    CAST(id AS VARCHAR) AS id,
    CAST(copies AS BIGINT) AS copies,
    CAST(source_files AS VARCHAR[]) AS source_files
FROM duplicates
ORDER BY table_name, split, id;
