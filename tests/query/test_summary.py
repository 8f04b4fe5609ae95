"""query/summary.py: the per-category counts each commit stores (table category_counts).

The stored rows are those the ``category_counts`` view computes over the same version,
and pycocotools' counts; every commit that changes a split's annotations stores them
again, and one that does not keeps them; a warehouse without them computes them.
"""

from __future__ import annotations

import json
import math
import statistics

import pytest

from pipeline.export import export
from pipeline.ingest.run import run_ingest
from pipeline.merge import merge
from pipeline.query import views
from pipeline.warehouse import Warehouse

ORDER = " ORDER BY split, category_id"


def _computed(root, dataset) -> list[tuple]:
    """The rows of the category_counts view computed from the annotations, as before."""
    wh = Warehouse(str(root), dataset)
    con = views.open_database(":memory:", durable=True)
    try:
        views.build(con, wh, wh.require_manifest(), stored_counts=False)
        return con.execute("SELECT * FROM category_counts" + ORDER).fetchall()
    finally:
        con.close()


def _stored(root, dataset) -> list[tuple]:
    con = views.connect(str(root), dataset, for_sql="SELECT * FROM category_counts")
    try:
        sql = con.execute("SELECT sql FROM duckdb_views() WHERE view_name = 'category_counts'").fetchone()[0]
        assert sql.rstrip("; \n").endswith("FROM raw_category_counts AS c")  # the stored rows, no scan
        return con.execute("SELECT * FROM category_counts" + ORDER).fetchall()
    finally:
        con.close()


def _same_rows(stored, computed) -> None:
    """Equal, the mean to the last bits (a parallel sum adds in any order)."""
    assert len(stored) == len(computed) and stored
    for s, c in zip(stored, computed):
        mean = 4  # split, category_id, annotations, images, crowd, mean_area, ...
        assert s[:mean + 1] == c[:mean + 1] and s[mean + 2:] == c[mean + 2:]
        assert s[mean + 1] == pytest.approx(c[mean + 1], rel=1e-12)


def test_every_split_stores_the_counts_the_view_computes(mini_warehouse):
    root, ds = mini_warehouse
    m = Warehouse(root, ds).require_manifest()
    assert sorted(p.split for p in m.parts if p.table == "category_counts") == ["train2017", "val2017"]
    assert views.counts_are_stored(m)
    _same_rows(_stored(root, ds), _computed(root, ds))


@pytest.mark.parametrize("split", ["train2017", "val2017"])
def test_the_stored_counts_are_pycocotools_counts(mini_warehouse, coco_mini, split):
    from pycocotools.coco import COCO

    coco = COCO(str(coco_mini / "annotations" / f"instances_{split}.json"))
    root, ds = mini_warehouse
    got = {r[1]: r for r in _stored(root, ds) if r[0] == split}
    used = [c for c in coco.getCatIds() if coco.getAnnIds(catIds=[c])]
    assert sorted(got) == sorted(used)
    for c in used:
        anns = coco.loadAnns(coco.getAnnIds(catIds=[c]))
        areas = [a["area"] for a in anns]
        _, _, n, images, crowd, mean, median, small, medium, large = got[c]
        assert (n, images, crowd) == (len(anns), len(coco.getImgIds(catIds=[c])), sum(a["iscrowd"] for a in anns))
        assert median == statistics.median(areas)
        assert mean == pytest.approx(math.fsum(areas) / len(areas), rel=1e-12)
        assert (small, medium, large) == (sum(a < 32 ** 2 for a in areas),
                                          sum(32 ** 2 <= a < 96 ** 2 for a in areas), sum(a >= 96 ** 2 for a in areas))


def test_a_category_stats_query_reads_no_annotation_when_the_counts_are_stored(mini_warehouse):
    root, ds = mini_warehouse
    con = views.connect(root, ds, for_sql="SELECT * FROM category_stats")
    names = {r[0] for r in con.execute("SELECT view_name FROM duckdb_views() WHERE NOT internal").fetchall()}
    assert "category_stats" in names and "raw_category_counts" in names
    assert not names & {"annotations", "raw_annotations"}
    assert con.execute("SELECT sum(annotations) FROM category_stats").fetchone()[0] == sum(
        r[2] for r in _computed(root, ds))


def _counts_parts(root, ds) -> list[str]:
    return Warehouse(str(root), ds).require_manifest().files("category_counts")


def test_a_commit_stores_the_counts_again_only_when_the_splits_annotations_change(tmp_path, coco_mini):
    ann = coco_mini / "annotations"
    wh = tmp_path / "wh"
    run_ingest([str(ann / "instances_val2017.json")], warehouse=str(wh), dataset="d", workers=1)
    first = _counts_parts(wh, "d")
    assert len(first) == 1
    # captions of the same split: no annotation changes, the part stays
    run_ingest([str(ann / "captions_val2017.json")], warehouse=str(wh), dataset="d", workers=1)
    assert _counts_parts(wh, "d") == first
    # the instances file again, cut to 100 annotations: its split is counted again
    doc = json.loads((ann / "instances_val2017.json").read_text())
    doc["annotations"] = doc["annotations"][:100]
    (tmp_path / "cut").mkdir()
    (tmp_path / "cut" / "instances_val2017.json").write_text(json.dumps(doc))
    run_ingest([str(tmp_path / "cut" / "instances_val2017.json")], warehouse=str(wh), dataset="d", workers=1)
    now = _counts_parts(wh, "d")
    assert len(now) == 1 and now != first
    stored = _stored(wh, "d")
    _same_rows(stored, _computed(wh, "d"))
    assert sum(r[2] for r in stored) == 100
    # the table folder holds the new part only (the old one went to the trash, then away)
    assert set(Warehouse(str(wh), "d").files_under("category_counts")) == set(now)
    # a second file of annotations in the split: the counts cover both
    run_ingest([str(ann / "person_keypoints_val2017.json")], warehouse=str(wh), dataset="d", workers=1)
    _same_rows(_stored(wh, "d"), _computed(wh, "d"))
    assert _counts_parts(wh, "d") != now


def test_a_warehouse_without_stored_counts_computes_them_and_the_next_commit_stores_them(tmp_path, coco_mini):
    ann = coco_mini / "annotations"
    root = tmp_path / "wh"
    run_ingest([str(ann / "instances_val2017.json")], warehouse=str(root), dataset="d", workers=1)
    want = _stored(root, "d")
    wh = Warehouse(str(root), "d")
    # a version as a release before this table wrote it: no category_counts part
    wh.commit([], {("val2017", "")}, [])
    m = wh.require_manifest()
    assert not m.files("category_counts") and not views.counts_are_stored(m)
    con = views.connect(str(root), "d", for_sql="SELECT * FROM category_counts")
    assert "raw_annotations" in {r[0] for r in con.execute("SELECT view_name FROM duckdb_views()").fetchall()}
    _same_rows(want, con.execute("SELECT * FROM category_counts" + ORDER).fetchall())
    con.close()
    # any later commit stores the counts of every split that lacks them
    run_ingest([str(ann / "captions_val2017.json")], warehouse=str(root), dataset="d", workers=1)
    assert views.counts_are_stored(wh.require_manifest())
    assert _stored(root, "d") == want


def test_the_stored_part_is_the_same_bytes_whenever_the_same_source_is_ingested(tmp_path, coco_mini):
    source = str(coco_mini / "annotations" / "instances_train2017.json")
    data = []
    for name in ("a", "b"):
        run_ingest([source], warehouse=str(tmp_path / name), dataset="d", workers=1)
        [rel] = _counts_parts(tmp_path / name, "d")
        data.append((rel, (tmp_path / name / "d" / rel).read_bytes()))
    assert data[0] == data[1]


def test_a_parquet_export_and_a_merge_store_the_counts_of_what_they_write(mini_warehouse, tmp_path):
    root, ds = mini_warehouse
    out = tmp_path / "pq"
    export(out, format="parquet", warehouse=root, dataset=ds, where="supercategory = 'animal'", images="none")
    assert views.counts_are_stored(Warehouse(str(out), ds).require_manifest())
    stored = _stored(out, ds)
    _same_rows(stored, _computed(out, ds))
    animals = {r[0] for r in views.connect(root, ds).execute(
        "SELECT id FROM categories WHERE supercategory = 'animal'").fetchall()}
    assert {r[1] for r in stored} <= animals
    merge(str(out), [ds], "merged")
    assert views.counts_are_stored(Warehouse(str(out), "merged").require_manifest())
    _same_rows(_stored(out, "merged"), _computed(out, "merged"))


def test_counts_that_cannot_be_computed_are_a_warning_and_the_version_commits_without_them(
        tmp_path, coco_mini, caplog):
    from pipeline.query import summary
    from pipeline.warehouse import Part

    root = tmp_path / "wh"
    run_ingest([str(coco_mini / "annotations" / "instances_val2017.json")], warehouse=str(root), dataset="d",
               workers=1)
    wh = Warehouse(str(root), "d")
    # a version whose new annotations part this process cannot read (it is not there)
    lost = Part("annotations", "val2017", "x.json", Warehouse.part_rel("annotations", "val2017", 999), 1)
    version = wh.next_manifest([lost], set(), [])
    assert version.missing_derived("category_counts") == ["val2017"]
    with wh.transaction() as txn:
        with caplog.at_level("WARNING"):
            assert summary.derived_parts(txn, version) == []
    assert "per-category counts of val2017 are not stored" in caplog.text and "part-00999" in caplog.text
