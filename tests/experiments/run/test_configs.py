"""Every config in configs/ composes, and every object a config names can be built."""
from __future__ import annotations

import ast

import pytest
from hydra.utils import get_class

from experiments.run.config import CONFIG_DIR, compose, group_options

MODELS = group_options("model")


def test_groups_are_not_empty():
    for group in ("model", "dataset", "method", "metrics", "metric"):
        assert group_options(group), f"configs/{group}/ has no options"


@pytest.mark.parametrize("model", MODELS)
def test_each_model_composes_with_its_default_dataset(model):
    cfg = compose([f"model={model}"])
    assert cfg.model.name == model
    assert cfg.dataset._target_.startswith("experiments.")
    assert cfg.model.modality in ("tabular", "image", "text")


def test_model_picks_its_dataset_and_command_line_wins():
    assert compose(["model=mlp"]).dataset._target_ != compose(["model=resnet"]).dataset._target_
    cfg = compose(["model=resnet", "dataset=mnist"])
    assert cfg.dataset == compose(["dataset=mnist"]).dataset


@pytest.mark.parametrize("group", ["dataset", "method", "metrics", "metric"])
def test_every_option_composes_and_names_a_real_class(group):
    for option in group_options(group):
        if group == "metric":
            cfg = compose([f"+metric@metrics.extra={option}"])
            node = cfg.metrics.extra
        else:
            cfg = compose([f"{group}={option}"])
            node = cfg[group]
        targets = [m._target_ for m in node.values()] if group == "metrics" else [node._target_]
        for target in targets:
            if "." in target and target.rsplit(".", 1)[1][0].isupper():
                assert isinstance(get_class(target), type), target
            else:
                from hydra._internal.utils import _locate

                assert callable(_locate(target)), target


def test_experiment_configs_compose():
    for option in group_options("experiment"):
        cfg = compose([f"+experiment={option}"])
        assert cfg.model.name in MODELS


def test_config_dir_holds_only_yaml():
    """YAML only, besides the one file that makes the folder a package for Hydra's pkg:// search
    path of an installed copy: a docstring, no code."""
    stray = [p for p in CONFIG_DIR.rglob("*") if p.is_file() and p.suffix != ".yaml" and "__pycache__" not in p.parts]
    assert stray == [CONFIG_DIR / "__init__.py"]
    module = ast.parse(stray[0].read_text())
    assert len(module.body) == 1 and isinstance(module.body[0].value, ast.Constant)


@pytest.mark.parametrize("model,dataset,message", [
    ("resnet", "breast_cancer", "model 'resnet' takes image data but dataset 'breast_cancer' is tabular; "
                                "choose an image dataset"),
    ("mlp", "digits", "model 'mlp' takes tabular data but dataset 'digits' is image; choose a tabular dataset"),
])
def test_pairing_refusal_names_the_modality_to_choose(model, dataset, message):
    from experiments.errors import ConfigError
    from experiments.run.config import check_pairing

    modality = "tabular" if dataset == "breast_cancer" else "image"
    with pytest.raises(ConfigError) as err:
        check_pairing(compose([f"model={model}"]).model, dataset, modality)
    assert str(err.value) == message
