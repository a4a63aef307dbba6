"""benchmarks/gpu_check.py cannot rot: its CPU mode (a tiny Gemma-2) runs the whole pipeline here,
it refuses clearly without CUDA, and its dry run states the memory arithmetic."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest
import torch

SCRIPT = Path(__file__).parents[2] / "benchmarks" / "gpu_check.py"


@pytest.fixture(scope="module")
def gpu_check():  # noqa: ANN201
    spec = importlib.util.spec_from_file_location("gpu_check", SCRIPT)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_refuses_without_cuda(
    gpu_check, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture
) -> None:  # noqa: ANN001
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert gpu_check.main(["--device", "cuda"]) == 2
    err = capsys.readouterr().err
    assert "needs CUDA" in err and "--device cpu --tiny" in err
    assert gpu_check.main(["--device", "cpu"]) == 2  # the full shape is not run on a CPU


def test_dry_run_states_the_memory_arithmetic(gpu_check, capsys: pytest.CaptureFixture) -> None:  # noqa: ANN001
    assert gpu_check.main(["--dry-run"]) == 0
    plan = json.loads(capsys.readouterr().out)
    assert plan["hook"] == "blocks.12.hook_resid_post" and plan["d_sae"] == 16384
    assert 2.5e9 < plan["parameters"] < 2.7e9  # gemma-2-2b: 2.61 B
    assert plan["weights_gb"] == pytest.approx(plan["parameters"] * 2 / 1e9)


def test_tiny_pipeline_runs_on_cpu(gpu_check, tmp_path: Path) -> None:  # noqa: ANN001
    argv = ["--device", "cpu", "--tiny", "--steps", "2", "--eval-items", "8", "--out", str(tmp_path)]
    assert gpu_check.main(argv) == 0
    payload = json.loads((tmp_path / "gpu_check.json").read_text())
    stages = payload["stages"]
    assert list(stages) == ["make_checkpoint", "select", "build", "unlearn", "eval"]
    assert stages["unlearn"]["export_verified"] and stages["unlearn"]["steps"] == 2
    assert stages["select"]["tokens"] > 0 and stages["eval"]["metrics"]
    assert not (tmp_path / "work").exists()  # the checkpoints are removed unless --keep
