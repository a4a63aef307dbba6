"""The ``export`` runner: a model spec or an `unlearn` run directory -> a verified transformers checkpoint."""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from hookunlearn.errors import HookunlearnError

BOS_CHOICES = {"auto": None, "add": True, "keep": False}


@dataclass(frozen=True)
class ExportConfig:
    source: str
    """A model spec (local HF dir, ``world``, a TL name) or an `unlearn` run directory."""
    out: str
    processing: str = "none"
    """Weight processing to load the model with before exporting."""
    tolerance: float | None = None
    """Max log-prob difference the verification allows (default: the export's, fp32 1e-4)."""
    force: bool = False
    bos: Literal["auto", "add", "keep"] = "auto"
    """Whether the tokenizer prepends BOS with its defaults: ``auto`` when hookunlearn feeds the
    model one (``default_prepend_bos``), ``add``, or ``keep`` the tokenizer as it is."""
    report: str | None = None
    """An eval report (``report.json`` or its directory) whose numbers the model card lists."""
    backend: str = "hooked"
    """``hooked`` or ``bridge`` (`hookunlearn.backends`): which model class loads the model to export."""

    def __post_init__(self) -> None:
        if self.bos not in BOS_CHOICES:
            raise HookunlearnError(f"--bos {self.bos!r}: choose one of {', '.join(BOS_CHOICES)}.")
        if self.tolerance is not None and not (math.isfinite(self.tolerance) and self.tolerance > 0):
            raise HookunlearnError(
                f"--tolerance {self.tolerance:g}: give a finite log-prob difference > 0 (fp32 default: 1e-4)."
            )


def read_report(spec: str) -> dict[str, Any]:
    """The JSON of an eval report given as ``report.json`` or the directory holding it, validated
    as `hookunlearn.evaluation.report.read_report` does (errors name ``--report``)."""
    from hookunlearn.evaluation.report import read_report as read_eval_report

    try:
        return read_eval_report(spec).to_dict()
    except HookunlearnError as exc:
        raise HookunlearnError(f"--report: {exc}") from None


def _check_report_is_of(report: dict[str, Any], model: Any, spec: str) -> None:
    """The model card lists ``report``'s numbers as this checkpoint's: refuse a report of another
    model, or of the model with an intervention's hooks on (which the checkpoint does not carry)."""
    from hookunlearn.models import model_info

    if (report.get("options") or {}).get("intervention"):
        raise HookunlearnError(
            f"--report {spec!r} evaluated the model with an intervention ({report['options']['intervention']}); "
            "an exported checkpoint carries no hooks, so its card cannot list those numbers."
        )
    evaluated = (report.get("evaluated") or {}).get("model") or {}
    info = model_info(model)
    both_local = evaluated.get("source") == "local" and info.source == "local"
    if both_local and Path(str(evaluated.get("name"))).resolve() != Path(info.name).resolve():
        raise HookunlearnError(
            f"--report {spec!r} evaluated {evaluated.get('name')}, not the exported {info.name}; pass the "
            "report of this checkpoint (hookunlearn eval CHECKPOINT --out DIR)."
        )
    if evaluated.get("config_fingerprint") not in (None, info.config_fingerprint):
        raise HookunlearnError(
            f"--report {spec!r} evaluated a model of another architecture or size "
            f"({evaluated.get('architecture')}, d_model {evaluated.get('d_model')}); pass this checkpoint's report."
        )


def _source_metadata(path: Path) -> dict[str, Any] | None:
    """The metadata of an earlier export (an unlearn run's model/): carried into the new record."""
    from hookunlearn.export import read_export_info

    if not (path / "hookunlearn.json").is_file():
        return None
    metadata = dict(read_export_info(path).get("metadata") or {})
    # local inputs were written relative to the earlier export: make them absolute again, so the
    # new record writes them relative to itself (hf_files.portable_paths)
    inputs = dict(metadata.get("inputs") or {})
    for key, value in inputs.items():
        if isinstance(value, str) and not Path(value).is_absolute() and (path / value).exists():
            inputs[key] = str((path / value).resolve())
    if inputs:
        metadata["inputs"] = inputs
    return metadata


def export(config: ExportConfig) -> Any:
    """Load ``config.source`` and export it; returns the `hookunlearn.export.ExportResult`."""
    from hookunlearn.artifacts import check_can_write, check_not_input, read_manifest
    from hookunlearn.export import export_model
    from hookunlearn.models import load_model

    check_can_write(config.out, force=config.force)
    check_not_input(config.out, {"SOURCE": config.source, "--report": config.report})
    report = read_report(config.report) if config.report is not None else None
    path = Path(config.source)
    if (path / "manifest.json").is_file():
        manifest = read_manifest(path)
        if manifest.kind == "intervention":
            raise HookunlearnError(
                f"{config.source} is a {manifest.extra.get('method', 'clamp')} intervention: it changes "
                "activations at inference through hooks and edits no weight, so there is no checkpoint to "
                "export. Evaluate it with the base model instead."
            )
        if manifest.kind == "unlearned" and (path / "model").is_dir():
            path = path / "model"
        else:
            raise HookunlearnError(
                f"{config.source} is a {manifest.kind!r} directory; export needs a model or an unlearn run."
            )
    model = load_model(str(path), device="cpu", processing=config.processing, backend=config.backend)
    if report is not None:
        _check_report_is_of(report, model, config.report or "")
    return export_model(
        model,
        config.out,
        force=config.force,
        tolerance=config.tolerance,
        metadata=_source_metadata(path),
        add_bos=BOS_CHOICES[config.bos],
        report=report,
    )
