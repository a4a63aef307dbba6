"""How good an SAE is on given text: variance explained, dead latents, L0.

Measured on tokens that are neither BOS nor padding (BOS activations are outliers that would
dominate the variance), streaming, so memory does not grow with the amount of text.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass

import torch
from sae_lens import SAE

from hookunlearn.activations import cache_hooks, tokenize_batch
from hookunlearn.backends.types import LanguageModel


@dataclass(frozen=True)
class SAEQuality:
    hook_name: str
    n_tokens: int
    explained_variance: float
    """1 - sum|x - x_hat|^2 / sum|x - mean(x)|^2 over all tokens."""
    dead_fraction: float
    """Latents that never fire on these tokens."""
    mean_l0: float

    def to_dict(self) -> dict[str, float | int | str]:
        return asdict(self)


@torch.no_grad()
def sae_quality(model: LanguageModel, sae: SAE, texts: Sequence[str], *, batch_size: int = 64) -> SAEQuality:
    hook = sae.cfg.metadata.hook_name
    d_in, d_sae = sae.cfg.d_in, sae.cfg.d_sae
    n = 0
    total = torch.zeros(d_in, dtype=torch.float64)
    total_sq = torch.zeros((), dtype=torch.float64)
    err_sq = torch.zeros((), dtype=torch.float64)
    fired = torch.zeros(d_sae, dtype=torch.bool)
    l0_sum = 0.0
    for start in range(0, len(texts), batch_size):
        tokens, mask = tokenize_batch(model, texts[start : start + batch_size])
        acts = cache_hooks(model, tokens, [hook])[hook][mask.to(model.cfg.device)]
        x = acts.to(dtype=sae.dtype)
        codes = sae.encode(x)
        recon = sae.decode(codes)
        x64, r64 = x.double().cpu(), recon.double().cpu()
        n += x64.shape[0]
        total += x64.sum(dim=0)
        total_sq += (x64**2).sum()
        err_sq += ((x64 - r64) ** 2).sum()
        active = (codes > 0).cpu()
        fired |= active.any(dim=0)
        l0_sum += float(active.sum())
    # sum |x - mean|^2 = sum |x|^2 - n |mean|^2
    variance = total_sq - (total**2).sum() / max(n, 1)
    return SAEQuality(
        hook_name=hook,
        n_tokens=n,
        explained_variance=float(1 - err_sq / variance) if n else float("nan"),
        dead_fraction=float((~fired).float().mean()),
        mean_l0=l0_sum / max(n, 1),
    )
