"""Attribution methods behind one interface (:class:`~baselines.base.Explainer`), each built from
its Hydra config in ``configs/method/<name>.yaml``.

``from baselines import METHODS, Explainer, ...`` (and a config's ``_target_: baselines.<Class>``)
loads the methods on first use (:mod:`baselines.registry`): the shared vocabulary
(:mod:`baselines.vocabulary`) is imported by the command line's checks, which must not wait for
every attribution library to load."""
from typing import Any

from .lrp_packages import enter_zennit

# zennit's __init__ imports torchvision, and Quantus imports zennit whenever it is installed:
# entering zennit narrowly here lets `import baselines, quantus` work (baselines.lrp_packages).
enter_zennit()


def __getattr__(name: str) -> Any:
    import baselines.registry as registry

    if name in registry.__all__:
        return getattr(registry, name)
    raise AttributeError(f"module 'baselines' has no attribute {name!r}")
