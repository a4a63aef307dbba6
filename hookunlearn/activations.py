"""Hooked forward passes that stop early and cache only what is needed.

Every function here runs the model with ``stop_at_layer`` just past the deepest requested hook
and a ``names_filter`` of exactly the requested hooks, and never lets BOS or padding positions
into what it returns.
"""

from __future__ import annotations

import re
from collections.abc import Sequence

import torch
from jaxtyping import Bool, Float, Int
from torch import Tensor

from hookunlearn.backends.types import LanguageModel
from hookunlearn.errors import DataError

_LAYER = re.compile(r"^blocks\.(\d+)\.")


def stop_layer_for(hooks: Sequence[str], n_layers: int) -> int | None:
    """The ``stop_at_layer`` that still computes every hook (None = run to the end)."""
    deepest = -1
    for hook in hooks:
        match = _LAYER.match(hook)
        if match is None:
            if hook.startswith(("hook_embed", "hook_pos_embed")):
                continue
            return None  # ln_final, unembed, ...: needs the full model
        deepest = max(deepest, int(match.group(1)))
    return None if deepest + 1 >= n_layers else deepest + 1


def tokenize_batch(
    model: LanguageModel,
    texts: Sequence[str],
    *,
    prepend_bos: bool | None = None,
    max_tokens: int | None = None,
    truncated: list[int] | None = None,
) -> tuple[Int[Tensor, "batch pos"], Bool[Tensor, "batch pos"]]:
    """Right-padded tokens and a mask that is True on real, non-BOS tokens; ``truncated`` (when
    given) gets the number of texts cut to fit ``max_tokens`` / the context appended."""
    tokenizer = model.tokenizer
    if tokenizer is None:
        raise DataError("the model has no tokenizer; load it with hookunlearn.models.load_model.")
    use_bos = model.cfg.default_prepend_bos if prepend_bos is None else prepend_bos
    bos = [tokenizer.bos_token_id] if use_bos and tokenizer.bos_token_id is not None else []
    limit = min(max_tokens or model.cfg.n_ctx, model.cfg.n_ctx) - len(bos)
    encoded = [list(tokenizer(text, add_special_tokens=False)["input_ids"]) for text in texts]
    if truncated is not None:
        truncated.append(sum(len(ids) > limit for ids in encoded))
    rows = [bos + ids[:limit] for ids in encoded]
    width = max(len(row) for row in rows)
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
    tokens = torch.full((len(rows), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(rows), width), dtype=torch.bool)
    for i, row in enumerate(rows):
        tokens[i, : len(row)] = torch.tensor(row, dtype=torch.long)
        mask[i, len(bos) : len(row)] = True
    return tokens, mask


@torch.no_grad()
def cache_hooks(
    model: LanguageModel, tokens: Int[Tensor, "batch pos"], hooks: Sequence[str]
) -> dict[str, Float[Tensor, "batch pos d"]]:
    """Activations at ``hooks`` only, stopping after the deepest one."""
    wanted = set(hooks)
    _, cache = model.run_with_cache(
        tokens.to(model.cfg.device),
        names_filter=lambda name: name in wanted,
        stop_at_layer=stop_layer_for(hooks, model.cfg.n_layers),
        return_type=None,
    )
    return {hook: cache[hook] for hook in hooks}


def last_token_of_span(
    model: LanguageModel, text: str, span_end_char: int, *, prepend_bos: bool | None = None
) -> int:
    """Index (in the BOS-prefixed token sequence) of the token holding character ``span_end_char - 1``."""
    tokenizer = model.tokenizer
    if tokenizer is None:
        raise DataError("the model has no tokenizer.")
    encoded = tokenizer(text, add_special_tokens=False, return_offsets_mapping=True)
    use_bos = model.cfg.default_prepend_bos if prepend_bos is None else prepend_bos
    offset = 1 if use_bos and tokenizer.bos_token_id is not None else 0
    target = span_end_char - 1
    for index, (start, end) in enumerate(encoded["offset_mapping"]):
        if start <= target < end:
            return index + offset
    raise DataError(f"character {span_end_char} is outside the prompt {text!r}.")


@torch.no_grad()
def activations_at_span_end(
    model: LanguageModel,
    prompts: Sequence[str],
    span_end_chars: Sequence[int],
    hooks: Sequence[str],
    *,
    batch_size: int = 64,
) -> dict[str, Float[Tensor, "n d"]]:
    """The activation at the last token of a character span (e.g. an entity name) of each prompt."""
    out: dict[str, list[Tensor]] = {hook: [] for hook in hooks}
    for start in range(0, len(prompts), batch_size):
        chunk = list(prompts[start : start + batch_size])
        ends = list(span_end_chars[start : start + batch_size])
        tokens, _ = tokenize_batch(model, chunk)
        positions = torch.tensor([last_token_of_span(model, p, e) for p, e in zip(chunk, ends, strict=True)])
        cache = cache_hooks(model, tokens, hooks)
        rows = torch.arange(len(chunk))
        for hook in hooks:
            out[hook].append(cache[hook][rows, positions.to(cache[hook].device)].float().cpu())
    return {hook: torch.cat(parts) for hook, parts in out.items()}
