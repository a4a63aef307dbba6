"""Test-only fault injection: kill the process at a named point, as a crash or ``kill -9`` would.

``HOOKUNLEARN_FAULT=point[,point...]`` (read once, at import) names the points; ``point:N`` kills
at the N-th time the point is reached (default: the first). Unset, `reached` is one dictionary
lookup on an empty dict. The points, each a place where a crash must leave no half-written output:

- ``checkpoint``: right after `Trainer.save_checkpoint` renamed a checkpoint into place;
- ``export``: inside `export_model`'s staging directory, after the weights, before verification;
- ``rename``: in `artifacts.run_directory`, after staging, just before the rename into place;
- ``select_save``: in the ``select`` runner, after the tensors, before the manifest;
- ``world_build``: in `build_world`, after the language model, before the SAEs.

Tests (tests/integration/test_faults.py) run the CLI in a subprocess with the variable set and
check what is on disk afterwards.
"""

from __future__ import annotations

import os

FAULT_EXIT_CODE = 97
"""The exit status of a process killed by a fault point (``os._exit``: no cleanup runs)."""

POINTS: tuple[str, ...] = ("checkpoint", "export", "rename", "select_save", "world_build")


def _parse(text: str) -> dict[str, int]:
    wanted: dict[str, int] = {}
    for item in filter(None, (part.strip() for part in text.split(","))):
        name, _, count = item.partition(":")
        if name not in POINTS:
            raise ValueError(f"HOOKUNLEARN_FAULT: unknown point {name!r}; points: {', '.join(POINTS)}")
        wanted[name] = int(count) if count else 1
    return wanted


_WANTED: dict[str, int] = _parse(os.environ.get("HOOKUNLEARN_FAULT", ""))


def reached(point: str) -> None:
    """Kill the process here when ``point`` is armed and this is its N-th arrival."""
    if point in _WANTED:
        _WANTED[point] -= 1
        if _WANTED[point] <= 0:
            os._exit(FAULT_EXIT_CODE)


__all__ = ["FAULT_EXIT_CODE", "POINTS", "reached"]
