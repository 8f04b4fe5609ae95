-- One row per image id that the files of a split describe differently (file name, width
-- or height): the `images` view keeps one of them (instances files first).
SELECT
    split,
    CAST(id AS VARCHAR) AS image_id,
    list(DISTINCT file_name ORDER BY file_name) AS file_names,
    list(DISTINCT width ORDER BY width) AS widths,
    list(DISTINCT height ORDER BY height) AS heights,
    list(DISTINCT source_file ORDER BY source_file) AS source_files
FROM raw_images
GROUP BY split, id
HAVING count(DISTINCT file_name) > 1 OR count(DISTINCT width) > 1 OR count(DISTINCT height) > 1
ORDER BY split, image_id;
