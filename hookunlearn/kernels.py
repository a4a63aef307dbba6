"""Fused kernels for a loaded `HookedTransformer`: the same functions, fewer tensor operations.

TransformerLens writes its normalisation layers and GPT-2's ``gelu_new`` as chains of
elementwise operations in Python (``x - mean``, ``pow``, ``mean``, ``sqrt``, divide, scale, shift:
seven kernels and seven temporaries per normalisation). On small and medium models, and in
token-by-token generation, those chains are a large share of the forward pass. `fuse_kernels`
swaps in torch's fused kernels where the function is the same:

- **Activations.** ``gelu_new`` and ``gelu_fast`` are the tanh approximation of GELU, which
  ``torch.nn.functional.gelu(x, approximate="tanh")`` computes in one kernel (TransformerLens's own
  ``gelu_pytorch_tanh``). The activation is not a hook point; ``hook_post`` sees its output, which
  differs from TransformerLens's by float round-off (more in bf16).
- **Attention** (the ``Attention`` and ``GroupedQueryAttention`` classes): the Q/K/V projections
  (plain inputs), the scores and the mixing with the same ``F.linear`` calls, permutes and matrix
  products as TransformerLens's, without its ``einops.rearrange`` calls (Python overhead that
  dominates token-by-token generation); bit-identical, every hook point unchanged. (Rewriting the
  whole attention forward as well, to drop the per-call copy of ``W_O``, measured no faster on
  the world model, so TransformerLens's forward stays.)
- **Unembedding**: ``F.linear`` on the transposed view of ``W_U`` instead of a contiguous copy of
  it made at every call (at a 256k vocabulary that copy is the size of the embedding matrix).
  TransformerLens copies to reproduce HF's bf16 accumulation order bit for bit; the view gives the
  same logits to round-off (export verification compares in float32).
- **Normalisation** (``LN``, ``LNPre``, ``RMS``, ``RMSPre``): ``torch.nn.functional.layer_norm`` /
  ``rms_norm`` compute the same normalisation (population variance, ``eps`` inside the root, the
  same float32 upcast for half-precision models) -- **only while no hook is attached to the layer's
  ``hook_scale`` or ``hook_normalized``**. A hooked call (``run_with_cache``, a patch, an
  intervention on those points) takes TransformerLens's own path, so every hook sees exactly what
  it would see without the fusion.

The results agree with TransformerLens's to float round-off (a few units in the last place:
``tests/unit/test_kernels.py`` pins logits, gradients, half precision and hook values); the parameters, the
state dict and the hook points are unchanged, and ``copy.deepcopy`` keeps the fusion. It is our
choice, on by default in `hookunlearn.models.load_model` (``fused_kernels=False`` turns it off);
the speed is measured in ``benchmarks/eval_speed.py``.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from jaxtyping import Float
from torch import Tensor
from transformer_lens.components.abstract_attention import AbstractAttention
from transformer_lens.components.attention import Attention
from transformer_lens.components.grouped_query_attention import GroupedQueryAttention
from transformer_lens.components.layer_norm import LayerNorm
from transformer_lens.components.layer_norm_pre import LayerNormPre
from transformer_lens.components.rms_norm import RMSNorm
from transformer_lens.components.rms_norm_pre import RMSNormPre
from transformer_lens.components.unembed import Unembed
from transformer_lens.hook_points import HookPoint
from transformer_lens.utilities.activation_functions import (
    apply_softcap,
    gelu_fast,
    gelu_new,
    gelu_pytorch_tanh,
)

_TANH_GELUS = (gelu_new, gelu_fast)


def _has_hooks(point: HookPoint) -> bool:
    return bool(
        point._forward_hooks or point._forward_pre_hooks or point._backward_hooks or point._backward_pre_hooks
    )


def _hooked(module: torch.nn.Module) -> bool:
    return _has_hooks(module.hook_scale) or _has_hooks(module.hook_normalized)


def _upcast(module: torch.nn.Module, x: Tensor) -> Tensor:
    # TransformerLens normalises half-precision models in float32 and casts back afterwards
    return x if module.cfg.dtype in (torch.float32, torch.float64) else x.to(torch.float32)


class FusedLayerNorm(LayerNorm):
    """`LayerNorm` with ``F.layer_norm`` while its hook points are free."""

    def forward(self, x: Float[Tensor, "*batch d"]) -> Float[Tensor, "*batch d"]:
        if _hooked(self):
            return super().forward(x)
        if self.cfg.dtype in (torch.float32, torch.float64) and x.dtype == self.w.dtype:
            return F.layer_norm(x, (x.shape[-1],), self.w, self.b, self.eps)
        normalized = F.layer_norm(_upcast(self, x), (x.shape[-1],), eps=self.eps).to(self.cfg.dtype)
        return normalized * self.w + self.b


class FusedLayerNormPre(LayerNormPre):
    """`LayerNormPre` (folded weights) with ``F.layer_norm`` while its hook points are free."""

    def forward(self, x: Float[Tensor, "*batch d"]) -> Float[Tensor, "*batch d"]:
        if _hooked(self):
            return super().forward(x)
        return F.layer_norm(_upcast(self, x), (x.shape[-1],), eps=self.eps).to(self.cfg.dtype)


class FusedRMSNorm(RMSNorm):
    """`RMSNorm` with ``F.rms_norm`` while its hook points are free."""

    def forward(self, x: Float[Tensor, "*batch d"]) -> Float[Tensor, "*batch d"]:
        if _hooked(self) or x.device != self.w.device:
            return super().forward(x)  # TransformerLens's path also moves the weight to x's device
        if self.cfg.dtype in (torch.float32, torch.float64) and x.dtype == self.w.dtype:
            return F.rms_norm(x, (x.shape[-1],), self.w, self.eps)
        return F.rms_norm(_upcast(self, x), (x.shape[-1],), eps=self.eps).to(self.cfg.dtype) * self.w


class FusedRMSNormPre(RMSNormPre):
    """`RMSNormPre` (folded weights) with ``F.rms_norm`` while its hook points are free."""

    def forward(self, x: Float[Tensor, "*batch d"]) -> Float[Tensor, "*batch d"]:
        if _hooked(self):
            return super().forward(x)
        return F.rms_norm(_upcast(self, x), (x.shape[-1],), eps=self.eps).to(self.cfg.dtype)


def _attn_linear(
    x: Float[Tensor, "batch pos d_model"],
    w: Float[Tensor, "head_index d_model d_head"],
    b: Float[Tensor, "head_index d_head"],
) -> Float[Tensor, "batch pos head_index d_head"]:
    """`simple_attn_linear` without einops: the same weight layout and the same ``F.linear``."""
    if x.device != w.device:
        w = w.to(x.device)
    if x.device != b.device:
        b = b.to(x.device)
    n_heads, d_model, d_head = w.shape
    flat = w.transpose(1, 2).reshape(n_heads * d_head, d_model)
    return F.linear(x, flat, b.reshape(n_heads * d_head)).reshape(x.shape[0], x.shape[1], n_heads, d_head)


class _PlainAttention(AbstractAttention):
    """Attention scores and mixing with the same permutes and matrix products as
    TransformerLens's, without einops. Listed after the TransformerLens class in a fused class's
    bases, so the grouped-query class's ``super()`` calls (after repeating K/V heads) land here."""

    def _plain_inputs(self) -> bool:
        cfg = self.cfg
        return not (cfg.use_split_qkv_input or cfg.use_attn_in or cfg.load_in_4bit or cfg.use_qk_norm)

    def calculate_attention_scores(
        self,
        q: Float[Tensor, "batch pos head_index d_head"],
        k: Float[Tensor, "batch kv_pos head_index d_head"],
    ) -> Float[Tensor, "batch head_index pos kv_pos"]:
        scores = q.permute(0, 2, 1, 3) @ k.permute(0, 2, 3, 1) / self.attn_scale
        return apply_softcap(scores, self.cfg.attn_scores_soft_cap)

    def calculate_z_scores(
        self,
        v: Float[Tensor, "batch kv_pos head_index d_head"],
        pattern: Float[Tensor, "batch head_index pos kv_pos"],
    ) -> Float[Tensor, "batch pos head_index d_head"]:
        return self.hook_z((pattern @ v.permute(0, 2, 1, 3)).permute(0, 2, 1, 3))


class FusedAttention(Attention, _PlainAttention):
    """`Attention` whose Q/K/V projections, scores and mixing skip einops."""

    def calculate_qkv_matrices(self, query_input, key_input, value_input):  # noqa: ANN001, ANN201
        if not self._plain_inputs():
            return super().calculate_qkv_matrices(query_input, key_input, value_input)
        q = self.hook_q(_attn_linear(query_input, self.W_Q, self.b_Q))
        k = self.hook_k(_attn_linear(key_input, self.W_K, self.b_K))
        v = self.hook_v(_attn_linear(value_input, self.W_V, self.b_V))
        return q, k, v


class FusedGroupedQueryAttention(GroupedQueryAttention, _PlainAttention):
    """`GroupedQueryAttention` whose projections, scores and mixing skip einops (K/V heads are
    repeated exactly where TransformerLens repeats them)."""

    def calculate_qkv_matrices(self, query_input, key_input, value_input):  # noqa: ANN001, ANN201
        if not self._plain_inputs():
            return super().calculate_qkv_matrices(query_input, key_input, value_input)
        ungroup = self.cfg.ungroup_grouped_query_attention
        q = self.hook_q(_attn_linear(query_input, self.W_Q, self.b_Q))
        if ungroup:
            k = self.hook_k(_attn_linear(key_input, self.W_K, self.b_K))
            v = self.hook_v(_attn_linear(value_input, self.W_V, self.b_V))
        else:
            k = self.hook_k(_attn_linear(key_input, self._W_K, self._b_K))
            v = self.hook_v(_attn_linear(value_input, self._W_V, self._b_V))
        return q, k, v


class FusedUnembed(Unembed):
    """`Unembed` on the transposed view of ``W_U`` (no per-call copy of it)."""

    def forward(self, residual: Float[Tensor, "batch pos d_model"]) -> Float[Tensor, "batch pos d_vocab"]:
        return self.hook_out(F.linear(self.hook_in(residual), self.W_U.T, self.b_U))


# exact classes only: a subclass may compute something else
_FUSED: dict[type, type] = {
    LayerNorm: FusedLayerNorm,
    LayerNormPre: FusedLayerNormPre,
    RMSNorm: FusedRMSNorm,
    RMSNormPre: FusedRMSNormPre,
    Attention: FusedAttention,
    GroupedQueryAttention: FusedGroupedQueryAttention,
    Unembed: FusedUnembed,
}


def fuse_kernels(model: torch.nn.Module) -> dict[str, int]:
    """Swap fused kernels into ``model`` in place (see the module docstring); returns how many
    modules of each kind were changed. Idempotent; modules of other classes are left alone."""
    changed = {"activations": 0, "modules": 0}
    for module in model.modules():
        fused = _FUSED.get(type(module))
        if fused is not None:
            module.__class__ = fused
            changed["modules"] += 1
        act_fn = getattr(module, "act_fn", None)
        if act_fn is not None and any(act_fn is fn for fn in _TANH_GELUS):
            module.act_fn = gelu_pytorch_tanh
            changed["activations"] += 1
    return changed


__all__ = [
    "FusedAttention",
    "FusedGroupedQueryAttention",
    "FusedUnembed",
    "FusedLayerNorm",
    "FusedLayerNormPre",
    "FusedRMSNorm",
    "FusedRMSNormPre",
    "fuse_kernels",
]
