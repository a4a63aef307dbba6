"""The ``select`` runner: load the model, the candidate SAEs and the data; score; write."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from hookunlearn.errors import HookunlearnError
from hookunlearn.selection import Selection


@dataclass(frozen=True)
class SelectConfig:
    """Everything ``hookunlearn select`` takes; `select(config)` runs it."""

    out: str | None = None
    """Where to write the selection (None: return it without writing)."""
    model: str = "world"
    objective: Literal["topic", "entity"] = "topic"
    saes: tuple[str, ...] = ()
    """One SAE spec per candidate layer (default on a plug-in's model: its SAEs)."""
    layers: tuple[int, ...] | None = None
    """With the plug-in's SAEs: only these layers (None: all)."""
    layer: int | None = None
    """Force this layer instead of choosing the best one."""
    forget: str = "world:forget_corpus"
    retain: str = "world:retain_corpus"
    text_column: str = "text"
    entities: str = "world:entity_prompts"
    template: str | None = "bare"
    generic: str | None = None
    max_generic_rate: float = 0.02
    score: str | None = None
    top_n: int | None = None
    batch_size: int = 32
    max_tokens: int | None = None
    device: str = "auto"
    dtype: str = "float32"
    processing: str = "none"
    top_contexts: int = 8
    """Top-activating contexts kept per latent for ``latents.json`` and ``report.html`` (0: none)."""
    second_moments: bool = True
    """Also accumulate the residual stream's second moment (``d_model`` x ``d_model`` per role),
    which only `build`'s energy-share diagnostics read; no score needs it."""
    force: bool = False
    backend: str = "hooked"
    """``hooked`` or ``bridge`` (`hookunlearn.backends`): which TransformerLens model class runs the model."""
    n_devices: int = 1
    """``hooked`` backend: spread the model's blocks over this many CUDA devices (`load_model`)."""
    device_map: str | None = None
    """``bridge`` backend: ``auto``, ``balanced``, ``balanced_low_0``, ``sequential`` or a JSON file (`load_model`)."""


@dataclass
class SelectResult:
    selection: Selection
    sae_specs: list[str]
    out: Path | None


def check_objective(objective: str) -> None:
    if objective not in ("topic", "entity"):
        raise HookunlearnError(f"--objective {objective!r}: choose 'topic' or 'entity'.")


def candidate_saes(config: SelectConfig) -> list[str]:
    """The SAE specs to score: ``config.saes``, else the model's plug-in's (all, or ``layers``)."""
    from hookunlearn.sources import defaults, plugin_of_model

    if config.saes:
        return list(config.saes)
    plugin = defaults(config.model)
    if plugin is None or not plugin.sae_specs:
        raise HookunlearnError("no SAEs given: pass --sae SPEC once per candidate layer.")
    if config.layers is None:
        return list(plugin.sae_specs)
    return [f"{plugin_of_model(config.model)}:{layer}" for layer in config.layers]


def select(config: SelectConfig, *, progress: Callable[[dict[str, Any]], None] | None = None) -> SelectResult:
    """Run ``config``; ``progress`` gets the selection's progress records (role, docs/tokens, total)."""
    from hookunlearn import distributed
    from hookunlearn.artifacts import check_can_write, fingerprint_texts
    from hookunlearn.data import load_records, load_texts
    from hookunlearn.entities import parse_entity_prompts
    from hookunlearn.models import check_placement, load_model
    from hookunlearn.recipes import check_active_recipe
    from hookunlearn.saes import load_sae
    from hookunlearn.selection import select as run_select

    if config.out is not None:
        check_can_write(config.out, force=config.force)
    check_objective(config.objective)
    check_placement(
        backend=config.backend, device=config.device, n_devices=config.n_devices, device_map=config.device_map
    )
    distributed.init_from_env(config.device)  # under torchrun: each rank streams a share of the batches
    loaded = load_model(
        config.model,
        device=config.device,
        dtype=config.dtype,
        processing=config.processing,
        backend=config.backend,
        n_devices=config.n_devices,
        device_map=config.device_map,
    )
    sae_specs = candidate_saes(config)
    saes = [load_sae(spec, loaded) for spec in sae_specs]
    check_active_recipe(model=loaded)
    truncated: dict[str, int] = {}

    def observe(info: dict[str, Any]) -> None:
        if "truncated" in info:
            truncated[info["role"]] = int(info["truncated"])
        if progress is not None:
            progress(info)

    common: dict[str, Any] = {
        "score": config.score,
        "layer": config.layer,
        "top_n": config.top_n,
        "batch_size": config.batch_size,
        "max_tokens": config.max_tokens,
        "progress": observe,
        "top_contexts": config.top_contexts,
        "second_moments": config.second_moments,
    }
    if config.objective == "topic":
        forget_texts = load_texts(config.forget, config.text_column)
        retain_texts = load_texts(config.retain, config.text_column)
        data = {
            "forget": {"spec": config.forget, **fingerprint_texts(forget_texts)},
            "retain": {"spec": config.retain, **fingerprint_texts(retain_texts)},
        }
        selection = run_select(
            loaded, saes, objective="topic", forget=forget_texts, retain=retain_texts, data=data, **common
        )
    else:
        prompts = parse_entity_prompts(
            load_records(config.entities), config.entities, template=config.template
        )
        data = {"entities": {"spec": config.entities, **fingerprint_texts(p.prompt for p in prompts)}}
        generic_texts = load_texts(config.generic, config.text_column) if config.generic else None
        if generic_texts is not None:
            data["generic"] = {"spec": config.generic, **fingerprint_texts(generic_texts)}
        selection = run_select(
            loaded,
            saes,
            objective="entity",
            entities=prompts,
            generic=generic_texts,
            max_generic_rate=config.max_generic_rate,
            data=data,
            **common,
        )
    for role, count in truncated.items():  # texts cut to --max-tokens / the context, in the manifest
        if role in data:
            data[role]["truncated_texts"] = count
    # what `build` needs to reload the same model and SAEs
    selection.options.update(
        {
            "model": config.model,
            "sae": sae_specs,
            "template": config.template,
            "processing": config.processing,
        }
    )
    out = None
    if config.out is not None:
        if distributed.is_rank_zero():  # every rank holds the same selection; one writes it
            selection.save(config.out, force=config.force)
        distributed.barrier()
        out = config.out
    return SelectResult(selection, sae_specs, Path(out) if out is not None else None)
