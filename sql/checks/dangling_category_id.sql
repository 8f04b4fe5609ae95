-- One row per annotation whose category_id is not a category of its split.
WITH known AS (
    SELECT DISTINCT split, id FROM categories
)
SELECT
    a.split,
    a.source_file,
    a.id AS annotation_id,
    a.image_id,
    a.category_id
FROM annotations AS a
ANTI JOIN known AS c ON c.split = a.split AND c.id = a.category_id
ORDER BY a.split, a.source_file, a.id;
