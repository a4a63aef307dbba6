"""Hook names and the layers they belong to: the one home of these rules (torch-free)."""

from __future__ import annotations

import re

from hookunlearn.errors import HookunlearnError

_LAYER_PATTERN = re.compile(r"^blocks\.(\d+)\.")


def hook_layer(hook_name: str) -> int | None:
    """The block index in ``blocks.{L}.<...>``; ``None`` for hooks outside the blocks (``hook_embed``)."""
    match = _LAYER_PATTERN.match(hook_name)
    return int(match.group(1)) if match else None


def reads_residual(hook_name: str) -> bool:
    """Whether the hook is on the residual stream (``hook_resid_pre``, ``_mid`` or ``_post``)."""
    return bool(re.search(r"hook_resid_(pre|mid|post)$", hook_name))


def resid_post_hook(layer: int) -> str:
    """The residual stream after block ``layer``: what the trainer's activation objectives read."""
    return f"blocks.{layer}.hook_resid_post"


def trainer_layer(hook: str) -> int:
    """The block whose output (``blocks.L.hook_resid_post``) is the tensor at ``hook``: the trainer
    reads the residual stream there. ``blocks.L.hook_resid_pre`` is block ``L - 1``'s output."""
    match = re.fullmatch(r"blocks\.(\d+)\.hook_resid_(pre|post)", hook)
    if match is None:
        raise HookunlearnError(
            f"the subspace's hook {hook!r} is not on the residual stream (blocks.L.hook_resid_pre or "
            "hook_resid_post); the unlearning objectives read the residual stream: select with residual SAEs."
        )
    block, kind = int(match[1]), match[2]
    if kind == "post":
        return block
    if block == 0:
        raise HookunlearnError(
            "the subspace's hook blocks.0.hook_resid_pre is the embedding output: no block below it can "
            "be trained to change it; use an SAE at a later layer."
        )
    return block - 1


__all__ = ["hook_layer", "reads_residual", "resid_post_hook", "trainer_layer"]
