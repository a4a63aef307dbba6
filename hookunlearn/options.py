"""``KEY=VALUE`` options and typed configs from them: the one parser (torch-free).

The CLI's ``-o KEY=VALUE``, a recipe's ``[unlearn].option`` list and the library's ``options=``
mappings all become a method's or an intervention's frozen config dataclass through
`config_from_options`: an unknown key is an error that lists the known ones, and an integer given
for a float field becomes a float.
"""

from __future__ import annotations

import dataclasses
import json
import typing
from collections.abc import Mapping
from typing import Any

from hookunlearn.errors import HookunlearnError


def parse_option(text: str) -> tuple[str, Any]:
    """``KEY=VALUE`` -> (key, the JSON value, or the raw string when VALUE is not JSON)."""
    key, sep, value = text.partition("=")
    if not sep or not key.strip():
        raise HookunlearnError(f"--option {text!r}: use KEY=VALUE, e.g. -o steering_coeff=50.")
    try:
        return key.strip(), json.loads(value)
    except json.JSONDecodeError:
        return key.strip(), value


def config_from_options(config_cls: type, options: Mapping[str, Any] | None, label: str) -> Any:
    """``config_cls(**options)``; ``label`` (e.g. ``method 'sspu'``) names the owner in errors."""
    options = dict(options or {})
    known = {f.name for f in dataclasses.fields(config_cls)}
    unknown = sorted(set(options) - known)
    if unknown:
        raise HookunlearnError(
            f"{label} has no option(s) {', '.join(unknown)}; its options: {', '.join(sorted(known)) or 'none'}."
        )
    hints = typing.get_type_hints(config_cls)
    for key, value in options.items():
        options[key] = _coerce(value, hints.get(key), f"{label} option {key}")
    return config_cls(**options)


def _coerce(value: Any, hint: Any, label: str) -> Any:
    """``value`` as the field's type where that is unambiguous (an int for a float, number text
    such as ``nan`` or ``.5`` for a float, an integral float for an int); a value of the wrong type
    is a clear error."""
    if hint is None:
        return value
    args = typing.get_args(hint)
    origin = typing.get_origin(hint)
    if origin is typing.Union or str(origin) == "<class 'types.UnionType'>":
        if value is None and type(None) in args:
            return None
        inner = [a for a in args if a is not type(None)]
        if len(inner) == 1:
            return _coerce(value, inner[0], label)
        return value
    if origin is typing.Literal:
        if value not in args:
            raise HookunlearnError(f"{label}: {value!r} is not one of {', '.join(map(repr, args))}.")
        return value
    if hint is float:
        if isinstance(value, str):
            try:
                return float(value)  # "nan", "inf", ".5": the config's own check judges the value
            except ValueError:
                pass
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise HookunlearnError(f"{label}: {value!r} is not a number.")
        return float(value)
    if hint is int:
        if isinstance(value, float) and value.is_integer():
            return int(value)  # "tokens=1e6"
        if isinstance(value, bool) or not isinstance(value, int):
            raise HookunlearnError(f"{label}: {value!r} is not an integer.")
    if hint is bool and not isinstance(value, bool):
        raise HookunlearnError(f"{label}: {value!r} is not true or false.")
    if hint is str and not isinstance(value, str):
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return str(value)
        raise HookunlearnError(f"{label}: {value!r} is not text.")
    return value


__all__ = ["config_from_options", "parse_option"]
