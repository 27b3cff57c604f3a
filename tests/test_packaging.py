"""The installable package: every package listed, the configs shipped as package data, license
and citation metadata, and a built wheel that works from a fresh virtual environment outside the
checkout (the ``backtrace-bench`` command and the Python API, with the configs read through
Hydra's ``pkg://`` search path).

The fresh environment gets its dependencies (torch, hydra, ...) from this interpreter's
site-packages through a ``.pth`` line, which adds that folder to ``sys.path`` without running its
own ``.pth`` files: so the checkout's editable install is not active there, and the wheel's own
files are what is imported."""
from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import sysconfig
import time
import tomllib
from pathlib import Path

import pytest
import yaml

from experiments.run.config import ROOT, group_options
from tests.experiments.test_python_api import python_api_page_examples

PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())
SOURCES = ("pyproject.toml", "README.md", "LICENSE", "configs", "backtrace", "baselines", "metrics", "experiments")


def test_every_package_and_config_group_is_listed():
    """pyproject.toml lists its packages (the configs are mapped onto another name): the list must
    be exactly the code packages and configs/ with its group folders."""
    code = sorted(str(p.parent.relative_to(ROOT)).replace(os.sep, ".")
                  for top in ("backtrace", "baselines", "metrics", "experiments")
                  for p in (ROOT / top).rglob("__init__.py"))
    configs = sorted(["backtrace_bench_configs"] + ["backtrace_bench_configs." + str(d.relative_to(ROOT / "configs"))
                                                    .replace(os.sep, ".")
                                                    for d in (ROOT / "configs").rglob("*") if d.is_dir()
                                                    and d.name != "__pycache__"])
    setuptools = PYPROJECT["tool"]["setuptools"]
    assert sorted(setuptools["packages"]) == sorted(code + configs)
    assert setuptools["package-dir"] == {"backtrace_bench_configs": "configs"}
    assert (ROOT / "configs" / "__init__.py").is_file()    # Hydra's pkg:// source wants a package


def test_license_and_citation():
    project = PYPROJECT["project"]
    assert project["license"] == "MIT" and project["license-files"] == ["LICENSE"]
    text = (ROOT / "LICENSE").read_text()
    assert text.startswith("MIT License") and "the backtrace-bench authors" in text
    cff = yaml.safe_load((ROOT / "CITATION.cff").read_text())
    assert cff["cff-version"] == "1.2.0" and cff["type"] == "software" and cff["license"] == "MIT"
    assert cff["version"] == project["version"] and cff["authors"] == [{"name": "the backtrace-bench authors"}]
    (paper,) = cff["references"]
    assert paper["title"] == "DLBacktrace: A Model Agnostic Explainability for any Deep Learning Models"
    assert paper["authors"][0]["family-names"] == "Sankarapu" and paper["year"] == 2024
    assert {"type": "other", "value": "arXiv:2411.12643", "description": "arXiv identifier"} in paper["identifiers"]


def readme_installed_commands() -> list[str]:
    """The ``backtrace-bench`` lines of the README's installed-package section (comments dropped)."""
    text = (ROOT / "README.md").read_text()
    start = text.index("### As an installed package")
    section = text[start:text.index("\n## ", start)]
    lines = [line.split("#", 1)[0].strip() for block in re.findall(r"```bash\n(.*?)```", section, flags=re.S)
             for line in block.splitlines()]
    return [line for line in lines if line.startswith("backtrace-bench ")]


def _fresh_env(extra: dict[str, str] | None = None) -> dict[str, str]:
    """The environment of a user's shell: nothing pointing at the checkout or at our caches."""
    env = {k: v for k, v in os.environ.items()
           if k not in ("PYTHONPATH", "BACKTRACE_BENCH_CACHE", "BACKTRACE_BENCH_HOME")}
    return {**env, "BACKTRACE_BENCH_NO_PROGRESS": "1", "COLUMNS": "200", **(extra or {})}


def _run(args: list[str], cwd: Path, **kw) -> subprocess.CompletedProcess:
    proc = subprocess.run(args, cwd=cwd, capture_output=True, text=True, timeout=1200, **kw)
    return proc


@pytest.fixture(scope="module")
def installed(tmp_path_factory) -> Path:
    """The wheel built from the package's sources alone and installed into a fresh virtual
    environment (its bin/ folder); the build output must hold no deprecation warning."""
    root = tmp_path_factory.mktemp("wheel")
    src = root / "src"
    for name in SOURCES:
        path = ROOT / name
        if path.is_dir():
            shutil.copytree(path, src / name, ignore=shutil.ignore_patterns("__pycache__"))
        else:
            src.mkdir(exist_ok=True)
            shutil.copy(path, src / name)
    start = time.perf_counter()
    build = _run([sys.executable, "-m", "pip", "wheel", "-v", "--no-deps", "--no-build-isolation", "-w",
                  str(root / "dist"), str(src)], cwd=root)
    assert build.returncode == 0, build.stdout[-3000:] + build.stderr[-3000:]
    assert "Deprecat" not in build.stdout + build.stderr and "BuildBackendWarning" not in build.stdout + build.stderr
    (wheel,) = (root / "dist").glob("backtrace_bench-*.whl")
    venv = root / "venv"
    made = _run([sys.executable, "-m", "venv", "--without-pip", str(venv)], cwd=root)
    assert made.returncode == 0, made.stderr
    purelib = Path(_run([str(venv / "bin" / "python"), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                        cwd=root).stdout.strip())
    deps = {sysconfig.get_paths()["purelib"], sysconfig.get_paths()["platlib"]}
    (purelib / "project_dependencies.pth").write_text("\n".join(sorted(deps)) + "\n")
    install = _run([str(venv / "bin" / "python"), "-m", "pip", "install", "--no-deps", "--no-index",
                    "--ignore-installed", str(wheel)], cwd=root, env=_fresh_env())
    assert install.returncode == 0, install.stdout[-3000:] + install.stderr[-3000:]
    print(f"wheel built and installed in {time.perf_counter() - start:.0f} s")
    return venv / "bin"


@pytest.mark.slow
def test_the_installed_wheel_imports_itself_and_finds_its_configs(installed, tmp_path):
    python = str(installed / "python")
    where = _run([python, "-c", "import experiments, backtrace_bench_configs; "
                                "print(experiments.__file__); print(backtrace_bench_configs.__file__)"],
                 cwd=tmp_path, env=_fresh_env())
    assert where.returncode == 0, where.stderr
    venv = installed.parent.resolve()
    assert all(Path(line).resolve().is_relative_to(venv) for line in where.stdout.split())
    refused = _run([str(installed / "backtrace-bench"), "run", "model=nope"], cwd=tmp_path, env=_fresh_env())
    assert refused.returncode == 2
    assert refused.stderr.strip() == f"error: unknown model 'nope'; valid choices: {', '.join(group_options('model'))}"
    assert list(tmp_path.iterdir()) == []                       # nothing written


@pytest.mark.slow
def test_the_readme_commands_run_from_any_folder_with_the_installed_command(installed, tmp_path):
    """The README's installed-package commands, as a user types them, in an empty folder."""
    commands = readme_installed_commands()
    assert [c.split()[1] for c in commands] == ["run", "sweep", "tables", "report"]
    outputs = []
    for command in commands:
        proc = _run([str(installed / "backtrace-bench"), *command.split()[1:]], cwd=tmp_path, env=_fresh_env())
        assert proc.returncode == 0, f"{command}\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}"
        outputs.append(proc.stdout)
    runs = tmp_path / "results" / "runs"
    assert (f"note: run records go to {runs.resolve()} and trained models to "
            f"{(tmp_path / '.cache' / 'backtrace-bench').resolve()}") in outputs[0]
    assert "mlp on breast_cancer, method ig, 8 samples" in outputs[0] and "note:" not in outputs[1]
    records = [json.loads((p / "record.json").read_text()) for p in runs.iterdir() if (p / "record.json").exists()]
    assert sorted(r["method"]["config"] for r in records) == ["gradxinput", "ig", "saliency"]
    # tables and the report page go next to the records they read, never into a published results/
    assert (runs / "tables" / "mlp_breast_cancer.md").is_file()
    assert (runs / "report" / "index.html").is_file()
    assert not (tmp_path / "results" / "tables").exists()


@pytest.mark.slow
def test_the_python_api_page_examples_run_with_the_installed_package(installed, tmp_path):
    script = tmp_path / "example.py"
    script.write_text("\n".join(python_api_page_examples()))
    proc = _run([str(installed / "python"), str(script)], cwd=tmp_path, env=_fresh_env())
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert "faithfulness_correlation" in proc.stdout and "occlusion_array" in proc.stdout
    assert (tmp_path / "results" / "runs").is_dir()             # run_cell's record, under the current folder
