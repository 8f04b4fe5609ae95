-- One row per run, IoU type, IoU threshold, predicted category and ground-truth category:
-- false positives that overlap a ground truth of that other category by at least the
-- threshold (they would be true positives with the other label).
CREATE OR REPLACE VIEW prediction_confusions AS
SELECT
    run,
    iou_type,
    iou_threshold,
    split,
    category_id AS predicted_category_id,
    any_value(category_name) AS predicted_category,
    other_category_id AS true_category_id,
    any_value(other_category_name) AS true_category,
    CAST(count(*) AS BIGINT) AS detections,
    CAST(avg(score) AS DOUBLE) AS mean_score,
    CAST(avg(other_iou) AS DOUBLE) AS mean_iou
FROM prediction_matches
WHERE outcome = 'fp' AND other_iou >= iou_threshold
GROUP BY run, iou_type, iou_threshold, split, category_id, other_category_id;
