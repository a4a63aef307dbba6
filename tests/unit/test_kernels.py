"""The fused kernels (`hookunlearn.kernels`) compute what TransformerLens computes.

Per architecture we load (tiny random-init checkpoints), a fused and an unfused copy of the same
model give the same logits (plain, left-padded with an attention mask, and through a key-value
cache), the same gradients, and the same hook values; a hook on a normalisation's own hook points
switches that layer back to TransformerLens's path, so the hook sees and changes exactly what it
would without the fusion."""

from __future__ import annotations

import copy
from pathlib import Path

import pytest
import torch
from transformer_lens import TransformerLensKeyValueCache
from transformer_lens.components.abstract_attention import AbstractAttention
from transformer_lens.components.layer_norm import LayerNorm
from transformer_lens.components.layer_norm_pre import LayerNormPre
from transformer_lens.components.rms_norm import RMSNorm
from transformer_lens.components.rms_norm_pre import RMSNormPre

from hookunlearn.kernels import fuse_kernels
from hookunlearn.models import load_model
from tests.fixtures_hf import ARCHITECTURES, make_tiny_checkpoint, probe_tokens

NORMS = (LayerNorm, LayerNormPre, RMSNorm, RMSNormPre)


@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("kernels")
    return {arch: make_tiny_checkpoint(arch, root / arch, seed=5) for arch in ARCHITECTURES}


def _pair(path: Path, dtype: str = "float32", processing: str = "none"):
    plain = load_model(str(path), device="cpu", dtype=dtype, processing=processing, fused_kernels=False)
    fused = load_model(str(path), device="cpu", dtype=dtype, processing=processing)
    return plain, fused


def _cached(model, tokens: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    cache = TransformerLensKeyValueCache.init_cache(model.cfg, model.cfg.device, tokens.shape[0])
    first = model(tokens[:, :7], attention_mask=mask[:, :7], past_kv_cache=cache)
    return torch.cat([first, model(tokens[:, 7:], attention_mask=mask[:, 7:], past_kv_cache=cache)], dim=1)


def _fused_modules(model) -> int:
    return sum(type(m).__module__ == "hookunlearn.kernels" for m in model.modules())


def test_load_model_fuses_by_default_and_can_be_told_not_to(checkpoints: dict[str, Path]) -> None:
    plain, fused = _pair(checkpoints["gpt2"])
    assert _fused_modules(plain) == 0
    # every norm, every attention layer and the unembedding of GPT-2
    n_layers = plain.cfg.n_layers
    assert _fused_modules(fused) == 2 * n_layers + 1 + n_layers + 1
    assert fuse_kernels(fused) == {"activations": 0, "modules": 0}  # idempotent
    assert list(fused.state_dict()) == list(plain.state_dict())
    assert set(fused.hook_dict) == set(plain.hook_dict)
    copied = copy.deepcopy(fused)
    assert _fused_modules(copied) == _fused_modules(fused)


@pytest.mark.parametrize("processing", ["none", "all"])  # all: folded norms (LNPre / RMSPre)
@pytest.mark.parametrize("arch", ARCHITECTURES)
def test_fused_forward_equals_transformer_lens(
    arch: str, processing: str, checkpoints: dict[str, Path]
) -> None:
    plain, fused = _pair(checkpoints[arch], processing=processing)
    assert _fused_modules(fused) > 0
    if processing == "all":
        assert any(isinstance(m, (LayerNormPre, RMSNormPre)) for m in fused.modules())
    tokens = probe_tokens(plain.cfg.d_vocab, batch=3, pos=10, seed=2)
    mask = torch.ones_like(tokens)
    mask[0, :4] = 0  # a left-padded row
    with torch.no_grad():
        for kwargs in ({}, {"attention_mask": mask}):
            want = plain(tokens, **kwargs)
            got = fused(tokens, **kwargs)
            assert torch.allclose(got, want, atol=1e-5, rtol=1e-5), (arch, kwargs, (got - want).abs().max())
        # through a key-value cache, as generation runs it
        want, got = _cached(plain, tokens, mask), _cached(fused, tokens, mask)
        assert torch.allclose(got, want, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("arch", ARCHITECTURES)
def test_fused_gradients_equal_transformer_lens(arch: str, checkpoints: dict[str, Path]) -> None:
    plain, fused = _pair(checkpoints[arch])
    tokens = probe_tokens(plain.cfg.d_vocab, batch=2, pos=8, seed=4)
    grads = []
    for model in (plain, fused):
        model.zero_grad()
        model(tokens, return_type="loss").backward()
        grads.append({name: p.grad.clone() for name, p in model.named_parameters() if p.grad is not None})
    assert grads[0].keys() == grads[1].keys()
    for name, want in grads[0].items():
        assert torch.allclose(grads[1][name], want, atol=1e-5, rtol=1e-4), (arch, name)


@pytest.mark.parametrize("arch", ["gpt2", "llama"])
def test_a_hook_on_a_norm_sees_and_changes_what_it_would_unfused(
    arch: str, checkpoints: dict[str, Path]
) -> None:
    plain, fused = _pair(checkpoints[arch])
    tokens = probe_tokens(plain.cfg.d_vocab, batch=2, pos=6, seed=1)
    seen: dict[str, list[torch.Tensor]] = {"plain": [], "fused": []}

    def run(model, key: str) -> torch.Tensor:
        def record(value, hook):
            seen[key].append(value.detach().clone())

        def double(value, hook):
            return 2 * value

        hooks = [("blocks.0.ln1.hook_scale", record), ("blocks.1.ln2.hook_normalized", double)]
        with torch.no_grad():
            return model.run_with_hooks(tokens, fwd_hooks=hooks)

    want, got = run(plain, "plain"), run(fused, "fused")
    # TransformerLens normalises the block input once per Q/K/V input: the hook fires as often
    assert len(seen["fused"]) == len(seen["plain"]) >= 1 and seen["fused"][0].shape[-1] == 1
    for got_scale, want_scale in zip(seen["fused"], seen["plain"], strict=True):
        assert torch.allclose(got_scale, want_scale)
    assert torch.allclose(got, want, atol=1e-5, rtol=1e-5)
    # the changing hook really changes the output (so the comparison above means something)
    with torch.no_grad():
        assert not torch.allclose(fused(tokens), got, atol=1e-3)
    # run_with_cache records every norm hook point, on both
    with torch.no_grad():
        _, cache_plain = plain.run_with_cache(tokens)
        _, cache_fused = fused.run_with_cache(tokens)
    names = set(cache_plain.keys())
    assert set(cache_fused.keys()) == names
    for name in names:
        assert torch.allclose(cache_fused[name], cache_plain[name], atol=1e-5, rtol=1e-5), name


@pytest.mark.parametrize("dtype", ["bfloat16", "float16"])
def test_fused_half_precision_equals_transformer_lens(dtype: str, checkpoints: dict[str, Path]) -> None:
    for arch in ("gpt2", "llama", "gemma2"):
        plain, fused = _pair(checkpoints[arch], dtype=dtype)
        tokens = probe_tokens(plain.cfg.d_vocab, batch=2, pos=8, seed=3)
        with torch.no_grad():
            want, got = plain(tokens).float(), fused(tokens).float()
        scale = want.abs().max()
        assert (got - want).abs().max() <= 0.02 * scale, arch


def test_attention_and_norm_classes_are_the_only_ones_changed(checkpoints: dict[str, Path]) -> None:
    _, fused = _pair(checkpoints["llama"])
    for module in fused.modules():
        if type(module).__module__ == "hookunlearn.kernels":
            assert isinstance(module, (*NORMS, AbstractAttention)) or type(module).__name__ == "FusedUnembed"


@pytest.mark.parametrize("arch", ["gpt2", "gemma2"])
def test_hooks_on_attention_points_see_and_change_what_they_would_unfused(
    arch: str, checkpoints: dict[str, Path]
) -> None:
    plain, fused = _pair(checkpoints[arch])
    tokens = probe_tokens(plain.cfg.d_vocab, batch=2, pos=7, seed=6)

    def sharpen(pattern, hook):
        return pattern**2

    def shift(z, hook):
        return z + 0.1

    hooks = [("blocks.0.attn.hook_pattern", sharpen), ("blocks.1.attn.hook_z", shift)]
    with torch.no_grad():
        want = plain.run_with_hooks(tokens, fwd_hooks=hooks)
        got = fused.run_with_hooks(tokens, fwd_hooks=hooks)
        assert torch.allclose(got, want, atol=1e-5, rtol=1e-5)
        assert not torch.allclose(fused(tokens), got, atol=1e-3)


def test_configurations_outside_the_plain_forward_run_transformer_lens_own(
    checkpoints: dict[str, Path],
) -> None:
    plain, fused = _pair(checkpoints["gpt2"])
    for model in (plain, fused):
        model.set_use_attn_result(True)  # per-head results: TransformerLens's forward, hook_result fires
    tokens = probe_tokens(plain.cfg.d_vocab, batch=2, pos=5, seed=7)
    with torch.no_grad():
        _, cache_plain = plain.run_with_cache(tokens, names_filter=lambda name: name.endswith("hook_result"))
        _, cache_fused = fused.run_with_cache(tokens, names_filter=lambda name: name.endswith("hook_result"))
    assert len(cache_fused.keys()) == plain.cfg.n_layers
    for name in cache_plain.keys():  # noqa: SIM118 (an ActivationCache)
        assert torch.allclose(cache_fused[name], cache_plain[name], atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize(
    "setting", ["split_qkv_input", "attn_in", "ungroup_grouped_query_attention", "backward_hook_on_a_norm"]
)
def test_configurations_that_take_transformer_lens_paths_give_its_results(
    setting: str, checkpoints: dict[str, Path]
) -> None:
    """Inputs the fused attention does not handle (split Q/K/V inputs, attn_in), ungrouped GQA
    weights, and a norm with a backward hook: TransformerLens's computation, values and gradients."""
    # attn_in exists only for full (not grouped-query) attention: GPT-2; the rest on Llama (GQA)
    plain, fused = _pair(checkpoints["gpt2" if setting == "attn_in" else "llama"])
    grads: list[torch.Tensor] = []
    for model in (plain, fused):
        if setting == "split_qkv_input":
            model.set_use_split_qkv_input(True)
        elif setting == "attn_in":
            model.set_use_attn_in(True)
        elif setting == "ungroup_grouped_query_attention":
            model.set_ungroup_grouped_query_attention(True)
        else:
            model.add_hook("blocks.0.ln2.hook_normalized", lambda grad, hook: 2 * grad, dir="bwd")
    tokens = probe_tokens(plain.cfg.d_vocab, batch=2, pos=6, seed=8)
    outputs = []
    for model in (plain, fused):
        model.zero_grad()
        loss = model(tokens, return_type="loss")
        loss.backward()
        outputs.append(loss.detach())
        grads.append(model.blocks[0].attn.W_Q.grad.clone())  # upstream of the norm hook
    assert torch.allclose(outputs[1], outputs[0], atol=1e-5)
    assert torch.allclose(grads[1], grads[0], atol=1e-5, rtol=1e-4)
    if setting == "backward_hook_on_a_norm":  # the hook really acts (so the comparison means something)
        plain.reset_hooks(including_permanent=True)
        plain.zero_grad()
        plain(tokens, return_type="loss").backward()
        assert not torch.allclose(plain.blocks[0].attn.W_Q.grad, grads[0], atol=1e-4)
