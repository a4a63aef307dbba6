"""The ``eval`` runner: build the suites, load the model (and baseline, subspace, intervention),
evaluate, and write the report."""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from hookunlearn.errors import HookunlearnError
from hookunlearn.evaluation.report import EvalReport
from hookunlearn.evaluation.suites import Suite


@dataclass(frozen=True)
class EvalConfig:
    """Everything ``hookunlearn eval`` takes; `evaluate(config)` runs it."""

    model: str = "world"
    baseline: str | None = None
    """A base model spec, or an earlier report (``report.json`` or its directory) whose results are reused."""
    oracle: str | None = "auto"
    """The model that never saw the forget set: a model spec, an earlier report of it, ``none``, or
    ``auto`` (the plug-in's oracle, e.g. ``world:oracle``, when the model is the plug-in's model or
    an unlearn export of it and that oracle exists; else none)."""
    suites: tuple[str | Suite, ...] = ()
    """Suite specs (``NAME`` or ``NAME:key=value,...``) or suite objects (default on a plug-in's
    model: its suites; any other model needs at least one)."""
    mc: tuple[str, ...] = ()
    """Data specs for the ``mc`` suite with ``protocol``, ``description`` and ``length_normalized``."""
    qa: tuple[str, ...] = ()
    """Data specs for the ``qa`` suite."""
    protocol: Literal["letter", "continuation"] = "continuation"
    length_normalized: bool = False
    description: str = "auto"
    subspace: str | None = None
    """A `build` directory: the probe suite's hook, centroids and latents (and the model's processing)."""
    limit: int | None = None
    """At most N items per suite whose spec sets no limit."""
    seed: int | None = None
    """The seed of every suite whose spec leaves it unset."""
    out: str | None = None
    force: bool = False
    device: str = "auto"
    dtype: str = "float32"
    batch_size: int = 32
    intervention: str | None = None
    """An intervention directory applied to the evaluated model through hooks."""
    backend: str = "hooked"
    """``hooked`` or ``bridge`` (`hookunlearn.backends`) for the model, the baseline and the oracle."""
    n_devices: int = 1
    """``hooked`` backend: spread the blocks of the model, baseline and oracle over this many CUDA devices (`load_model`)."""
    device_map: str | None = None
    """``bridge`` backend: ``auto``, ``balanced``, ``balanced_low_0``, ``sequential`` or a JSON file (`load_model`)."""
    log_samples: bool = False
    """Also write one JSON record per evaluated item to ``out/samples/<role>/<suite>.jsonl``
    (role: ``model``, ``baseline``, ``oracle``); needs ``out``."""


@dataclass
class EvalRun:
    report: EvalReport
    out: Path | None


def build_suites(config: EvalConfig) -> list[Suite]:
    """The suites of ``config``, with ``limit`` and ``seed`` applied where their spec is silent."""
    from hookunlearn.evaluation.standard import MCConfig, MCSuite, QAConfig, QASuite
    from hookunlearn.evaluation.suites import parse_suite_spec
    from hookunlearn.sources import defaults

    if config.protocol not in ("letter", "continuation"):
        raise HookunlearnError(f"--protocol {config.protocol!r}: choose 'letter' or 'continuation'.")
    import copy

    # a copy of each given suite: `with_defaults` below must not change the caller's objects
    suites = [parse_suite_spec(item) if isinstance(item, str) else copy.copy(item) for item in config.suites]
    suites += [
        MCSuite(
            MCConfig(
                data=spec,
                protocol=config.protocol,
                description=config.description,
                length_normalized=config.length_normalized,
            )
        )
        for spec in config.mc
    ]
    suites += [QASuite(QAConfig(data=spec)) for spec in config.qa]
    if not suites:
        plugin = defaults(config.model)
        if plugin is None or not plugin.eval_suites:
            raise HookunlearnError(
                "no suites given: pass --suite NAME (see --list-suites), --mc or --qa data specs."
            )
        suites = [parse_suite_spec(text) for text in plugin.eval_suites]
    shared = {k: v for k, v in (("limit", config.limit), ("seed", config.seed)) if v is not None}
    for item in suites:
        item.with_defaults(**shared)
    names = [item.instance_name() for item in suites]
    clashes = sorted({name for name in names if names.count(name) > 1})
    if clashes:
        raise HookunlearnError(
            f"two suites are both named {', '.join(map(repr, clashes))} (the same suite on the same data); "
            "give one of them another name, e.g. --suite 'relearn:forget_split=unknown,name=relearn_unknown'."
        )
    for item in suites:
        item.check()  # every input a user can fix, before any model is loaded
    return suites


def _is_report(spec: str) -> bool:
    path = Path(spec)
    return (path / "report.json").is_file() or (path.is_file() and path.suffix == ".json")


def base_model_of(model_spec: str) -> str | None:
    """The model spec an exported unlearn run started from (its ``hookunlearn.json``), or None."""
    import json

    info = Path(model_spec) / "hookunlearn.json"
    if not info.is_file():
        return None
    try:
        metadata = json.loads(info.read_text(encoding="utf-8")).get("metadata") or {}
    except (OSError, UnicodeDecodeError, json.JSONDecodeError):
        return None
    spec = (metadata.get("inputs") or {}).get("model")
    if not isinstance(spec, str) or spec.startswith("<sha256:"):
        return None  # none, or a local path the export hashed (hf_files.portable_path)
    # a local path is stored relative to the export (hookunlearn.hf_files.portable_paths)
    relative = Path(model_spec) / spec
    return str(relative.resolve()) if not Path(spec).is_absolute() and relative.exists() else spec


def resolve_oracle(config: EvalConfig) -> str | None:
    """The oracle spec ``config.oracle`` stands for (None: no oracle); see `EvalConfig.oracle`."""
    from hookunlearn.sources import defaults, resolve

    if config.oracle is None or config.oracle.strip().lower() == "none":
        return None
    if config.oracle != "auto":
        return config.oracle
    for spec in (config.model, base_model_of(config.model)):
        plugin = defaults(spec)
        if plugin is None or plugin.oracle is None or spec == plugin.oracle:
            continue
        try:
            resolve(plugin.oracle, "model")
        except HookunlearnError:
            return None  # the plug-in has no oracle here (a world built without one)
        return plugin.oracle
    return None


def evaluate(config: EvalConfig, *, progress: Callable[[str], None] | None = None) -> EvalRun:
    """Run ``config``; ``progress`` gets one line per stage."""
    from hookunlearn.artifacts import Manifest, check_can_write, run_directory
    from hookunlearn.evaluation.report import evaluate as run_suites
    from hookunlearn.evaluation.report import find_train_log, read_report, write_report_files
    from hookunlearn.evaluation.suites import EvalContext, SampleLog
    from hookunlearn.models import load_model
    from hookunlearn.processing import WeightProcessing

    if config.log_samples and config.out is None:
        raise HookunlearnError(
            "--log-samples writes per-item files into the run directory, and no --out was given; "
            "pass --out DIR (or leave out --log-samples)."
        )
    if config.out is not None:
        from hookunlearn.artifacts import check_not_input

        check_can_write(config.out, force=config.force)
        check_not_input(
            config.out,
            {
                "MODEL": config.model,
                "--baseline": config.baseline,
                "--oracle": config.oracle,
                "--subspace": config.subspace,
                "--intervention": config.intervention,
            },
        )
    suites = build_suites(config)
    from hookunlearn.models import check_placement, resolve_device, resolve_dtype

    resolve_device(config.device)  # named as the option it is, before any model (or --oracle) loads
    resolve_dtype(config.dtype)
    check_placement(
        backend=config.backend, device=config.device, n_devices=config.n_devices, device_map=config.device_map
    )
    placement = {"n_devices": config.n_devices, "device_map": config.device_map}
    from hookunlearn import distributed

    distributed.init_from_env(config.device)  # under torchrun: scored items are sharded across ranks
    distributed.barrier()  # every rank has checked --out before rank 0 can write it
    writes = config.out is not None and distributed.is_rank_zero()  # rank 0 alone writes
    loaded_subspace = None
    processing = None
    if config.subspace is not None:
        from hookunlearn.subspace import Subspace

        loaded_subspace = Subspace.load(config.subspace)
        # processing changes no output, only how activations are expressed: load like the SAE's model
        recorded = loaded_subspace.model.get("processing")
        processing = WeightProcessing.parse(recorded) if recorded else None

    def reference(spec: str | None) -> Any:
        if spec is None:
            return None
        if _is_report(spec):
            return read_report(spec)
        return load_model(
            spec,
            device=config.device,
            dtype=config.dtype,
            processing=processing,
            backend=config.backend,
            **placement,
        )

    oracle_spec = resolve_oracle(config)
    base_arg = _named("--baseline", reference, config.baseline)
    oracle_arg = _named("--oracle", reference, oracle_spec)
    loaded = load_model(
        config.model,
        device=config.device,
        dtype=config.dtype,
        processing=processing,
        backend=config.backend,
        **placement,
    )
    context = EvalContext(batch_size=config.batch_size, progress=progress)
    if loaded_subspace is not None:
        from hookunlearn.saes import load_sae

        context.subspace = loaded_subspace
        if loaded_subspace.sae.get("spec"):
            context.sae = load_sae(loaded_subspace.sae["spec"], loaded)
    applied: Any = contextlib.nullcontext()
    if config.intervention is not None:
        applied = _load_intervention(config.intervention).applied(loaded)
    options = {
        "suites": [item.instance_name() for item in suites],
        "baseline": config.baseline,
        "oracle": oracle_spec,
        "subspace": config.subspace,
        "intervention": config.intervention,
        "seed": config.seed,
        "batch_size": config.batch_size,
        "log_samples": config.log_samples,
    }
    # With --out everything, samples included, is written into the run's staging directory as the
    # suites run, and replaces --out only once the report is complete.
    staging: Any = run_directory(config.out, force=config.force) if writes else contextlib.nullcontext()
    with staging as directory:
        if config.log_samples and directory is not None:
            context.samples = SampleLog(directory)
        with applied:
            report = run_suites(
                loaded,
                suites,
                baseline=base_arg,
                oracle=oracle_arg,
                context=context,
                options=options,
                train_log=find_train_log(config.model),
            )
        if directory is not None:
            manifest = Manifest(
                kind="report", command="hookunlearn eval", model=report.evaluated.model, options=options
            )
            write_report_files(directory, report, manifest)
            from hookunlearn.html_report import write_html_report

            write_html_report(directory, fallback=True)  # report.html, from the files just written
    distributed.barrier()
    return EvalRun(report, Path(config.out) if config.out is not None else None)


def _named(option: str, load: Callable[[str | None], Any], spec: str | None) -> Any:
    """``load(spec)`` with its errors saying which option they are about."""
    try:
        return load(spec)
    except HookunlearnError as exc:
        raise type(exc)(f"{option} {spec}: {exc}") from None


def _load_intervention(run_dir: str) -> Any:
    """The intervention a directory holds, through the registry entry its manifest names."""
    from hookunlearn.artifacts import read_manifest
    from hookunlearn.interventions import get_intervention

    manifest = read_manifest(run_dir, kind="intervention")
    name = manifest.extra.get("method", "clamp")
    return get_intervention(name).INTERVENTION.load(run_dir)
