"""pipeline/export/parquet.py: a subset warehouse that cocolake reads, extends and exports again."""

from __future__ import annotations

import io
import json

import pyarrow.parquet as pq
import pytest
from PIL import Image

from pipeline.query import views
from pipeline.errors import CocolakeError, ConfigError, WarehouseError
from pipeline.export import export
from pipeline.ingest.run import run_ingest
from pipeline.warehouse import Warehouse

ANIMALS = "supercategory = 'animal'"


@pytest.fixture(scope="module")
def animal_subset(mini_warehouse, coco_mini, tmp_path_factory):
    wh, ds = mini_warehouse
    out = tmp_path_factory.mktemp("parquet")
    report = export(out, format="parquet", warehouse=wh, dataset=ds, where=ANIMALS, image_root=str(coco_mini))
    return out, report


def _rows(con, sql):
    return sorted(con.execute(sql).fetchall(), key=repr)


def test_subset_warehouse_has_the_same_rows_as_the_selection(mini_warehouse, animal_subset):
    wh, ds = mini_warehouse
    out, _ = animal_subset
    src = views.connect(wh, ds)
    sub = views.connect(str(out), ds)
    want = _rows(src, f"SELECT * FROM annotations_enriched WHERE {ANIMALS}")
    assert want and _rows(sub, "SELECT * FROM annotations_enriched") == want
    assert _rows(sub, "SELECT * FROM images") == _rows(
        src, f"SELECT * FROM images WHERE (split, id) IN (SELECT (split, image_id) FROM annotations_enriched "
             f"WHERE {ANIMALS}) AND kind = 'instances'")
    instances = "SELECT * FROM raw_categories WHERE kind = 'instances'"
    assert _rows(sub, "SELECT * FROM raw_categories") == _rows(src, instances)
    manifest = Warehouse(str(out), ds).read_manifest()
    assert {p.table for p in manifest.parts} == {"images", "annotations", "categories", "licenses", "info",
                                                 "category_counts"}


def test_image_bytes_are_the_image_files(animal_subset, coco_mini):
    out, _ = animal_subset
    table = pq.read_table(out / "mini" / "images" / "split=val2017",
                          columns=["file_name", "image_bytes", "width", "height"])
    assert table.num_rows > 0
    for row in table.to_pylist():
        assert row["image_bytes"] == (coco_mini / "val2017" / row["file_name"]).read_bytes()
        assert Image.open(io.BytesIO(row["image_bytes"])).size == (row["width"], row["height"])


def test_subset_exports_again_like_the_original(mini_warehouse, animal_subset, tmp_path):
    wh, ds = mini_warehouse
    out, _ = animal_subset
    export(tmp_path / "direct", warehouse=wh, dataset=ds, where=ANIMALS, images="none")
    export(tmp_path / "again", warehouse=str(out), dataset=ds, images="none")
    names = sorted(p.name for p in (tmp_path / "direct" / "annotations").iterdir())
    assert names == sorted(p.name for p in (tmp_path / "again" / "annotations").iterdir())
    for name in names:
        direct = json.loads((tmp_path / "direct" / "annotations" / name).read_text())
        again = json.loads((tmp_path / "again" / "annotations" / name).read_text())
        assert again == direct


def test_everything_through_parquet_still_gives_back_the_source(mini_warehouse, coco_mini, tmp_path):
    wh, ds = mini_warehouse
    export(tmp_path / "pq", format="parquet", warehouse=wh, dataset=ds, images="none")
    export(tmp_path / "coco", warehouse=str(tmp_path / "pq"), dataset=ds, images="none")
    for src in sorted((coco_mini / "annotations").glob("*.json")):
        assert json.loads((tmp_path / "coco" / "annotations" / src.name).read_text()) == json.loads(src.read_text())


def test_a_later_ingest_into_the_subset_warehouse_keeps_it(animal_subset, coco_mini, tmp_path):
    out, _ = animal_subset
    copy = tmp_path / "wh"
    export(copy, format="parquet", warehouse=str(out), dataset="mini", images="none")
    run_ingest([str(coco_mini / "annotations" / "captions_val2017.json")], warehouse=str(copy), dataset="mini",
               workers=1)
    con = views.connect(str(copy), "mini")
    assert con.execute("SELECT count(*) FROM captions").fetchone()[0] == 395
    before = views.connect(str(out), "mini").execute("SELECT count(*) FROM annotations").fetchone()[0]
    assert con.execute("SELECT count(*) FROM annotations").fetchone()[0] == before


def test_reexport_with_overwrite_replaces_the_previous_subset(mini_warehouse, tmp_path):
    wh, ds = mini_warehouse
    export(tmp_path, format="parquet", warehouse=wh, dataset=ds, where="category_name = 'dog'", images="none")
    export(tmp_path, format="parquet", warehouse=wh, dataset=ds, where="category_name = 'giraffe'", images="none",
           overwrite=True)
    con = views.connect(str(tmp_path), ds)
    assert con.execute("SELECT DISTINCT category_name FROM annotations_enriched").fetchall() == [("giraffe",)]


def test_link_is_refused_for_parquet(tmp_path):
    with pytest.raises(ConfigError, match="no meaning for --format parquet"):
        export(tmp_path, format="parquet", images="link")


def _tree(root) -> dict:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def test_a_run_writing_the_earlier_export_refuses_the_export(mini_warehouse, tmp_path):
    """An ingest into an earlier parquet export holds its writer lock: replacing the export
    under it is refused with the message a second ingest gets, and the export stays."""
    wh, ds = mini_warehouse
    out = tmp_path / "subset"
    export(out, format="parquet", warehouse=wh, dataset=ds, where="category_name = 'dog'", images="none")
    before = _tree(out)
    with Warehouse(str(out), ds).writer_lock():
        with pytest.raises(WarehouseError, match="another run is writing this dataset"):
            export(out, format="parquet", warehouse=wh, dataset=ds, where="category_name = 'cat'", images="none",
                   overwrite=True)
    assert _tree(out) == before and sorted(p.name for p in tmp_path.iterdir()) == ["subset"]
    export(out, format="parquet", warehouse=wh, dataset=ds, where="category_name = 'cat'", images="none",
           overwrite=True)
    con = views.connect(str(out), ds)
    assert con.execute("SELECT DISTINCT category_name FROM annotations_enriched").fetchall() == [("cat",)]


def test_a_failed_export_leaves_nothing_half_written(mini_warehouse, coco_mini, tmp_path):
    """An image that cannot be read fails the export after parts were written: ``out`` keeps
    the earlier export, and nothing of the failed one is left anywhere."""
    wh, ds = mini_warehouse
    images = tmp_path / "images"
    (images / "val2017").mkdir(parents=True)
    (images / "train2017").symlink_to(coco_mini / "train2017")
    kept = sorted((coco_mini / "val2017").iterdir())
    for f in kept[1:]:  # the first val2017 image is missing
        (images / "val2017" / f.name).symlink_to(f)
    out = tmp_path / "out"
    export(out, format="parquet", warehouse=wh, dataset=ds, images="none")
    before = _tree(out)
    with pytest.raises(CocolakeError, match=kept[0].name):
        export(out, format="parquet", warehouse=wh, dataset=ds, images="copy", image_root=str(images),
               overwrite=True)
    assert _tree(out) == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["images", "out"]
    with pytest.raises(CocolakeError, match=kept[0].name):
        export(tmp_path / "new", format="parquet", warehouse=wh, dataset=ds, images="copy", image_root=str(images))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["images", "out"]
