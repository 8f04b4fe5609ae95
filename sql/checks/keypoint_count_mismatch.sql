-- One row per person-keypoints annotation whose `num_keypoints` is not the number of
-- labelled joints (v > 0), or whose keypoint list does not hold x, y, v for each joint
-- its category names.
WITH annotation_categories AS (
    SELECT DISTINCT split, source_file, id, category_id
    FROM raw_annotations
    WHERE kind = 'person_keypoints'
)
SELECT
    k.split,
    k.source_file,
    k.annotation_id,
    k.image_id,
    k.num_keypoints,
    kp_labeled_count(k.keypoints) AS labeled_joints,
    CAST(len(k.keypoints) AS BIGINT) AS keypoint_values,
    CAST(len(c.keypoints) AS BIGINT) AS category_joints
FROM keypoints AS k
LEFT JOIN annotation_categories AS a
    ON a.split = k.split AND a.source_file = k.source_file AND a.id = k.annotation_id
LEFT JOIN categories AS c ON c.split = k.split AND c.id = a.category_id
WHERE k.num_keypoints IS DISTINCT FROM kp_labeled_count(k.keypoints)
   OR len(k.keypoints) % 3 <> 0
   OR (len(c.keypoints) > 0 AND len(k.keypoints) <> 3 * len(c.keypoints))
ORDER BY k.split, k.source_file, k.annotation_id;
