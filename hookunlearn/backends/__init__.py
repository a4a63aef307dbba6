"""Backends: which TransformerLens model class runs a model (torch-free registry).

A backend turns a Hugging Face checkpoint directory into a model with TransformerLens hook names
(``blocks.{L}.hook_resid_post``, ...) and does the few things above loading that cannot be said in
hook names alone: which tensors the trainer edits, how it runs a slice of blocks, and what the
export writes. Everything else (methods, suites, the trainer's loop) only uses hook names,
``run_with_cache``, ``hooks()`` and ``model(tokens, stop_at_layer=...)``, which both backends have.

- ``hooked``: `transformer_lens.HookedTransformer` with hookunlearn's per-family conversions
  (`hookunlearn.architectures`). The default.
- ``bridge``: `transformer_lens.model_bridge.TransformerBridge` (TransformerLens 4's only model
  class, already in the pinned 3.9): the Hugging Face module itself runs, hooks sit on it, and
  export writes its own weights. Opens every architecture the bridge has an adapter for.

Following `hookunlearn.objectives` (a torch-free registry of module paths): a new backend is one
module plus one line here. Our choices: the names, ``hooked`` as default until the bridge matches
it everywhere, and that a backend is picked per command (``--backend``), never guessed.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass
from types import ModuleType
from typing import Any

from hookunlearn.errors import HookunlearnError


@dataclass(frozen=True)
class BackendSpec:
    """One backend; one registry line."""

    name: str
    module: str
    summary: str


BACKENDS: dict[str, BackendSpec] = {spec.name: spec for spec in (
    BackendSpec("hooked", "hookunlearn.backends.hooked", "TransformerLens HookedTransformer, hookunlearn's own conversions (GPT-2, Llama, Mistral, Qwen2, Gemma-2)"),
    BackendSpec("bridge", "hookunlearn.backends.bridge", "TransformerLens TransformerBridge on the Hugging Face module itself (TransformerLens 4's path)"),
)}  # fmt: skip
"""Every backend, by name (one line each)."""

DEFAULT_BACKEND = "hooked"


def check_backend(name: str) -> str:
    """``name`` if it is a backend; else a `HookunlearnError` naming the choices."""
    if name not in BACKENDS:
        raise HookunlearnError(
            f"backend {name!r} is not a backend; use one of: {', '.join(BACKENDS)} "
            f"(default {DEFAULT_BACKEND})."
        )
    return name


def get_backend(name: str) -> ModuleType:
    """The backend's module (imports torch and TransformerLens)."""
    return importlib.import_module(BACKENDS[check_backend(name)].module)


def backend_name(model: Any) -> str:
    """The backend a loaded model runs on (its `ModelInfo` says; else its class)."""
    info = getattr(model, "hookunlearn_info", None)
    recorded = getattr(info, "backend", None)
    if isinstance(recorded, str):
        return recorded
    return "bridge" if type(model).__name__ == "TransformerBridge" else "hooked"


def backend_of(model: Any) -> ModuleType:
    """The module of the backend ``model`` runs on."""
    return get_backend(backend_name(model))


__all__ = [
    "BACKENDS",
    "DEFAULT_BACKEND",
    "BackendSpec",
    "backend_name",
    "backend_of",
    "check_backend",
    "get_backend",
]
