"""Gemma-2: its TransformerLens config from an HF config, and its HF config and tensors from TransformerLens.

The Llama decoder of ``llama.py`` plus what Gemma-2 adds: a scaled embedding, RMSNorm weights
stored as ``w - 1``, norms after attention and around the MLP, a query scale of its own, logit
soft caps and alternating sliding-window layers.
"""

from __future__ import annotations

import math
from typing import Any

import torch
from jaxtyping import Float
from torch import Tensor
from transformer_lens import HookedTransformerConfig
from transformer_lens.pretrained.weight_conversions import convert_gemma_weights
from transformers import Gemma2Config, PretrainedConfig

from hookunlearn.architectures.base import (
    Architecture,
    _by_model_type,
    _Converted,
    _head_dim,
    _hf_get,
    _refuse_if,
    _StateDict,
)
from hookunlearn.architectures.llama import (
    _EMBEDDING,
    _decoder_config_kwargs,
    _decoder_tensors,
    _llama_like_config,
    _sliding_window,
)


def _tl_fields(hf: PretrainedConfig) -> dict[str, Any]:
    _refuse_if(bool(_hf_get(hf, "attention_bias")), "attention_bias=True")
    scalar = _hf_get(hf, "query_pre_attn_scalar") or _head_dim(hf)
    attn_cap = _hf_get(hf, "attn_logit_softcapping")
    logit_cap = _hf_get(hf, "final_logit_softcapping")
    return {
        **_llama_like_config(hf, _hf_get(hf, "hidden_activation") or _hf_get(hf, "hidden_act")),
        "use_attn_scale": True,
        # HF scales scores by query_pre_attn_scalar ** -0.5; TL divides by attn_scale.
        "attn_scale": math.sqrt(scalar),
        "attn_scores_soft_cap": float(attn_cap) if attn_cap else -1.0,
        "output_logits_soft_cap": float(logit_cap) if logit_cap else -1.0,
        "use_normalization_before_and_after": True,
    }


def _gemma_embedding(
    W_E: Float[Tensor, "d_vocab d_model"], W_U: Float[Tensor, "d_model d_vocab_out"], d_model: int
) -> tuple[Tensor, bool]:
    """Gemma's stored embedding (TL's ``W_E`` is pre-multiplied by ``sqrt(d_model)``).

    Returns the embedding and whether it was recovered exactly from a tied, unedited ``W_U``.
    """
    scale = torch.tensor(d_model**0.5, dtype=torch.float32)  # as convert_gemma_weights and HF compute it
    if W_U.shape[::-1] == W_E.shape:
        candidate = W_U.T
        if torch.equal((candidate.float() * scale.to(candidate.device)).to(W_E.dtype), W_E):
            return candidate, True
    return (W_E.float() / scale.to(W_E.device)).to(W_E.dtype), False


def _hf_tensors(sd: _StateDict, cfg: HookedTransformerConfig) -> _Converted:
    embedding, recovered = _gemma_embedding(sd.get("embed.W_E"), sd.get("unembed.W_U"), cfg.d_model)
    note = "embed.W_E divided by sqrt(d_model) (HF Gemma multiplies at run time)" + (
        "; recovered bit-exactly from the tied W_U" if recovered else ""
    )
    return _decoder_tensors(
        sd, cfg, "gemma2", embedding=embedding, notes=[note], rms_plus_one=True, sandwich_norms=True
    )


def _config_from_tl(cfg: HookedTransformerConfig, special: dict[str, Any]) -> PretrainedConfig:
    scalar = cfg.attn_scale**2  # TL divides scores by attn_scale; HF by sqrt(query_pre_attn_scalar)
    query_pre_attn_scalar: Any = round(scalar) if abs(scalar - round(scalar)) < 1e-6 else scalar
    attn_types = cfg.attn_types or ["global"] * cfg.n_layers
    return Gemma2Config(
        **_decoder_config_kwargs(cfg, special),
        head_dim=cfg.d_head,
        hidden_activation=cfg.act_fn,
        query_pre_attn_scalar=query_pre_attn_scalar,
        sliding_window=_sliding_window(cfg),
        layer_types=["sliding_attention" if kind == "local" else "full_attention" for kind in attn_types],
        attn_logit_softcapping=cfg.attn_scores_soft_cap if cfg.attn_scores_soft_cap > 0 else None,
        final_logit_softcapping=cfg.output_logits_soft_cap if cfg.output_logits_soft_cap > 0 else None,
    )


ARCHITECTURES: dict[str, Architecture] = _by_model_type(
    Architecture(
        model_type="gemma2",
        embedding_name=_EMBEDDING,
        tl_fields=_tl_fields,
        tl_weights=convert_gemma_weights,
        hf_tensors=_hf_tensors,
        config_from_tl=_config_from_tl,
    )
)
