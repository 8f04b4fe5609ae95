"""Views of sql/views: a golden test per view on tiny inline data; counts equal pycocotools'
on coco-mini; the connection that user SQL runs on only reads the warehouse."""

from __future__ import annotations

import json
import re

import pytest

from pipeline.errors import QueryError, WarehouseError
from pipeline.query.views import connect, run_sql

LICENSES = [{"id": 1, "name": "CC BY", "url": "http://example.org/by"}]
IMAGES = [
    {"id": 1, "file_name": "a.jpg", "width": 120, "height": 100, "license": 1},
    {"id": 2, "file_name": "b.jpg", "width": 40, "height": 40, "license": 1},
    {"id": 3, "file_name": "c.jpg", "width": 20, "height": 10, "license": 1},
]
CATEGORIES = [
    {"id": 1, "name": "cat", "supercategory": "animal"},
    {"id": 2, "name": "dog", "supercategory": "animal"},
    {"id": 3, "name": "person", "supercategory": "person"},
    {"id": 4, "name": "unicorn", "supercategory": "animal"},
]
SQUARE = [10, 10, 20, 10, 20, 20, 10, 20]  # 10 x 10 at (10, 10)
PERSON = {"id": 13, "image_id": 1, "category_id": 3, "iscrowd": 0, "area": 10000.0, "bbox": [0, 0, 100, 100],
          "segmentation": [[0, 0, 100, 0, 100, 100, 0, 100]]}
TINY_INSTANCES = {
    "info": {"description": "tiny"},
    "licenses": LICENSES,
    "images": IMAGES,
    "categories": CATEGORIES,
    "annotations": [
        {"id": 10, "image_id": 1, "category_id": 1, "iscrowd": 0, "area": 100.0, "bbox": [10, 10, 10, 10],
         "segmentation": [SQUARE]},
        {"id": 11, "image_id": 1, "category_id": 2, "iscrowd": 0, "area": 2400.0, "bbox": [0, 0, 60, 40],
         "segmentation": [[0, 0, 60, 0, 60, 40, 0, 40]]},
        {"id": 12, "image_id": 2, "category_id": 1, "iscrowd": 1, "area": 1600.0, "bbox": [0, 0, 40, 40],
         "segmentation": {"counts": [0, 1600], "size": [40, 40]}},
        PERSON,
    ],
}
TINY_KEYPOINTS = {
    "licenses": LICENSES,
    "images": IMAGES,
    "categories": [{"id": 3, "name": "person", "supercategory": "person",
                    "keypoints": ["nose", "left_eye"], "skeleton": [[1, 2]]}],
    # the person of the instances file again, with keypoints: counted once in `annotations`
    "annotations": [{**PERSON, "num_keypoints": 1, "keypoints": [5, 5, 2, 0, 0, 0]}],
}
TINY_CAPTIONS = {
    "licenses": LICENSES,
    "images": IMAGES,
    "annotations": [
        {"id": 100, "image_id": 1, "caption": "A cat and a dog."},
        {"id": 101, "image_id": 1, "caption": "Two animals and a person"},
        {"id": 102, "image_id": 2, "caption": "A crowd of cats."},
    ],
}
TRAIN_FILES = ["captions_train2017.json", "instances_train2017.json", "person_keypoints_train2017.json"]


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    """TINY_* ingested as split train2017; returns (warehouse, dataset)."""
    from pipeline.ingest.run import run_ingest

    src = tmp_path_factory.mktemp("tiny-src")
    for name, doc in zip(TRAIN_FILES, (TINY_CAPTIONS, TINY_INSTANCES, TINY_KEYPOINTS)):
        (src / name).write_text(json.dumps(doc))
    wh = tmp_path_factory.mktemp("tiny-wh")
    run_ingest([str(src)], warehouse=str(wh), dataset="tiny", workers=1)
    return str(wh), "tiny"


@pytest.fixture(scope="module")
def con(tiny):
    c = connect(*tiny)
    yield c
    c.close()


def rows(con, sql: str, params: list | None = None) -> list[tuple]:
    return con.execute(sql, params or []).fetchall()


# ------------------------------------------------------------------ base views
def test_images(con):
    assert rows(con, "SELECT split, id, file_name, width, height, license FROM images ORDER BY id") == [
        ("train2017", 1, "a.jpg", 120, 100, 1),
        ("train2017", 2, "b.jpg", 40, 40, 1),
        ("train2017", 3, "c.jpg", 20, 10, 1),
    ]
    # three files list the images; raw_images keeps them all, images one per id
    assert rows(con, "SELECT count(*) FROM raw_images") == [(9,)]
    assert rows(con, "SELECT DISTINCT kind FROM images") == [("instances",)]


def test_annotations_count_person_once(con):
    assert rows(con, "SELECT id, image_id, category_id, iscrowd, area, mask_area, segmentation_format, kind "
                     "FROM annotations ORDER BY id") == [
        (10, 1, 1, 0, 100.0, 100, "polygon", "instances"),
        (11, 1, 2, 0, 2400.0, 2400, "polygon", "instances"),
        (12, 2, 1, 1, 1600.0, 1600, "uncompressed_rle", "instances"),
        (13, 1, 3, 0, 10000.0, 10000, "polygon", "instances"),
    ]
    assert rows(con, "SELECT count(*) FROM raw_annotations") == [(5,)]


def test_categories_keypoint_file_wins(con):
    assert rows(con, "SELECT id, name, supercategory, keypoints, skeleton FROM categories ORDER BY id") == [
        (1, "cat", "animal", None, None),
        (2, "dog", "animal", None, None),
        (3, "person", "person", ["nose", "left_eye"], [[1, 2]]),
        (4, "unicorn", "animal", None, None),
    ]


def test_licenses_captions_keypoints(con):
    assert rows(con, "SELECT split, id, name, url FROM licenses") == [
        ("train2017", 1, "CC BY", "http://example.org/by")]
    assert rows(con, "SELECT id, image_id, caption FROM captions ORDER BY id") == [
        (100, 1, "A cat and a dog."), (101, 1, "Two animals and a person"), (102, 2, "A crowd of cats.")]
    assert rows(con, "SELECT annotation_id, image_id, num_keypoints, keypoints FROM keypoints") == [
        (13, 1, 1, [5.0, 5.0, 2.0, 0.0, 0.0, 0.0])]
    assert rows(con, "SELECT count(*) FROM rejects") == [(0,)]


def test_annotations_enriched(con):
    got = rows(con, """
        SELECT id, file_name, height, width, category_name, supercategory, area_bucket,
               bbox_x, bbox_y, bbox_w, bbox_h, bbox_cx_norm, bbox_cy_norm, bbox_w_norm, bbox_h_norm, mask_area
        FROM annotations_enriched ORDER BY id""")
    assert got == [
        (10, "a.jpg", 100, 120, "cat", "animal", "small", 10.0, 10.0, 10.0, 10.0, 15 / 120, 0.15, 10 / 120, 0.1, 100),
        (11, "a.jpg", 100, 120, "dog", "animal", "medium", 0.0, 0.0, 60.0, 40.0, 0.25, 0.2, 0.5, 0.4, 2400),
        (12, "b.jpg", 40, 40, "cat", "animal", "medium", 0.0, 0.0, 40.0, 40.0, 0.5, 0.5, 1.0, 1.0, 1600),
        (13, "a.jpg", 100, 120, "person", "person", "large", 0.0, 0.0, 100.0, 100.0, 50 / 120, 0.5, 100 / 120, 1.0,
         10000),
    ]


# ------------------------------------------------------------------ statistics views
def test_category_stats(con):
    assert rows(con, "SELECT * FROM category_stats") == [
        # split, id, name, supercategory, annotations, images, crowd, mean, median, small, medium, large
        ("train2017", 1, "cat", "animal", 2, 2, 1, 850.0, 850.0, 1, 1, 0),
        ("train2017", 2, "dog", "animal", 1, 1, 0, 2400.0, 2400.0, 0, 1, 0),
        ("train2017", 3, "person", "person", 1, 1, 0, 10000.0, 10000.0, 0, 0, 1),
        ("train2017", 4, "unicorn", "animal", 0, 0, 0, None, None, 0, 0, 0),
    ]


def test_image_stats(con):
    assert [d[0] for d in con.execute("SELECT * FROM image_stats").description] == [
        "split", "image_id", "file_name", "width", "height", "annotations", "distinct_categories", "crowd",
        "keypoint_annotations", "labeled_keypoints", "captions"]
    assert rows(con, "SELECT * FROM image_stats") == [
        ("train2017", 1, "a.jpg", 120, 100, 3, 3, 0, 1, 1, 2),
        ("train2017", 2, "b.jpg", 40, 40, 1, 1, 1, 0, 0, 1),
        ("train2017", 3, "c.jpg", 20, 10, 0, 0, 0, 0, 0, 0),
    ]


def test_split_summary(con):
    assert [d[0] for d in con.execute("SELECT * FROM split_summary").description] == [
        "split", "images", "annotated_images", "images_without_annotations", "annotations", "crowd",
        "annotations_per_image", "categories", "categories_used", "keypoint_annotations", "captions", "rejects",
        "source_files"]
    assert rows(con, "SELECT * FROM split_summary") == [
        ("train2017", 3, 2, 1, 4, 1, 4 / 3, 4, 3, 1, 3, 0, TRAIN_FILES)]


def test_keypoint_joints(con):
    assert rows(con, "SELECT * FROM keypoint_joints ORDER BY joint") == [
        ("train2017", 13, 1, 3, 1, "nose", 5.0, 5.0, 2),
        ("train2017", 13, 1, 3, 2, "left_eye", 0.0, 0.0, 0),
    ]


def test_rejects_view_and_summary(tmp_path):
    from pipeline.ingest.run import run_ingest

    bad = dict(TINY_INSTANCES, annotations=TINY_INSTANCES["annotations"] + [
        {"id": 14, "image_id": 1, "category_id": 1, "iscrowd": 0, "area": 1.0, "bbox": [0, 0, 1, 1],
         "segmentation": [[0, 0, 1, 0, 1]]}])
    (tmp_path / "instances_val2017.json").write_text(json.dumps(bad))
    run_ingest([str(tmp_path / "instances_val2017.json")], warehouse=str(tmp_path / "wh"), dataset="d",
               workers=1, on_bad_record="skip")
    c = connect(str(tmp_path / "wh"), "d")
    assert rows(c, "SELECT split, section, record_id, source_file FROM rejects") == [
        ("val2017", "annotations", "14", "instances_val2017.json")]
    assert "polygon has 5" in rows(c, "SELECT reason FROM rejects")[0][0]
    assert rows(c, "SELECT split, annotations, rejects FROM split_summary") == [("val2017", 4, 1)]


def test_views_never_name_a_path():
    from pipeline.query.views import SQL_DIR, load_sql_dir

    for f in load_sql_dir(SQL_DIR / "views").values():
        assert "read_parquet" not in f.text and not re.search(r"'[^']*/[^']*'", f.text), f.name


# ------------------------------------------------------------------ coco-mini vs pycocotools
@pytest.fixture(scope="module")
def mini_con(mini_warehouse):
    c = connect(*mini_warehouse)
    yield c
    c.close()


@pytest.mark.parametrize("split", ["train2017", "val2017"])
def test_counts_equal_pycocotools(mini_con, coco_mini, split):
    from pycocotools.coco import COCO

    coco = COCO(str(coco_mini / "annotations" / f"instances_{split}.json"))
    per_category = dict(rows(mini_con, "SELECT category_id, annotations FROM category_stats WHERE split = $1", [split]))
    assert per_category == {c: len(coco.getAnnIds(catIds=[c])) for c in coco.getCatIds()}
    images_per_category = dict(rows(mini_con, "SELECT category_id, images FROM category_stats WHERE split = $1", [split]))
    assert images_per_category == {c: len(coco.getImgIds(catIds=[c])) for c in coco.getCatIds()}
    crowd = dict(rows(mini_con, "SELECT category_id, crowd FROM category_stats WHERE split = $1", [split]))
    assert crowd == {c: len(coco.getAnnIds(catIds=[c], iscrowd=True)) for c in coco.getCatIds()}
    per_image = dict(rows(mini_con, "SELECT image_id, annotations FROM image_stats WHERE split = $1", [split]))
    assert per_image == {i: len(coco.getAnnIds(imgIds=[i])) for i in coco.getImgIds()}
    distinct = dict(rows(mini_con, "SELECT image_id, distinct_categories FROM image_stats WHERE split = $1", [split]))
    assert distinct == {i: len({a["category_id"] for a in coco.imgToAnns[i]}) for i in coco.getImgIds()}
    summary = rows(mini_con, "SELECT images, annotations, crowd FROM split_summary WHERE split = $1", [split])
    anns = coco.dataset["annotations"]
    assert summary == [(len(coco.getImgIds()), len(anns), sum(a["iscrowd"] for a in anns))]


def test_area_buckets_equal_pycocotools_area_ranges(mini_con, coco_mini):
    from pycocotools.coco import COCO

    coco = COCO(str(coco_mini / "annotations" / "instances_val2017.json"))
    small = set(coco.getAnnIds(areaRng=[0, 32 ** 2]))  # 0 < area < 32²
    small_or_medium = set(coco.getAnnIds(areaRng=[0, 96 ** 2]))
    expected = {"small": small, "medium": small_or_medium - small, "large": set(coco.getAnnIds()) - small_or_medium}
    got = {b: set() for b in expected}
    for bucket, aid in rows(mini_con, "SELECT area_bucket, id FROM annotations_enriched WHERE split = 'val2017'"):
        got[bucket].add(aid)
    assert got == expected and all(got.values())


def test_a_connection_for_one_query_has_what_it_needs_and_gives_the_same_rows(mini_con, mini_warehouse):
    def views_and_functions(c):
        names = {r[0] for r in c.execute("SELECT view_name FROM duckdb_views() WHERE NOT internal").fetchall()}
        udfs = {r[0] for r in c.execute("SELECT function_name FROM duckdb_functions() "
                                        "WHERE function_name IN ('rle_area', 'bbox_area')").fetchall()}
        return names, udfs

    plain = "SELECT split, count(*) FROM category_stats GROUP BY split ORDER BY split"
    c = connect(*mini_warehouse, for_sql=plain)
    names, udfs = views_and_functions(c)
    # the stored per-category counts: no annotation is read (tests/query/test_summary.py)
    assert "category_stats" in names and "category_counts" in names and "image_stats" not in names and not udfs
    assert "annotations" not in names
    assert rows(c, plain) == rows(mini_con, plain)
    c.close()
    masks = "SELECT sum(rle_area(rle_counts, rle_size)) FROM annotations WHERE split = 'val2017'"
    c = connect(*mini_warehouse, for_sql=masks)
    assert views_and_functions(c)[1] == {"rle_area", "bbox_area"}
    assert rows(c, masks) == rows(mini_con, masks) == rows(mini_con, "SELECT sum(mask_area) FROM annotations "
                                                                     "WHERE split = 'val2017'")
    c.close()


@pytest.mark.parametrize("sql", ["SHOW TABLES", "SELECT view_name AS name FROM duckdb_views() WHERE NOT internal",
                                 "SELECT DISTINCT table_name AS name FROM information_schema.columns"])
def test_a_connection_for_sql_that_lists_the_catalog_has_every_view(mini_con, mini_warehouse, sql):
    every = {r[0] for r in mini_con.execute("SELECT view_name FROM duckdb_views() WHERE NOT internal").fetchall()}
    c = connect(*mini_warehouse, for_sql=sql)
    try:
        listed = {r[0] for r in c.execute(sql).fetchall()}
        functions = {r[0] for r in c.execute("SELECT function_name FROM duckdb_functions() "
                                             "WHERE function_name = 'rle_area'").fetchall()}
    finally:
        c.close()
    assert "annotations_enriched" in every and every <= listed and functions == {"rle_area"}


def _view_sql(c, name: str) -> str:
    return c.execute("SELECT sql FROM duckdb_views() WHERE view_name = $1", [name]).fetchone()[0]


def _general_annotations(c) -> list[tuple]:
    """The rows of sql/views/annotations.sql's query, whichever view the connection has."""
    from pipeline.query.sqlfiles import SQL_DIR

    text = (SQL_DIR / "views" / "annotations.sql").read_text()
    query = text[text.index("CREATE OR REPLACE VIEW annotations AS") + len("CREATE OR REPLACE VIEW annotations AS"):]
    return rows(c, f"SELECT id, kind FROM ({query.strip().rstrip(';')}) ORDER BY id, kind")


def test_annotations_without_keypoints_files_is_every_raw_row(tmp_path, con):
    from pipeline.ingest.run import run_ingest

    src = tmp_path / "src"
    src.mkdir()
    (src / "instances_train2017.json").write_text(json.dumps(TINY_INSTANCES))
    run_ingest([str(src)], warehouse=str(tmp_path / "wh"), dataset="tiny", workers=1)
    c = connect(str(tmp_path / "wh"), "tiny")
    try:
        # no keypoints file: the view is raw_annotations as it is, with the general view's rows
        assert "ANTI JOIN" not in _view_sql(c, "annotations").upper()
        assert rows(c, "SELECT id, kind FROM annotations ORDER BY id, kind") == _general_annotations(c) == [
            (10, "instances"), (11, "instances"), (12, "instances"), (13, "instances")]
        assert rows(c, "SELECT category_id, annotations, images FROM category_stats ORDER BY 1") == [
            (1, 2, 2), (2, 1, 1), (3, 1, 1), (4, 0, 0)]
    finally:
        c.close()
    # with a person_keypoints file, the anti join keeps its repeat of the person out
    assert "ANTI JOIN" in _view_sql(con, "annotations").upper()
    assert rows(con, "SELECT id, kind FROM annotations ORDER BY id, kind") == _general_annotations(con)


def test_which_datasets_may_have_keypoints_rows():
    from pipeline.manifest import Manifest, Part
    from pipeline.query.views import has_keypoints_files

    def manifest(kinds: dict[str, str]) -> Manifest:
        parts = [Part("annotations", "train", name, f"annotations/split=train/part-{i:05d}.parquet", 1)
                 for i, name in enumerate(["a.json", "b.json"])]
        return Manifest("d", 1, parts=parts, sources=[{"split": "train", "source_file": n, "kind": k}
                                                      for n, k in kinds.items()])

    assert not has_keypoints_files(manifest({"a.json": "instances", "b.json": "stuff"}))
    assert has_keypoints_files(manifest({"a.json": "instances", "b.json": "person_keypoints"}))
    assert has_keypoints_files(manifest({"a.json": "instances", "b.json": "instances,person_keypoints"}))
    assert has_keypoints_files(manifest({"a.json": "instances"}))  # a part no source entry describes


# ------------------------------------------------------------------ read-only user SQL
def test_restricted_connection_reads_views_only(tiny, tmp_path):
    outside = tmp_path / "outside.csv"
    outside.write_text("a\n1\n")
    c = connect(*tiny, restrict=True)
    assert run_sql(c, "SELECT count(*) AS n FROM annotations_enriched").to_pylist() == [{"n": 4}]
    with pytest.raises(QueryError, match="Permission Error"):
        run_sql(c, f"SELECT * FROM read_csv('{outside}')")
    with pytest.raises(QueryError, match="got COPY"):
        run_sql(c, f"COPY (SELECT 1) TO '{tmp_path / 'x.csv'}'")
    with pytest.raises(QueryError, match="statement 2 is ATTACH"):
        run_sql(c, f"SELECT 1; ATTACH '{tmp_path / 'x.duckdb'}'")
    # even without the statement guard, DuckDB itself refuses files outside the warehouse
    with pytest.raises(QueryError, match="Permission Error"):
        run_sql(c, f"COPY (SELECT 1) TO '{tmp_path / 'x.csv'}'", read_only=False)
    with pytest.raises(QueryError, match="locked"):
        run_sql(c, "SET enable_external_access = true", read_only=False)
    assert not (tmp_path / "x.csv").exists() and not (tmp_path / "x.duckdb").exists()


def test_errors_are_one_line(con):
    with pytest.raises(QueryError) as err:
        run_sql(con, "SELECT no_such_column FROM images")
    assert "\n" not in str(err.value) and "no_such_column" in str(err.value)
    with pytest.raises(QueryError, match="syntax error"):
        run_sql(con, "SELEC 1")
    with pytest.raises(QueryError, match="no SQL statement"):
        run_sql(con, "  -- nothing\n")


def test_missing_warehouse(tmp_path):
    with pytest.raises(WarehouseError, match="no warehouse here"):
        connect(str(tmp_path), "nothing")


# areas on both sides of 32² and 96²: pycocotools' getAnnIds(areaRng=[lo, hi]) keeps
# lo < area < hi, so [0, 32²] is "small" and [0, 96²] is "small" or "medium"
EDGE_AREAS = (1.0, 1023.9, 1024.0, 1024.1, 9215.9, 9216.0, 9216.1, 40000.0)
EDGE_INSTANCES = {
    "images": [{"id": 1, "file_name": "a.jpg", "width": 640, "height": 480}],
    "categories": [{"id": 1, "name": "cat"}],
    "annotations": [{"id": k + 1, "image_id": 1, "category_id": 1, "iscrowd": 0, "area": area,
                     "bbox": [0, 0, 10, 10], "segmentation": [[0, 0, 10, 0, 10, 10, 0, 10]]}
                    for k, area in enumerate(EDGE_AREAS)],
}


def test_area_buckets_at_the_edges_equal_pycocotools_area_ranges(tmp_path):
    from pycocotools.coco import COCO

    from pipeline.ingest.run import run_ingest

    src = tmp_path / "instances_val2017.json"
    src.write_text(json.dumps(EDGE_INSTANCES))
    run_ingest([str(src)], warehouse=str(tmp_path / "wh"), dataset="edges", workers=1)
    c = connect(str(tmp_path / "wh"), "edges")
    got = {}
    for bucket, aid in rows(c, "SELECT area_bucket, id FROM annotations_enriched ORDER BY id"):
        got.setdefault(bucket, set()).add(aid)
    c.close()
    coco = COCO(str(src))
    small = set(coco.getAnnIds(areaRng=[0, 32 ** 2]))
    small_or_medium = set(coco.getAnnIds(areaRng=[0, 96 ** 2]))
    assert got["small"] == small
    assert got["small"] | got["medium"] == small_or_medium and not got["small"] & got["medium"]
    assert got["large"] == set(coco.getAnnIds()) - small_or_medium
    # exactly 32² is medium, exactly 96² is large
    assert [sorted(got[b]) for b in ("small", "medium", "large")] == [[1, 2], [3, 4, 5], [6, 7, 8]]
