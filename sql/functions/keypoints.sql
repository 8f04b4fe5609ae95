-- Keypoint helpers over COCO's flat keypoint lists [x1, y1, v1, x2, y2, v2, ...], where
-- v = 0 is not labelled (x = y = 0), 1 labelled but not visible, 2 labelled and visible.
-- Joints are numbered from 1, as in the categories' `skeleton` and DuckDB lists.
-- Pure SQL: stored in the database that `cocolake views --db` writes.

-- number of joints in the list
CREATE OR REPLACE MACRO kp_count(kps) AS
    CAST(len(kps) // 3 AS BIGINT);

-- joint i as {x, y, v}; NULL when i is out of range
CREATE OR REPLACE MACRO kp_joint(kps, i) AS
    CASE WHEN i BETWEEN 1 AND len(kps) // 3 THEN
        struct_pack(
            x := CAST(kps[3 * i - 2] AS DOUBLE),
            y := CAST(kps[3 * i - 1] AS DOUBLE),
            v := CAST(kps[3 * i] AS INTEGER)
        )
    END;

-- every joint as {joint, x, y, v}
CREATE OR REPLACE MACRO kp_joints(kps) AS
    list_transform(
        range(1, len(kps) // 3 + 1),
        lambda kp_i: struct_pack(
            joint := CAST(kp_i AS BIGINT),
            x := CAST(kps[3 * kp_i - 2] AS DOUBLE),
            y := CAST(kps[3 * kp_i - 1] AS DOUBLE),
            v := CAST(kps[3 * kp_i] AS INTEGER)
        )
    );

-- the visibility flags, one per joint
CREATE OR REPLACE MACRO kp_visibility(kps) AS
    list_transform(range(1, len(kps) // 3 + 1), lambda kp_i: CAST(kps[3 * kp_i] AS INTEGER));

-- joints with v > 0 (what COCO stores as num_keypoints)
CREATE OR REPLACE MACRO kp_labeled_count(kps) AS
    CAST(len(list_filter(range(1, len(kps) // 3 + 1), lambda kp_i: kps[3 * kp_i] > 0)) AS BIGINT);

-- joints with v = 2
CREATE OR REPLACE MACRO kp_visible_count(kps) AS
    CAST(len(list_filter(range(1, len(kps) // 3 + 1), lambda kp_i: kps[3 * kp_i] = 2)) AS BIGINT);

-- [x, y, w, h] around the labelled joints; NULL when none is labelled
CREATE OR REPLACE MACRO kp_bbox(kps) AS
    CASE WHEN kp_labeled_count(kps) > 0 THEN
        [
            list_min(list_transform(list_filter(range(1, len(kps) // 3 + 1), lambda kp_i: kps[3 * kp_i] > 0),
                                    lambda kp_i: CAST(kps[3 * kp_i - 2] AS DOUBLE))),
            list_min(list_transform(list_filter(range(1, len(kps) // 3 + 1), lambda kp_i: kps[3 * kp_i] > 0),
                                    lambda kp_i: CAST(kps[3 * kp_i - 1] AS DOUBLE))),
            list_max(list_transform(list_filter(range(1, len(kps) // 3 + 1), lambda kp_i: kps[3 * kp_i] > 0),
                                    lambda kp_i: CAST(kps[3 * kp_i - 2] AS DOUBLE)))
            - list_min(list_transform(list_filter(range(1, len(kps) // 3 + 1), lambda kp_i: kps[3 * kp_i] > 0),
                                      lambda kp_i: CAST(kps[3 * kp_i - 2] AS DOUBLE))),
            list_max(list_transform(list_filter(range(1, len(kps) // 3 + 1), lambda kp_i: kps[3 * kp_i] > 0),
                                    lambda kp_i: CAST(kps[3 * kp_i - 1] AS DOUBLE)))
            - list_min(list_transform(list_filter(range(1, len(kps) // 3 + 1), lambda kp_i: kps[3 * kp_i] > 0),
                                      lambda kp_i: CAST(kps[3 * kp_i - 1] AS DOUBLE)))
        ]
    END;
