"""Interruptions: the process killed at each fault point (`hookunlearn.faults`), Ctrl-C, and
resume. The promise (docs/errors.md): an output directory is complete or absent (an earlier one
stays intact), and resuming an interrupted ``unlearn`` gives the weights of an uninterrupted run.

Each fault test runs the CLI in a subprocess with ``HOOKUNLEARN_FAULT`` set, on the quick world
with tiny budgets.
"""

from __future__ import annotations

import hashlib
import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
from hookunlearn.cli.app import app
from safetensors.torch import load_file
from typer.testing import CliRunner

from hookunlearn.faults import FAULT_EXIT_CODE, POINTS

runner = CliRunner()


def _cli(args: list[str], fault: str | None = None) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k != "HOOKUNLEARN_FAULT"}
    env.update(OMP_NUM_THREADS="1", HF_HUB_OFFLINE="1", HF_DATASETS_OFFLINE="1", TRANSFORMERS_OFFLINE="1")
    if fault is not None:
        env["HOOKUNLEARN_FAULT"] = fault
    return subprocess.run(
        [sys.executable, "-m", "hookunlearn", *args], env=env, capture_output=True, text=True, timeout=600
    )


def _tree(path: Path) -> dict[str, str]:
    return {
        str(p.relative_to(path)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(path.rglob("*"))
        if p.is_file()
    }


def _staging_left(path: Path) -> list[str]:
    return sorted(p.name for p in path.parent.iterdir() if p.name.startswith(f".{path.name}.partial-"))


@pytest.fixture(scope="module")
def runs(quick_world: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("faults")
    data = quick_world / "data"
    saes = [arg for layer in range(2) for arg in ("--sae", str(quick_world / "saes" / f"layer_{layer}"))]
    select = [
        "select",
        "--model",
        str(quick_world / "model"),
        *saes,
        "--forget",
        str(data / "forget_corpus.jsonl"),
        "--retain",
        str(data / "retain_corpus.jsonl"),
        "--layer",
        "1",
        "--top-contexts",
        "0",
    ]
    result = runner.invoke(app, [*select, "--out", str(root / "sel")])
    assert result.exit_code == 0, result.output
    result = runner.invoke(app, ["build", str(root / "sel"), "--k", "4", "--out", str(root / "sub")])
    assert result.exit_code == 0, result.output
    return {"root": root, "world": quick_world, "select": select}  # type: ignore[dict-item]


def _unlearn_args(runs: dict, out: Path, *extra: str) -> list[str]:
    data = runs["world"] / "data"
    return [
        "unlearn",
        str(runs["root"] / "sub"),
        "--out",
        str(out),
        "--forget",
        str(data / "forget_corpus.jsonl"),
        "--retain",
        str(data / "retain_corpus.jsonl"),
        "--steps",
        "6",
        "--batch-size",
        "4",
        "--checkpoint-every",
        "2",
        "--no-export",
        "--device",
        "cpu",
        *extra,
    ]


def _final_weights(out: Path) -> dict:
    return load_file(str(out / "checkpoints" / "step_000006" / "checkpoint.safetensors"))


@pytest.fixture(scope="module")
def uninterrupted(runs: dict) -> Path:
    out = runs["root"] / "reference_run"
    result = runner.invoke(app, _unlearn_args(runs, out))
    assert result.exit_code == 0, result.output
    return out


def _same_weights(out: Path, reference: Path) -> None:
    ours, theirs = _final_weights(out), _final_weights(reference)
    assert ours.keys() == theirs.keys()
    for name in ours:
        assert ours[name].equal(theirs[name]), name


def _log_steps(out: Path) -> list[int]:
    return [json.loads(line)["step"] for line in (out / "train_log.jsonl").read_text().splitlines()]


def test_the_fault_points_are_the_documented_ones() -> None:
    assert POINTS == ("checkpoint", "export", "rename", "select_save", "world_build")


def test_killed_after_a_checkpoint_resume_gives_the_same_weights(runs: dict, uninterrupted: Path) -> None:
    out = runs["root"] / "killed_run"
    killed = _cli(_unlearn_args(runs, out), fault="checkpoint:2")  # dies right after step 4's checkpoint
    assert killed.returncode == FAULT_EXIT_CODE, killed.stderr
    stage = out.with_name(out.name + ".partial")
    assert not out.exists() and stage.is_dir()
    assert sorted(p.name for p in (stage / "checkpoints").iterdir()) == ["step_000002", "step_000004"]
    result = runner.invoke(app, _unlearn_args(runs, out, "--resume"))
    assert result.exit_code == 0, result.output
    _same_weights(out, uninterrupted)
    assert _log_steps(out) == [1, 2, 3, 4, 5, 6]  # no duplicated rows after resume (issue 17 item 8)
    elapsed = [json.loads(line)["elapsed_s"] for line in (out / "train_log.jsonl").read_text().splitlines()]
    assert elapsed == sorted(elapsed)  # elapsed_s continues across the resume


def test_killed_at_the_final_rename_resume_finishes_the_run(runs: dict, uninterrupted: Path) -> None:
    out = runs["root"] / "rename_run"
    # checkpoints at steps 2, 4, 6 are renamed into place first; the 4th rename is the run's own
    killed = _cli(_unlearn_args(runs, out), fault="rename:4")
    assert killed.returncode == FAULT_EXIT_CODE, killed.stderr
    assert not out.exists()
    result = runner.invoke(app, _unlearn_args(runs, out, "--resume"))
    assert result.exit_code == 0, result.output
    _same_weights(out, uninterrupted)
    assert _log_steps(out) == [1, 2, 3, 4, 5, 6]


def test_killed_during_export_leaves_the_earlier_export(runs: dict) -> None:
    model = str(runs["world"] / "model")
    out = runs["root"] / "exported"
    result = runner.invoke(app, ["export", model, "--out", str(out)])
    assert result.exit_code == 0, result.output
    before = _tree(out)
    killed = _cli(["export", model, "--out", str(out), "--force"], fault="export")
    assert killed.returncode == FAULT_EXIT_CODE, killed.stderr
    assert _tree(out) == before  # the earlier export, complete and unchanged
    fresh = runs["root"] / "exported_fresh"
    killed = _cli(["export", model, "--out", str(fresh)], fault="export")
    assert killed.returncode == FAULT_EXIT_CODE and not fresh.exists()
    assert _staging_left(fresh)  # the killed process's staging directory (hidden) ...
    result = runner.invoke(app, ["export", model, "--out", str(fresh)])
    assert result.exit_code == 0, result.output
    assert not _staging_left(fresh)  # ... is removed by the next write of that output


def test_killed_at_the_rename_leaves_no_subspace(runs: dict) -> None:
    out = runs["root"] / "sub_killed"
    killed = _cli(["build", str(runs["root"] / "sel"), "--k", "4", "--out", str(out)], fault="rename")
    assert killed.returncode == FAULT_EXIT_CODE, killed.stderr
    assert not out.exists()


def test_killed_during_selects_save_leaves_no_selection(runs: dict) -> None:
    out = runs["root"] / "sel_killed"
    killed = _cli([*runs["select"], "--out", str(out)], fault="select_save")
    assert killed.returncode == FAULT_EXIT_CODE, killed.stderr
    assert not out.exists()
    result = runner.invoke(app, [*runs["select"], "--out", str(out)])
    assert result.exit_code == 0, result.output
    assert not _staging_left(out)


@pytest.mark.slow
def test_killed_during_world_build_leaves_no_world(tmp_path: Path) -> None:
    out = tmp_path / "w"
    killed = _cli(["world", "build", "--quick", "--out", str(out)], fault="world_build")
    assert killed.returncode == FAULT_EXIT_CODE, killed.stderr
    assert not out.exists()


def test_ctrl_c_saves_a_checkpoint_and_resume_gives_the_same_weights(
    runs: dict, uninterrupted: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Ctrl-C during step 3 (a real SIGINT): the step finishes, a checkpoint of it is saved, one
    line says where and how to resume, exit 130 (issue 17 item 9)."""
    from hookunlearn.objectives.sspu import SSPU

    calls = []
    original = SSPU.after_step

    def interrupting(self, params, initial):  # noqa: ANN001, ANN202
        calls.append(1)
        if len(calls) == 3:
            os.kill(os.getpid(), signal.SIGINT)
        return original(self, params, initial)

    monkeypatch.setattr(SSPU, "after_step", interrupting)
    out = runs["root"] / "ctrl_c_run"
    result = runner.invoke(app, _unlearn_args(runs, out))
    assert result.exit_code == 130, result.output
    lines = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert len(lines) == 1 and "interrupted at step 3 of 6" in lines[0] and "--resume" in lines[0], (
        result.stderr
    )
    stage = out.with_name(out.name + ".partial")
    assert sorted(p.name for p in (stage / "checkpoints").iterdir()) == ["step_000002", "step_000003"]
    monkeypatch.setattr(SSPU, "after_step", original)
    # a setting that changes the result is refused, naming each field (issue 17 item 3)
    changed = runner.invoke(app, _unlearn_args(runs, out, "--resume", "--lr", "0.05", "-o", "alpha=3"))
    assert changed.exit_code == 2
    assert (
        "lr: checkpoint 0.005, now 0.05" in changed.stderr
        and "-o alpha: checkpoint 100.0, now 3.0" in changed.stderr
    )
    other_data = runner.invoke(app, _unlearn_args(runs, out, "--resume", "--max-tokens", "8"))
    assert (
        other_data.exit_code == 2
        and "the forget data (after tokenising and --max-tokens) differ" in other_data.stderr
    )
    result = runner.invoke(app, _unlearn_args(runs, out, "--resume"))
    assert result.exit_code == 0, result.output
    _same_weights(out, uninterrupted)
    assert _log_steps(out) == [1, 2, 3, 4, 5, 6]


def test_a_diverged_run_without_a_checkpoint_leaves_nothing(runs: dict) -> None:
    """Issue 17 item 7: no claim of a checkpoint that does not exist, no unresumable .partial."""
    out = runs["root"] / "diverged"
    result = runner.invoke(app, _unlearn_args(runs, out, "-o", "steering_coeff=1e38"))
    assert result.exit_code == 2, result.output
    assert result.stderr.startswith("error: ") and "no checkpoint was written" in result.stderr
    assert not out.exists() and not out.with_name(out.name + ".partial").exists()
