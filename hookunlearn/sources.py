"""Plug-in sources: spec names that a plug-in resolves to local paths and defaults (torch-free).

A spec ``NAME`` or ``NAME:rest`` whose ``NAME`` is a registered plug-in (and which is not an
existing path) is resolved by that plug-in's module; today the one plug-in is the embedded world
(``world``, ``world:2``, ``world:mc_hazard``). The generic loaders (`hookunlearn.models`,
`hookunlearn.saes`, `hookunlearn.data`) call `resolve`, and the runners call `defaults` when a
model spec is a plug-in's; no generic module imports the plug-in itself.

A plug-in module defines ``model_path(rest)``, ``sae_path(rest)``, ``data_path(rest)`` (each a
`pathlib.Path`, or a `HookunlearnError` naming what exists) and ``defaults()`` (a `PluginDefaults`).
"""

from __future__ import annotations

import importlib
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

PLUGINS: dict[str, str] = {
    "world": "hookunlearn.world.plugin",
}
"""Plug-in name -> the module that resolves its specs (one line per plug-in)."""

Kind = Literal["model", "sae", "data"]


@dataclass(frozen=True)
class PluginDefaults:
    """What commands default to when the model is a plug-in's."""

    sae_specs: tuple[str, ...] = ()
    """`select`'s candidate SAEs when none are given."""
    eval_suites: tuple[str, ...] = ()
    """`eval`'s suites when none are given."""
    oracle: str | None = None
    """The model spec of the plug-in's oracle (its model retrained without the forget set), if any."""
    data: dict[str, Any] = field(default_factory=dict)


def split(spec: str | os.PathLike[str]) -> tuple[str, str] | None:
    """``(plugin, rest)`` when ``spec`` names a plug-in (and is not an existing path), else None."""
    text = os.fspath(spec)
    name, _, rest = text.partition(":")
    if name not in PLUGINS or Path(text).exists():
        return None
    return name, rest


def _module(name: str) -> Any:
    return importlib.import_module(PLUGINS[name])


def resolve(spec: str | os.PathLike[str], kind: Kind) -> Path | None:
    """The local path a plug-in spec stands for (None: not a plug-in spec)."""
    parts = split(spec)
    if parts is None:
        return None
    name, rest = parts
    return getattr(_module(name), f"{kind}_path")(rest)


def plugin_of_model(spec: str | os.PathLike[str] | None) -> str | None:
    """The plug-in whose model ``spec`` is (``world``, ``world:oracle``), or None."""
    if spec is None:
        return None
    parts = split(spec)
    return parts[0] if parts is not None else None


def defaults(spec: str | os.PathLike[str] | None) -> PluginDefaults | None:
    """The defaults of the plug-in whose model ``spec`` is, or None for any other model."""
    name = plugin_of_model(spec)
    return _module(name).defaults() if name is not None else None


__all__ = ["PLUGINS", "PluginDefaults", "defaults", "plugin_of_model", "resolve", "split"]
