"""Llama, Mistral and Qwen2: their TransformerLens configs from HF configs, and their HF configs and tensors back.

All three are the same decoder: RMSNorm, rotary attention with (grouped) KV heads, a gated MLP,
no biases but Qwen2's q/k/v ones. That decoder's pieces (`_llama_like_config`,
`_decoder_tensors`, `_decoder_config_kwargs`) are also what ``gemma2.py`` builds on.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from functools import partial
from typing import Any

import einops
import torch
from jaxtyping import Float
from torch import Tensor
from transformer_lens import HookedTransformerConfig
from transformer_lens.pretrained.weight_conversions import (
    convert_llama_weights,
    convert_mistral_weights,
    convert_qwen2_weights,
)
from transformers import LlamaConfig, MistralConfig, PretrainedConfig, Qwen2Config

from hookunlearn.architectures.base import (
    _LM_HEAD,
    _ROUND_OFF_EPS,
    Architecture,
    _activation,
    _attention_layout,
    _by_model_type,
    _Converted,
    _eps,
    _export_error,
    _head_dim,
    _hf_get,
    _max_abs,
    _refuse_if,
    _require_zero,
    _rms_weight,
    _rope_fields,
    _rope_parameters,
    _StateDict,
)

_EMBEDDING = "model.embed_tokens.weight"

# Qwen2's b_O -> v_proj.bias unfold must leave at most this many epsilons (relative to max|b_O|)
# of least-squares residual; an exactly representable b_O leaves well under one.
_UNFOLD_EPS = 4.0

# ---------------------------------------------------------------------------------------------
# HF config -> HookedTransformerConfig
# ---------------------------------------------------------------------------------------------


def _llama_like_config(hf: PretrainedConfig, activation: str | None) -> dict[str, Any]:
    """Fields shared by Llama, Mistral and Qwen2: RMSNorm, rotary, gated MLP, GQA.

    ``activation`` is the HF config's activation name (``hidden_act``; Gemma-2's ``hidden_activation``).
    """
    d_head = _head_dim(hf)
    return {
        "d_model": hf.hidden_size,
        "d_head": d_head,
        "n_heads": hf.num_attention_heads,
        "n_key_value_heads": _hf_get(hf, "num_key_value_heads") or hf.num_attention_heads,
        "d_mlp": hf.intermediate_size,
        "n_layers": hf.num_hidden_layers,
        "n_ctx": hf.max_position_embeddings,
        "eps": hf.rms_norm_eps,
        "d_vocab": hf.vocab_size,
        "act_fn": _activation(activation),
        "normalization_type": "RMS",
        "positional_embedding_type": "rotary",
        "rotary_adjacent_pairs": False,
        "rotary_dim": d_head,
        "final_rms": True,
        "gated_mlp": True,
        **_rope_fields(hf),
        **_attention_layout(hf, hf.num_hidden_layers),
    }


def _llama_config(hf: PretrainedConfig) -> dict[str, Any]:
    # convert_llama_weights reads no biases: a checkpoint with them would load silently wrong.
    _refuse_if(bool(_hf_get(hf, "attention_bias")), "attention_bias=True")
    _refuse_if(bool(_hf_get(hf, "mlp_bias")), "mlp_bias=True")
    cfg = _llama_like_config(hf, _hf_get(hf, "hidden_act"))
    if cfg["n_key_value_heads"] == cfg["n_heads"]:
        cfg["n_key_value_heads"] = None  # convert_llama_weights uses GQA key names only when set
    return cfg


def _mistral_config(hf: PretrainedConfig) -> dict[str, Any]:
    return _llama_like_config(hf, _hf_get(hf, "hidden_act"))


def _qwen2_config(hf: PretrainedConfig) -> dict[str, Any]:
    return {
        **_llama_like_config(hf, _hf_get(hf, "hidden_act")),
        # As TransformerLens does for Qwen2: its tokenizer adds no BOS, and the model was not trained with one.
        "default_prepend_bos": False,
    }


# ---------------------------------------------------------------------------------------------
# TransformerLens state dict -> HF tensors
# ---------------------------------------------------------------------------------------------


def _constant_shift_only(b_U: Tensor) -> bool:
    """Whether ``b_U`` is the same for every token (a shift that leaves log-probs unchanged)."""
    spread = _max_abs(b_U.float() - b_U.float().mean())
    return spread <= _ROUND_OFF_EPS * _eps(b_U.dtype) * max(1.0, _max_abs(b_U))


def _unfold_output_bias(
    b_O: Float[Tensor, " d_model"],
    W_O: Float[Tensor, "n_heads d_head d_model"],
    n_kv_heads: int,
    label: str,
) -> Float[Tensor, "n_kv_heads d_head"]:
    """Value-bias change ``x`` with ``sum_h x[kv(h)] @ W_O[h] = b_O`` (least squares).

    Attention patterns sum to 1, so a value bias adds the constant ``b_V @ W_O`` to the output:
    this undoes ``fold_value_biases`` for a model whose HF attention has no output bias.
    """
    per_kv_head = einops.reduce(
        W_O.detach().double().cpu(), "(kv group) h m -> (kv h) m", "sum", kv=n_kv_heads
    )
    target = b_O.detach().double().cpu()
    solution = torch.linalg.lstsq(per_kv_head.T, target[:, None], driver="gelsd").solution[:, 0]
    residual = per_kv_head.T @ solution - target
    # The floor covers float64's own least-squares round-off (models are float32 or coarser).
    allowed = _UNFOLD_EPS * max(_eps(b_O.dtype), 1e-10) * _max_abs(b_O)
    if _max_abs(residual) > allowed:
        raise _export_error(
            f"{label}: the attention output bias b_O (max |value| {_max_abs(b_O):.3g}) cannot be "
            "exported: Qwen2's o_proj has no bias, and b_O is not in the span of what the v_proj "
            f"bias can produce through this layer's W_O (least-squares residual {_max_abs(residual):.3g}). "
            "This happens when W_O is edited on a model loaded with fold_value_biases. Load the "
            "model without fold_value_biases (e.g. processing='fold_ln,center_unembed') before "
            "editing W_O, or keep b_O fixed at zero."
        )
    return einops.rearrange(solution, "(kv h) -> kv h", kv=n_kv_heads).to(b_O.dtype).to(b_O.device)


def _decoder_tensors(
    sd: _StateDict,
    cfg: HookedTransformerConfig,
    model_type: str,
    *,
    qkv_bias: bool = False,
    embedding: Tensor | None = None,
    notes: Sequence[str] = (),
    rms_plus_one: bool = False,
    sandwich_norms: bool = False,
) -> _Converted:
    """Llama, Mistral, Qwen2 and Gemma-2: rotary attention with (grouped) KV heads, gated MLP, RMSNorm.

    Args:
        model_type: named in messages.
        qkv_bias: q/k/v_proj have biases but o_proj has none (Qwen2); else every bias must be zero.
        embedding: the HF embedding when it is not TL's ``embed.W_E`` (Gemma's is unscaled).
        notes: notes already made (they come first).
        rms_plus_one: RMSNorm scales by ``1 + w`` (Gemma; see `_rms_weight`).
        sandwich_norms: norms after attention and around the MLP (Gemma-2).
    """
    W_E, W_U = sd.get("embed.W_E"), sd.get("unembed.W_U")
    dtype, d_model = W_E.dtype, cfg.d_model
    n_kv_heads = cfg.n_key_value_heads or cfg.n_heads
    notes = list(notes)

    def norm(name: str, required: bool = False) -> Tensor:
        weight = sd.get(name) if required else sd.maybe(name)
        return _rms_weight(weight, d_model, dtype, gemma=rms_plus_one)

    out: dict[str, Tensor] = {_EMBEDDING: W_E if embedding is None else embedding}
    for layer in range(cfg.n_layers):
        tl, hf = f"blocks.{layer}", f"model.layers.{layer}"
        attn = f"{tl}.attn"
        out[f"{hf}.input_layernorm.weight"] = norm(f"{tl}.ln1.w")
        W_K = sd.first(f"{attn}._W_K", f"{attn}.W_K")
        W_V = sd.first(f"{attn}._W_V", f"{attn}.W_V")
        W_O = sd.get(f"{attn}.W_O")
        out[f"{hf}.self_attn.q_proj.weight"] = einops.rearrange(sd.get(f"{attn}.W_Q"), "n m h -> (n h) m")
        out[f"{hf}.self_attn.k_proj.weight"] = einops.rearrange(W_K, "n m h -> (n h) m")
        out[f"{hf}.self_attn.v_proj.weight"] = einops.rearrange(W_V, "n m h -> (n h) m")
        out[f"{hf}.self_attn.o_proj.weight"] = einops.rearrange(W_O, "n h m -> m (n h)")
        b_K_name = f"{attn}._b_K" if sd.has(f"{attn}._b_K") else f"{attn}.b_K"
        b_V_name = f"{attn}._b_V" if sd.has(f"{attn}._b_V") else f"{attn}.b_V"
        if qkv_bias:
            b_V, b_O = sd.get(b_V_name), sd.get(f"{attn}.b_O")
            if torch.count_nonzero(b_O) > 0:
                b_V = (b_V.double() + _unfold_output_bias(b_O, W_O, n_kv_heads, sd.label).double()).to(
                    b_V.dtype
                )
                if not any("b_O" in note for note in notes):
                    notes.append(
                        "attn.b_O (folded value biases) moved back into v_proj.bias by least squares "
                        "(Qwen2's o_proj has no bias)"
                    )
            out[f"{hf}.self_attn.q_proj.bias"] = einops.rearrange(sd.get(f"{attn}.b_Q"), "n h -> (n h)")
            out[f"{hf}.self_attn.k_proj.bias"] = einops.rearrange(sd.get(b_K_name), "n h -> (n h)")
            out[f"{hf}.self_attn.v_proj.bias"] = einops.rearrange(b_V, "n h -> (n h)")
        else:
            for name in (f"{attn}.b_Q", b_K_name, b_V_name):
                _require_zero(sd, name, model_type, "query/key/value biases")
            _require_zero(sd, f"{attn}.b_O", model_type, "attention output bias")
        if sandwich_norms:
            out[f"{hf}.post_attention_layernorm.weight"] = norm(f"{tl}.ln1_post.w", required=True)
            out[f"{hf}.pre_feedforward_layernorm.weight"] = norm(f"{tl}.ln2.w")
            out[f"{hf}.post_feedforward_layernorm.weight"] = norm(f"{tl}.ln2_post.w", required=True)
        else:
            out[f"{hf}.post_attention_layernorm.weight"] = norm(f"{tl}.ln2.w")
        out[f"{hf}.mlp.gate_proj.weight"] = sd.get(f"{tl}.mlp.W_gate").T
        out[f"{hf}.mlp.up_proj.weight"] = sd.get(f"{tl}.mlp.W_in").T
        out[f"{hf}.mlp.down_proj.weight"] = sd.get(f"{tl}.mlp.W_out").T
        _require_zero(sd, f"{tl}.mlp.b_in", model_type, "MLP biases")
        _require_zero(sd, f"{tl}.mlp.b_out", model_type, "MLP biases")
    out["model.norm.weight"] = norm("ln_final.w")
    b_U = sd.get("unembed.b_U")
    if torch.count_nonzero(b_U) > 0:
        soft_capped = cfg.output_logits_soft_cap is not None and cfg.output_logits_soft_cap > 0
        if soft_capped or not _constant_shift_only(b_U):
            why = "and its logit soft cap makes even a constant b_U change the output" if soft_capped else ""
            raise _export_error(
                f"{sd.label}: 'unembed.b_U' is non-zero (max |value| {_max_abs(b_U):.3g}), but {model_type}'s "
                f"lm_head has no bias {why}. Keep b_U at zero (freeze it) when editing this model."
            )
        notes.append("unembed.b_U is a constant (a logit shift that leaves log-probs unchanged); dropped")
    out[_LM_HEAD] = W_U.T
    return _Converted(out, notes)


# ---------------------------------------------------------------------------------------------
# HookedTransformerConfig -> HF config
# ---------------------------------------------------------------------------------------------


def _decoder_config_kwargs(cfg: HookedTransformerConfig, special: dict[str, Any]) -> dict[str, Any]:
    """The HF config fields Llama, Mistral, Qwen2 and Gemma-2 share, with the special-token ids."""
    return {
        "vocab_size": cfg.d_vocab,
        "hidden_size": cfg.d_model,
        "intermediate_size": cfg.d_mlp,
        "num_hidden_layers": cfg.n_layers,
        "num_attention_heads": cfg.n_heads,
        "num_key_value_heads": cfg.n_key_value_heads or cfg.n_heads,
        "max_position_embeddings": cfg.n_ctx,
        "rms_norm_eps": cfg.eps,
        "rope_parameters": _rope_parameters(cfg),
        **special,
    }


def _sliding_window(cfg: HookedTransformerConfig) -> int | None:
    return cfg.window_size if cfg.use_local_attn else None


def _llama_hf_config(cfg: HookedTransformerConfig, special: dict[str, Any]) -> PretrainedConfig:
    return LlamaConfig(
        **_decoder_config_kwargs(cfg, special),
        head_dim=cfg.d_head,
        hidden_act=cfg.act_fn,
        attention_bias=False,
        mlp_bias=False,
    )


def _mistral_hf_config(cfg: HookedTransformerConfig, special: dict[str, Any]) -> PretrainedConfig:
    return MistralConfig(
        **_decoder_config_kwargs(cfg, special),
        head_dim=cfg.d_head,
        hidden_act=cfg.act_fn,
        sliding_window=_sliding_window(cfg),
    )


def _qwen2_hf_config(cfg: HookedTransformerConfig, special: dict[str, Any]) -> PretrainedConfig:
    return Qwen2Config(
        **_decoder_config_kwargs(cfg, special), hidden_act=cfg.act_fn, use_sliding_window=False
    )


def _architecture(
    model_type: str,
    tl_fields: Callable[[PretrainedConfig], dict[str, Any]],
    tl_weights: Callable[..., dict[str, Tensor]],
    config_from_tl: Callable[[HookedTransformerConfig, dict[str, Any]], PretrainedConfig],
    **tensor_options: bool,
) -> Architecture:
    return Architecture(
        model_type=model_type,
        embedding_name=_EMBEDDING,
        tl_fields=tl_fields,
        tl_weights=tl_weights,
        hf_tensors=partial(_decoder_tensors, model_type=model_type, **tensor_options),
        config_from_tl=config_from_tl,
    )


ARCHITECTURES: dict[str, Architecture] = _by_model_type(
    _architecture("llama", _llama_config, convert_llama_weights, _llama_hf_config),
    _architecture("mistral", _mistral_config, convert_mistral_weights, _mistral_hf_config),
    _architecture("qwen2", _qwen2_config, convert_qwen2_weights, _qwen2_hf_config, qkv_bias=True),
)
