"""Tiny random-init checkpoints of every architecture the bridge backend is tested on.

One config per key of `hookunlearn.backends.bridge.TESTED_ARCHITECTURES` (2 layers, d_model 32-64,
the tiny BPE tokenizer of `tests.fixtures_hf`), with the same non-default weights as there (no
norm weight 1, no bias 0). The five families the hooked path also has reuse
`tests.fixtures_hf.tiny_config`; ``llama3`` adds Llama 3.x's rotary scaling, and the new families
use what sets them apart (QK norm, local/global rotary bases, fused projections, multipliers,
partial rotary) at sizes where a wrong slice of blocks shows in the numbers.
"""

from __future__ import annotations

from pathlib import Path

import torch
from transformers import (
    AutoModelForCausalLM,
    Gemma3TextConfig,
    GraniteConfig,
    LlamaConfig,
    Olmo2Config,
    Phi3Config,
    PretrainedConfig,
    Qwen3Config,
    StableLmConfig,
)

from tests.fixtures_hf import make_tiny_tokenizer, randomize_weights, tiny_config

_COMMON = {"vocab_size": None, "num_hidden_layers": 2, "max_position_embeddings": 64}


def bridge_config(arch: str, tokenizer) -> PretrainedConfig:  # noqa: ANN001 - a PreTrainedTokenizerFast
    """The HF config of the tiny ``arch`` model (a key of ``TESTED_ARCHITECTURES``)."""
    if arch in ("gpt2", "llama", "mistral", "qwen2", "gemma2"):
        return tiny_config(arch, tokenizer)
    special = {
        "vocab_size": len(tokenizer),
        "bos_token_id": tokenizer.bos_token_id,
        "eos_token_id": tokenizer.eos_token_id,
        "pad_token_id": tokenizer.pad_token_id,
        "num_hidden_layers": 2,
        "max_position_embeddings": 64,
    }
    if arch == "llama3":
        return LlamaConfig(
            hidden_size=32, intermediate_size=64, num_attention_heads=4, num_key_value_heads=2, head_dim=16,
            rope_parameters={"rope_type": "llama3", "rope_theta": 500_000.0, "factor": 8.0,
                             "low_freq_factor": 1.0, "high_freq_factor": 4.0,
                             "original_max_position_embeddings": 16},
            **special,
        )  # fmt: skip
    if arch == "qwen3":
        return Qwen3Config(
            hidden_size=32, intermediate_size=64, num_attention_heads=4, num_key_value_heads=2, head_dim=16,
            **special,
        )  # fmt: skip
    if arch == "gemma3_text":
        return Gemma3TextConfig(
            hidden_size=32, intermediate_size=64, num_attention_heads=4, num_key_value_heads=2, head_dim=16,
            query_pre_attn_scalar=24, sliding_window=4, layer_types=["sliding_attention", "full_attention"],
            **special,
        )  # fmt: skip
    if arch == "phi3":
        return Phi3Config(
            hidden_size=32, intermediate_size=64, num_attention_heads=4, num_key_value_heads=2, **special,
        )  # fmt: skip
    if arch == "olmo2":
        return Olmo2Config(
            hidden_size=32, intermediate_size=64, num_attention_heads=4, num_key_value_heads=2, **special,
        )  # fmt: skip
    if arch == "granite":
        return GraniteConfig(
            hidden_size=32, intermediate_size=64, num_attention_heads=4, num_key_value_heads=2,
            embedding_multiplier=2.0, residual_multiplier=0.5, attention_multiplier=0.3, logits_scaling=2.0,
            **special,
        )  # fmt: skip
    if arch == "stablelm":
        return StableLmConfig(
            hidden_size=32, intermediate_size=64, num_attention_heads=4, num_key_value_heads=2,
            partial_rotary_factor=0.5, **special,
        )  # fmt: skip
    raise ValueError(f"no tiny config for {arch!r}")


def make_bridge_checkpoint(arch: str, out_dir: Path | str, seed: int = 0) -> Path:
    """Save a tiny random ``arch`` checkpoint (config, safetensors, tokenizer) to ``out_dir``."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    tokenizer = make_tiny_tokenizer()
    config = bridge_config(arch, tokenizer)
    model = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    gemma = config.model_type.startswith("gemma")
    randomize_weights(model, seed, norm_weight_offset=0.0 if gemma else 1.0)
    model.eval()
    model.save_pretrained(out, safe_serialization=True)
    tokenizer.save_pretrained(out)
    return out
