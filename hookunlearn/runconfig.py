"""The effective configuration of the command being run, for the manifests it writes.

The CLI sets it (`use_run_config`) once its options are resolved (command line, ``--config``
file, ``--recipe``, defaults); `hookunlearn.artifacts.Manifest` records it in its ``config``
field. Library calls outside the CLI leave it empty. No heavy imports here: the CLI imports it.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from contextvars import ContextVar
from typing import Any

_RUN_CONFIG: ContextVar[dict[str, Any] | None] = ContextVar("hookunlearn_run_config", default=None)


def current_run_config() -> dict[str, Any]:
    """A copy of the active run configuration (empty outside a CLI command)."""
    value = _RUN_CONFIG.get()
    return dict(value) if value else {}


@contextmanager
def use_run_config(config: Mapping[str, Any]) -> Iterator[None]:
    token = _RUN_CONFIG.set(dict(config))
    try:
        yield
    finally:
        _RUN_CONFIG.reset(token)
