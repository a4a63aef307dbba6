"""`config_from_options` checks and converts option values by the config's field types."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

import pytest

from hookunlearn.errors import HookunlearnError
from hookunlearn.options import config_from_options


@dataclass(frozen=True)
class _Config:
    rate: float = 1.0
    count: int = 1
    mode: Literal["a", "b"] = "a"
    flag: bool = False
    path: str | None = None
    name: str = "x"


def test_values_convert_where_unambiguous() -> None:
    config = config_from_options(_Config, {"rate": 2, "count": 1e6, "path": None, "name": 7}, "t")
    assert config.rate == 2.0 and isinstance(config.rate, float)
    assert config.count == 1_000_000 and isinstance(config.count, int)
    assert config.path is None and config.name == "7"
    assert math.isnan(config_from_options(_Config, {"rate": "nan"}, "t").rate)
    assert config_from_options(_Config, {"rate": ".5"}, "t").rate == 0.5


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"rate": "fast"}, "is not a number"),
        ({"count": 1.5}, "is not an integer"),
        ({"count": "3x"}, "is not an integer"),
        ({"mode": "c"}, "is not one of"),
        ({"flag": "yes"}, "is not true or false"),
        ({"name": True}, "is not text"),
        ({"nope": 1}, "has no option"),
    ],
)
def test_wrong_types_are_one_line_errors_naming_the_option(options, message) -> None:
    with pytest.raises(HookunlearnError, match=message) as error:
        config_from_options(_Config, options, "method 'm'")
    assert "method 'm'" in str(error.value) and "\n" not in str(error.value)
