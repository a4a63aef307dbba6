"""Robustness stages: what makes forgetting hold under attack. A torch-free registry, one module
per stage, composable with every weight-editing method (`hookunlearn.objectives.METHODS`).

Two kinds of stage:

- ``trainer`` stages change how the shared trainer takes a step, for any method:
  ``sam`` (sharpness-aware unlearning), ``lat`` (latent adversarial unlearning, a PGD adversary on
  the residual stream, optionally inside span(U_rel)) and ``cir`` (remove the directions the forget
  activations share with general text from every update);
- ``after`` stages run on the unlearned model: ``distill`` (UNDO: a shrink-and-perturb student
  distilled on the unlearned teacher's outputs).

A pipeline is a method plus stages, written ``--stage NAME[:KEY=VALUE,...]`` (repeatable), e.g.
``--method sspu --stage lat:eps=2 --stage distill:alpha=0.5``. Each module defines ``Config`` (a
frozen dataclass: its options) and ``STAGE`` (the class). Adding a stage is one module and one
line in `STAGES`. This module imports no torch.
"""

from __future__ import annotations

import importlib
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

from hookunlearn.errors import HookunlearnError
from hookunlearn.options import config_from_options, parse_option


@dataclass(frozen=True)
class StageSpec:
    """One robustness stage; one registry line."""

    name: str
    module: str
    where: Literal["trainer", "after"]
    """``trainer``: changes every optimiser step of the method's run; ``after``: runs on the
    unlearned model."""
    summary: str
    paper: str
    computes_gradient: bool = False
    """It computes the step's gradient itself (at most one such stage per pipeline)."""
    hooked_only: bool = False
    """It needs a `HookedTransformer` (TransformerLens parameter layout or a copy of the model)."""


STAGES: dict[str, StageSpec] = {spec.name: spec for spec in (
    StageSpec("sam", "hookunlearn.robust.sam", "trainer", "sharpness-aware unlearning: the forget loss at the worst nearby weights", "Fan et al. 2025, arXiv 2502.05374", computes_gradient=True),
    StageSpec("lat", "hookunlearn.robust.lat", "trainer", "latent adversarial unlearning: forget under a PGD adversary on the residual stream (optionally inside span(U_rel))", "Sheshadri et al. 2024, arXiv 2407.15549"),
    StageSpec("cir", "hookunlearn.robust.cir", "trainer", "remove the principal directions forget activations share with general text from each update", "Sondej & Yang 2025, arXiv 2509.11816", computes_gradient=True, hooked_only=True),
    StageSpec("distill", "hookunlearn.robust.distill", "after", "UNDO: distil the unlearned model into a shrink-and-perturb copy of itself", "Lee et al. 2025, arXiv 2506.06278", hooked_only=True),
)}  # fmt: skip
"""Every robustness stage, by name (one line each)."""


@dataclass(frozen=True)
class StageRef:
    """A stage named in a pipeline with its options (checked against its config)."""

    name: str
    options: Mapping[str, Any]

    @property
    def spec(self) -> StageSpec:
        return stage_spec(self.name)

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "options": dict(self.options)}


def stage_spec(name: str) -> StageSpec:
    if name not in STAGES:
        raise HookunlearnError(f"stage {name!r} does not exist; choose one of {', '.join(STAGES)}.")
    return STAGES[name]


def get_stage(name: str) -> Any:
    """The module of stage ``name`` (its ``Config`` and ``STAGE``)."""
    return importlib.import_module(stage_spec(name).module)


def parse_stage(text: str) -> StageRef:
    """``NAME`` or ``NAME:KEY=VALUE,KEY=VALUE`` (values are JSON where they parse, else strings)."""
    name, _, rest = text.strip().partition(":")
    name = name.strip()
    stage_spec(name)
    options = dict(parse_option(item) for item in rest.split(",") if item.strip())
    return StageRef(name, options)


def check_stage_backend(refs: Iterable[StageRef], backend: str) -> None:
    """Refuse, before any loading, a stage that needs a `HookedTransformer` on another backend."""
    for ref in refs:
        if ref.spec.hooked_only and backend != "hooked":
            raise HookunlearnError(
                f"--stage {ref.name}: it needs the hooked backend (a HookedTransformer), but the backend is "
                f"{backend!r}; drop the stage or use --backend hooked."
            )


def check_stages(stages: Iterable[StageRef | str]) -> tuple[StageRef, ...]:
    """Each stage resolved and its options checked against its config (imports the stage's module,
    so torch); a stage named twice, or an ``after`` stage before a ``trainer`` one, is an error."""
    refs = tuple(parse_stage(s) if isinstance(s, str) else s for s in stages)
    seen: set[str] = set()
    after_seen = False
    for ref in refs:
        if ref.name in seen:
            raise HookunlearnError(
                f"--stage {ref.name}: named twice; give each stage once with all its options."
            )
        seen.add(ref.name)
        if ref.spec.where == "after":
            after_seen = True
        elif after_seen:
            raise HookunlearnError(
                f"--stage {ref.name}: trainer stages change the method's run, so they come before "
                "'after' stages (distill) in the pipeline."
            )
        stage_config(ref)
    gradient = [ref.name for ref in refs if ref.spec.computes_gradient]
    if len(gradient) > 1:
        raise HookunlearnError(
            f"--stage: {' and '.join(gradient)} both compute the step's gradient; use one of them."
        )
    return refs


def stage_config(ref: StageRef) -> Any:
    """The stage's config dataclass with its options applied (an unknown key lists the known ones)."""
    return config_from_options(get_stage(ref.name).Config, ref.options, f"stage {ref.name!r}")


def check_stage_inputs(refs: Iterable[StageRef], *, world_dir: Any, subspace: bool) -> None:
    """Each stage's own check of what it reads (``check_inputs`` in its module, when it has one:
    distill's text, lat's subspace), before any model loads."""
    for ref in refs:
        check = getattr(get_stage(ref.name), "check_inputs", None)
        if check is not None:
            check(stage_config(ref), world_dir=world_dir, subspace=subspace)


def stage_record(ref: StageRef, cost: Mapping[str, Any]) -> dict[str, Any]:
    """What a run records of a stage: its name, its options (all of them) and its cost."""
    import dataclasses

    return {**ref.to_dict(), "options": dataclasses.asdict(stage_config(ref)), "cost": dict(cost)}


def run_after_stages(model: Any, refs: Iterable[StageRef], world_dir: Any) -> list[dict[str, Any]]:
    """Run the ``after`` stages of ``refs`` on ``model`` (in place), in order; their records."""
    return [
        stage_record(
            ref, get_stage(ref.name).STAGE(stage_config(ref)).run(model, world_dir=world_dir).to_dict()
        )
        for ref in refs
        if ref.spec.where == "after"
    ]


def pipeline_name(method: str, stages: Sequence[StageRef]) -> str:
    """``sspu+lat+distill``: how tables name a method with its stages."""
    return "+".join([method, *(ref.name for ref in stages)])


__all__ = [
    "STAGES",
    "StageRef",
    "StageSpec",
    "check_stage_backend",
    "check_stage_inputs",
    "check_stages",
    "get_stage",
    "parse_stage",
    "pipeline_name",
    "run_after_stages",
    "stage_config",
    "stage_record",
    "stage_spec",
]
