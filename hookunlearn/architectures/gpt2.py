"""GPT-2: its TransformerLens config from an HF config, and its HF config and tensors from TransformerLens.

LayerNorm, learned positions, Conv1D-style (``in x out``) weights with biases everywhere, and an
``lm_head`` without a bias (which `_carry_unembed_bias` makes up for).
"""

from __future__ import annotations

from typing import Any

import einops
import torch
from jaxtyping import Float
from torch import Tensor
from transformer_lens import HookedTransformerConfig
from transformer_lens.pretrained.weight_conversions import convert_gpt2_weights
from transformers import GPT2Config, PretrainedConfig

from hookunlearn.architectures.base import (
    _LM_HEAD,
    Architecture,
    _activation,
    _by_model_type,
    _Converted,
    _hf_get,
    _layer_norm,
    _refuse_if,
    _StateDict,
)

_EMBEDDING = "transformer.wte.weight"


def _tl_fields(hf: PretrainedConfig) -> dict[str, Any]:
    _refuse_if(bool(_hf_get(hf, "add_cross_attention")), "add_cross_attention=True")
    return {
        "d_model": hf.n_embd,
        "d_head": hf.n_embd // hf.n_head,
        "n_heads": hf.n_head,
        "d_mlp": _hf_get(hf, "n_inner") or 4 * hf.n_embd,
        "n_layers": hf.n_layer,
        # transformers 5's GPT2Config has no n_ctx; n_positions is the size of wpe.
        "n_ctx": _hf_get(hf, "n_ctx") or hf.n_positions,
        "eps": hf.layer_norm_epsilon,
        "d_vocab": hf.vocab_size,
        "act_fn": _activation(hf.activation_function),
        "use_attn_scale": _hf_get(hf, "scale_attn_weights", True),
        "use_local_attn": False,
        "scale_attn_by_inverse_layer_idx": bool(_hf_get(hf, "scale_attn_by_inverse_layer_idx", False)),
        "normalization_type": "LN",
        "positional_embedding_type": "standard",
    }


def _carry_unembed_bias(
    ln_weight: Float[Tensor, " d_model"],
    ln_bias: Float[Tensor, " d_model"],
    W_U: Float[Tensor, "d_model d_vocab"],
    b_U: Float[Tensor, " d_vocab"],
) -> tuple[Tensor, Tensor, Tensor]:
    """(ln_f weight, ln_f bias, W_U) for GPT-2 that compute ``ln(x) @ W_U + b_U`` without a ``b_U``.

    A LayerNorm's normalised output ``n`` sums to zero, so with the norm's weight folded in,
    ``W = diag(w) W_U``, ``b = ln_bias @ W_U + b_U`` and ``v = b - mean_rows(W)``:
    ``(n + 1/d) @ (W + 1 v^T) = n @ W + mean_rows(W) + v = n @ W + b``. Exact for any ``b_U``.
    """
    d_model = W_U.shape[0]
    folded = ln_weight.double()[:, None] * W_U.double()
    bias = ln_bias.double() @ W_U.double() + b_U.double()
    carried = folded + (bias - folded.mean(dim=0))[None, :]
    dtype = W_U.dtype
    return (
        torch.ones(d_model, dtype=dtype),
        torch.full((d_model,), 1.0 / d_model, dtype=dtype),
        carried.to(dtype),
    )


def _hf_tensors(sd: _StateDict, cfg: HookedTransformerConfig) -> _Converted:
    dtype, d_model = sd.get("embed.W_E").dtype, cfg.d_model
    out: dict[str, Tensor] = {
        _EMBEDDING: sd.get("embed.W_E"),
        "transformer.wpe.weight": sd.get("pos_embed.W_pos"),
    }
    for layer in range(cfg.n_layers):
        tl, hf = f"blocks.{layer}", f"transformer.h.{layer}"
        out[f"{hf}.ln_1.weight"], out[f"{hf}.ln_1.bias"] = _layer_norm(sd, f"{tl}.ln1", d_model, dtype)
        weights = [sd.get(f"{tl}.attn.W_{which}") for which in "QKV"]
        biases = [sd.get(f"{tl}.attn.b_{which}") for which in "QKV"]
        out[f"{hf}.attn.c_attn.weight"] = torch.cat(
            [einops.rearrange(w, "n m h -> m (n h)") for w in weights], dim=1
        )
        out[f"{hf}.attn.c_attn.bias"] = torch.cat([einops.rearrange(b, "n h -> (n h)") for b in biases])
        out[f"{hf}.attn.c_proj.weight"] = einops.rearrange(sd.get(f"{tl}.attn.W_O"), "n h m -> (n h) m")
        out[f"{hf}.attn.c_proj.bias"] = sd.get(f"{tl}.attn.b_O")
        out[f"{hf}.ln_2.weight"], out[f"{hf}.ln_2.bias"] = _layer_norm(sd, f"{tl}.ln2", d_model, dtype)
        out[f"{hf}.mlp.c_fc.weight"] = sd.get(f"{tl}.mlp.W_in")
        out[f"{hf}.mlp.c_fc.bias"] = sd.get(f"{tl}.mlp.b_in")
        out[f"{hf}.mlp.c_proj.weight"] = sd.get(f"{tl}.mlp.W_out")
        out[f"{hf}.mlp.c_proj.bias"] = sd.get(f"{tl}.mlp.b_out")
    ln_f_weight, ln_f_bias = _layer_norm(sd, "ln_final", d_model, dtype)
    W_U, b_U = sd.get("unembed.W_U"), sd.get("unembed.b_U")
    notes: list[str] = []
    if torch.count_nonzero(b_U) > 0:
        ln_f_weight, ln_f_bias, W_U = _carry_unembed_bias(ln_f_weight, ln_f_bias, W_U, b_U)
        notes.append(
            "unembed.b_U is non-zero (fold_ln puts ln_final's bias there) and GPT-2's lm_head has no "
            "bias: ln_final's weight is folded into lm_head and b_U carried exactly by ln_f.bias = "
            "1/d_model and a rank-one term in lm_head (LayerNorm outputs sum to zero)"
        )
    out["transformer.ln_f.weight"], out["transformer.ln_f.bias"] = ln_f_weight, ln_f_bias
    out[_LM_HEAD] = W_U.T
    return _Converted(out, notes)


def _config_from_tl(cfg: HookedTransformerConfig, special: dict[str, Any]) -> PretrainedConfig:
    gpt2 = GPT2Config(
        vocab_size=cfg.d_vocab, n_positions=cfg.n_ctx, n_embd=cfg.d_model,
        n_layer=cfg.n_layers, n_head=cfg.n_heads, n_inner=cfg.d_mlp, activation_function=cfg.act_fn,
        layer_norm_epsilon=cfg.eps, scale_attn_weights=cfg.use_attn_scale,
        scale_attn_by_inverse_layer_idx=cfg.scale_attn_by_inverse_layer_idx,
        attn_pdrop=0.0, embd_pdrop=0.0, resid_pdrop=0.0, **special,
    )  # fmt: skip
    gpt2.n_ctx = cfg.n_ctx  # TransformerLens's own GPT-2 loader reads n_ctx (transformers 5 dropped it)
    return gpt2


def _adapt_source_config(config: PretrainedConfig) -> None:
    if getattr(config, "n_ctx", None) is None:
        config.n_ctx = config.n_positions  # TransformerLens's own GPT-2 loader reads n_ctx


ARCHITECTURES: dict[str, Architecture] = _by_model_type(
    Architecture(
        model_type="gpt2",
        embedding_name=_EMBEDDING,
        tl_fields=_tl_fields,
        tl_weights=convert_gpt2_weights,
        hf_tensors=_hf_tensors,
        config_from_tl=_config_from_tl,
        adapt_source_config=_adapt_source_config,
    )
)
