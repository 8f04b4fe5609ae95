-- One row per id of a merged dataset (`cocolake merge`) and a source record it came from:
-- id_space (images, annotations, captions, categories), the merged id in the column of its
-- space (image_id; annotation_id for annotations and captions; category_id), the source
-- dataset and the id there (as text), per split. An image that two sources share has two
-- rows. Empty for a dataset that was not made by a merge.
CREATE OR REPLACE VIEW merge_sources AS
SELECT
    CAST(id_space AS VARCHAR) AS id_space,
    image_id,
    annotation_id,
    category_id,
    CAST(source_dataset AS VARCHAR) AS source_dataset,
    CAST(original_id AS VARCHAR) AS original_id,
    split
FROM raw_merge_sources;
