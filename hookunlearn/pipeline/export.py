"""The ``export`` runner: a model spec or an `unlearn` run directory -> a verified transformers checkpoint."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from hookunlearn.errors import HookunlearnError


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


def export(config: ExportConfig) -> Any:
    """Load ``config.source`` and export it; returns the `hookunlearn.export.ExportResult`."""
    from hookunlearn.artifacts import check_can_write, read_manifest
    from hookunlearn.export import export_model
    from hookunlearn.models import load_model

    check_can_write(config.out, force=config.force)
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
    model = load_model(str(path), device="cpu", processing=config.processing)
    return export_model(model, config.out, force=config.force, tolerance=config.tolerance)
