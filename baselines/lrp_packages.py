"""Enter the LRP packages (zennit, lxt) without running their package ``__init__``.

Both packages import, from their ``__init__``, a part this environment cannot import:

- ``zennit`` 0.5.1: ``zennit/__init__.py`` imports ``zennit.torchvision`` unconditionally, which
  imports torchvision (not installed here: it has no CPU build for torch 2.13, and a broken one
  breaks transformers too). The modules the LRP baseline uses (``core``, ``rules``, ``composites``,
  ``canonizers``, ``attribution``, ``layer``, ``types``) import torch only.
- ``lxt`` 2.1: ``lxt/__init__.py`` imports ``lxt.efficient.core``, which imports every model map
  in ``lxt/efficient/models``; its BERT map imports ``transformers.modeling_attn_mask_utils``,
  removed in transformers 5. ``lxt.efficient.rules`` and ``lxt.efficient.patches`` (the rules
  AttnLRP is made of) import torch only.

So each package is entered narrowly: a package module whose ``__path__`` is the installed
package's folder is registered in ``sys.modules`` under the package's name, without executing its
``__init__``; its submodules then import from that folder as usual. Nothing else is changed.

Quantus imports ``zennit.canonizers`` (and three more zennit modules) at import time whenever it
finds zennit installed; through zennit's ``__init__`` that fails. :func:`enter_zennit` must
therefore run before Quantus is imported (``metrics.quantus_import`` calls it, and importing
``baselines`` does too), after which Quantus's own ``from zennit import canonizers`` works.
"""
from __future__ import annotations

import importlib
import importlib.util
import sys
from types import ModuleType
from typing import Optional


# the versions these entries were written for (pinned in constraints.txt)
ZENNIT_VERSION = "0.5.1"
LXT_VERSION = "2.1"
INSTALL_HINT = {
    "zennit": f"pip install --no-deps zennit=={ZENNIT_VERSION}",
    "lxt": f"pip install --no-deps lxt=={LXT_VERSION}",
}


def _missing(method: str, package: str) -> Exception:
    """The one-line refusal where an LRP package is not installed, saying how to install it.
    (``baselines.base`` is imported here, not at the top: ``import baselines`` enters zennit
    through this module and must stay light.)"""
    from .base import IncompatibleMethodError

    return IncompatibleMethodError(f"method '{method}' needs the package {package} ({INSTALL_HINT[package]})")


def _enter(name: str) -> Optional[ModuleType]:
    """Register ``name`` (a package or subpackage) as a bare package module over its installed
    folder, unless it is imported already; None where it is not installed."""
    if name in sys.modules:
        return sys.modules[name]
    parent, _, child = name.rpartition(".")
    if parent:
        outer = _enter(parent)
        if outer is None:
            return None
        folder = [f"{p}/{child}" for p in outer.__path__]
        spec = importlib.util.spec_from_file_location(name, f"{folder[0]}/__init__.py",
                                                      submodule_search_locations=folder)
    else:
        spec = importlib.util.find_spec(name)
    if spec is None or spec.submodule_search_locations is None:
        return None
    module = ModuleType(name, f"{name}, entered without running its __init__ (baselines.lrp_packages)")
    module.__path__ = list(spec.submodule_search_locations)
    module.__spec__ = spec
    module.__file__ = spec.origin
    module.__package__ = name
    sys.modules[name] = module
    if parent:
        setattr(sys.modules[parent], child, module)
    return module


def enter_zennit() -> bool:
    """Make ``import zennit.<module>`` work without zennit's ``__init__``; False where zennit is
    not installed. Safe to call any number of times."""
    return _enter("zennit") is not None


def zennit_modules() -> ModuleType:
    """The zennit modules the LRP baseline uses, as one namespace (``.core``, ``.rules``, ...)."""
    if not enter_zennit():
        raise _missing("lrp", "zennit")
    for sub in ("core", "rules", "composites", "canonizers", "attribution", "layer", "types"):
        importlib.import_module(f"zennit.{sub}")
    return sys.modules["zennit"]


def lxt_efficient() -> ModuleType:
    """``lxt.efficient`` with its ``rules`` and ``patches`` modules, the model maps left out."""
    if _enter("lxt.efficient") is None:
        raise _missing("attnlrp", "lxt")
    for sub in ("rules", "patches"):
        importlib.import_module(f"lxt.efficient.{sub}")
    return sys.modules["lxt.efficient"]
