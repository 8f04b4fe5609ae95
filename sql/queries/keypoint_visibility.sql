-- Keypoint visibility per joint: one row per split and joint with the annotations that
-- have keypoints, how many label the joint (v > 0) and how many see it (v = 2).
SELECT
    split,
    joint,
    joint_name,
    CAST(count(*) AS BIGINT) AS annotations,
    CAST(count(*) FILTER (WHERE v > 0) AS BIGINT) AS labeled,
    CAST(count(*) FILTER (WHERE v = 2) AS BIGINT) AS visible,
    CAST(round(100.0 * count(*) FILTER (WHERE v > 0) / count(*), 2) AS DOUBLE) AS percent_labeled,
    CAST(round(100.0 * count(*) FILTER (WHERE v = 2) / count(*), 2) AS DOUBLE) AS percent_visible
FROM keypoint_joints
GROUP BY split, joint, joint_name
ORDER BY split, joint;
