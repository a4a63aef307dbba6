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
    suites = [parse_suite_spec(item) if isinstance(item, str) else item for item in config.suites]
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
    return suites


def evaluate(config: EvalConfig, *, progress: Callable[[str], None] | None = None) -> EvalRun:
    """Run ``config``; ``progress`` gets one line per stage."""
    from hookunlearn.artifacts import Manifest, check_can_write
    from hookunlearn.evaluation.report import evaluate as run_suites
    from hookunlearn.evaluation.report import find_train_log, read_report, write_report
    from hookunlearn.evaluation.suites import EvalContext
    from hookunlearn.models import load_model
    from hookunlearn.processing import WeightProcessing

    if config.out is not None:
        check_can_write(config.out, force=config.force)
    suites = build_suites(config)
    loaded_subspace = None
    processing = None
    if config.subspace is not None:
        from hookunlearn.subspace import Subspace

        loaded_subspace = Subspace.load(config.subspace)
        # processing changes no output, only how activations are expressed: load like the SAE's model
        recorded = loaded_subspace.model.get("processing")
        processing = WeightProcessing.parse(recorded) if recorded else None
    base_arg: Any = None
    if config.baseline is not None:
        base_path = Path(config.baseline)
        if (base_path / "report.json").is_file() or (base_path.is_file() and base_path.suffix == ".json"):
            base_arg = read_report(config.baseline)
        else:
            base_arg = load_model(
                config.baseline, device=config.device, dtype=config.dtype, processing=processing
            )
    loaded = load_model(config.model, device=config.device, dtype=config.dtype, processing=processing)
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
        "subspace": config.subspace,
        "intervention": config.intervention,
        "seed": config.seed,
        "batch_size": config.batch_size,
    }
    with applied:
        report = run_suites(
            loaded,
            suites,
            baseline=base_arg,
            context=context,
            options=options,
            train_log=find_train_log(config.model),
        )
    if config.out is not None:
        manifest = Manifest(
            kind="report", command="hookunlearn eval", model=report.evaluated.model, options=options
        )
        write_report(config.out, report, manifest, force=config.force)
    return EvalRun(report, Path(config.out) if config.out is not None else None)


def _load_intervention(run_dir: str) -> Any:
    """The intervention a directory holds, through the registry entry its manifest names."""
    from hookunlearn.artifacts import read_manifest
    from hookunlearn.interventions import get_intervention

    manifest = read_manifest(run_dir, kind="intervention")
    name = manifest.extra.get("method", "clamp")
    return get_intervention(name).INTERVENTION.load(run_dir)
