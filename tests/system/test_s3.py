"""Object storage end to end: sources, warehouse and images on s3:// (a moto server on 127.0.0.1).

The ingest runs on the Dask cluster of ``tests/services.py``: its worker processes get the
S3 endpoint and credentials inside the tasks, read their byte ranges from S3 and write
their parts to S3; the client only lists, plans and commits.
"""

from __future__ import annotations

import json

import fsspec
import numpy as np
import pytest

from pipeline.query import views
from pipeline.ingest.run import run_ingest
from pipeline.warehouse import Warehouse
from tests.services import BUCKET
from tests.ingest.test_filesets import _sa1b_doc

pytestmark = pytest.mark.slow

TABLES = ("images", "annotations", "keypoints", "captions", "categories", "licenses", "info", "rejects")
WAREHOUSE = f"s3://{BUCKET}/warehouse"


@pytest.fixture(scope="module")
def s3_mini(s3_storage, coco_mini, dask_cluster):
    """coco-mini (annotations and images) uploaded to S3, then ingested through the cluster into S3."""
    fs = fsspec.filesystem("s3", **s3_storage)
    for sub in ("annotations", "train2017", "val2017"):
        fs.put(str(coco_mini / sub) + "/", f"{BUCKET}/coco-mini/{sub}/", recursive=True)
    report = run_ingest([f"s3://{BUCKET}/coco-mini/annotations/"], warehouse=WAREHOUSE, dataset="mini",
                        scheduler=dask_cluster, storage_options=s3_storage)
    return report


def test_ingest_from_and_to_s3_equals_the_local_warehouse(s3_storage, s3_mini, mini_warehouse):
    s3 = Warehouse(WAREHOUSE, "mini", s3_storage)
    local = Warehouse(*mini_warehouse)
    m = s3.require_manifest()
    assert {s["url"] for s in m.sources} == {
        f"s3://{BUCKET}/coco-mini/annotations/{s['source_file']}" for s in m.sources}
    assert len(m.sources) == 6
    # the summary is counted from the committed S3 warehouse, as from the local one
    assert s3_mini.counts == views.split_counts(*mini_warehouse) and s3_mini.counts["val2017"]["images"] > 0
    for table in TABLES:
        a, b = s3.read_table(table, manifest=m), local.read_table(table)
        if a.num_rows or b.num_rows:
            key = [("split", "ascending"), ("source_file", "ascending"), ("record_index", "ascending")]
            a, b = a.sort_by(key), b.sort_by(key)
        assert a.equals(b), table
    # every listed part is an object in the bucket
    fs = fsspec.filesystem("s3", **s3_storage)
    assert all(fs.exists(f"{BUCKET}/warehouse/mini/{p.path}") for p in m.parts)


def test_sql_over_the_s3_warehouse(s3_storage, s3_mini, mini_warehouse):
    query = ("SELECT split, category_name, count(*) AS n, sum(mask_area) AS pixels FROM annotations_enriched "
             "GROUP BY ALL ORDER BY ALL")
    con = views.connect(WAREHOUSE, "mini", storage_options=s3_storage)
    got = con.execute(query).fetchall()
    expected = views.connect(*mini_warehouse).execute(query).fetchall()
    assert got == expected and len(got) > 10


def test_export_from_the_s3_warehouse_with_images_on_s3(s3_storage, s3_mini, tmp_path, monkeypatch):
    export = pytest.importorskip("pipeline.export").export
    from pycocotools.coco import COCO

    # images are fetched by URL from the image root, with the default credentials chain
    endpoint = s3_storage["client_kwargs"]["endpoint_url"]
    for name, value in (("AWS_ACCESS_KEY_ID", "x"), ("AWS_SECRET_ACCESS_KEY", "x"), ("AWS_ENDPOINT_URL", endpoint),
                        ("AWS_DEFAULT_REGION", "us-east-1")):
        monkeypatch.setenv(name, value)
    fsspec.filesystem("s3").clear_instance_cache()
    out = tmp_path / "giraffes"
    report = export(str(out), warehouse=WAREHOUSE, dataset="mini", where="category_name = 'giraffe'",
                    splits=("val2017",), format="coco", image_root=f"s3://{BUCKET}/coco-mini",
                    storage_options=s3_storage)
    files = sorted(p.name for p in (out / "annotations").iterdir())
    assert files and all(f.startswith("instances_") for f in files)
    n_images = 0
    for f in files:
        coco = COCO(str(out / "annotations" / f))
        assert coco.anns and all(coco.cats[a["category_id"]]["name"] == "giraffe" for a in coco.anns.values())
        for img in coco.imgs.values():
            split = f.rsplit("_", 1)[1][:-5]
            copied = out / split / img["file_name"]
            assert copied.read_bytes() == fsspec.filesystem("s3", **s3_storage).cat(
                f"{BUCKET}/coco-mini/{split}/{img['file_name']}")
            n_images += 1
    assert report.images_copied == n_images > 0


def test_a_per_image_set_on_s3(s3_storage, dask_cluster):
    """Per-image documents on S3, as a glob and as a directory: listed by the client, read by the workers."""
    fs = fsspec.filesystem("s3", **s3_storage)
    rng = np.random.default_rng(11)
    docs = {f"sa_{i}.json": _sa1b_doc(rng, i) for i in range(40)}
    fs.pipe({f"{BUCKET}/sa1b/sa_{i // 20:06d}/{name}": json.dumps(doc).encode()
             for i, (name, doc) in enumerate(docs.items())})
    fs.pipe(f"{BUCKET}/sa1b/.partial/sa_99.json", b"{")  # hidden: not part of the set
    expected = {(name, a["id"], a["segmentation"]["counts"]) for name, doc in docs.items() for a in doc["annotations"]}
    for url, dataset in ((f"s3://{BUCKET}/sa1b/*/sa_*.json", "glob"), (f"s3://{BUCKET}/sa1b/", "directory")):
        report = run_ingest([url], warehouse=WAREHOUSE, dataset=dataset, scheduler=dask_cluster,
                            storage_options=s3_storage, batch_files=16)
        assert report.files[0]["files"] == 40 and report.files[0]["batches"] == 3
        rows = Warehouse(WAREHOUSE, dataset, s3_storage).read_table("annotations", "train").to_pylist()
        assert {(r["source_file"], r["id"], r["rle_counts"]) for r in rows} == expected


def test_table_folders_on_s3_read_by_other_tools_equal_the_views(s3_storage, coco_mini, tmp_path):
    """Re-ingests, a failed ingest, a killed run's leftover part and vacuum, on s3://."""
    from pipeline.errors import BadFileError
    from tests.system.test_readers import assert_plain_readers_see_the_views, assert_table_folders_hold_the_manifest
    from tests.system.test_readers import _first_images

    dataset = "readers"
    val = coco_mini / "annotations" / "instances_val2017.json"
    bad = tmp_path / "instances_val2017.json"
    doc = _first_images(coco_mini, 30)
    doc["annotations"][-1]["id"] = doc["annotations"][0]["id"]
    bad.write_text(json.dumps(doc))
    wh = Warehouse(WAREHOUSE, dataset, s3_storage)

    # chunks of 100 kB: a table folder of several parts in each split (each part is a few
    # requests to the S3 server, and each check reads every part three times)
    def ingest(source):
        return run_ingest([str(source)], warehouse=WAREHOUSE, dataset=dataset, workers=1,
                          storage_options=s3_storage, chunk_bytes=100_000)

    def check():
        assert_table_folders_hold_the_manifest(WAREHOUSE, dataset, s3_storage)
        assert_plain_readers_see_the_views(WAREHOUSE, dataset, s3_storage)

    ingest(coco_mini / "annotations")
    assert len(wh.require_manifest().files("annotations", "train2017")) > 2
    check()
    for _ in range(2):
        ingest(val)
        check()
    m = wh.require_manifest()
    assert m.previous_parts and all(wh.fs.exists(f"{wh.root}/{p}") for p in m.previous_parts)
    with pytest.raises(BadFileError, match="duplicate annotation id"):
        ingest(bad)
    check()
    # what a killed run leaves: a part under a number no manifest lists
    stray = Warehouse.part_rel("annotations", "val2017", 900)

    def leave_stray():
        wh.fs.copy(f"{wh.root}/{wh.require_manifest().files('annotations', 'val2017')[0]}", f"{wh.root}/{stray}")

    leave_stray()
    ingest(val)
    check()
    leave_stray()
    files, nbytes = wh.vacuum()
    assert files == len(wh.require_manifest().previous_parts) + 1 and nbytes > 0
    check()
    assert not wh.fs.exists(f"{wh.root}/_trash")
