"""The documentation: the README stays a short front page, and the docs site builds in strict
mode (a broken link or a page left out of the nav fails the build) with every page of its nav."""
from __future__ import annotations

import subprocess
import sys

import yaml

from experiments.run.config import ROOT

README_MAX_LINES = 300


def nav_pages(nav: list) -> list[str]:
    """Every page file the nav names, nested sections included."""
    pages: list[str] = []
    for entry in nav:
        for value in (entry.values() if isinstance(entry, dict) else [entry]):
            pages += nav_pages(value) if isinstance(value, list) else [value]
    return pages


def test_the_readme_is_at_most_300_lines():
    lines = (ROOT / "README.md").read_text().splitlines()
    assert len(lines) <= README_MAX_LINES, f"README.md has {len(lines)} lines; move sections into docs/"


def test_every_markdown_page_of_docs_is_in_the_nav():
    config = yaml.safe_load((ROOT / "mkdocs.yml").read_text())
    assert sorted(nav_pages(config["nav"])) == sorted(p.name for p in (ROOT / "docs").glob("*.md"))


def test_the_docs_build_strict_with_every_nav_page(tmp_path):
    site = tmp_path / "site"
    proc = subprocess.run([sys.executable, "-m", "mkdocs", "build", "--strict", "--site-dir", str(site)],
                          cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    config = yaml.safe_load((ROOT / "mkdocs.yml").read_text())
    assert config["strict"] is True
    for page in nav_pages(config["nav"]):
        built = site / ("index.html" if page == "index.md" else page.removesuffix(".md") + "/index.html")
        assert built.is_file(), f"{page} was not built"
        assert "<h1" in built.read_text(), f"{page} was built without its heading"
