"""The HTML page in a real headless browser (Debian `chromium`, driven by playwright): click a
block, the side panel shows its params; search highlights; pan and zoom move the view; no
network request is made. Screenshots go to the test's tmp_path."""

from __future__ import annotations

import json
import os
import re
import shutil

import pytest

import composer
from composer.render import dot as dot_mod
from composer.render import render
from tests.render.conftest import SPECS

pytestmark = pytest.mark.browser

CHROMIUM = os.environ.get("COMPOSER_CHROMIUM", "/usr/bin/chromium")
ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
        "--disable-component-update", "--no-first-run", "--disable-sync"]


@pytest.fixture(scope="module")
def browser():
    sync_api = pytest.importorskip("playwright.sync_api")
    if not (os.path.exists(CHROMIUM) or shutil.which("chromium")):
        pytest.skip("chromium is not installed (make test installs it)")
    with sync_api.sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM if os.path.exists(CHROMIUM) else shutil.which("chromium"),
                              args=ARGS)
        yield b
        b.close()


def _ids(page_html: str) -> dict[str, str]:
    m = re.search(r'<script type="application/json" id="composer-data">(.*?)</script>', page_html, re.S)
    return {n["key"]: i for i, n in json.loads(m.group(1))["nodes"].items()}


def _open(browser, path):
    page = browser.new_page(viewport={"width": 1400, "height": 900})
    problems: list[str] = []
    page.on("pageerror", lambda e: problems.append(f"page error: {e}"))
    page.on("console", lambda m: problems.append(f"console {m.type}: {m.text}") if m.type == "error" else None)
    page.on("request", lambda r: problems.append(f"request: {r.url}") if not r.url.startswith(("file:", "data:")) else None)
    page.goto(path.as_uri())
    page.wait_for_selector("#canvas svg g.node")
    return page, problems


def _view_box(page) -> list[float]:
    return [float(x) for x in page.get_attribute("#canvas svg", "viewBox").split()]


def _home(page_html: str) -> list[float]:
    """The SVG's own viewBox: the whole drawing, what `fit` shows."""
    svg_tag = re.search(r"<svg\b[^>]*>", page_html).group(0)
    return [float(x) for x in re.search(r'viewBox="([^"]+)"', svg_tag).group(1).split()]


def _check_page(browser, path, ids, tmp_path, shot: str) -> None:
    home = _home(path.read_text())
    page, problems = _open(browser, path)
    try:
        # click a block: the panel shows its params, ports, types, params count and MACs
        page.click(f"#{ids['stem']}")
        panel = page.locator("#panel")
        text = panel.inner_text()
        assert text.splitlines()[0] == "stem"
        assert "conv2d · core" in text
        rows = page.locator("#panel-params tr").all_inner_texts()
        assert "out_channels\t8" in rows and "padding\t1" in rows and "kernel\t3" in rows
        assert "x\timage [B, 3, H, W]" in text and "out\tfeature_map [B, 8, H, W]" in text
        assert "224\nparameters" in text
        assert page.locator(f"#{ids['stem']}.selected").count() == 1
        out = tmp_path / shot
        page.screenshot(path=str(out))
        assert out.stat().st_size > 10_000

        # a folded repeat: its copies and the ×N
        page.click(f"#{ids['convs']}")
        text = panel.inner_text()
        assert text.splitlines()[0] == "convs ×4" and "convs/0, convs/1, convs/2, convs/3" in text
        assert "2,336\nparameters" in text and "147.46k\nMACs" in text

        # search highlights by name or type
        page.fill("#search", "conv2d")
        assert page.inner_text("#hits") == "4 matches"  # stem, convs, and the conv of each stage cluster
        assert page.locator("g.node.hit").count() == 4
        page.fill("#search", "")
        assert page.locator("g.node.hit").count() == 0

        # zoom with the wheel, pan by dragging, fit back
        before = _view_box(page)
        box = page.locator("#canvas").bounding_box()
        page.mouse.move(box["x"] + box["width"] / 2, box["y"] + box["height"] / 2)
        page.mouse.wheel(0, -400)
        page.wait_for_timeout(100)
        zoomed = _view_box(page)
        assert zoomed[2] < before[2]
        page.mouse.down()
        page.mouse.move(box["x"] + box["width"] / 2 + 120, box["y"] + box["height"] / 2 + 60, steps=4)
        page.mouse.up()
        panned = _view_box(page)
        assert panned[0] < zoomed[0] and panned[2] == pytest.approx(zoomed[2])
        page.click("#fit")
        assert _view_box(page) == pytest.approx(home, abs=0.01)

        page.screenshot(path=str(tmp_path / ("fit_" + shot)))
        assert problems == []
    finally:
        page.close()


def test_html_page_in_chromium(browser, tmp_path):
    page_html = render(composer.analyze_file(SPECS / "nested.yaml"), "html").decode()
    path = tmp_path / "nested.html"
    path.write_text(page_html)
    _check_page(browser, path, _ids(page_html), tmp_path, "nested.png")


def test_html_page_without_graphviz_in_chromium(browser, tmp_path, monkeypatch):
    monkeypatch.setattr(dot_mod.shutil, "which", lambda name, *a, **k: None)
    page_html = render(composer.analyze_file(SPECS / "nested.yaml"), "html", rankdir="LR").decode()
    assert 'data-layout="simple"' in page_html
    path = tmp_path / "nested_simple.html"
    path.write_text(page_html)
    _check_page(browser, path, _ids(page_html), tmp_path, "nested_simple.png")


def test_invalid_spec_page_shows_the_error(browser, tmp_path):
    page_html = render(composer.analyze_file(SPECS / "invalid.yaml"), "html").decode()
    path = tmp_path / "invalid.html"
    path.write_text(page_html)
    ids = _ids(page_html)
    page, problems = _open(browser, path)
    try:
        page.click(f"#{ids['broken']}")
        err = page.locator("#panel .err").inner_text()
        assert "E105: invalid value for `out_channels`" in err
        # the red edge: its panel shows the type error
        edge = page.locator("g.edge.failed text").first
        edge.click()
        text = page.locator("#panel").inner_text()
        assert text.startswith("conv → head") and "E301" in page.locator("#panel .err").inner_text()
        page.screenshot(path=str(tmp_path / "invalid.png"))
        assert problems == []
    finally:
        page.close()
