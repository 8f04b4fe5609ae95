"""The HTML report: self-contained, deterministic, and it renders in headless Chromium with
no console errors, every plot drawn and every sample image decoded."""

from __future__ import annotations

import asyncio
import json
import os
import pathlib
import re
import shutil
import subprocess
import sys
import time

import pytest

from pipeline.cli import main
from pipeline.report import nice_ticks, write_report

PLOTS = {"split-summary", "class-histogram", "box-sizes", "cooccurrence", "keypoint-visibility", "caption-lengths"}
RUN_PLOTS = {"pr-overall", "pr-category", "ap-per-category", "fp-breakdown", "confusions"}


@pytest.fixture(scope="module")
def report(mini_warehouse, coco_mini, tmp_path_factory):
    out = tmp_path_factory.mktemp("report")
    code = main(["report", "--warehouse", mini_warehouse[0], "--dataset", mini_warehouse[1], "--out", str(out),
                 "--image-root", str(coco_mini), "--samples", "6"])
    assert code == 0
    return out / "index.html"


def test_page_is_self_contained(report):
    page = report.read_text()
    assert page.startswith("<!doctype html>")
    assert set(re.findall(r'data-plot="([^"]+)"', page)) == PLOTS
    # nothing to fetch: no scripts, no external references (the SVG namespace is a name, not a request)
    assert "<script" not in page and "url(" not in page
    refs = re.findall(r'(?:src|href)="([^"]*)"', page)
    assert refs and all(r.startswith("data:") for r in refs)
    assert len(re.findall(r'<img src="data:image/jpeg;base64,', page)) == 6
    assert "image file not available" not in page


def test_page_is_deterministic(report, mini_warehouse, coco_mini, tmp_path):
    again = write_report(*mini_warehouse, str(tmp_path), image_root=str(coco_mini), samples=6)
    assert again.read_bytes() == report.read_bytes()


def test_without_image_root_masks_on_grey(mini_warehouse, tmp_path):
    path = write_report(*mini_warehouse, str(tmp_path), samples=2)
    page = path.read_text()
    assert page.count("image file not available: masks on grey") == 2
    assert "no image root given" in page


def test_out_is_a_directory_or_an_html_file_and_never_a_json_directory(mini_warehouse, tmp_path):
    """The real command: `--out x.json` once made a directory named x.json."""
    exe = pathlib.Path(sys.executable).with_name("cocolake")

    def run(out):
        return subprocess.run([str(exe), "report", "--warehouse", mini_warehouse[0], "--dataset", mini_warehouse[1],
                               "--out", out, "--samples", "0"], cwd=tmp_path, capture_output=True, text=True,
                              timeout=300)

    refused = run("stats.json")
    assert refused.returncode == 1 and refused.stdout == ""
    assert refused.stderr == ("cocolake report: error: --out stats.json: the report is an HTML page, not "
                              "application/json; give a directory (DIR/index.html is written) or a file named *.html\n")
    assert os.listdir(tmp_path) == []
    for _ in range(2):  # the second run replaces the page
        done = run("page.html")
        assert done.returncode == 0, done.stderr
        assert done.stdout == "wrote page.html\n"
        assert (tmp_path / "page.html").read_text().startswith("<!doctype html>")
        assert sorted(os.listdir(tmp_path)) == ["page.html"]
    done = run("runs/2024.12")  # a dotted name that is no file type is a directory, as before
    assert done.returncode == 0, done.stderr
    assert done.stdout == f"wrote {pathlib.Path('runs/2024.12/index.html')}\n"
    assert os.listdir(tmp_path / "runs" / "2024.12") == ["index.html"]


def test_numbers_in_the_page(report, coco_mini):
    from pycocotools.coco import COCO

    page = report.read_text()
    for split in ("train2017", "val2017"):  # the class histogram's bars, as pycocotools counts
        coco = COCO(str(coco_mini / "annotations" / f"instances_{split}.json"))
        for cat in coco.loadCats(coco.getCatIds()):
            n = len(coco.getAnnIds(catIds=[cat["id"]]))
            assert (f"{cat['name']}, {split}: {n}</title>" in page) == (n > 0)  # no empty bars
    assert "<td>train2017</td><td>80</td><td>80</td><td>739</td>" in page


def test_nice_ticks():
    assert nice_ticks(1363) == [0, 500, 1000, 1500]
    assert nice_ticks(7) == [0, 2, 4, 6, 8]
    assert nice_ticks(0) == [0, 1]


# ------------------------------------------------------------------ headless Chromium
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
PAGE_CHECKS = """JSON.stringify({
  plots: [...document.querySelectorAll('svg.plot')].map(s => {
    const r = s.getBoundingClientRect();
    return {name: s.dataset.plot, width: r.width, height: r.height, marks: s.querySelectorAll('rect').length,
            curves: [...s.querySelectorAll('polyline')].filter(p => p.points.length > 1).length};
  }),
  images: [...document.images].map(i => ({complete: i.complete, width: i.naturalWidth, height: i.naturalHeight})),
  title: document.title,
})"""


async def _cdp_render(url: str, profile: str, timeout: float = 60.0) -> dict:
    """Open url in headless Chromium through the DevTools protocol; what the page shows and
    every console message, exception, error log entry and non-data request on the way."""
    import aiohttp

    proc = subprocess.Popen(
        [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
         "--disable-component-update", "--disable-sync", "--no-first-run", "--disable-extensions",
         f"--user-data-dir={profile}", "--remote-debugging-port=0", "about:blank"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        port_file = os.path.join(profile, "DevToolsActivePort")
        deadline = time.monotonic() + timeout
        while not (os.path.exists(port_file) and open(port_file).read().count("\n") >= 1):
            if proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError("chromium did not start its DevTools endpoint")
            await asyncio.sleep(0.1)
        port = int(open(port_file).read().split()[0])
        async with aiohttp.ClientSession() as http:
            async with http.get(f"http://127.0.0.1:{port}/json/list") as resp:
                targets = await resp.json()
            ws_url = next(t["webSocketDebuggerUrl"] for t in targets if t["type"] == "page")
            async with http.ws_connect(ws_url, max_msg_size=0) as ws:
                seq, problems, requests = 0, [], []

                async def call(method, **params):
                    nonlocal seq
                    seq += 1
                    await ws.send_json({"id": seq, "method": method, "params": params})
                    return seq

                async def until(pred):
                    while True:
                        msg = json.loads((await asyncio.wait_for(ws.receive(), timeout)).data)
                        method, p = msg.get("method"), msg.get("params", {})
                        if method == "Runtime.consoleAPICalled" and p["type"] in ("error", "warning", "assert"):
                            problems.append(f"console.{p['type']}: {p['args']}")
                        elif method == "Runtime.exceptionThrown":
                            problems.append(f"exception: {p['exceptionDetails']}")
                        elif method == "Log.entryAdded" and p["entry"]["level"] in ("error", "warning"):
                            problems.append(f"log {p['entry']['level']}: {p['entry']['text']}")
                        elif method == "Network.requestWillBeSent":
                            requests.append(p["request"]["url"])
                        if pred(msg):
                            return msg

                for method in ("Page.enable", "Runtime.enable", "Log.enable", "Network.enable"):
                    n = await call(method)
                    await until(lambda m, n=n: m.get("id") == n)
                await call("Page.navigate", url=url)
                await until(lambda m: m.get("method") == "Page.loadEventFired")
                n = await call("Runtime.evaluate", expression=PAGE_CHECKS, returnByValue=True)
                result = await until(lambda m: m.get("id") == n)
                shown = json.loads(result["result"]["result"]["value"])
                await call("Browser.close")
        return {"shown": shown, "problems": problems, "requests": requests}
    finally:
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def _render_in_chromium(page, tmp_path) -> dict:
    if CHROMIUM is None:  # CI installs it (.ci/run): there a missing browser is a failure, not a skip
        message = "chromium is not installed (apt-get install chromium)"
        if os.environ.get("CI") == "true":
            pytest.fail(f"{message}; CI must run the browser test")
        pytest.skip(message)
    got = asyncio.run(_cdp_render(page.as_uri(), str(tmp_path / "profile")))
    assert got["problems"] == []
    assert [u for u in got["requests"] if not u.startswith(("data:", "file:"))] == []
    return got["shown"]


@pytest.mark.slow
def test_renders_in_headless_chromium(report, tmp_path):
    shown = _render_in_chromium(report, tmp_path)
    assert shown["title"] == "cocolake report: mini"
    assert {p["name"] for p in shown["plots"]} == PLOTS
    for plot in shown["plots"]:
        assert plot["width"] > 200 and plot["height"] > 100 and plot["marks"] >= 5, plot
    assert len(shown["images"]) == 6
    assert all(i["complete"] and i["width"] > 100 and i["height"] > 100 for i in shown["images"]), shown["images"]


def test_caption_lengths_count_words_as_the_caption_length_query_does():
    """Runs of spaces are one gap, in the report as in `cocolake query caption_length`."""
    import duckdb

    from pipeline.query.checks import run_query
    from pipeline.report import caption_section

    con = duckdb.connect()
    con.execute("CREATE VIEW captions AS SELECT * FROM (VALUES ('train', 'a  dog'), ('train', 'one two three'), "
                "('train', repeat('w ', 40)), ('train', NULL)) AS t(split, caption)")
    html = caption_section(con, ["train"])
    assert "<title>2, train: 1</title>" in html
    assert "<title>3, train: 1</title>" in html
    assert "<title>30+, train: 1</title>" in html
    query = {(r["split"], r["words"]): r["captions"] for r in run_query(con, "caption_length").to_pylist()}
    assert query == {("train", 2): 1, ("train", 3): 1, ("train", 40): 1}
