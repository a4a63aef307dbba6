"""Train the embedded world's language model: a small GPT-2 on packed text units.

The model is an ordinary Hugging Face ``GPT2LMHeadModel``, trained from scratch with AdamW, a
linear warmup and a cosine decay, on rows of ``n_ctx`` tokens packed from the world's text units
(``<|endoftext|>`` before every unit). Each epoch re-packs ``units_for_epoch(epoch)``, so the world
can reshuffle (or resample fillers) between epochs. Training stops at ``max_tokens`` or at the
time budget, whichever comes first, and the learning-rate schedule follows whichever is nearer
its end, so a run cut short by the clock still anneals.

The result is a plain HF checkpoint directory (``config.json`` with ``n_ctx`` set,
``model.safetensors``, the tokenizer, and ``training.json``), written atomically.

Measured on 2 CPU cores (d_model 128, 4 layers, batch 32 x 64): see ``LMTrainConfig``.
"""

from __future__ import annotations

import contextlib
import io
import json
import math
import sys
import time
import warnings
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass
from importlib.metadata import version
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from jaxtyping import Bool, Int64
from torch import Tensor
from transformers import AutoTokenizer, GPT2Config, GPT2LMHeadModel, PreTrainedTokenizerBase

from hookunlearn.artifacts import run_directory
from hookunlearn.errors import ArtifactError, DataError
from hookunlearn.hf_files import portable_tokenizer_files

TRAINING_JSON = "training.json"
LM_TRAINING_SCHEMA_VERSION = 1


@dataclass(frozen=True)
class LMTrainConfig:
    """Every knob of the world-model training run. Defaults are the settings WORLD_NOTES measured
    (~100% recall of known facts after ~7M tokens). This HF GPT-2 with SDPA attention trains at
    ~19k tokens/s on 2 idle cores (about half that when another job shares them), so the default
    7.2M tokens take ~6.5 min."""

    d_model: int = 128
    """Residual stream width."""
    n_layers: int = 4
    """Number of transformer blocks."""
    n_heads: int = 4
    """Attention heads per block (``d_model`` must be divisible by it)."""
    d_mlp: int = 512
    """MLP hidden width (HF ``n_inner``). ``hookunlearn.models.load_model`` reads it; TransformerLens's
    own GPT-2 config conversion ignores it and assumes ``4 * d_model``."""
    n_ctx: int = 64
    """Context length: rows are packed to exactly this many tokens; also ``n_positions``."""
    lr: float = 2e-3
    """Peak AdamW learning rate (reached after ``warmup_steps``)."""
    min_lr_ratio: float = 0.1
    """The cosine decay ends at ``lr * min_lr_ratio``."""
    weight_decay: float = 0.01
    """AdamW weight decay, applied to matrices only (not biases, LayerNorm or position table)."""
    adam_betas: tuple[float, float] = (0.9, 0.95)
    """AdamW betas."""
    grad_clip: float | None = 1.0
    """Clip the global gradient norm to this (None: no clipping)."""
    batch_size: int = 32
    """Rows (of ``n_ctx`` tokens) per optimizer step."""
    warmup_steps: int = 100
    """Linear warmup from 0 to ``lr`` over this many steps."""
    max_tokens: int = 7_200_000
    """Stop after this many token positions (rows x n_ctx, pads included); ~600 s at 12k tok/s.
    The cosine schedule is laid out over this budget."""
    time_budget_s: float | None = 1_200.0
    """Also stop after this much wall time (None: no time limit). A safety cap: at the measured
    speed ``max_tokens`` ends the run first, and the run is then deterministic."""
    seed: int = 0
    """Seeds model initialisation (``torch.manual_seed``); the data order is the world's."""
    compile: bool = False
    """Use ``torch.compile`` on the model. WORLD_NOTES saw ~+30% tokens/s for a TransformerLens
    model after ~50 s of compiling on 2 cores; not a clear win for short runs."""
    num_threads: int | None = None
    """``torch.set_num_threads`` during training; None leaves torch's default (all cores)."""
    attn_implementation: str = "sdpa"
    """Hugging Face attention kernel; ``"sdpa"`` is faster than ``"eager"`` on CPU."""
    log_every: int = 50
    """Call ``progress`` every this many optimizer steps."""


def pack_units(
    units: list[str], tokenizer: PreTrainedTokenizerBase, n_ctx: int
) -> Int64[Tensor, "n_seq n_ctx"]:
    """Tokenize text units and pack them into rows of ``n_ctx`` tokens.

    Every unit is written as ``BOS + tokens``; units follow one another in a row, and a new row
    starts when the next unit would not fit in what is left. The rest of a row is padded with the
    pad id. A unit longer than ``n_ctx - 1`` tokens cannot fit anywhere: it starts a fresh row and
    continues over the next rows (without a BOS in the continuation). Empty units are skipped.
    """
    if n_ctx < 2:
        raise ValueError(f"n_ctx must be at least 2 (BOS + one token), got {n_ctx}")
    bos_id, pad_id = special_ids(tokenizer)
    encoded: list[list[int]] = tokenizer(list(units), add_special_tokens=False)["input_ids"] if units else []
    rows: list[list[int]] = []
    current: list[int] = []

    def close_row() -> None:
        nonlocal current
        if current:
            rows.append(current + [pad_id] * (n_ctx - len(current)))
            current = []

    for ids in encoded:
        if not ids:
            continue
        piece = [bos_id, *ids]
        if len(current) + len(piece) > n_ctx:
            close_row()
        while len(piece) > n_ctx:  # unavoidable split: this unit alone is longer than a row
            rows.append(piece[:n_ctx])
            piece = piece[n_ctx:]
        current.extend(piece)
        if len(current) == n_ctx:
            close_row()
    close_row()
    if not rows:
        return torch.empty((0, n_ctx), dtype=torch.int64)
    return torch.tensor(rows, dtype=torch.int64)


def pad_mask(rows: Int64[Tensor, "n_seq n_ctx"], pad_id: int) -> Bool[Tensor, "n_seq n_ctx"]:
    """True at padding: the trailing run of ``pad_id`` at the end of each row.

    The pad id is the BOS id in our tokenizers, so padding is recognised by position (the run
    after the last unit), not by id alone.
    """
    is_pad = rows == pad_id
    # A position is padding iff it and every position after it hold the pad id.
    return torch.flip(torch.cumprod(torch.flip(is_pad, dims=[1]).to(torch.int64), dim=1), dims=[1]).bool()


def target_mask(rows: Int64[Tensor, "n_seq n_ctx"], pad_id: int) -> Bool[Tensor, "n_seq n_ctx-1"]:
    """Which next-token targets ``rows[:, 1:]`` count in the loss.

    Real tokens and BOS separators count (a BOS after a unit is its end-of-text). Of the padding,
    only the first pad counts (end of the row's last unit, like the BOS after every other unit);
    the rest is ignored.
    """
    padding = pad_mask(rows, pad_id)
    previous_is_padding = torch.zeros_like(padding)
    previous_is_padding[:, 1:] = padding[:, :-1]
    first_pad = padding & ~previous_is_padding
    return (~padding | first_pad)[:, 1:]


def special_ids(tokenizer: PreTrainedTokenizerBase) -> tuple[int, int]:
    """``(bos_id, pad_id)`` of a world tokenizer (pad falls back to EOS, then BOS)."""
    bos_id = tokenizer.bos_token_id
    if bos_id is None:
        raise DataError(
            f"tokenizer {getattr(tokenizer, 'name_or_path', '?')!r} has no BOS token; the world tokenizer "
            "must define <|endoftext|> as bos/eos/pad (see hookunlearn.world.tokenizer)."
        )
    pad_id = tokenizer.pad_token_id
    if pad_id is None:
        pad_id = tokenizer.eos_token_id if tokenizer.eos_token_id is not None else bos_id
    return int(bos_id), int(pad_id)


def build_world_lm(config: LMTrainConfig, tokenizer: PreTrainedTokenizerBase) -> GPT2LMHeadModel:
    """A freshly initialised GPT-2 (seeded by ``config.seed``) sized for the tokenizer."""
    bos_id, pad_id = special_ids(tokenizer)
    hf_config = GPT2Config(
        vocab_size=len(tokenizer),
        n_positions=config.n_ctx,
        n_embd=config.d_model,
        n_layer=config.n_layers,
        n_head=config.n_heads,
        n_inner=config.d_mlp,
        activation_function="gelu_new",
        resid_pdrop=0.0,
        embd_pdrop=0.0,
        attn_pdrop=0.0,
        bos_token_id=bos_id,
        eos_token_id=tokenizer.eos_token_id if tokenizer.eos_token_id is not None else bos_id,
        pad_token_id=pad_id,
        tie_word_embeddings=True,
    )
    # GPT2Config lost n_ctx in transformers 5; TransformerLens's config conversion still reads it.
    hf_config.n_ctx = config.n_ctx
    hf_config._attn_implementation = config.attn_implementation
    torch.manual_seed(config.seed)
    return GPT2LMHeadModel(hf_config)


def lm_loss(
    model: torch.nn.Module, rows: Int64[Tensor, "batch n_ctx"], mask: Bool[Tensor, "batch n_ctx-1"]
) -> Tensor:
    """Mean next-token cross-entropy over the targets that ``mask`` keeps."""
    # An all-ones attention mask: pads only trail the last unit, so causal attention never reads
    # them for a kept target; passing it keeps HF from warning that the ids look padded.
    logits = model(input_ids=rows, attention_mask=torch.ones_like(rows)).logits
    per_token = F.cross_entropy(
        logits[:, :-1].reshape(-1, logits.shape[-1]), rows[:, 1:].reshape(-1), reduction="none"
    )
    weights = mask.reshape(-1).to(per_token.dtype)
    return (per_token * weights).sum() / weights.sum().clamp_min(1.0)


def lr_at(config: LMTrainConfig, step: int, progress: float) -> float:
    """Learning rate: linear warmup over ``warmup_steps``, then cosine to ``lr * min_lr_ratio``
    as ``progress`` (fraction of the token or time budget used) goes from 0 to 1."""
    if step < config.warmup_steps:
        return config.lr * (step + 1) / config.warmup_steps
    cosine = 0.5 * (1.0 + math.cos(math.pi * min(max(progress, 0.0), 1.0)))
    return config.lr * (config.min_lr_ratio + (1.0 - config.min_lr_ratio) * cosine)


def train_world_lm(
    units_for_epoch: Callable[[int], list[str]],
    tokenizer_dir: Path,
    out_dir: Path,
    config: LMTrainConfig,
    progress: Callable[[dict[str, Any]], None] | None = None,
    overwrite: bool = False,
) -> dict[str, Any]:
    """Train the world's LM from scratch and save it as an HF checkpoint in ``out_dir``.

    ``units_for_epoch(e)`` gives the (shuffled) text units of epoch ``e``; each epoch is packed
    with `pack_units`. ``progress`` is called every ``config.log_every`` steps with
    ``{step, tokens, loss, lr, tok_per_s, elapsed, epoch}``. Returns the training statistics that
    are also written to ``out_dir/training.json``. The checkpoint loads with
    ``AutoModelForCausalLM.from_pretrained(out_dir)`` or ``hookunlearn.models.load_model(out_dir)``.
    """
    tokenizer_dir, out_dir = Path(tokenizer_dir), Path(out_dir)
    if out_dir.exists() and not overwrite:
        raise ArtifactError(f"output directory {out_dir} already exists; remove it or pass overwrite=True.")
    tokenizer = AutoTokenizer.from_pretrained(str(tokenizer_dir), local_files_only=True)
    model, stats = fit_world_lm(units_for_epoch, tokenizer, config, progress)
    save_world_lm(model, tokenizer, out_dir, config, stats, overwrite=overwrite)
    return stats


def fit_world_lm(
    units_for_epoch: Callable[[int], list[str]],
    tokenizer: PreTrainedTokenizerBase,
    config: LMTrainConfig,
    progress: Callable[[dict[str, Any]], None] | None = None,
) -> tuple[GPT2LMHeadModel, dict[str, Any]]:
    """The training loop of `train_world_lm`, without saving: returns the model (in eval mode,
    on CPU) and the training statistics."""
    if config.d_model % config.n_heads:
        raise ValueError(f"d_model {config.d_model} is not divisible by n_heads {config.n_heads}")
    _, pad_id = special_ids(tokenizer)

    model = build_world_lm(config, tokenizer)
    model.train()
    forward_model: torch.nn.Module = torch.compile(model) if config.compile else model
    optimizer = torch.optim.AdamW(
        _parameter_groups(model, config.weight_decay), lr=config.lr, betas=config.adam_betas
    )

    previous_threads = torch.get_num_threads()
    if config.num_threads is not None:
        torch.set_num_threads(config.num_threads)
    batches = _batches(units_for_epoch, tokenizer, config)
    tokens_per_step = config.batch_size * config.n_ctx
    step = tokens = loss_targets = 0
    losses: list[float] = []
    stopped_by = "max_tokens"
    epoch = 0
    start = time.perf_counter()
    try:
        while tokens + tokens_per_step <= config.max_tokens:
            elapsed = time.perf_counter() - start
            if config.time_budget_s is not None and elapsed >= config.time_budget_s:
                stopped_by = "time_budget"
                break
            epoch, rows = next(batches)
            mask = target_mask(rows, pad_id)
            fraction = tokens / config.max_tokens
            if config.time_budget_s is not None:
                fraction = max(fraction, elapsed / config.time_budget_s)
            lr = lr_at(config, step, fraction)
            for group in optimizer.param_groups:
                group["lr"] = lr

            loss = lm_loss(forward_model, rows, mask)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            if config.grad_clip is not None:
                torch.nn.utils.clip_grad_norm_(model.parameters(), config.grad_clip)
            optimizer.step()

            step += 1
            tokens += rows.numel()
            loss_targets += int(mask.sum())
            losses.append(float(loss.detach()))
            if progress is not None and step % config.log_every == 0:
                elapsed = time.perf_counter() - start
                progress(
                    {
                        "step": step,
                        "tokens": tokens,
                        "loss": _mean_tail(losses, config.log_every),
                        "lr": lr,
                        "tok_per_s": tokens / max(elapsed, 1e-9),
                        "elapsed": elapsed,
                        "epoch": epoch,
                    }
                )
    finally:
        if config.num_threads is not None:
            torch.set_num_threads(previous_threads)
    wall = time.perf_counter() - start
    if step == 0:
        raise DataError(
            f"no training step ran: max_tokens={config.max_tokens} is below one batch "
            f"({tokens_per_step} tokens) or time_budget_s={config.time_budget_s} is 0."
        )

    tail = max(1, min(50, step // 10))
    stats: dict[str, Any] = {
        "steps": step,
        "tokens": tokens,
        "loss_targets": loss_targets,
        "epochs_started": epoch + 1,
        "initial_loss": _mean_head(losses, tail),
        "final_loss": _mean_tail(losses, tail),
        "tok_per_s": tokens / max(wall, 1e-9),
        "wall_time_s": wall,
        "stopped_by": stopped_by,
        "n_params": sum(p.numel() for p in model.parameters()),
        "torch_threads": config.num_threads or previous_threads,
    }
    model.eval()
    return model, stats


def _batches(
    units_for_epoch: Callable[[int], list[str]], tokenizer: PreTrainedTokenizerBase, config: LMTrainConfig
) -> Iterator[tuple[int, Int64[Tensor, "batch n_ctx"]]]:
    """Endless stream of ``(epoch, rows)`` batches; rows left over at an epoch's end carry into
    the next epoch, so every batch is full."""
    carry = torch.empty((0, config.n_ctx), dtype=torch.int64)
    epoch = 0
    while True:
        rows = pack_units(units_for_epoch(epoch), tokenizer, config.n_ctx)
        if rows.shape[0] == 0 and carry.shape[0] == 0:
            raise DataError(f"units_for_epoch({epoch}) returned no text to train on.")
        rows = torch.cat([carry, rows])
        n_full = rows.shape[0] // config.batch_size
        for index in range(n_full):
            yield epoch, rows[index * config.batch_size : (index + 1) * config.batch_size]
        carry = rows[n_full * config.batch_size :]
        epoch += 1


def _parameter_groups(model: torch.nn.Module, weight_decay: float) -> list[dict[str, Any]]:
    """Weight decay on matrices (attention, MLP, token embedding), not on biases, LayerNorms or
    the position table."""
    decay, no_decay = [], []
    seen: set[int] = set()
    for name, parameter in model.named_parameters():
        if id(parameter) in seen:  # tied lm_head / wte
            continue
        seen.add(id(parameter))
        (decay if parameter.ndim >= 2 and "wpe" not in name else no_decay).append(parameter)
    return [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]


def _mean_head(values: list[float], n: int) -> float:
    head = values[:n]
    return sum(head) / len(head)


def _mean_tail(values: list[float], n: int) -> float:
    tail = values[-n:]
    return sum(tail) / len(tail)


def save_world_lm(
    model: GPT2LMHeadModel,
    tokenizer: PreTrainedTokenizerBase,
    out_dir: Path,
    config: LMTrainConfig,
    stats: dict[str, Any],
    overwrite: bool = False,
) -> None:
    """Write the checkpoint (``config.json`` with ``n_ctx``, ``model.safetensors``), the tokenizer
    and ``training.json`` into a temp dir beside ``out_dir``, then rename it into place."""
    with run_directory(out_dir, force=overwrite) as staging:
        model.config.n_ctx = config.n_ctx
        with quiet_library_output():
            model.save_pretrained(staging, safe_serialization=True)
            tokenizer.save_pretrained(staging)
        # the model is trained with BOS in front: the tokenizer adds it for every client
        portable_tokenizer_files(
            staging,
            bos=tokenizer.bos_token,
            bos_id=tokenizer.bos_token_id,
            want_bos=True,
            context_length=config.n_ctx,
        )
        record = {
            "schema_version": LM_TRAINING_SCHEMA_VERSION,
            "config": asdict(config),
            "stats": stats,
            "versions": {name: version(name) for name in ("torch", "transformers", "tokenizers")},
        }
        (staging / TRAINING_JSON).write_text(json.dumps(record, indent=2) + "\n")


@contextlib.contextmanager
def quiet_library_output() -> Iterator[
    Callable[[Callable[[dict[str, Any]], None] | None], Callable[[dict[str, Any]], None] | None]
]:
    """Swallow what third-party libraries write to stderr (tqdm bars, log lines, warnings) while
    they run inside ours: the library never prints. Exceptions still propagate.

    Yields ``outside(progress)``, which wraps a caller's progress callback so that it runs with
    the real stderr (a CLI printing progress there must still be heard).
    """
    real_stderr = sys.stderr

    def outside(progress: Callable[[dict[str, Any]], None] | None) -> Callable[[dict[str, Any]], None] | None:
        if progress is None:
            return None

        def call(report: dict[str, Any]) -> None:
            with contextlib.redirect_stderr(real_stderr):
                progress(report)

        return call

    with contextlib.redirect_stderr(io.StringIO()), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        yield outside
