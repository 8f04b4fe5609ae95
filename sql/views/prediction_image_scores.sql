-- One row per run, IoU type, IoU threshold and image with detections or ground truth:
-- true positives, false positives, misses, precision, recall and the mean IoU of the
-- true positives (the images a model does worst on sort first by recall or precision).
CREATE OR REPLACE VIEW prediction_image_scores AS
WITH counts AS (
    SELECT
        run,
        iou_type,
        iou_threshold,
        split,
        image_id,
        count(*) FILTER (WHERE outcome = 'tp') AS tp,
        count(*) FILTER (WHERE outcome = 'fp') AS fp,
        count(*) FILTER (WHERE outcome = 'fn') AS fn,
        avg(iou) FILTER (WHERE outcome = 'tp') AS mean_tp_iou
    FROM prediction_matches
    GROUP BY run, iou_type, iou_threshold, split, image_id
)
SELECT
    c.run,
    c.iou_type,
    c.iou_threshold,
    c.split,
    c.image_id,
    i.file_name,
    CAST(c.tp AS BIGINT) AS true_positives,
    CAST(c.fp AS BIGINT) AS false_positives,
    CAST(c.fn AS BIGINT) AS misses,
    CAST(CASE WHEN c.tp + c.fp > 0 THEN c.tp / (c.tp + c.fp) END AS DOUBLE) AS precision,
    CAST(CASE WHEN c.tp + c.fn > 0 THEN c.tp / (c.tp + c.fn) END AS DOUBLE) AS recall,
    CAST(c.mean_tp_iou AS DOUBLE) AS mean_tp_iou
FROM counts AS c
LEFT JOIN images AS i ON i.split = c.split AND i.id = c.image_id;
