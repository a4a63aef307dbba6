"""``--config FILE`` and ``--recipe NAME`` on every command: option defaults from a file.

A config file (TOML, or YAML when PyYAML is installed) has one table per command, keyed by the
command's name (``select``, ``build``, ``unlearn``, ``eval``, ``export``, ``demo``, ``world.build``,
``world.info``), holding its options by their names (``batch_size`` or ``batch-size``)::

    [unlearn]
    method = "sspu"
    steps = 300
    option = ["steering_coeff=50", "alpha=100"]

Other tables (``[recipe]``, ``[model]``, ``[sae]``, ``[data]``) are descriptive and ignored here.
Precedence, highest first: flags on the command line, ``--config``, ``--recipe``, built-in
defaults. The values a command ran with (wherever they came from) go into the ``config`` field of
every manifest it writes.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import typer
from typer.core import TyperCommand

DESCRIPTIVE_TABLES = frozenset({"recipe", "model", "sae", "data", "sources"})
_META = "hookunlearn.config"


def read_config_file(path: str | Path) -> dict[str, Any]:
    """Parse a TOML (``.toml``) or YAML (``.yaml``/``.yml``) config file into a dict."""
    file = Path(path)
    if not file.is_file():
        raise typer.BadParameter(f"{file} does not exist or is not a file.", param_hint="'--config'")
    suffix = file.suffix.lower()
    text = file.read_text(encoding="utf-8")
    try:
        if suffix == ".toml":
            import tomllib

            data = tomllib.loads(text)
        elif suffix in (".yaml", ".yml"):
            try:
                import yaml
            except ImportError:  # pragma: no cover - PyYAML comes with datasets/huggingface_hub
                raise typer.BadParameter(
                    f"{file}: reading YAML needs PyYAML (pip install pyyaml); or write the config as TOML.",
                    param_hint="'--config'",
                ) from None
            data = yaml.safe_load(text) or {}
        else:
            raise typer.BadParameter(
                f"{file}: unknown config format {suffix!r}; use .toml, .yaml or .yml.",
                param_hint="'--config'",
            )
    except (ValueError, TypeError) as error:  # tomllib.TOMLDecodeError and yaml.YAMLError subclass these
        raise typer.BadParameter(
            f"{file}: not valid {suffix[1:].upper()}: {error}", param_hint="'--config'"
        ) from None
    except Exception as error:  # yaml.YAMLError does not subclass ValueError
        if type(error).__module__.startswith("yaml"):
            raise typer.BadParameter(f"{file}: not valid YAML: {error}", param_hint="'--config'") from None
        raise
    if not isinstance(data, dict):
        raise typer.BadParameter(
            f"{file}: the top level must be a table of commands.", param_hint="'--config'"
        )
    return data


def command_key(ctx: Any) -> str:
    """``unlearn`` for ``hookunlearn unlearn``; ``world.build`` for ``hookunlearn world build``."""
    parts = ctx.command_path.split()[1:]
    return ".".join(parts) if parts else ctx.command.name or ""


def _section(data: dict[str, Any], key: str, source: str, ctx: Any, hint: str) -> dict[str, Any]:
    section: Any = data
    for part in key.split("."):
        section = section.get(part, {}) if isinstance(section, dict) else {}
    if not isinstance(section, dict):
        raise typer.BadParameter(f"{source}: [{key}] must be a table of options.", param_hint=hint)
    names = {p.name for p in ctx.command.params if p.name and p.expose_value}
    values: dict[str, Any] = {}
    for raw, value in section.items():
        if isinstance(value, dict) and "." not in key and raw in ("build", "info"):
            continue  # [world] holds [world.build] / [world.info]
        name = raw.replace("-", "_")
        if name not in names:
            raise typer.BadParameter(
                f"{source}: [{key}] has no option {raw!r}; options of `hookunlearn {key.replace('.', ' ')}`: "
                f"{', '.join(sorted(names))}.",
                param_hint=hint,
            )
        values[name] = _checked_value(ctx, name, value, f"{source}: [{key}] {raw}", hint)
    return values


def _checked_value(ctx: Any, name: str, value: Any, label: str, hint: str) -> Any:
    """``value`` checked by the option's own type now, so a wrong type names the file and table
    (the value itself is kept: click converts it again when the command runs)."""
    param = next(p for p in ctx.command.params if p.name == name)
    if isinstance(value, dict):
        raise typer.BadParameter(f"{label}: {value!r} is a table; give a value.", param_hint=hint)
    if value is None:
        return value
    descriptor = getattr(param, "type_descriptor", None)
    if descriptor is not None and descriptor.annotation is bool and not isinstance(value, bool):
        raise typer.BadParameter(f"{label}: {value!r} is not true or false.", param_hint=hint)
    if not hasattr(param, "get_runtime_param"):
        return value  # not a Typer parameter (--config, --recipe): click converts it later
    try:
        param.get_runtime_param().coerce(value, param=param, ctx=ctx)  # Typer 0.29's conversion
    except typer.BadParameter as error:
        raise typer.BadParameter(f"{label}: {error.format_message()}", param_hint=hint) from None
    return value


def check_tables(data: dict[str, Any], ctx: Any, source: str, hint: str) -> None:
    """Every top-level table names a command (or is descriptive): a misspelt ``[unlaern]`` is an
    error that suggests the command, not a table silently ignored."""
    import difflib

    root = ctx.find_root().command
    commands = dict(getattr(root, "commands", {}))
    known = set(commands) | DESCRIPTIVE_TABLES
    for name, value in data.items():
        if name not in known:
            close = difflib.get_close_matches(name, sorted(known), n=1)
            raise typer.BadParameter(
                f"{source}: [{name}] is not a command's table"
                + (f" (did you mean [{close[0]}]?)" if close else "")
                + f"; tables: {', '.join(sorted(known))}.",
                param_hint=hint,
            )
        group = commands.get(name)
        sub = getattr(group, "commands", None)
        if sub is not None and isinstance(value, dict):
            for inner, table in value.items():
                if isinstance(table, dict) and inner not in sub:
                    raise typer.BadParameter(
                        f"{source}: [{name}.{inner}] is not a command's table; tables of [{name}]: "
                        f"{', '.join(sorted(sub))}.",
                        param_hint=hint,
                    )


def _refresh(ctx: Any) -> None:
    meta = ctx.meta.setdefault(_META, {})
    ctx.default_map = {**meta.get("recipe_values", {}), **meta.get("config_values", {})}


def _on_config(ctx: Any, param: Any, value: str | None) -> None:
    if value is None:
        return
    data = read_config_file(value)
    check_tables(data, ctx, str(value), "'--config'")
    meta = ctx.meta.setdefault(_META, {})
    meta["config_file"] = str(value)
    meta["config_values"] = _section(data, command_key(ctx), str(value), ctx, "'--config'")
    _refresh(ctx)


def _on_recipe(ctx: Any, param: Any, value: str | None) -> None:
    if value is None:
        return
    from hookunlearn.errors import HookunlearnError
    from hookunlearn.recipes import load_recipe

    try:
        recipe = load_recipe(value)  # a shipped name or a recipe file; checked (sources, options, specs)
    except HookunlearnError as error:
        raise typer.BadParameter(str(error), param_hint="'--recipe'") from None
    key = command_key(ctx)
    data = (
        {key: recipe.commands.get(key, {})} if "." not in key else {}
    )  # recipes configure no `world` command
    meta = ctx.meta.setdefault(_META, {})
    meta["recipe"] = recipe.name
    meta["recipe_ref"] = value
    meta["recipe_version"] = recipe.version
    meta["recipe_values"] = _section(data, key, f"recipe {recipe.name}", ctx, "'--recipe'")
    _refresh(ctx)


def _jsonable(value: Any) -> Any:
    try:
        json.dumps(value)
        return value
    except TypeError:
        if isinstance(value, (list, tuple)):
            return [_jsonable(v) for v in value]
        return str(value)


def _template_params() -> list[Any]:
    """The two options as Typer builds them (declared once on a throw-away command)."""
    template = typer.Typer(add_completion=False)

    @template.command()
    def _options(
        recipe: str | None = typer.Option(
            None,
            "--recipe",
            metavar="NAME",
            is_eager=True,
            expose_value=False,
            callback=_on_recipe,
            help="Option defaults from a named recipe (`hookunlearn recipes` lists them).",
        ),
        config: str | None = typer.Option(
            None,
            "--config",
            metavar="FILE",
            is_eager=True,
            expose_value=False,
            callback=_on_config,
            help="Option defaults from a TOML/YAML file ([command] tables); flags override it.",
        ),
    ) -> None:  # pragma: no cover - never invoked
        pass

    return [p for p in typer.main.get_command(template).params if p.name in ("recipe", "config")]


_PARAMS: list[Any] = []


class ConfigurableCommand(TyperCommand):
    """A Typer command with ``--config`` and ``--recipe``, recording its effective configuration."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        if not _PARAMS:
            _PARAMS.extend(_template_params())
        self.params.extend(_PARAMS)

    def invoke(self, ctx: Any) -> Any:
        from hookunlearn.runconfig import use_run_config

        meta = ctx.meta.get(_META, {})
        sources = {}
        for name in ctx.params:
            source = ctx.get_parameter_source(name)
            if source is not None and source.name == "DEFAULT_MAP":
                sources[name] = "config" if name in meta.get("config_values", {}) else "recipe"
            else:
                sources[name] = source.name.lower() if source is not None else "default"
        effective = {
            "command": f"hookunlearn {command_key(ctx).replace('.', ' ')}",
            "values": {k: _jsonable(v) for k, v in ctx.params.items()},
            "sources": sources,
            "config_file": meta.get("config_file"),
            "recipe": meta.get("recipe"),
            "recipe_ref": meta.get("recipe_ref"),
            "recipe_version": meta.get("recipe_version"),
        }
        with use_run_config(effective):
            return super().invoke(ctx)


def command_option_table(app: typer.Typer) -> dict[str, dict[str, Any]]:
    """Top-level command name -> its options (not its positional arguments) by parameter name,
    read from the Typer app's command functions (signatures rather than click objects: Typer 0.29
    builds its own parameter classes). What `hookunlearn.recipes` checks recipe tables against."""
    import inspect
    import typing

    from hookunlearn.recipes.recipe import CliOption

    out: dict[str, dict[str, Any]] = {}
    for info in app.registered_commands:
        callback = info.callback
        if callback is None:
            continue
        name = info.name or callback.__name__.replace("_", "-")
        hints = typing.get_type_hints(callback)
        options: dict[str, CliOption] = {}
        for parameter in inspect.signature(callback).parameters.values():
            default = parameter.default
            if isinstance(default, typer.models.OptionInfo):
                options[parameter.name] = CliOption(
                    parameter.name, hints.get(parameter.name, Any), default.min, default.max
                )
        out[name] = options
    return out
