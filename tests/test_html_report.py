"""index.html opened in a real headless Chromium (Debian's `chromium`, installed by
`make system-deps`): the page must render its tables and decode every embedded figure.

The test loads a copy of the page with a probe script appended: after the load event the script
writes what the browser rendered (each paper table's rows, bold cells and size; each image's
`complete`, `naturalWidth` and drawn size) into the DOM, which `--dump-dom` prints; the same
launch takes a screenshot. A figure must be drawn at its own size in a 1280-pixel window (not
scaled down, where its text would shrink). Negative controls show the checks can fail: a copy of the page with
one figure's bytes corrupted must be reported undecoded, and an empty page's screenshot blank.
"""

from __future__ import annotations

import html
import json
import re
import shutil
import struct
import subprocess

import numpy as np
import pytest
from PIL import Image
from runfakes import make_runs

from gslbench.report import write_report
from gslbench.report.tables import paper_tables

CHROMIUM = shutil.which("chromium")
pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(CHROMIUM is None, reason="Debian's chromium is not installed (as root: "
                                                "`apt-get install chromium` or `make system-deps`)"),
]
# As root Chromium needs --no-sandbox; the rest keeps it from reaching for the (closed) network.
FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync",
         "--hide-scrollbars"]
WINDOW = (1280, 4000)  # 1280 pixels wide, tall enough to show the first figure
PROBE = """<script>
window.addEventListener("load", () => {
  const box = (element) => { const r = element.getBoundingClientRect(); return [r.width, r.height]; };
  const report = {
    found: document.getElementById("found") && box(document.getElementById("found")),
    verdicts: document.querySelectorAll("#found table.verdict tbody tr").length,
    tables: [...document.querySelectorAll("table.paper[data-kind]")].map((table) => ({
      id: table.id, rows: table.tBodies[0].rows.length, bold: table.querySelectorAll("strong").length,
      size: box(table),
    })),
    images: [...document.images].map((image) => ({
      file: image.closest("figure").querySelector("code").textContent,
      complete: image.complete, naturalWidth: image.naturalWidth, size: box(image),
      top: image.getBoundingClientRect().top,
    })),
  };
  const out = document.createElement("pre");
  out.id = "render-report";
  out.textContent = JSON.stringify(report);
  document.body.appendChild(out);
});
</script>"""


def render(page_html, tmp_path, name, screenshot=None):
    """Load `page_html` with the probe in Chromium; return the probe's report."""
    page = tmp_path / f"{name}.html"
    page.write_text(page_html.replace("</body>", PROBE + "</body>"), encoding="utf-8")
    profile = tmp_path / f"profile-{name}"  # a fresh profile each launch
    shot = [f"--screenshot={screenshot}", "--window-size={},{}".format(*WINDOW)] if screenshot else []
    done = subprocess.run([CHROMIUM, *FLAGS, f"--user-data-dir={profile}", *shot, "--dump-dom",
                           page.as_uri()], capture_output=True, text=True, timeout=180)
    assert done.returncode == 0, done.stderr[-2000:]
    found = re.search(r'<pre id="render-report">(.*?)</pre>', done.stdout, re.S)
    assert found, "the page never finished loading: " + done.stdout[-500:]
    return json.loads(html.unescape(found.group(1)))


def png_width(path):
    header = path.read_bytes()[:24]
    assert header[:8] == b"\x89PNG\r\n\x1a\n"
    return struct.unpack(">I", header[16:20])[0]


def undecoded(report):
    return [image["file"] for image in report["images"]
            if not (image["complete"] and image["naturalWidth"] > 0 and image["size"][0] > 0)]


def pixels(screenshot):
    return np.asarray(Image.open(screenshot).convert("RGB")).reshape(-1, 3).astype(np.int32)


def blank(screenshot):
    """True when under 1% of the pixels differ from the most common (background) colour."""
    rgb = pixels(screenshot)
    counts = np.bincount((rgb[:, 0] << 16) | (rgb[:, 1] << 8) | rgb[:, 2])
    return 1 - counts.max() / len(rgb) < 0.01


def near(screenshot, colour, tolerance=40):
    """How many pixels lie within `tolerance` (per channel) of `colour` ('#rrggbb')."""
    target = np.array([int(colour[i:i + 2], 16) for i in (1, 3, 5)])
    return int((np.abs(pixels(screenshot) - target).max(axis=1) <= tolerance).sum())


def test_chromium_renders_the_tables_and_every_figure(tmp_path):
    folder = tmp_path / "report"
    results, _ = write_report(make_runs(tmp_path / "runs"), folder)
    page = (folder / "index.html").read_text(encoding="utf-8")
    screenshot = tmp_path / "index.png"
    report = render(page, tmp_path, "index", screenshot)

    tables = paper_tables(results)
    assert [t["id"] for t in report["tables"]] == [table.slug for table in tables]
    for shown, table in zip(report["tables"], tables, strict=True):
        assert shown["rows"] == len(table.value.index)  # a row per method
        assert shown["bold"] == int(table.best.to_numpy().sum())
        assert min(shown["size"]) > 0

    # the verdict block opens the page and spans its width (the window less the body's margins)
    # (a row per code length and declared comparison: gsl against two-step and qloss, 16 and 32)
    assert report["verdicts"] == 4 and report["found"][0] > WINDOW[0] - 100
    assert len(report["images"]) == 1  # one figure per table set
    assert undecoded(report) == []
    for image in report["images"]:  # each image is its own PNG, decoded and drawn at its width
        assert image["naturalWidth"] == png_width(folder / image["file"]) == image["size"][0]
        assert image["size"][0] < WINDOW[0] - 64
    assert report["images"][0]["top"] + report["images"][0]["size"][1] / 3 < WINDOW[1]

    assert Image.open(screenshot).size == WINDOW
    assert not blank(screenshot)
    for colour in ("#1f77b4", "#ff7f0e", "#2ca02c"):  # the methods' lines in the figure's top
        assert near(screenshot, colour) > 100, colour

    # negative controls: a corrupted figure is reported undecoded, an empty page is blank
    data = re.search(r'src="data:image/png;base64,([^"]{200})', page).group(1)
    broken = render(page.replace(data, "A" * len(data), 1), tmp_path, "broken")
    assert undecoded(broken) == [report["images"][0]["file"]]
    empty_shot = tmp_path / "empty.png"
    render("<!DOCTYPE html><html><body></body></html>", tmp_path, "empty", empty_shot)
    assert blank(empty_shot)
