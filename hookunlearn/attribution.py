"""Scores that say which SAE latents carry which knowledge.

- Known-vs-unknown (Ferrando et al.): score_j = P(latent j fires | known entity) -
  P(fires | unknown entity), on the code at the last token of the entity name.
- Per-text firing: whether a latent fires on any (non-BOS, non-pad) token of a text, the unit in
  which "this latent marks hazardous sentences" is measured.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from jaxtyping import Bool, Float
from sae_lens import SAE
from torch import Tensor

from hookunlearn.activations import cache_hooks, tokenize_batch
from hookunlearn.backends.types import LanguageModel


def firing_rate(codes: Float[Tensor, "n d_sae"], threshold: float = 0.0) -> Float[Tensor, " d_sae"]:
    """Fraction of rows on which each latent is above ``threshold``."""
    return (codes > threshold).float().mean(dim=0)


def known_unknown_scores(
    known_codes: Float[Tensor, "n_known d_sae"], unknown_codes: Float[Tensor, "n_unknown d_sae"]
) -> Float[Tensor, " d_sae"]:
    """Ferrando et al.'s score: P(fires | known) - P(fires | unknown), per latent."""
    return firing_rate(known_codes) - firing_rate(unknown_codes)


@torch.no_grad()
def encode(sae: SAE, activations: Float[Tensor, "n d_in"]) -> Float[Tensor, "n d_sae"]:
    return sae.encode(activations.to(device=sae.device, dtype=sae.dtype)).float().cpu()


@torch.no_grad()
def text_firing(
    model: LanguageModel, sae: SAE, texts: Sequence[str], *, batch_size: int = 64
) -> Bool[Tensor, "n_texts d_sae"]:
    """For each text, which latents fire on at least one of its (non-BOS, non-pad) tokens."""
    hook = sae.cfg.metadata.hook_name
    rows: list[Tensor] = []
    for start in range(0, len(texts), batch_size):
        tokens, mask = tokenize_batch(model, texts[start : start + batch_size])
        acts = cache_hooks(model, tokens, [hook])[hook]
        codes = sae.encode(acts.to(dtype=sae.dtype)) > 0
        codes = codes & mask.to(codes.device)[..., None]
        rows.append(codes.any(dim=1).cpu())
    return torch.cat(rows)
