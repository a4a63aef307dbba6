"""Build a whole world directory: data, tokenizer, model, SAEs, and measured numbers.

``build_world(out, WorldBuildConfig.default(seed))`` is what ``hookunlearn world build`` runs
(and what made the shipped assets); ``WorldBuildConfig.quick(seed)`` makes a tiny world in
well under a minute for tests. The output is written atomically (temp dir, then rename).
"""

from __future__ import annotations

import dataclasses
import os
import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch

from hookunlearn.artifacts import Manifest, check_can_write, run_directory
from hookunlearn.world.generator import DATA_VERSION, WorldConfig, generate_world
from hookunlearn.world.lm import LMTrainConfig, pack_units, special_ids, train_world_lm
from hookunlearn.world.sae_training import SAETrainConfig, train_world_saes
from hookunlearn.world.tokenizer import train_tokenizer

SAE_EPOCH_OFFSET = 10_000
"""SAE training text is drawn from world epochs far past the LM's, so it has fresh rare names."""


@dataclass(frozen=True)
class WorldBuildConfig:
    world: WorldConfig = field(default_factory=WorldConfig)
    lm: LMTrainConfig = field(default_factory=LMTrainConfig)
    sae: SAETrainConfig = field(default_factory=SAETrainConfig)
    sae_epochs: int | None = None
    """World epochs of text (re-sampled templates, fresh rare names) packed for SAE training;
    None: as many as ``sae.training_tokens`` needs (BOS and pads excluded), plus 10%."""
    measure: bool = True
    """Measure the built world (recall, MC, SAE quality and latents) into the manifest."""
    oracle: bool = True
    """Also train the oracle (`hookunlearn.world.oracle`): the same LM run without the forget set."""

    @classmethod
    def default(cls, seed: int = 0) -> WorldBuildConfig:
        return cls(world=WorldConfig(seed=seed), lm=LMTrainConfig(seed=seed), sae=SAETrainConfig(seed=seed))

    @classmethod
    def quick(cls, seed: int = 0) -> WorldBuildConfig:
        """A tiny world for tests: small data, a 2-layer d_model-32 model, tiny SAEs."""
        return cls(
            world=WorldConfig.quick(seed),
            lm=LMTrainConfig(
                d_model=32,
                n_layers=2,
                n_heads=2,
                d_mlp=128,
                max_tokens=60_000,
                time_budget_s=60.0,
                warmup_steps=10,
                batch_size=16,
                seed=seed,
                log_every=20,
            ),
            sae=dataclasses.replace(SAETrainConfig.quick(), seed=seed),
        )

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def _sae_rows(world: Any, tokenizer: Any, config: WorldBuildConfig) -> torch.Tensor:
    """Packed rows from fresh epochs until they hold enough real (non-BOS, non-pad) tokens."""
    bos_id, pad_id = special_ids(tokenizer)
    parts, real_tokens, epoch = [], 0, 0
    needed = int(config.sae.training_tokens * 1.1)
    while (config.sae_epochs is None and real_tokens < needed) or (
        config.sae_epochs is not None and epoch < config.sae_epochs
    ):
        rows = pack_units(world.training_units(SAE_EPOCH_OFFSET + epoch), tokenizer, config.lm.n_ctx)
        real_tokens += int(((rows != bos_id) & (rows != pad_id)).sum())
        parts.append(rows)
        epoch += 1
    return torch.cat(parts)


def build_world(
    out_dir: str | os.PathLike[str],
    config: WorldBuildConfig,
    *,
    force: bool = False,
    progress: Callable[[str, dict[str, Any]], None] | None = None,
) -> Manifest:
    """Generate, train and measure a world into ``out_dir``; returns its manifest."""
    say = progress or (lambda _stage, _info: None)
    check_can_write(out_dir, force=force)
    timings: dict[str, float] = {}
    with run_directory(out_dir, force=force) as tmp:
        start = time.perf_counter()
        world = generate_world(config.world)
        files = world.write(tmp / "data")
        say("data", {"files": len(files), **world.summary()})
        tokenizer_dir = train_tokenizer(world, tmp / "tokenizer", vocab_size=1536)
        timings["data_and_tokenizer_s"] = time.perf_counter() - start

        start = time.perf_counter()
        lm_stats = train_world_lm(
            world.training_units,
            tokenizer_dir,
            tmp / "model",
            config.lm,
            progress=lambda info: say("lm", info),
        )
        timings["lm_s"] = time.perf_counter() - start
        from hookunlearn import faults

        faults.reached("world_build")  # a crash between the model and the SAEs leaves no world
        oracle_stats: dict[str, Any] | None = None
        if config.oracle:
            from hookunlearn.world.oracle import ORACLE_DIR, train_oracle

            start = time.perf_counter()
            oracle_stats = train_oracle(
                world, tokenizer_dir, tmp / ORACLE_DIR, config.lm, progress=lambda info: say("oracle", info)
            )
            timings["oracle_s"] = time.perf_counter() - start
        shutil.rmtree(tokenizer_dir)  # the tokenizer now lives in model/ (and oracle/)

        from hookunlearn.models import load_model

        model = load_model(tmp / "model", device="cpu")
        start = time.perf_counter()
        rows = _sae_rows(world, model.tokenizer, config)
        heldout_rows = pack_units(
            [r["text"] for r in world.heldout_text_rows()], model.tokenizer, config.lm.n_ctx
        )
        sae_stats = train_world_saes(
            model,
            rows,
            tmp / "saes",
            list(range(model.cfg.n_layers)),
            config.sae,
            progress=lambda info: say("sae", info),
            heldout_rows=heldout_rows,
        )
        timings["saes_s"] = time.perf_counter() - start

        measured: dict[str, Any] = {}
        if config.measure:
            from hookunlearn.world.measure import measure_world

            start = time.perf_counter()
            measured = measure_world(tmp, model=model, progress=lambda msg: say("measure", {"what": msg}))
            timings["measure_s"] = time.perf_counter() - start

        from hookunlearn.models import model_info

        manifest = Manifest(
            kind="world",
            command="hookunlearn world build",
            options=config.to_dict(),
            model=model_info(model).to_dict(),
            seed=config.world.seed,
            extra={
                "data_version": DATA_VERSION,
                "summary": world.summary(),
                "lm_training": lm_stats,
                **({"oracle": {"training": oracle_stats}} if oracle_stats is not None else {}),
                "sae_training": {str(k): v for k, v in sae_stats.items()},
                "timings": timings,
                "measured": measured,
            },
        )
        (tmp / "manifest.json").write_text(manifest.to_json(), encoding="utf-8")
    return manifest
