-- One row per joint of each person-keypoints annotation: its number (from 1, as in the
-- category's `skeleton`), its name from the category's `keypoints`, x, y and the
-- visibility flag v (0 not labelled, 1 labelled but hidden, 2 visible).
CREATE OR REPLACE VIEW keypoint_joints AS
WITH annotation_categories AS (
    SELECT DISTINCT split, source_file, id, category_id
    FROM raw_annotations
    WHERE kind = 'person_keypoints'
),
joints AS (
    SELECT
        k.split,
        k.annotation_id,
        k.image_id,
        a.category_id,
        k.keypoints,
        unnest(range(1, len(k.keypoints) // 3 + 1)) AS joint
    FROM keypoints AS k
    LEFT JOIN annotation_categories AS a
        ON a.split = k.split AND a.source_file = k.source_file AND a.id = k.annotation_id
)
SELECT
    j.split,
    j.annotation_id,
    j.image_id,
    j.category_id,
    CAST(j.joint AS BIGINT) AS joint,
    CAST(c.keypoints[j.joint] AS VARCHAR) AS joint_name,
    CAST(j.keypoints[3 * j.joint - 2] AS DOUBLE) AS x,
    CAST(j.keypoints[3 * j.joint - 1] AS DOUBLE) AS y,
    CAST(j.keypoints[3 * j.joint] AS INTEGER) AS v
FROM joints AS j
LEFT JOIN categories AS c ON c.split = j.split AND c.id = j.category_id;
