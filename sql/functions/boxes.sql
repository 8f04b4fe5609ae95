-- Box helpers over COCO boxes [x, y, w, h] (the `bbox` column).
-- Pure SQL: stored in the database that `cocolake views --db` writes.

-- w * h
CREATE OR REPLACE MACRO bbox_area(b) AS
    CAST(b[3] * b[4] AS DOUBLE);

-- [x1, y1, x2, y2]
CREATE OR REPLACE MACRO bbox_xyxy(b) AS
    [CAST(b[1] AS DOUBLE), CAST(b[2] AS DOUBLE), CAST(b[1] + b[3] AS DOUBLE), CAST(b[2] + b[4] AS DOUBLE)];

-- IoU of box a with box b as pycocotools' bbIou (b is the ground truth: with iscrowd the
-- union is a's area); 0 when they do not overlap
CREATE OR REPLACE MACRO bbox_iou(a, b, iscrowd := false) AS
    CASE
        WHEN least(a[1] + a[3], b[1] + b[3]) - greatest(a[1], b[1]) <= 0
          OR least(a[2] + a[4], b[2] + b[4]) - greatest(a[2], b[2]) <= 0 THEN CAST(0 AS DOUBLE)
        ELSE CAST(
            (least(a[1] + a[3], b[1] + b[3]) - greatest(a[1], b[1]))
            * (least(a[2] + a[4], b[2] + b[4]) - greatest(a[2], b[2]))
            / CASE WHEN CAST(iscrowd AS BOOLEAN) THEN a[3] * a[4]
                   ELSE a[3] * a[4] + b[3] * b[4]
                        - (least(a[1] + a[3], b[1] + b[3]) - greatest(a[1], b[1]))
                        * (least(a[2] + a[4], b[2] + b[4]) - greatest(a[2], b[2]))
              END
            AS DOUBLE)
    END;
