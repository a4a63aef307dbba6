"""`LanguageModel`: what every function above loading accepts (a model of either backend).

Functions annotate their model argument with it so that the runtime type checks (beartype over
the package in tests) accept a `TransformerBridge` wherever a `HookedTransformer` works.
"""

from __future__ import annotations

from transformer_lens import HookedTransformer
from transformer_lens.model_bridge import TransformerBridge

LanguageModel = HookedTransformer | TransformerBridge
"""A model with TransformerLens hook names: `HookedTransformer` (``hooked``) or `TransformerBridge` (``bridge``)."""

__all__ = ["HookedTransformer", "LanguageModel", "TransformerBridge"]
