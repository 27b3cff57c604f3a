"""An experiment's metric settings belong to its metric set: ``metrics=none`` or another set leaves
none of them behind, and a metric entry without a ``_target_`` is refused before any work."""
from __future__ import annotations

import pytest
from omegaconf import OmegaConf

from experiments.errors import ConfigError
from experiments.run.config import compose, group_options, load_config
from tests.helpers.faults_helpers import cli

EXPERIMENTS = group_options("experiment")


@pytest.mark.parametrize("experiment", EXPERIMENTS)
def test_metrics_none_leaves_no_metric_settings_behind(experiment, tmp_path):
    cfg = load_config([f"+experiment={experiment}", "metrics=none", f"results_dir={tmp_path}",
                       f"cache_dir={tmp_path}"])
    assert OmegaConf.to_container(cfg.metrics) == {}


@pytest.mark.parametrize("experiment", EXPERIMENTS)
def test_another_metric_set_is_that_set_alone(experiment, tmp_path):
    dirs = [f"results_dir={tmp_path}", f"cache_dir={tmp_path}"]
    with_experiment = load_config([f"+experiment={experiment}", "metrics=quick", *dirs])
    alone = load_config(["metrics=quick", *dirs])
    assert OmegaConf.to_container(with_experiment.metrics) == OmegaConf.to_container(alone.metrics)


def test_the_paper_sets_keep_their_budgets():
    image = compose(["+experiment=paper_image"]).metrics
    assert [image[m].max_samples for m in ("max_sensitivity", "avg_sensitivity", "random_logit", "mprt")] == [32] * 4
    assert image.sparseness.max_samples is None
    local = compose(["+experiment=paper_localisation"]).metrics
    assert list(local) == ["pointing_game", "attribution_localisation", "top_k_intersection",
                           "relevance_rank_accuracy", "faithfulness_correlation", "sparseness"]
    assert local.faithfulness_correlation.nr_runs == 50 and local.top_k_intersection.k == 64


def test_a_metric_stub_from_an_experiment_is_refused_in_one_line(tmp_path):
    own = tmp_path / "configs" / "experiment"
    own.mkdir(parents=True)
    (own / "budget.yaml").write_text("# @package _global_\ndefaults:\n  - override /metrics: none\n"
                                     "metrics:\n  max_sensitivity:\n    max_samples: 4\n")
    message = ("metric 'max_sensitivity' has settings (max_samples) but no _target_: the chosen metric set lacks it; "
               "set metric parameters in a metric set (configs/metrics/<set>.yaml), not in an experiment config")
    with pytest.raises(ConfigError) as err:
        load_config(["+experiment=budget", "model=mlp", f"results_dir={tmp_path / 'runs'}"],
                    config_dirs=[tmp_path / "configs"])
    assert str(err.value) == message
    code, _, stderr = cli([f"--config-dir={tmp_path / 'configs'}", "+experiment=budget", "model=mlp",
                           f"results_dir={tmp_path / 'runs'}", f"cache_dir={tmp_path / 'cache'}"])
    assert code == 2 and stderr.strip() == f"error: {message}"
    assert not (tmp_path / "runs").exists() and not (tmp_path / "cache").exists()


@pytest.mark.slow
def test_paper_image_with_metrics_none_runs_to_a_record(tmp_path):
    """The crash this replaces came after training: run the cell through to its record."""
    code, _, err = cli(["+experiment=paper_image", "metrics=none", "method=saliency", "n_samples=2",
                        "model.train.epochs=0", f"results_dir={tmp_path / 'runs'}", f"cache_dir={tmp_path / 'cache'}"])
    assert code == 0, err
    (record,) = (tmp_path / "runs").glob("*/record.json")
    assert '"metrics": {}' in record.read_text()
