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
        # "-o alpha=100" parses as an int; a float field takes it as a float
        if hints.get(key) is float and isinstance(value, int) and not isinstance(value, bool):
            options[key] = float(value)
    return config_cls(**options)


__all__ = ["config_from_options", "parse_option"]
