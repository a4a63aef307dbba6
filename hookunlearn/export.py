"""Export: a `HookedTransformer` back to an ordinary, verified ``transformers`` checkpoint.

TransformerLens has no HookedTransformer -> Hugging Face conversion, so hookunlearn inverts its
weight conversions (``transformer_lens/pretrained/weight_conversions/{gpt2,llama,mistral,qwen2,
gemma}.py``) for GPT-2, Llama, Mistral, Qwen2 and Gemma-2. The per-family tensor converters and
HF config builders live in `hookunlearn.architectures`; this module owns the rest: picking the
architecture, the HF config (copied from the source checkpoint or built), writing, verifying
and the change report::

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
    GenerationConfig,
    PretrainedConfig,
    PreTrainedModel,
)

from hookunlearn import faults
from hookunlearn.architectures import HF_CLASSES, SUPPORTED_MODEL_TYPES, architecture_for_tl
from hookunlearn.architectures.base import (
    _BUFFER_SUFFIXES,
    _LM_HEAD,
    _ROUND_OFF_EPS,
    Architecture,
    _Converted,
    _eps,
    _max_abs,
    _StateDict,
)
from hookunlearn.artifacts import check_can_write, library_versions, run_directory, write_json
from hookunlearn.backends import backend_name
from hookunlearn.backends.types import LanguageModel
from hookunlearn.errors import HookunlearnError, ModelLoadError
from hookunlearn.hf_files import portable_paths, portable_tokenizer_files
from hookunlearn.model_card import model_card
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

SUPPORTED_ARCHITECTURES: tuple[str, ...] = SUPPORTED_MODEL_TYPES
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
    tokenizer_adds_bos: bool | None = None
    """Whether the written tokenizer prepends BOS with its defaults (None: no tokenizer written)."""

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
            "tokenizer_adds_bos": self.tokenizer_adds_bos,
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
# TransformerLens state dict -> HF tensors (per architecture: hookunlearn.architectures)
# ---------------------------------------------------------------------------------------------


def _architecture(model: LanguageModel) -> Architecture:
    name = model.cfg.original_architecture
    architecture = architecture_for_tl(name)
    if architecture is None:
        raise ExportError(
            f"model {model.cfg.model_name!r}: architecture {name!r} cannot be exported to a transformers "
            f"checkpoint. Supported: {', '.join(SUPPORTED_ARCHITECTURES)} "
            f"({', '.join(HF_CLASSES.values())})."
        )
    return architecture


def _convert(
    state_dict: Mapping[str, Tensor], cfg: HookedTransformerConfig, arch: Architecture, label: str
) -> _Converted:
    sd = _StateDict(state_dict, label)
    converted = arch.hf_tensors(sd, cfg)
    unused = sd.unused()
    if unused:
        shown = ", ".join(unused[:6]) + (" ..." if len(unused) > 6 else "")
        raise ExportError(
            f"{label}: {len(unused)} tensor(s) have no place in a {arch.model_type} checkpoint ({shown}). "
            "Remove spliced-in modules (SAEs, adapters) before exporting."
        )
    dtype = state_dict["embed.W_E"].dtype
    converted.tensors = {
        name: tensor.detach().to(device="cpu", dtype=dtype).contiguous()
        for name, tensor in converted.tensors.items()
    }
    return converted


def hf_state_dict(model: LanguageModel) -> dict[str, Tensor]:
    """The model's weights as an HF state dict of its architecture (CPU, the model's dtype).

    ``lm_head.weight`` is always included (untied). Raises `ExportError` for an unsupported
    architecture or weights the HF architecture cannot hold (see the module docstring).
    """
    arch = _architecture(model)
    return _convert(model.state_dict(), model.cfg, arch, f"model {model.cfg.model_name!r}").tensors


# ---------------------------------------------------------------------------------------------
# The HF config
# ---------------------------------------------------------------------------------------------


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
    model: LanguageModel,
    arch: Architecture,
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
        if config.model_type != arch.model_type:
            raise ExportError(
                f"{label}: model_type {config.model_type!r}, but the model is a {arch.model_type}. "
                "Pass the checkpoint the model was loaded from, or none."
            )
        arch.adapt_source_config(config)
        origin = f"copied from {source_dir / 'config.json'}"
    else:
        label = "the config built from the model's TransformerLens config"
        config = arch.hf_config(model.cfg, tokenizer)
        origin = "built from the model's TransformerLens config"
    _check_config_matches(config, model.cfg, label)
    config.architectures = [arch.hf_class]
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


def _write_tokenizer(directory: Path, tokenizer: Any, source_dir: Path | None, model: LanguageModel) -> str:
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


def _context_length(config: PretrainedConfig) -> int | None:
    for key in ("max_position_embeddings", "n_positions", "n_ctx"):
        value = getattr(config, key, None)
        if isinstance(value, int) and value > 0:
            return value
    return None


def _portable_tokenizer(
    directory: Path,
    model: LanguageModel,
    config: PretrainedConfig,
    model_tokenizer: Any,
    add_bos: bool | None,
    label: str,
) -> tuple[bool | None, bool, list[str]]:
    """Make the written tokenizer files portable (`hookunlearn.hf_files`); returns (whether
    ``tokenizer.json`` prepends BOS, whether hookunlearn feeds the model a BOS, notes).

    ``add_bos`` None (auto): the tokenizer prepends BOS exactly when hookunlearn feeds the model
    one (``default_prepend_bos`` and a BOS token, as `bos_prefix` decides), adding or removing it
    in the post-processor; True: it prepends BOS; False: the tokenizer is left as it is."""
    # as hookunlearn.evaluation.scoring.bos_prefix decides it, for the tokenizer being written
    expects = (
        bool(model.cfg.default_prepend_bos) and getattr(model_tokenizer, "bos_token_id", None) is not None
    )
    want = expects if add_bos is None else (True if add_bos else None)
    try:
        adds, notes = portable_tokenizer_files(
            directory,
            bos=getattr(model_tokenizer, "bos_token", None),
            bos_id=getattr(model_tokenizer, "bos_token_id", None),
            want_bos=want,
            context_length=_context_length(config),
        )
    except ValueError as exc:
        raise ExportError(
            f"{label}: the tokenizer cannot be made to {'add' if want else 'drop'} BOS ({exc}); pass a "
            "tokenizer that does as tokenizer=, or keep the tokenizer as it is (add_bos=False, --bos keep)."
        ) from exc
    if adds is not None and adds != expects:
        notes.append(
            f"the tokenizer {'prepends' if adds else 'does not prepend'} BOS with its defaults, but hookunlearn "
            f"feeds this model {'none' if adds else 'one'}: clients using the tokenizer's defaults see "
            f"{'one token more' if adds else 'one token less'} than hookunlearn's numbers were measured on"
        )
    return adds, expects, notes


def _write_generation_config(directory: Path, config: PretrainedConfig, source_dir: Path | None) -> None:
    if source_dir is not None and (source_dir / "generation_config.json").is_file():
        shutil.copy2(source_dir / "generation_config.json", directory / "generation_config.json")
        return
    GenerationConfig.from_model_config(config).save_pretrained(directory)


# ---------------------------------------------------------------------------------------------
# Verification
# ---------------------------------------------------------------------------------------------


def _probe_batch(model: LanguageModel, texts: Sequence[str]) -> list[Int[Tensor, "1 pos"]]:
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
def _float32_view(model: LanguageModel, device: torch.device) -> Iterator[LanguageModel]:
    """The model itself when float32; else a float32 twin on ``device``, on one device (rotary
    tables recomputed in float32)."""
    if next(model.parameters()).dtype == torch.float32:
        yield model
        return
    cfg = HookedTransformerConfig.from_dict(
        {
            **model.cfg.to_dict(),
            "dtype": torch.float32,
            "init_weights": False,
            "n_devices": 1,
            "device": str(device),
        }
    )
    with quiet_libraries():
        twin = HookedTransformer(cfg, tokenizer=None, move_to_device=False)
    weights = {
        name: tensor.float()
        for name, tensor in model.state_dict().items()
        if not name.endswith(_BUFFER_SUFFIXES)
    }
    twin.load_state_dict(weights, strict=False)
    twin.to(device, print_details=False)
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


def _tl_logprobs(model: LanguageModel, tokens: Int[Tensor, "1 pos"]) -> Float[Tensor, "1 pos d_vocab"]:
    with quiet_libraries():
        # An explicit all-ones mask: no pad-token masking even when the tokenizer pads on the left.
        logits = model(tokens, return_type="logits", attention_mask=torch.ones_like(tokens))
    return torch.log_softmax(logits.float(), dim=-1)


@torch.no_grad()
def _compare_logprobs(
    model: LanguageModel, hf_model: PreTrainedModel, sequences: Sequence[Tensor], label: str
) -> tuple[float, float | None]:
    """(max |log-prob difference| of the reloaded checkpoint vs the model in float32,
    max |log-prob difference| of the model in its own half dtype vs float32, or None for float32).

    A model spread over several devices (``n_devices``) is compared on the CPU: the reloaded
    checkpoint (and a half-precision model's float32 twin) stay there instead of landing whole on
    the first GPU, which could not hold them; the model itself runs where it is."""
    spread = int(getattr(model.cfg, "n_devices", 1) or 1) > 1
    device = torch.device("cpu") if spread else next(model.parameters()).device
    hf_model.to(device)  # type: ignore[arg-type]  # transformers types its .to wrapper oddly
    model_device = torch.device(model.cfg.device) if spread else device
    worst, own_error = 0.0, None
    with _float32_view(model, device) as reference:
        for sequence in sequences:
            tokens = sequence.to(device)
            expected = _tl_logprobs(reference, tokens.to(model_device if reference is model else device))
            expected = expected.to(device)
            if not torch.isfinite(expected).all():
                raise ExportError(f"{label}: the model's own log-probs are not finite on the probe batch.")
            actual = torch.log_softmax(hf_model(input_ids=tokens, use_cache=False).logits.float(), dim=-1)
            difference = float((actual - expected).abs().max())
            worst = max(worst, difference if math.isfinite(difference) else math.inf)
            if reference is not model:
                own = _tl_logprobs(model, tokens.to(model_device)).to(device)
                native = float((own - expected).abs().max())
                own_error = max(own_error or 0.0, native if math.isfinite(native) else 0.0)
    return worst, own_error


def _check_tokenizer(
    directory: Path, expected: Any, texts: Sequence[str], label: str, adds_bos: bool | None = None
) -> bool | None:
    """Whether the written tokenizer encodes the probe texts as the model's does (None: nothing to
    compare), and, when ``adds_bos`` is given, prepends BOS with its defaults exactly when told."""
    if expected is None:
        return None
    if not any((directory / name).is_file() for name in _TOKENIZER_FILES):
        raise ExportError(
            f"{label}: no tokenizer was written (none of tokenizer.json, tokenizer_config.json); pass "
            "the model's tokenizer as tokenizer= or a source_dir that holds its files."
        )
    try:
        with quiet_libraries():
            written = AutoTokenizer.from_pretrained(directory, local_files_only=True)
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise ExportError(f"{label}: transformers could not reload the written tokenizer ({exc}).") from exc
    for text in texts:
        ours = written(text, add_special_tokens=False)["input_ids"]
        theirs = expected(text, add_special_tokens=False)["input_ids"]
        # both ways: text -> ids -> text must give the text back (a tokenizer that lost its
        # vocabulary encodes everything as one unknown token, identically on both sides)
        decoded = written.decode(ours, skip_special_tokens=True)
        if " ".join(decoded.split()) != " ".join(text.split()):
            raise ExportError(
                f"{label}: the written tokenizer does not round-trip {text!r} (ids {ours[:12]}... decode "
                f"to {decoded[:60]!r}); its vocabulary is missing or wrong. Pass the model's tokenizer "
                "as tokenizer= (or its checkpoint, with its tokenizer files, as source_dir)."
            )
        if ours != theirs:
            raise ExportError(
                f"{label}: the written tokenizer encodes {text!r} as {ours[:12]}..., the model's as "
                f"{theirs[:12]}...; pass the model's tokenizer as tokenizer= (or its checkpoint as source_dir)."
            )
        bos_id = getattr(written, "bos_token_id", None)
        if adds_bos is not None and bos_id is not None:
            default = written(text)["input_ids"]
            # specials a tokenizer appends (an EOS) are its own business; what is checked is the front
            starts_with_bos = default[:1] == [bos_id] and default[1 : len(ours) + 1] == ours
            if starts_with_bos != adds_bos:
                raise ExportError(
                    f"{label}: the written tokenizer, reloaded with its defaults, encodes {text!r} as "
                    f"{default[:12]}...: BOS {'missing' if adds_bos else 'added'}, so clients would not "
                    "feed the model what hookunlearn does. This tokenizer class rebuilds its post-processor "
                    "on load; pass a tokenizer that adds BOS itself as tokenizer=."
                )
    return True


# ---------------------------------------------------------------------------------------------
# Changes against a reference
# ---------------------------------------------------------------------------------------------


def _with_lm_head(tensors: Mapping[str, Tensor], embedding_name: str) -> dict[str, Tensor]:
    """``tensors`` with ``lm_head.weight`` present (a tied checkpoint stores only the embedding)."""
    full = dict(tensors)
    if _LM_HEAD not in full and embedding_name in full:
        full[_LM_HEAD] = full[embedding_name]
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
    model: LanguageModel,
    arch: Architecture | None,
    source_dir: Path | None,
) -> tuple[dict[str, Tensor] | None, str | None]:
    """The reference tensors (HF names) for the change report, and a description of them."""
    if isinstance(reference, HookedTransformer):
        return hf_state_dict(reference), "the reference HookedTransformer (converted the same way)"
    if isinstance(reference, Mapping):
        if "embed.W_E" in reference and arch is not None:
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
    exported: Mapping[str, Tensor], reference: Mapping[str, Tensor], embedding_name: str
) -> tuple[list[TensorChange], list[str], list[str]]:
    """(changes above round-off, names differing only by round-off, names missing from the reference)."""
    exported, reference = _with_lm_head(exported, embedding_name), _with_lm_head(reference, embedding_name)
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


def _source_dir(model: LanguageModel, source_dir: str | os.PathLike[str] | None) -> Path | None:
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


def _hooked_points(model: LanguageModel) -> list[str]:
    return [
        name
        for name, hook_point in model.hook_dict.items()
        if hook_point._forward_hooks or hook_point._forward_pre_hooks or hook_point._backward_hooks
    ]


def export_model(
    model: LanguageModel,
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
    add_bos: bool | None = None,
    report: Mapping[str, Any] | None = None,
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
        add_bos: whether the written tokenizer prepends BOS with its defaults (its post-processor in
            ``tokenizer.json``). Default: exactly when hookunlearn feeds the model a BOS
            (``model.cfg.default_prepend_bos`` and a BOS token), added or removed as needed, so
            every client sees what hookunlearn's numbers were measured on. True adds it; False
            leaves the tokenizer as it is (``hookunlearn.json`` says when the two then disagree).
        report: an eval report's JSON (``report.json``) whose metrics the model card lists.

    Returns:
        `ExportResult`, also recorded in ``out_dir/hookunlearn.json``.

    Raises:
        ExportError: unsupported architecture, weights or hooks the HF architecture cannot hold,
            a source_dir that describes another model, or a failed verification (nothing written).
        ArtifactError: ``out_dir`` exists and ``force`` is not set.
    """
    out = check_can_write(out_dir, force=force)
    # The bridge backend writes its Hugging Face module's own tensors (hookunlearn.backends.bridge);
    # the hooked backend inverts TransformerLens's conversion (hookunlearn.architectures).
    bridge = backend_name(model) == "bridge"
    arch = None if bridge else _architecture(model)
    model_type = model_info(model).hf_model_type if arch is None else arch.model_type
    label = f"export of model {model_info(model).spec!r} ({model_type})"
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

    if arch is None:
        from hookunlearn.backends.bridge import export_parts

        if dtype != torch.float32:
            raise ExportError(
                f"{label}: the bridge backend exports float32 models; load it with dtype float32."
            )
        parts = export_parts(model, label)
        tensors, notes, tied, config = parts.tensors, parts.notes, parts.tied, parts.config
        model_type, hf_class, embedding_name = parts.model_type, parts.hf_class, parts.embedding_name
        config_origin = "the bridge's Hugging Face module config" + (
            f" (loaded from {source})" if source else ""
        )
    else:
        converted = _convert(model.state_dict(), model.cfg, arch, label)
        tensors, notes = converted.tensors, list(converted.notes)
        tied = torch.equal(tensors[_LM_HEAD], tensors[arch.embedding_name])
        if tied:
            tensors = {name: tensor for name, tensor in tensors.items() if name != _LM_HEAD}
        notes.append(
            f"tie_word_embeddings={tied} (lm_head {'equals' if tied else 'differs from'} the embedding)"
        )
        config, config_origin = _hf_config(model, arch, source, model_tokenizer, dtype, tied)
        hf_class, embedding_name = arch.hf_class, arch.embedding_name
    reference_tensors, reference_label = _reference_tensors(reference, model, arch, source)
    changes, round_off, missing = (
        _tensor_changes(tensors, reference_tensors, embedding_name)
        if reference_tensors is not None
        else ([], [], [])
    )

    with run_directory(out, force=force) as tmp:
        config.save_pretrained(tmp)
        _write_generation_config(tmp, config, source)
        weight_files = _save_state_dict(tensors, tmp)
        faults.reached("export")  # a crash here must leave no checkpoint behind
        tokenizer_origin = _write_tokenizer(tmp, tokenizer, source, model)
        adds_bos, expects_bos, tokenizer_notes = _portable_tokenizer(
            tmp, model, config, model_tokenizer, add_bos, label
        )
        notes += tokenizer_notes
        max_diff = own_error = tokenizer_ok = None
        used_tolerance = tolerance
        if verify:
            tokenizer_ok = _check_tokenizer(tmp, model_tokenizer, texts, label, adds_bos)
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
            architecture=model_type,
            dtype=str(dtype).removeprefix("torch."),
            verified=verify,
            max_logprob_diff=max_diff,
            tolerance=used_tolerance,
            half_precision_error=own_error,
            reference=reference_label,
            changes=tuple(changes),
            notes=tuple(notes),
            tokenizer_adds_bos=adds_bos,
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
                "architecture": model_type,
                "hf_architecture": hf_class,
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
                    + ("vs the TransformerBridge" if bridge else "vs the HookedTransformer")
                    + (" (a float32 copy of it)" if dtype != torch.float32 else "")
                ),
                "probe_texts": texts,
                "random_token_sequences": 1,
                "tokenizer_matches": tokenizer_ok,
            },
            "tokenizer_bos": {"model_expects_bos": expects_bos, "tokenizer_adds_bos": adds_bos},
            "versions": library_versions(),
        }
        # published with the checkpoint: no absolute local paths (relative to it, or hashed)
        info = portable_paths(info, out)
        write_json(tmp / EXPORT_INFO_NAME, info)
        (tmp / "README.md").write_text(model_card(info, report=report), encoding="utf-8")
    return result
