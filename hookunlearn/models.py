"""Models: from a model spec to a TransformerLens `HookedTransformer`, with a record of how.

A *model spec* is either

- a local Hugging Face checkpoint directory (``config.json``, weights, tokenizer files) of a
  GPT-2, Llama, Mistral, Qwen2 or Gemma-2 model, loaded fully offline. The architecture comes
  from ``config.json``'s ``model_type``, never from the directory's name (TransformerLens's own
  loader guesses from names containing "llama", "gemma", ... and can pick the wrong config); or
- a TransformerLens official model name or alias (``gpt2``, ``google/gemma-2-2b``, ...), loaded
  with ``HookedTransformer.from_pretrained`` from the Hugging Face Hub or its local cache.

``load_model`` attaches a `ModelInfo` to the model (``model.hookunlearn_info``): where it came
from, which weight processing was applied, and a fingerprint of its architecture that later
steps use to refuse artifacts made for another model::

    model = load_model("checkpoints/tiny-llama", device="cpu", dtype="bf16", processing="none")
    model_info(model).config_fingerprint  # 16 hex chars, the same wherever the files live

What each architecture needs (its HF config -> TransformerLens config, TransformerLens's weight
conversion) lives in `hookunlearn.architectures`; this module owns specs, loading, devices and
dtypes, fingerprints and processing records.
"""

from __future__ import annotations

import contextlib
import difflib
import gc
import hashlib
import io
import json
import os
import re
import warnings
from collections.abc import Iterator, Mapping
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

import httpx
import huggingface_hub
import numpy as np
import torch
import transformers
from huggingface_hub.errors import EntryNotFoundError, GatedRepoError
from transformer_lens import HookedTransformer, HookedTransformerConfig
from transformer_lens.loading_from_pretrained import (
    NEED_REMOTE_CODE_MODELS,
    NON_HF_HOSTED_MODEL_NAMES,
    OFFICIAL_MODEL_NAMES,
    make_model_alias_map,
)
from transformer_lens.supported_models import MODEL_ALIASES
from transformer_lens.utilities.architectures import POST_NORM_ARCHITECTURES
from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer, PretrainedConfig, PreTrainedModel

from hookunlearn.architectures import SUPPORTED_MODEL_TYPES, get_architecture, model_type_for_tl
from hookunlearn.architectures.base import _hf_get, _UnsupportedFeature
from hookunlearn.backends import check_backend, get_backend
from hookunlearn.backends.types import LanguageModel
from hookunlearn.dtypes import dtype_by_name
from hookunlearn.errors import ModelLoadError
from hookunlearn.processing import WeightProcessing

__all__ = [
    "SUPPORTED_MODEL_TYPES",
    "ModelInfo",
    "config_fingerprint",
    "effective_processing",
    "hooked_config_from_hf",
    "check_placement",
    "load_model",
    "model_info",
    "resolve_device",
    "resolve_dtype",
]

_MODEL_DTYPES = (torch.float32, torch.bfloat16, torch.float16)
"""The dtypes a model may be loaded in (names and aliases: `hookunlearn.dtypes`)."""

_DEVICE_CHOICES = "'auto', 'cpu', 'cuda', 'cuda:N' or 'mps'"

_WEIGHT_FILE_PATTERNS = ("*.safetensors", "pytorch_model*.bin", "*.safetensors.index.json")

# Fields of a HookedTransformerConfig that define what the network computes. Device, dtype,
# seed, names and tokenizer settings are left out on purpose.
FINGERPRINT_FIELDS: tuple[str, ...] = (
    "original_architecture",
    "n_layers", "d_model", "n_heads", "d_head", "d_mlp", "d_vocab", "d_vocab_out", "n_ctx",
    "n_key_value_heads", "act_fn", "gated_mlp", "attn_only", "parallel_attn_mlp",
    "normalization_type", "final_rms", "eps", "use_normalization_before_and_after",
    "post_embedding_ln", "positional_embedding_type", "rotary_dim", "rotary_base",
    "rotary_base_local", "rotary_adjacent_pairs", "use_NTK_by_parts_rope",
    "NTK_by_parts_low_freq_factor", "NTK_by_parts_high_freq_factor", "NTK_by_parts_factor",
    "NTK_original_ctx_len", "use_attn_scale", "attn_scale", "scale_attn_by_inverse_layer_idx",
    "use_local_attn", "window_size", "attn_types", "attn_scores_soft_cap",
    "output_logits_soft_cap", "use_qk_norm", "num_experts", "experts_per_token",
    "attention_dir",
)  # fmt: skip


# ---------------------------------------------------------------------------------------------
# What was loaded
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ModelInfo:
    """How a model was loaded; ``to_dict()`` is what run manifests store."""

    spec: str
    """The spec as given (a path as typed, or a model name/alias)."""
    name: str
    """Absolute checkpoint path (local), official TransformerLens name (official), or ``cfg.model_name``."""
    source: str
    """``"local"`` (checkpoint directory), ``"official"`` (TransformerLens name) or ``"in-memory"``."""
    architecture: str
    """``gpt2``, ``llama``, ``mistral``, ``qwen2``, ``gemma2``; else TransformerLens's architecture name."""
    hf_model_type: str | None
    """``model_type`` of the HF config, where known."""
    processing: WeightProcessing
    """The weight processing actually applied (flags TransformerLens skips for this architecture are off)."""
    requested_processing: WeightProcessing
    """The weight processing asked for."""
    device: str
    """Device of the weights (``cpu``, ``cuda:0``, ...)."""
    dtype: str
    """``float32``, ``bfloat16`` or ``float16``."""
    config_fingerprint: str
    """`config_fingerprint` of the model's config: equal for the same architecture and sizes."""
    n_layers: int
    d_model: int
    backend: str = "hooked"
    """The backend that runs it (`hookunlearn.backends`): ``hooked`` (HookedTransformer) or ``bridge``."""
    n_devices: int = 1
    """Devices the blocks are spread over (``hooked``: ``n_devices``; ``bridge``: the realised device map's)."""
    device_map: str | None = None
    """The bridge's ``device_map`` as asked for (``auto``, ``balanced``, a JSON file's path), else None."""
    fused_kernels: bool = False
    """Whether `hookunlearn.kernels.fuse_kernels` swapped fused kernels in (``hooked`` only)."""

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dict; processing flags as nested dicts."""
        out = asdict(self)
        out["processing"] = self.processing.to_dict()
        out["requested_processing"] = self.requested_processing.to_dict()
        return out


# ---------------------------------------------------------------------------------------------
# Options
# ---------------------------------------------------------------------------------------------


def resolve_device(device: str | torch.device) -> torch.device:
    """``"auto"`` (CUDA if available, else CPU), ``"cpu"``, ``"cuda"``, ``"cuda:N"`` or ``"mps"``.

    Raises `ModelLoadError` for anything else, or for an accelerator that is not available here.
    """
    text = str(device).strip().lower()
    if text == "auto":
        return torch.device("cuda") if torch.cuda.is_available() else torch.device("cpu")
    if text == "cpu":
        return torch.device("cpu")
    match = re.fullmatch(r"cuda(?::(\d+))?", text)
    if match:
        if not torch.cuda.is_available():
            raise ModelLoadError(
                f"device {str(device)!r}: CUDA is not available on this machine "
                f"(torch {torch.__version__}, built with CUDA: {torch.version.cuda or 'no'}). "
                "Use device 'cpu', or 'auto' to take CUDA only when present."
            )
        index = match.group(1)
        if index is not None and int(index) >= torch.cuda.device_count():
            raise ModelLoadError(
                f"device {str(device)!r}: there are only {torch.cuda.device_count()} CUDA device(s) "
                f"(cuda:0..cuda:{torch.cuda.device_count() - 1})."
            )
        return torch.device(text)
    if text == "mps":
        if not torch.backends.mps.is_available():
            raise ModelLoadError(
                f"device {str(device)!r}: Apple MPS is not available on this machine. Use cpu."
            )
        return torch.device("mps")
    raise ModelLoadError(f"device {str(device)!r} is not a device name; use {_DEVICE_CHOICES}.")


def resolve_dtype(dtype: str | torch.dtype) -> torch.dtype:
    """``float32``/``fp32``, ``bfloat16``/``bf16`` or ``float16``/``fp16`` (or the torch dtype itself).

    Raises `ModelLoadError` listing the choices for anything else.
    """
    parsed = dtype if isinstance(dtype, torch.dtype) else dtype_by_name(dtype)
    if parsed in _MODEL_DTYPES:
        return parsed
    raise ModelLoadError(
        f"dtype {str(dtype)!r} is not supported; use one of: float32 (fp32), bfloat16 (bf16), float16 (fp16)."
    )


def _dtype_name(dtype: torch.dtype) -> str:
    return str(dtype).removeprefix("torch.")


DEVICE_MAP_CHOICES: tuple[str, ...] = ("auto", "balanced", "balanced_low_0", "sequential")
"""``device_map`` strings passed to ``transformers``/accelerate as they are (else: a JSON file)."""


def check_placement(
    *,
    backend: str = "hooked",
    device: str | torch.device = "auto",
    n_devices: int = 1,
    device_map: str | Mapping[str, Any] | None = None,
) -> str | dict[str, Any] | None:
    """Check a multi-device placement before anything loads; returns the ``device_map`` to pass
    (a choice of `DEVICE_MAP_CHOICES`, a dict read from a JSON file, or None).

    ``n_devices`` (``hooked`` only) needs CUDA and that many visible devices; ``device_map``
    (``bridge`` only) leaves ``device`` at ``auto``; neither combines with torchrun (data
    parallelism keeps one whole model per process). Raises `ModelLoadError`.
    """
    from hookunlearn import distributed

    if isinstance(n_devices, bool) or not isinstance(n_devices, int) or n_devices < 1:
        raise ModelLoadError(f"--n-devices {n_devices!r}: give a whole number >= 1.")
    if n_devices > 1 and backend != "hooked":
        raise ModelLoadError(
            f"--n-devices {n_devices} is the hooked backend's placement; with --backend {backend} "
            "use --device-map auto (or balanced, or a JSON file)."
        )
    if device_map is not None and backend != "bridge":
        raise ModelLoadError(
            f"--device-map is the bridge backend's placement (transformers/accelerate); with --backend "
            f"{backend} use --n-devices N."
        )
    if (n_devices > 1 or device_map is not None) and distributed.launched():
        what = f"--n-devices {n_devices}" if n_devices > 1 else "--device-map"
        raise ModelLoadError(
            f"{what} under torchrun: data parallelism keeps a whole model in each process; "
            "run one process without torchrun to spread a model over several GPUs."
        )
    if n_devices > 1:
        resolved = resolve_device(device)
        if resolved.type != "cuda":
            raise ModelLoadError(
                f"--n-devices {n_devices} spreads the blocks over CUDA devices, but the device is "
                f"{str(device)!r} ({resolved.type}); use --device cuda (or auto on a machine with GPUs)."
            )
        first = resolved.index or 0
        if first + n_devices > torch.cuda.device_count():
            raise ModelLoadError(
                f"--n-devices {n_devices} from {resolved}: only {torch.cuda.device_count()} CUDA device(s) "
                f"are visible (cuda:0..cuda:{torch.cuda.device_count() - 1}); lower --n-devices."
            )
    if device_map is None:
        return None
    if str(device).strip().lower() != "auto":
        raise ModelLoadError(
            f"--device-map places the model itself; leave --device at auto (it is {str(device)!r})."
        )
    return _parse_device_map(device_map)


def _parse_device_map(device_map: str | Mapping[str, Any]) -> str | dict[str, Any]:
    if isinstance(device_map, Mapping):
        return dict(device_map)
    text = str(device_map).strip()
    if text in DEVICE_MAP_CHOICES:
        return text
    path = Path(text).expanduser()
    if not path.is_file():
        raise ModelLoadError(
            f"--device-map {text!r} is neither one of {', '.join(DEVICE_MAP_CHOICES)} nor a JSON file."
        )
    try:
        mapping = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ModelLoadError(f"--device-map {text!r}: not readable JSON ({exc}).") from None
    if not isinstance(mapping, dict) or not all(
        isinstance(key, str) and isinstance(value, int | str) and not isinstance(value, bool)
        for key, value in mapping.items()
    ):
        raise ModelLoadError(
            f"--device-map {text!r}: give a JSON object of module name -> device "
            '(e.g. {"model.embed_tokens": 0, "model.layers.0": 0, ..., "lm_head": 1}).'
        )
    return mapping


# ---------------------------------------------------------------------------------------------
# Config fingerprint and processing
# ---------------------------------------------------------------------------------------------


def _base_normalization(normalization_type: str | None) -> str | None:
    """``LNPre``/``RMSPre`` are what ``fold_ln`` turns ``LN``/``RMS`` into: the same architecture."""
    if normalization_type in ("LNPre", "RMSPre"):
        return normalization_type.removesuffix("Pre")
    return normalization_type


def _jsonable(value: Any) -> Any:
    if isinstance(value, bool | str) or value is None:
        return value
    if isinstance(value, int | np.integer):
        return int(value)
    if isinstance(value, float | np.floating):
        number = float(value)
        # Integral floats (rotary_base 10000 vs 10000.0) must hash alike.
        return int(number) if number.is_integer() else number
    if isinstance(value, list | tuple):
        return [_jsonable(item) for item in value]
    if isinstance(value, Mapping):
        return {str(key): _jsonable(item) for key, item in value.items()}
    return str(value)


def config_fingerprint(cfg: HookedTransformerConfig) -> str:
    """First 16 hex chars of the sha256 of the architecture-defining config fields, as canonical JSON.

    Sizes, activation, normalisation, positional scheme, attention layout, soft caps... but not
    device, dtype, seed, names or weight processing (``LNPre``/``RMSPre`` count as ``LN``/``RMS``).
    Two models with the same fingerprint have interchangeable activations shapes and semantics
    up to their weights; artifacts record it to refuse use with another model.
    """
    fields: dict[str, Any] = {name: getattr(cfg, name, None) for name in FINGERPRINT_FIELDS}
    fields["normalization_type"] = _base_normalization(cfg.normalization_type)
    # Llama-style configs leave n_key_value_heads unset when it equals n_heads.
    fields["n_key_value_heads"] = cfg.n_key_value_heads or cfg.n_heads
    if cfg.positional_embedding_type == "rotary" and fields["rotary_dim"] is None:
        fields["rotary_dim"] = cfg.d_head
    if not cfg.use_attn_scale:
        fields["attn_scale"] = None
    if not cfg.use_local_attn:
        fields["window_size"] = fields["attn_types"] = None
    canonical = json.dumps(_jsonable(fields), sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(canonical.encode("utf-8")).hexdigest()[:16]


def effective_processing(
    cfg: HookedTransformerConfig, requested: WeightProcessing | str | None
) -> WeightProcessing:
    """The processing TransformerLens actually applies when ``requested`` is asked for on ``cfg``.

    Mirrors ``HookedTransformer.from_pretrained``/``ProcessWeights``: ``center_writing_weights``
    only acts on LayerNorm (not RMSNorm) models, ``center_unembed`` is dropped when logits are
    soft-capped (Gemma-2), neither ``fold_ln`` nor centring acts on post-norm architectures or
    shortformer attention. Use it to compare an SAE's expected processing with a model's.
    """
    wanted = WeightProcessing.parse(requested)
    norm = _base_normalization(cfg.normalization_type)
    post_norm = cfg.original_architecture in POST_NORM_ARCHITECTURES
    shortformer = cfg.positional_embedding_type == "shortformer"
    soft_capped = cfg.output_logits_soft_cap is not None and cfg.output_logits_soft_cap > 0
    return WeightProcessing(
        fold_ln=wanted.fold_ln and norm in ("LN", "RMS") and not post_norm and not shortformer,
        center_writing_weights=(
            wanted.center_writing_weights
            and norm == "LN"
            and not cfg.final_rms
            and not post_norm
            and not shortformer
        ),
        center_unembed=wanted.center_unembed and not soft_capped and not shortformer,
        fold_value_biases=wanted.fold_value_biases,
    )


# ---------------------------------------------------------------------------------------------
# HF config -> HookedTransformerConfig (per architecture: hookunlearn.architectures)
# ---------------------------------------------------------------------------------------------


def hooked_config_from_hf(
    hf_config: PretrainedConfig,
    *,
    model_name: str = "custom",
    device: str | torch.device = "cpu",
    dtype: str | torch.dtype = "float32",
) -> HookedTransformerConfig:
    """The `HookedTransformerConfig` for an HF config of a supported ``model_type``, from its fields only.

    Raises `ModelLoadError` for an unsupported ``model_type`` or a feature (biases on Llama,
    rotary scaling other than Llama-3's, an activation TransformerLens lacks, ...) that the
    TransformerLens weight conversion would get silently wrong.
    """
    return _hooked_config(hf_config, model_name, device, dtype, label=f"model {model_name!r}")


def _hooked_config(
    hf_config: PretrainedConfig,
    model_name: str,
    device: str | torch.device,
    dtype: str | torch.dtype,
    label: str,
) -> HookedTransformerConfig:
    model_type = _hf_get(hf_config, "model_type")
    if model_type not in SUPPORTED_MODEL_TYPES:
        raise ModelLoadError(
            f"{label}: model_type {model_type!r} is not supported; "
            f"supported model types: {', '.join(SUPPORTED_MODEL_TYPES)}."
        )
    try:
        fields = get_architecture(model_type).tl_config(hf_config)
    except _UnsupportedFeature as exc:
        raise ModelLoadError(
            f"{label} ({model_type}): its config uses {exc}, which this loader cannot convert "
            "exactly. Use a checkpoint without it."
        ) from None
    fields.update(
        model_name=model_name,
        device=str(resolve_device(device)),
        dtype=resolve_dtype(dtype),
        init_weights=False,  # the weights are loaded next; random init would only cost time
        n_devices=1,
    )
    return HookedTransformerConfig.from_dict(fields)


# ---------------------------------------------------------------------------------------------
# Loading
# ---------------------------------------------------------------------------------------------


@contextlib.contextmanager
def quiet_libraries() -> Iterator[None]:
    """Silence TransformerLens's prints and deprecation notices and HF progress bars, then restore."""
    bars_were_on = transformers.utils.logging.is_progress_bar_enabled()
    transformers.utils.logging.disable_progress_bar()
    try:
        with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()):
            # TL 3.x marks HookedTransformer deprecated in favour of TransformerBridge; we use it on purpose.
            warnings.filterwarnings(
                "ignore", message=r".*HookedTransformer.*deprecated", category=DeprecationWarning
            )
            yield
    finally:
        if bars_were_on:
            transformers.utils.logging.enable_progress_bar()


def load_model(
    spec: str | os.PathLike[str],
    *,
    device: str | torch.device = "auto",
    dtype: str | torch.dtype = "float32",
    processing: WeightProcessing | str | None = None,
    trust_remote_code: bool = False,
    backend: str = "hooked",
    n_devices: int = 1,
    device_map: str | Mapping[str, Any] | None = None,
    fused_kernels: bool = True,
) -> LanguageModel:
    """Load a `HookedTransformer` (or a `TransformerBridge`) from a local HF checkpoint directory or a TransformerLens model name.

    Args:
        spec: ``"world"`` (the embedded world's model), an existing directory holding a GPT-2, Llama, Mistral, Qwen2 or Gemma-2 checkpoint
            (``config.json``, weights, tokenizer; loaded offline, architecture read from
            ``model_type``), else a TransformerLens official model name or alias (downloaded from
            the Hub, or read from its cache; fails at once under ``HF_HUB_OFFLINE=1`` when not cached).
            An existing directory always wins over a model name of the same spelling.
        device: ``auto`` (CUDA if available, else CPU), ``cpu``, ``cuda``, ``cuda:N``, ``mps``.
        dtype: ``float32``, ``bfloat16`` or ``float16`` (``fp32``/``bf16``/``fp16`` also accepted).
            Weight processing always runs in float32; the model is cast afterwards.
        processing: `WeightProcessing`, ``"none"`` (default: raw weights), ``"all"``
            (TransformerLens's defaults) or a comma list of flags. Flags that TransformerLens
            skips for the architecture are recorded as not applied (see `effective_processing`).
        trust_remote_code: passed to ``transformers`` only when True; never turned on by itself.
        backend: ``hooked`` (default: a `HookedTransformer` built by hookunlearn's conversions) or
            ``bridge`` (a `TransformerBridge` on the HF module itself: local directories of any
            architecture TransformerLens's bridge has an adapter for, raw weights only); see
            `hookunlearn.backends`.
        n_devices: ``hooked`` only: spread the blocks over this many CUDA devices from ``device``
            on (TransformerLens's split, `hookunlearn.backends.hooked.place`); 1: one device.
        device_map: ``bridge`` only: ``auto``, ``balanced``, ``balanced_low_0``, ``sequential``, a
            JSON file of module name -> device, or such a dict; handed to ``transformers``'
            ``from_pretrained`` through ``TransformerBridge.boot_transformers`` (``device`` stays ``auto``).
            See docs/performance.md, "A model too large for one GPU", for what is tested.
        fused_kernels: ``hooked`` only: swap torch's fused kernels in for TransformerLens's
            elementwise chains (normalisation while its hook points are free, tanh GELU,
            einops-free attention; `hookunlearn.kernels`): the same function to float round-off,
            faster. False keeps TransformerLens's modules as they are.

    Returns:
        The model in eval mode, with ``model.hookunlearn_info`` set to a `ModelInfo`.

    Raises:
        ModelLoadError: the spec is neither a directory nor a known name, the directory is not a
            supported checkpoint (model_type, missing/corrupt config, weights or tokenizer), the
            model cannot be fetched, or device/dtype are invalid.
    """
    spec_text = os.fspath(spec)
    check_backend(backend)
    mapping = check_placement(backend=backend, device=device, n_devices=n_devices, device_map=device_map)
    torch_device = resolve_device(device)
    torch_dtype = resolve_dtype(dtype)
    requested = WeightProcessing.parse(processing)
    path = Path(spec_text).expanduser()
    from hookunlearn.sources import resolve

    plugin_path = resolve(spec_text, "model")  # `world`, `world:oracle`: the plug-in's errors name the spec
    if plugin_path is not None:
        path = plugin_path
    if backend != "hooked":
        return _load_other_backend(
            spec_text,
            path,
            backend,
            torch_device,
            torch_dtype,
            requested,
            trust_remote_code,
            mapping,
            device_map,
        )
    if path.is_dir():
        model, hf_model_type = _load_local(
            path, torch_device, torch_dtype, requested, trust_remote_code, n_devices
        )
        source, name = "local", str(path.resolve())
    else:
        official = _official_name(spec_text)
        if official is None:
            raise ModelLoadError(_unknown_spec_message(spec_text, path))
        model = _load_official(
            spec_text, official, torch_device, torch_dtype, requested, trust_remote_code, n_devices
        )
        source, name = "official", official
        hf_model_type = None
    model.hookunlearn_info = ModelInfo(
        spec=spec_text,
        name=name,
        source=source,
        architecture=_architecture_name(model.cfg),
        hf_model_type=hf_model_type or model_type_for_tl(model.cfg.original_architecture),
        processing=effective_processing(model.cfg, requested),
        requested_processing=requested,
        device=str(_parameter_device(model)),
        dtype=_dtype_name(torch_dtype),
        config_fingerprint=config_fingerprint(model.cfg),
        n_layers=model.cfg.n_layers,
        d_model=model.cfg.d_model,
        n_devices=n_devices,
        fused_kernels=fused_kernels,
    )
    if fused_kernels:
        from hookunlearn.kernels import fuse_kernels

        fuse_kernels(model)
    return model


def _load_other_backend(
    spec: str,
    path: Path,
    backend: str,
    device: torch.device,
    dtype: torch.dtype,
    requested: WeightProcessing,
    trust_remote_code: bool,
    mapping: str | dict[str, Any] | None = None,
    device_map: str | Mapping[str, Any] | None = None,
) -> LanguageModel:
    """A local checkpoint on a backend other than ``hooked`` (its module loads it)."""
    if not path.is_dir():
        raise ModelLoadError(
            f"model spec {spec!r}: the {backend} backend loads local Hugging Face checkpoint directories "
            "(or 'world'); pass a directory (download it first with huggingface-cli), or use --backend hooked."
        )
    module = get_backend(backend)
    extra: dict[str, Any] = {"device_map": mapping} if mapping is not None else {}
    model, hf_model_type, fingerprint = module.load(
        path, device, dtype, requested, trust_remote_code, **extra
    )
    if isinstance(device_map, Mapping):
        recorded_map: str | None = json.dumps(dict(device_map), sort_keys=True)
    else:
        recorded_map = None if device_map is None else str(device_map)
    model.hookunlearn_info = ModelInfo(
        spec=spec,
        name=str(path.resolve()),
        source="local",
        architecture=hf_model_type,
        hf_model_type=hf_model_type,
        processing=requested,
        requested_processing=requested,
        device=str(_parameter_device(model)),
        dtype=_dtype_name(dtype),
        config_fingerprint=fingerprint,
        n_layers=len(model.blocks),
        d_model=int(model.cfg.d_model),
        backend=backend,
        n_devices=module.device_count(model) if hasattr(module, "device_count") else 1,
        device_map=recorded_map,
    )
    return model


def _load_local(
    path: Path,
    device: torch.device,
    dtype: torch.dtype,
    requested: WeightProcessing,
    trust_remote_code: bool,
    n_devices: int = 1,
) -> tuple[HookedTransformer, str]:
    """Config -> tokenizer -> HF model (float32, CPU) -> TL state dict -> processed -> moved and cast."""
    model_type = _read_model_type(path)
    try:
        hf_config = AutoConfig.from_pretrained(
            path, local_files_only=True, trust_remote_code=trust_remote_code
        )
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise ModelLoadError(f"model directory '{path}': could not read config.json: {exc}") from exc
    # Processing runs in float32 on CPU; the finished model is moved and cast below.
    cfg = _hooked_config(hf_config, path.name, "cpu", "float32", label=f"model directory '{path}'")
    cfg.tokenizer_name = str(path)
    effective = effective_processing(cfg, requested)
    tokenizer = _load_tokenizer(path, trust_remote_code)
    hf_model = _load_hf_weights(path, hf_config, trust_remote_code)
    with torch.no_grad():
        state_dict = get_architecture(model_type).tl_weights(hf_model, cfg)
    del hf_model
    with quiet_libraries():
        model = HookedTransformer(cfg, tokenizer=tokenizer, move_to_device=False)
        model.load_and_process_state_dict(
            state_dict, **effective.to_kwargs(), refactor_factored_attn_matrices=False
        )
    del state_dict
    gc.collect()
    _move_and_cast(model, device, dtype, n_devices)
    model.eval()
    return model, model_type


def _manifest_kind(path: Path) -> str | None:
    try:
        kind = json.loads((path / "manifest.json").read_text(encoding="utf-8")).get("kind")
    except (OSError, UnicodeDecodeError, json.JSONDecodeError, AttributeError):
        return None
    return kind if isinstance(kind, str) else None


def _read_model_type(path: Path) -> str:
    config_file = path / "config.json"
    if not config_file.is_file() and (path / "manifest.json").is_file():
        kind = _manifest_kind(path)
        hint = {
            "intervention": "it is an inference-time intervention, not a model: pass it as "
            "--intervention DIR and the model it applies to as the model",
            "unlearned": f"it is an unlearn run: its checkpoint is {path / 'model'}",
        }.get(kind or "", "it is a hookunlearn run directory, not a model")
        raise ModelLoadError(f"model directory '{path}' has no config.json; {hint}.")
    if not config_file.is_file():
        raise ModelLoadError(
            f"model directory '{path}' has no config.json, so it is not a Hugging Face checkpoint. "
            "Point at the directory that save_pretrained wrote (config.json, model.safetensors, tokenizer files)."
        )
    try:
        raw = json.loads(config_file.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ModelLoadError(f"model directory '{path}': config.json is not valid JSON ({exc}).") from exc
    model_type = raw.get("model_type") if isinstance(raw, dict) else None
    if model_type not in SUPPORTED_MODEL_TYPES:
        found = f"model_type {model_type!r}" if model_type else "no model_type"
        raise ModelLoadError(
            f"model directory '{path}': config.json has {found}, which is not supported. "
            f"Supported model types: {', '.join(SUPPORTED_MODEL_TYPES)}."
        )
    return model_type


TOKENIZER_FILES: tuple[str, ...] = (
    "tokenizer.json",
    "tokenizer_config.json",
    "vocab.json",
    "vocab.txt",
    "tokenizer.model",
    "spiece.model",
)
"""Files one of which a checkpoint's tokenizer needs (without them transformers may build an
empty tokenizer that encodes everything as one token)."""


def _load_tokenizer(path: Path, trust_remote_code: bool) -> transformers.PreTrainedTokenizerBase:
    if path.is_dir() and not any((path / name).is_file() for name in TOKENIZER_FILES):
        raise ModelLoadError(
            f"model directory '{path}' has no tokenizer: none of {', '.join(TOKENIZER_FILES[:2])} (or "
            f"{', '.join(TOKENIZER_FILES[2:])}) is there. Copy the tokenizer files of the model it came "
            "from beside the weights (tokenizer.save_pretrained(dir))."
        )
    try:
        with quiet_libraries():
            return AutoTokenizer.from_pretrained(
                path, local_files_only=True, trust_remote_code=trust_remote_code
            )
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise ModelLoadError(
            f"model directory '{path}': could not load its tokenizer ({type(exc).__name__}: {exc}). "
            "Save the tokenizer beside the weights (tokenizer.save_pretrained(dir))."
        ) from exc


def _load_hf_weights(path: Path, hf_config: PretrainedConfig, trust_remote_code: bool) -> PreTrainedModel:
    weight_files = sorted({file.name for pattern in _WEIGHT_FILE_PATTERNS for file in path.glob(pattern)})
    if not weight_files:
        raise ModelLoadError(
            f"model directory '{path}' has no weights file (model.safetensors, model-*.safetensors or "
            "pytorch_model.bin). Save the model with save_pretrained into this directory."
        )
    described = ", ".join(weight_files)
    try:
        with quiet_libraries():
            hf_model, loading_info = AutoModelForCausalLM.from_pretrained(
                path,
                config=hf_config,
                local_files_only=True,
                dtype=torch.float32,
                trust_remote_code=trust_remote_code,
                output_loading_info=True,
            )
    except Exception as exc:  # transformers/safetensors raise many types for an unreadable file
        raise ModelLoadError(
            f"model directory '{path}': could not read the weights in {described} "
            f"({type(exc).__name__}: {exc}). The file may be truncated or corrupt; re-save the checkpoint."
        ) from exc
    missing = [key for key in loading_info.get("missing_keys", ()) if not _is_tied_key(hf_model, key)]
    if missing:
        shown = ", ".join(sorted(missing)[:5]) + (" ..." if len(missing) > 5 else "")
        raise ModelLoadError(
            f"model directory '{path}': {described} lacks {len(missing)} parameter(s) the config needs "
            f"({shown}). The weights do not match config.json; re-save the checkpoint."
        )
    hf_model.eval()
    return hf_model


def _is_tied_key(hf_model: PreTrainedModel, key: str) -> bool:
    """A missing ``lm_head.weight`` is fine when the embeddings are tied (it is the same tensor)."""
    return key.startswith("lm_head.") and bool(_hf_get(hf_model.config, "tie_word_embeddings", False))


def _move_and_cast(
    model: HookedTransformer, device: torch.device, dtype: torch.dtype, n_devices: int = 1
) -> None:
    if n_devices > 1:
        # cast on the CPU first (a float32 copy never reaches a GPU), then spread the blocks
        if dtype != torch.float32:
            model.to(dtype, print_details=False)
        from hookunlearn.backends.hooked import place

        place(model, device, n_devices)
        return
    if device.type != "cpu":
        model.to(str(device), print_details=False)
    if dtype != torch.float32:
        model.to(dtype, print_details=False)


def _parameter_device(model: torch.nn.Module) -> torch.device:
    return next(model.parameters()).device


# ---------------------------------------------------------------------------------------------
# Official TransformerLens names
# ---------------------------------------------------------------------------------------------


def _official_name(spec: str) -> str | None:
    """The official TransformerLens name for a name or alias (case-insensitive), else None."""
    return make_model_alias_map().get(spec.strip().lower())


def _known_names() -> dict[str, str]:
    """Every official name and alias, lower-cased -> as spelled by TransformerLens."""
    names = {name.lower(): name for name in OFFICIAL_MODEL_NAMES}
    for aliases in MODEL_ALIASES.values():
        for alias in aliases:
            names.setdefault(alias.lower(), alias)
    return names


def _unknown_spec_message(spec: str, path: Path) -> str:
    if path.exists():
        return (
            f"model spec {spec!r} is a file, not a directory. Pass the checkpoint directory "
            "(holding config.json, the weights and the tokenizer), or a TransformerLens model name."
        )
    known = _known_names()
    close = difflib.get_close_matches(spec.strip().lower(), list(known), n=5, cutoff=0.6)
    hint = f" Did you mean: {', '.join(known[name] for name in close)}?" if close else ""
    return (
        f"model spec {spec!r} is neither an existing directory nor a known TransformerLens model name."
        f"{hint} Pass a local Hugging Face checkpoint directory, or a name from "
        "transformer_lens.loading_from_pretrained.OFFICIAL_MODEL_NAMES."
    )


def _hub_offline() -> bool:
    truthy = {"1", "true", "yes", "on"}
    from_env = any(
        os.environ.get(var, "").strip().lower() in truthy
        for var in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE")
    )
    return from_env or bool(huggingface_hub.constants.HF_HUB_OFFLINE)


def _hub_cache_dir() -> Path:
    # The constant (set from HF_HUB_CACHE/HF_HOME at import) is what transformers reads too.
    return Path(huggingface_hub.constants.HF_HUB_CACHE)


def _weights_cached(repo_id: str) -> bool:
    """Whether the local HF cache holds a snapshot of ``repo_id`` with a weights file in it."""
    snapshots = _hub_cache_dir() / f"models--{repo_id.replace('/', '--')}" / "snapshots"
    if not snapshots.is_dir():
        return False
    suffixes = {".safetensors", ".bin", ".pth", ".pt"}
    return any(file.suffix in suffixes for file in snapshots.rglob("*"))


def _load_official(
    spec: str,
    official: str,
    device: torch.device,
    dtype: torch.dtype,
    requested: WeightProcessing,
    trust_remote_code: bool,
    n_devices: int = 1,
) -> HookedTransformer:
    if official in NON_HF_HOSTED_MODEL_NAMES:
        raise ModelLoadError(
            f"model {spec!r} ({official}) is not hosted on the Hugging Face Hub. Convert it to a "
            "Hugging Face checkpoint directory and pass that directory instead."
        )
    if official.startswith(NEED_REMOTE_CODE_MODELS) and not trust_remote_code:
        raise ModelLoadError(
            f"model {spec!r} ({official}) needs code from its Hub repository (trust_remote_code). "
            "Pass trust_remote_code=True if you trust that repository."
        )
    if _hub_offline() and not _weights_cached(official):
        raise ModelLoadError(
            f"model {spec!r}: could not be downloaded from the Hugging Face Hub (HF_HUB_OFFLINE=1 is set "
            f"and '{official}' is not in the local cache at {_hub_cache_dir()}). Pass a local checkpoint "
            "directory instead, or run with network access."
        )
    remote_code: dict[str, Any] = {"trust_remote_code": True} if trust_remote_code else {}
    try:
        with quiet_libraries():
            model = HookedTransformer.from_pretrained(
                official,
                **requested.to_kwargs(),
                refactor_factored_attn_matrices=False,
                # spread over several devices by `place` below, not by TransformerLens's own
                # memory-greedy move (see hookunlearn.backends.hooked.place)
                device="cpu" if n_devices > 1 else str(device),
                dtype=dtype,  # ProcessWeights upcasts to float32 for the processing itself
                **remote_code,
            )
    except GatedRepoError as exc:
        raise ModelLoadError(
            f"model {spec!r}: '{official}' is a gated repository on the Hugging Face Hub. Accept its "
            "licence on huggingface.co and set HF_TOKEN, or pass a local checkpoint directory."
        ) from exc
    except (OSError, EntryNotFoundError, httpx.HTTPError, TimeoutError) as exc:
        reason = (
            "HF_HUB_OFFLINE=1 is set" if _hub_offline() else "the hub is unreachable or refused the request"
        )
        raise ModelLoadError(
            f"model {spec!r}: could not be downloaded from the Hugging Face Hub ({reason}: "
            f"{type(exc).__name__}: {exc}). Pass a local checkpoint directory instead, or run with network access."
        ) from exc
    if n_devices > 1:
        from hookunlearn.backends.hooked import place

        place(model, device, n_devices)
    model.eval()
    return model


# ---------------------------------------------------------------------------------------------
# Describing a model
# ---------------------------------------------------------------------------------------------


def model_info(model: LanguageModel) -> ModelInfo:
    """The model's `ModelInfo`, with its current device and dtype.

    For a model loaded by `load_model` this is ``model.hookunlearn_info``. For any other
    `HookedTransformer` a ``source="in-memory"`` record is built from its config and weights;
    its processing is inferred, with these limits:

    - ``fold_ln`` is read from ``normalization_type`` (``LNPre``/``RMSPre``), so a model built
      with a pre-norm config from the start also counts as folded;
    - ``center_writing_weights`` / ``center_unembed`` are inferred from weights whose mean over
      ``d_model`` / ``d_vocab`` is ~0, which a trained model practically never has by chance;
    - ``fold_value_biases`` is inferred as "all value biases are 0 and some attention output bias
      is not", so a model with no biases at all reads as not folded (equivalent numerically).
    ``requested_processing`` equals the inferred processing.
    """
    parameter = next(model.parameters())
    device, dtype = str(parameter.device), _dtype_name(parameter.dtype)
    info = getattr(model, "hookunlearn_info", None)
    if isinstance(info, ModelInfo):
        return replace(info, device=device, dtype=dtype)
    cfg = model.cfg
    processing = _infer_processing(model)
    return ModelInfo(
        spec=cfg.model_name,
        name=cfg.model_name,
        source="in-memory",
        architecture=_architecture_name(cfg),
        hf_model_type=model_type_for_tl(cfg.original_architecture),
        processing=processing,
        requested_processing=processing,
        device=device,
        dtype=dtype,
        config_fingerprint=config_fingerprint(cfg),
        n_layers=cfg.n_layers,
        d_model=cfg.d_model,
    )


def _architecture_name(cfg: HookedTransformerConfig) -> str:
    """`ModelInfo.architecture`: the ``model_type``, else TransformerLens's architecture name, else ``custom``."""
    return model_type_for_tl(cfg.original_architecture) or cfg.original_architecture or "custom"


def _is_centered(tensor: torch.Tensor, dim: int) -> bool:
    values = tensor.detach().float()
    scale = values.abs().max().item() if values.numel() else 0.0
    return values.numel() > 0 and values.mean(dim=dim).abs().max().item() <= 1e-5 * (1.0 + scale)


@torch.no_grad()
def _infer_processing(model: HookedTransformer) -> WeightProcessing:
    cfg = model.cfg
    fold_ln = cfg.normalization_type in ("LNPre", "RMSPre")
    writers = [model.W_E]
    if cfg.positional_embedding_type == "standard":
        writers.append(model.W_pos)
    for block in model.blocks:
        writers.append(block.attn.W_O)
        if not cfg.attn_only:
            writers.append(block.mlp.W_out)
    center_writing = _base_normalization(cfg.normalization_type) == "LN" and all(
        _is_centered(weight, dim=-1) for weight in writers
    )
    center_unembed = _is_centered(model.W_U, dim=-1) and _is_centered(model.b_U, dim=-1)
    value_biases_zero = all(bool((block.attn.b_V == 0).all()) for block in model.blocks)
    output_bias_set = any(bool((block.attn.b_O != 0).any()) for block in model.blocks)
    return WeightProcessing(
        fold_ln=fold_ln,
        center_writing_weights=center_writing,
        center_unembed=center_unembed,
        fold_value_biases=value_biases_zero and output_bias_set,
    )
