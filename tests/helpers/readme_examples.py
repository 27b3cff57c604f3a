"""The console examples a Markdown file shows (a fenced block of ``$ <command>`` lines, each
followed by what it prints), run for real: the tests compare them with the file, and
``python -m tests.helpers.readme_examples [FILE ...]`` (default: ``README.md`` and ``docs/*.md``)
rewrites them from fresh runs, so an example is never typed by hand. Commands run from the repository root with this interpreter in
place of ``.venv/bin/python``; only examples that write nothing (refusals) belong here."""
from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

from experiments.run.config import ROOT

# a fence without a language whose body starts with "$ "
BLOCK = re.compile(r"^```\n(\$ .*?)^```$", flags=re.S | re.M)


def examples(text: str) -> list[tuple[str, str]]:
    """(command, shown output) for every ``$`` line of every console block, in order."""
    found = []
    for block in BLOCK.findall(text):
        for part in re.split(r"^\$ ", block, flags=re.M)[1:]:
            command, _, output = part.partition("\n")
            found.append((command.strip(), output.rstrip("\n")))
    return found


def run_example(command: str) -> str:
    """What ``command`` prints (stdout and stderr together), run from the repository root."""
    args = command.split()
    if args[0] == ".venv/bin/python":
        args[0] = sys.executable
    env = {**os.environ, "BACKTRACE_BENCH_NO_PROGRESS": "1", "COLUMNS": "200"}
    proc = subprocess.run(args, cwd=ROOT, capture_output=True, text=True, env=env, timeout=300)
    return (proc.stdout + proc.stderr).rstrip("\n")


def refresh(path: Path) -> None:
    """Rewrite every console block of ``path`` with what its commands print now."""
    def block(match: re.Match[str]) -> str:
        lines = []
        for command, _ in examples(match.group(0)):
            lines += [f"$ {command}", run_example(command)]
        return "```\n" + "\n".join(lines) + "\n```"

    path.write_text(BLOCK.sub(block, path.read_text()))


if __name__ == "__main__":
    for name in sys.argv[1:] or ["README.md", *sorted(str(p.relative_to(ROOT)) for p in (ROOT / "docs").glob("*.md"))]:
        refresh(ROOT / name)
