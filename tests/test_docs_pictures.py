"""The documentation's pictures (tools/docs/pictures.py): its screenshots, taken for real by
headless Chromium from small pages written here, and every file of docs/img/ accounted for.

Without chromium the screenshot tests skip, saying so; under CI (CI=true) a missing chromium fails
them instead (.ci/run installs it), as tests/test_containers.py treats a missing container engine.
The demo run that makes the real pictures is not run here: `python -m tools.docs.pictures`.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import pytest
from PIL import Image

from tools.docs.pictures import DAMAGED, MADE_WITH, PAGES, PICTURES, Browser, between, find_chromium, screenshot

ROOT = Path(__file__).resolve().parents[1]
DOCS = ROOT / "docs"

RED, BLUE, WHITE = (255, 0, 0), (0, 0, 255), (255, 255, 255)
# A red box at the top left, a blue one further on, and a green block that only a script draws,
# a second and a half after the page has loaded (as a single-page app does).
PAGE = """<!doctype html>
<html><head><style>
  body { margin: 0; background: #fff; font: 16px sans-serif; }
  #red { position: absolute; left: 0; top: 0; width: 200px; height: 100px; background: #f00; }
  #blue { position: absolute; left: 300px; top: 200px; width: 100px; height: 50px; background: #00f; }
  #section { position: absolute; top: 1000px; left: 0; width: 100%; height: 300px; }
  #after { position: absolute; top: 1400px; }
</style></head>
<body>
  <div id="red"></div><div id="blue"></div><p style="margin-top: 300px">Some text.</p>
  <div id="section"><h2>A section further down</h2></div><div id="after">after</div>
  <script>
    setTimeout(() => {
      const late = document.createElement('div');
      late.id = 'late';
      late.style = 'position: absolute; left: 500px; top: 300px; width: 80px; height: 80px; background: #0f0';
      document.body.appendChild(late);
    }, 1500);
  </script>
</body></html>
"""


@pytest.fixture
def page(tmp_path: Path, monkeypatch) -> Path:
    """The page, and a temporary directory of its own for the browser's profile."""
    if not find_chromium():
        reason = "chromium is not installed (Debian: apt-get install chromium)"
        if os.environ.get("CI") == "true":
            pytest.fail(f"{reason}; .ci/run installs it, and under CI a missing chromium is a failure")
        pytest.skip(reason)
    (tmp_path / "tmp").mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path / "tmp"))
    html = tmp_path / "page.html"
    html.write_text(PAGE)
    return html


def rgb(png: Path) -> Image.Image:
    with Image.open(png) as im:
        return im.convert("RGB")


def test_screenshot_of_a_real_page_has_the_viewport_size_and_its_content(page: Path, tmp_path: Path):
    out = screenshot(page, tmp_path / "page.png", width=640, height=400, wait_for="document.getElementById('late')")
    im = rgb(out)
    assert im.size == (640, 400)
    assert im.getpixel((10, 10)) == RED
    assert im.getpixel((350, 225)) == BLUE
    assert im.getpixel((540, 340)) == (0, 255, 0)  # drawn 1.5 s after loading: waited for in real time
    assert im.getpixel((630, 390)) == WHITE
    assert len(im.getcolors(1 << 16)) > 4  # not a blank page: boxes, text and its anti-aliasing
    # The browser is gone and its profile with it.
    assert list((tmp_path / "tmp").iterdir()) == []


def test_a_region_further_down_the_page(page: Path, tmp_path: Path):
    with Browser() as browser:
        out = browser.shoot(page.as_uri(), tmp_path / "section.png", width=640, height=400,
                            region=between("#section", "#after", width=640, margin=0))
        proc = browser.proc
    im = rgb(out)
    assert im.size == (640, 400)  # from the section's top (1000 px) to the next element's (1400 px)
    assert im.getpixel((5, 5)) == WHITE and len(im.getcolors(1 << 16)) > 2  # the heading's text
    assert proc.poll() is not None
    assert list((tmp_path / "tmp").iterdir()) == []


def test_every_file_in_docs_img_is_embedded_or_listed():
    """No stray picture: each is embedded in a page (``![caption](img/NAME)`` or ``../img/NAME``) or
    made by the script (which lists it, with its caption and the page that embeds it)."""
    pages = "\n".join(p.read_text(encoding="utf-8") for p in DOCS.rglob("*.md"))
    for f in sorted((DOCS / "img").iterdir()):
        assert f"img/{f.name}" in pages or f.name in PICTURES, \
            f"docs/img/{f.name} is neither embedded in a docs page nor listed in tools.docs.pictures.PICTURES"


def test_every_listed_picture_exists_with_a_caption_and_a_page():
    assert set(PAGES) == set(PICTURES)
    for name, caption in PICTURES.items():
        assert (DOCS / "img" / name).stat().st_size > 0, f"docs/img/{name}: run python -m tools.docs.pictures"
        made_with = DAMAGED if name.startswith("validation-") else MADE_WITH  # what the picture shows
        assert caption.endswith(made_with) and len(caption) > len(made_with) + 20, name
        assert f"img/{name}" in (DOCS / PAGES[name]).read_text(encoding="utf-8"), f"{PAGES[name]} does not embed {name}"
