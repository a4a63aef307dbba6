"""The ``hooked`` backend: `HookedTransformer`, TransformerLens's own block implementations.

Loading is `hookunlearn.models` (hookunlearn's per-family conversions in
`hookunlearn.architectures`); export is `hookunlearn.export`'s inversion of them. What this module
adds is the trainer's view of a `HookedTransformer`, the same operations `hookunlearn.backends.bridge`
gives for a `TransformerBridge`:

- parameters by TransformerLens name (``blocks.{i}.mlp.W_out``), already in TransformerLens's
  orientation (the residual stream on the last axis of a writing weight);
- the prefix below the first trained block (``stop_at_layer``) and a slice of blocks
  (``start_at_layer``/``stop_at_layer``), both native to `HookedTransformer`;
- a block called with some of its tensors swapped (`torch.func.functional_call`);
- placement over several GPUs (``n_devices``, `place`): block ``i`` on TransformerLens's
  ``get_device_for_block_index(i, cfg)``, the embeddings with the first block, the final norm and
  unembedding with the last, so that TransformerLens's forward (which moves the residual stream to
  that same device before each block) and the trainer's own block calls agree.
"""

from __future__ import annotations

import importlib
from collections.abc import Mapping, Sequence

import torch
from jaxtyping import Float, Int
from torch import Tensor
from transformer_lens import HookedTransformer

from hookunlearn.errors import HookunlearnError, ModelLoadError

NAME = "hooked"


# ---------------------------------------------------------------------------------------------
# Placement over several devices
# ---------------------------------------------------------------------------------------------


def _device_for_block(index: int, cfg: object) -> torch.device:
    """TransformerLens's own rule, looked up where its forward looks it up (one place to follow)."""
    # the module, not the class of the same name that ``transformer_lens`` exports
    tl_module = importlib.import_module("transformer_lens.HookedTransformer")
    return torch.device(tl_module.get_device_for_block_index(index, cfg))


def place(model: HookedTransformer, device: torch.device, n_devices: int) -> None:
    """Spread the blocks over ``n_devices`` devices starting at ``device`` (TransformerLens's split:
    block ``i`` on ``get_device_for_block_index(i, cfg)``); embeddings go with block 0, the final
    norm and the unembedding with the last block. Sets ``cfg.device``/``cfg.n_devices``.

    Not TransformerLens's ``move_model_modules_to_device``: in 3.9 that puts each module on the
    device with the most free memory at the moment it moves, which need not be the device its
    forward then sends the residual stream to."""
    if n_devices > model.cfg.n_layers:
        raise ModelLoadError(
            f"n_devices={n_devices} is more than the model's {model.cfg.n_layers} blocks: some devices would "
            f"hold nothing; give --n-devices {model.cfg.n_layers} or fewer."
        )
    model.cfg.device = str(device)
    model.cfg.n_devices = n_devices
    first = _device_for_block(0, model.cfg)
    last = _device_for_block(model.cfg.n_layers - 1, model.cfg)
    for name, module in model.named_children():
        if name == "blocks":
            continue
        target = last if name in ("ln_final", "unembed") else first
        module.to(target)
    for index, block in enumerate(model.blocks):
        block.to(_device_for_block(index, model.cfg))


def multi_device(model: HookedTransformer) -> bool:
    """Whether the blocks are spread over more than one device."""
    return int(getattr(model.cfg, "n_devices", 1) or 1) > 1


def block_device(model: HookedTransformer, index: int) -> torch.device:
    """The device block ``index``'s weights are on."""
    return next(model.blocks[index].parameters()).device


def hook_device(model: HookedTransformer, hook_name: str) -> torch.device:
    """Where the activation at ``hook_name`` is (an SAE reading it belongs there): the device of
    the hook's block (``hook_resid_pre`` included: the forward moves the residual stream before
    the block); the first block's for hooks below the blocks, the last's for those above."""
    from hookunlearn.hooks import hook_layer

    if not multi_device(model):
        return next(model.parameters()).device
    layer = hook_layer(hook_name)
    if layer is None:
        layer = model.cfg.n_layers - 1 if hook_name.startswith(("ln_final", "unembed")) else 0
    return block_device(model, layer)


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
    """Block ``index`` on ``resid`` with ``overrides`` (from `block_overrides`) in place of its tensors.
    On a model spread over several devices the residual stream first moves to the block's device
    (as TransformerLens's forward does); on one device nothing is copied."""
    if multi_device(model):
        resid = resid.to(block_device(model, index))
    return torch.func.functional_call(model.blocks[index], dict(overrides), (resid,))


__all__ = [
    "NAME",
    "block_device",
    "block_overrides",
    "hook_device",
    "multi_device",
    "place",
    "prefix",
    "run_block_with",
    "run_blocks",
    "state_dict",
    "supports_processing",
    "trainable_parameters",
]
