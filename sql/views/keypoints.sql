-- One row per person-keypoints annotation: x, y, v per joint in `keypoints`.
CREATE OR REPLACE VIEW keypoints AS
SELECT * FROM raw_keypoints;
