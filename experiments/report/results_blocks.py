"""The table blocks of the results page (``RESULTS.md``) and the published tables a new table
replaces: a table is never replaced by one of fewer samples (fewer test samples, or a metric scored
on fewer) unless asked (``--allow-smaller``); the sample sizes are read from the tables' own headings."""
from __future__ import annotations

import re
from pathlib import Path
from typing import Optional

from experiments.errors import TableError
from experiments.report.evidence import published_root

_BLOCK = re.compile(r"<!-- table:([\w-]+) -->\n?(.*?)<!-- /table -->", flags=re.S)


def sample_sizes(block: str) -> dict[str, int]:
    """The sample sizes a table's heading states: ``"all"`` (test samples explained) and each
    metric scored on fewer (``max_samples``)."""
    sizes: dict[str, int] = {}
    found = re.search(r"(\d+) test samples", block)
    if found:
        sizes["all"] = int(found.group(1))
    for names, k in re.findall(r"([\w]+(?:, [\w]+)*): on the first (\d+) samples only", block):
        sizes.update({name: int(k) for name in names.split(", ")})
    return sizes


def _refuse_shrink(name: str, where: str, old: str, new: str, allow_smaller: bool, sizes_of: str) -> None:
    """Refuse (one line) replacing the table ``old`` by ``new`` of fewer samples: fewer test
    samples, or a metric scored on fewer (``allow_smaller``: replace anyway)."""
    before, after = sample_sizes(old), sample_sizes(new)
    if "all" not in before or "all" not in after or allow_smaller:
        return
    shrunk = [(key, n, after.get(key, after["all"])) for key, n in before.items() if after.get(key, after["all"]) < n]
    if shrunk:
        what = "; ".join(f"{'test samples' if key == 'all' else key + ' samples'} {n} -> {m}" for key, n, m in shrunk)
        raise TableError(f"table {name!r} in {where} would shrink ({what}); nothing written: rerun with "
                         f"{sizes_of} sample sizes, or pass --allow-smaller to replace it anyway")


def check_published(tables_dir: Path, new: dict[str, str], allow_smaller: bool = False) -> None:
    """Refuse publishing a table over a published one (``tables_dir/<name>.md``) of more samples."""
    for name, body in new.items():
        md = tables_dir / f"{name}.md"
        if md.is_file():
            _refuse_shrink(name, str(md), md.read_text(), body, allow_smaller, "the published")


def default_results_md() -> Path:
    """The results page ``--publish`` refreshes: ``RESULTS.md`` beside the published ``results/``
    (in a checkout run from its root, the committed one)."""
    return published_root().parent / "RESULTS.md"


def check_results_md(results_md: Path, tables_dir: Path, new: Optional[dict[str, str]] = None,
                     allow_smaller: bool = False) -> dict[str, str]:
    """The new body of each table block of the results page (``new``, else ``tables_dir/<name>.md``; a block
    with neither is left as it is), refused with one line if a table would shrink: fewer test
    samples, or a metric scored on fewer, than the table it replaces (``allow_smaller``: replace
    anyway). Nothing is written here."""
    if not results_md.is_file():
        raise TableError(f"--results-md {str(results_md)!r} is not a file")
    bodies: dict[str, str] = {}
    for name, old in _BLOCK.findall(results_md.read_text()):
        md = tables_dir / f"{name}.md"
        body = (new or {}).get(name) or (md.read_text() if md.exists() else None)
        if body is None:
            continue
        _refuse_shrink(name, str(results_md), old, body, allow_smaller, f"{results_md.name}'s")
        bodies[name] = body
    return bodies


def update_results_md(results_md: Path, tables_dir: Path, allow_smaller: bool = False) -> None:
    """Replace each ``<!-- table:NAME -->...<!-- /table -->`` block with the generated table
    (blocks whose table was never generated stay as they are); refuse, writing nothing, where a
    table would shrink (:func:`check_results_md`)."""
    bodies = check_results_md(results_md, tables_dir, None, allow_smaller)

    def repl(match: re.Match[str]) -> str:
        name = match.group(1)
        return f"<!-- table:{name} -->\n{bodies[name]}<!-- /table -->" if name in bodies else match.group(0)

    results_md.write_text(_BLOCK.sub(repl, results_md.read_text()))
