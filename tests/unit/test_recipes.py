"""Recipes: every shipped recipe parses, cites a source for every number, uses only real CLI options;
unknown names and broken files fail with messages that name the file and the field."""

from __future__ import annotations

import json
import subprocess
import sys
import tomllib
from pathlib import Path
from typing import Any

import hookunlearn.cli.app  # noqa: F401  (registers the CLI options recipes are checked against)
import pytest
import yaml

from hookunlearn.errors import HookunlearnError
from hookunlearn.recipes import (
    ARCHITECTURES,
    RECIPES_DIR,
    SCHEMAS,
    Recipe,
    RecipeError,
    load_recipe,
    recipe_names,
    recipe_path,
)
from hookunlearn.recipes.recipe import cli_options

REQUIRED = {"sspu-wmdp-cyber-gemma2-2b", "align-entities-gpt2-small", "sspu-world", "align-world"}
COMMAND_SECTIONS = ("select", "build", "unlearn", "eval")


@pytest.fixture(scope="module")
def recipes() -> dict[str, Recipe]:
    return {name: load_recipe(name) for name in recipe_names()}


def test_the_required_recipes_ship_and_parse(recipes: dict[str, Recipe]) -> None:
    assert set(recipes) >= REQUIRED
    assert recipe_names() == sorted(path.stem for path in RECIPES_DIR.glob("*.toml"))
    for name, recipe in recipes.items():
        assert recipe.name == name
        assert type(recipe.version) is int and recipe.version >= 1
        assert recipe.description.strip()
        assert recipe.path == recipe_path(name).resolve()
        assert recipe.model.architecture in ARCHITECTURES
        assert {item.schema for item in recipe.data.values()} <= set(SCHEMAS)
        for command in COMMAND_SECTIONS:
            assert recipe.commands.get(command), f"{name}: no [{command}] section"


def test_every_hyperparameter_has_a_source(recipes: dict[str, Recipe]) -> None:
    for name, recipe in recipes.items():
        needed = recipe.hyperparameters()
        assert {"model", "sae", "unlearn.method", "unlearn.lr", "unlearn.steps", "eval.suite"} <= set(needed)
        assert [key for key in needed if key not in recipe.sources] == [], name
        for option in recipe.method_options():
            assert recipe.sources[f"unlearn.option.{option}"].strip(), (name, option)


def test_command_sections_use_only_real_cli_option_names(recipes: dict[str, Recipe]) -> None:
    import inspect

    from hookunlearn.cli.app import app

    # Independently of the loader: the Typer command functions' parameter names.
    functions = {info.name or info.callback.__name__: info.callback for info in app.registered_commands}
    for name in recipes:
        raw = tomllib.loads(recipe_path(name).read_text(encoding="utf-8"))
        for command in COMMAND_SECTIONS:
            parameters = inspect.signature(functions[command]).parameters
            unknown = sorted(set(raw[command]) - set(parameters))
            assert unknown == [], f"{name}: [{command}] keys that are no parameter of `{command}`: {unknown}"
            assert set(raw[command]) <= set(cli_options()[command]), "arguments are not recipe keys"


def test_numbers_match_their_sources(recipes: dict[str, Recipe]) -> None:
    """The world recipes hold docs/methods/index.md's measured defaults; the real ones the real models' sizes."""
    world = recipes["sspu-world"]
    assert world.method_options() == {"steering_coeff": 50, "alpha": 100, "lam": 1, "regularizer": "soft"}
    assert (world.command_defaults("build")["k"], world.command_defaults("unlearn")["lr"]) == (32, 5e-3)
    assert recipes["align-world"].method_options()["alpha"] == 30
    gemma = recipes["sspu-wmdp-cyber-gemma2-2b"]
    assert (gemma.model.spec, gemma.model.d_model, gemma.model.n_layers) == ("google/gemma-2-2b-it", 2304, 26)
    assert gemma.sae.spec.startswith("gemma-scope-2b-pt-res-canonical:") and gemma.sae.d_in == 2304
    assert gemma.data["forget"].spec == "cais/wmdp-corpora:cyber-forget-corpus@train"
    assert (
        "jailbreak:data=cais/wmdp:wmdp-cyber@test,protocol=letter" in gemma.command_defaults("eval")["suite"]
    )
    gpt2 = recipes["align-entities-gpt2-small"]
    assert (gpt2.sae.spec, gpt2.sae.d_in, gpt2.model.n_layers) == (
        "gpt2-small-res-jb:blocks.8.hook_resid_pre",
        768,
        12,
    )
    assert gpt2.command_defaults("unlearn")["layer"] == 7  # what the trainer reads = the SAE's input
    assert "PLACEHOLDER" in gpt2.data["entities"].description and "placeholder" in gpt2.description.lower()


def test_architectures_are_the_loaders() -> None:
    from hookunlearn.models import SUPPORTED_MODEL_TYPES

    assert ARCHITECTURES == SUPPORTED_MODEL_TYPES


def test_registry_saes_exist_in_saelens() -> None:
    from sae_lens.loading.pretrained_saes_directory import get_pretrained_saes_directory

    directory = get_pretrained_saes_directory()
    for name in recipe_names():
        recipe = load_recipe(name)
        if recipe.sae.spec.startswith("world:"):
            continue
        release, sae_id = recipe.sae.spec.split(":", 1)
        assert sae_id in directory[release].saes_map, recipe.sae.spec


def test_command_defaults_are_copies_and_unknown_commands_fail(recipes: dict[str, Recipe]) -> None:
    recipe = recipes["sspu-world"]
    defaults = recipe.command_defaults("unlearn")
    defaults["option"].append("alpha=1")
    assert "alpha=1" not in recipe.command_defaults("unlearn")["option"]
    assert recipe.command_defaults("export") == {}
    assert recipe.default_map()["unlearn"]["method"] == "sspu"
    with pytest.raises(RecipeError, match="'train' is not a hookunlearn command"):
        recipe.command_defaults("train")
    assert json.loads(json.dumps(recipe.to_dict()))["version"] == 1


def test_unknown_recipe_lists_the_known_ones() -> None:
    with pytest.raises(HookunlearnError) as info:
        load_recipe("sspu-wrld")
    message = str(info.value)
    assert "unknown recipe 'sspu-wrld'" in message and "Did you mean: sspu-world" in message
    for name in REQUIRED:
        assert name in message


def test_import_is_light() -> None:
    code = (
        "import sys, hookunlearn.recipes as r; r.load_recipe('sspu-world'); "
        "print([m for m in ('torch', 'transformer_lens', 'sae_lens') if m in sys.modules])"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert result.stdout.strip() == "[]"


# --- broken recipe files ----------------------------------------------------------------------


def _world_raw() -> dict[str, Any]:
    return tomllib.loads(recipe_path("sspu-world").read_text(encoding="utf-8"))


def _write(tmp_path: Path, raw: dict[str, Any], suffix: str = ".yaml") -> Path:
    path = tmp_path / f"broken{suffix}"
    path.write_text(yaml.safe_dump(raw), encoding="utf-8")
    return path


def test_a_copy_in_yaml_loads(tmp_path: Path) -> None:
    recipe = load_recipe(_write(tmp_path, _world_raw()))
    assert recipe.command_defaults("unlearn") == load_recipe("sspu-world").command_defaults("unlearn")


def _fails(tmp_path: Path, raw: dict[str, Any], *fragments: str) -> str:
    path = _write(tmp_path, raw)
    with pytest.raises(RecipeError) as info:
        load_recipe(str(path))
    message = str(info.value)
    assert str(path) in message
    for fragment in fragments:
        assert fragment in message, message
    return message


def test_missing_recipe_table(tmp_path: Path) -> None:
    raw = _world_raw()
    del raw["recipe"]
    message = _fails(tmp_path, raw, "missing table [recipe]")
    assert "name is missing" not in message


def test_version_not_an_integer(tmp_path: Path) -> None:
    raw = _world_raw()
    raw["recipe"]["version"] = "1"
    _fails(tmp_path, raw, "[recipe].version must be an integer, not '1'")
    raw["recipe"]["version"] = 1.5
    _fails(tmp_path, raw, "[recipe].version must be an integer")


def test_hyperparameter_without_source(tmp_path: Path) -> None:
    raw = _world_raw()
    del raw["recipe"]["sources"]["unlearn.lr"]
    raw["unlearn"]["warmup_steps"] = 10
    raw["unlearn"]["option"].append("margin=1")
    _fails(tmp_path, raw, "no entry for", "unlearn.lr", "unlearn.warmup_steps", "unlearn.option.margin")


def test_dangling_source(tmp_path: Path) -> None:
    raw = _world_raw()
    raw["recipe"]["sources"]["unlearn.option.steering_coef"] = "typo"
    _fails(tmp_path, raw, "unlearn.option.steering_coef", "does not set")


def test_unknown_schema_role(tmp_path: Path) -> None:
    raw = _world_raw()
    raw["data"]["forget"]["schema"] = "corpus"
    _fails(tmp_path, raw, "[data.forget].schema 'corpus' is not a schema role", "text, mc, entity_prompts")


def test_command_key_that_is_not_an_option(tmp_path: Path) -> None:
    raw = _world_raw()
    raw["unlearn"]["learning_rate"] = 1e-3
    raw["build"]["out"] = "sub/"
    raw["nonsense"] = {"x": 1}
    _fails(
        tmp_path,
        raw,
        "[unlearn].learning_rate is not an option of `hookunlearn unlearn`",
        "lr",
        "[build].out is set per run",
        "unknown table(s) [nonsense]",
    )


def test_option_values_are_type_checked(tmp_path: Path) -> None:
    raw = _world_raw()
    raw["unlearn"]["steps"] = "300"
    raw["unlearn"]["batch_size"] = 0
    raw["eval"]["suite"] = "qa"
    raw["unlearn"]["option"] = ["alpha"]
    _fails(
        tmp_path,
        raw,
        "[unlearn].steps: expected an integer, not '300'",
        "[unlearn].batch_size: 0 is below the option's minimum 1",
        "[eval].suite: expected a list",
        "[unlearn].option[0] 'alpha': use KEY=VALUE",
    )


def test_inconsistent_specs(tmp_path: Path) -> None:
    raw = _world_raw()
    raw["unlearn"]["forget"] = "world:retain_corpus"
    raw["select"]["model"] = "gpt2"
    raw["sae"]["hook"] = "blocks.2.hook_resid_pre"
    raw["eval"]["suite"] = ["qa:data=other.jsonl"]
    _fails(
        tmp_path,
        raw,
        "[unlearn].forget = 'world:retain_corpus' differs from [data].forget.spec",
        "[select].model = 'gpt2' differs from [model].spec = 'world'",
        "set [unlearn].layer = 1",
        "reads 'other.jsonl', which no [data] entry declares",
    )


def test_bad_toml_and_unknown_extension(tmp_path: Path) -> None:
    bad = tmp_path / "bad.toml"
    bad.write_text("[recipe\nname = 1", encoding="utf-8")
    with pytest.raises(RecipeError, match="invalid TOML"):
        load_recipe(bad)
    other = tmp_path / "recipe.json"
    other.write_text("{}", encoding="utf-8")
    with pytest.raises(RecipeError, match="unknown extension '.json'"):
        load_recipe(other)
    with pytest.raises(RecipeError, match="does not exist"):
        load_recipe(tmp_path / "missing.toml")
