"""The `unlearn` command's work: load inputs, train (resumably), export, write the run directory.

A run is staged in ``OUT.partial/`` (train log and checkpoints land there while it runs, so
``--resume`` can continue it) and renamed to ``OUT`` only when complete, exported and verified.
The library functions it calls return values; ``echo`` and ``table`` are how the CLI prints.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

from hookunlearn.errors import HookunlearnError


def staging_dir(out: Path) -> Path:
    return out.with_name(out.name + ".partial")


DEFAULT_CORPORA: dict[str, tuple[str, str]] = {
    "align": ("world:forget_entities_corpus", "world:retain_entities_corpus"),
}
"""Per-method default forget/retain corpora; every other method: the world's topic corpora."""


def default_corpora(
    method: str, forget: str | None, retain: str | None, *, world: bool
) -> tuple[str | None, str | None]:
    """``--forget``/``--retain`` as given; for the embedded world's model, the method's world
    corpora when not given (for any other model there is no default: the world's corpora describe
    fictitious facts)."""
    if not world:
        return forget, retain
    default_forget, default_retain = DEFAULT_CORPORA.get(
        method, ("world:forget_corpus", "world:retain_corpus")
    )
    return forget or default_forget, retain or default_retain


def run_unlearn(
    *,
    out: Path,
    method: str,
    subspace_dir: str | None,
    model_spec: str | None,
    layer: int | None,
    forget: str | None,
    retain: str | None,
    text_column: str,
    entities: str | None,
    template: str | None,
    options: dict[str, Any],
    train_options: dict[str, Any],
    max_tokens: int | None,
    resume: bool,
    export: bool,
    device: str,
    dtype: str,
    force: bool,
    echo: Callable[[str], None],
    table: Callable[[list[str], list[tuple[str, ...]]], None],
    progress: Callable[[dict[str, Any]], None] | None = None,
) -> Path:
    from hookunlearn.artifacts import (
        Manifest,
        check_compatible,
        fingerprint_texts,
        read_manifest,
        save_tensors,
        write_json,
    )
    from hookunlearn.models import load_model, model_info
    from hookunlearn.saes import load_sae
    from hookunlearn.subspace import Subspace
    from hookunlearn.train import TrainConfig

    subspace = Subspace.load(subspace_dir) if subspace_dir else None
    manifest_in = read_manifest(subspace_dir, kind="subspace") if subspace_dir else None
    spec = model_spec or (subspace.model.get("spec") if subspace else None) or "world"
    # the subspace's SAE was checked against a model loaded with this processing: load the same way
    from hookunlearn.processing import WeightProcessing

    recorded = subspace.model.get("processing") if subspace is not None else None
    processing = WeightProcessing.parse(recorded) if recorded else None
    model = load_model(spec, device=device, dtype=dtype, processing=processing)
    if manifest_in is not None:
        check_compatible(manifest_in, model=model_info(model).to_dict(), source=f"subspace {subspace_dir}")
    sae = load_sae(subspace.sae["spec"], model) if subspace is not None and subspace.sae.get("spec") else None
    from hookunlearn.recipes import check_active_recipe

    check_active_recipe(model=model, sae=sae)

    if method == "clamp":
        from hookunlearn.clamp import ClampIntervention

        if subspace is None or sae is None:
            raise HookunlearnError("clamp needs a subspace directory (its relevant latents and SAE).")
        intervention = ClampIntervention(
            subspace.hook,
            subspace.sae["spec"],
            subspace.relevant.latents,
            float(options.get("multiplier", 20.0)),
        )
        intervention.save(
            out,
            force=force,
            model=model_info(model).to_dict(),
            manifest_extra={"inputs": {"subspace": subspace_dir}},
        )
        echo(
            f"wrote intervention {out}: clamp {len(intervention.latents)} latents at {intervention.hook} "
            f"(evaluate it with `hookunlearn eval MODEL --intervention {out}`; it cannot be exported: it edits no weight)"
        )
        return out

    from hookunlearn.data import load_records, load_texts
    from hookunlearn.unlearn import unlearn

    data: dict[str, Any] = {}
    targets = known = None
    forget, retain = default_corpora(method, forget, retain, world=spec == "world")
    if method != "align" and (forget is None or retain is None):
        raise HookunlearnError(
            f"method {method!r} on model {spec!r}: pass --forget and --retain (corpora of your data); "
            "the world's corpora are the default only for the world model."
        )
    if method == "align" and forget is None and not entities:
        raise HookunlearnError(
            f"align on model {spec!r}: pass --forget (texts about the targets) and/or --entities "
            "(prompts with target and known people); the world's data is the default only for the world model."
        )
    if method == "align" and entities:
        from hookunlearn.selection import parse_entity_prompts

        prompts = parse_entity_prompts(load_records(entities), entities, template=template)
        targets = [p for p in prompts if p.set == "target"]
        known = [p for p in prompts if p.set == "known"]
        data["entities"] = {"spec": entities, **fingerprint_texts(p.prompt for p in prompts)}
    forget_texts = load_texts(forget, text_column) if forget else None
    retain_texts = load_texts(retain, text_column) if retain else None
    if forget_texts is not None:
        data["forget"] = {"spec": forget, **fingerprint_texts(forget_texts)}
    if retain_texts is not None:
        data["retain"] = {"spec": retain, **fingerprint_texts(retain_texts)}

    stage = staging_dir(out)
    if resume:
        if not (stage / "checkpoints").is_dir():
            raise HookunlearnError(
                f"--resume: no interrupted run at {stage} (no checkpoints/); start without --resume."
            )
    elif stage.exists():
        if not force:
            raise HookunlearnError(
                f"an interrupted run is staged at {stage}; continue it with --resume, or pass --force to start over."
            )
        shutil.rmtree(stage)
    train_config = TrainConfig(**train_options)

    result = unlearn(
        model,
        method,
        subspace=subspace,
        sae=sae,
        layer=layer,
        forget=forget_texts,
        retain=retain_texts,
        targets=targets,
        known=known,
        options=options,
        train=train_config,
        max_tokens=max_tokens,
        out_dir=stage,
        resume=resume,
        progress=progress,
    )
    metadata = {
        "method": method,
        "method_options": result.method_config,
        "train": result.train_config,
        "layer": result.layer,
        "trained_parameters": result.train.trainable,
        "relative_change": result.changed,
        "inputs": {"subspace": subspace_dir, "model": spec},
        "data": data,
    }
    save_tensors(stage / "tensors.safetensors", result.state or {})
    if export:
        from hookunlearn.export import export_model

        source = model_info(model)
        export_model(
            model,
            stage / "model",
            source_dir=source.name if source.source == "local" else None,
            metadata=metadata,
            force=True,
            # the base model = the edited one with its trained parameters at their initial values
            reference={**model.state_dict(), **result.initial},
        )
    manifest = Manifest(
        kind="unlearned",
        command=f"hookunlearn unlearn --method {method}",
        options={"method": method, "method_options": result.method_config, "train": result.train_config},
        model=model_info(model).to_dict(),
        saes=[dict(subspace.sae)] if subspace is not None else [],
        hook=subspace.hook if subspace is not None else f"blocks.{result.layer}.hook_resid_post",
        data=data,
        seed=train_config.seed,
        inputs={"subspace": subspace_dir} if subspace_dir else {},
        extra={
            "final": result.train.final,
            "relative_change": result.changed,
            "resumed_from": result.train.resumed_from,
            "exported": export,
        },
    )
    (stage / "manifest.json").write_text(manifest.to_json(), encoding="utf-8")
    write_json(stage / "hookunlearn_run.json", metadata)
    if out.exists():
        shutil.rmtree(out)  # --force was checked before any work
    os.replace(stage, out)
    table(
        ["parameter", "relative change"], [(name, f"{value:.4f}") for name, value in result.changed.items()]
    )
    echo(
        f"wrote {out} ({'model/ = verified HF checkpoint, ' if export else ''}train_log.jsonl, manifest.json)"
    )
    return out


__all__ = ["run_unlearn", "staging_dir"]
