-- One row per run, IoU type, IoU threshold and category: detections, true and false
-- positives, misses, and the false positives by cause: duplicate (a same-category ground
-- truth overlaps enough but a higher-scored detection took it), localisation (same
-- category, 0.1 <= IoU < threshold), confusion (overlaps a ground truth of another
-- category by IoU >= 0.1) and background (the rest).
CREATE OR REPLACE VIEW prediction_false_positives AS
WITH classified AS (
    SELECT
        *,
        CASE
            WHEN outcome <> 'fp' THEN NULL
            WHEN best_iou >= iou_threshold THEN 'duplicate'
            WHEN best_iou >= 0.1 THEN 'localisation'
            WHEN other_iou >= 0.1 THEN 'confusion'
            ELSE 'background'
        END AS fp_cause
    FROM prediction_matches
)
SELECT
    run,
    iou_type,
    iou_threshold,
    split,
    category_id,
    any_value(category_name) AS category_name,
    CAST(count(*) FILTER (WHERE outcome IN ('tp', 'fp', 'ignored')) AS BIGINT) AS detections,
    CAST(count(*) FILTER (WHERE outcome = 'tp') AS BIGINT) AS true_positives,
    CAST(count(*) FILTER (WHERE outcome = 'fp') AS BIGINT) AS false_positives,
    CAST(count(*) FILTER (WHERE outcome = 'fn') AS BIGINT) AS misses,
    CAST(count(*) FILTER (WHERE fp_cause = 'duplicate') AS BIGINT) AS fp_duplicate,
    CAST(count(*) FILTER (WHERE fp_cause = 'localisation') AS BIGINT) AS fp_localisation,
    CAST(count(*) FILTER (WHERE fp_cause = 'confusion') AS BIGINT) AS fp_confusion,
    CAST(count(*) FILTER (WHERE fp_cause = 'background') AS BIGINT) AS fp_background
FROM classified
GROUP BY run, iou_type, iou_threshold, split, category_id;
