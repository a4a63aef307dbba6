"""Inference-time interventions: hooks that change activations while the model runs and edit no
weight (so there is no checkpoint to export). A torch-free registry, one module per intervention,
like `hookunlearn.objectives`.

Each module defines ``Config`` (a frozen dataclass: its options, typed) and ``INTERVENTION`` (a
class with ``from_subspace(subspace, config)``, ``save``, ``load`` and ``applied(model)``).
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass
from typing import Any, Literal

from hookunlearn.errors import HookunlearnError


@dataclass(frozen=True)
class InterventionSpec:
    name: str
    module: str
    summary: str
    subspace: Literal["topic", "entity"] = "topic"
    """The `build` output it reads (its latents, hook and SAE)."""


INTERVENTIONS: dict[str, InterventionSpec] = {spec.name: spec for spec in (
    InterventionSpec("clamp", "hookunlearn.interventions.clamp", "conditional clamping of the subspace's SAE latents at inference"),
)}  # fmt: skip


def intervention_spec(name: str) -> InterventionSpec:
    if name not in INTERVENTIONS:
        raise HookunlearnError(f"intervention {name!r}: choose one of {', '.join(INTERVENTIONS)}.")
    return INTERVENTIONS[name]


def get_intervention(name: str) -> Any:
    """The module of intervention ``name`` (its ``Config`` and ``INTERVENTION``)."""
    return importlib.import_module(intervention_spec(name).module)


def load_intervention(run_dir: str) -> Any:
    """The intervention a directory holds, through the registry entry its manifest names."""
    from hookunlearn.artifacts import read_manifest

    manifest = read_manifest(run_dir, kind="intervention")
    return get_intervention(manifest.extra.get("method", "clamp")).INTERVENTION.load(run_dir)


__all__ = ["INTERVENTIONS", "InterventionSpec", "get_intervention", "intervention_spec", "load_intervention"]
