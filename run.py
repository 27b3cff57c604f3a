#!/usr/bin/env python
"""Run one benchmark cell (or a multirun sweep with -m): ``python run.py model=resnet method=backtrace``."""
from __future__ import annotations

import sys

import hydra
from omegaconf import DictConfig

from experiments.config import ConfigError, check_overrides


@hydra.main(config_path="configs", config_name="config", version_base="1.3")
def _main(cfg: DictConfig) -> None:
    from experiments.runner import run_cli

    run_cli(cfg)


def main() -> None:
    try:
        check_overrides(sys.argv[1:])
    except ConfigError as exc:
        print(f"error: {exc}", file=sys.stderr)
        sys.exit(2)
    _main()


if __name__ == "__main__":
    main()
