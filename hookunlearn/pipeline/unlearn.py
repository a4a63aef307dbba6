"""Unlearning: `unlearn_model` edits a loaded model in memory; `unlearn` is the runner behind
``hookunlearn unlearn`` (load inputs, train resumably, export, write the run directory).

What each method reads comes from its declaration (`hookunlearn.objectives.METHODS`):

- the forget side: ``corpus`` (every token of the forget texts) and/or ``entities`` (every token of
  the target entities' names in entity prompts);
- the retain side: ``corpus`` (every token of the retain texts, preserved) and/or ``entities``
  (every token of known-entity prompts); an empty retain side reads nothing.

The hooked layer is the subspace's (or ``layer``). A run is staged in ``OUT.partial/`` (the train
log and checkpoints land there while it runs, so ``resume`` can continue it) and renamed to
``OUT`` only when complete, exported and verified. Inference-time interventions (``clamp``,
`hookunlearn.interventions`) go through the same runner and write an intervention directory.
"""

from __future__ import annotations

import dataclasses
import os
import shutil
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from sae_lens import SAE

from hookunlearn import faults
from hookunlearn.backends import backend_of, check_backend
from hookunlearn.backends.types import LanguageModel
from hookunlearn.entities import EntityPrompt
from hookunlearn.errors import HookunlearnError
from hookunlearn.hooks import resid_post_hook, trainer_layer
from hookunlearn.objectives import MethodSpec, get_objective, method_spec
from hookunlearn.objectives.base import ObjectiveContext
from hookunlearn.options import config_from_options
from hookunlearn.robust import StageRef
from hookunlearn.subspace import Subspace
from hookunlearn.tokens import (
    TokenData,
    concat_token_data,
    sequence_nll,
    tokenize_entity_spans,
    tokenize_texts,
)
from hookunlearn.train import TrainConfig, Trainer, TrainResult

Progress = Callable[[dict[str, Any]], None]


@dataclass
class UnlearnResult:
    """What `unlearn_model` did to the model (edited in place)."""

    method: str
    layer: int
    train: TrainResult
    method_config: dict[str, Any]
    train_config: dict[str, Any]
    state: dict[str, torch.Tensor] = field(default_factory=dict)
    changed: dict[str, float] = field(default_factory=dict)
    """Relative Frobenius change of each trained parameter."""
    initial: dict[str, torch.Tensor] = field(default_factory=dict)
    """The values before unlearning of every tensor the run changed (the trained parameters; every
    tensor after ``distill``); with the untouched rest of the model, this is the base model."""
    stages: list[dict[str, Any]] = field(default_factory=list)
    """Each robustness stage: name, options and its cost (extra passes; distill's compute)."""
    truncated: dict[str, int] = field(default_factory=dict)
    """Per side (``forget``, ``retain``): how many texts were cut to the token limit."""


def method_config(method: str, options: Mapping[str, Any] | None = None) -> Any:
    """The method's config dataclass with ``options`` applied (unknown keys are an error)."""
    return config_from_options(get_objective(method).Config, options, f"method {method!r}")


def _side(
    model: LanguageModel,
    spec: MethodSpec,
    side: str,
    texts: Sequence[str] | None,
    prompts: Sequence[EntityPrompt] | None,
    max_tokens: int | None,
) -> TokenData:
    """One side's token data from what the method reads there (see the module docstring)."""
    reads = spec.forget if side == "forget" else spec.retain
    parts = []
    if "entities" in reads and prompts:
        if side == "forget":
            parts.append(
                tokenize_entity_spans(
                    model,
                    [p.prompt for p in prompts],
                    [p.entity_start_char for p in prompts],
                    [p.entity_end_char for p in prompts],
                )
            )
        else:
            parts.append(tokenize_texts(model, [p.prompt for p in prompts], max_tokens))
    if "corpus" in reads and texts:
        parts.append(tokenize_texts(model, texts, max_tokens))
    if not parts:
        corpus = "a forget corpus (texts to forget)" if side == "forget" else "a retain corpus to preserve"
        entities = "target-entity prompts" if side == "forget" else "known-entity prompts"
        wanted = " and/or ".join(
            ([entities] if "entities" in reads else []) + ([corpus] if "corpus" in reads else [])
        )
        raise HookunlearnError(f"method {spec.name!r} needs {wanted}.")
    return concat_token_data(parts)


def unlearn_model(
    model: LanguageModel,
    method: str,
    *,
    subspace: Subspace | None = None,
    sae: SAE | None = None,
    layer: int | None = None,
    forget: Sequence[str] | None = None,
    retain: Sequence[str] | None = None,
    targets: Sequence[EntityPrompt] | None = None,
    known: Sequence[EntityPrompt] | None = None,
    options: Mapping[str, Any] | None = None,
    train: TrainConfig | None = None,
    max_tokens: int | None = None,
    out_dir: Path | None = None,
    resume: bool = False,
    progress: Progress | None = None,
    stages: Sequence[StageRef | str] = (),
    world_dir: Path | None = None,
) -> UnlearnResult:
    """Edit ``model`` in place with ``method`` and then the robustness ``stages``
    (`hookunlearn.robust.STAGES`; ``trainer`` stages change the method's run, ``after`` stages
    run on its result); see the module docstring for the data it reads. ``world_dir``: the world
    the model comes from (the default data of ``distill``)."""
    from hookunlearn.robust import (
        check_stage_inputs,
        check_stages,
        get_stage,
        run_after_stages,
        stage_config,
        stage_record,
    )
    from hookunlearn.robust.base import StageContext

    refs = check_stages(stages)
    check_stage_inputs(refs, world_dir=world_dir, subspace=subspace is not None)
    objective_cls = get_objective(method)
    spec = objective_cls.spec
    config = method_config(method, options)
    train = train or TrainConfig()
    if spec.subspace is not None and subspace is None:
        raise HookunlearnError(f"method {method!r} needs a subspace from `hookunlearn build`.")
    if subspace is not None:
        reads = trainer_layer(subspace.hook)
        if layer is None:
            layer = reads
        elif layer != reads and spec.subspace is not None:
            raise HookunlearnError(
                f"layer {layer}: the trainer would read blocks.{layer}.hook_resid_post, but the subspace "
                f"(and its SAE) is at {subspace.hook}, which is blocks.{reads}.hook_resid_post; "
                f"leave the layer unset or pass {reads}."
            )
    if layer is None:
        raise HookunlearnError(f"method {method!r}: give the hooked layer (or a subspace that names it).")
    forget_data = _side(model, spec, "forget", forget, targets, max_tokens)
    retain_data = (
        _side(model, spec, "retain", retain, known, max_tokens)
        if spec.retain
        else tokenize_texts(model, retain, max_tokens)
        if retain
        else forget_data
    )
    extra: dict[str, Any] = {}
    if spec.needs_reference_nll:
        extra["reference_nll"] = sequence_nll(model, forget_data)
    context = ObjectiveContext(
        d_model=model.cfg.d_model, layer=layer, seed=train.seed, subspace=subspace, sae=sae, extra=extra
    )
    objective = objective_cls(config, context)
    stage_context = StageContext(subspace=subspace, seed=train.seed)
    trainer_stages = [
        get_stage(ref.name).STAGE(stage_config(ref), stage_context)
        for ref in refs
        if ref.spec.where == "trainer"
    ]
    after = [ref for ref in refs if ref.spec.where == "after"]
    base_state = (
        {k: v.detach().to("cpu", copy=True) for k, v in model.state_dict().items()} if after else None
    )
    trainer = Trainer(
        model,
        objective,
        layer=layer,
        forget=forget_data,
        retain=retain_data,
        config=train,
        stages=trainer_stages,
    )
    resumed_from = None
    if resume:
        if out_dir is None:
            raise HookunlearnError("resume needs the run's output directory.")
        resumed_from = trainer.load_checkpoint(out_dir / "checkpoints")
    from hookunlearn import distributed

    writes = out_dir if distributed.is_rank_zero() else None  # under torchrun rank 0 writes the log
    if writes is not None:
        writes.mkdir(parents=True, exist_ok=True)
    result = trainer.run(out_dir=writes, progress=progress)
    result.resumed_from = resumed_from
    stage_records = [
        stage_record(ref, result.stages.get(ref.name, {})) for ref in refs if ref.spec.where == "trainer"
    ]
    stage_records += run_after_stages(model, after, world_dir)
    initial = trainer.initial
    if base_state is not None:
        current = model.state_dict()
        initial = {k: v for k, v in base_state.items() if not torch.equal(v, current[k].detach().cpu())}
    changed = {
        name: float(
            (current_value.detach().cpu() - initial[name].cpu()).norm()
            / initial[name].norm().clamp(min=1e-12)
        )
        for name, current_value in backend_of(model).state_dict(model).items()
        if name in initial
    }
    return UnlearnResult(
        method=method,
        layer=layer,
        train=result,
        method_config=dataclasses.asdict(config),
        train_config=dataclasses.asdict(train),
        state=objective.state(),
        changed=changed,
        initial=initial,
        stages=stage_records,
        truncated={"forget": forget_data.truncated, "retain": retain_data.truncated},
    )


# ---------------------------------------------------------------------------------------------
# The runner


@dataclass(frozen=True)
class UnlearnConfig:
    """Everything ``hookunlearn unlearn`` takes; `unlearn(config)` runs it."""

    out: str
    """The run directory (with the exported checkpoint in ``model/``)."""
    method: str = "sspu"
    """A weight-editing method (`hookunlearn.objectives.METHODS`) or an intervention (``clamp``)."""
    subspace: str | None = None
    """A `build` directory (needed by methods that declare a subspace)."""
    model: str | None = None
    """Model spec (default: the subspace's model, else ``world``)."""
    layer: int | None = None
    forget: str | None = None
    """Forget corpus spec (default on a plug-in's model, e.g. the world: the method's own)."""
    retain: str | None = None
    text_column: str = "text"
    entities: str | None = None
    """Entity prompts (``set`` target: forget side, known: retain side) for methods that read them."""
    template: str | None = "bare"
    options: Mapping[str, Any] = field(default_factory=dict)
    """The method's (or intervention's) options, checked against its config."""
    train: TrainConfig = field(default_factory=TrainConfig)
    stages: tuple[str, ...] = ()
    """Robustness stages, ``NAME[:KEY=VALUE,...]`` (`hookunlearn.robust.STAGES`), in order."""
    max_tokens: int | None = None
    resume: bool = False
    export: bool = True
    device: str = "auto"
    dtype: str = "float32"
    force: bool = False
    backend: str | None = None
    """``hooked`` or ``bridge`` (`hookunlearn.backends`); default: the subspace's, else ``hooked``."""
    n_devices: int = 1
    """``hooked`` backend: spread the model's blocks over this many CUDA devices (`load_model`)."""
    device_map: str | None = None
    """``bridge`` backend: ``auto``, ``balanced``, ``balanced_low_0``, ``sequential`` or a JSON file (`load_model`)."""


@dataclass
class UnlearnRun:
    """What `unlearn` wrote."""

    out: Path
    kind: str
    """``unlearned`` (a trained run) or ``intervention``."""
    method: str
    changed: dict[str, float] = field(default_factory=dict)
    exported: bool = False
    intervention: Any = None
    """The intervention object, for ``kind == "intervention"``."""
    truncated: dict[str, int] = field(default_factory=dict)
    """Per side: texts cut to the token limit (also in the manifest's ``extra.truncated_texts``)."""


def staging_dir(out: Path) -> Path:
    return out.with_name(out.name + ".partial")


def method_names() -> tuple[str, ...]:
    """Every name ``unlearn --method`` accepts: the weight-editing methods, then the interventions."""
    from hookunlearn.interventions import INTERVENTIONS
    from hookunlearn.objectives import METHODS

    return (*METHODS, *INTERVENTIONS)


def check_method(name: str) -> None:
    if name not in method_names():
        raise HookunlearnError(f"--method {name!r}: choose one of {', '.join(method_names())}.")


def default_data(spec: MethodSpec, config: UnlearnConfig, model_spec: str) -> tuple[str | None, str | None]:
    """``forget``/``retain`` as given; on a plug-in's model (the embedded world), the method's
    declared default data when not given (for any other model there is no default)."""
    from hookunlearn.sources import plugin_of_model

    if plugin_of_model(model_spec) is None:
        return config.forget, config.retain
    return (
        config.forget or spec.world_data.get("forget"),
        config.retain or spec.world_data.get("retain"),
    )


def unlearn(config: UnlearnConfig, *, progress: Progress | None = None) -> UnlearnRun:
    """Run ``config``: load the model (the subspace's processing) and SAE, train, export, write."""
    from hookunlearn.artifacts import (
        Manifest,
        check_can_write,
        check_compatible,
        fingerprint_texts,
        read_manifest,
        save_tensors,
        write_json,
    )
    from hookunlearn.data import load_records, load_texts
    from hookunlearn.entities import parse_entity_prompts
    from hookunlearn.models import load_model, model_info
    from hookunlearn.processing import WeightProcessing
    from hookunlearn.recipes import check_active_recipe
    from hookunlearn.saes import load_sae

    check_method(config.method)
    if config.backend is not None:
        check_backend(config.backend)
    out = Path(config.out)
    check_can_write(out, force=config.force)
    from hookunlearn import distributed
    from hookunlearn.models import check_placement

    # with --backend given, every placement check runs now; otherwise the backend's own checks
    # (n_devices with hooked, device_map with bridge) wait until it is known (the subspace's) and
    # only torchrun and the device count are checked now
    if config.backend is not None:
        check_placement(
            backend=config.backend,
            device=config.device,
            n_devices=config.n_devices,
            device_map=config.device_map,
        )
    else:
        check_placement(
            backend="bridge" if config.device_map is not None else "hooked",
            device=config.device,
            n_devices=config.n_devices if config.device_map is None else 1,
            device_map=config.device_map,
        )
    distributed.init_from_env(config.device)  # under torchrun: data-parallel over the micro-batches
    from hookunlearn.artifacts import check_not_input

    check_not_input(out, {"SUBSPACE_DIR": config.subspace, "--model": config.model})
    from hookunlearn.interventions import INTERVENTIONS, get_intervention

    # options are checked before any loading: a typo is an error in a second, not after the model loads
    if config.method in INTERVENTIONS:
        module = get_intervention(config.method)
        intervention_config = config_from_options(
            module.Config, config.options, f"intervention {config.method!r}"
        )
    else:
        method_config(config.method, config.options)
    from hookunlearn.robust import check_stage_backend, check_stages

    if config.stages and config.method in INTERVENTIONS:
        raise HookunlearnError(
            f"--stage: {config.method} is an intervention (it trains nothing); stages need a method."
        )
    refs = check_stages(config.stages)
    subspace = Subspace.load(config.subspace) if config.subspace else None
    manifest_in = read_manifest(config.subspace, kind="subspace") if config.subspace else None
    spec = config.model or (subspace.model.get("spec") if subspace else None) or "world"
    from hookunlearn.robust import check_stage_inputs

    # a stage's inputs (distill's text, lat's subspace) are checked before the model loads
    check_stage_inputs(refs, world_dir=_world_dir(spec), subspace=subspace is not None)
    # the subspace's SAE was checked against a model loaded with this processing: load the same way
    recorded = subspace.model.get("processing") if subspace is not None else None
    processing = WeightProcessing.parse(recorded) if recorded else None
    backend = config.backend or (subspace.model.get("backend") if subspace is not None else None) or "hooked"
    check_stage_backend(refs, backend)
    model = load_model(
        spec,
        device=config.device,
        dtype=config.dtype,
        processing=processing,
        backend=backend,
        n_devices=config.n_devices,
        device_map=config.device_map,
    )
    if manifest_in is not None:
        check_compatible(manifest_in, model=model_info(model).to_dict(), source=f"subspace {config.subspace}")
    sae = load_sae(subspace.sae["spec"], model) if subspace is not None and subspace.sae.get("spec") else None
    check_active_recipe(model=model, sae=sae)

    if config.method in INTERVENTIONS:
        return _write_intervention(config, intervention_config, subspace, sae, model_info(model).to_dict())

    method = method_spec(config.method)
    data: dict[str, Any] = {}
    targets = known = None
    forget, retain = default_data(method, config, spec)
    if "entities" in method.forget and forget is None and not config.entities:
        raise HookunlearnError(
            f"{config.method} on model {spec!r}: pass --forget (texts about the targets) and/or --entities "
            "(prompts with target and known people); the world's data is the default only for the world model."
        )
    if "entities" not in method.forget and (forget is None or (method.retain and retain is None)):
        raise HookunlearnError(
            f"method {config.method!r} on model {spec!r}: pass --forget and --retain (corpora of your data); "
            "the world's corpora are the default only for the world model."
        )
    if config.entities and "entities" in (*method.forget, *method.retain):
        prompts = parse_entity_prompts(
            load_records(config.entities), config.entities, template=config.template
        )
        targets = [p for p in prompts if p.set == "target"]
        known = [p for p in prompts if p.set == "known"]
        data["entities"] = {"spec": config.entities, **fingerprint_texts(p.prompt for p in prompts)}
    forget_texts = load_texts(forget, config.text_column) if forget else None
    retain_texts = load_texts(retain, config.text_column) if retain else None
    if forget_texts is not None:
        data["forget"] = {"spec": forget, **fingerprint_texts(forget_texts)}
    if retain_texts is not None:
        data["retain"] = {"spec": retain, **fingerprint_texts(retain_texts)}

    stage = staging_dir(out)
    resumable = any((stage / "checkpoints").glob("step_*"))
    if config.resume:
        if not resumable:
            hint = (
                "pass --force (without --resume) to start over"
                if stage.exists()
                else "start without --resume"
            )
            raise HookunlearnError(f"--resume: no checkpoint of an interrupted run at {stage}; {hint}.")
    elif stage.exists():
        if not config.force:
            raise HookunlearnError(
                f"an interrupted run is staged at {stage}; continue it with --resume, or pass --force to start over."
                if resumable
                else f"an interrupted run without a checkpoint is staged at {stage}; pass --force to start over."
            )
        if distributed.is_rank_zero():
            shutil.rmtree(stage)
    distributed.barrier()  # the staging directory is settled before any rank trains

    try:
        result = _train_staged(
            stage,
            model,
            config.method,
            subspace=subspace,
            sae=sae,
            layer=config.layer,
            forget=forget_texts,
            retain=retain_texts,
            targets=targets,
            known=known,
            options=config.options,
            train=config.train,
            max_tokens=config.max_tokens,
            out_dir=stage,
            resume=config.resume,
            progress=progress,
            stages=config.stages,
            world_dir=_world_dir(spec),
        )
    except HookunlearnError:
        if not any((stage / "checkpoints").glob("step_*")):
            shutil.rmtree(stage, ignore_errors=True)  # nothing to resume: leave nothing behind
        raise
    if not distributed.is_rank_zero():  # every rank holds the same trained model; rank 0 writes it
        distributed.barrier()
        return UnlearnRun(out, "unlearned", config.method, changed=result.changed, exported=config.export)
    metadata = {
        "method": config.method,
        "method_options": result.method_config,
        "train": result.train_config,
        "layer": result.layer,
        "trained_parameters": result.train.trainable,
        "relative_change": result.changed,
        "stages": result.stages,
        # absolute here; the export writes local paths relative to itself (hf_files.portable_paths)
        "inputs": {
            "subspace": str(Path(config.subspace).resolve()) if config.subspace else None,
            "model": spec
            if _world_dir(spec) is not None or not Path(spec).is_dir()
            else str(Path(spec).resolve()),
        },
        "data": data,
    }
    save_tensors(stage / "tensors.safetensors", result.state or {})
    if config.export:
        from hookunlearn.export import export_model

        source = model_info(model)
        export_model(
            model,
            stage / "model",
            source_dir=source.name if source.source == "local" else None,
            metadata=metadata,
            force=True,
            # the base model = the edited one with its trained parameters at their initial values
            reference={**backend_of(model).state_dict(model), **result.initial},
        )
    manifest = Manifest(
        kind="unlearned",
        command=f"hookunlearn unlearn --method {config.method}",
        options={
            "method": config.method,
            "method_options": result.method_config,
            "train": result.train_config,
            "stages": list(config.stages),
        },
        model=model_info(model).to_dict(),
        saes=[dict(subspace.sae)] if subspace is not None else [],
        hook=subspace.hook if subspace is not None else resid_post_hook(result.layer),
        data=data,
        seed=config.train.seed,
        inputs={"subspace": config.subspace} if config.subspace else {},
        extra={
            "final": result.train.final,
            "relative_change": result.changed,
            "resumed_from": result.train.resumed_from,
            "truncated_texts": result.truncated,
            "exported": config.export,
        },
    )
    (stage / "manifest.json").write_text(manifest.to_json(), encoding="utf-8")
    write_json(stage / "hookunlearn_run.json", metadata)
    faults.reached("rename")
    if out.exists():
        shutil.rmtree(out)  # --force was checked before any work
    os.replace(stage, out)
    distributed.barrier()
    return UnlearnRun(
        out,
        "unlearned",
        config.method,
        changed=result.changed,
        exported=config.export,
        truncated=result.truncated,
    )


def _train_staged(stage: Path, *args: Any, **kwargs: Any) -> UnlearnResult:
    """`unlearn_model` with a Ctrl-C outside the training loop (tokenising, the reference pass)
    turned into `RunInterrupted`; inside the loop the trainer saves a checkpoint first."""
    from hookunlearn.train import RunInterrupted

    try:
        return unlearn_model(*args, **kwargs)
    except KeyboardInterrupt:
        saved = any((stage / "checkpoints").glob("step_*"))
        raise RunInterrupted(
            f"interrupted; {'the last checkpoint in ' + str(stage / 'checkpoints') + ' is intact, continue with --resume' if saved else 'nothing to resume, start over with --force'}."
        ) from None


def _world_dir(model_spec: str) -> Path | None:
    """The world directory when the model is the embedded world's (``distill``'s default data)."""
    from hookunlearn.sources import plugin_of_model

    if plugin_of_model(model_spec) != "world":
        return None
    from hookunlearn.world.assets import world_dir

    return world_dir()


def _write_intervention(
    config: UnlearnConfig, options: Any, subspace: Subspace | None, sae: SAE | None, model: dict[str, Any]
) -> UnlearnRun:
    from hookunlearn.interventions import get_intervention

    module = get_intervention(config.method)
    if subspace is None or sae is None:
        raise HookunlearnError(f"{config.method} needs a subspace directory (its relevant latents and SAE).")
    intervention = module.INTERVENTION.from_subspace(subspace, options)
    out = Path(config.out)
    intervention.save(
        out, force=config.force, model=model, manifest_extra={"inputs": {"subspace": config.subspace}}
    )
    return UnlearnRun(out, "intervention", config.method, intervention=intervention)


__all__ = [
    "UnlearnConfig",
    "UnlearnResult",
    "UnlearnRun",
    "method_config",
    "method_names",
    "staging_dir",
    "unlearn",
    "unlearn_model",
]
