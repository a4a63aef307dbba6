"""Recipes: named, versioned presets of every command's options, with a source for every number.

A recipe is a TOML file (YAML works too, for ``--config FILE``) with these tables:

- ``[recipe]``: ``name``, ``version`` (an integer, bumped whenever a number changes),
  ``description``, and ``[recipe.sources]`` mapping every hyperparameter to where its value comes
  from (a paper section, the WMDP repository, "our sweep on the world (docs/methods/)");
- ``[model]``: ``spec`` (what `hookunlearn.models.load_model` takes), ``architecture``,
  ``d_model``, ``n_layers`` (from the real model's config) and ``processing`` (default ``none``);
- ``[sae]``: ``spec`` (what `hookunlearn.saes.load_sae` takes), ``hook``, ``d_in``;
- ``[data]``: one entry per dataset, ``NAME = {spec = "...", schema = "text"}``; a command option
  named like an entry (``forget``, ``retain``, ``entities``, ``generic``) must use its spec;
- one table per CLI command (``[select]``, ``[build]``, ``[unlearn]``, ``[eval]``, ...) holding
  that command's options under their Python parameter names (``batch_size``, ``option``, ``suite``).

Loading checks the structure and names the file and the field of every problem; nothing here
imports torch, TransformerLens or SAELens (the CLI imports this module on its fast paths).
"""

from __future__ import annotations

import copy
import re
import tomllib
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from hookunlearn.architectures import SUPPORTED_MODEL_TYPES
from hookunlearn.errors import HookunlearnError
from hookunlearn.hooks import hook_layer, reads_residual

__all__ = [
    "ARCHITECTURES",
    "SCHEMAS",
    "CliOption",
    "DataSpec",
    "ModelSpec",
    "Recipe",
    "RecipeError",
    "SAESpec",
    "Schema",
    "cli_options",
    "register_command_options",
    "parse_recipe",
    "read_recipe_file",
]

ARCHITECTURES: tuple[str, ...] = SUPPORTED_MODEL_TYPES
"""``[model].architecture`` values: the HF model types `hookunlearn.architectures` registers."""


class RecipeError(HookunlearnError):
    """A recipe name is unknown, or a recipe file is malformed (the message names file and field)."""


@dataclass(frozen=True)
class Schema:
    """The columns every record of a dataset role must have."""

    required: tuple[str, ...]
    one_of: tuple[str, ...] = ()
    """At least one of these columns as well (empty: no such condition)."""
    description: str = ""

    def missing(self, record: Mapping[str, Any]) -> list[str]:
        """The required columns ``record`` lacks (an unmet ``one_of`` reads as ``a|b``)."""
        absent = [column for column in self.required if column not in record]
        if self.one_of and not any(column in record for column in self.one_of):
            absent.append("|".join(self.one_of))
        return absent

    def columns(self) -> str:
        names = list(self.required)
        if self.one_of:
            names.append(" or ".join(self.one_of))
        return ", ".join(names)


SCHEMAS: dict[str, Schema] = {
    "text": Schema(("text",), description="a corpus: one document per record"),
    "mc": Schema(("question", "choices", "answer"), description="multiple choice, cais/wmdp schema"),
    "entity_prompts": Schema(
        ("prompt", "set"), ("entity_end_char", "entity"), description="entity prompts (select --entities)"
    ),
    "qa": Schema(("prompt", "answer", "entity", "split"), description="entity QA (eval --qa)"),
    "gsm8k": Schema(("question", "answer"), description="openai/gsm8k main"),
    "truthfulqa": Schema(
        ("question", "mc1_targets", "mc2_targets"), description="truthfulqa/truthful_qa multiple_choice"
    ),
}
"""Schema roles a ``[data]`` entry may name, and the columns each requires."""

# Options that name an input or pick hardware, not a hyperparameter: they need no source.
_INPUT_OPTIONS = frozenset(
    {"model", "sae", "forget", "retain", "entities", "generic", "baseline", "subspace", "intervention",
     "text_column", "device", "dtype", "processing", "mc", "qa", "world", "checkpoint_every", "export"}
)  # fmt: skip
# Throughput only (results do not depend on them) in these commands.
_THROUGHPUT_OPTIONS = {"select": frozenset({"batch_size"}), "eval": frozenset({"batch_size"})}
# Per-run options a preset must never set (where to write, overwrite, resume, the preset itself).
_PER_RUN_OPTIONS = frozenset({"out", "force", "resume", "recipe", "config", "list_suites", "help", "version"})
# Command options that take a dataset spec; a recipe must declare it under the same [data] name.
_DATA_OPTIONS = ("forget", "retain", "entities", "generic")
_RECIPE_TABLES = ("recipe", "model", "sae", "data")
_NAME = re.compile(r"^[a-z0-9][a-z0-9._-]*$")


@dataclass(frozen=True)
class ModelSpec:
    spec: str
    """What `hookunlearn.models.load_model` takes (``world``, ``gpt2``, ``google/gemma-2-2b-it``, a dir)."""
    architecture: str
    """One of `ARCHITECTURES` (the HF ``model_type``)."""
    d_model: int
    n_layers: int
    processing: str = "none"
    """Weight processing the model must be loaded with (what the SAE expects)."""


@dataclass(frozen=True)
class SAESpec:
    spec: str
    """What `hookunlearn.saes.load_sae` takes (``world:2``, ``release:sae_id``, a directory)."""
    hook: str
    """The TransformerLens hook the SAE reads."""
    d_in: int


@dataclass(frozen=True)
class DataSpec:
    name: str
    spec: str
    """What `hookunlearn.data.load_records` takes (a file, ``world:NAME``, ``org/name:config@split``)."""
    schema: str
    """A key of `SCHEMAS`."""
    description: str = ""


@dataclass(frozen=True)
class Recipe:
    """A parsed, structurally valid recipe. ``commands`` maps a CLI command to its option defaults."""

    name: str
    version: int
    description: str
    sources: dict[str, str]
    model: ModelSpec
    sae: SAESpec
    data: dict[str, DataSpec]
    commands: dict[str, dict[str, Any]] = field(default_factory=dict)
    path: Path | None = None
    """The file it was read from."""

    def command_defaults(self, command: str) -> dict[str, Any]:
        """The recipe's options for ``command`` (Python parameter names -> values); a fresh copy.

        A command the recipe does not configure gives ``{}``; a name that is no CLI command is an error.
        """
        known = cli_options() or dict.fromkeys(COMMANDS)
        if command not in known:
            raise RecipeError(
                f"recipe {self.name!r}: {command!r} is not a hookunlearn command; commands: {', '.join(sorted(known))}."
            )
        return copy.deepcopy(self.commands.get(command, {}))

    def default_map(self) -> dict[str, dict[str, Any]]:
        """Every command's defaults, in the shape of click's ``Context.default_map`` for the root group."""
        return copy.deepcopy(self.commands)

    def method_options(self) -> dict[str, Any]:
        """``[unlearn].option`` (``KEY=VALUE`` strings) parsed as the CLI's ``-o`` parses them."""
        return dict(_parse_option(text) for text in self.commands.get("unlearn", {}).get("option", []))

    def hyperparameters(self) -> list[str]:
        """The source keys every recipe must cover: ``model``, ``sae``, ``model.processing`` (when not
        ``none``), ``COMMAND.OPTION`` for each hyperparameter set, ``unlearn.option.KEY`` per ``-o``."""
        keys = ["model", "sae"]
        if self.model.processing.strip().lower() != "none":
            keys.append("model.processing")
        for command, options in self.commands.items():
            exempt = _INPUT_OPTIONS | _THROUGHPUT_OPTIONS.get(command, frozenset())
            for key in options:
                if key == "option":
                    keys += [f"{command}.option.{name}" for name in self.method_options()]
                elif key not in exempt:
                    keys.append(f"{command}.{key}")
        return keys

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready summary (for manifests): name, version, file, model/SAE specs and command options."""
        return {
            "name": self.name,
            "version": self.version,
            "path": str(self.path) if self.path else None,
            "model": self.model.spec,
            "sae": self.sae.spec,
            "data": {name: {"spec": item.spec, "schema": item.schema} for name, item in self.data.items()},
            "commands": self.default_map(),
        }


# ---------------------------------------------------------------------------------------------
# Reading and parsing


def read_recipe_file(path: Path) -> dict[str, Any]:
    """The raw tables of a ``.toml``, ``.yaml`` or ``.yml`` recipe file."""
    suffix = path.suffix.lower()
    if not path.is_file():
        raise RecipeError(f"recipe file {path} does not exist (or is not a file).")
    text = path.read_text(encoding="utf-8")
    if suffix == ".toml":
        try:
            return tomllib.loads(text)
        except tomllib.TOMLDecodeError as exc:
            raise RecipeError(f"recipe file {path}: invalid TOML ({exc}).") from exc
    if suffix in (".yaml", ".yml"):
        try:
            import yaml
        except ImportError:  # pragma: no cover - PyYAML comes with transformers/datasets
            raise RecipeError(
                f"recipe file {path}: reading YAML needs PyYAML (pip install pyyaml), or write it as TOML."
            ) from None
        try:
            data = yaml.safe_load(text)
        except yaml.YAMLError as exc:
            raise RecipeError(f"recipe file {path}: invalid YAML ({exc}).") from exc
        if not isinstance(data, dict):
            raise RecipeError(f"recipe file {path}: the top level must be a mapping of tables.")
        return data
    raise RecipeError(f"recipe file {path}: unknown extension {path.suffix!r}; use .toml, .yaml or .yml.")


def parse_recipe(raw: Mapping[str, Any], where: str, path: Path | None = None) -> Recipe:
    """A `Recipe` from raw tables; every structural problem is reported at once, naming ``where`` and the field."""
    problems: list[str] = []
    options_table = cli_options()
    commands = options_table if options_table is not None else {name: {} for name in COMMANDS}

    unknown_tables = [key for key in raw if key not in _RECIPE_TABLES and key not in commands]
    if unknown_tables:
        problems.append(
            f"unknown table(s) {', '.join(f'[{t}]' for t in unknown_tables)}; tables are "
            f"{', '.join(f'[{t}]' for t in _RECIPE_TABLES)} and one per command ({', '.join(sorted(commands))})"
        )
    head = _table(raw, "recipe", problems)
    if head is None:  # reported once; no cascade of "name is missing", "version is missing", ...
        head = {"name": "unnamed", "version": 1, "description": "-", "sources": {}}
    name = _string(head, "recipe", "name", problems)
    if name and not _NAME.match(name):
        problems.append(f"[recipe].name {name!r}: use lower-case letters, digits, '-', '_' and '.'")
    version = _integer(head, "recipe", "version", problems, minimum=1)
    description = _string(head, "recipe", "description", problems)
    sources = _sources(head, problems)
    _unknown_keys(head, "recipe", {"name", "version", "description", "sources"}, problems)

    model = _model(_table(raw, "model", problems), problems)
    sae = _sae(_table(raw, "sae", problems), problems)
    data = _data(_table(raw, "data", problems), problems)
    parsed_commands = {
        command: _command(command, table, commands[command] if options_table is not None else None, problems)
        for command, table in raw.items()
        if command in commands and isinstance(table, Mapping)
    }
    for command, table in raw.items():
        if command in commands and not isinstance(table, Mapping):
            problems.append(f"[{command}] must be a table of options, not {type(table).__name__}")

    if problems:
        raise _error(where, problems)
    recipe = Recipe(
        name=name,
        version=version,
        description=description,
        sources=sources,
        model=model,
        sae=sae,
        data=data,
        commands=parsed_commands,
        path=path,
    )
    _check_cross_references(recipe, problems)
    if problems:
        raise _error(where, problems)
    return recipe


def _error(where: str, problems: list[str]) -> RecipeError:
    if len(problems) == 1:
        return RecipeError(f"recipe {where}: {problems[0]}.")
    listed = "; ".join(f"({i}) {p}" for i, p in enumerate(problems, start=1))
    return RecipeError(f"recipe {where}: {len(problems)} problems: {listed}.")


# ---------------------------------------------------------------------------------------------
# Tables


def _table(raw: Mapping[str, Any], name: str, problems: list[str]) -> dict[str, Any] | None:
    """The table ``name`` (None, with the problem recorded, when it is missing or not a table)."""
    value = raw.get(name)
    if value is None:
        problems.append(f"missing table [{name}]")
        return None
    if not isinstance(value, Mapping):
        problems.append(f"[{name}] must be a table, not {type(value).__name__}")
        return None
    return dict(value)


def _unknown_keys(table: Mapping[str, Any], name: str, allowed: set[str], problems: list[str]) -> None:
    extra = sorted(set(map(str, table)) - allowed)
    if extra:
        problems.append(
            f"[{name}] has unknown key(s) {', '.join(extra)}; allowed: {', '.join(sorted(allowed))}"
        )


def _string(table: Mapping[str, Any], name: str, key: str, problems: list[str]) -> str:
    value = table.get(key)
    if value is None:
        problems.append(f"[{name}].{key} is missing")
        return ""
    if not isinstance(value, str) or not value.strip():
        problems.append(f"[{name}].{key} must be a non-empty string, not {value!r}")
        return ""
    return value


def _integer(table: Mapping[str, Any], name: str, key: str, problems: list[str], *, minimum: int = 0) -> int:
    value = table.get(key)
    if value is None:
        problems.append(f"[{name}].{key} is missing")
        return 0
    if type(value) is not int:
        problems.append(f"[{name}].{key} must be an integer, not {value!r} ({type(value).__name__})")
        return 0
    if value < minimum:
        problems.append(f"[{name}].{key} must be >= {minimum}, not {value}")
    return value


def _sources(head: Mapping[str, Any], problems: list[str]) -> dict[str, str]:
    sources = head.get("sources")
    if sources is None:
        problems.append("[recipe].sources is missing (a table: hyperparameter -> where its value comes from)")
        return {}
    if not isinstance(sources, Mapping):
        problems.append(f"[recipe].sources must be a table, not {type(sources).__name__}")
        return {}
    out: dict[str, str] = {}
    for key, value in sources.items():
        if not isinstance(value, str) or not value.strip():
            problems.append(
                f"[recipe].sources.{key!r} must be a non-empty string saying where the value comes from"
            )
        else:
            out[str(key)] = value
    return out


def _model(table: dict[str, Any] | None, problems: list[str]) -> ModelSpec:
    if table is None:
        return ModelSpec("", "", 0, 0)
    _unknown_keys(table, "model", {"spec", "architecture", "d_model", "n_layers", "processing"}, problems)
    architecture = _string(table, "model", "architecture", problems)
    if architecture and architecture not in ARCHITECTURES:
        problems.append(f"[model].architecture {architecture!r}: use one of {', '.join(ARCHITECTURES)}")
    processing = table.get("processing", "none")
    if not isinstance(processing, str):
        problems.append(
            f"[model].processing must be a string like 'none' or 'center_writing_weights', not {processing!r}"
        )
        processing = "none"
    else:
        from hookunlearn.processing import WeightProcessing

        try:
            WeightProcessing.parse(processing)
        except HookunlearnError as exc:
            problems.append(f"[model].processing: {exc}")
    return ModelSpec(
        spec=_string(table, "model", "spec", problems),
        architecture=architecture,
        d_model=_integer(table, "model", "d_model", problems, minimum=1),
        n_layers=_integer(table, "model", "n_layers", problems, minimum=1),
        processing=processing,
    )


def _sae(table: dict[str, Any] | None, problems: list[str]) -> SAESpec:
    if table is None:
        return SAESpec("", "", 0)
    _unknown_keys(table, "sae", {"spec", "hook", "d_in"}, problems)
    return SAESpec(
        spec=_string(table, "sae", "spec", problems),
        hook=_string(table, "sae", "hook", problems),
        d_in=_integer(table, "sae", "d_in", problems, minimum=1),
    )


def _data(table: dict[str, Any] | None, problems: list[str]) -> dict[str, DataSpec]:
    out: dict[str, DataSpec] = {}
    for name, entry in (table or {}).items():
        label = f"data.{name}"
        if not isinstance(entry, Mapping):
            problems.append(
                f'[{label}] must be a table like {{spec = "...", schema = "text"}}, not {entry!r}'
            )
            continue
        _unknown_keys(entry, label, {"spec", "schema", "description"}, problems)
        schema = _string(entry, label, "schema", problems)
        if schema and schema not in SCHEMAS:
            problems.append(
                f"[{label}].schema {schema!r} is not a schema role; use one of {', '.join(SCHEMAS)}"
            )
        description = entry.get("description", "")
        out[name] = DataSpec(
            name=name,
            spec=_string(entry, label, "spec", problems),
            schema=schema,
            description=description if isinstance(description, str) else "",
        )
    return out


def _command(
    command: str, table: Mapping[str, Any], params: Mapping[str, CliOption] | None, problems: list[str]
) -> dict[str, Any]:
    """``params`` None: no CLI is loaded, so option names and types are not checked."""
    options: dict[str, Any] = {}
    for key, value in table.items():
        param = params.get(key) if params is not None else None
        if key in _PER_RUN_OPTIONS:
            problems.append(f"[{command}].{key} is set per run, not by a recipe; remove it")
        elif params is None:
            options[key] = list(value) if isinstance(value, list | tuple) else value
        elif param is None:
            choices = sorted(set(params) - _PER_RUN_OPTIONS)
            problems.append(
                f"[{command}].{key} is not an option of `hookunlearn {command}`; its options: {', '.join(choices)}"
            )
        else:
            problem = _check_option_value(param, value)
            if problem:
                problems.append(f"[{command}].{key}: {problem}")
            options[key] = list(value) if isinstance(value, list | tuple) else value
    if command == "unlearn" and isinstance(options.get("option"), list):
        seen: set[str] = set()
        for index, text in enumerate(options["option"]):
            key, sep, _ = str(text).partition("=")
            if not sep or not key.strip():
                problems.append(
                    f"[unlearn].option[{index}] {text!r}: use KEY=VALUE, e.g. 'steering_coeff=50'"
                )
            elif key.strip() in seen:
                problems.append(f"[unlearn].option sets {key.strip()!r} twice")
            seen.add(key.strip())
    return options


# ---------------------------------------------------------------------------------------------
# The CLI's options: the CLI registers a provider when it is imported (`register_command_options`,
# read from its Typer app by `hookunlearn.cli.config.command_option_table`); the library never
# imports the CLI.


@dataclass(frozen=True)
class CliOption:
    """One option of a CLI command: its Python parameter name, type and numeric bounds."""

    name: str
    annotation: Any
    """The resolved annotation (``int``, ``float | None``, ``list[str]``, ...)."""
    minimum: int | float | None = None
    maximum: int | float | None = None


_COMMAND_OPTIONS: Callable[[], dict[str, dict[str, CliOption]]] | None = None
COMMANDS: tuple[str, ...] = ("select", "build", "unlearn", "eval", "export", "demo", "recipes")
"""The commands a recipe may have a table for (the runners of `hookunlearn.pipeline`, plus ``recipes``)."""


def register_command_options(provider: Callable[[], dict[str, dict[str, CliOption]]]) -> None:
    """Set where the commands' options come from: the CLI registers its Typer app here when it is
    imported (the library never imports the CLI)."""
    global _COMMAND_OPTIONS
    _COMMAND_OPTIONS = provider


def cli_options() -> dict[str, dict[str, CliOption]] | None:
    """Command name -> its options by parameter name, from the registered provider (the CLI), or
    None when no CLI is loaded: then a recipe's command tables are checked by command name only."""
    return _COMMAND_OPTIONS() if _COMMAND_OPTIONS is not None else None


def _check_option_value(option: CliOption, value: Any) -> str | None:
    """Why ``value`` cannot be ``option``'s default, or None. Types are strict: ``steps = "300"`` is wrong."""
    import types
    import typing

    if value is None:
        return "null is not a value; leave the key out to keep the command's default"
    annotation = option.annotation
    if typing.get_origin(annotation) in (typing.Union, types.UnionType):
        inner = [arg for arg in typing.get_args(annotation) if arg is not type(None)]
        annotation = inner[0] if len(inner) == 1 else Any
    if typing.get_origin(annotation) is list:
        if not isinstance(value, list | tuple):
            return f"expected a list (the option is repeatable), not {value!r}"
        (item_type,) = typing.get_args(annotation) or (Any,)
        for item in value:
            problem = _check_scalar(item_type, item, option)
            if problem:
                return f"item {item!r}: {problem}"
        return None
    if isinstance(value, list | tuple | Mapping):
        return f"expected a single value, not {value!r}"
    return _check_scalar(annotation, value, option)


def _check_scalar(kind: Any, value: Any, option: CliOption) -> str | None:
    if kind is bool:
        return None if isinstance(value, bool) else f"expected true or false, not {value!r}"
    if kind is int and type(value) is not int:
        return f"expected an integer, not {value!r} ({type(value).__name__})"
    if kind is float and (not isinstance(value, int | float) or isinstance(value, bool)):
        return f"expected a number, not {value!r} ({type(value).__name__})"
    if kind is str and not isinstance(value, str):
        return f"expected a string, not {value!r} ({type(value).__name__})"
    if kind in (int, float):
        if option.minimum is not None and value < option.minimum:
            return f"{value} is below the option's minimum {option.minimum}"
        if option.maximum is not None and value > option.maximum:
            return f"{value} is above the option's maximum {option.maximum}"
    return None


def _parse_option(text: str) -> tuple[str, Any]:
    """``KEY=VALUE`` -> (key, JSON value or the raw string), exactly as the CLI's ``-o`` parses it."""
    import json

    key, _, value = text.partition("=")
    try:
        return key.strip(), json.loads(value)
    except json.JSONDecodeError:
        return key.strip(), value


# ---------------------------------------------------------------------------------------------
# Cross-references: sources, data names, model/SAE specs, the hooked layer


def _check_cross_references(recipe: Recipe, problems: list[str]) -> None:
    needed = recipe.hyperparameters()
    missing = [key for key in needed if key not in recipe.sources]
    if missing:
        problems.append(
            f"[recipe].sources has no entry for {', '.join(missing)}; every hyperparameter needs a source "
            '(a paper section or table, the WMDP repo, or "our sweep on the world (docs/methods/)")'
        )
    allowed = set(needed) | {"model.processing"} | {f"data.{name}" for name in recipe.data}
    allowed |= {f"{command}.{key}" for command, options in recipe.commands.items() for key in options}
    dangling = sorted(set(recipe.sources) - allowed)
    if dangling:
        problems.append(
            f"[recipe].sources has entries for {', '.join(dangling)}, which the recipe does not set "
            "(a typo, or a value that was removed)"
        )

    for command, options in recipe.commands.items():
        for key in _DATA_OPTIONS:
            if key in options:
                entry = recipe.data.get(key)
                if entry is None:
                    problems.append(
                        f"[{command}].{key} = {options[key]!r} has no [data].{key} entry (give its schema there)"
                    )
                elif entry.spec != options[key]:
                    problems.append(
                        f"[{command}].{key} = {options[key]!r} differs from [data].{key}.spec = {entry.spec!r}"
                    )
        if "model" in options and options["model"] != recipe.model.spec:
            problems.append(
                f"[{command}].model = {options['model']!r} differs from [model].spec = {recipe.model.spec!r}"
            )
        if "processing" in options and not _same_processing(options["processing"], recipe.model.processing):
            problems.append(
                f"[{command}].processing = {options['processing']!r} differs from [model].processing = "
                f"{recipe.model.processing!r}"
            )
    select_saes = recipe.commands.get("select", {}).get("sae")
    if select_saes and recipe.sae.spec not in select_saes:
        problems.append(f"[select].sae {select_saes!r} does not include [sae].spec {recipe.sae.spec!r}")
    build_sae = recipe.commands.get("build", {}).get("sae")
    if build_sae and build_sae != recipe.sae.spec:
        problems.append(f"[build].sae = {build_sae!r} differs from [sae].spec = {recipe.sae.spec!r}")

    layer = hook_layer(recipe.sae.hook)
    if layer is not None and recipe.model.n_layers and layer >= recipe.model.n_layers:
        problems.append(
            f"[sae].hook {recipe.sae.hook!r} is in block {layer}, but [model].n_layers is {recipe.model.n_layers}"
        )
    if (
        recipe.model.d_model
        and recipe.sae.d_in
        and recipe.sae.d_in != recipe.model.d_model
        and reads_residual(recipe.sae.hook)
    ):
        problems.append(
            f"[sae].d_in {recipe.sae.d_in} differs from [model].d_model {recipe.model.d_model} "
            f"(the residual hook {recipe.sae.hook!r} has width d_model)"
        )
    _check_trainer_hook(recipe, problems)
    _check_suite_data(recipe, problems)


def _same_processing(a: str, b: str) -> bool:
    from hookunlearn.processing import WeightProcessing

    try:
        return WeightProcessing.parse(a) == WeightProcessing.parse(b)
    except HookunlearnError:
        return False


def _check_trainer_hook(recipe: Recipe, problems: list[str]) -> None:
    """The trainer's activation methods read ``blocks.{layer}.hook_resid_post``; it must be the SAE's activation."""
    unlearn = recipe.commands.get("unlearn")
    if unlearn is None:
        return
    from hookunlearn.interventions import INTERVENTIONS
    from hookunlearn.objectives import METHODS

    name = unlearn.get("method", "sspu")
    if not isinstance(name, str) or not isinstance(unlearn.get("layer", 0), int | None):
        return  # a wrong type is reported by the option check
    method = METHODS.get(name)
    if method is None and name not in INTERVENTIONS:
        problems.append(
            f"[unlearn].method {name!r} is not registered; methods: {', '.join((*METHODS, *INTERVENTIONS))}"
        )
        return
    if method is None or method.kind != "activation":
        return
    hook = recipe.sae.hook
    layer = unlearn.get("layer")
    if layer is None:
        if hook.endswith("hook_resid_post"):
            return
        sae_layer = hook_layer(hook)
        fix = (
            f"; set [unlearn].layer = {sae_layer - 1} (blocks.{sae_layer}.hook_resid_pre is blocks.{sae_layer - 1}.hook_resid_post)"
            if hook.endswith("hook_resid_pre") and sae_layer
            else ""
        )
        problems.append(
            f"[sae].hook {hook!r}: `unlearn` trains against blocks.L.hook_resid_post of the subspace's layer L, "
            f"which is not what this SAE reads{fix}"
        )
        return
    if hook not in {f"blocks.{layer}.hook_resid_post", f"blocks.{layer + 1}.hook_resid_pre"}:
        problems.append(
            f"[unlearn].layer = {layer} trains against blocks.{layer}.hook_resid_post, but [sae].hook is {hook!r}"
        )


_SUITE_DATA_KEYS = ("data", "entities", "fewshot_data")


def _check_suite_data(recipe: Recipe, problems: list[str]) -> None:
    """Data files named inside ``[eval].suite`` specs must be declared in ``[data]`` (so they are validated)."""
    specs = {item.spec for item in recipe.data.values()}
    for index, text in enumerate(recipe.commands.get("eval", {}).get("suite", [])):
        _, _, rest = str(text).partition(":")
        for part in filter(None, (p.strip() for p in rest.split(","))):
            key, sep, value = part.partition("=")
            if sep and key.strip() in _SUITE_DATA_KEYS and value.strip() not in specs:
                problems.append(
                    f"[eval].suite[{index}] {text!r} reads {value.strip()!r}, which no [data] entry declares"
                )
