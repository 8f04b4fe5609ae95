"""Where a command works: COCOLAKE_WAREHOUSE / COCOLAKE_DATASET as defaults for every
command, ``--config`` on every command that takes ``--warehouse``, and the order
option > environment variable > config file > built-in default."""

from __future__ import annotations

import argparse
import json
import os
import pathlib
import subprocess
import sys

import pytest

from pipeline.cli import build_parser, main
from pipeline.cli.location import settings

ROOT = pathlib.Path(__file__).resolve().parents[2]

TINY = {
    "images": [{"id": 1, "file_name": "a.jpg", "width": 100, "height": 80}],
    "annotations": [
        {"id": 1, "image_id": 1, "category_id": 1, "bbox": [10, 10, 30, 20], "area": 600, "iscrowd": 0,
         "segmentation": [[10, 10, 40, 10, 40, 30, 10, 30]]},
        {"id": 2, "image_id": 1, "category_id": 1, "bbox": [50, 40, 20, 20], "area": 400, "iscrowd": 0,
         "segmentation": [[50, 40, 70, 40, 70, 60, 50, 60]]},
    ],
    "categories": [{"id": 1, "name": "cat", "supercategory": "animal"}],
}


@pytest.fixture
def tiny(tmp_path, monkeypatch):
    """A one-image instances file in an empty working directory with no COCOLAKE_* set."""
    for name in ("COCOLAKE_WAREHOUSE", "COCOLAKE_DATASET"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.chdir(tmp_path)
    src = tmp_path / "instances_val2017.json"
    src.write_text(json.dumps(TINY))
    return src


def _run(capsys, *argv) -> tuple[int, str, str]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def _config(path: pathlib.Path, **values) -> str:
    path.write_text("".join(f"{k}: {v}\n" for k, v in values.items()) + "sources:\n  - instances_val2017.json\n")
    return str(path)


def test_settings_order_option_environment_config_default(tmp_path, monkeypatch):
    cfg = _config(tmp_path / "c.yaml", warehouse="cfg-wh", dataset="cfg-ds", image_root="cfg-images")
    ns = argparse.Namespace
    monkeypatch.delenv("COCOLAKE_WAREHOUSE", raising=False)
    monkeypatch.delenv("COCOLAKE_DATASET", raising=False)
    assert settings(ns(warehouse=None, dataset=None, config=None)) == {
        "warehouse": "warehouse", "dataset": "demo", "image_root": None}
    assert settings(ns(warehouse=None, dataset=None, config=cfg, image_root=None)) == {
        "warehouse": "cfg-wh", "dataset": "cfg-ds", "image_root": "cfg-images"}
    monkeypatch.setenv("COCOLAKE_WAREHOUSE", "env-wh")
    monkeypatch.setenv("COCOLAKE_DATASET", "env-ds")
    assert settings(ns(warehouse=None, dataset=None, config=cfg, image_root=None)) == {
        "warehouse": "env-wh", "dataset": "env-ds", "image_root": "cfg-images"}
    assert settings(ns(warehouse="opt-wh", dataset="opt-ds", config=cfg, image_root="opt-images")) == {
        "warehouse": "opt-wh", "dataset": "opt-ds", "image_root": "opt-images"}
    monkeypatch.setenv("COCOLAKE_DATASET", "")  # empty is unset
    assert settings(ns(warehouse=None, dataset=None, config=cfg))["dataset"] == "cfg-ds"


def test_every_warehouse_command_takes_config_and_says_the_default():
    sub = next(a for a in build_parser()._actions if isinstance(a, argparse._SubParsersAction))
    with_warehouse = {name: p for name, p in sub.choices.items()
                      if any("--warehouse" in a.option_strings for a in p._actions)}
    assert set(with_warehouse) == set(sub.choices) - {"synth"}
    for name, p in with_warehouse.items():
        options = {o: a for a in p._actions for o in a.option_strings}
        assert "--config" in options, name
        assert options["--warehouse"].default is None and options["--dataset"].default is None, name
        assert "$COCOLAKE_WAREHOUSE" in options["--warehouse"].help, name
        assert "$COCOLAKE_DATASET" in options["--dataset"].help, name


def test_environment_is_the_default_of_every_command(tiny, tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("COCOLAKE_WAREHOUSE", str(tmp_path / "env-wh"))
    monkeypatch.setenv("COCOLAKE_DATASET", "env-ds")
    assert _run(capsys, "ingest", "--source", str(tiny), "--workers", "1", "--no-progress")[0] == 0
    assert (tmp_path / "env-wh" / "env-ds" / "_manifest.json").is_file()
    assert not (tmp_path / "warehouse").exists()

    assert _run(capsys, "sql", "SELECT count(*) AS n FROM annotations_enriched")[1:] == ("n\n2\n", "")
    assert _run(capsys, "query", "class_balance", "--format", "csv")[1].splitlines()[0].startswith("split,")
    code, out, _ = _run(capsys, "check", "dangling_image_id")
    assert code == 0 and out.startswith("PASS  dangling_image_id")
    assert _run(capsys, "views", "--db", str(tmp_path / "v.duckdb"))[0] == 0

    dets = tmp_path / "dets.json"
    dets.write_text(json.dumps([{"image_id": 1, "category_id": 1, "bbox": a["bbox"], "score": 0.9}
                                for a in TINY["annotations"]]))
    assert _run(capsys, "ingest-results", str(dets), "--run", "r", "--no-progress")[0] == 0
    code, out, _ = _run(capsys, "evaluate", "--run", "r", "--format", "json")
    assert code == 0 and json.loads(out)["stats"]["AP"] == pytest.approx(1.0)

    assert _run(capsys, "export", "--where", "area > 500", "--format", "coco", "--images", "none",
                "--out", str(tmp_path / "out"), "--no-progress")[0] == 0
    exported = json.loads((tmp_path / "out" / "annotations" / "instances_val2017.json").read_text())
    assert [a["id"] for a in exported["annotations"]] == [1]
    assert _run(capsys, "report", "--out", str(tmp_path / "report"), "--samples", "0")[0] == 0
    assert (tmp_path / "report" / "index.html").is_file()
    code, out, _ = _run(capsys, "vacuum")
    assert code == 0 and out.startswith("env-ds: removed ")


def test_option_beats_environment_beats_config_beats_default(tiny, tmp_path, monkeypatch, capsys):
    cfg = _config(tmp_path / "c.yaml", warehouse="wh", dataset="from-config")
    ingest = ["ingest", "--config", cfg, "--workers", "1", "--no-progress"]
    assert _run(capsys, *ingest)[0] == 0
    assert (tmp_path / "wh" / "from-config" / "_manifest.json").is_file()
    monkeypatch.setenv("COCOLAKE_DATASET", "from-env")
    assert _run(capsys, *ingest)[0] == 0
    assert (tmp_path / "wh" / "from-env" / "_manifest.json").is_file()
    assert _run(capsys, *ingest, "--dataset", "from-option")[0] == 0
    assert (tmp_path / "wh" / "from-option" / "_manifest.json").is_file()

    # reading: a dataset that does not exist shows which setting was taken
    monkeypatch.setenv("COCOLAKE_DATASET", "nowhere")
    code, _, err = _run(capsys, "sql", "--config", cfg, "SELECT count(*) AS n FROM images")
    assert code == 1 and f"{pathlib.Path('wh') / 'nowhere'}" in err and "no warehouse here" in err
    assert _run(capsys, "sql", "--config", cfg, "--dataset", "from-config", "SELECT count(*) AS n FROM images")[1] == "n\n1\n"
    monkeypatch.setenv("COCOLAKE_DATASET", "")
    assert _run(capsys, "sql", "--config", cfg, "SELECT count(*) AS n FROM images")[1] == "n\n1\n"
    code, _, err = _run(capsys, "export", "--config", cfg, "--dataset", "nowhere", "--format", "coco",
                        "--out", str(tmp_path / "x"))
    assert code == 1 and "nowhere" in err
    monkeypatch.delenv("COCOLAKE_DATASET")
    code, _, err = _run(capsys, "evaluate", "--run", "r")
    assert code == 1 and f"{pathlib.Path('warehouse') / 'demo'}" in err  # the built-in default


def test_the_real_command_reads_the_environment(mini_warehouse, coco_mini, tmp_path):
    want = sum(len(json.loads((coco_mini / "annotations" / f"instances_{s}2017.json").read_text())["annotations"])
               for s in ("train", "val"))
    env = {**os.environ, "PYTHONPATH": str(ROOT), "COCOLAKE_WAREHOUSE": mini_warehouse[0],
           "COCOLAKE_DATASET": mini_warehouse[1]}
    exe = pathlib.Path(sys.executable).with_name("cocolake")
    cmd = [str(exe)] if exe.exists() else [sys.executable, "-m", "pipeline"]
    done = subprocess.run([*cmd, "sql", "SELECT count(*) AS n FROM annotations_enriched"], cwd=tmp_path, env=env,
                          capture_output=True, text=True, timeout=120)
    assert (done.returncode, done.stdout, done.stderr) == (0, f"n\n{want}\n", "")
