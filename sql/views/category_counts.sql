-- One row per split and category that has annotations: its annotations (crowd included,
-- as pycocotools' getAnnIds(catIds=...) counts them), the images they are on, the crowd
-- annotations, mean and median `area`, and COCO's area buckets (small < 32², medium < 96²,
-- large). category_stats adds the categories without annotations and the names.
-- Every commit that changes a split's annotations stores these rows (table
-- category_counts, computed by this view); when every split has them stored, the view
-- reads them instead (raw_category_counts), which is the same rows without a scan.
-- It reads `annotations`, not `annotations_enriched`: every column it needs is there, and
-- the enriched view's joins (one row per annotation either way) cost a third of its time.
CREATE OR REPLACE VIEW category_counts AS
SELECT
    split,
    category_id,
    count(*) AS annotations,
    count(DISTINCT image_id) AS images,
    count(*) FILTER (WHERE iscrowd <> 0) AS crowd,
    CAST(avg(area) AS DOUBLE) AS mean_area,
    CAST(median(area) AS DOUBLE) AS median_area,
    -- area_bucket's thresholds (annotations_enriched) on the number itself: the same
    -- counts without building the bucket string of every row
    count(*) FILTER (WHERE area < 32 * 32) AS small,
    count(*) FILTER (WHERE area >= 32 * 32 AND area < 96 * 96) AS medium,
    count(*) FILTER (WHERE area >= 96 * 96) AS large
FROM annotations
GROUP BY split, category_id;
