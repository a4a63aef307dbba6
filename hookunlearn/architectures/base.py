"""What the architecture modules share: the `Architecture` record and the helpers of both directions.

- HF config -> TransformerLens config: `_hf_get`, `_rope_fields`, `_attention_layout`,
  `_activation`, `_head_dim`, `_refuse_if`, and `_UnsupportedFeature`, which they raise for a
  feature the conversion would get silently wrong (`hookunlearn.models` words it for the user).
- TransformerLens -> HF (export): `_StateDict` (read access that tracks what was used),
  `_Converted`, the norm and bias helpers (`_layer_norm`, `_rms_weight`, `_require_zero`), the
  round-off measures (`_eps`, `_max_abs`, `_ROUND_OFF_EPS`), `_rope_parameters` and
  `_special_token_ids` for building an HF config.

Export-direction failures are `hookunlearn.export.ExportError`, made by `_export_error` (imported
at raise time: hookunlearn.export imports this module).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import torch
from torch import Tensor
from transformer_lens import HookedTransformerConfig
from transformer_lens.utilities.activation_functions import SUPPORTED_ACTIVATIONS
from transformers import PretrainedConfig

from hookunlearn.architectures import HF_CLASSES

if TYPE_CHECKING:
    from hookunlearn.export import ExportError

# ---------------------------------------------------------------------------------------------
# The record of one architecture
# ---------------------------------------------------------------------------------------------


def _unchanged(config: PretrainedConfig) -> None:
    """The default `Architecture.adapt_source_config`: a source config needs nothing added."""


@dataclass(frozen=True)
class Architecture:
    """What hookunlearn knows about one HF ``model_type``, in both directions.

    Built by its family's module and handed out by `hookunlearn.architectures.get_architecture`;
    the HF class name is the registry's.
    """

    model_type: str
    """HF ``model_type`` (``gpt2``, ``llama``, ...)."""
    embedding_name: str
    """HF name of the token embedding (a tied checkpoint stores ``lm_head.weight`` only as this)."""
    tl_fields: Callable[[PretrainedConfig], dict[str, Any]]
    """HF config -> HookedTransformerConfig fields but ``original_architecture`` (raises `_UnsupportedFeature`)."""
    tl_weights: Callable[..., dict[str, Tensor]]
    """TransformerLens's ``convert_*_weights(hf_model, cfg)``: HF model -> TL state dict."""
    hf_tensors: Callable[[_StateDict, HookedTransformerConfig], _Converted]
    """TL state dict -> HF tensors (raises `hookunlearn.export.ExportError` for what HF cannot hold)."""
    config_from_tl: Callable[[HookedTransformerConfig, dict[str, Any]], PretrainedConfig]
    """TL config and special-token ids -> HF config (for a model with no source checkpoint)."""
    adapt_source_config: Callable[[PretrainedConfig], None] = _unchanged
    """Adds, in place, what a source checkpoint's config lacks but TransformerLens reads."""

    @property
    def hf_class(self) -> str:
        """HF architecture class (``config.architectures[0]``, TL's ``original_architecture``)."""
        return HF_CLASSES[self.model_type]

    def tl_config(self, hf_config: PretrainedConfig) -> dict[str, Any]:
        """The HookedTransformerConfig fields for ``hf_config`` (raises `_UnsupportedFeature`)."""
        return {**self.tl_fields(hf_config), "original_architecture": self.hf_class}

    def hf_config(self, cfg: HookedTransformerConfig, tokenizer: Any) -> PretrainedConfig:
        """An HF config for ``cfg`` (special-token ids from ``tokenizer``, when given)."""
        return self.config_from_tl(cfg, _special_token_ids(tokenizer))


def _by_model_type(*architectures: Architecture) -> dict[str, Architecture]:
    """A family module's ``ARCHITECTURES``: its architectures by ``model_type``."""
    return {architecture.model_type: architecture for architecture in architectures}


# ---------------------------------------------------------------------------------------------
# HF config -> HookedTransformerConfig
# ---------------------------------------------------------------------------------------------


class _UnsupportedFeature(Exception):
    """A checkpoint uses a feature our conversion would get silently wrong (message says which)."""


def _hf_get(hf: PretrainedConfig, name: str, default: Any = None) -> Any:
    return getattr(hf, name, default)


def _rope_fields(hf: PretrainedConfig) -> dict[str, Any]:
    """Rotary base (+ Llama-3 NTK-by-parts scaling) from ``rope_parameters`` (transformers 5) or older fields."""
    params = _hf_get(hf, "rope_parameters") or {}
    scaling = _hf_get(hf, "rope_scaling") or {}
    if params and all(isinstance(value, Mapping) for value in params.values()):
        # Per-layer-type parameters ({"full_attention": {...}, "sliding_attention": {...}}).
        full = params.get("full_attention") or next(iter(params.values()))
        local = params.get("sliding_attention") or full
        fields = _rope_fields_from(full, scaling, hf)
        local_base = local.get("rope_theta")
        if local_base is not None and local_base != fields["rotary_base"]:
            fields["rotary_base_local"] = local_base
        return fields
    return _rope_fields_from(params, scaling, hf)


def _rope_fields_from(
    params: Mapping[str, Any], scaling: Mapping[str, Any], hf: PretrainedConfig
) -> dict[str, Any]:
    base = params.get("rope_theta", _hf_get(hf, "rope_theta", 10000.0))
    rope_type = params.get("rope_type") or scaling.get("rope_type") or scaling.get("type") or "default"
    fields: dict[str, Any] = {"rotary_base": base}
    if rope_type == "llama3":
        source = params if "factor" in params else scaling
        fields.update(
            use_NTK_by_parts_rope=True,
            NTK_original_ctx_len=source.get("original_max_position_embeddings", hf.max_position_embeddings),
            NTK_by_parts_low_freq_factor=source.get("low_freq_factor", 1.0),
            NTK_by_parts_high_freq_factor=source.get("high_freq_factor", 4.0),
            NTK_by_parts_factor=source.get("factor", 1.0),
        )
    elif rope_type != "default":
        raise _UnsupportedFeature(f"rotary scaling type {rope_type!r} (supported: default, llama3)")
    partial = _hf_get(hf, "partial_rotary_factor")
    if partial not in (None, 1, 1.0):
        raise _UnsupportedFeature(f"partial_rotary_factor={partial} (only full rotary is supported)")
    return fields


def _attention_layout(hf: PretrainedConfig, n_layers: int) -> dict[str, Any]:
    """Local (sliding-window) vs global attention per layer, from ``layer_types``/``sliding_window``."""
    window = _hf_get(hf, "sliding_window")
    layer_types = _hf_get(hf, "layer_types")
    if layer_types:
        unknown = sorted(set(layer_types) - {"full_attention", "sliding_attention"})
        if unknown:
            raise _UnsupportedFeature(f"layer_types {unknown} (supported: full_attention, sliding_attention)")
        attn_types = ["local" if kind == "sliding_attention" else "global" for kind in layer_types]
    elif window:
        attn_types = ["local"] * n_layers  # Mistral: every layer slides when sliding_window is set
    else:
        attn_types = ["global"] * n_layers
    if "local" not in attn_types:
        return {"use_local_attn": False}
    if not isinstance(window, int) or window <= 0:
        raise _UnsupportedFeature(f"sliding-window layers with sliding_window={window!r}")
    return {"use_local_attn": True, "window_size": window, "attn_types": attn_types}


def _activation(name: str | None) -> str:
    if name not in SUPPORTED_ACTIVATIONS:
        raise _UnsupportedFeature(
            f"activation {name!r} (TransformerLens supports: {', '.join(sorted(SUPPORTED_ACTIVATIONS))})"
        )
    return name


def _head_dim(hf: PretrainedConfig) -> int:
    return _hf_get(hf, "head_dim") or hf.hidden_size // hf.num_attention_heads


def _refuse_if(condition: bool, feature: str) -> None:
    if condition:
        raise _UnsupportedFeature(feature)


# ---------------------------------------------------------------------------------------------
# HookedTransformerConfig -> HF config
# ---------------------------------------------------------------------------------------------


def _special_token_ids(tokenizer: Any) -> dict[str, Any]:
    if tokenizer is None:
        return {}
    return {
        "bos_token_id": tokenizer.bos_token_id,
        "eos_token_id": tokenizer.eos_token_id,
        "pad_token_id": tokenizer.pad_token_id,
    }


def _rope_parameters(cfg: HookedTransformerConfig) -> dict[str, Any]:
    params: dict[str, Any] = {"rope_type": "default", "rope_theta": float(cfg.rotary_base)}
    if cfg.use_NTK_by_parts_rope:
        params.update(
            rope_type="llama3",
            factor=float(cfg.NTK_by_parts_factor),
            low_freq_factor=float(cfg.NTK_by_parts_low_freq_factor),
            high_freq_factor=float(cfg.NTK_by_parts_high_freq_factor),
            original_max_position_embeddings=int(cfg.NTK_original_ctx_len),
        )
    return params


# ---------------------------------------------------------------------------------------------
# TransformerLens state dict -> HF tensors
# ---------------------------------------------------------------------------------------------

_LM_HEAD = "lm_head.weight"

# Non-parameter buffers of a HookedTransformer's state dict (recomputed from the config).
_BUFFER_SUFFIXES = (".attn.mask", ".attn.IGNORE", ".attn.rotary_sin", ".attn.rotary_cos")

# A tensor differing from its reference by at most this many machine epsilons (of the coarser
# dtype, relative to max(1, max|reference|)) is reported as round-off, not as a change.
_ROUND_OFF_EPS = 4.0


def _export_error(message: str) -> ExportError:
    from hookunlearn.export import ExportError

    return ExportError(message)


class _StateDict:
    """Read access to a TransformerLens state dict that remembers which entries were used."""

    def __init__(self, state_dict: Mapping[str, Tensor], label: str) -> None:
        self._tensors = state_dict
        self._used: set[str] = set()
        self.label = label

    def get(self, name: str) -> Tensor:
        if name not in self._tensors:
            raise _export_error(
                f"{self.label}: the state dict has no '{name}', which this architecture needs; "
                "the model does not match its config (was a component removed or renamed?)."
            )
        self._used.add(name)
        return self._tensors[name].detach()

    def maybe(self, name: str) -> Tensor | None:
        tensor = self._tensors.get(name)
        if tensor is None:
            return None
        self._used.add(name)
        return tensor.detach()

    def has(self, name: str) -> bool:
        return name in self._tensors

    def first(self, *names: str) -> Tensor:
        """The first of ``names`` present (``_W_K`` for grouped-query models, else ``W_K``)."""
        for name in names:
            if name in self._tensors:
                return self.get(name)
        return self.get(names[-1])

    def unused(self) -> list[str]:
        return [
            name for name in self._tensors if name not in self._used and not name.endswith(_BUFFER_SUFFIXES)
        ]


@dataclass
class _Converted:
    tensors: dict[str, Tensor]
    notes: list[str]


def _eps(dtype: torch.dtype) -> float:
    return float(torch.finfo(dtype).eps)


def _max_abs(tensor: Tensor) -> float:
    return float(tensor.detach().abs().max()) if tensor.numel() else 0.0


def _require_zero(sd: _StateDict, name: str, arch: str, why: str) -> None:
    tensor = sd.get(name)
    if torch.count_nonzero(tensor) > 0:
        raise _export_error(
            f"{sd.label}: '{name}' is non-zero (max |value| {_max_abs(tensor):.3g}), but {arch} "
            f"has no {why}, so the exported checkpoint could not compute the same function. "
            f"Keep '{name}' at zero (freeze it) when editing this model."
        )


def _layer_norm(sd: _StateDict, prefix: str, d_model: int, dtype: torch.dtype) -> tuple[Tensor, Tensor]:
    """(weight, bias) of a LayerNorm; a folded one (no ``.w``/``.b`` in TL) is the identity."""
    weight, bias = sd.maybe(f"{prefix}.w"), sd.maybe(f"{prefix}.b")
    return (
        weight if weight is not None else torch.ones(d_model, dtype=dtype),
        bias if bias is not None else torch.zeros(d_model, dtype=dtype),
    )


def _rms_weight(weight: Tensor | None, d_model: int, dtype: torch.dtype, *, gemma: bool) -> Tensor:
    """HF RMSNorm weight for a TL one (``None`` = folded): Gemma stores ``w - 1`` (it scales by ``1 + w``)."""
    if weight is None:
        return torch.zeros(d_model, dtype=dtype) if gemma else torch.ones(d_model, dtype=dtype)
    return (weight.float() - 1.0).to(dtype) if gemma else weight
