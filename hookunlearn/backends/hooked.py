"""The ``hooked`` backend: `HookedTransformer`, TransformerLens's own block implementations.

Loading is `hookunlearn.models` (hookunlearn's per-family conversions in
`hookunlearn.architectures`); export is `hookunlearn.export`'s inversion of them. What this module
adds is the trainer's view of a `HookedTransformer`, the same operations `hookunlearn.backends.bridge`
gives for a `TransformerBridge`:

- parameters by TransformerLens name (``blocks.{i}.mlp.W_out``), already in TransformerLens's
  orientation (the residual stream on the last axis of a writing weight);
- the prefix below the first trained block (``stop_at_layer``) and a slice of blocks
  (``start_at_layer``/``stop_at_layer``), both native to `HookedTransformer`;
- a block called with some of its tensors swapped (`torch.func.functional_call`).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import torch
from jaxtyping import Float, Int
from torch import Tensor
from transformer_lens import HookedTransformer

from hookunlearn.errors import HookunlearnError

NAME = "hooked"


def supports_processing() -> bool:
    """Whether TransformerLens weight processing (``fold_ln``, ...) can be applied on this backend."""
    return True


def trainable_parameters(
    model: HookedTransformer, layers: Sequence[int], names: Sequence[str]
) -> tuple[dict[str, torch.nn.Parameter], frozenset[str]]:
    """``blocks.{i}.{name}`` for every layer and name, and the names whose TransformerLens view is
    a transpose (none here). Unknown names are a clear error."""
    params = dict(model.named_parameters())
    chosen = {}
    for layer in layers:
        if not 0 <= layer < model.cfg.n_layers:
            raise HookunlearnError(
                f"trainable layer {layer} does not exist (the model has {model.cfg.n_layers})."
            )
        for name in names:
            full = f"blocks.{layer}.{name}"
            if full not in params:
                options = sorted(
                    {key.split(".", 2)[2] for key in params if key.startswith(f"blocks.{layer}.")}
                )
                raise HookunlearnError(
                    f"parameter {full!r} does not exist; parameters of a block: {', '.join(options)}."
                )
            chosen[full] = params[full]
    return chosen, frozenset()


def state_dict(model: HookedTransformer) -> dict[str, Tensor]:
    """The model's tensors under the names `trainable_parameters` uses."""
    return model.state_dict()


def prefix(
    model: HookedTransformer, tokens: Int[Tensor, "batch pos"], stop_at_layer: int, through: int | None = None
) -> Float[Tensor, "batch pos d_model"]:
    """The residual stream entering block ``stop_at_layer`` (``through``: the deepest block the
    caller will run next; unused here)."""
    return model(tokens.to(model.cfg.device), stop_at_layer=stop_at_layer)


def run_blocks(
    model: HookedTransformer, resid: Float[Tensor, "batch pos d_model"], start: int, stop: int
) -> Float[Tensor, "batch pos d_model"]:
    """Blocks ``start .. stop - 1`` on ``resid`` (the residual stream entering block ``start``)."""
    return model(resid, start_at_layer=start, stop_at_layer=stop)


def block_overrides(model: HookedTransformer, index: int, tensors: Mapping[str, Tensor]) -> dict[str, Tensor]:
    """The entries of ``tensors`` that belong to block ``index``, named inside that block."""
    prefix_name = f"blocks.{index}."
    return {
        name.removeprefix(prefix_name): value
        for name, value in tensors.items()
        if name.startswith(prefix_name)
    }


def run_block_with(
    model: HookedTransformer,
    index: int,
    overrides: Mapping[str, Tensor],
    resid: Float[Tensor, "batch pos d_model"],
) -> Float[Tensor, "batch pos d_model"]:
    """Block ``index`` on ``resid`` with ``overrides`` (from `block_overrides`) in place of its tensors."""
    return torch.func.functional_call(model.blocks[index], dict(overrides), (resid,))


__all__ = [
    "NAME",
    "block_overrides",
    "prefix",
    "run_block_with",
    "run_blocks",
    "state_dict",
    "supports_processing",
    "trainable_parameters",
]
