"""select -> build -> unlearn -> eval on a quick world, the same in one process or under torchrun.

``tests/integration/test_distributed.py`` runs `run_flow` in its own process (grad_accum 2) and
this file under ``torchrun --nproc_per_node 2`` (grad_accum 1: the same two micro-batches, one
per rank) and compares the run directories.

    torchrun --standalone --nproc_per_node 2 tests/integration/distributed_flow.py WORLD OUT GRAD_ACCUM
"""

from __future__ import annotations

import sys
from pathlib import Path


def run_flow(world: Path, out: Path, grad_accum: int) -> None:
    from hookunlearn.pipeline import (
        BuildConfig,
        EvalConfig,
        SelectConfig,
        UnlearnConfig,
        build,
        evaluate,
        select,
        unlearn,
    )
    from hookunlearn.train import TrainConfig

    data, model = world / "data", str(world / "model")
    select(
        SelectConfig(
            out=str(out / "sel"),
            model=model,
            saes=tuple(str(world / "saes" / f"layer_{layer}") for layer in range(2)),
            forget=str(data / "forget_corpus.jsonl"),
            retain=str(data / "retain_corpus.jsonl"),
            batch_size=8,
            device="cpu",
            top_contexts=4,
        )
    )
    select(  # the entity objective: roles by prompt, each rank seeing some of them
        SelectConfig(
            out=str(out / "sel_entity"),
            model=model,
            objective="entity",
            saes=tuple(str(world / "saes" / f"layer_{layer}") for layer in range(2)),
            entities=str(data / "entity_prompts.jsonl"),
            generic=str(data / "retain_corpus.jsonl"),
            batch_size=16,
            device="cpu",
            top_contexts=4,
        )
    )
    build(BuildConfig(selection=str(out / "sel"), k=8, out=str(out / "sub")))  # every rank; rank 0 writes
    unlearn(
        UnlearnConfig(
            out=str(out / "run"),
            method="sspu",
            subspace=str(out / "sub"),
            forget=str(data / "forget_corpus.jsonl"),
            retain=str(data / "retain_corpus.jsonl"),
            train=TrainConfig(steps=4, batch_size=8, grad_accum=grad_accum, checkpoint_every=2),
            device="cpu",
        )
    )
    evaluate(
        EvalConfig(
            model=str(out / "run" / "model"),
            oracle="none",
            mc=(str(data / "mc_hazard.jsonl"), str(data / "mc_benign.jsonl")),
            qa=(str(data / "entity_qa.jsonl"),),
            limit=40,
            device="cpu",
            out=str(out / "eval"),
            log_samples=True,
        )
    )


if __name__ == "__main__":
    import torch

    torch.set_num_threads(1)
    run_flow(Path(sys.argv[1]), Path(sys.argv[2]), int(sys.argv[3]))
    if torch.distributed.is_initialized():
        torch.distributed.destroy_process_group()
