"""The report page from synthetic records: what it holds, and that it works in a real headless
browser (Debian's chromium driven by selenium): no console errors, every image decoded, every
table present. A screenshot is kept under ``.cache/test-artifacts/`` (not in git)."""
from __future__ import annotations

import re
import shutil
from pathlib import Path

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
        assert re.search(r"<td><strong>[-\d.e]+ \[[-\d.e]+, [-\d.e]+\]</strong></td>", section)   # bold interval
        assert "Friedman test" in section and "Wilcoxon signed-rank" in section
        assert "baseline=zero" in section                          # each method's absent value
        assert ("n_steps=8" in section) == (name != "toy_tabular")   # ig's budget, where ig ran
        assert f'src="{name}_ranks.png"' in section and f'src="{name}_cost.png"' in section
    image = page.split('<section id="table-toy_image"', 1)[1].split("</section>", 1)[0]
    assert 'src="toy_image_heatmaps.png"' in image
    text = page.split('<section id="table-toy_text"', 1)[1].split("</section>", 1)[0]
    assert 'src="toy_text_tokens.png"' in text and '<span class="tok rationale"' in text
    # the paired tests' outcomes are coloured: backtrace beats the random control on both metrics
    assert '<td class="better">+ p=' in page
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


def test_page_in_a_headless_browser(report):
    browser, driver_path = _chromium()
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = browser
    for arg in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--window-size=1400,1000",
                "--allow-file-access-from-files"):
        options.add_argument(arg)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    driver = webdriver.Chrome(service=Service(driver_path), options=options)
    try:
        driver.set_page_load_timeout(60)
        driver.get(report.as_uri())
        driver.execute_async_script(
            "const done = arguments[0]; Promise.all(Array.from(document.images).map(i => i.decode().catch(() => null)))"
            ".then(() => done(true));")
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
