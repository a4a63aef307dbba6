"""Architectures: the registry of the HF model types hookunlearn loads and exports.

This module owns which ``model_type`` values are supported, the module implementing each and
its HF architecture class (TransformerLens's ``original_architecture``). It imports no torch,
transformers or TransformerLens (the CLI's fast paths and `hookunlearn.recipes` read it); the
family modules, which do, are imported on first use::

    architecture = get_architecture("qwen2")           # imports hookunlearn.architectures.llama
    architecture.tl_config(hf_config)                   # HookedTransformerConfig fields
    architecture_for_tl(model.cfg.original_architecture).hf_tensors(...)

One module per family (``gpt2.py``; ``llama.py`` for Llama, Mistral and Qwen2; ``gemma2.py``)
defines ``ARCHITECTURES``, a dict of `hookunlearn.architectures.base.Architecture` by
``model_type``. Adding an architecture is that file plus its line in ``_REGISTRY``.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from hookunlearn.architectures.base import Architecture

__all__ = [
    "HF_CLASSES",
    "SUPPORTED_MODEL_TYPES",
    "architecture_for_tl",
    "get_architecture",
    "model_type_for_tl",
]

# model_type -> (the module implementing it, its HF architecture class). Order is the order
# every "supported: ..." message lists them in.
_REGISTRY: dict[str, tuple[str, str]] = {
    "gpt2": ("hookunlearn.architectures.gpt2", "GPT2LMHeadModel"),
    "llama": ("hookunlearn.architectures.llama", "LlamaForCausalLM"),
    "mistral": ("hookunlearn.architectures.llama", "MistralForCausalLM"),
    "qwen2": ("hookunlearn.architectures.llama", "Qwen2ForCausalLM"),
    "gemma2": ("hookunlearn.architectures.gemma2", "Gemma2ForCausalLM"),
}

SUPPORTED_MODEL_TYPES: tuple[str, ...] = tuple(_REGISTRY)
"""HF ``model_type`` values hookunlearn loads from a checkpoint directory and exports to."""

HF_CLASSES: dict[str, str] = {model_type: hf_class for model_type, (_, hf_class) in _REGISTRY.items()}
"""``model_type`` -> HF architecture class (``config.architectures[0]``, TL's ``original_architecture``)."""

_MODEL_TYPE_BY_HF_CLASS: dict[str, str] = {
    hf_class: model_type for model_type, hf_class in HF_CLASSES.items()
}


def model_type_for_tl(original_architecture: str | None) -> str | None:
    """The ``model_type`` of a TransformerLens ``original_architecture`` (``"GPT2LMHeadModel"`` -> ``"gpt2"``).

    None for an architecture outside the registry (or none at all).
    """
    return _MODEL_TYPE_BY_HF_CLASS.get(original_architecture or "")


def get_architecture(model_type: str) -> Architecture:
    """The `Architecture` of a supported ``model_type``; imports its module (torch) on first use.

    Raises ``KeyError`` for a ``model_type`` outside `SUPPORTED_MODEL_TYPES`.
    """
    if model_type not in _REGISTRY:
        raise KeyError(
            f"model_type {model_type!r} is not supported; "
            f"supported model types: {', '.join(SUPPORTED_MODEL_TYPES)}."
        )
    module_name, _ = _REGISTRY[model_type]
    architectures: dict[str, Architecture] = importlib.import_module(module_name).ARCHITECTURES
    return architectures[model_type]


def architecture_for_tl(original_architecture: str | None) -> Architecture | None:
    """The `Architecture` of a TransformerLens ``original_architecture``; None outside the registry."""
    model_type = model_type_for_tl(original_architecture)
    return None if model_type is None else get_architecture(model_type)
