"""The oracle: the world's model retrained without the forget set, the gold standard of exact
unlearning (TOFU's retain model; the filtered-pretraining baseline of Deep Ignorance).

Same seed, tokenizer, architecture, schedule and token budget as the world model, on the world's
training text **minus the forget set**: every unit whose split is ``forget``, that is the prose
and QA lines of the hazardous domain's forget facts and the biographies and QA lines of the
forget people. The heldout hazard facts, the retain people, the benign domains, the rare names
and the filler stay. With the same token budget the oracle sees the remaining text slightly more
often than the world model did (one epoch is shorter); that is what retraining on the retain set
means.

``world build`` trains it into ``WORLD/oracle/`` (``world:oracle``); `add_oracle` trains one for
an existing world directory from the configuration its manifest records.
"""

from __future__ import annotations

import dataclasses
import json
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from hookunlearn.errors import HookunlearnError

ORACLE_DIR = "oracle"
"""The oracle's checkpoint inside a world directory."""


def oracle_units(world: Any, epoch: int) -> list[str]:
    """The world's training units of ``epoch`` without those of the forget set (same order)."""
    return [unit.text for unit in world.tagged_training_units(epoch) if unit.split != "forget"]


def forget_share(world: Any, epoch: int = 0) -> dict[str, float]:
    """How much of one epoch the forget set is: units and characters."""
    units = world.tagged_training_units(epoch)
    forget = [u for u in units if u.split == "forget"]
    return {
        "units": len(forget) / len(units),
        "chars": sum(len(u.text) for u in forget) / sum(len(u.text) for u in units),
    }


def train_oracle(
    world: Any,
    tokenizer_dir: Path,
    out_dir: Path,
    lm_config: Any,
    progress: Callable[[dict[str, Any]], None] | None = None,
    overwrite: bool = False,
) -> dict[str, Any]:
    """Train the oracle of ``world`` (a `World`) with the world model's LM config into ``out_dir``
    (written atomically)."""
    from hookunlearn.world.lm import train_world_lm

    stats = train_world_lm(
        lambda epoch: oracle_units(world, epoch),
        tokenizer_dir,
        out_dir,
        lm_config,
        progress,
        overwrite=overwrite,
    )
    return {**stats, "forget_share_of_epoch_0": forget_share(world)}


def add_oracle(
    world_dir: str | Path,
    *,
    force: bool = False,
    progress: Callable[[dict[str, Any]], None] | None = None,
) -> dict[str, Any]:
    """Train the oracle of an existing world directory (the world regenerated from its manifest's
    seed and configuration, the tokenizer of its model) and record it in the manifest."""
    from hookunlearn.artifacts import read_manifest
    from hookunlearn.world.generator import WorldConfig, generate_world
    from hookunlearn.world.lm import LMTrainConfig

    world_dir = Path(world_dir)
    manifest = read_manifest(world_dir, kind="world")
    out = world_dir / ORACLE_DIR
    if out.exists() and not force:
        raise HookunlearnError(f"{out} exists; pass --force to retrain the oracle.")
    options = manifest.options
    world = generate_world(WorldConfig(**options["world"]))
    lm = options["lm"]
    lm_config = LMTrainConfig(**{**lm, "adam_betas": tuple(lm["adam_betas"])})
    start = time.perf_counter()
    stats = train_oracle(world, world_dir / "model", out, lm_config, progress, overwrite=force)
    manifest_path = world_dir / "manifest.json"
    raw = json.loads(manifest_path.read_text(encoding="utf-8"))
    raw.setdefault("extra", {})["oracle"] = {
        "training": stats,
        "seconds": time.perf_counter() - start,
        "lm_config": dataclasses.asdict(lm_config),
    }
    staged = manifest_path.with_suffix(".json.partial")
    staged.write_text(json.dumps(raw, indent=2, sort_keys=True) + "\n", encoding="utf-8")
    staged.replace(manifest_path)
    return stats
