"""Dtype names: the one table of names and aliases that models and SAEs accept."""

from __future__ import annotations

import torch

DTYPES: dict[str, torch.dtype] = {
    "float32": torch.float32,
    "bfloat16": torch.bfloat16,
    "float16": torch.float16,
    "float64": torch.float64,
}
ALIASES: dict[str, str] = {
    "fp32": "float32", "f32": "float32", "float": "float32",
    "bf16": "bfloat16",
    "fp16": "float16", "f16": "float16", "half": "float16",
    "fp64": "float64", "double": "float64",
}  # fmt: skip


def dtype_by_name(name: str) -> torch.dtype | None:
    """``float32``, ``fp32``, ``torch.bfloat16``, ``half``, ... -> the dtype (None: not a dtype name)."""
    key = name.strip().lower().removeprefix("torch.")
    return DTYPES.get(ALIASES.get(key, key))
