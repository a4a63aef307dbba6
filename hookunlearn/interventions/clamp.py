"""Conditional SAE clamping: an inference-time intervention, not a weight edit.

At the hooked activation ``x``: encode ``f = SAE(x)``; for the selected latents that are active
(``f_j > 0``) set ``f_j = -multiplier``; output ``(x - decode(f)) + decode(f')``, i.e. the SAE's
error term plus the decoding of the modified code (SAEBench / Farrell et al.). Latents that are
inactive are left alone, so text without the targeted features passes through unchanged.
It cannot be exported as a checkpoint (there is no weight to write).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from jaxtyping import Float
from sae_lens import SAE
from torch import Tensor

from hookunlearn.backends.types import LanguageModel
from hookunlearn.errors import HookunlearnError


def clamp_fn(sae: SAE, latents: list[int], multiplier: float) -> Callable[..., Tensor]:
    index = torch.tensor(latents, dtype=torch.long)

    def hook(activation: Float[Tensor, "batch pos d"], hook: Any = None) -> Float[Tensor, "batch pos d"]:
        x = activation.to(sae.dtype)
        codes = sae.encode(x)
        error = x - sae.decode(codes)
        chosen = codes[..., index.to(codes.device)]
        codes = codes.clone()
        codes[..., index.to(codes.device)] = torch.where(
            chosen > 0, torch.full_like(chosen, -multiplier), chosen
        )
        return (error + sae.decode(codes)).to(activation.dtype)

    return hook


@dataclass(frozen=True)
class ClampConfig:
    multiplier: float = 20.0
    """Active selected latents are set to ``-multiplier`` (SAEBench sweeps 1-200)."""


@dataclass
class ClampIntervention:
    hook: str
    sae_spec: str
    latents: list[int]
    multiplier: float = 20.0
    """The value active selected latents are clamped to, negated (SAEBench sweeps 1-200)."""

    @classmethod
    def from_subspace(cls, subspace: Any, config: ClampConfig) -> ClampIntervention:
        """Clamp the subspace's relevant latents with its SAE at its hook."""
        if not subspace.sae.get("spec"):
            raise HookunlearnError("clamp needs a subspace that records its SAE spec.")
        return cls(subspace.hook, subspace.sae["spec"], list(subspace.relevant.latents), config.multiplier)

    @contextmanager
    def applied(self, model: LanguageModel, sae: SAE | None = None) -> Iterator[LanguageModel]:
        """``with intervention.applied(model): ...`` runs the model with the clamp hook on."""
        from hookunlearn.saes import load_sae

        sae = sae or load_sae(self.sae_spec, model)
        with model.hooks(fwd_hooks=[(self.hook, clamp_fn(sae, self.latents, self.multiplier))]):
            yield model

    def save(
        self,
        out_dir: str | Path,
        *,
        force: bool = False,
        manifest_extra: dict[str, Any] | None = None,
        model: dict[str, Any] | None = None,
    ) -> Path:
        from hookunlearn.artifacts import Manifest, write_run

        manifest = Manifest(
            kind="intervention",
            command="hookunlearn unlearn --method clamp",
            options={"multiplier": self.multiplier},
            model=model,
            hook=self.hook,
            extra={
                "method": "clamp",
                "sae_spec": self.sae_spec,
                "latents": self.latents,
                **(manifest_extra or {}),
            },
        )
        return write_run(out_dir, manifest, force=force)

    @classmethod
    def load(cls, run_dir: str | Path) -> ClampIntervention:
        from hookunlearn.artifacts import read_manifest

        manifest = read_manifest(run_dir, kind="intervention")
        extra = manifest.extra
        if manifest.hook is None or "latents" not in extra:
            raise HookunlearnError(f"{run_dir}: intervention manifest lacks the hook or latents.")
        return cls(
            manifest.hook, extra["sae_spec"], list(extra["latents"]), float(manifest.options["multiplier"])
        )


Config = ClampConfig
INTERVENTION = ClampIntervention
