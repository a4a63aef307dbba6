"""The ``build`` runner: reload the selection's model and SAE, build the subspaces, write."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from hookunlearn.errors import HookunlearnError
from hookunlearn.subspace import Subspace


@dataclass(frozen=True)
class BuildConfig:
    """Everything ``hookunlearn build`` takes; `build(config)` runs it."""

    selection: str
    """A directory written by `select`."""
    out: str | None = None
    """Where to write the subspace (None: return it without writing)."""
    k: int = 32
    layer: int | None = None
    """Build at this layer instead of the selection's chosen one."""
    sae: str | None = None
    """SAE spec for that layer (default: the one the selection used)."""
    model: str | None = None
    """Check against this model spec (default: the selection's)."""
    min_retain_rate: float = 1e-3
    force: bool = False
    backend: str | None = None
    """``hooked`` or ``bridge`` (`hookunlearn.backends`); default: the selection's, else ``hooked``."""


@dataclass
class BuildResult:
    subspace: Subspace
    out: Path | None


def build(config: BuildConfig) -> BuildResult:
    from hookunlearn.artifacts import check_can_write, check_compatible, check_not_input, read_manifest
    from hookunlearn.models import load_model, model_info
    from hookunlearn.saes import load_sae
    from hookunlearn.selection import Selection
    from hookunlearn.subspace import build as run_build

    if config.out is not None:
        check_can_write(config.out, force=config.force)
        check_not_input(config.out, {"SELECTION_DIR": config.selection, "--model": config.model})
    from hookunlearn import distributed

    distributed.init_from_env("cpu")
    distributed.barrier()  # under torchrun: every rank has checked --out before rank 0 writes it
    manifest = read_manifest(config.selection, kind="selection")
    selection = Selection.load(config.selection)
    chosen_layer = selection.chosen_layer if config.layer is None else config.layer
    model_spec = config.model or selection.options.get("model") or selection.model.get("spec")
    if not model_spec:
        raise HookunlearnError(
            f"{config.selection}: the selection does not say which model it used; pass --model."
        )
    backend = config.backend or selection.model.get("backend") or "hooked"
    loaded = load_model(
        model_spec, device="cpu", processing=selection.options.get("processing"), backend=backend
    )
    check_compatible(manifest, model=model_info(loaded).to_dict(), source=f"selection {config.selection}")
    sae_spec = config.sae or selection.saes.get(chosen_layer, {}).get("spec")
    if not sae_spec:
        raise HookunlearnError(f"{config.selection}: no SAE recorded for layer {chosen_layer}; pass --sae.")
    subspace = run_build(
        selection,
        load_sae(sae_spec, loaded),
        k=config.k,
        layer=chosen_layer,
        min_retain_rate=config.min_retain_rate,
    )
    if config.out is not None:
        from hookunlearn.html_report import write_html_report

        if distributed.is_rank_zero():  # under torchrun every rank builds the same; rank 0 writes
            subspace.save(config.out, force=config.force, inputs={"selection": str(config.selection)})
            # Subspace.save owns the staged write; the page is added to the finished directory atomically
            write_html_report(config.out, fallback=True)
        distributed.barrier()
    return BuildResult(subspace, Path(config.out) if config.out is not None else None)
