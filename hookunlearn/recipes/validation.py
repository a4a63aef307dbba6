"""Does a recipe fit what was actually loaded? Model, SAE and dataset records, checked against it.

`validate_recipe` returns a list of problems (empty: it fits) and raises nothing, so a caller can
show all of them at once. Each problem names the recipe field and the loaded value::

    model = load_model(recipe.model.spec, processing=recipe.model.processing)
    sae = load_sae(recipe.sae.spec, model)
    problems = validate_recipe(recipe, model=model, sae=sae, records={"forget": load_records(...)})
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from hookunlearn.recipes.recipe import SCHEMAS, Recipe

__all__ = ["validate_recipe"]


def validate_recipe(
    recipe: Recipe,
    *,
    model: Any = None,
    sae: Any = None,
    records: Mapping[str, Sequence[Mapping[str, Any]]] | None = None,
) -> list[str]:
    """Problems between ``recipe`` and a loaded model, SAE and records (each optional); ``[]`` if none.

    Args:
        recipe: a loaded `Recipe`.
        model: a `HookedTransformer` (from `hookunlearn.models.load_model`): its architecture,
            ``d_model``, ``n_layers`` and weight processing must be the recipe's ``[model]``.
        sae: a SAELens SAE (from `hookunlearn.saes.load_sae`): its hook and ``d_in`` must be the
            recipe's ``[sae]``; with ``model``, the hook must exist there with width ``d_in``, and
            the processing the SAE expects must be the model's.
        records: ``[data]`` name -> records; each record must have its schema's columns. Names
            not given are not checked; names the recipe does not declare are a problem.
    """
    problems: list[str] = []
    if model is not None:
        problems += _model_problems(recipe, model)
    if sae is not None:
        problems += _sae_problems(recipe, sae, model)
    for name, rows in (records or {}).items():
        problems += _record_problems(recipe, name, rows)
    return problems


def _model_problems(recipe: Recipe, model: Any) -> list[str]:
    from hookunlearn.models import model_info
    from hookunlearn.processing import WeightProcessing

    info = model_info(model)
    expected = recipe.model
    problems = []
    if info.architecture != expected.architecture:
        problems.append(
            f"model {info.spec!r}: architecture is {info.architecture!r}, the recipe's [model].architecture is "
            f"{expected.architecture!r}"
        )
    for field in ("d_model", "n_layers"):
        actual, wanted = getattr(info, field), getattr(expected, field)
        if actual != wanted:
            problems.append(
                f"model {info.spec!r}: {field} is {actual}, the recipe's [model].{field} is {wanted}"
            )
    wanted_processing = WeightProcessing.parse(expected.processing)
    if info.processing != wanted_processing:
        problems.append(
            f"model {info.spec!r}: loaded with weight processing '{info.processing.describe()}', the recipe's "
            f"[model].processing is '{wanted_processing.describe()}' (load it with processing="
            f"'{wanted_processing.describe()}')"
        )
    return problems


def _sae_problems(recipe: Recipe, sae: Any, model: Any) -> list[str]:
    from hookunlearn.errors import HookunlearnError
    from hookunlearn.processing import flags_affecting_hook
    from hookunlearn.saes import hook_width, sae_info

    info = sae_info(sae)
    label = f"SAE {info.spec!r}" if info.spec else f"SAE on {info.hook_name!r}"
    expected = recipe.sae
    problems = []
    if info.hook_name != expected.hook:
        problems.append(f"{label}: hook is {info.hook_name!r}, the recipe's [sae].hook is {expected.hook!r}")
    if info.d_in != expected.d_in:
        problems.append(f"{label}: d_in is {info.d_in}, the recipe's [sae].d_in is {expected.d_in}")
    if model is None or not info.hook_name:
        return problems
    if info.hook_name not in model.hook_dict:
        problems.append(
            f"{label}: hook {info.hook_name!r} does not exist in the model ({model.cfg.n_layers} layers)"
        )
        return problems
    try:
        width = hook_width(model, info.hook_name, info.hook_head_index)
    except HookunlearnError as exc:
        problems.append(f"{label}: {exc}")
        return problems
    if info.d_in != width:
        problems.append(
            f"{label}: d_in is {info.d_in}, but {info.hook_name!r} in the model has width {width} "
            f"(d_model {model.cfg.d_model})"
        )
    model_processing = getattr(getattr(model, "hookunlearn_info", None), "processing", None)
    if model_processing is not None:
        relevant = flags_affecting_hook(info.hook_name)
        differing = [f for f in info.expected_processing.differences(model_processing) if f in relevant]
        if differing:
            problems.append(
                f"{label}: expects weight processing '{info.expected_processing.describe()}' at "
                f"{info.hook_name!r}, the model has '{model_processing.describe()}' ({', '.join(differing)} differ)"
            )
    return problems


def _record_problems(recipe: Recipe, name: str, rows: Sequence[Mapping[str, Any]]) -> list[str]:
    entry = recipe.data.get(name)
    if entry is None:
        declared = ", ".join(recipe.data) or "none"
        return [
            f"records given for {name!r}, which the recipe's [data] does not declare (declared: {declared})"
        ]
    schema = SCHEMAS[entry.schema]
    label = f"data {name!r} ({entry.spec}, schema {entry.schema})"
    if not rows:
        return [f"{label}: no records"]
    for index, row in enumerate(rows, start=1):
        missing = schema.missing(row)
        if missing:
            return [
                f"{label}: record {index} lacks column(s) {', '.join(missing)}; the schema needs "
                f"{schema.columns()} (found: {', '.join(map(str, row)) or 'nothing'})"
            ]
    return []
