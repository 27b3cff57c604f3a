"""Every metric config builds its class with the recorded parameters; every named set composes
through Hydra and builds the metrics it lists."""
from __future__ import annotations

import json

import pytest
from hydra.utils import instantiate

from experiments.run.config import compose, group_options
from metrics.dense import DENSE_METRICS
from metrics.generation import GENERATION_METRICS
from metrics.quantus_metrics import QUANTUS_METRICS
from metrics.tabular import TABULAR_METRICS
from metrics.text import TEXT_METRICS

ALL = {**QUANTUS_METRICS, **TABULAR_METRICS, **TEXT_METRICS, **GENERATION_METRICS, **DENSE_METRICS}
DENSE_SET = {"pointing_game", "attribution_localisation", "top_k_intersection", "relevance_rank_accuracy",
             "region_morf", "region_lerf", "faithfulness_correlation", "sparseness", "mprt"}
SETS = {
    "quick": {"faithfulness_correlation", "sparseness"},
    "image": {"faithfulness_correlation", "faithfulness_estimate", "pixel_flipping", "monotonicity_correlation",
              "road", "selectivity", "max_sensitivity", "avg_sensitivity", "random_logit", "mprt", "sparseness",
              "complexity"},
    "tabular": set(TABULAR_METRICS) | {"faithfulness_correlation", "faithfulness_estimate",
                                       "monotonicity_correlation", "random_logit", "mprt", "sparseness",
                                       "complexity"},
    "localisation": {"pointing_game", "attribution_localisation", "top_k_intersection", "relevance_rank_accuracy"},
    "localisation_tabular": {"pointing_game", "attribution_localisation", "top_k_intersection",
                             "relevance_rank_accuracy"},
    # the text set: every text metric but ERASER's trapezoid area (the same ranking as average precision)
    "text": set(TEXT_METRICS) - {"token_auprc_trapezoid"},
    "generation": set(GENERATION_METRICS) | {"text_comprehensiveness", "text_sufficiency"},
    "segmentation": DENSE_SET,
    "bbox": DENSE_SET,
}


def test_there_is_one_config_per_metric_named_after_it():
    assert set(group_options("metric")) == set(ALL)


@pytest.mark.parametrize("name", sorted(ALL))
def test_each_metric_config_builds_its_class(name):
    cfg = compose(["seed=7", f"+metric@probe={name}"])
    metric = instantiate(cfg.probe, channel_reduction="sum")
    assert type(metric) is ALL[name] and metric.info.name == name
    described = metric.describe()
    assert described["direction"] in ("higher", "lower")
    if "seed" in cfg.probe:
        assert described["params"]["seed"] == 7  # stochastic metrics follow the run seed


@pytest.mark.parametrize("name", sorted(SETS))
def test_each_set_composes_and_builds(name):
    cfg = compose([f"metrics={name}"])
    assert set(cfg.metrics) == SETS[name]
    built = {k: instantiate(v, channel_reduction="sum") for k, v in cfg.metrics.items()}
    assert all(m.info.name == k for k, m in built.items())
    json.dumps({k: m.describe() for k, m in built.items()})  # recordable as plain JSON


def test_set_bodies_override_the_metric_defaults():
    quick = compose(["metrics=quick"]).metrics
    assert quick.faithfulness_correlation.nr_runs == 20 and quick.faithfulness_correlation.subset_size == 0.02
    image = compose(["metrics=image"]).metrics
    assert image.faithfulness_correlation.nr_runs == 100 and image.faithfulness_correlation.subset_size == 16
    tabular = compose(["metrics=tabular"]).metrics
    assert tabular.faithfulness_estimate.features_in_step == 1 and tabular.random_logit.similarity == "pearson"


@pytest.mark.parametrize("name", ["segmentation", "bbox"])
def test_dense_sets_read_the_head_and_score_mprt_on_a_subset(name):
    cfg = compose([f"metrics={name}"])
    built = {k: instantiate(v, channel_reduction="sum", output="identity") for k, v in cfg.metrics.items()}
    assert built["mprt"].params["max_samples"] == (8 if name == "segmentation" else 16)
    assert all(m.params["max_samples"] is None for k, m in built.items() if k != "mprt")
    assert built["region_morf"].info.direction == "lower" and built["region_lerf"].info.direction == "higher"
    assert {m.params["output"] for k, m in built.items() if "output" in m.params} == {"identity"}


def test_a_set_can_be_trimmed_from_the_command_line():
    cfg = compose(["metrics=image", "~metrics.mprt", "metrics.max_sensitivity.nr_samples=200"])
    assert "mprt" not in cfg.metrics and cfg.metrics.max_sensitivity.nr_samples == 200


def test_text_metrics_follow_the_run_output_and_seed():
    cfg = compose(["seed=5", "metrics=text", "output=logits"])
    built = {k: instantiate(v, channel_reduction="sum", output=cfg.output) for k, v in cfg.metrics.items()}
    assert {m.params["output"] for m in built.values()} == {"logits"}
    assert built["text_randomisation"].params["seed"] == 5
    assert built["text_class_sensitivity"].params["max_samples"] == 16
    assert built["text_comprehensiveness"].params["percentages"] == [1, 5, 10, 20, 50]
    assert built["text_morf_auc"].params["steps"] == 10 and compose(["+metric@m=text_morf_auc"]).m.steps is None


def test_the_generation_set_removes_tokens_and_reads_ten_steps():
    built = {k: instantiate(v, channel_reduction="sum", output="softmax")
             for k, v in compose(["metrics=generation"]).metrics.items()}
    assert {built[k].params["deletion"] for k in ("text_comprehensiveness", "text_sufficiency", "morf_lerf_area")} \
        == {"remove"}
    assert built["morf_lerf_area"].params["steps"] == 10 and built["morf_lerf_area"].params["curve"] == "logits"
