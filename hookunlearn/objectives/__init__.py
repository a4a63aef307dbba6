"""Unlearning methods: a torch-free registry, one module per method.

Each entry of `METHODS` is the method's declaration: the module that implements it and what it
reads and needs (corpora or entity prompts on each side, a subspace and of which kind, the SAE,
reference NLLs, its default data on the embedded world). The CLI, recipes, the unlearn runner and
the demo read these declarations; no code outside a method's module names a method. The loss
itself lives in the module's `OBJECTIVE` class (`hookunlearn.objectives.base.Objective`), which
`get_objective` returns with its declaration attached as ``cls.spec``.

Adding a method is one module with an `Objective` subclass and one line in `METHODS`.
Inference-time interventions (``clamp``) have their own registry, `hookunlearn.interventions`.

This module imports no torch (``hookunlearn --help`` and recipe validation read it).
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Literal

from hookunlearn.errors import HookunlearnError

if TYPE_CHECKING:
    from hookunlearn.objectives.base import Objective

Kind = Literal["activation", "output"]
Source = Literal["corpus", "entities"]


@dataclass(frozen=True)
class MethodSpec:
    """What a weight-editing method reads and needs; one registry line."""

    name: str
    module: str
    """The module whose ``OBJECTIVE`` is the method's `Objective` subclass."""
    kind: Kind
    """``activation``: the loss reads the residual stream at the hooked layer (the trainer stops
    there); ``output``: it reads the logits of a full forward pass."""
    summary: str
    forget: tuple[Source, ...] = ("corpus",)
    """What the forget side reads: ``corpus`` (every token of texts), ``entities`` (the name
    tokens of target-entity prompts). With both, either or both may be given."""
    retain: tuple[Source, ...] = ("corpus",)
    """What the retain side reads: ``corpus`` (texts), ``entities`` (every token of known-entity
    prompts); empty: the loss reads no retain data."""
    subspace: Literal["topic", "entity"] | None = None
    """The `build` output the method needs (None: it needs none; a subspace may still give the layer)."""
    needs_sae: bool = False
    """The loss reads the SAE at the hooked layer (the subspace's)."""
    needs_reference_nll: bool = False
    """The forget set's summed NLL under the base model, computed once before training."""
    world_data: dict[str, str] = field(default_factory=dict)
    """Default data on the embedded world's model, by side (``forget``, ``retain``)."""


_WORLD_TOPIC = {"forget": "world:forget_corpus", "retain": "world:retain_corpus"}
_WORLD_ENTITY = {"forget": "world:forget_entities_corpus", "retain": "world:retain_entities_corpus"}

METHODS: dict[str, MethodSpec] = {spec.name: spec for spec in (
    MethodSpec("sspu", "hookunlearn.objectives.sspu", "activation", "SAE-guided subspace projection unlearning (Wang et al. 2025)", subspace="topic", world_data=_WORLD_TOPIC),
    MethodSpec("align", "hookunlearn.objectives.align", "activation", "known-to-unknown SAE-code alignment (Yamashita et al. 2025)", forget=("corpus", "entities"), retain=("corpus", "entities"), subspace="entity", needs_sae=True, world_data=_WORLD_ENTITY),
    MethodSpec("rmu", "hookunlearn.objectives.rmu", "activation", "representation misdirection (WMDP, Li et al. 2024)", world_data=_WORLD_TOPIC),
    MethodSpec("ga", "hookunlearn.objectives.ga", "output", "gradient ascent on the forget set", retain=(), world_data=_WORLD_TOPIC),
    MethodSpec("graddiff", "hookunlearn.objectives.graddiff", "output", "gradient difference: ascent on forget, descent on retain", world_data=_WORLD_TOPIC),
    MethodSpec("npo", "hookunlearn.objectives.npo", "output", "negative preference optimisation (Zhang et al. 2024)", needs_reference_nll=True, world_data=_WORLD_TOPIC),
)}  # fmt: skip
"""Every weight-editing method, by name (one line each)."""


def method_spec(name: str) -> MethodSpec:
    """The declaration of ``name``; an unknown name is a clear error listing the methods."""
    if name not in METHODS:
        raise HookunlearnError(
            f"method {name!r} is not a weight-editing method; choose one of {', '.join(METHODS)}."
        )
    return METHODS[name]


def spec_for_module(module: str) -> MethodSpec:
    """The (first) declaration whose module is ``module``."""
    for spec in METHODS.values():
        if spec.module == module:
            return spec
    raise HookunlearnError(f"module {module!r} is not registered in hookunlearn.objectives.METHODS.")


_CLASSES: dict[str, type[Objective]] = {}


def get_objective(name: str) -> type[Objective]:
    """The objective class registered under ``name``: the module's ``OBJECTIVE`` with the
    declaration attached as ``spec`` (a subclass per name, so two lines may share a module)."""
    spec = method_spec(name)
    if name not in _CLASSES or _CLASSES[name].spec is not spec:
        base = importlib.import_module(spec.module).OBJECTIVE
        _CLASSES[name] = type(
            base.__name__, (base,), {"spec": spec, "__module__": base.__module__, "__doc__": base.__doc__}
        )
    return _CLASSES[name]


__all__ = ["METHODS", "MethodSpec", "get_objective", "method_spec", "spec_for_module"]
