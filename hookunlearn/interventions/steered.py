"""The unconditional case of a clamp, written for lm-evaluation-harness's ``steered`` model.

The harness (0.4.x, ``lm_eval/models/hf_steered.py``) can steer a Hugging Face model through a
file of steering vectors: per HF module ("hookpoint") one direction and an action. Its ``clamp``
action sets the component of ``x - bias`` along the unit direction to a fixed value at every
position, whatever the input: an *unconditional* clamp. Our `clamp` intervention is conditional
(only latents that are active are clamped), which the harness cannot express; score that one with
`hookunlearn.evaluation.harness_lm.HookunlearnLM` instead.

`write_steer_file` writes, for one selected latent ``j`` of a clamp intervention, the harness's
``.pt`` format (a dict of tensors and numbers, loadable with ``torch.load(weights_only=True)``):
direction ``W_dec[j]``, bias ``b_dec``, value ``-multiplier * ||W_dec[j]||`` (where an SAE whose
encoder is its decoder's transpose puts ``x`` when latent ``j`` is clamped to ``-multiplier``;
for other SAEs it is the closest the harness's action comes), and the HF module whose output is
the clamp's TransformerLens hook. Choices that are ours: one latent per file, because the harness
keeps one direction per hookpoint (a second row for the same hookpoint replaces the first); and
the ``.pt`` format rather than the CSV, because the CSV's ``sae_lens`` loader indexes the return
value of ``SAE.from_pretrained``, which SAELens 6 no longer returns as a tuple.

    # model_type: the export's config.json "model_type" (the world model is "gpt2")
    hookunlearn.interventions.steered.write_steer_file(clamp, sae, "gpt2", "steer.pt", latent=874)
    lm_eval --model steered --model_args pretrained=EXPORT,steer_path=steer.pt --tasks ...
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any

import torch

from hookunlearn.errors import HookunlearnError

__all__ = ["hf_module_for_hook", "write_steer_file"]

_LAYER_CONTAINER = {"gpt2": "h"}
"""HF base-model attribute holding the decoder layers, by ``model_type`` (default ``layers``)."""


def hf_module_for_hook(hook: str, model_type: str) -> str:
    """The HF module (as ``model.base_model.named_modules()`` names it) whose output is ``hook``.

    ``blocks.L.hook_resid_post`` is the output of decoder layer L; ``blocks.L.hook_resid_pre`` of
    layer L - 1 (layer 0's input is the embedding, which is no layer output)."""
    container = _LAYER_CONTAINER.get(model_type, "layers")
    match = re.fullmatch(r"blocks\.(\d+)\.hook_resid_(pre|post)", hook)
    if match is None:
        raise HookunlearnError(
            f"hook {hook!r}: lm-evaluation-harness's steered model hooks module outputs; only residual-stream "
            "hooks (blocks.L.hook_resid_post, blocks.L.hook_resid_pre with L > 0) map to one."
        )
    layer = int(match.group(1)) - (match.group(2) == "pre")
    if layer < 0:
        raise HookunlearnError(
            f"hook {hook!r} is the embedding output, which no decoder layer returns; the harness cannot steer it."
        )
    return f"{container}.{layer}"


def write_steer_file(
    intervention: Any,
    sae: Any,
    model_type: str,
    path: str | os.PathLike[str],
    *,
    latent: int | None = None,
    force: bool = False,
) -> Path:
    """Write ``intervention`` (a `ClampIntervention`) unconditionally for one of its latents as
    the harness's steering ``.pt`` file; returns the path (see the module docstring)."""
    out = Path(path)
    if out.suffix not in (".pt", ".pth"):
        raise HookunlearnError(f"{out}: the harness reads steering vectors from a .pt or .pth file.")
    if out.exists() and not force:
        raise HookunlearnError(f"{out} exists; pass force=True to replace it.")
    latents = list(intervention.latents)
    if latent is None:
        if len(latents) != 1:
            raise HookunlearnError(
                f"the clamp has {len(latents)} latents; the harness keeps one direction per hookpoint, so "
                "choose one with latent=J (or score the whole clamp with HookunlearnLM)."
            )
        latent = latents[0]
    if latent not in latents:
        raise HookunlearnError(f"latent {latent} is not one of the clamp's latents ({len(latents)} of them).")
    direction = sae.W_dec[latent].detach().float().cpu()
    value = -float(intervention.multiplier) * float(direction.norm())
    steer = {
        hf_module_for_hook(intervention.hook, model_type): {
            "steering_vector": direction,
            "steering_coefficient": value,
            "action": "clamp",
            "bias": sae.b_dec.detach().float().cpu(),
            "head_index": None,
        }
    }
    from hookunlearn.artifacts import staged_file

    with staged_file(out) as staging:
        torch.save(steer, staging)
    return out
