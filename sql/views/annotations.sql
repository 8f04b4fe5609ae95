-- One row per object annotation (instances and stuff files). A person_keypoints file
-- repeats the person instances of its split with keypoints added; its rows appear here
-- only when no instances file of the split has the same annotation id (keypoints-only
-- datasets), so counts are never doubled. raw_annotations keeps every file's rows.
-- instance_ids is not made DISTINCT: the anti join does not need it, and de-duplicating
-- every instance id costs more than the rest of a selective query.
CREATE OR REPLACE VIEW annotations AS
WITH instance_ids AS (
    SELECT split, id FROM raw_annotations WHERE kind = 'instances'
)
SELECT a.*
FROM raw_annotations AS a
WHERE a.kind <> 'person_keypoints'
UNION ALL BY NAME
SELECT a.*
FROM raw_annotations AS a
ANTI JOIN instance_ids AS i ON a.split = i.split AND a.id = i.id
WHERE a.kind = 'person_keypoints';
