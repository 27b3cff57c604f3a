"""The report page from synthetic records: what it holds, and that it works in a real headless
browser (Debian's chromium driven by selenium): no console errors, every image decoded, every
table present. A screenshot is kept under ``.cache/test-artifacts/`` (not in git)."""
from __future__ import annotations

import re
import shutil
from pathlib import Path

from typing import Any

import pytest

from experiments.report.page import main
from experiments.run.config import ROOT
from tests.helpers.report_records import write_all

TABLES = ("toy_image", "toy_tabular", "toy_text")   # no paper_ table: by name
ARTIFACTS = ROOT / ".cache" / "test-artifacts"


@pytest.fixture(scope="module")
def report(tmp_path_factory) -> Path:
    base = tmp_path_factory.mktemp("report")
    write_all(base / "runs")
    assert main(["--results-dir", str(base / "runs"), "--out", str(base / "report")]) == 0
    return base / "report" / "index.html"


def test_page_holds_every_table_with_settings_figures_and_tests(report):
    page = report.read_text()
    for name in TABLES:
        section = page.split(f'<section id="table-{name}"', 1)[1].split("</section>", 1)[0]
        assert "<dt>output explained</dt><dd>softmax</dd>" in section and "<dt>target</dt><dd>label class</dd>" in section
        assert "Metric settings (2 metrics)" in section
        assert re.search(r'<td class="value"><strong>[-\d.e]+ \[[-\d.e]+, [-\d.e]+\]</strong></td>', section)   # bold interval
        # methods written out in the page's tables, as in its figures (the markdown files keep config names)
        assert "<td>DLBacktrace</td>" in section and "<td>Random (control)</td>" in section
        assert "<td>backtrace</td>" not in section and "<td>random</td>" not in section
        assert "Friedman test" in section and "Wilcoxon signed-rank" in section
        assert "baseline=zero" in section                          # each method's absent value
        assert ("n_steps=8" in section) == (name != "toy_tabular")   # ig's budget, where ig ran
        assert f'src="{name}_ranks.png"' in section and f'src="{name}_cost.png"' in section
    image = page.split('<section id="table-toy_image"', 1)[1].split("</section>", 1)[0]
    assert 'src="toy_image_heatmaps.png"' in image
    text = page.split('<section id="table-toy_text"', 1)[1].split("</section>", 1)[0]
    assert 'src="toy_text_tokens.png"' in text and '<span class="tok rationale"' in text
    # the paired tests' outcomes are coloured: backtrace beats the random control on both metrics
    assert '<td class="value better">+ p=' in page
    for src in re.findall(r'<img src="([^"]+)"', page):
        assert (report.parent / src).stat().st_size > 0


def test_no_records_is_a_clear_error(tmp_path, capsys):
    assert main(["--results-dir", str(tmp_path / "none"), "--out", str(tmp_path / "out")]) == 2
    assert "error: no records under" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()


def _chromium() -> tuple[str, str]:
    """The system chromium and its driver: `make test` installs them (Debian packages), so a
    missing browser is a failed set-up, not a reason to check nothing."""
    browser = shutil.which("chromium") or shutil.which("chromium-browser")
    driver = shutil.which("chromedriver")
    assert browser and driver, ("chromium and chromedriver are not installed; `make browser` installs them where "
                                "apt exists (Debian: apt-get install chromium chromium-driver)")
    return browser, driver


def _open(report: Path, width: int) -> Any:
    """A headless chromium showing the page in a window ``width`` CSS px wide, its images decoded."""
    browser, driver_path = _chromium()
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = browser
    for arg in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                f"--window-size={width},1000", "--force-device-scale-factor=1", "--allow-file-access-from-files"):
        options.add_argument(arg)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    driver = webdriver.Chrome(service=Service(driver_path), options=options)
    driver.set_page_load_timeout(60)
    driver.get(report.as_uri())
    driver.execute_async_script(
        "const done = arguments[0]; Promise.all(Array.from(document.images).map(i => i.decode().catch(() => null)))"
        ".then(() => done(true));")
    return driver


def test_page_in_a_headless_browser(report):
    driver = _open(report, 1400)
    try:
        errors = [e for e in driver.get_log("browser") if e["level"] == "SEVERE"]
        assert errors == []
        images = driver.execute_script(
            "return Array.from(document.images).map(i => [i.getAttribute('src'), i.complete, i.naturalWidth]);")
        assert len(images) == 8          # image: heatmaps, ranks, cost; tabular: ranks, cost; text: tokens, ranks, cost
        assert all(complete and width > 0 for _, complete, width in images), images
        present = driver.execute_script(
            "return Array.from(document.querySelectorAll('section.results-table')).map(s => "
            "[s.id, s.querySelectorAll('table').length, s.textContent.includes('too few samples for any')]);")
        assert [s for s, _, _ in present] == [f"table-{name}" for name in TABLES]
        # results, method notes, paired tests (+ token rows for text); where the samples are too few
        # for any paired test to reach 0.05 (the text table's three sentences), one line instead of them
        assert all(n >= 3 or (n >= 2 and too_few) for _, n, too_few in present), present
        assert dict((s, too_few) for s, _, too_few in present)["table-toy_text"]
        height = driver.execute_script("return document.documentElement.scrollHeight;")
        driver.set_window_size(1400, min(int(height), 12000))
        ARTIFACTS.mkdir(parents=True, exist_ok=True)
        assert driver.save_screenshot(str(ARTIFACTS / "report_page.png"))
    finally:
        driver.quit()


# The lines an element's text is laid out on: the boxes of its text nodes, one more line wherever a
# box starts below the previous one by more than half its height.
LINES_OF = """
const tops = [], walk = document.createTreeWalker(arguments[0], NodeFilter.SHOW_TEXT);
while (walk.nextNode()) {
  const r = document.createRange(); r.selectNodeContents(walk.currentNode);
  for (const b of r.getClientRects()) if (b.width > 0) tops.push([b.top, b.height]);
}
tops.sort((a, b) => a[0] - b[0]);
let lines = tops.length ? 1 : 0;
for (let i = 1; i < tops.length; i++) if (tops[i][0] - tops[i - 1][0] > tops[i][1] / 2) lines++;
return lines;
"""


def test_wide_tables_scroll_with_the_method_pinned_and_values_on_one_line(report):
    """In a narrow window the results tables scroll inside their own box, the page itself does
    not; the method column stays put while a table scrolls; no value wraps, nor a word of the
    token heatmap."""
    driver = _open(report, 520)     # narrower than the toy tables (the paper's have 12 and 15 metrics)
    try:
        assert driver.execute_script("return document.body.scrollWidth <= window.innerWidth;")
        assert driver.execute_script("return document.documentElement.scrollWidth <= window.innerWidth;")
        cells = driver.find_elements("css selector", ".table-wrap td.value")
        intervals = [c for c in cells if re.fullmatch(r"[-\d.e]+ \[[-\d.e]+, [-\d.e]+\]", c.text)]
        tests = [c for c in cells if re.match(r"[+\-~=] p=", c.text)]
        assert intervals and tests
        assert [c.text for c in intervals + tests if driver.execute_script(LINES_OF, c) != 1] == []
        wrap = driver.find_element("css selector", "#table-toy_image .table-wrap")
        width, view = driver.execute_script("return [arguments[0].scrollWidth, arguments[0].clientWidth];", wrap)
        assert width > view + 100, (width, view)        # the table is wider than its box: the checks below bite
        first = wrap.find_element("css selector", "tbody tr td:first-child")
        second = wrap.find_element("css selector", "tbody tr td:nth-child(2)")
        assert first.text == "DLBacktrace"
        assert first.value_of_css_property("position") == "sticky"
        before = (first.rect["x"], second.rect["x"])
        scrolled = driver.execute_script("arguments[0].scrollLeft = 100; return arguments[0].scrollLeft;", wrap)
        after = (first.rect["x"], second.rect["x"])
        assert scrolled == pytest.approx(100, abs=1) and after[1] == pytest.approx(before[1] - scrolled, abs=1)
        assert after[0] == pytest.approx(before[0], abs=0.5)        # its method column did not
        words = driver.find_elements("css selector", ".token-heatmap .word")
        assert words and all(driver.execute_script(LINES_OF, w) == 1 for w in words)
    finally:
        driver.quit()


def test_figure_text_is_legible_at_the_page_width(report):
    """The heatmap grid's and token figure's smallest text, drawn at the width the page gives
    their PNGs, is at least MIN_TEXT_PX CSS px tall: the smallest font (points) in the drawn
    figure x the PNG's pixels per point x the image's rendered / natural width."""
    from experiments.report import figures
    from experiments.report.page import HEATMAP_DPI
    from experiments.report.paper_tables import collect

    tables = {d.name: d for d in collect(report.parent.parent / "runs")}
    drawn = {"toy_image_heatmaps.png": (figures.heatmap_figure(tables["toy_image"], n_rows=4, dpi=HEATMAP_DPI),
                                        HEATMAP_DPI),
             "toy_text_tokens.png": (figures.token_heatmap_figure(tables["toy_text"], dpi=figures.TOKEN_DPI),
                                     figures.TOKEN_DPI)}
    smallest = {name: min(t.get_fontsize() for t in fig.findobj(lambda o: hasattr(o, "get_fontsize") and o.get_text()))
                for name, (fig, _) in drawn.items()}
    driver = _open(report, 1600)      # the page's body at its widest (1500 px)
    try:
        shown = dict((src, (rendered, natural)) for src, rendered, natural in driver.execute_script(
            "return Array.from(document.images).map(i => [i.getAttribute('src'), i.getBoundingClientRect().width, "
            "i.naturalWidth]);"))
    finally:
        driver.quit()
    for name, (fig, dpi) in drawn.items():
        rendered, natural = shown[name]
        assert natural == pytest.approx(fig.get_figwidth() * dpi, abs=1)   # the PNG is the figure we measured
        px = smallest[name] * dpi / 72 * rendered / natural
        assert px >= figures.MIN_TEXT_PX - 0.05, (name, smallest[name], rendered, natural)
