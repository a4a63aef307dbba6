"""Load sparse autoencoders (SAEs) and check that they fit a model.

An SAE spec is either a local directory in SAELens format (``cfg.json`` +
``sae_weights.safetensors``) or ``release:sae_id`` from SAELens's registry of pretrained SAEs
(``gemma-scope-2b-pt-res-canonical:layer_3/width_16k/canonical``; the id may contain ``/``, so
the spec is split on its *first* ``:``).

An SAE is only valid on the activations it was trained on. Before any weights are moved,
``load_sae(spec, model)`` checks that the SAE's hook exists in the model, that its ``d_in`` is
the width of that hook's activation, and that the model's weight processing agrees with the
processing the SAE expects on every flag that changes that hook (see
``hookunlearn.processing.flags_affecting_hook``). The loaded SAE is then put on the model's
device and dtype, and carries an ``SAEInfo`` as ``sae.hookunlearn_info``.
"""

from __future__ import annotations

import difflib
import json
import os
import re
import warnings
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any, Literal

import torch
from huggingface_hub import constants as hf_constants
from huggingface_hub.errors import EntryNotFoundError
from sae_lens import SAE, SAEConfig
from sae_lens.constants import SAE_CFG_FILENAME, SAE_WEIGHTS_FILENAME
from sae_lens.loading.pretrained_sae_loaders import (
    handle_config_defaulting,
    load_sae_config_from_huggingface,
)
from sae_lens.loading.pretrained_saes_directory import (
    PretrainedSAELookup,
    get_pretrained_saes_directory,
)
from sae_lens.util import dtype_to_str
from safetensors import SafetensorError, safe_open

from hookunlearn.backends.types import LanguageModel
from hookunlearn.dtypes import dtype_by_name
from hookunlearn.errors import SAELoadError, SAEModelWarning
from hookunlearn.hooks import hook_layer
from hookunlearn.processing import WeightProcessing, flags_affecting_hook

__all__ = [
    "SAEInfo",
    "check_sae_fits",
    "hook_layer",
    "hook_width",
    "load_sae",
    "sae_info",
]

SAESource = Literal["local", "release", "memory"]

# Hooks whose activation is the residual-stream width, whatever the architecture.
_D_MODEL_HOOKS = re.compile(
    r"(^hook_embed|^hook_pos_embed|hook_resid_(pre|mid|post)|hook_attn_out|hook_mlp_out)$"
)
_HOOK_Z = re.compile(r"attn\.hook_z$")
# SAELens warns about these on every load; load_sae does the check itself, with a better message.
_SAE_LENS_NOISE = (
    r"(?s).*non-empty model_from_pretrained_kwargs.*",
    r"(?s).*loading an SAE using the HuggingFace repo_id.*",
)


@dataclass(frozen=True)
class SAEInfo:
    """Where an SAE came from and what it expects; attached to loaded SAEs as ``sae.hookunlearn_info``."""

    spec: str | None
    """The spec it was loaded from (``None`` for an SAE built in memory)."""
    source: SAESource
    """``"local"`` (a SAELens directory), ``"release"`` (SAELens registry) or ``"memory"``."""
    release: str | None
    """Registry release name, for ``source == "release"``."""
    sae_id: str | None
    """SAE id inside the release, for ``source == "release"``."""
    path: str | None
    """Absolute directory, for ``source == "local"``."""
    hook_name: str | None
    """TransformerLens hook the SAE reads (``metadata.hook_name``)."""
    layer: int | None
    """Block index parsed from ``blocks.{L}.``; ``None`` for hooks outside the blocks."""
    d_in: int
    """Input width of the SAE."""
    d_sae: int
    """Number of latents."""
    architecture: str
    """SAELens architecture name (``standard``, ``topk``, ``jumprelu``, ...)."""
    expected_processing: WeightProcessing
    """Weight processing of the model the SAE was trained on."""
    dtype: str
    """Parameter dtype, short form (``"float32"``, ``"bfloat16"``)."""
    device: str
    """Parameter device (``"cpu"``, ``"cuda:0"``)."""
    hook_head_index: int | None = None
    """Attention head the SAE reads, when it reads a single head."""

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dict (processing as a dict of flags)."""
        data = asdict(self)
        data["expected_processing"] = self.expected_processing.to_dict()
        return data

    @property
    def torch_dtype(self) -> torch.dtype:
        return _parse_dtype(self.dtype)


def hook_width(model: LanguageModel, hook_name: str, head_index: int | None = None) -> int:
    """Width of the activation an SAE at ``hook_name`` reads (``d_in`` it must have).

    Per-head activations (``[batch pos head d]``) count as ``head * d`` (SAELens flattens
    ``hook_z``), or ``d`` when ``head_index`` picks one head. Known hooks are read from the config;
    any other is measured with a two-token forward pass that stops after the hook's block.
    """
    if hook_name not in model.hook_dict:
        raise SAELoadError(_unknown_hook_message(hook_name, model, subject=f"hook {hook_name!r}"))
    cfg = model.cfg
    if head_index is None and _D_MODEL_HOOKS.search(hook_name):
        return int(cfg.d_model)
    if _HOOK_Z.search(hook_name):
        _check_head_index(hook_name, head_index, int(cfg.n_heads))
        return int(cfg.d_head) if head_index is not None else int(cfg.n_heads * cfg.d_head)
    return _measured_width(model, hook_name, head_index)


def _measured_width(model: LanguageModel, hook_name: str, head_index: int | None) -> int:
    parameter = next(model.parameters())
    tokens = torch.zeros((1, 2), dtype=torch.long, device=parameter.device)
    layer = hook_layer(hook_name)
    if layer is not None:
        stop_at_layer: int | None = layer + 1
    elif hook_name in ("hook_embed", "hook_pos_embed", "hook_tokens"):
        stop_at_layer = 0
    else:
        stop_at_layer = None
    with torch.no_grad():
        _, cache = model.run_with_cache(tokens, names_filter=hook_name, stop_at_layer=stop_at_layer)
    if hook_name not in cache:
        raise SAELoadError(
            f"hook {hook_name!r} exists but this model does not compute it with its current "
            "settings (e.g. hook_result needs model.set_use_attn_result(True), hook_*_input needs "
            "model.set_use_split_qkv_input(True)); enable it, or use an SAE on another hook."
        )
    activation = cache[hook_name]
    if head_index is not None:
        if activation.ndim != 4:
            raise SAELoadError(
                f"the SAE reads head {head_index} of {hook_name!r}, but that hook is not per-head "
                f"(activation shape {tuple(activation.shape)}); remove hook_head_index from the SAE's metadata."
            )
        _check_head_index(hook_name, head_index, int(activation.shape[2]))
        return int(activation.shape[-1])
    if activation.ndim == 4:
        return int(activation.shape[-2] * activation.shape[-1])
    return int(activation.shape[-1])


def _check_head_index(hook_name: str, head_index: int | None, n_heads: int) -> None:
    if head_index is not None and not 0 <= head_index < n_heads:
        raise SAELoadError(
            f"the SAE reads head {head_index} of {hook_name!r}, but the model has {n_heads} heads "
            f"(0..{n_heads - 1}); this SAE was made for another model."
        )


def check_sae_fits(
    sae: SAE,
    model: LanguageModel,
    model_processing: WeightProcessing | str | None = None,
) -> None:
    """Raise ``SAELoadError`` unless ``sae`` reads a hook of ``model`` with the right width and processing.

    ``model_processing`` defaults to ``model.hookunlearn_info.processing`` (set by
    ``hookunlearn.models.load_model``), or no processing for a model built another way.
    """
    label = _label(sae)
    _check_config_fits(sae.cfg, model, _model_processing(model, model_processing), label)


def sae_info(sae: SAE) -> SAEInfo:
    """The SAE's ``SAEInfo`` (built from its config for an SAE not loaded by ``load_sae``), with its current dtype/device."""
    info = getattr(sae, "hookunlearn_info", None)
    dtype, device = _dtype_name(sae.W_dec.dtype), str(sae.W_dec.device)
    if isinstance(info, SAEInfo):
        return replace(info, dtype=dtype, device=device)
    return _build_info(sae, spec=None, source="memory", release=None, sae_id=None, path=None)


def _plugin_sae_path(spec_text: str) -> Path | None:
    """A plug-in SAE spec (``world:2``: the embedded world's SAE on blocks.2.hook_resid_post) as a path."""
    from hookunlearn.errors import HookunlearnError
    from hookunlearn.sources import resolve

    try:
        return resolve(spec_text, "sae")
    except HookunlearnError as exc:
        raise SAELoadError(f"SAE spec {spec_text!r}: {exc}") from exc


def load_sae(
    spec: str | os.PathLike[str],
    model: LanguageModel | None = None,
    *,
    device: str | torch.device | None = None,
    dtype: str | torch.dtype | None = None,
    model_processing: WeightProcessing | str | None = None,
    converter: Callable[..., Any] | None = None,
) -> SAE:
    """Load an SAE from a SAELens directory or ``release:sae_id``, checked against ``model`` if given.

    Args:
        spec: ``world:L`` (the embedded world's SAE at layer L), a local directory holding ``cfg.json`` and ``sae_weights.safetensors``, or
            ``release:sae_id`` from SAELens's registry.
        model: if given, the SAE must fit it (hook, width, weight processing) and is put on
            its device and dtype.
        device: where to put the SAE (default: the model's device, else CPU; on a model spread
            over several devices, the device of the block its hook is in, where its input is).
        dtype: the SAE's dtype (default: the model's dtype, else the SAE's own / float32).
        model_processing: the model's weight processing, when ``model.hookunlearn_info`` does not say.
        converter: for releases, a SAELens loader ``(repo_id, folder_name, device, force_download,
            cfg_overrides) -> (cfg_dict, state_dict, sparsity)`` used instead of downloading.

    Raises:
        SAELoadError: the spec cannot be resolved or read, or the SAE does not fit the model.
    """
    target_device = _parse_device(device) if device is not None else None
    target_dtype = _parse_dtype(dtype) if dtype is not None else None
    processing = None
    if model is not None:
        parameter = next(model.parameters())
        target_device = parameter.device if target_device is None else target_device
        target_dtype = parameter.dtype if target_dtype is None else target_dtype
        processing = _model_processing(model, model_processing)

    spec_text = os.fspath(spec)
    local_path = _plugin_sae_path(spec_text) or _local_path(spec, spec_text)
    if local_path is not None:
        sae = _load_local(local_path, spec_text, model, processing, target_device, target_dtype)
        release = sae_id = None
    else:
        release, sae_id = _split_release(spec_text)
        sae = _load_release(
            spec_text, release, sae_id, model, processing, target_device, target_dtype, converter
        )

    if model is not None and device is None:
        target_device = _model_hook_device(model, sae, target_device)
    if target_device is not None or target_dtype is not None:
        sae = sae.to(device=target_device, dtype=target_dtype)
    sae.hookunlearn_info = _build_info(
        sae,
        spec=spec_text,
        source="local" if local_path is not None else "release",
        release=release,
        sae_id=sae_id,
        path=str(local_path) if local_path is not None else None,
    )
    return sae


# ---------------------------------------------------------------------------------------------
# Spec resolution


def _local_path(spec: str | os.PathLike[str], spec_text: str) -> Path | None:
    """The directory a spec names, or ``None`` for a ``release:sae_id`` spec."""
    path = Path(spec_text).expanduser()
    if path.exists():
        return path.resolve()
    head = spec_text.split(":", 1)[0]
    if isinstance(spec, os.PathLike) or (
        _looks_like_path(spec_text) and (":" not in spec_text or _looks_like_path(head))
    ):
        raise SAELoadError(
            f"SAE directory {spec_text!r} does not exist. Pass a directory holding "
            f"{SAE_CFG_FILENAME} and {SAE_WEIGHTS_FILENAME} (what SAELens's sae.save_model writes), "
            "or a registry spec 'release:sae_id'."
        )
    return None


def _looks_like_path(text: str) -> bool:
    return (
        text.startswith(("/", "~", "."))
        or "/" in text
        or "\\" in text
        or bool(re.match(r"^[A-Za-z]:[\\/]", text))
    )


def _split_release(spec: str) -> tuple[str, str]:
    directory = get_pretrained_saes_directory()
    if ":" not in spec:
        if spec in directory:
            examples = list(directory[spec].saes_map)[:3]
            raise SAELoadError(
                f"SAE spec {spec!r} names a release but no SAE in it; write 'release:sae_id', "
                f"e.g. {spec}:{examples[0] if examples else '<sae_id>'}."
            )
        raise SAELoadError(
            f"SAE spec {spec!r} is neither an existing directory nor 'release:sae_id'."
            f"{_release_suggestions(spec, directory)}"
        )
    release, sae_id = spec.split(":", 1)
    if release not in directory:
        raise SAELoadError(
            f"unknown SAE release {release!r} in spec {spec!r}.{_release_suggestions(release, directory)} "
            "Releases are listed by sae_lens.loading.pretrained_saes_directory.get_pretrained_saes_directory(); "
            "a local SAELens directory works too."
        )
    valid_ids = list(directory[release].saes_map)
    if sae_id not in valid_ids:
        close = difflib.get_close_matches(sae_id, valid_ids, n=5, cutoff=0.6)
        hint = f" Did you mean: {', '.join(close)}?" if close else ""
        raise SAELoadError(
            f"unknown SAE id {sae_id!r} in release {release!r} ({len(valid_ids)} ids).{hint} "
            f"Valid ids include: {', '.join(valid_ids[:5])}."
        )
    return release, sae_id


def _release_suggestions(name: str, directory: dict[str, PretrainedSAELookup]) -> str:
    close = difflib.get_close_matches(name, list(directory), n=5, cutoff=0.5)
    return f" Did you mean: {', '.join(close)}?" if close else " No release has a similar name."


# ---------------------------------------------------------------------------------------------
# Loading


def _load_local(
    path: Path,
    spec: str,
    model: LanguageModel | None,
    processing: WeightProcessing | None,
    device: torch.device | None,
    dtype: torch.dtype | None,
) -> SAE:
    cfg_path, weights_path = path / SAE_CFG_FILENAME, path / SAE_WEIGHTS_FILENAME
    if not path.is_dir():
        parent_hint = (
            f" Did you mean its directory {str(path.parent)!r}?"
            if path.name in (SAE_CFG_FILENAME, SAE_WEIGHTS_FILENAME)
            else ""
        )
        raise SAELoadError(
            f"SAE path {spec!r} is a file, not a directory; pass the directory holding "
            f"{SAE_CFG_FILENAME} and {SAE_WEIGHTS_FILENAME}.{parent_hint}"
        )
    for required in (cfg_path, weights_path):
        if not required.is_file():
            present = sorted(p.name for p in path.iterdir())[:10]
            raise SAELoadError(
                f"SAE directory {str(path)!r} has no {required.name} (it holds: "
                f"{', '.join(present) or 'nothing'}). A SAELens SAE directory needs {SAE_CFG_FILENAME} "
                f"and {SAE_WEIGHTS_FILENAME}; re-save the SAE with sae.save_model(dir)."
            )

    cfg = _config_from_dict(_read_cfg_json(cfg_path), f"{cfg_path}")
    if model is not None and processing is not None:
        _check_config_fits(cfg, model, processing, spec)
    _check_safetensors(weights_path)

    try:
        with _quiet_sae_lens():
            return SAE.load_from_disk(
                path,
                device=str(device) if device is not None else "cpu",
                dtype=_dtype_name(dtype) if dtype is not None else None,
            )
    except (SafetensorError, OSError, RuntimeError, KeyError, ValueError, TypeError) as exc:
        raise SAELoadError(
            f"could not load the SAE in {str(path)!r}: {type(exc).__name__}: {exc}. Check that "
            f"{SAE_WEIGHTS_FILENAME} matches {SAE_CFG_FILENAME} (names and shapes), or re-save the SAE."
        ) from exc


def _read_cfg_json(cfg_path: Path) -> dict[str, Any]:
    try:
        data = json.loads(cfg_path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise SAELoadError(
            f"{str(cfg_path)!r} is not valid JSON ({exc}). Fix or regenerate it (sae.save_model(dir) writes it)."
        ) from exc
    if not isinstance(data, dict):
        raise SAELoadError(
            f"{str(cfg_path)!r} must hold a JSON object (the SAE config), not {type(data).__name__}. "
            "Regenerate it with sae.save_model(dir)."
        )
    return data


def _config_from_dict(cfg_dict: dict[str, Any], where: str, *, defaulted: bool = False) -> SAEConfig:
    """The SAELens config a cfg dict describes (old and new formats), without building the SAE.

    ``defaulted``: the dict already went through SAELens's ``handle_config_defaulting`` (doing it
    twice empties the metadata of configs that carry no ``sae_lens_version``).
    """
    try:
        return SAEConfig.from_dict(cfg_dict if defaulted else handle_config_defaulting(dict(cfg_dict)))
    except (KeyError, TypeError, ValueError, AttributeError) as exc:
        raise SAELoadError(
            f"{where} is not a valid SAELens SAE config ({type(exc).__name__}: {exc}). It needs at "
            "least architecture, d_in, d_sae and metadata.hook_name; regenerate it with sae.save_model(dir)."
        ) from exc


def _check_safetensors(weights_path: Path) -> None:
    try:
        with safe_open(str(weights_path), framework="pt", device="cpu") as handle:
            names = list(handle.keys())
    except (SafetensorError, OSError) as exc:
        raise SAELoadError(
            f"{str(weights_path)!r} is not a readable safetensors file ({exc}); it is corrupt or "
            "truncated. Re-save or re-copy the SAE."
        ) from exc
    if not names:
        raise SAELoadError(
            f"{str(weights_path)!r} holds no tensors; re-save the SAE with sae.save_model(dir)."
        )


def _load_release(
    spec: str,
    release: str,
    sae_id: str,
    model: LanguageModel | None,
    processing: WeightProcessing | None,
    device: torch.device | None,
    dtype: torch.dtype | None,
    converter: Callable[..., Any] | None,
) -> SAE:
    lookup = get_pretrained_saes_directory()[release]
    if model is not None and processing is not None and converter is None:
        # Check with the config alone first, so a misfit fails before a large download.
        try:
            cfg_dict = load_sae_config_from_huggingface(release, sae_id, device="cpu")
        except (OSError, EntryNotFoundError) as exc:
            raise _download_error(spec, lookup, exc) from exc
        cfg = _config_from_dict(cfg_dict, f"the config of {spec!r}", defaulted=True)
        _apply_registry_processing(cfg, lookup)
        _check_config_fits(cfg, model, processing, spec)
    try:
        with _quiet_sae_lens():
            sae = SAE.from_pretrained(
                release,
                sae_id,
                device=str(device) if device is not None else "cpu",
                dtype=_dtype_name(dtype) if dtype is not None else "float32",
                converter=converter,
            )
    except (OSError, EntryNotFoundError) as exc:
        raise _download_error(spec, lookup, exc) from exc
    _apply_registry_processing(sae.cfg, lookup)
    if model is not None and processing is not None:
        _check_config_fits(sae.cfg, model, processing, spec)
    return sae


def _download_error(spec: str, lookup: PretrainedSAELookup, exc: BaseException) -> SAELoadError:
    offline = bool(hf_constants.HF_HUB_OFFLINE) or os.environ.get("HF_HUB_OFFLINE", "") not in ("", "0")
    why = (
        "HF_HUB_OFFLINE is set and it is not in the local Hugging Face cache"
        if offline
        else "no network, or the Hub refused the request"
    )
    return SAELoadError(
        f"could not download SAE {spec!r} from the Hugging Face Hub (repo {lookup.repo_id}): {why} "
        f"({type(exc).__name__}). Download it where there is network and pass the local SAELens "
        "directory as the spec (in Python, converter= can also read the weights from disk)."
    )


def _apply_registry_processing(cfg: SAEConfig, lookup: PretrainedSAELookup) -> None:
    """Registry releases may state the model processing only as a config override; keep it in metadata."""
    overrides = lookup.config_overrides or {}
    registry_kwargs = overrides.get("model_from_pretrained_kwargs")
    if isinstance(registry_kwargs, dict) and not cfg.metadata.model_from_pretrained_kwargs:
        cfg.metadata.model_from_pretrained_kwargs = dict(registry_kwargs)


@contextmanager
def _quiet_sae_lens() -> Iterator[None]:
    with warnings.catch_warnings():
        for pattern in _SAE_LENS_NOISE:
            warnings.filterwarnings("ignore", message=pattern, category=UserWarning)
        yield


# ---------------------------------------------------------------------------------------------
# Fit checks


def _check_config_fits(
    cfg: SAEConfig, model: LanguageModel, processing: WeightProcessing, label: str
) -> None:
    hook_name = cfg.metadata.hook_name
    if not hook_name:
        raise SAELoadError(
            f"SAE {label} has no metadata.hook_name, so it cannot be placed in the model; "
            "set metadata.hook_name in its cfg.json (e.g. 'blocks.3.hook_resid_post')."
        )
    if hook_name not in model.hook_dict:
        raise SAELoadError(
            _unknown_hook_message(hook_name, model, subject=f"SAE {label} reads hook {hook_name!r}")
        )

    head_index = cfg.metadata.hook_head_index
    width = hook_width(model, hook_name, head_index)
    if cfg.d_in != width:
        trained_on = cfg.metadata.model_name
        model_name = getattr(model.cfg, "model_name", None)
        origin = f" It was trained on {trained_on!r}; this model is {model_name!r}." if trained_on else ""
        head = f" (head {head_index})" if head_index is not None else ""
        raise SAELoadError(
            f"SAE {label} has d_in={cfg.d_in}, but {hook_name!r}{head} in this model has width "
            f"{width} (d_model={model.cfg.d_model}).{origin} Use an SAE trained on this model."
        )

    trained_on = cfg.metadata.model_name
    model_name = getattr(model.cfg, "model_name", None)
    if (
        _named_model(trained_on)
        and _named_model(model_name)
        and _named_model(trained_on) != _named_model(model_name)
    ):
        warnings.warn(
            SAEModelWarning(
                f"SAE {label} was trained on {trained_on!r} (cfg.json metadata.model_name), this model is "
                f"{model_name!r}: its hook and width fit, but its latents may mean nothing here. Use an SAE "
                "trained on this model (or fix metadata.model_name if it is)."
            ),
            stacklevel=3,
        )

    expected = WeightProcessing.from_kwargs(cfg.metadata.model_from_pretrained_kwargs)
    relevant = flags_affecting_hook(hook_name)
    mismatched = [flag for flag in expected.differences(processing) if flag in relevant]
    if mismatched:
        wanted = expected.to_dict()
        fix = replace(processing, **{flag: wanted[flag] for flag in mismatched}).describe()
        details = "; ".join(
            f"{flag}: SAE expects {wanted[flag]}, model has {processing.to_dict()[flag]}"
            for flag in mismatched
        )
        raise SAELoadError(
            f"SAE {label} was trained on differently processed activations at {hook_name!r} ({details}). "
            f"SAE expects processing '{expected.describe()}', the model has '{processing.describe()}'. "
            f"Load the model with processing='{fix}' (CLI: --processing {fix}), or use an SAE trained "
            "with the model's processing."
        )


_GENERIC_MODEL_NAMES = frozenset({"", "model", "custom", "none", "unknown", "hookedtransformer"})


def _named_model(name: object) -> str | None:
    """A model name as SAELens and TransformerLens spell it, comparable (None: no real name)."""
    if not isinstance(name, str):
        return None
    from transformer_lens.loading_from_pretrained import make_model_alias_map

    name = make_model_alias_map().get(name.strip().lower(), name)  # gpt2-small and gpt2 are one model
    short = name.strip().rstrip("/").split("/")[-1].lower()
    return None if short in _GENERIC_MODEL_NAMES else short


def _unknown_hook_message(hook_name: str, model: LanguageModel, subject: str) -> str:
    names = list(model.hook_dict)
    close = difflib.get_close_matches(hook_name, names, n=5, cutoff=0.6)
    hint = (
        f"Similar hooks: {', '.join(close)}."
        if close
        else f"It has {len(names)} hooks, e.g. {', '.join(names[:5])}."
    )
    n_layers = model.cfg.n_layers
    layer = hook_layer(hook_name)
    depth = (
        f" The model has {n_layers} layers (0..{n_layers - 1})."
        if layer is not None and layer >= n_layers
        else ""
    )
    return f"{subject}, but the model has no such hook.{depth} {hint} The SAE may be for another model."


def _model_processing(model: LanguageModel, explicit: WeightProcessing | str | None) -> WeightProcessing:
    if explicit is not None:
        return WeightProcessing.parse(explicit)
    recorded = getattr(getattr(model, "hookunlearn_info", None), "processing", None)
    return recorded if isinstance(recorded, WeightProcessing) else WeightProcessing()


# ---------------------------------------------------------------------------------------------
# Small conversions


def _build_info(
    sae: SAE,
    *,
    spec: str | None,
    source: SAESource,
    release: str | None,
    sae_id: str | None,
    path: str | None,
) -> SAEInfo:
    metadata = sae.cfg.metadata
    hook_name = metadata.hook_name
    return SAEInfo(
        spec=spec,
        source=source,
        release=release,
        sae_id=sae_id,
        path=path,
        hook_name=hook_name,
        layer=hook_layer(hook_name) if hook_name else None,
        d_in=int(sae.cfg.d_in),
        d_sae=int(sae.cfg.d_sae),
        architecture=sae.cfg.architecture(),
        expected_processing=WeightProcessing.from_kwargs(metadata.model_from_pretrained_kwargs),
        dtype=_dtype_name(sae.W_dec.dtype),
        device=str(sae.W_dec.device),
        hook_head_index=metadata.hook_head_index,
    )


def _label(sae: SAE) -> str:
    info = getattr(sae, "hookunlearn_info", None)
    if isinstance(info, SAEInfo) and info.spec:
        return repr(info.spec)
    return f"on {sae.cfg.metadata.hook_name!r}" if sae.cfg.metadata.hook_name else "(in memory)"


def _parse_dtype(dtype: str | torch.dtype) -> torch.dtype:
    if isinstance(dtype, torch.dtype):
        return dtype
    parsed = dtype_by_name(dtype)
    if parsed is None:
        raise SAELoadError(f"unknown SAE dtype {dtype!r}; use one of: float32, bfloat16, float16, float64.")
    return parsed


def _model_hook_device(model: LanguageModel, sae: SAE, default: torch.device | None) -> torch.device | None:
    """On a model spread over several devices: where the SAE's hook's activation is; else ``default``."""
    from hookunlearn.backends import backend_of

    backend = backend_of(model)
    hook_name = getattr(getattr(sae.cfg, "metadata", None), "hook_name", None)
    if not hook_name or not backend.multi_device(model):
        return default
    return backend.hook_device(model, str(hook_name))


def _parse_device(device: str | torch.device) -> torch.device:
    if isinstance(device, torch.device):
        return device
    try:
        return torch.device(device)
    except RuntimeError as exc:
        raise SAELoadError(
            f"unknown device {device!r} for the SAE ({exc}); use e.g. 'cpu' or 'cuda:0'."
        ) from exc


def _dtype_name(dtype: torch.dtype) -> str:
    try:
        return dtype_to_str(dtype)
    except ValueError:
        return str(dtype).removeprefix("torch.")
