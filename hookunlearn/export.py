"""Export: a `HookedTransformer` back to an ordinary, verified ``transformers`` checkpoint.

TransformerLens has no HookedTransformer -> Hugging Face conversion, so this module inverts its
weight conversions (``transformer_lens/pretrained/weight_conversions/{gpt2,llama,mistral,qwen2,
gemma}.py``) for GPT-2, Llama, Mistral, Qwen2 and Gemma-2::

    result = export_model(model, "runs/unlearned-model", metadata={"method": "sspu", "options": opts})
    result.max_logprob_diff   # measured on a probe batch after reloading with transformers

The output directory is what ``save_pretrained`` would write (``config.json``,
``model.safetensors`` or shards with an index, ``generation_config.json``, tokenizer files) plus
``hookunlearn.json``: the caller's metadata, which tensors changed against a reference and by how
much, the verification result, the weight processing of the model and library versions.

What the inversion has to undo (all checked by the verification below):

- Weight processing. Folded LayerNorm/RMSNorm becomes weight 1, bias 0 (Gemma's RMSNorm scales by
  ``1 + w``, so there "weight 1" is stored ``w = 0``); centred weights need nothing, because the
  next norm removes the mean. Folded value biases stay in ``b_O`` where HF has an output bias
  (GPT-2's ``c_proj``); Qwen2 has value biases but no ``o_proj`` bias, so ``b_O`` is moved back
  into ``v_proj.bias`` by least squares, which is exact while ``b_O`` lies in the span of the
  layer's ``W_O`` (always, unless ``W_O`` was edited after folding: then export fails and says to
  load without ``fold_value_biases``). Llama, Mistral and Gemma-2 have no attention biases at all,
  so a non-zero bias there cannot be exported and fails.
- The unembedding bias. GPT-2's ``lm_head`` has no bias, but ``fold_ln`` puts ``ln_f``'s bias into
  ``b_U``. A LayerNorm's output ``n`` sums to zero, so ``(n + 1/d) @ (W + 1 v^T) = n @ W +
  mean_rows(W) + v`` for any ``v``: with ``ln_f``'s weight folded into ``W`` and ``v`` chosen to
  make the right side ``n @ W + b``, any ``b_U`` is carried exactly by ``ln_f`` (weight 1, bias
  ``1/d_model``) and a rank-one change of ``lm_head``. RMSNorm outputs do not sum to zero, so the
  Llama family can only drop a constant ``b_U`` (a per-position logit shift that log-softmax
  removes, which is also why ``center_unembed`` is harmless); Gemma-2's logit soft cap makes even
  that matter, so there ``b_U`` must be zero. Exported *logits* may differ from the
  HookedTransformer's by a per-position constant; log-probs do not, and that is what is verified.
- Gemma's embedding scale: TransformerLens stores ``W_E * sqrt(d_model)``; HF multiplies by it at
  run time, so the stored embedding is ``W_E / sqrt(d_model)`` (or, when the embedding is tied and
  unedited, ``W_U.T`` itself, which recovers the original bits).
- Grouped-query attention: key/value weights come from TransformerLens's per-KV-head ``_W_K``,
  ``_W_V``, ``_b_K``, ``_b_V`` (not the repeated ``W_K``/``W_V`` views).
- Tied embeddings: ``tie_word_embeddings`` is true only when ``lm_head`` equals the embedding bit
  for bit; after centring or any edit of ``W_U`` or ``W_E`` the checkpoint is saved untied.

"Changed" tensors in ``hookunlearn.json`` compare each exported tensor with a reference under the
same HF name: by default the source checkpoint's raw weights, so for a processed model every
tensor the processing rewrote (folded norms, scaled Q/K/V and MLP-in weights, centred writers,
the unembedding) counts as changed too; pass ``reference=`` the model's TransformerLens state dict
from before an edit (converted the same way) to see only the edit. Differences within round-off
are listed apart.

Every export is verified unless ``verify=False``: the written directory is reloaded with
``AutoModelForCausalLM.from_pretrained(..., local_files_only=True)`` in float32 (eager attention,
the reference implementation), and its log-softmax on a probe batch is compared with the
HookedTransformer's (a float32 twin of it for bf16/fp16 models). Above the tolerance the export
fails with `ExportError` and no output directory is left behind.
"""

from __future__ import annotations

import contextlib
import datetime as _dt
import json
import math
import os
import shutil
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import einops
import torch
from huggingface_hub import split_torch_state_dict_into_shards
from jaxtyping import Float, Int
from safetensors import safe_open
from safetensors.torch import save_file
from torch import Tensor
from transformer_lens import HookedTransformer, HookedTransformerConfig
from transformers import (
    AutoConfig,
    AutoModelForCausalLM,
    AutoTokenizer,
    Gemma2Config,
    GenerationConfig,
    GPT2Config,
    LlamaConfig,
    MistralConfig,
    PretrainedConfig,
    PreTrainedModel,
    Qwen2Config,
)

from hookunlearn.artifacts import check_can_write, library_versions, run_directory, write_json
from hookunlearn.errors import HookunlearnError, ModelLoadError
from hookunlearn.models import (
    FINGERPRINT_FIELDS,
    config_fingerprint,
    hooked_config_from_hf,
    model_info,
    quiet_libraries,
)
from hookunlearn.runconfig import current_run_config

__all__ = [
    "DEFAULT_PROBE_TEXTS",
    "DEFAULT_TOLERANCE",
    "EXPORT_INFO_NAME",
    "SUPPORTED_ARCHITECTURES",
    "ExportError",
    "ExportResult",
    "TensorChange",
    "export_model",
    "hf_state_dict",
    "read_export_info",
]

SUPPORTED_ARCHITECTURES: tuple[str, ...] = ("gpt2", "llama", "mistral", "qwen2", "gemma2")
"""Architectures `export_model` can write (HF ``model_type`` values)."""

EXPORT_INFO_NAME = "hookunlearn.json"
"""The export record written beside the checkpoint."""

EXPORT_SCHEMA_VERSION = 1
"""Version of the ``hookunlearn.json`` layout."""

DEFAULT_PROBE_TEXTS: tuple[str, ...] = (
    "The capital of France is Paris, and the capital of Germany is Berlin.",
    "Q: Where was the author of the report born?\nA:",
    "def add(a, b):\n    return a + b\n",
    "1, 1, 2, 3, 5, 8, 13, 21, 34,",
)
"""Texts of the verification probe batch (one random-token sequence is always added)."""

SHARD_SIZE = "5GB"
"""Largest ``model-XXXXX-of-YYYYY.safetensors`` shard; smaller models get one ``model.safetensors``."""

# HF architecture class of each exported model type, and TransformerLens's name for it.
_HF_CLASSES: dict[str, str] = {
    "gpt2": "GPT2LMHeadModel",
    "llama": "LlamaForCausalLM",
    "mistral": "MistralForCausalLM",
    "qwen2": "Qwen2ForCausalLM",
    "gemma2": "Gemma2ForCausalLM",
}
_ARCH_BY_TL_NAME = {hf_class: arch for arch, hf_class in _HF_CLASSES.items()}

_EMBEDDING_NAMES = {"gpt2": "transformer.wte.weight"} | {
    arch: "model.embed_tokens.weight" for arch in ("llama", "mistral", "qwen2", "gemma2")
}
_LM_HEAD = "lm_head.weight"

# Non-parameter buffers of a HookedTransformer's state dict (recomputed from the config).
_BUFFER_SUFFIXES = (".attn.mask", ".attn.IGNORE", ".attn.rotary_sin", ".attn.rotary_cos")

_TOKENIZER_FILES = (
    "tokenizer.json",
    "tokenizer_config.json",
    "special_tokens_map.json",
    "added_tokens.json",
    "vocab.json",
    "merges.txt",
    "vocab.txt",
    "tokenizer.model",
    "spiece.model",
    "chat_template.jinja",
    "chat_template.json",
)

DEFAULT_TOLERANCE = 1e-4
"""Max |log-prob difference| allowed by default between the reloaded checkpoint and a float32 model.

For a bf16/fp16 model the default is the larger of this and the model's own half-precision
error on the probe batch (its log-probs in its dtype vs in float32): the export has to be no
further from the model than the model's own arithmetic is. What it has to absorb there is the
rounding of re-derived tensors (Gemma's unscaled embedding, unfolded biases) to 8 or 11 bits.
"""

# A tensor differing from its reference by at most this many machine epsilons (of the coarser
# dtype, relative to max(1, max|reference|)) is reported as round-off, not as a change.
_ROUND_OFF_EPS = 4.0
# Qwen2's b_O -> v_proj.bias unfold must leave at most this many epsilons (relative to max|b_O|)
# of least-squares residual; an exactly representable b_O leaves well under one.
_UNFOLD_EPS = 4.0


class ExportError(HookunlearnError):
    """A model cannot be exported, or its export failed verification (nothing was written)."""


# ---------------------------------------------------------------------------------------------
# Results
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class TensorChange:
    """How one exported (HF-named) tensor differs from the reference."""

    name: str
    """HF parameter name (``model.layers.0.mlp.down_proj.weight``)."""
    max_abs_change: float
    """``max |exported - reference|``."""
    relative_change: float
    """``||exported - reference||_F / ||reference||_F`` (inf when the reference is all zeros)."""

    def to_dict(self) -> dict[str, Any]:
        return {
            "max_abs_change": self.max_abs_change,
            "relative_frobenius_change": _json_float(self.relative_change),
        }


@dataclass(frozen=True)
class ExportResult:
    """What `export_model` wrote and how well the reloaded checkpoint matches the model."""

    path: Path
    """The output directory."""
    architecture: str
    """``gpt2``, ``llama``, ``mistral``, ``qwen2`` or ``gemma2``."""
    dtype: str
    """Dtype of the saved weights (the model's)."""
    verified: bool
    """Whether the reloaded checkpoint was compared with the model (and passed)."""
    max_logprob_diff: float | None
    """Max |log-softmax difference| between the reloaded checkpoint and the model (None: not verified)."""
    tolerance: float | None
    """The tolerance the verification used (None: not verified, none given)."""
    half_precision_error: float | None
    """For a bf16/fp16 model: max |log-prob difference| of the model in its dtype vs in float32."""
    reference: str | None
    """What the tensor changes were measured against (None: no reference available)."""
    changes: tuple[TensorChange, ...]
    """Tensors that differ from the reference by more than round-off, by HF name."""
    notes: tuple[str, ...]
    """How the conversion handled processing (unfolded biases, untied embeddings, ...)."""

    @property
    def changed_tensors(self) -> tuple[str, ...]:
        return tuple(change.name for change in self.changes)

    def to_dict(self) -> dict[str, Any]:
        return {
            "path": str(self.path),
            "architecture": self.architecture,
            "dtype": self.dtype,
            "verified": self.verified,
            "max_logprob_diff": self.max_logprob_diff,
            "tolerance": self.tolerance,
            "half_precision_error": self.half_precision_error,
            "reference": self.reference,
            "changed_tensors": {change.name: change.to_dict() for change in self.changes},
            "notes": list(self.notes),
        }


def _json_float(value: float) -> float | str:
    return value if math.isfinite(value) else str(value)


def read_export_info(path: str | os.PathLike[str]) -> dict[str, Any]:
    """The ``hookunlearn.json`` of an exported checkpoint directory."""
    info_path = Path(path) / EXPORT_INFO_NAME
    if not info_path.is_file():
        raise ExportError(f"{Path(path)} has no {EXPORT_INFO_NAME}; it was not written by export_model.")
    try:
        return json.loads(info_path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ExportError(f"{info_path}: not valid JSON ({exc}).") from exc


# ---------------------------------------------------------------------------------------------
# TransformerLens state dict -> HF tensors
# ---------------------------------------------------------------------------------------------


class _StateDict:
    """Read access to a TransformerLens state dict that remembers which entries were used."""

    def __init__(self, state_dict: Mapping[str, Tensor], label: str) -> None:
        self._tensors = state_dict
        self._used: set[str] = set()
        self.label = label

    def get(self, name: str) -> Tensor:
        if name not in self._tensors:
            raise ExportError(
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
        raise ExportError(
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


def _constant_shift_only(b_U: Tensor) -> bool:
    """Whether ``b_U`` is the same for every token (a shift that leaves log-probs unchanged)."""
    spread = _max_abs(b_U.float() - b_U.float().mean())
    return spread <= _ROUND_OFF_EPS * _eps(b_U.dtype) * max(1.0, _max_abs(b_U))


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
        raise ExportError(
            f"{label}: the attention output bias b_O (max |value| {_max_abs(b_O):.3g}) cannot be "
            "exported: Qwen2's o_proj has no bias, and b_O is not in the span of what the v_proj "
            f"bias can produce through this layer's W_O (least-squares residual {_max_abs(residual):.3g}). "
            "This happens when W_O is edited on a model loaded with fold_value_biases. Load the "
            "model without fold_value_biases (e.g. processing='fold_ln,center_unembed') before "
            "editing W_O, or keep b_O fixed at zero."
        )
    return einops.rearrange(solution, "(kv h) -> kv h", kv=n_kv_heads).to(b_O.dtype).to(b_O.device)


def _gpt2_tensors(sd: _StateDict, cfg: HookedTransformerConfig) -> _Converted:
    dtype, d_model = sd.get("embed.W_E").dtype, cfg.d_model
    out: dict[str, Tensor] = {
        "transformer.wte.weight": sd.get("embed.W_E"),
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


def _llama_family_tensors(sd: _StateDict, cfg: HookedTransformerConfig, arch: str) -> _Converted:
    """Llama, Mistral, Qwen2 and Gemma-2: rotary attention with (grouped) KV heads, gated MLP, RMSNorm."""
    gemma, qwen2 = arch == "gemma2", arch == "qwen2"
    W_E, W_U = sd.get("embed.W_E"), sd.get("unembed.W_U")
    dtype, d_model = W_E.dtype, cfg.d_model
    n_kv_heads = cfg.n_key_value_heads or cfg.n_heads
    notes: list[str] = []

    def norm(name: str, required: bool = False) -> Tensor:
        weight = sd.get(name) if required else sd.maybe(name)
        return _rms_weight(weight, d_model, dtype, gemma=gemma)

    if gemma:
        embedding, recovered = _gemma_embedding(W_E, W_U, d_model)
        notes.append(
            "embed.W_E divided by sqrt(d_model) (HF Gemma multiplies at run time)"
            + ("; recovered bit-exactly from the tied W_U" if recovered else "")
        )
    else:
        embedding = W_E
    out: dict[str, Tensor] = {"model.embed_tokens.weight": embedding}
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
        if qwen2:
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
                _require_zero(sd, name, arch, "query/key/value biases")
            _require_zero(sd, f"{attn}.b_O", arch, "attention output bias")
        if gemma:
            out[f"{hf}.post_attention_layernorm.weight"] = norm(f"{tl}.ln1_post.w", required=True)
            out[f"{hf}.pre_feedforward_layernorm.weight"] = norm(f"{tl}.ln2.w")
            out[f"{hf}.post_feedforward_layernorm.weight"] = norm(f"{tl}.ln2_post.w", required=True)
        else:
            out[f"{hf}.post_attention_layernorm.weight"] = norm(f"{tl}.ln2.w")
        out[f"{hf}.mlp.gate_proj.weight"] = sd.get(f"{tl}.mlp.W_gate").T
        out[f"{hf}.mlp.up_proj.weight"] = sd.get(f"{tl}.mlp.W_in").T
        out[f"{hf}.mlp.down_proj.weight"] = sd.get(f"{tl}.mlp.W_out").T
        _require_zero(sd, f"{tl}.mlp.b_in", arch, "MLP biases")
        _require_zero(sd, f"{tl}.mlp.b_out", arch, "MLP biases")
    out["model.norm.weight"] = norm("ln_final.w")
    b_U = sd.get("unembed.b_U")
    if torch.count_nonzero(b_U) > 0:
        soft_capped = cfg.output_logits_soft_cap is not None and cfg.output_logits_soft_cap > 0
        if soft_capped or not _constant_shift_only(b_U):
            why = "and its logit soft cap makes even a constant b_U change the output" if soft_capped else ""
            raise ExportError(
                f"{sd.label}: 'unembed.b_U' is non-zero (max |value| {_max_abs(b_U):.3g}), but {arch}'s "
                f"lm_head has no bias {why}. Keep b_U at zero (freeze it) when editing this model."
            )
        notes.append("unembed.b_U is a constant (a logit shift that leaves log-probs unchanged); dropped")
    out[_LM_HEAD] = W_U.T
    return _Converted(out, notes)


def _architecture(model: HookedTransformer) -> str:
    name = model.cfg.original_architecture
    arch = _ARCH_BY_TL_NAME.get(name or "")
    if arch is None:
        raise ExportError(
            f"model {model.cfg.model_name!r}: architecture {name!r} cannot be exported to a transformers "
            f"checkpoint. Supported: {', '.join(SUPPORTED_ARCHITECTURES)} "
            f"({', '.join(_HF_CLASSES.values())})."
        )
    return arch


def _convert(
    state_dict: Mapping[str, Tensor], cfg: HookedTransformerConfig, arch: str, label: str
) -> _Converted:
    sd = _StateDict(state_dict, label)
    converted = _gpt2_tensors(sd, cfg) if arch == "gpt2" else _llama_family_tensors(sd, cfg, arch)
    unused = sd.unused()
    if unused:
        shown = ", ".join(unused[:6]) + (" ..." if len(unused) > 6 else "")
        raise ExportError(
            f"{label}: {len(unused)} tensor(s) have no place in a {arch} checkpoint ({shown}). "
            "Remove spliced-in modules (SAEs, adapters) before exporting."
        )
    dtype = state_dict["embed.W_E"].dtype
    converted.tensors = {
        name: tensor.detach().to(device="cpu", dtype=dtype).contiguous()
        for name, tensor in converted.tensors.items()
    }
    return converted


def hf_state_dict(model: HookedTransformer) -> dict[str, Tensor]:
    """The model's weights as an HF state dict of its architecture (CPU, the model's dtype).

    ``lm_head.weight`` is always included (untied). Raises `ExportError` for an unsupported
    architecture or weights the HF architecture cannot hold (see the module docstring).
    """
    arch = _architecture(model)
    return _convert(model.state_dict(), model.cfg, arch, f"model {model.cfg.model_name!r}").tensors


# ---------------------------------------------------------------------------------------------
# The HF config
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


def _config_from_tl(cfg: HookedTransformerConfig, arch: str, tokenizer: Any) -> PretrainedConfig:
    """An HF config for ``cfg`` when there is no source checkpoint to start from."""
    special = _special_token_ids(tokenizer)
    if arch == "gpt2":
        gpt2 = GPT2Config(
            vocab_size=cfg.d_vocab, n_positions=cfg.n_ctx, n_embd=cfg.d_model,
            n_layer=cfg.n_layers, n_head=cfg.n_heads, n_inner=cfg.d_mlp, activation_function=cfg.act_fn,
            layer_norm_epsilon=cfg.eps, scale_attn_weights=cfg.use_attn_scale,
            scale_attn_by_inverse_layer_idx=cfg.scale_attn_by_inverse_layer_idx,
            attn_pdrop=0.0, embd_pdrop=0.0, resid_pdrop=0.0, **special,
        )  # fmt: skip
        gpt2.n_ctx = cfg.n_ctx  # TransformerLens's own GPT-2 loader reads n_ctx (transformers 5 dropped it)
        return gpt2
    common: dict[str, Any] = {
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
    window = cfg.window_size if cfg.use_local_attn else None
    if arch == "llama":
        return LlamaConfig(
            **common, head_dim=cfg.d_head, hidden_act=cfg.act_fn, attention_bias=False, mlp_bias=False
        )
    if arch == "mistral":
        return MistralConfig(**common, head_dim=cfg.d_head, hidden_act=cfg.act_fn, sliding_window=window)
    if arch == "qwen2":
        return Qwen2Config(**common, hidden_act=cfg.act_fn, use_sliding_window=False)
    scalar = cfg.attn_scale**2  # TL divides scores by attn_scale; HF by sqrt(query_pre_attn_scalar)
    query_pre_attn_scalar: Any = round(scalar) if abs(scalar - round(scalar)) < 1e-6 else scalar
    attn_types = cfg.attn_types or ["global"] * cfg.n_layers
    return Gemma2Config(
        **common,
        head_dim=cfg.d_head,
        hidden_activation=cfg.act_fn,
        query_pre_attn_scalar=query_pre_attn_scalar,
        sliding_window=window,
        layer_types=["sliding_attention" if kind == "local" else "full_attention" for kind in attn_types],
        attn_logit_softcapping=cfg.attn_scores_soft_cap if cfg.attn_scores_soft_cap > 0 else None,
        final_logit_softcapping=cfg.output_logits_soft_cap if cfg.output_logits_soft_cap > 0 else None,
    )


def _check_config_matches(config: PretrainedConfig, cfg: HookedTransformerConfig, label: str) -> None:
    """Refuse a config that describes another network than the model's (fields TL would build from it)."""
    try:
        rebuilt = hooked_config_from_hf(config, model_name=cfg.model_name)
    except ModelLoadError as exc:
        raise ExportError(f"{label}: {exc}") from None
    if cfg.positional_embedding_type == "rotary":
        rebuilt.n_ctx = cfg.n_ctx  # only sizes TransformerLens's rotary table
    if config_fingerprint(rebuilt) == config_fingerprint(cfg):
        return
    fingerprint_model = {name: getattr(cfg, name, None) for name in FINGERPRINT_FIELDS}
    fingerprint_config = {name: getattr(rebuilt, name, None) for name in FINGERPRINT_FIELDS}
    differing = [
        f"{name} (model {fingerprint_model[name]!r}, config {fingerprint_config[name]!r})"
        for name in FINGERPRINT_FIELDS
        if fingerprint_model[name] != fingerprint_config[name]
        and not (
            name == "normalization_type"
            and str(fingerprint_model[name]).removesuffix("Pre") == fingerprint_config[name]
        )
    ]
    raise ExportError(
        f"{label} does not describe this model: {'; '.join(differing[:8]) or 'config fingerprints differ'}. "
        "Pass the checkpoint the model was loaded from as source_dir, or none to build the config "
        "from the model's own; a model whose features its architecture lacks cannot be exported."
    )


def _hf_config(
    model: HookedTransformer,
    arch: str,
    source_dir: Path | None,
    tokenizer: Any,
    dtype: torch.dtype,
    tied: bool,
) -> tuple[PretrainedConfig, str]:
    if source_dir is not None:
        label = f"source_dir '{source_dir}' (config.json)"
        try:
            config = AutoConfig.from_pretrained(source_dir, local_files_only=True)
        except (OSError, ValueError, KeyError, TypeError) as exc:
            raise ExportError(f"{label}: could not be read ({exc}).") from exc
        if config.model_type != arch:
            raise ExportError(
                f"{label}: model_type {config.model_type!r}, but the model is a {arch}. "
                "Pass the checkpoint the model was loaded from, or none."
            )
        if arch == "gpt2" and getattr(config, "n_ctx", None) is None:
            config.n_ctx = config.n_positions  # TransformerLens's own GPT-2 loader reads n_ctx
        origin = f"copied from {source_dir / 'config.json'}"
    else:
        label = "the config built from the model's TransformerLens config"
        config = _config_from_tl(model.cfg, arch, tokenizer)
        origin = "built from the model's TransformerLens config"
    _check_config_matches(config, model.cfg, label)
    config.architectures = [_HF_CLASSES[arch]]
    config.tie_word_embeddings = tied
    config.dtype = dtype
    return config, origin


# ---------------------------------------------------------------------------------------------
# Writing
# ---------------------------------------------------------------------------------------------


def _save_state_dict(tensors: Mapping[str, Tensor], directory: Path) -> list[str]:
    """Write safetensors (sharded above `SHARD_SIZE`, with an index); returns the file names."""
    split = split_torch_state_dict_into_shards(
        dict(tensors), filename_pattern="model{suffix}.safetensors", max_shard_size=SHARD_SIZE
    )
    for filename, names in split.filename_to_tensors.items():
        save_file(
            {name: tensors[name] for name in names}, str(directory / filename), metadata={"format": "pt"}
        )
    if split.is_sharded:
        index = {"metadata": split.metadata, "weight_map": split.tensor_to_filename}
        write_json(directory / "model.safetensors.index.json", index)
    return sorted(split.filename_to_tensors)


def _write_tokenizer(
    directory: Path, tokenizer: Any, source_dir: Path | None, model: HookedTransformer
) -> str:
    if tokenizer is not None:
        tokenizer.save_pretrained(directory)
        return "the tokenizer passed to export_model"
    if source_dir is not None:
        copied = [name for name in _TOKENIZER_FILES if (source_dir / name).is_file()]
        for name in copied:
            shutil.copy2(source_dir / name, directory / name)
        if copied:
            return f"copied from {source_dir} ({', '.join(copied)})"
    if model.tokenizer is not None:
        model.tokenizer.save_pretrained(directory)
        return "model.tokenizer (as TransformerLens configured it)"
    return "none (the model has no tokenizer)"


def _write_generation_config(directory: Path, config: PretrainedConfig, source_dir: Path | None) -> None:
    if source_dir is not None and (source_dir / "generation_config.json").is_file():
        shutil.copy2(source_dir / "generation_config.json", directory / "generation_config.json")
        return
    GenerationConfig.from_model_config(config).save_pretrained(directory)


# ---------------------------------------------------------------------------------------------
# Verification
# ---------------------------------------------------------------------------------------------


def _probe_batch(model: HookedTransformer, texts: Sequence[str]) -> list[Int[Tensor, "1 pos"]]:
    """One token sequence per probe text (as the model tokenizes), plus a seeded random one."""
    sequences: list[Tensor] = []
    if model.tokenizer is not None:
        for text in texts:
            tokens = model.to_tokens(text, truncate=True).cpu()
            if tokens.shape[1] > 0:
                sequences.append(tokens[:, : model.cfg.n_ctx])
    generator = torch.Generator().manual_seed(0)
    length = min(model.cfg.n_ctx, 32)
    sequences.append(torch.randint(0, model.cfg.d_vocab, (1, length), generator=generator))
    return sequences


@contextlib.contextmanager
def _float32_view(model: HookedTransformer) -> Iterator[HookedTransformer]:
    """The model itself when float32; else a float32 twin (rotary tables recomputed in float32)."""
    if next(model.parameters()).dtype == torch.float32:
        yield model
        return
    cfg = HookedTransformerConfig.from_dict(
        {**model.cfg.to_dict(), "dtype": torch.float32, "init_weights": False}
    )
    with quiet_libraries():
        twin = HookedTransformer(cfg, tokenizer=None, move_to_device=False)
    weights = {
        name: tensor.float()
        for name, tensor in model.state_dict().items()
        if not name.endswith(_BUFFER_SUFFIXES)
    }
    twin.load_state_dict(weights, strict=False)
    twin.to(next(model.parameters()).device, print_details=False)
    twin.eval()
    try:
        yield twin
    finally:
        del twin


def _reload(directory: Path, label: str) -> PreTrainedModel:
    try:
        with quiet_libraries():
            loaded: Any = AutoModelForCausalLM.from_pretrained(
                directory,
                local_files_only=True,
                dtype=torch.float32,
                attn_implementation="eager",  # the reference implementation (SDPA has no Gemma-2 soft caps)
                output_loading_info=True,
            )
        hf_model: PreTrainedModel = loaded[0]
        info: dict[str, Any] = loaded[1]
    except Exception as exc:  # transformers raises many types for a checkpoint it cannot read
        raise ExportError(
            f"{label}: transformers could not reload the written checkpoint ({type(exc).__name__}: {exc})."
        ) from exc
    problems = {
        key: sorted(info.get(key) or []) for key in ("missing_keys", "unexpected_keys", "mismatched_keys")
    }
    if config_tied := bool(getattr(hf_model.config, "tie_word_embeddings", False)):
        problems["missing_keys"] = [key for key in problems["missing_keys"] if key != _LM_HEAD]
    if any(problems.values()):
        described = "; ".join(
            f"{key}: {', '.join(map(str, names[:5]))}" for key, names in problems.items() if names
        )
        raise ExportError(
            f"{label}: transformers reloaded the checkpoint with {described} (tied={config_tied})."
        )
    hf_model.eval()
    return hf_model


def _tl_logprobs(model: HookedTransformer, tokens: Int[Tensor, "1 pos"]) -> Float[Tensor, "1 pos d_vocab"]:
    with quiet_libraries():
        # An explicit all-ones mask: no pad-token masking even when the tokenizer pads on the left.
        logits = model(tokens, return_type="logits", attention_mask=torch.ones_like(tokens))
    return torch.log_softmax(logits.float(), dim=-1)


@torch.no_grad()
def _compare_logprobs(
    model: HookedTransformer, hf_model: PreTrainedModel, sequences: Sequence[Tensor], label: str
) -> tuple[float, float | None]:
    """(max |log-prob difference| of the reloaded checkpoint vs the model in float32,
    max |log-prob difference| of the model in its own half dtype vs float32, or None for float32)."""
    device = next(model.parameters()).device
    hf_model.to(device)  # type: ignore[arg-type]  # transformers types its .to wrapper oddly
    worst, own_error = 0.0, None
    with _float32_view(model) as reference:
        for sequence in sequences:
            tokens = sequence.to(device)
            expected = _tl_logprobs(reference, tokens)
            if not torch.isfinite(expected).all():
                raise ExportError(f"{label}: the model's own log-probs are not finite on the probe batch.")
            actual = torch.log_softmax(hf_model(input_ids=tokens, use_cache=False).logits.float(), dim=-1)
            difference = float((actual - expected).abs().max())
            worst = max(worst, difference if math.isfinite(difference) else math.inf)
            if reference is not model:
                native = float((_tl_logprobs(model, tokens) - expected).abs().max())
                own_error = max(own_error or 0.0, native if math.isfinite(native) else 0.0)
    return worst, own_error


def _check_tokenizer(directory: Path, expected: Any, texts: Sequence[str], label: str) -> bool | None:
    """Whether the written tokenizer encodes the probe texts as the model's does (None: nothing to compare)."""
    if expected is None or not any((directory / name).is_file() for name in _TOKENIZER_FILES):
        return None
    try:
        with quiet_libraries():
            written = AutoTokenizer.from_pretrained(directory, local_files_only=True)
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise ExportError(f"{label}: transformers could not reload the written tokenizer ({exc}).") from exc
    for text in texts:
        ours = written(text, add_special_tokens=False)["input_ids"]
        theirs = expected(text, add_special_tokens=False)["input_ids"]
        if ours != theirs:
            raise ExportError(
                f"{label}: the written tokenizer encodes {text!r} as {ours[:12]}..., the model's as "
                f"{theirs[:12]}...; pass the model's tokenizer as tokenizer= (or its checkpoint as source_dir)."
            )
    return True


# ---------------------------------------------------------------------------------------------
# Changes against a reference
# ---------------------------------------------------------------------------------------------


def _with_lm_head(tensors: Mapping[str, Tensor], arch: str) -> dict[str, Tensor]:
    """``tensors`` with ``lm_head.weight`` present (a tied checkpoint stores only the embedding)."""
    full = dict(tensors)
    if _LM_HEAD not in full and _EMBEDDING_NAMES[arch] in full:
        full[_LM_HEAD] = full[_EMBEDDING_NAMES[arch]]
    return full


def _read_safetensors(directory: Path) -> dict[str, Tensor] | None:
    files = sorted(directory.glob("*.safetensors"))
    if not files:
        return None
    tensors: dict[str, Tensor] = {}
    for file in files:
        with safe_open(str(file), framework="pt") as handle:
            for name in handle.keys():  # noqa: SIM118 - safe_open has keys() but no iteration
                tensors[name] = handle.get_tensor(name)
    return tensors


def _reference_tensors(
    reference: Any,
    model: HookedTransformer,
    arch: str,
    source_dir: Path | None,
) -> tuple[dict[str, Tensor] | None, str | None]:
    """The reference tensors (HF names) for the change report, and a description of them."""
    if isinstance(reference, HookedTransformer):
        return hf_state_dict(reference), "the reference HookedTransformer (converted the same way)"
    if isinstance(reference, Mapping):
        if "embed.W_E" in reference:
            label = "the reference TransformerLens state dict"
            return _convert(reference, model.cfg, arch, label).tensors, f"{label} (converted the same way)"
        tensors = {name: tensor.detach().cpu() for name, tensor in reference.items()}
        return tensors, "the reference HF state dict"
    if reference is not None:
        raise ExportError(
            f"reference: expected a HookedTransformer, a TransformerLens state dict or an HF state dict, "
            f"got {type(reference).__name__}."
        )
    if source_dir is not None:
        source_tensors = _read_safetensors(source_dir)
        if source_tensors is None:
            return None, None
        processing = model_info(model).processing.describe()
        suffix = (
            ""
            if processing == "none"
            else f"; the model has weight processing {processing}, so tensors it rewrote count as changed too"
        )
        return source_tensors, f"the source checkpoint {source_dir} (raw weights{suffix})"
    return None, None


def _tensor_changes(
    exported: Mapping[str, Tensor], reference: Mapping[str, Tensor], arch: str
) -> tuple[list[TensorChange], list[str], list[str]]:
    """(changes above round-off, names differing only by round-off, names missing from the reference)."""
    exported, reference = _with_lm_head(exported, arch), _with_lm_head(reference, arch)
    changes: list[TensorChange] = []
    round_off: list[str] = []
    missing: list[str] = []
    for name in sorted(exported):
        if name not in reference:
            missing.append(name)
            continue
        new, old = exported[name], reference[name]
        if new.shape != old.shape:
            changes.append(TensorChange(name, math.inf, math.inf))
            continue
        difference = new.double() - old.to(new.device).double()
        max_abs = _max_abs(difference)
        if max_abs == 0.0:
            continue
        reference_norm = float(old.double().norm())
        relative = float(difference.norm()) / reference_norm if reference_norm > 0 else math.inf
        coarsest = max(_eps(new.dtype), _eps(old.dtype))
        if max_abs <= _ROUND_OFF_EPS * coarsest * max(1.0, _max_abs(old)):
            round_off.append(name)
        else:
            changes.append(TensorChange(name, max_abs, relative))
    return changes, round_off, missing


# ---------------------------------------------------------------------------------------------
# export_model
# ---------------------------------------------------------------------------------------------


def _source_dir(model: HookedTransformer, source_dir: str | os.PathLike[str] | None) -> Path | None:
    if source_dir is not None:
        path = Path(source_dir)
        if not (path / "config.json").is_file():
            raise ExportError(
                f"source_dir '{path}': has no config.json; pass a Hugging Face checkpoint directory."
            )
        return path
    info = model_info(model)
    if info.source == "local" and (Path(info.name) / "config.json").is_file():
        return Path(info.name)
    return None


def _hooked_points(model: HookedTransformer) -> list[str]:
    return [
        name
        for name, hook_point in model.hook_dict.items()
        if hook_point._forward_hooks or hook_point._forward_pre_hooks or hook_point._backward_hooks
    ]


def export_model(
    model: HookedTransformer,
    out_dir: str | os.PathLike[str],
    *,
    source_dir: str | os.PathLike[str] | None = None,
    tokenizer: Any = None,
    metadata: Mapping[str, Any] | None = None,
    force: bool = False,
    verify: bool = True,
    tolerance: float | None = None,
    probe_texts: Sequence[str] | None = None,
    reference: Any = None,
) -> ExportResult:
    """Write ``model`` as a ``transformers`` checkpoint in ``out_dir``, verified by reloading it.

    Args:
        model: a GPT-2, Llama, Mistral, Qwen2 or Gemma-2 `HookedTransformer`, processed or not
            (``model_info(model).processing``), with no hooks attached.
        out_dir: the output directory; written atomically (temporary directory, then rename).
        source_dir: a Hugging Face checkpoint whose ``config.json``, ``generation_config.json``
            and tokenizer files are the starting point, and whose weights are the default
            reference for changes. Default: the directory the model was loaded from
            (``load_model`` of a local checkpoint or ``"world"``), else none, and the config is
            built from the model's TransformerLens config.
        tokenizer: a tokenizer to save (default: source_dir's files, else ``model.tokenizer``).
        metadata: JSON-ready dict stored in ``hookunlearn.json`` (method, options, provenance).
        force: replace an existing ``out_dir``.
        verify: reload with transformers and compare log-probs (on by default; off only records so).
        tolerance: max |log-prob difference| allowed (default `DEFAULT_TOLERANCE`; for a bf16/fp16
            model the larger of it and the model's own half-precision error on the probe batch).
        probe_texts: texts of the probe batch (default `DEFAULT_PROBE_TEXTS`); a seeded random
            token sequence is always added.
        reference: what changes are measured against: a `HookedTransformer` or a TransformerLens
            state dict (converted the same way, so for a processed model pass its state dict from
            before the edit to see only the edit), or an HF state dict. Default: source_dir's
            weights, which for a processed model also show every tensor the processing rewrote.

    Returns:
        `ExportResult`, also recorded in ``out_dir/hookunlearn.json``.

    Raises:
        ExportError: unsupported architecture, weights or hooks the HF architecture cannot hold,
            a source_dir that describes another model, or a failed verification (nothing written).
        ArtifactError: ``out_dir`` exists and ``force`` is not set.
    """
    out = check_can_write(out_dir, force=force)
    arch = _architecture(model)
    label = f"export of model {model_info(model).spec!r} ({arch})"
    hooked = _hooked_points(model)
    if hooked:
        raise ExportError(
            f"{label}: hooks are attached at {', '.join(hooked[:4])}. Hooks (e.g. SAE clamping) are "
            "inference-time interventions, not weights, and cannot be exported; call model.reset_hooks() "
            "first, or evaluate the hooked model instead of exporting it."
        )
    metadata_dict = dict(metadata or {})
    try:
        json.dumps(metadata_dict)
    except (TypeError, ValueError) as exc:
        raise ExportError(f"metadata: must be JSON-serialisable ({exc}).") from exc
    source = _source_dir(model, source_dir)
    if source is not None and source.resolve() == out.resolve():
        raise ExportError(f"out_dir '{out}' is the source checkpoint; choose another output directory.")
    dtype = next(model.parameters()).dtype
    texts = list(DEFAULT_PROBE_TEXTS if probe_texts is None else probe_texts)
    model_tokenizer = tokenizer if tokenizer is not None else model.tokenizer

    converted = _convert(model.state_dict(), model.cfg, arch, label)
    tensors, notes = converted.tensors, list(converted.notes)
    tied = torch.equal(tensors[_LM_HEAD], tensors[_EMBEDDING_NAMES[arch]])
    if tied:
        tensors = {name: tensor for name, tensor in tensors.items() if name != _LM_HEAD}
    notes.append(f"tie_word_embeddings={tied} (lm_head {'equals' if tied else 'differs from'} the embedding)")
    config, config_origin = _hf_config(model, arch, source, model_tokenizer, dtype, tied)
    reference_tensors, reference_label = _reference_tensors(reference, model, arch, source)
    changes, round_off, missing = (
        _tensor_changes(tensors, reference_tensors, arch) if reference_tensors is not None else ([], [], [])
    )

    with run_directory(out, force=force) as tmp:
        config.save_pretrained(tmp)
        _write_generation_config(tmp, config, source)
        weight_files = _save_state_dict(tensors, tmp)
        tokenizer_origin = _write_tokenizer(tmp, tokenizer, source, model)
        max_diff = own_error = tokenizer_ok = None
        used_tolerance = tolerance
        if verify:
            tokenizer_ok = _check_tokenizer(tmp, model_tokenizer, texts, label)
            sequences = _probe_batch(model, texts)
            hf_model = _reload(tmp, label)
            max_diff, own_error = _compare_logprobs(model, hf_model, sequences, label)
            del hf_model
            if used_tolerance is None:
                used_tolerance = max(DEFAULT_TOLERANCE, own_error or 0.0)
            if not max_diff <= used_tolerance:
                raise ExportError(
                    f"{label}: verification failed: the checkpoint reloaded with transformers differs "
                    f"from the model by up to {max_diff:.3g} in log-probs (tolerance {used_tolerance:g}) "
                    f"on {len(sequences)} probe sequence(s); nothing was written to {out}. Unless the "
                    "tolerance was set too tight, this is a bug in the conversion for this model's "
                    "configuration or processing."
                )
        result = ExportResult(
            path=out,
            architecture=arch,
            dtype=str(dtype).removeprefix("torch."),
            verified=verify,
            max_logprob_diff=max_diff,
            tolerance=used_tolerance,
            half_precision_error=own_error,
            reference=reference_label,
            changes=tuple(changes),
            notes=tuple(notes),
        )
        info = {
            "schema_version": EXPORT_SCHEMA_VERSION,
            "kind": "hookunlearn-export",
            "created_at": _dt.datetime.now(_dt.UTC).isoformat(timespec="seconds"),
            "metadata": metadata_dict,
            "model": model_info(model).to_dict(),
            # the effective configuration of the CLI command that exported it (empty for library calls)
            "run_config": current_run_config(),
            "export": {
                "architecture": arch,
                "hf_architecture": _HF_CLASSES[arch],
                "dtype": result.dtype,
                "weight_files": weight_files,
                "config": config_origin,
                "tokenizer": tokenizer_origin,
                "tie_word_embeddings": tied,
                "notes": notes,
            },
            "changes": {
                "reference": reference_label,
                "changed": {change.name: change.to_dict() for change in changes},
                "round_off_only": round_off,
                "not_in_reference": missing,
                "round_off_rule": (
                    f"a tensor whose max |change| is at most {_ROUND_OFF_EPS:g} machine epsilons of the "
                    "coarser dtype times max(1, max |reference|) is listed under round_off_only"
                ),
            },
            "verification": {
                "performed": verify,
                "max_logprob_diff": max_diff,
                "tolerance": used_tolerance,
                "half_precision_error": own_error,
                "compared": (
                    "log_softmax of the checkpoint reloaded by transformers (float32, eager attention) "
                    "vs the HookedTransformer" + (" (a float32 copy of it)" if dtype != torch.float32 else "")
                ),
                "probe_texts": texts,
                "random_token_sequences": 1,
                "tokenizer_matches": tokenizer_ok,
            },
            "versions": library_versions(),
        }
        write_json(tmp / EXPORT_INFO_NAME, info)
    return result
