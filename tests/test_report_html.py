"""report.html as a browser shows it: the demo's report rendered in headless Chromium at 1280 px.

`make check-report` installs Debian's chromium when it is missing and runs this test. A small
script appended to a copy of the report measures the laid-out page (tables, lists, figures) and
writes its findings into the DOM, which `--dump-dom` returns.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from miam_cli.pipeline.demo import DemoOptions, run_demo

WIDTH, HEIGHT = 1280, 1600
PROBE = """<script>
window.addEventListener('load', () => {
  const box = e => e.getBoundingClientRect();
  const r = {
    viewport: window.innerWidth,
    pageOverflow: document.documentElement.scrollWidth - window.innerWidth,
    tables: [...document.querySelectorAll('table')].map(t => ({
      wrapped: t.parentElement.classList.contains('table-wrap'),
      scrolls: t.parentElement.scrollWidth > t.parentElement.clientWidth,
      right: box(t.parentElement).right, columns: t.rows[0].cells.length})),
    listItems: document.querySelectorAll('ul > li').length,
    images: [...document.images].map(i => ({loaded: i.complete && i.naturalWidth > 0, right: box(i).right})),
    headings: [...document.querySelectorAll('h1, h2')].map(h => h.textContent),
  };
  const pre = document.createElement('pre');
  pre.id = 'probe';
  pre.textContent = JSON.stringify(r);
  document.body.appendChild(pre);
});
</script>"""


def chromium(*args: str, profile: Path) -> subprocess.CompletedProcess:
    exe = shutil.which("chromium") or shutil.which("chromium-browser")
    assert exe, "chromium is not installed: apt-get install -y chromium (make check-report does it)"
    flags = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking", "--no-first-run",
             "--disable-component-update", "--disable-sync", f"--user-data-dir={profile}", "--hide-scrollbars",
             f"--window-size={WIDTH},{HEIGHT}", "--virtual-time-budget=10000"]
    return subprocess.run([exe, *flags, *args], capture_output=True, text=True, timeout=180)


@pytest.fixture(scope="module")
def report(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("demo")
    res = run_demo(DemoOptions(out, surveys=400, epochs=1, budget=60), log=lambda *_: None)
    return res.report_html


@pytest.mark.slow
def test_report_renders_lists_figures_and_scrolling_tables_at_1280px(report, tmp_path):
    probe_page = report.with_name("report-probe.html")
    probe_page.write_text(report.read_text().replace("</body>", PROBE + "</body>"))
    dom = chromium("--dump-dom", probe_page.as_uri(), profile=tmp_path / "profile-dom")
    found = re.search(r'<pre id="probe">(.*?)</pre>', dom.stdout, re.S)
    assert found, dom.stderr[-2000:]
    page = json.loads(found[1].replace("&quot;", '"').replace("&amp;", "&"))
    assert page["viewport"] == WIDTH
    assert page["pageOverflow"] <= 0, page  # the page itself never scrolls sideways
    assert page["tables"] and all(t["wrapped"] and t["right"] <= WIDTH for t in page["tables"]), page["tables"]
    wide = [t for t in page["tables"] if t["columns"] >= 12]  # the compare table: 11 inputs + average
    assert wide and all(t["scrolls"] for t in wide), page["tables"]  # ... scrolls inside its box
    bullets = sum(1 for line in report.with_name("report.md").read_text().splitlines() if line.startswith("- "))
    assert bullets >= 8 and page["listItems"] == bullets  # Markdown lists are lists, not paragraphs with dashes
    assert len(page["images"]) >= 6 and all(i["loaded"] and i["right"] <= WIDTH for i in page["images"]), page["images"]
    assert page["headings"][0] == "miam demo report" and any(h.startswith("Attribution") for h in page["headings"])

    shot = tmp_path / "report.png"
    done = chromium(f"--screenshot={shot}", report.as_uri(), profile=tmp_path / "profile-shot")
    assert shot.exists(), done.stderr[-2000:]
    pixels = np.asarray(Image.open(shot).convert("L"), dtype=float)
    assert pixels.shape == (HEIGHT, WIDTH)
    # text in a centred column: ink in the middle, white margins on both sides at this width
    ink = (pixels < 128).mean(axis=0)
    assert ink[WIDTH // 2 - 300 : WIDTH // 2 + 300].max() > 0 and ink[:60].max() == 0 and ink[-60:].max() == 0
    keep = Path(__file__).resolve().parents[1] / "build" / "check-report"
    keep.mkdir(parents=True, exist_ok=True)
    shutil.copy(shot, keep / "report-1280.png")  # for a person to look at (make check-report prints where)
