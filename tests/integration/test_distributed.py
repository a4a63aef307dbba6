"""torchrun with 2 gloo processes gives the single-process results: select's statistics (float
tolerance), the same selected latents, the same trained weights (the single run's grad_accum 2 is
the same two micro-batches as one per rank) and the same eval numbers; rank 0 alone writes."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from hookunlearn import distributed

FLOW = Path(__file__).with_name("distributed_flow.py")


@pytest.fixture(scope="module")
def runs(quick_world: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    from tests.integration.distributed_flow import run_flow

    root = tmp_path_factory.mktemp("distributed")
    run_flow(quick_world, root / "single", grad_accum=2)
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(Path(__file__).parents[2])}
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "torch.distributed.run",
            "--standalone",
            "--nproc_per_node",
            "2",
            str(FLOW),
            str(quick_world),
            str(root / "torchrun"),
            "1",
        ],
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr[-4000:]
    return {"single": root / "single", "torchrun": root / "torchrun"}


def _close(a: torch.Tensor, b: torch.Tensor, name: str, tol: float) -> None:
    scale = max(1.0, float(b.abs().max())) if b.numel() and b.is_floating_point() else 1.0
    if a.is_floating_point():
        torch.testing.assert_close(a, b, atol=tol * scale, rtol=0, msg=name)
    else:
        assert torch.equal(a, b), name


@pytest.mark.parametrize("selection", ["sel", "sel_entity"])
def test_select_under_torchrun_equals_one_process(runs: dict[str, Path], selection: str) -> None:
    single = load_file(runs["single"] / selection / "tensors.safetensors")
    spread = load_file(runs["torchrun"] / selection / "tensors.safetensors")
    assert single.keys() == spread.keys()
    for name in single:
        _close(spread[name], single[name], name, 1e-9)  # float64 sums, added in another order
    manifests = [
        json.loads((runs[r] / selection / "manifest.json").read_text()) for r in ("single", "torchrun")
    ]
    assert manifests[0]["extra"]["chosen_layer"] == manifests[1]["extra"]["chosen_layer"]
    assert manifests[0]["extra"]["layers"] == manifests[1]["extra"]["layers"]
    assert manifests[0]["data"] == manifests[1]["data"]  # fingerprints, and texts cut counted over all ranks
    features = [
        json.loads((runs[r] / selection / "features.json").read_text()) for r in ("single", "torchrun")
    ]
    assert [row["latent"] for row in features[0]] == [row["latent"] for row in features[1]]
    latents = [json.loads((runs[r] / selection / "latents.json").read_text()) for r in ("single", "torchrun")]
    for layer, cards in latents[0]["layers"].items():
        other = latents[1]["layers"][layer]["latents"]
        assert [c["latent"] for c in cards["latents"]] == [c["latent"] for c in other]
        for mine, theirs in zip(cards["latents"], other, strict=True):  # the merged top contexts
            assert [c["activation"] for c in mine["contexts"]] == pytest.approx(
                [c["activation"] for c in theirs["contexts"]], abs=1e-6
            )


def test_unlearn_under_torchrun_equals_one_process_with_grad_accum(runs: dict[str, Path]) -> None:
    single = load_file(runs["single"] / "run" / "model" / "model.safetensors")
    spread = load_file(runs["torchrun"] / "run" / "model" / "model.safetensors")
    for name in single:
        _close(spread[name], single[name], name, 1e-5)
    logs = [
        [json.loads(line) for line in (runs[r] / "run" / "train_log.jsonl").read_text().splitlines()]
        for r in ("single", "torchrun")
    ]
    assert len(logs[0]) == len(logs[1]) == 4
    for one, two in zip(*logs, strict=True):
        for key in ("loss", "total", "grad_norm"):
            assert two[key] == pytest.approx(one[key], rel=1e-4, abs=1e-7), key
    checkpoints = sorted(p.name for p in (runs["torchrun"] / "run" / "checkpoints").iterdir())
    assert checkpoints == ["step_000002", "step_000004"]


def test_eval_under_torchrun_equals_one_process(runs: dict[str, Path]) -> None:
    reports = [json.loads((runs[r] / "eval" / "report.json").read_text()) for r in ("single", "torchrun")]

    def metrics(report: dict) -> dict:
        return {name: result["metrics"] for name, result in report["evaluated"]["results"].items()}

    one, two = metrics(reports[0]), metrics(reports[1])
    assert one.keys() == two.keys() and one
    for suite in one:
        assert two[suite] == pytest.approx(one[suite], rel=1e-5, abs=1e-6), suite
    for role_dir in (runs["single"] / "eval" / "samples").iterdir():
        for path in role_dir.iterdir():
            other = runs["torchrun"] / "eval" / "samples" / role_dir.name / path.name
            assert len(other.read_text().splitlines()) == len(path.read_text().splitlines())


def test_nothing_changes_without_torchrun() -> None:
    assert not distributed.is_distributed() and distributed.world_size() == 1 and distributed.rank() == 0
    assert distributed.shard([1, 2, 3]) == [1, 2, 3]
    assert distributed.map_sharded(lambda part: [x * 2 for x in part], [1, 2]) == [2, 4]
    assert not distributed.init_from_env("cpu")
    tensor = torch.ones(2)
    distributed.all_reduce_sum_([tensor])
    assert torch.equal(tensor, torch.ones(2))
