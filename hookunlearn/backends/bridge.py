"""The ``bridge`` backend: TransformerLens's `TransformerBridge` on the Hugging Face module itself.

Follows TransformerLens 3.9's ``TransformerBridge.boot_transformers`` (the model class of
TransformerLens 4): the ``transformers`` model runs unchanged, with TransformerLens hook names
(``blocks.{L}.hook_resid_post``, ...) on its components, so every architecture the bridge has an
adapter for opens without a conversion of ours, and the export writes the module's own weights.

What is ours (choices the bridge leaves open, each checked by tests against the ``hooked`` backend):

- **Raw weights only.** SAELens SAEs on these models are trained on unprocessed activations, and
  the bridge's ``process_weights`` would rewrite the module that export writes; any weight
  processing other than ``none`` is refused here (use ``--backend hooked`` for it).
- **Tensors by their Hugging Face names.** The trainer edits the module's own parameters, named as
  in the exported checkpoint (``model.layers.2.mlp.down_proj.weight``; the bridge's
  ``._original_component`` segments stripped, as LIBRARY_NOTES measured). TransformerLens names
  (``mlp.W_out``, ``mlp.W_in``, ``mlp.W_gate``, ``attn.W_O`` and the ``b_`` biases) pick them;
  methods see them in TransformerLens's orientation (an ``nn.Linear`` weight transposed, so the
  residual stream is the last axis of a writing weight; ``attn.W_O`` as ``[n_heads * d_head,
  d_model]``).
- **A slice of blocks without the layers below.** The bridge has no ``start_at_layer`` (the HF
  model owns its layer loop), so `prefix` records what the HF model hands each block (rotary
  tables, masks, positions: functions of the batch shape only, since hookunlearn feeds
  right-padded tokens without an attention mask, like `HookedTransformer`) while it runs the
  layers below, and `run_blocks` calls the blocks itself with those inputs. A block above the
  prefix gets the inputs of a prefix block of the same ``layer_types`` entry (sliding vs full
  attention); when the prefix has none of that type, the no-grad prefix pass runs on to that
  block once to record them.
"""

from __future__ import annotations

import copy
import json
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from jaxtyping import Float, Int
from torch import Tensor
from transformer_lens.factories.architecture_adapter_factory import SUPPORTED_ARCHITECTURES
from transformer_lens.model_bridge import TransformerBridge
from transformers import AutoConfig, AutoModelForCausalLM, PretrainedConfig
from transformers.cache_utils import Cache
from transformers.pytorch_utils import Conv1D

from hookunlearn.errors import HookunlearnError, ModelLoadError
from hookunlearn.processing import WeightProcessing

NAME = "bridge"

_ORIGINAL = re.compile(r"\._original_component")


@dataclass(frozen=True)
class TestedArchitecture:
    """One HF ``model_type`` that the test suite runs through select -> build -> unlearn -> export -> eval."""

    model_type: str
    hf_class: str
    family: str
    status: str = "passes"
    """``passes``, or why it does not (the test is an xfail with this reason)."""
    hooked: bool = False
    """Whether the ``hooked`` backend supports it too."""


TESTED_ARCHITECTURES: dict[str, TestedArchitecture] = {arch.model_type: arch for arch in (
    TestedArchitecture("gpt2", "GPT2LMHeadModel", "GPT-2 (LayerNorm, learned positions, Conv1D)", hooked=True),
    TestedArchitecture("llama", "LlamaForCausalLM", "Llama 2 (RMSNorm, rotary, gated MLP, grouped KV)", hooked=True),
    TestedArchitecture("llama3", "LlamaForCausalLM", "Llama 3.x with its rotary scaling (rope_type llama3)", hooked=True),
    TestedArchitecture("mistral", "MistralForCausalLM", "Mistral (sliding window)", hooked=True),
    TestedArchitecture("qwen2", "Qwen2ForCausalLM", "Qwen2 (QKV biases)", hooked=True),
    TestedArchitecture("gemma2", "Gemma2ForCausalLM", "Gemma-2 (soft caps, local/global layers, sandwich norms)", hooked=True),
    TestedArchitecture("qwen3", "Qwen3ForCausalLM", "Qwen3 (QK norm)"),
    TestedArchitecture("gemma3_text", "Gemma3ForCausalLM", "Gemma-3 text (QK norm, local/global rotary bases)"),
    TestedArchitecture("phi3", "Phi3ForCausalLM", "Phi-3 (fused QKV and gate/up projections)"),
    TestedArchitecture("olmo2", "Olmo2ForCausalLM", "OLMo-2 (post-norms, QK norm)"),
    TestedArchitecture("granite", "GraniteForCausalLM", "Granite (residual and logit multipliers)"),
    TestedArchitecture("stablelm", "StableLmForCausalLM", "StableLM (LayerNorm, partial rotary)"),
)}  # fmt: skip
"""What ``--backend bridge`` is tested on (keys: the test matrix; ``llama3`` is ``llama`` with
Llama-3 rotary scaling). Other architectures with a TransformerLens bridge adapter load too,
untested; `bridge_architectures` lists them all."""


def bridge_architectures() -> tuple[str, ...]:
    """Every HF architecture class TransformerLens 3.9's bridge has an adapter for."""
    return tuple(sorted(SUPPORTED_ARCHITECTURES))


def supports_processing() -> bool:
    """The bridge runs the HF weights as they are (see the module docstring)."""
    return False


# ---------------------------------------------------------------------------------------------
# Loading
# ---------------------------------------------------------------------------------------------


def load(
    path: Path,
    device: torch.device,
    dtype: torch.dtype,
    requested: WeightProcessing,
    trust_remote_code: bool,
    device_map: str | dict[str, Any] | None = None,
) -> tuple[TransformerBridge, str, str]:
    """Boot a local HF checkpoint directory; returns (bridge, model_type, config fingerprint).

    ``device_map`` (``auto``, ``balanced``, ... or a dict) goes to ``transformers``'
    ``from_pretrained`` through ``boot_transformers`` (accelerate places the layers; ``device`` is
    then not passed: the two are exclusive there)."""
    from hookunlearn.models import _load_tokenizer, quiet_libraries

    label = f"model directory '{path}'"
    if requested != WeightProcessing.parse("none"):
        raise ModelLoadError(
            f"{label}: the bridge backend runs the Hugging Face weights unprocessed, but weight "
            f"processing {requested.describe()} was asked for; use processing 'none', or --backend hooked."
        )
    config = _read_config(path, trust_remote_code)
    classes = list(getattr(config, "architectures", None) or [])
    supported = [name for name in classes if name in SUPPORTED_ARCHITECTURES]
    if not supported:
        raise ModelLoadError(
            f"{label}: architecture {', '.join(classes) or '(none in config.json)'} has no TransformerLens "
            f"bridge adapter (TransformerLens 3.9 has {len(SUPPORTED_ARCHITECTURES)}, e.g. "
            "LlamaForCausalLM, Qwen3ForCausalLM, Gemma3ForCausalLM); use a supported checkpoint."
        )
    tokenizer = _load_tokenizer(path, trust_remote_code)
    try:
        with quiet_libraries():
            placement: dict[str, Any] = (
                {"device": str(device)} if device_map is None else {"device_map": device_map}
            )
            bridge = TransformerBridge.boot_transformers(
                str(path),
                **placement,
                dtype=dtype,
                tokenizer=tokenizer,
                trust_remote_code=trust_remote_code,
            )
    except Exception as exc:  # the bridge and transformers raise many types for a bad checkpoint
        raise ModelLoadError(
            f"{label}: the TransformerLens bridge could not boot it ({type(exc).__name__}: {exc}). "
            "Check the checkpoint loads with transformers, or use --backend hooked."
        ) from exc
    bridge.eval()
    return bridge, str(config.model_type), _fingerprint(config)


def _read_config(path: Path, trust_remote_code: bool) -> PretrainedConfig:
    if not (path / "config.json").is_file():
        raise ModelLoadError(
            f"model directory '{path}' has no config.json, so it is not a Hugging Face checkpoint. "
            "Point at the directory that save_pretrained wrote."
        )
    try:
        return AutoConfig.from_pretrained(path, local_files_only=True, trust_remote_code=trust_remote_code)
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise ModelLoadError(f"model directory '{path}': could not read config.json: {exc}") from exc


_UNFINGERPRINTED = {
    "_name_or_path", "architectures", "dtype", "torch_dtype", "transformers_version", "bos_token_id",
    "eos_token_id", "pad_token_id", "use_cache", "output_attentions", "output_hidden_states",
    "return_dict", "tie_word_embeddings", "attn_implementation", "_attn_implementation_autoset",
}  # fmt: skip


def _fingerprint(config: PretrainedConfig) -> str:
    """The ``hooked`` backend's fingerprint where it supports the architecture (so artifacts move
    between backends); else a hash of the config's architecture-defining fields."""
    import hashlib

    from hookunlearn.models import config_fingerprint, hooked_config_from_hf

    try:
        return config_fingerprint(hooked_config_from_hf(config, device="cpu"))
    except HookunlearnError:
        pass
    fields = {key: value for key, value in config.to_dict().items() if key not in _UNFINGERPRINTED}
    canonical = json.dumps(fields, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(canonical.encode("utf-8")).hexdigest()[:16]


def n_layers(model: TransformerBridge) -> int:
    return len(model.blocks)


# ---------------------------------------------------------------------------------------------
# Placement (a device_map)
# ---------------------------------------------------------------------------------------------


def device_count(model: TransformerBridge) -> int:
    """Distinct devices of the realised ``hf_device_map`` (1 without one)."""
    mapping = getattr(model.original_model, "hf_device_map", None) or {}
    return max(1, len({str(value) for value in mapping.values()}))


def multi_device(model: TransformerBridge) -> bool:
    """Whether the module's weights sit on more than one device (looked up each time: a later
    ``.to()`` changes the answer)."""
    devices = set()
    for param in model.parameters():
        devices.add(param.device)
        if len(devices) > 1:
            return True
    return False


def block_device(model: TransformerBridge, index: int) -> torch.device:
    """The device block ``index``'s weights are on."""
    return next(model.blocks[index].parameters()).device


def hook_device(model: TransformerBridge, hook_name: str) -> torch.device:
    """Where the activation at ``hook_name`` is computed: the hook's block's device (the first
    block's for hooks below the blocks, the last's above; ``hook_resid_pre`` of block L is seen
    before the block, on the device of block L - 1, and of block 0 on the embedding's)."""
    from hookunlearn.hooks import hook_layer

    if not multi_device(model):
        return next(model.parameters()).device
    layer = hook_layer(hook_name)
    if layer is None:
        layer = len(model.blocks) - 1 if hook_name.startswith(("ln_final", "unembed")) else 0
    elif hook_name.endswith("hook_resid_pre"):
        if layer == 0:
            return next(model.parameters()).device  # the embedding's, the module's first weights
        layer -= 1
    return block_device(model, layer)


def _to_device(value: Any, device: torch.device) -> Any:
    """A recorded block input (tensors, tuples of them: rotary tables) on ``device``."""
    if isinstance(value, Tensor):
        return value.to(device)
    if isinstance(value, tuple):
        return tuple(_to_device(item, device) for item in value)
    return value


def _block_call(
    model: TransformerBridge, index: int, resid: Tensor, rest: tuple[Any, ...], named: dict[str, Any]
) -> Tensor:
    """Block ``index`` on ``resid`` with its recorded inputs; on a model spread over several devices
    the residual stream and those inputs first move to the block's device (accelerate's hooks on
    the HF layer would move them too; the bridge's own hook points run before those)."""
    if multi_device(model):
        device = block_device(model, index)
        resid = resid.to(device)
        rest = tuple(_to_device(value, device) for value in rest)
        named = {key: _to_device(value, device) for key, value in named.items()}
    return _hidden(model.blocks[index](resid, *rest, **named))


# ---------------------------------------------------------------------------------------------
# The module's own tensors, by HF name
# ---------------------------------------------------------------------------------------------


def hf_name(name: str) -> str:
    """A bridge parameter name with the ``._original_component`` segments removed (its HF name)."""
    return _ORIGINAL.sub("", name)


def _hf_keys(model: TransformerBridge) -> frozenset[str]:
    """The state-dict names a fresh HF model of this config has (the bridge adds split copies)."""
    cached = getattr(model, "_hookunlearn_hf_keys", None)
    if cached is None:
        config = copy.deepcopy(model.original_model.config)
        with torch.device("meta"):
            fresh = AutoModelForCausalLM.from_config(config)
        cached = frozenset(fresh.state_dict())
        object.__setattr__(model, "_hookunlearn_hf_keys", cached)
    return cached


def state_dict(model: TransformerBridge) -> dict[str, Tensor]:
    """The HF module's tensors under their HF names (what export writes and the trainer edits)."""
    keys = _hf_keys(model)
    out: dict[str, Tensor] = {}
    for name, tensor in model.original_model.state_dict().items():
        clean = hf_name(name)
        if clean in keys:
            out[clean] = tensor
    return out


def _parameters_by_hf_name(model: TransformerBridge) -> dict[str, torch.nn.Parameter]:
    keys = _hf_keys(model)
    return {
        hf_name(name): param
        for name, param in model.original_model.named_parameters()
        if hf_name(name) in keys
    }


# ---------------------------------------------------------------------------------------------
# The trainer's view
# ---------------------------------------------------------------------------------------------

# TransformerLens parameter name -> (bridge component inside a block, weight or bias)
_TL_NAMES: dict[str, tuple[str, str]] = {
    "mlp.W_out": ("mlp.out", "weight"),
    "mlp.b_out": ("mlp.out", "bias"),
    "mlp.W_in": ("mlp.in", "weight"),
    "mlp.b_in": ("mlp.in", "bias"),
    "mlp.W_gate": ("mlp.gate", "weight"),
    "attn.W_O": ("attn.o", "weight"),
    "attn.b_O": ("attn.o", "bias"),
}


def trainable_parameters(
    model: TransformerBridge, layers: Sequence[int], names: Sequence[str]
) -> tuple[dict[str, torch.nn.Parameter], frozenset[str]]:
    """The HF parameters behind ``blocks.{i}.{name}`` (TransformerLens names), keyed by HF name, and
    the names whose TransformerLens view is a transpose (``nn.Linear`` weights)."""
    by_id = {id(param): name for name, param in _parameters_by_hf_name(model).items()}
    chosen: dict[str, torch.nn.Parameter] = {}
    transposed: set[str] = set()
    for layer in layers:
        if not 0 <= layer < len(model.blocks):
            raise HookunlearnError(
                f"trainable layer {layer} does not exist (the model has {len(model.blocks)})."
            )
        for name in names:
            if name not in _TL_NAMES:
                raise HookunlearnError(
                    f"parameter 'blocks.{layer}.{name}': the bridge backend trains {', '.join(_TL_NAMES)}; "
                    "choose one of them, or use --backend hooked."
                )
            component_path, attribute = _TL_NAMES[name]
            module = _component(model.blocks[layer], component_path)
            original = getattr(module, "original_component", None) if module is not None else None
            param = getattr(original, attribute, None) if original is not None else None
            if not isinstance(param, torch.nn.Parameter):
                raise HookunlearnError(
                    f"parameter 'blocks.{layer}.{name}' does not exist in this {model.cfg.architecture} "
                    "bridge (no such component or bias); choose another trainable name."
                )
            full = by_id.get(id(param))
            if full is None:
                raise HookunlearnError(
                    f"parameter 'blocks.{layer}.{name}' is a copy the bridge made for this "
                    f"{model.cfg.architecture} (not a tensor of the Hugging Face checkpoint), so an edit "
                    "of it could not be exported; train another parameter, or use --backend hooked."
                )
            chosen[full] = param
            if attribute == "weight" and not isinstance(original, Conv1D) and param.ndim == 2:
                transposed.add(full)
    return chosen, frozenset(transposed)


def _component(block: torch.nn.Module, path: str) -> torch.nn.Module | None:
    module: Any = block
    for part in path.split("."):
        module = getattr(module, part, None) if module is not None else None
    return module if isinstance(module, torch.nn.Module) else None


# --- the blocks' inputs, recorded during the prefix ------------------------------------------


def _layer_types(model: TransformerBridge) -> list[str]:
    types = getattr(model.original_model.config, "layer_types", None)
    count = len(model.blocks)
    if isinstance(types, list | tuple) and len(types) == count:
        return [str(kind) for kind in types]
    return ["all"] * count


def _clean(value: Any) -> Any:
    """No KV cache in a recorded input: a block called again must not append to it."""
    return None if isinstance(value, Cache) else value


def _recorded(
    model: TransformerBridge,
) -> dict[tuple[int, int], dict[int, tuple[tuple[Any, ...], dict[str, Any]]]]:
    store = getattr(model, "_hookunlearn_block_inputs", None)
    if store is None:
        store = {}
        object.__setattr__(model, "_hookunlearn_block_inputs", store)
    return store


def prefix(
    model: TransformerBridge, tokens: Int[Tensor, "batch pos"], stop_at_layer: int, through: int | None = None
) -> Float[Tensor, "batch pos d_model"]:
    """The residual stream entering block ``stop_at_layer``, recording the inputs blocks
    ``stop_at_layer .. through`` need for `run_blocks` (see the module docstring)."""
    count = len(model.blocks)
    deepest = min(count - 1, stop_at_layer if through is None else through)
    types = _layer_types(model)
    reach = stop_at_layer
    for layer in range(stop_at_layer, deepest + 1):
        if types[layer] not in types[: stop_at_layer + 1]:
            reach = max(reach, layer)  # no prefix block of this kind: run on to it, once
    shape = (int(tokens.shape[0]), int(tokens.shape[1]))
    inputs: dict[int, tuple[tuple[Any, ...], dict[str, Any]]] = {}
    entering: list[Tensor] = []

    def record(module: torch.nn.Module, args: tuple[Any, ...], kwargs: dict[str, Any], index: int) -> None:
        hidden = args[0] if args else kwargs.get("hidden_states")
        rest = tuple(_clean(value) for value in args[1:])
        named = {key: _clean(value) for key, value in kwargs.items() if key != "hidden_states"}
        if "use_cache" in named:
            named["use_cache"] = False
        inputs[index] = (rest, named)
        if index == stop_at_layer and isinstance(hidden, Tensor):
            entering.append(hidden)

    handles = [
        model.blocks[index].register_forward_pre_hook(
            lambda module, args, kwargs, index=index: record(module, args, kwargs, index), with_kwargs=True
        )
        for index in range(min(reach, count - 1) + 1)
    ]
    try:
        out = model(tokens.to(model.cfg.device), stop_at_layer=reach, use_cache=False)
    finally:
        for handle in handles:
            handle.remove()
    store = _recorded(model)
    if len(store) > 16:
        store.clear()
    store[shape] = {**store.get(shape, {}), **inputs}
    return out if reach == stop_at_layer else entering[0]


def _inputs_for(
    model: TransformerBridge, shape: tuple[int, int], layer: int
) -> tuple[tuple[Any, ...], dict[str, Any]]:
    recorded = _recorded(model).get(shape, {})
    if layer in recorded:
        return recorded[layer]
    types = _layer_types(model)
    for other in sorted(recorded, reverse=True):
        if types[other] == types[layer]:
            return recorded[other]
    raise HookunlearnError(
        f"bridge: no recorded inputs for block {layer} at batch shape {shape}; call prefix() on "
        "this batch first (a bug in the caller)."
    )


def _hidden(output: Any) -> Tensor:
    return output[0] if isinstance(output, tuple) else output


def run_blocks(
    model: TransformerBridge, resid: Float[Tensor, "batch pos d_model"], start: int, stop: int
) -> Float[Tensor, "batch pos d_model"]:
    """Blocks ``start .. stop - 1`` on ``resid`` (the residual stream entering block ``start``)."""
    shape = (int(resid.shape[0]), int(resid.shape[1]))
    for layer in range(start, stop):
        rest, named = _inputs_for(model, shape, layer)
        resid = _block_call(model, layer, resid, rest, named)
    return resid


def block_overrides(model: TransformerBridge, index: int, tensors: Mapping[str, Tensor]) -> dict[str, Tensor]:
    """The entries of ``tensors`` (HF names) that belong to block ``index``."""
    parameters = _parameters_by_hf_name(model)
    inside = {id(param) for param in model.blocks[index].parameters()}
    return {
        name: value
        for name, value in tensors.items()
        if name in parameters and id(parameters[name]) in inside
    }


@torch.no_grad()
def run_block_with(
    model: TransformerBridge,
    index: int,
    overrides: Mapping[str, Tensor],
    resid: Float[Tensor, "batch pos d_model"],
) -> Float[Tensor, "batch pos d_model"]:
    """Block ``index`` on ``resid`` with ``overrides`` (from `block_overrides`) in place of its
    tensors, without grad (the frozen reference). The tensors' storage is swapped and restored:
    `torch.func.functional_call` on a bridge block leaves its components computing with
    non-trainable copies afterwards (measured: no gradient reached the parameters)."""
    parameters = _parameters_by_hf_name(model)
    saved = {name: parameters[name].data for name in overrides}
    try:
        for name, value in overrides.items():
            parameters[name].data = value
        rest, named = _inputs_for(model, (int(resid.shape[0]), int(resid.shape[1])), index)
        return _block_call(model, index, resid, rest, named)
    finally:
        for name, value in saved.items():
            parameters[name].data = value


# ---------------------------------------------------------------------------------------------
# Evaluation: log-probs at chosen positions
# ---------------------------------------------------------------------------------------------


def log_probs_at(
    model: TransformerBridge,
    tokens: Int[Tensor, "batch pos"],
    rows: Int[Tensor, " n"],
    positions: Int[Tensor, " n"],
) -> Float[Tensor, "n vocab"]:
    """Log-softmax of the logits at ``(rows[i], positions[i])``: the full forward, then picked. The
    HF head can do more than norm + unembedding (Gemma's soft cap, Granite's logit scaling), so the
    hooked backend's norm-and-unembed-the-picked-rows shortcut is not taken here."""
    logits = model(tokens.to(model.cfg.device), return_type="logits")
    device = logits.device
    return torch.log_softmax(logits[rows.to(device), positions.to(device)].float(), dim=-1)


# ---------------------------------------------------------------------------------------------
# Export: the module's own weights
# ---------------------------------------------------------------------------------------------


@dataclass
class ExportParts:
    """What `hookunlearn.export.export_model` writes for a bridge model."""

    tensors: dict[str, Tensor]
    config: PretrainedConfig
    model_type: str
    hf_class: str
    embedding_name: str
    tied: bool
    notes: list[str]


def export_parts(model: TransformerBridge, label: str) -> ExportParts:
    """The HF module's state dict (``._original_component`` stripped, the bridge's own split copies
    left out) and its config, tied only when ``lm_head`` still equals the embedding bit for bit."""
    from hookunlearn.export import ExportError

    hf = model.original_model
    tensors = {name: tensor.detach().to("cpu").contiguous() for name, tensor in state_dict(model).items()}
    parameters = _parameters_by_hf_name(model)
    embedding = hf.get_input_embeddings().weight
    embedding_name = next((name for name, param in parameters.items() if param is embedding), None)
    if embedding_name is None:
        raise ExportError(f"{label}: could not find the input embedding among the module's tensors.")
    config = copy.deepcopy(hf.config)
    head = tensors.get("lm_head.weight")
    tied = head is None or torch.equal(head, tensors[embedding_name])
    if tied:
        tensors.pop("lm_head.weight", None)
    config.tie_word_embeddings = tied
    config.dtype = next(model.parameters()).dtype
    hf_class = (list(getattr(config, "architectures", None) or []) or [type(hf).__name__])[0]
    notes = [
        "bridge backend: the Hugging Face module's own tensors (._original_component stripped)",
        f"tie_word_embeddings={tied} (lm_head {'equals' if tied else 'differs from'} the embedding)",
    ]
    return ExportParts(tensors, config, str(config.model_type), hf_class, embedding_name, tied, notes)


__all__ = [
    "NAME",
    "TESTED_ARCHITECTURES",
    "ExportParts",
    "TestedArchitecture",
    "block_overrides",
    "block_device",
    "bridge_architectures",
    "device_count",
    "export_parts",
    "hook_device",
    "hf_name",
    "load",
    "log_probs_at",
    "multi_device",
    "prefix",
    "run_block_with",
    "run_blocks",
    "state_dict",
    "supports_processing",
    "trainable_parameters",
]
