"""The embedded world as a `hookunlearn.sources` plug-in: ``world`` (the model), ``world:L`` (the
SAE at layer L), ``world:NAME`` (a data file), and the commands' defaults on the world model."""

from __future__ import annotations

from pathlib import Path

from hookunlearn.errors import HookunlearnError
from hookunlearn.sources import PluginDefaults
from hookunlearn.world import assets

EVAL_SUITES: tuple[str, ...] = (
    "mc:data=world:mc_hazard",
    "mc:data=world:mc_benign",
    "qa",
    "perplexity",
)
"""What ``hookunlearn eval`` runs on the world model when no suite is named."""


def model_path(rest: str) -> Path:
    if rest in ("", "model"):
        return assets.world_model_dir()
    if rest == "oracle":
        from hookunlearn.world.oracle import ORACLE_DIR

        path = assets.world_dir() / ORACLE_DIR
        if not (path / "config.json").is_file():
            raise HookunlearnError(
                f"model spec 'world:oracle': the world at {assets.world_dir()} has no oracle; "
                "train one with `hookunlearn world oracle`."
            )
        return path
    raise HookunlearnError(f"model spec 'world:{rest}': the world's models are 'world' and 'world:oracle'.")


def sae_path(rest: str) -> Path:
    layer_text = rest.removeprefix("layer_")
    if not layer_text.isdigit():
        raise HookunlearnError("expected 'world:L' with a layer number, e.g. 'world:2'.")
    return assets.world_sae_dir(int(layer_text))


def data_path(rest: str) -> Path:
    return assets.world_data_file(rest)


def defaults() -> PluginDefaults:
    return PluginDefaults(
        sae_specs=tuple(f"world:{layer}" for layer in assets.world_sae_layers()),
        eval_suites=EVAL_SUITES,
        oracle="world:oracle",
    )
