"""The project's Hydra configs (YAML only). An installed wheel holds this folder as the package
``backtrace_bench_configs`` (pyproject.toml maps it), found through Hydra's ``pkg://`` search path;
this file is what makes that folder a package Hydra accepts."""
