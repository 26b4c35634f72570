"""The evaluation report in a real browser: headless Chromium loads every figure, and the page
fits a laptop-sized window without horizontal scrolling.

Needs Chromium (Debian: `apt-get update && apt-get install -y chromium`). Without it the test fails
rather than skips, so CI cannot pass without checking the report in a browser.
"""

from __future__ import annotations

import html
import json
import re
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest
from threadpoolctl import threadpool_limits

from aegmm import ImageClusterer, load_images
from aegmm.evaluation.evaluate import evaluate_run

BROWSERS = ("chromium", "chromium-browser", "google-chrome")
INSTALL = "apt-get update && apt-get install -y chromium"

# Injected into a copy of the report (the report itself has no script): after load, record how
# many images decoded and whether the page is wider than the window.
PROBE = """<script>
window.addEventListener("load", function () {
  var images = Array.prototype.slice.call(document.images);
  var result = {
    images: images.length,
    loaded: images.filter(function (i) { return i.complete && i.naturalWidth > 0; }).length,
    scrollWidth: document.documentElement.scrollWidth,
    innerWidth: window.innerWidth
  };
  var marker = document.createElement("pre");
  marker.id = "aegmm-probe";
  marker.textContent = JSON.stringify(result);
  document.body.appendChild(marker);
});
</script>"""


def _browser() -> str:
    for name in BROWSERS:
        found = shutil.which(name)
        if found:
            return found
    pytest.fail(
        f"headless Chromium is missing (looked for {', '.join(BROWSERS)}); install it with: {INSTALL}"
    )


def _chromium(browser: str, profile: Path, width: int, *args: str) -> subprocess.CompletedProcess:
    command = [
        browser,
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-quic",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--hide-scrollbars",
        f"--user-data-dir={profile}",
        f"--window-size={width},900",
        *args,
    ]
    return subprocess.run(command, capture_output=True, text=True, timeout=120, check=False)


@pytest.fixture(scope="module")
def report(tmp_path_factory) -> Path:
    """A report of a tiny run on 200 8x8 digits of both domains."""
    data = load_images("builtin:digits+simulated", image_size=8)
    data = data.subset(np.sort(np.random.default_rng(1).choice(len(data), 200, replace=False)))
    root = tmp_path_factory.mktemp("browser")
    with threadpool_limits(limits=1):  # tiny models: one thread beats contended ones
        clusterer = ImageClusterer(
            image_size=8, width=0.125, latent_dim=8, epochs=1, n_components=3, progress=False
        ).fit(data)
        run = clusterer.save(root / "run")
        return evaluate_run(run, data, root / "evaluation", progress=False)


@pytest.mark.parametrize("width", [1280, 900])
def test_every_figure_loads_and_the_page_fits_the_window(report, tmp_path, width):
    browser = _browser()
    probed = tmp_path / "probed.html"
    probed.write_text(report.read_text().replace("</body>", PROBE + "</body>"))
    done = _chromium(
        browser, tmp_path / "profile", width, "--virtual-time-budget=5000", "--dump-dom", probed.as_uri()
    )
    found = re.search(r'<pre id="aegmm-probe">(.*?)</pre>', done.stdout, flags=re.DOTALL)
    assert found, f"no probe result from {browser} (exit {done.returncode}): {done.stderr[-2000:]}"
    result = json.loads(html.unescape(found.group(1)))
    figures = list((report.parent / "figures").glob("*.png"))
    assert result["images"] == len(figures) >= 10
    assert result["loaded"] == result["images"], result
    assert result["innerWidth"] == width
    assert result["scrollWidth"] <= result["innerWidth"], result


def test_screenshot_of_the_report(report, tmp_path):
    browser = _browser()
    shot = tmp_path / "report.png"
    done = _chromium(browser, tmp_path / "profile", 1280, f"--screenshot={shot}", report.as_uri())
    assert shot.is_file(), f"{browser} wrote no screenshot (exit {done.returncode}): {done.stderr[-2000:]}"
    assert shot.read_bytes().startswith(b"\x89PNG\r\n\x1a\n")
