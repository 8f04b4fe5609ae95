"""pipeline/config.py and the shipped configs/*.yaml."""

from __future__ import annotations

import pathlib

import pytest
from pydantic import BaseModel, ValidationError

from pipeline.config import Config, Source, Synth, load_config
from pipeline.errors import ConfigError

CONFIGS = pathlib.Path(__file__).resolve().parent.parent / "configs"

MINIMAL = "sources:\n  - url: data/annotations\n"


def _write(tmp_path, text: str) -> pathlib.Path:
    path = tmp_path / "x.yaml"
    path.write_text(text, encoding="utf-8")
    return path


def test_defaults(tmp_path):
    cfg = load_config(_write(tmp_path, MINIMAL))
    assert cfg.dataset == "demo" and cfg.warehouse == "warehouse" and cfg.synth is None
    assert (cfg.workers, cfg.scheduler, cfg.chunk_mb, cfg.on_bad_record) == (None, None, 16, "error")
    assert cfg.cache_dir == ".cache/cocolake" and cfg.image_root is None
    assert cfg.sources == [Source(url="data/annotations")]


def test_shipped_configs_load():
    names = sorted(p.name for p in CONFIGS.glob("*.yaml"))
    assert {"demo.yaml", "coco2017.yaml", "coco2014.yaml", "local.yaml"} <= set(names)
    demo = load_config(CONFIGS / "demo.yaml")
    assert demo.synth == Synth(out="demo-data", images=60, seed=0)
    assert [s.url for s in demo.sources] == ["demo-data/annotations"] and demo.image_root == "demo-data"
    coco = load_config(CONFIGS / "coco2017.yaml")
    assert {s.url.rsplit("/", 1)[1] for s in coco.sources} == {
        "annotations_trainval2017.zip", "stuff_annotations_trainval2017.zip", "image_info_test2017.zip"}
    assert all(s.md5 or s.sha256 for s in coco.sources)
    assert coco.image_root == "http://images.cocodataset.org/"
    coco14 = load_config(CONFIGS / "coco2014.yaml")
    assert all(s.url.endswith("2014.zip") and s.sha256 for s in coco14.sources)
    assert load_config(CONFIGS / "local.yaml").sources[0].url == "data/coco/annotations"


@pytest.mark.parametrize(
    "text, message",
    [
        ("sources:\n  - split: val2017\n", r"x\.yaml: sources\[0\]\.url: field required"),
        ("dataset: demo\n", r"x\.yaml: sources: field required"),
        ("sources: []\n", r"x\.yaml: sources: list should have at least 1 item"),
        (MINIMAL + "colour: red\n", r"x\.yaml: colour: unknown key; allowed here: cache_dir, chunk_mb, dataset"),
        (MINIMAL + "on_bad_record: warn\n", r"x\.yaml: on_bad_record: input should be 'error' or 'skip'; got 'warn'"),
        (MINIMAL + "workers: 0\n", r"x\.yaml: workers: input should be greater than or equal to 1; got 0"),
        (MINIMAL + "chunk_mb: lots\n", r"x\.yaml: chunk_mb: input should be a valid number.*got 'lots'"),
        (MINIMAL + "scheduler: localhost:8786\n", r"x\.yaml: scheduler: string should match pattern"),
        (MINIMAL + "dataset: ../up\n", r"x\.yaml: dataset: string should match pattern"),
        (MINIMAL + "synth: {out: d, size: 3}\n", r"x\.yaml: synth\.size: unknown key; allowed here: images, out, seed"),
        ("sources:\n  - {url: a.zip, md5: abc}\n", r"sources\[0\]\.md5: expected 32 hexadecimal digits, got 'abc'"),
        ("sources:\n  - {url: a.zip, members: [../x.json]}\n",
         r"sources\[0\]\.members: member '../x.json' is an absolute path or contains '..'"),
        ("sources:\n  - {url: a, mirror: b}\n", r"sources\[0\]\.mirror: unknown key; allowed here: md5, members"),
        ("- a\n- b\n", r"x\.yaml: expected a mapping of settings \(key: value\), got list"),
        ("sources: [a\n", r"x\.yaml: line \d+, column \d+: not valid YAML"),
    ],
)
def test_errors_name_the_file_and_the_key(tmp_path, text, message):
    with pytest.raises(ConfigError, match=message):
        load_config(_write(tmp_path, text))


def test_all_errors_are_reported_at_once(tmp_path):
    with pytest.raises(ConfigError) as err:
        load_config(_write(tmp_path, "sources:\n  - split: x\nworkers: -1\n"))
    assert "sources[0].url: field required" in str(err.value) and "workers: input should be" in str(err.value)


def test_missing_file(tmp_path):
    with pytest.raises(ConfigError, match=r"nope\.yaml: no such file"):
        load_config(tmp_path / "nope.yaml")


def test_checksums_are_normalised_and_url_shorthand(tmp_path):
    cfg = load_config(_write(tmp_path, f"sources:\n  - plain/dir\n  - {{url: a.zip, sha256: {'AB' * 32}}}\n"))
    assert cfg.sources[0] == Source(url="plain/dir")
    assert cfg.sources[1].sha256 == "ab" * 32


def test_frozen():
    cfg = Config(sources=[{"url": "a"}])
    with pytest.raises(ValidationError):
        cfg.workers = 3
    with pytest.raises(ValidationError):
        cfg.sources[0].url = "b"


def test_with_overrides():
    cfg = Config(sources=["a"], workers=2)
    new = cfg.with_overrides(workers=None, dataset="other", chunk_mb=4, sources=[{"url": "b"}])
    assert (new.workers, new.dataset, new.chunk_mb, [s.url for s in new.sources]) == (2, "other", 4, ["b"])
    assert (cfg.dataset, cfg.chunk_mb, cfg.sources[0].url) == ("demo", 16, "a")
    assert cfg.with_overrides(workers=None) is cfg
    with pytest.raises(ConfigError, match="command line: on_bad_record: input should be 'error' or 'skip'"):
        cfg.with_overrides(on_bad_record="ignore")
    with pytest.raises(ConfigError, match="command line: verbose: unknown key"):
        cfg.with_overrides(verbose=True)


@pytest.mark.parametrize("model", [Config, Source, Synth])
def test_every_field_has_a_one_line_description(model: type[BaseModel]):
    for name, f in model.model_fields.items():
        assert f.description and "\n" not in f.description, f"{model.__name__}.{name}"
