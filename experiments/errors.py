"""The harness's user errors: each message is the one line ``run.py`` and the table writers print
before exiting with code 2. They sit below data, zoo, run and report so that every layer raises
them without importing another layer."""
from __future__ import annotations

from typing import Any

# A bad configured value: defined with the shared vocabulary, whose check_choice raises it for
# methods and metrics as for run settings.
from baselines.vocabulary import ConfigError

__all__ = ["ConfigError", "DataError", "TableError", "unimportable"]


class DataError(ValueError):
    """Bad data or a bad loader argument; its message is the one line shown to the user."""


class TableError(ValueError):
    """A set of records that cannot make an honest table; the message is one line."""


def unimportable(what: str, target: Any, exc: BaseException) -> ConfigError:
    """One line for a ``_target_`` whose module cannot be imported (a user's own class whose
    folder is not on ``PYTHONPATH``, or a typo)."""
    cause: BaseException = exc
    while cause.__cause__ is not None and not isinstance(cause, ModuleNotFoundError):
        cause = cause.__cause__
    detail = f"{type(cause).__name__}: {cause}" if isinstance(cause, ModuleNotFoundError) else "no such name"
    return ConfigError(f"{what} config names {str(target)!r}, which cannot be imported ({detail}); "
                       f"check the name, and put the folder of its module on PYTHONPATH")
