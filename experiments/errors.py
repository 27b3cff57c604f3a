"""The harness's user errors: each message is the one line ``run.py`` and the table writers print
before exiting with code 2. They sit below data, zoo, run and report so that every layer raises
them without importing another layer."""
from __future__ import annotations

import logging
import sys
from contextlib import contextmanager
from typing import Any, Iterator, Optional

# A bad configured value: defined with the shared vocabulary, whose check_choice raises it for
# methods and metrics as for run settings.
from baselines.vocabulary import ConfigError

__all__ = ["ConfigError", "DataError", "TableError", "unimportable", "missing_extra", "needs_extra", "installed",
           "quiet_lookup"]

# Optional dependencies, by top-level module, and the extra of pyproject.toml that installs them.
EXTRAS = {"tensorflow": "tf", "keras": "tf"}
EXTRA_PACKAGES = {"tf": "TensorFlow and Keras"}


class DataError(ValueError):
    """Bad data or a bad loader argument; its message is the one line shown to the user."""


class TableError(ValueError):
    """A set of records that cannot make an honest table; the message is one line."""


def installed(module: str) -> bool:
    """Whether ``module`` can be imported, without importing it (TensorFlow takes seconds)."""
    from importlib.util import find_spec

    if module in sys.modules:
        return sys.modules[module] is not None
    try:
        return find_spec(module) is not None
    except (ImportError, ValueError):
        return False


def missing_extra(exc: BaseException) -> Optional[str]:
    """The extra whose module ``exc`` (or what caused it) failed to import, else None."""
    seen: set[int] = set()
    cause: Optional[BaseException] = exc
    while cause is not None and id(cause) not in seen:
        seen.add(id(cause))
        if isinstance(cause, ModuleNotFoundError) and (cause.name or "").split(".")[0] in EXTRAS:
            return EXTRAS[(cause.name or "").split(".")[0]]
        cause = cause.__cause__ or cause.__context__
    return None


def needs_extra(what: str, name: Any, extra: str) -> ConfigError:
    """One line for a model or method that needs an optional extra which is not installed."""
    return ConfigError(f"{what} {str(name)!r} needs {EXTRA_PACKAGES[extra]}, which are not installed; install the "
                       f"{extra!r} extra: pip install 'backtrace-bench[{extra}]'")


def unimportable(what: str, target: Any, exc: BaseException) -> ConfigError:
    """One line for a ``_target_`` whose module cannot be imported (a user's own class whose
    folder is not on ``PYTHONPATH``, or a typo; or an optional extra that is not installed)."""
    extra = missing_extra(exc)
    if extra is not None:
        return needs_extra(what, target, extra)
    cause: BaseException = exc
    while cause.__cause__ is not None and not isinstance(cause, ModuleNotFoundError):
        cause = cause.__cause__
    detail = f"{type(cause).__name__}: {cause}" if isinstance(cause, ModuleNotFoundError) else "no such name"
    return ConfigError(f"{what} config names {str(target)!r}, which cannot be imported ({detail}); "
                       f"check the name, and put the folder of its module on PYTHONPATH")


@contextmanager
def quiet_lookup() -> Iterator[None]:
    """Hydra's ``get_class``/``get_method`` log every failed lookup themselves (an ``Error getting
    class at ...`` line on the console); the harness reports the failure as its one ``error:``
    line instead, so their logger is silenced for the lookup alone."""
    logger = logging.getLogger("hydra.utils")
    before = logger.disabled
    logger.disabled = True
    try:
        yield
    finally:
        logger.disabled = before
