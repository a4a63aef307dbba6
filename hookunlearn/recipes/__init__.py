"""Recipes: named, versioned presets a user runs with one flag (``--recipe NAME``).

The shipped recipes are the ``*.toml`` files beside this module; a recipe file anywhere else
(TOML or YAML) loads the same way::

    recipe_names()                       # ['align-entities-gpt2-small', 'align-world', ...]
    recipe = load_recipe("sspu-world")   # or load_recipe("my-recipe.yaml")
    recipe.command_defaults("unlearn")   # {'method': 'sspu', 'steps': 300, 'option': [...], ...}
    validate_recipe(recipe, model=model, sae=sae, records={"forget": rows})  # [] when it fits

The format and its checks are in `hookunlearn.recipes.recipe`. This package imports no torch,
TransformerLens or SAELens until `validate_recipe` is called with loaded objects.
"""

from __future__ import annotations

import difflib
import os
from pathlib import Path
from typing import Any

from hookunlearn.recipes.recipe import (
    ARCHITECTURES,
    SCHEMAS,
    DataSpec,
    ModelSpec,
    Recipe,
    RecipeError,
    SAESpec,
    Schema,
    parse_recipe,
    read_recipe_file,
)
from hookunlearn.recipes.validation import validate_recipe

__all__ = [
    "ARCHITECTURES",
    "check_active_recipe",
    "RECIPES_DIR",
    "SCHEMAS",
    "DataSpec",
    "ModelSpec",
    "Recipe",
    "RecipeError",
    "SAESpec",
    "Schema",
    "load_recipe",
    "recipe_names",
    "recipe_path",
    "validate_recipe",
]

RECIPES_DIR = Path(__file__).resolve().parent
"""Where the shipped ``*.toml`` recipes live."""

_FILE_SUFFIXES = (".toml", ".yaml", ".yml")


def recipe_names() -> list[str]:
    """The shipped recipes' names, sorted."""
    return sorted(path.stem for path in RECIPES_DIR.glob("*.toml"))


def recipe_path(name: str) -> Path:
    """The file of the shipped recipe ``name``; an unknown name is a `RecipeError` listing the known ones."""
    path = RECIPES_DIR / f"{name}.toml"
    if name in recipe_names():
        return path
    known = recipe_names()
    close = difflib.get_close_matches(name, known, n=3, cutoff=0.5)
    hint = f" Did you mean: {', '.join(close)}?" if close else ""
    raise RecipeError(
        f"unknown recipe {name!r}.{hint} Known recipes: {', '.join(known)}. "
        "Pass one of these, or the path of a .toml/.yaml recipe file."
    )


def check_active_recipe(*, model: Any = None, sae: Any = None) -> None:
    """When the running CLI command was given ``--recipe``, check the loaded model (and SAE)
    against it (`validate_recipe`); a mismatch is a `RecipeError` listing every problem."""
    from hookunlearn.runconfig import current_run_config

    ref = current_run_config().get("recipe_ref")
    if not ref:
        return
    problems = validate_recipe(load_recipe(ref), model=model, sae=sae)
    if problems:
        raise RecipeError(
            f"--recipe {ref}: the loaded inputs do not match it: {'; '.join(problems)}. "
            "Use the recipe's model and SAE, or drop --recipe and pass the options yourself."
        )


def load_recipe(name_or_path: str | os.PathLike[str]) -> Recipe:
    """A shipped recipe by name, or a recipe file (``.toml``, ``.yaml``, ``.yml``) by path, checked.

    Raises `RecipeError` (a `HookunlearnError`) for an unknown name, an unreadable file, or a
    malformed recipe; the message names the file and every field that is wrong.
    """
    text = os.fspath(name_or_path)
    candidate = Path(text).expanduser()
    if (
        isinstance(name_or_path, os.PathLike)
        or candidate.suffix.lower() in _FILE_SUFFIXES
        or candidate.is_file()
    ):
        path = candidate
    else:
        path = recipe_path(text)
    recipe = parse_recipe(read_recipe_file(path), where=str(path), path=path.resolve())
    if path.parent.resolve() == RECIPES_DIR and recipe.name != path.stem:
        raise RecipeError(
            f"recipe {path}: [recipe].name {recipe.name!r} must equal the file name {path.stem!r}."
        )
    return recipe
