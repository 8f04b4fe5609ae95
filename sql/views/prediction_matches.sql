-- One row per evaluated detection and IoU threshold (outcome tp, fp or ignored), plus one
-- row per ground truth that no detection matched at that threshold (outcome fn), as the
-- last `cocolake evaluate` of each run and IoU type on its whole split found them
-- (COCOeval's matching, area range "all"). `iou` is the IoU (OKS for keypoints) with the
-- matched ground truth; `best_*` the same-category ground truth overlapping it most,
-- `other_*` the ground truth of another category overlapping it most.
CREATE OR REPLACE VIEW prediction_matches AS
SELECT
    m.*,
    c.name AS category_name,
    o.name AS other_category_name
FROM raw_prediction_matches AS m
LEFT JOIN categories AS c ON c.split = m.split AND c.id = m.category_id
LEFT JOIN categories AS o ON o.split = m.split AND o.id = m.other_category_id;
